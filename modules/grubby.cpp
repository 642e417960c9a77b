// grubby: adds and removes kernel parameters on every boot entry of a BootLoaderSpec host
// (Fedora, RHEL). The handler grub_cmdline asks for on such hosts.
#include "agent/module.hpp"
#include "agent/text.hpp"
#include "modules/grub_default.hpp"

namespace gpt {
namespace {

std::optional<std::string> kernel_params(const json& list) {
  for (const auto& p : list)
    if (!valid_kernel_param(p.get<std::string>())) return "'" + p.get<std::string>() + "' is not a kernel parameter";
  return std::nullopt;
}

Result converge(Context& ctx, const json& args, bool apply) {
  if (!ctx.facts.boot.grubby) return Result::failed("grubby is not installed on this host");
  Command cmd{{"grubby", "--update-kernel=ALL"}};
  if (!args["add"].empty()) cmd.argv.push_back("--args=" + join(args["add"].get<std::vector<std::string>>(), " "));
  if (!args["remove"].empty())
    cmd.argv.push_back("--remove-args=" + join(args["remove"].get<std::vector<std::string>>(), " "));
  if (cmd.argv.size() == 2) return Result::ok("no parameters to change");
  Result r = ctx.run_system(cmd, apply, "updated the boot entries");
  if (r.status == Outcome::changed) r.reboot_required = true;
  return r;
}

const Registration registration{ModuleDef{
    .name = "grubby",
    .summary = "add and remove kernel parameters on every boot entry (grubby --update-kernel=ALL)",
    .schema = {.args = {{.name = "add", .type = ArgType::list, .default_value = json::array(), .check = kernel_params},
                        {.name = "remove", .type = ArgType::list, .default_value = json::array(), .check = kernel_params}}},
    .converge = converge,
    .changes_boot = true,
    .handler_args = std::vector<std::string>{"add", "remove"},
}};

}  // namespace
}  // namespace gpt
