// grub_config: regenerates grub.cfg the way the host's distribution does. Used as the handler
// of grub_cmdline; a playbook may also run it as a task.
#include "agent/declare.hpp"

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

Expected<Result> converge(Context& ctx, const CommandArgs& args, bool apply) {
  std::vector<std::string> argv;
  const std::string& tool = ctx.facts.boot.grub;
  if (tool == "update-grub") argv = {"update-grub"};
  else if (tool == "grub2-mkconfig") argv = {"grub2-mkconfig", "-o", grub2_output(ctx)};
  else if (tool == "grub-mkconfig") argv = {"grub-mkconfig", "-o", "/boot/grub/grub.cfg"};
  else if (!args.command)
    return Result::failed("no update-grub, grub2-mkconfig or grub-mkconfig on this host (root " + ctx.root.dir() +
                          "): regenerate the boot configuration by hand");
  return run_command_module(ctx, args, apply, std::move(argv), "regenerated the grub config");
}

ModuleDef definition() {
  auto def = declare_module("grub_config", "regenerate grub.cfg (update-grub, grub2-mkconfig or grub-mkconfig)",
                            command_args(600), converge);
  def.changes_boot = true;
  def.regenerates_boot = true;
  def.handler_args = std::vector<std::string>{};
  return def;
}
const Registration registration{definition()};

}  // namespace
}  // namespace gpt
