// initramfs: rebuilds the initramfs the way the host's distribution does. The handler of vfio;
// a playbook may also run it as a task.
#include "agent/declare.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

Expected<Result> converge(Context& ctx, const CommandArgs& args, bool apply) {
  std::vector<std::string> argv;
  const std::string& tool = ctx.facts.boot.initramfs;
  if (tool == "update-initramfs")
    argv = {"update-initramfs", "-u", "-k", "all"};
  else if (tool == "dracut")
    argv = {"dracut", "-f", "--regenerate-all"};
  else if (tool == "mkinitcpio")
    argv = {"mkinitcpio", "-P"};
  else if (!args.command)
    return Result::failed("no update-initramfs, dracut or mkinitcpio on this host (root " + ctx.root.dir() +
                          "): rebuild the initramfs by hand");
  Result r = run_command_module(ctx, args, apply, std::move(argv), "rebuilt the initramfs");
  r.reboot_required = r.status == Outcome::changed;
  return r;
}

// What `gptagent doc initramfs` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Rebuilds the initramfs as the distribution does: update-initramfs -u -k all, dracut -f --regenerate-all "
          "or mkinitcpio -P. command replaces the detected command line; timeout bounds it.\n\n"
          "The handler of vfio, and of restore_files when it puts back a file of /etc/modprobe.d, "
          "/etc/modules-load.d or the initramfs tools' configuration; a playbook may also run it as a task. A "
          "change needs a reboot.",
      .examples = {"# Rebuild the initramfs of every installed kernel\n"
                   "- name: rebuild the initramfs\n"
                   "  initramfs: {}\n"},
      .reboot = true,
  };
}

}  // namespace

const ArgsDecl<CommandArgs>& initramfs_args() {
  static const auto decl = command_args(900);
  return decl;
}

namespace {

ModuleDef definition() {
  auto def = declare_module("initramfs", "rebuild the initramfs (update-initramfs, dracut or mkinitcpio)",
                            initramfs_args(), converge);
  def.regenerates_boot = true;
  def.handler_args = std::vector<std::string>{};
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt
