// initramfs: rebuilds the initramfs the way the host's distribution does. The handler of vfio;
// a playbook may also run it as a task.
#include "agent/module.hpp"

namespace gpt {
namespace {

Result converge(Context& ctx, const json& args, bool apply) {
  std::vector<std::string> argv;
  const std::string& tool = ctx.facts.boot.initramfs;
  if (tool == "update-initramfs") argv = {"update-initramfs", "-u", "-k", "all"};
  else if (tool == "dracut") argv = {"dracut", "-f", "--regenerate-all"};
  else if (tool == "mkinitcpio") argv = {"mkinitcpio", "-P"};
  else if (!args.contains("command"))
    return Result::failed("no update-initramfs, dracut or mkinitcpio on this host (root " + ctx.root.dir() +
                          "): rebuild the initramfs by hand");
  Result r = run_command_module(ctx, args, apply, std::move(argv), "rebuilt the initramfs");
  r.reboot_required = r.status == Outcome::changed;
  return r;
}

const Registration registration{ModuleDef{
    .name = "initramfs",
    .summary = "rebuild the initramfs (update-initramfs, dracut or mkinitcpio)",
    .schema = {.args = command_args(900)},
    .converge = converge,
    .changes_boot = true,
    .regenerates_boot = true,
    .handler_args = std::vector<std::string>{},
}};

}  // namespace
}  // namespace gpt
