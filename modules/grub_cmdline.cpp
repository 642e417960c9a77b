// grub_cmdline: kernel parameters in GRUB_CMDLINE_LINUX (or _DEFAULT) of /etc/default/grub, and on
// Debian and Ubuntu the kernel-update guard's hook that checks each new kernel's entry carries them.
#include <set>

#include "agent/diff.hpp"
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
    guard_new_kernels(ctx, edit.present, apply, r);
    return r;
  }
  Result r = Result::changed(edit.key + ": " + res->summary() + note);
  r.expect = expect;
  r.diff = unified_diff(*text, res->text, path);
  r.reboot_required = true;
  r.data = {{"path", path}, {"added", res->added}, {"removed", res->removed}, {"replaced", res->replaced}};
  if (args.regenerate) r.handlers = grub_handlers(ctx.facts, *text, *res);
  if (apply) {
    WriteOptions wo;
    wo.backup = args.backup;
    auto written = write_file_atomic(ctx.root, path, res->text, wo);
    if (!written) return Result::failed(written.error());
    if (written->backup_path) r.data["backup"] = *written->backup_path;
  }
  guard_new_kernels(ctx, edit.present, apply, r);
  return r;
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
  def.changes_boot = true;
  return def;
}
const Registration registration{definition()};

}  // namespace
}  // namespace gpt
