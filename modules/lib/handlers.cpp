#include "modules/lib/handlers.hpp"

namespace gpt {

HandlerRequest regenerate_grub_config() {
  return handler_request("regenerate the grub config", "grub_config", grub_config_args());
}

HandlerRequest rebuild_initramfs() { return handler_request("rebuild the initramfs", "initramfs", initramfs_args()); }

HandlerRequest update_boot_entries(const std::vector<std::string>& add, const std::vector<std::string>& remove,
                                   const std::string& what) {
  return handler_request<GrubbyArgs>("update the boot entries with grubby (" + what + ")", "grubby", grubby_args(),
                                     [&](GrubbyArgs& a) {
                                       a.add = add;
                                       a.remove = remove;
                                     });
}

HandlerRequest write_kernel_entry() {
  return handler_request("write the running kernel's boot entry again (kernel-install add)", "kernel_install",
                         kernel_install_args());
}

HandlerRequest restart_service(const std::string& unit, const std::string& why) {
  return handler_request<ServiceArgs>("restart " + unit + " (" + why + ")", "service", service_args(),
                                      [&](ServiceArgs& a) {
                                        a.name = unit;
                                        a.state = "restarted";
                                      });
}

}  // namespace gpt
