// grubby: adds and removes kernel parameters on every boot entry of a BootLoaderSpec host
// (Fedora, RHEL). The handler grub_cmdline asks for on such hosts.
#include "agent/declare.hpp"
#include "agent/text.hpp"
#include "modules/lib/grub_default.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

std::optional<std::string> kernel_params(const json& list) {
  for (const auto& p : list)
    if (!valid_kernel_param(p.get<std::string>())) return "'" + p.get<std::string>() + "' is not a kernel parameter";
  return std::nullopt;
}

using Args = GrubbyArgs;

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  if (!ctx.facts.boot.grubby) return Result::failed("grubby is not installed on this host");
  Command cmd{{"grubby", "--update-kernel=ALL"}};
  if (!args.add.empty()) cmd.argv.push_back("--args=" + join(args.add, " "));
  if (!args.remove.empty()) cmd.argv.push_back("--remove-args=" + join(args.remove, " "));
  if (cmd.argv.size() == 2) return Result::ok("no parameters to change");
  Result r = ctx.run_system(cmd, apply, "updated the boot entries");
  if (r.status == Outcome::changed) r.reboot_required = true;
  return r;
}

// What `gptagent doc grubby` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Adds and removes kernel parameters on every boot entry of a BootLoaderSpec host (Fedora, RHEL) with "
          "grubby --update-kernel=ALL --args=... --remove-args=...; fails where grubby is not installed.\n\n"
          "The handler grub_cmdline (and kernel_cmdline and vfio when they edit GRUB's files) asks for on such "
          "hosts (GRUB_ENABLE_BLSCFG=true, grubby installed), so that the existing entries get what "
          "GRUB_CMDLINE_LINUX now says; a playbook may also run it as a task. A change needs a reboot.",
      .examples = {"# Put the IOMMU parameters on every boot entry and take rhgb off\n"
                   "- grubby:\n"
                   "    add: [intel_iommu=on, iommu=pt]\n"
                   "    remove: [rhgb]\n"},
      .reboot = true,
  };
}

}  // namespace

const ArgsDecl<GrubbyArgs>& grubby_args() {
  static const auto decl =
      ArgsDecl<GrubbyArgs>()
          .arg("add", &GrubbyArgs::add, "parameters every boot entry gets (name or name=value)",
               {.check = kernel_params, .example = json::array({"intel_iommu=on", "iommu=pt"})})
          .arg("remove", &GrubbyArgs::remove, "parameters taken out of every boot entry", {.check = kernel_params});
  return decl;
}

namespace {

ModuleDef definition() {
  auto def =
      declare_module("grubby", "add and remove kernel parameters on every boot entry (grubby --update-kernel=ALL)",
                     grubby_args(), converge);
  def.regenerates_boot = true;
  def.handler_args = std::vector<std::string>{"add", "remove"};
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt
