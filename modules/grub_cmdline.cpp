// grub_cmdline: kernel parameters in GRUB_CMDLINE_LINUX (or _DEFAULT) of /etc/default/grub.
#include <set>

#include "agent/diff.hpp"
#include "agent/module.hpp"
#include "modules/grub_default.hpp"

namespace gpt {
namespace {

std::optional<std::string> check_params(const json& list) {
  for (const auto& p : list) {
    const std::string s = p.get<std::string>();
    if (!valid_kernel_param(s))
      return "'" + s + "' is not a kernel parameter: letters, digits and _.,:/+@%=~^[]- only, no blanks or quotes";
  }
  return std::nullopt;
}

std::optional<std::string> check_args(const json& args) {
  std::set<std::string> present;
  for (const auto& p : args["present"]) present.insert(p.get<std::string>());
  for (const auto& a : args["absent"]) {
    const std::string s = a.get<std::string>();
    for (const auto& p : present) {
      if (p == s || (s.find('=') == std::string::npos && param_name(p) == param_name(s)))
        return "'" + p + "' is both present and absent";
    }
  }
  return std::nullopt;
}

Result converge(Context& ctx, const json& args, bool apply) {
  CmdlineEdit edit;
  edit.key = args["key"].get<std::string>();
  edit.present = args["present"].get<std::vector<std::string>>();
  edit.absent = args["absent"].get<std::vector<std::string>>();
  const std::string path = args["path"].get<std::string>();

  // The IOMMU switch from the CPU vendor. Intel's IOMMU is off unless intel_iommu=on; AMD's is on
  // by default and the kernel has no amd_iommu=on, so on AMD only the switches that turn it off go.
  std::string iommu = args["iommu"].get<std::string>();
  std::string note;
  if (iommu == "auto") {
    iommu = ctx.facts.cpu.vendor;
    if (iommu != "intel" && iommu != "amd")
      return Result::failed("iommu: auto cannot tell the CPU vendor from /proc/cpuinfo (vendor_id '" +
                            ctx.facts.cpu.vendor_id + "'); set iommu: intel or amd");
  }
  if (iommu == "intel") {
    edit.present.insert(edit.present.begin(), "intel_iommu=on");
    edit.absent.push_back("iommu=off");
  } else if (iommu == "amd") {
    edit.absent.push_back("amd_iommu=off");
    edit.absent.push_back("iommu=off");
    note = " (the AMD IOMMU is on by default: nothing to add for it)";
  }

  auto text = read_file(ctx.root, path, kMaxGrubFileBytes);
  if (!text) return Result::failed(text.error());
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
                    {.name = "present", .type = ArgType::list, .default_value = json::array(), .check = check_params},
                    {.name = "absent", .type = ArgType::list, .default_value = json::array(), .check = check_params},
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
            .check = check_args,
        },
    .converge = converge,
    .changes_boot = true,
}};

}  // namespace
}  // namespace gpt
