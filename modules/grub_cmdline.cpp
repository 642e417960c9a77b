// grub_cmdline: kernel parameters in GRUB_CMDLINE_LINUX (or _DEFAULT) of /etc/default/grub, and on
// Debian and Ubuntu the kernel-update guard's hook that checks each new kernel's entry carries them.
#include <set>

#include "agent/diff.hpp"
#include "agent/preimage.hpp"
#include "agent/shell_syntax.hpp"
#include "modules/lib/grub_default.hpp"
#include "modules/lib/grub_guard.hpp"

namespace gpt {
namespace {

struct Args : CmdlineArgs {
  std::string key = "GRUB_CMDLINE_LINUX";
  std::string path = "/etc/default/grub";
  bool regenerate = true;
  bool backup = true;
};

// The kernel guard: Debian's hook after update-grub; on BootLoaderSpec hosts kernel-install's
// plugin, whose gaps grubby's update of every entry repairs.
void guard_kernels(Context& ctx, std::string_view grub_default, const CmdlineEdit& edit, bool apply, Result& r) {
  guard_new_kernels(ctx, edit.present, edit.absent, apply, r);
  if (bls_grub(ctx.facts, grub_default)) guard_new_entries(ctx, edit.present, edit.absent, true, apply, r);
}

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  auto wanted = wanted_cmdline(ctx.facts, args);
  if (!wanted) return Result::failed(wanted.error());
  CmdlineEdit edit;
  edit.key = args.key;
  edit.present = wanted->present;
  edit.absent = wanted->absent;
  const std::string& note = wanted->note;
  const std::string& path = args.path;

  auto text = read_file(ctx.root, path, kMaxGrubFileBytes);
  if (!text) return Result::failed(text.error());
  // A file sh refuses fails update-grub, edited or not: it is not ours to edit further.
  if (auto valid = check_shell_file(path, *text); !valid) return Result::failed(valid.error());
  auto res = edit_grub_cmdline(*text, edit);
  if (!res) return Result::failed(path + ": " + res.error());
  const json expect = {{"cmdline_present", edit.present}, {"cmdline_absent", edit.absent}};
  if (!res->changed()) {
    Result r = Result::ok(edit.key + " is as wanted" + note);
    r.data["path"] = path;
    r.expect = expect;
    guard_kernels(ctx, *text, edit, apply, r);
    return r;
  }
  Result r = Result::changed(edit.key + ": " + res->summary() + note);
  r.expect = expect;
  r.diff = unified_diff(*text, res->text, path);
  r.reboot_required = true;
  r.data = {{"path", path}, {"added", res->added}, {"removed", res->removed}, {"replaced", res->replaced}};
  if (args.regenerate) r.handlers = grub_handlers(ctx.facts, *text, *res);
  if (apply) {
    // What the host had before the agent's first change, for gptagent revert; the backup, for a
    // trial boot that does not come up (the runner notes data["backups"]).
    if (auto kept = keep_preimage(ctx.root, path); !kept) return Result::failed(kept.error());
    WriteOptions wo;
    wo.backup = args.backup;
    auto written = write_file_atomic(ctx.root, path, res->text, wo);
    if (!written) return Result::failed(written.error());
    if (written->backup_path) {
      r.data["backup"] = *written->backup_path;
      r.data["backups"][path] = *written->backup_path;
    }
  }
  guard_kernels(ctx, *text, edit, apply, r);
  return r;
}

// What `gptagent doc grub_cmdline` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Makes GRUB_CMDLINE_LINUX (or, with key: GRUB_CMDLINE_LINUX_DEFAULT, that one) in /etc/default/grub hold "
          "the present parameters and none of the absent ones. iommu: auto, intel or amd adds intel_iommu=on on "
          "Intel CPUs; on AMD, where the kernel enables the IOMMU by default and has no amd_iommu=on, it removes "
          "amd_iommu=off and iommu=off instead. name=value replaces other values of name in place (intel_iommu=off "
          "becomes intel_iommu=on) and drops later ones that would override it; '-' and '_' in names are the same, "
          "as in the kernel.\n\n"
          "The file is edited as shell: quoting style, comments, other keys and every byte outside the edited value "
          "are kept; single, double or no quotes, a missing key, a commented-out line, a key assigned twice, "
          "$GRUB_CMDLINE_LINUX self-references and backslash-newline continuations are handled; values that run "
          "commands are refused. A file that sh -n would refuse (a left-over merge-conflict marker, an unclosed "
          "quote or $(, an if without fi) is refused with path:line: (the line dash reports) and nothing is written, "
          "in --check too; so are such GRUB files for kernel_cmdline and vfio, and a /etc/mkinitcpio.conf that "
          "bash -n would refuse. The check is gptagent's own parser (agent/shell_syntax): no shell is run on the "
          "host's file.\n\n"
          "A change notifies grub_config (regenerate: false skips it) and, on BootLoaderSpec hosts "
          "(GRUB_ENABLE_BLSCFG=true, grubby installed), grubby, which updates the existing boot entries too; it "
          "needs a reboot.\n\n"
          "On Debian and Ubuntu it installs the kernel guard's hook, /etc/kernel/postinst.d/zzz-gptagent-cmdline: "
          "each kernel installed from then on is checked for an entry in grub.cfg with the parameters, the result "
          "recorded for gptagent status and --check; a recorded entry without them is drift, repaired by "
          "regenerating grub.cfg.",
      .examples = {"# Turn the IOMMU on for this CPU's vendor and keep host devices out of its translation\n"
                   "- name: IOMMU on\n"
                   "  grub_cmdline:\n"
                   "    iommu: auto\n"
                   "    present: [iommu=pt]\n",
                   "# On Ubuntu, where the stock file keeps its options: nouveau's modesetting off, nomodeset gone\n"
                   "- grub_cmdline:\n"
                   "    key: GRUB_CMDLINE_LINUX_DEFAULT\n"
                   "    present: [nouveau.modeset=0]\n"
                   "    absent: [nomodeset]\n"},
      .notifies = {"grub_config", "grubby"},
      .reboot = true,
  };
}

ModuleDef definition() {
  auto def = declare_module(
      "grub_cmdline", "kernel parameters in GRUB_CMDLINE_LINUX of /etc/default/grub",
      cmdline_args<Args>()
          .arg("key", &Args::key, "the variable of /etc/default/grub that holds them",
               {.choices = {"GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"}})
          .arg("path", &Args::path, "the file that holds the variable",
               {.check = [](const json& v) -> std::optional<std::string> {
                 if (v.get<std::string>().empty() || v.get<std::string>()[0] != '/') return "must be an absolute path";
                 return std::nullopt;
               }})
          .arg("regenerate", &Args::regenerate, "regenerate grub.cfg (the grub_config handler) when the file changed")
          .arg("backup", &Args::backup, "keep the file as it was beside it (*.gptagent-YYYYmmddTHHMMSS)")
          .check([](const Args& a) { return check_present_absent(a); }),
      converge);
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt
