#include "agent/gpu.hpp"

#include <algorithm>
#include <set>

#include "agent/facts.hpp"
#include "agent/module.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

bool has_param(const std::vector<std::string>& cmdline, std::string_view param) {
  return std::any_of(cmdline.begin(), cmdline.end(), [&](const std::string& p) {
    return param_name(p) == param_name(param) && p.substr(p.find('=') + 1) == param.substr(param.find('=') + 1);
  });
}

Verdict blocker(std::string r) { return {Verdict::Level::blocker, std::move(r)}; }
Verdict warning(std::string r) { return {Verdict::Level::warning, std::move(r)}; }
Verdict info(std::string r) { return {Verdict::Level::info, std::move(r)}; }

const std::set<std::string> kHostGpuDrivers = {"nouveau", "nvidia", "amdgpu", "radeon", "i915", "xe"};

}  // namespace

std::string Verdict::level_name() const {
  return level == Level::blocker ? "blocker" : level == Level::warning ? "warning" : "info";
}

bool Gpu::viable() const {
  return std::none_of(verdicts.begin(), verdicts.end(),
                      [](const Verdict& v) { return v.level == Verdict::Level::blocker; });
}

std::string Gpu::blockers() const {
  std::vector<std::string> out;
  for (const auto& v : verdicts)
    if (v.level == Verdict::Level::blocker) out.push_back(v.reason);
  return join(out, "; ");
}

std::string Gpu::users() const {
  std::vector<std::string> out;
  for (const auto& u : in_use) out.push_back(u.comm + " (pid " + std::to_string(u.pid) + ")");
  return join(out, ", ");
}

std::vector<Verdict> iommu_verdicts(const CpuInfo& cpu, const std::vector<std::string>& cmdline,
                                    const IommuState& iommu) {
  if (iommu.on()) {
    std::vector<Verdict> out = {info("the IOMMU is on: " + std::to_string(iommu.groups) + " groups")};
    for (const auto& p : cmdline)
      if (param_name(p) == "pcie_acs_override")
        out.push_back(
            warning(p + " is on the command line: groups may look isolated when the hardware does not isolate them"));
    return out;
  }
  if (has_param(cmdline, "iommu=off"))
    return {warning("iommu=off on the kernel command line turns the IOMMU off: remove it")};
  if (cpu.vendor == "intel") {
    if (has_param(cmdline, "intel_iommu=off"))
      return {warning(
          "intel_iommu=off on the kernel command line: replace it with intel_iommu=on (grub_cmdline iommu: auto)")};
    if (has_param(cmdline, "intel_iommu=on"))
      return {blocker("the kernel runs with intel_iommu=on but found no IOMMU: enable VT-d in the firmware setup")};
    // No DMAR table: the firmware describes no IOMMU, and no kernel parameter can help.
    if (iommu.firmware_table == false)
      return {blocker("the firmware offers no IOMMU (no ACPI DMAR table): enable VT-d in the firmware setup")};
    return {
        warning("the IOMMU is off in the kernel: add intel_iommu=on to the kernel command line (grub_cmdline iommu: "
                "auto) and reboot")};
  }
  if (cpu.vendor == "amd") {
    if (has_param(cmdline, "amd_iommu=off"))
      return {warning("amd_iommu=off on the kernel command line turns the IOMMU off: remove it")};
    if (iommu.firmware_table == false)
      return {
          blocker("the firmware offers no IOMMU (no ACPI IVRS table): enable IOMMU / AMD-Vi in the firmware setup")};
    return {
        blocker("the kernel found no IOMMU (AMD enables it by default): enable IOMMU / AMD-Vi in the firmware setup")};
  }
  return {blocker("no IOMMU groups: enable the IOMMU in the firmware and on the kernel command line")};
}

std::vector<Gpu> discover_gpus(const std::vector<PciDevice>& devices, const IommuState& iommu,
                               const std::vector<Verdict>& host) {
  std::vector<Gpu> gpus;
  std::set<std::string> seen_slots;
  for (const auto& d : devices) {
    if (!d.display() || !seen_slots.insert(pci_slot(d.address)).second) continue;
    Gpu g;
    g.address = d.address;
    g.id = d.id();
    g.name = d.name;
    g.driver = d.driver;
    g.boot_vga = d.boot_vga;
    g.functions.push_back(d.address);
    for (const auto& f : devices)
      if (f.address != d.address && pci_slot(f.address) == pci_slot(d.address)) g.functions.push_back(f.address);
    for (const auto& f : devices)
      if (std::find(g.functions.begin(), g.functions.end(), f.address) != g.functions.end() && f.iommu_group &&
          std::find(g.groups.begin(), g.groups.end(), *f.iommu_group) == g.groups.end())
        g.groups.push_back(*f.iommu_group);
    for (const auto& f : devices) {
      if (!f.iommu_group || std::find(g.groups.begin(), g.groups.end(), *f.iommu_group) == g.groups.end()) continue;
      if (std::find(g.functions.begin(), g.functions.end(), f.address) != g.functions.end() || f.bridge()) continue;
      g.peers.push_back(f.address);
      g.verdicts.push_back(
          blocker("IOMMU group " + std::to_string(*f.iommu_group) + " also holds " + f.address + " (" + f.class_name() +
                  " " + f.id() + (f.driver.empty() ? "" : ", " + f.driver) +
                  "): the GPU cannot be passed through without it, and ACS would be needed to split them"));
    }
    for (const auto& v : host)
      if (v.level != Verdict::Level::info) g.verdicts.push_back(v);
    if (!iommu.on()) g.verdicts.push_back(info("its isolation is unknown until the IOMMU is on"));
    if (d.boot_vga)
      g.verdicts.push_back(
          blocker("it is the boot VGA device: the host console uses it (pass another GPU, or make another one primary "
                  "in the firmware setup)"));
    if (d.driver == "vfio-pci")
      g.verdicts.push_back(info("bound to vfio-pci: ready for a VM"));
    else if (kHostGpuDrivers.count(d.driver))
      g.verdicts.push_back(
          info("bound to " + d.driver +
               " now: vfio-pci takes it after a reboot with the vfio configuration, or now with vfio_bind"));
    for (const auto& f : devices)
      if (std::find(g.functions.begin(), g.functions.end(), f.address) != g.functions.end())
        for (const auto& p : f.problems) g.verdicts.push_back(warning(f.address + ": " + p));
    gpus.push_back(std::move(g));
  }
  return gpus;
}

nlohmann::json to_json(const Verdict& v) { return {{"level", v.level_name()}, {"reason", v.reason}}; }

nlohmann::json to_json(const Gpu& g) {
  nlohmann::json verdicts = nlohmann::json::array();
  for (const auto& v : g.verdicts) verdicts.push_back(to_json(v));
  nlohmann::json users = nlohmann::json::array();
  for (const auto& u : g.in_use) users.push_back({{"pid", u.pid}, {"comm", u.comm}, {"nodes", u.nodes}});
  auto or_null = [](const auto& v) { return v.empty() ? nlohmann::json(nullptr) : nlohmann::json(v); };
  nlohmann::json j = {{"address", g.address},     {"id", g.id},
                      {"name", g.name},           {"driver", g.driver},
                      {"boot_vga", g.boot_vga},   {"functions", g.functions},
                      {"iommu_groups", g.groups}, {"group_peers", g.peers},
                      {"viable", g.viable()},     {"verdicts", verdicts},
                      {"in_use", users},          {"reset_bug", or_null(g.reset_bug)}};
  j["reset_method"] = g.reset_method ? nlohmann::json(*g.reset_method) : nlohmann::json(nullptr);
  j["framebuffer"] = g.framebuffer.empty()
                         ? nlohmann::json(nullptr)
                         : nlohmann::json{{"name", g.framebuffer}, {"release_param", g.framebuffer_param}};
  return j;
}

nlohmann::json to_json(const PciDevice& d) {
  char cls[16];
  std::snprintf(cls, sizeof cls, "0x%06x", d.class_code);
  nlohmann::json j = {{"address", d.address},
                      {"class", cls},
                      {"class_name", d.class_name()},
                      {"vendor", d.vendor},
                      {"device", d.device},
                      {"subsystem_vendor", d.subsystem_vendor},
                      {"subsystem_device", d.subsystem_device},
                      {"driver", d.driver},
                      {"boot_vga", d.boot_vga},
                      {"name", d.name}};
  j["iommu_group"] = d.iommu_group ? nlohmann::json(*d.iommu_group) : nlohmann::json(nullptr);
  if (!d.problems.empty()) j["problems"] = d.problems;
  return j;
}

ArgSpec gpus_arg(const json& default_value) {
  return {.name = "gpus",
          .type = ArgType::any,
          .default_value = default_value,
          .check = [](const json& v) -> std::optional<std::string> {
            if (v.is_string() && v.get<std::string>() == "auto") return std::nullopt;
            if (!v.is_array()) return "must be auto or a list of PCI addresses";
            for (const auto& a : v)
              if (!a.is_string() || !parse_pci_address(a.get<std::string>()))
                return "'" + (a.is_string() ? a.get<std::string>() : a.dump()) +
                       "' is not a PCI address like 0000:01:00.0";
            return std::nullopt;
          },
          .doc = "auto (every GPU that can be passed through, with all its functions) or a list of PCI addresses",
          .example = nlohmann::json::array({"0000:01:00.0"})};
}

Expected<std::vector<Gpu>> select_gpus(const Facts& facts, const nlohmann::json& spec, bool force) {
  std::vector<Gpu> out;
  if (spec.is_string() && spec.get<std::string>() == "auto") {
    std::vector<std::string> why_not;
    for (const auto& g : facts.gpus) {
      if (g.viable())
        out.push_back(g);
      else
        why_not.push_back(g.address + ": " + g.blockers());
    }
    if (out.empty())
      return Error{facts.gpus.empty()
                       ? "gpus: auto found no GPU on this host"
                       : "gpus: auto found no GPU that can be passed through (" + join(why_not, "; ") + ")"};
    return out;
  }
  for (const auto& a : spec) {
    auto addr = parse_pci_address(a.get<std::string>());
    if (!addr) return Error{"'" + a.get<std::string>() + "' is not a PCI address like 0000:01:00.0"};
    auto it = std::find_if(facts.gpus.begin(), facts.gpus.end(), [&](const Gpu& g) {
      return std::find(g.functions.begin(), g.functions.end(), *addr) != g.functions.end();
    });
    Gpu g;
    if (it != facts.gpus.end()) {
      g = *it;
    } else {
      // Not a display device: the user names it, so its whole slot goes, with no GPU verdicts.
      auto dev =
          std::find_if(facts.pci.begin(), facts.pci.end(), [&](const PciDevice& d) { return d.address == *addr; });
      if (dev == facts.pci.end()) return Error{"PCI device " + *addr + " does not exist on this host"};
      g.address = dev->address;
      g.id = dev->id();
      g.driver = dev->driver;
      for (const auto& f : facts.pci)
        if (pci_slot(f.address) == pci_slot(*addr)) g.functions.push_back(f.address);
    }
    if (!g.viable() && !force)
      return Error{"GPU " + g.address + " cannot be passed through: " + g.blockers() +
                   " (force: true to go on anyway)"};
    if (std::none_of(out.begin(), out.end(), [&](const Gpu& o) { return o.address == g.address; })) out.push_back(g);
  }
  return out;
}

}  // namespace gpt
