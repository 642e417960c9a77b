// initramfs: rebuilds the initramfs the way the host's distribution does. The handler of vfio;
// a playbook may also run it as a task.
#include "agent/declare.hpp"
#include "agent/kernel_guard.hpp"
#include "agent/text.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

// dracut --regenerate-all runs no kernel-install plugin: the kernel guard's checks the rebuild is
// meant to satisfy are run again here, on each kernel whose initramfs the guard found lacking (a
// plugin that still finds it so fails the task).
void check_guard_again(Context& ctx, bool apply, Result& r) {
  if (!path_exists(ctx.root, kInstallInitramfsGuard)) return;
  auto records = read_guard_records(ctx.root);
  if (!records) {
    r = Result::failed(records.error());
    return;
  }
  for (const auto& g : *records) {
    if (g.kind != "initramfs" || g.missing.empty()) continue;
    // The entry's directory, where the image was found there (systemd-boot's layout).
    const std::string suffix = "/initrd";
    const std::string entry_dir =
        g.what.size() > suffix.size() && g.what.substr(g.what.size() - suffix.size()) == suffix
            ? g.what.substr(0, g.what.size() - suffix.size())
            : "";
    Result ran = ctx.run_system(Command{{kInstallInitramfsGuard, "add", g.kernel, entry_dir}}, apply,
                                "the kernel guard found kernel " + g.kernel + "'s initramfs complete");
    r.commands.insert(r.commands.end(), ran.commands.begin(), ran.commands.end());
    if (ran.status == Outcome::failed) {
      r = Result::failed("rebuilt the initramfs, but " + ran.msg);
      return;
    }
    if (ran.status == Outcome::changed) r.msg += "; " + ran.msg;
  }
}

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
  if (r.status == Outcome::changed && tool == "dracut" && !args.command) check_guard_again(ctx, apply, r);
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
