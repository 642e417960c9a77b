#include "agent/facts.hpp"

#include <algorithm>

#include "agent/gpu_hold.hpp"
#include "agent/handoff.hpp"
#include "agent/host.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

// Unquotes an os-release value (shell-like: double or single quotes, backslash escapes).
std::string unquote(std::string_view v) {
  v = trim(v);
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
    const char q = v.front();
    v = v.substr(1, v.size() - 2);
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (q == '"' && v[i] == '\\' && i + 1 < v.size()) ++i;
      out += v[i];
    }
    return out;
  }
  return std::string(v);
}

}  // namespace

bool CpuInfo::has_flag(std::string_view f) const { return std::find(flags.begin(), flags.end(), f) != flags.end(); }

CpuInfo parse_cpuinfo(std::string_view text) {
  CpuInfo info;
  bool seen_flags = false;
  for (std::string_view line : lines(text)) {
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = trim(line.substr(0, colon));
    std::string_view value = trim(line.substr(colon + 1));
    if (key == "vendor_id" && info.vendor_id.empty())
      info.vendor_id = value;
    else if (key == "model name" && info.model_name.empty())
      info.model_name = value;
    else if (key == "flags" && !seen_flags) {
      info.flags = words(value);
      seen_flags = true;
    }
  }
  if (info.vendor_id == "GenuineIntel")
    info.vendor = "intel";
  else if (info.vendor_id == "AuthenticAMD" || info.vendor_id == "HygonGenuine")
    info.vendor = "amd";
  else
    info.vendor = "unknown";
  return info;
}

OsRelease parse_os_release(std::string_view text) {
  OsRelease os;
  for (std::string_view line : lines(text)) {
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = line.substr(0, eq);
    std::string value = unquote(line.substr(eq + 1));
    if (key == "ID")
      os.id = value;
    else if (key == "ID_LIKE")
      os.id_like = words(value);
    else if (key == "VERSION_ID")
      os.version_id = value;
    else if (key == "PRETTY_NAME")
      os.pretty_name = value;
  }
  return os;
}

std::vector<std::string> parse_cmdline(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  bool in_quotes = false, have = false;
  for (char c : text) {
    if (c == '"') {
      in_quotes = !in_quotes;
      cur += c;
      have = true;
    } else if (!in_quotes && (c == ' ' || c == '\t' || c == '\n' || c == '\0')) {
      if (have) out.push_back(cur);
      cur.clear();
      have = false;
    } else {
      cur += c;
      have = true;
    }
  }
  if (have) out.push_back(cur);
  return out;
}

std::string param_name(std::string_view param) {
  std::string name(param.substr(0, param.find('=')));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

std::string module_name(std::string_view name) {
  std::string out(name);
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

std::vector<std::string> parse_proc_modules(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view line : lines(text)) {
    std::string_view name = line.substr(0, line.find(' '));
    if (!name.empty()) out.push_back(module_name(name));
  }
  return out;
}

std::vector<std::string> parse_modules_builtin(std::string_view text) {
  std::vector<std::string> out;
  for (const auto& path : words(text)) {
    std::string_view base = path;
    if (auto slash = base.find_last_of('/'); slash != std::string_view::npos) base = base.substr(slash + 1);
    if (base.size() > 3 && base.substr(base.size() - 3) == ".ko") base.remove_suffix(3);
    out.push_back(module_name(base));
  }
  return out;
}

std::pair<int, int> kernel_version(std::string_view release) {
  int major = 0, minor = 0;
  size_t i = 0;
  auto number = [&](int& out) {
    bool any = false;
    while (i < release.size() && release[i] >= '0' && release[i] <= '9') {
      out = out * 10 + (release[i++] - '0');
      any = true;
      if (out > 100000) return false;
    }
    return any;
  };
  if (!number(major) || i >= release.size() || release[i++] != '.' || !number(minor)) return {0, 0};
  return {major, minor};
}

BootTools detect_boot_tools(const Root& root) {
  BootTools t;
  for (const char* tool : {"update-grub", "grub2-mkconfig", "grub-mkconfig"})
    if (find_program(root, tool)) {
      t.grub = tool;
      break;
    }
  for (const char* tool : {"update-initramfs", "dracut", "mkinitcpio"})
    if (find_program(root, tool)) {
      t.initramfs = tool;
      break;
    }
  t.grubby = find_program(root, "grubby").has_value();
  return t;
}

bool Facts::module_available(std::string_view name) const {
  const std::string n = module_name(name);
  return std::find(modules.begin(), modules.end(), n) != modules.end() ||
         std::find(builtin_modules.begin(), builtin_modules.end(), n) != builtin_modules.end();
}

Facts gather_facts(const Root& root) {
  Facts f;
  // An absent file is a warning; one that is there and cannot be read is an error as well.
  auto unread = [&](const std::string& error) {
    f.warnings.push_back(error);
    f.errors.push_back(error);
  };
  auto read = [&](std::string_view path) -> std::string {
    auto text = read_file(root, path, 4u << 20);
    if (!text) {
      auto info = stat_file(root, path);
      if (!info || info->exists)
        unread(text.error());
      else
        f.warnings.push_back(text.error());
      return {};
    }
    return std::move(*text);
  };
  f.cpu = parse_cpuinfo(read("/proc/cpuinfo"));
  auto os = read_file_if_exists(root, "/etc/os-release");
  if (!os) unread(os.error());
  if (os && *os) {
    f.os = parse_os_release(**os);
  } else if (auto usr = read_file_if_exists(root, "/usr/lib/os-release"); usr && *usr) {
    f.os = parse_os_release(**usr);
  } else if (!usr) {
    unread(usr.error());
  } else {
    f.warnings.push_back("no /etc/os-release or /usr/lib/os-release");
  }
  f.kernel_release = std::string(trim(read("/proc/sys/kernel/osrelease")));
  f.boot_id = std::string(trim(read("/proc/sys/kernel/random/boot_id")));
  f.cmdline = parse_cmdline(trim(read("/proc/cmdline")));
  f.boot = detect_boot_tools(root);
  if (auto mods = read_file_if_exists(root, "/proc/modules"); mods && *mods)
    f.modules = parse_proc_modules(**mods);
  else if (!mods)
    unread(mods.error());
  f.kvm = path_exists(root, "/dev/kvm");
  if (auto groups = list_dir(root, "/sys/kernel/iommu_groups"); groups)
    f.iommu.groups = static_cast<int>(groups->size());
  if (auto units = list_dir(root, "/sys/class/iommu"); units) f.iommu.units = *units;
  if (auto tables = list_dir(root, "/sys/firmware/acpi/tables"); tables && !tables->empty())
    f.iommu.firmware_table =
        std::any_of(tables->begin(), tables->end(), [](const std::string& t) { return t == "DMAR" || t == "IVRS"; });
  f.iommu_verdicts = iommu_verdicts(f.cpu, f.cmdline, f.iommu);
  f.pci = read_pci_devices(root);
  f.gpus = discover_gpus(f.pci, f.iommu, f.iommu_verdicts);
  if (!f.kernel_release.empty()) {
    if (auto b = read_file_if_exists(root, "/lib/modules/" + f.kernel_release + "/modules.builtin"); b && *b)
      f.builtin_modules = parse_modules_builtin(**b);
    else if (!b)
      unread(b.error());
  }
  expert_checks(root, f);
  if (auto plans = list_dir(root, kHandoffPlanDir)) {
    for (const auto& name : *plans) {
      if (!name.ends_with(".json")) continue;
      const std::string path = std::string(kHandoffPlanDir) + "/" + name;
      auto text = read_file(root, path, 1u << 20);
      const auto j = text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
      auto plan = j.is_discarded() || j.is_null() ? Expected<HandoffPlan>(Error{path + ": unreadable or not JSON"})
                                                  : handoff_plan_from_json(j, path);
      if (!plan) {
        unread(plan.error());
        continue;
      }
      nlohmann::json one = to_json(*plan);
      one["stopped"] = units_to_json(handoff_stopped(root, plan->vm));
      f.handoff.push_back(std::move(one));
    }
  }
  return f;
}

nlohmann::json Facts::to_json() const {
  nlohmann::json iommu_json = {
      {"on", iommu.on()}, {"groups", iommu.groups}, {"units", iommu.units}, {"verdicts", nlohmann::json::array()}};
  for (const auto& v : iommu_verdicts) iommu_json["verdicts"].push_back(gpt::to_json(v));
  iommu_json["firmware_table"] = iommu.firmware_table ? nlohmann::json(*iommu.firmware_table) : nlohmann::json(nullptr);
  nlohmann::json pci_json = nlohmann::json::array(), gpus_json = nlohmann::json::array();
  for (const auto& d : pci) pci_json.push_back(gpt::to_json(d));
  for (const auto& g : gpus) gpus_json.push_back(gpt::to_json(g));
  nlohmann::json host = nlohmann::json::array();
  for (const auto& v : host_verdicts) host.push_back(gpt::to_json(v));
  return {
      {"iommu", iommu_json},
      {"pci", pci_json},
      {"gpus", gpus_json},
      {"cpu_vendor", cpu.vendor},
      {"cpu_vendor_id", cpu.vendor_id},
      {"cpu_model", cpu.model_name},
      {"cpu_virtualization", cpu.has_flag("vmx")   ? "vmx"
                             : cpu.has_flag("svm") ? "svm"
                                                   : ""},
      {"distro", os.id},
      {"distro_like", os.id_like},
      {"distro_version", os.version_id},
      {"distro_name", os.pretty_name},
      {"kernel_release", kernel_release},
      {"boot_id", boot_id},
      {"cmdline", cmdline},
      {"boot", {{"grub_tool", boot.grub}, {"initramfs_tool", boot.initramfs}, {"grubby", boot.grubby}}},
      {"modules", modules},
      {"kvm", kvm},
      {"secure_boot", secure_boot ? nlohmann::json(*secure_boot) : nlohmann::json(nullptr)},
      {"host_verdicts", host},
      {"warnings", warnings},
      {"handoff", handoff},
  };
}

}  // namespace gpt
