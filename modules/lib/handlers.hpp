// The modules other modules request as handlers: their arguments, declared once where each module
// is, and the requests made through those declarations. A request is typed where it is made and
// written as a playbook would say it (ArgsDecl::dump), so the state file holds what the same
// declaration checks again before the handler runs.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "agent/declare.hpp"

namespace gpt {

struct ServiceArgs {
  std::string name;
  std::optional<std::string> state;
  std::optional<bool> enabled;
  std::string scope = "system";
  std::optional<std::string> user;
};
const ArgsDecl<ServiceArgs>& service_args();  // modules/service.cpp

struct GrubbyArgs {
  std::vector<std::string> add;
  std::vector<std::string> remove;
};
const ArgsDecl<GrubbyArgs>& grubby_args();  // modules/grubby.cpp

struct KernelInstallArgs {
  std::string release;  // empty: the running kernel
};
const ArgsDecl<KernelInstallArgs>& kernel_install_args();  // modules/kernel_install.cpp
// The image kernel-install takes for a release: /usr/lib/modules/R/vmlinuz or /boot/vmlinuz-R.
Expected<std::string> kernel_image(const Root& root, const std::string& release);

const ArgsDecl<CommandArgs>& grub_config_args();  // modules/grub_config.cpp
const ArgsDecl<CommandArgs>& initramfs_args();    // modules/initramfs.cpp

// A request to run `module` as a handler with the declared defaults, changed by `set`.
template <typename A>
HandlerRequest handler_request(std::string name, std::string module, const ArgsDecl<A>& decl,
                               const std::function<void(A&)>& set = {}) {
  A args = decl.defaults();
  if (set) set(args);
  return {std::move(name), std::move(module), decl.dump(args)};
}

HandlerRequest regenerate_grub_config();
HandlerRequest rebuild_initramfs();
// grubby --update-kernel=ALL with these parameters added and removed; `what` says which, in words.
HandlerRequest update_boot_entries(const std::vector<std::string>& add, const std::vector<std::string>& remove,
                                   const std::string& what);
// kernel-install add for the running kernel: its entry written again from /etc/kernel/cmdline.
HandlerRequest write_kernel_entry();
// A system unit restarted; `why` is shown in the report.
HandlerRequest restart_service(const std::string& unit, const std::string& why);

}  // namespace gpt
