// grub_config: regenerates grub.cfg the way the host's distribution does. Used as the handler
// of grub_cmdline; a playbook may also run it as a task.
#include "agent/module.hpp"

namespace gpt {
namespace {

// A grub.cfg on the EFI partition that only hands over to /boot/grub2/grub.cfg (Fedora 34+,
// RHEL 9) must not be overwritten; an EFI grub.cfg that is a full config (RHEL 8) is the target.
std::string grub2_output(const Context& ctx) {
  const std::string efi = "/boot/efi/EFI/" + (ctx.facts.os.id.empty() ? std::string("redhat") : ctx.facts.os.id) + "/grub.cfg";
  if (auto text = read_file_if_exists(ctx.root, efi); text && *text && (*text)->find("configfile") == std::string::npos &&
                                                       (*text)->find("### BEGIN") != std::string::npos)
    return efi;
  return "/boot/grub2/grub.cfg";
}

Result converge(Context& ctx, const json& args, bool apply) {
  std::vector<std::string> argv;
  const std::string& tool = ctx.facts.boot.grub;
  if (tool == "update-grub") argv = {"update-grub"};
  else if (tool == "grub2-mkconfig") argv = {"grub2-mkconfig", "-o", grub2_output(ctx)};
  else if (tool == "grub-mkconfig") argv = {"grub-mkconfig", "-o", "/boot/grub/grub.cfg"};
  else if (!args.contains("command"))
    return Result::failed("no update-grub, grub2-mkconfig or grub-mkconfig on this host (root " + ctx.root.dir() +
                          "): regenerate the boot configuration by hand");
  return run_command_module(ctx, args, apply, std::move(argv), "regenerated the grub config");
}

const Registration registration{ModuleDef{
    .name = "grub_config",
    .summary = "regenerate grub.cfg (update-grub, grub2-mkconfig or grub-mkconfig)",
    .schema = {.args = command_args(600)},
    .converge = converge,
    .changes_boot = true,
    .regenerates_boot = true,
    .handler_args = std::vector<std::string>{},
}};

}  // namespace
}  // namespace gpt
