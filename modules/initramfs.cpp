// initramfs: rebuilds the initramfs the way the host's distribution does. The handler of vfio;
// a playbook may also run it as a task.
#include "agent/module.hpp"

namespace gpt {
namespace {

Result converge(Context& ctx, const json& args, bool apply) {
  Command cmd;
  const std::string& tool = ctx.facts.boot.initramfs;
  if (args.contains("command")) cmd.argv = args["command"].get<std::vector<std::string>>();
  else if (tool == "update-initramfs") cmd.argv = {"update-initramfs", "-u", "-k", "all"};
  else if (tool == "dracut") cmd.argv = {"dracut", "-f", "--regenerate-all"};
  else if (tool == "mkinitcpio") cmd.argv = {"mkinitcpio", "-P"};
  else
    return Result::failed("no update-initramfs, dracut or mkinitcpio on this host (root " + ctx.root.dir() +
                          "): rebuild the initramfs by hand");
  cmd.timeout = std::chrono::seconds(args["timeout"].get<int>());
  Result r = ctx.run_system(cmd, apply, "rebuilt the initramfs");
  if (r.status == Outcome::changed) r.reboot_required = true;
  return r;
}

const Registration registration{ModuleDef{
    .name = "initramfs",
    .summary = "rebuild the initramfs (update-initramfs, dracut or mkinitcpio)",
    .schema = {.args = {{.name = "command", .type = ArgType::list,
                         .check = [](const json& v) -> std::optional<std::string> {
                           if (v.empty()) return "must name a program";
                           return std::nullopt;
                         }},
                        {.name = "timeout", .type = ArgType::integer, .default_value = 900}}},
    .converge = converge,
    .changes_boot = true,
}};

}  // namespace
}  // namespace gpt
