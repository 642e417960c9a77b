// grub_config: regenerates grub.cfg the way the host's distribution does. Used as the handler
// of grub_cmdline; a playbook may also run it as a task.
#include "agent/declare.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

// A grub.cfg on the EFI partition that only hands over to /boot/grub2/grub.cfg (Fedora 34+,
// RHEL 9) must not be overwritten; an EFI grub.cfg that is a full config (RHEL 8) is the target.
std::string grub2_output(const Context& ctx) {
  const std::string efi =
      "/boot/efi/EFI/" + (ctx.facts.os.id.empty() ? std::string("redhat") : ctx.facts.os.id) + "/grub.cfg";
  if (auto text = read_file_if_exists(ctx.root, efi); text && *text &&
                                                      (*text)->find("configfile") == std::string::npos &&
                                                      (*text)->find("### BEGIN") != std::string::npos)
    return efi;
  return "/boot/grub2/grub.cfg";
}

Expected<Result> converge(Context& ctx, const CommandArgs& args, bool apply) {
  std::vector<std::string> argv;
  const std::string& tool = ctx.facts.boot.grub;
  if (tool == "update-grub")
    argv = {"update-grub"};
  else if (tool == "grub2-mkconfig")
    argv = {"grub2-mkconfig", "-o", grub2_output(ctx)};
  else if (tool == "grub-mkconfig")
    argv = {"grub-mkconfig", "-o", "/boot/grub/grub.cfg"};
  else if (!args.command)
    return Result::failed("no update-grub, grub2-mkconfig or grub-mkconfig on this host (root " + ctx.root.dir() +
                          "): regenerate the boot configuration by hand");
  Result r = run_command_module(ctx, args, apply, std::move(argv), "regenerated the grub config");
  r.reboot_required = r.status == Outcome::changed;
  return r;
}

// What `gptagent doc grub_config` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Regenerates grub.cfg as the distribution does: update-grub (Debian, Ubuntu), grub2-mkconfig -o "
          "/boot/grub2/grub.cfg (Fedora, RHEL 9; the EFI grub.cfg where it is a full config, as on RHEL 8), "
          "grub-mkconfig -o /boot/grub/grub.cfg (Arch). command replaces the detected command line; timeout bounds "
          "it.\n\n"
          "The handler of grub_cmdline, and of kernel_cmdline, vfio and restore_files when they change a GRUB file. "
          "On BootLoaderSpec hosts (GRUB_ENABLE_BLSCFG=true, grubby installed) grub_cmdline notifies grubby as well, "
          "whose grubby --update-kernel=ALL --args=... --remove-args=... updates the existing boot entries too. A "
          "playbook may also run it as a task. A change needs a reboot.",
      .examples = {"# Regenerate grub.cfg after a task that notifies it (the handler a module would request)\n"
                   "- name: regenerate grub.cfg\n"
                   "  grub_config: {}\n",
                   "# Regenerate it with a command of the host's own, for up to 20 minutes\n"
                   "- grub_config:\n"
                   "    command: [grub-mkconfig, -o, /boot/grub/grub.cfg]\n"
                   "    timeout: 1200\n"},
      .reboot = true,
  };
}

}  // namespace

const ArgsDecl<CommandArgs>& grub_config_args() {
  static const auto decl = command_args(600);
  return decl;
}

namespace {

ModuleDef definition() {
  auto def = declare_module("grub_config", "regenerate grub.cfg (update-grub, grub2-mkconfig or grub-mkconfig)",
                            grub_config_args(), converge);
  def.regenerates_boot = true;
  def.handler_args = std::vector<std::string>{};
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt
