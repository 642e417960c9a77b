// grub_cmdline: kernel parameters in GRUB_CMDLINE_LINUX (or _DEFAULT) of /etc/default/grub.
#include <set>

#include "agent/diff.hpp"
#include "agent/module.hpp"
#include "agent/shell_syntax.hpp"
#include "modules/grub_default.hpp"

namespace gpt {
namespace {

Result converge(Context& ctx, const json& args, bool apply) {
  auto wanted = wanted_cmdline(ctx.facts, args);
  if (!wanted) return Result::failed(wanted.error());
  CmdlineEdit edit;
  edit.key = args["key"].get<std::string>();
  edit.present = wanted->present;
  edit.absent = wanted->absent;
  const std::string& note = wanted->note;
  const std::string path = args["path"].get<std::string>();

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
    return r;
  }
  Result r = Result::changed(edit.key + ": " + res->summary() + note);
  r.expect = expect;
  r.diff = unified_diff(*text, res->text, path);
  r.reboot_required = true;
  r.data = {{"path", path}, {"added", res->added}, {"removed", res->removed}, {"replaced", res->replaced}};
  if (args["regenerate"].get<bool>()) r.handlers = grub_handlers(ctx.facts, *text, *res);
  if (apply) {
    WriteOptions wo;
    wo.backup = args["backup"].get<bool>();
    auto written = write_file_atomic(ctx.root, path, res->text, wo);
    if (!written) return Result::failed(written.error());
    if (written->backup_path) r.data["backup"] = *written->backup_path;
  }
  return r;
}

const Registration registration{ModuleDef{
    .name = "grub_cmdline",
    .summary = "kernel parameters in GRUB_CMDLINE_LINUX of /etc/default/grub",
    .schema =
        {
            .args =
                {
                    {.name = "present", .type = ArgType::list, .default_value = json::array(), .check = check_kernel_params},
                    {.name = "absent", .type = ArgType::list, .default_value = json::array(), .check = check_kernel_params},
                    {.name = "iommu",
                     .type = ArgType::str,
                     .default_value = "none",
                     .choices = {"auto", "intel", "amd", "none"}},
                    {.name = "key",
                     .type = ArgType::str,
                     .default_value = "GRUB_CMDLINE_LINUX",
                     .choices = {"GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"}},
                    {.name = "path", .type = ArgType::str, .default_value = "/etc/default/grub",
                     .check = [](const json& v) -> std::optional<std::string> {
                       if (v.get<std::string>().empty() || v.get<std::string>()[0] != '/') return "must be an absolute path";
                       return std::nullopt;
                     }},
                    {.name = "regenerate", .type = ArgType::boolean, .default_value = true},
                    {.name = "backup", .type = ArgType::boolean, .default_value = true},
                },
            .check = check_present_absent,
        },
    .converge = converge,
    .changes_boot = true,
}};

}  // namespace
}  // namespace gpt
