// GPUs as an expert looks at them before passthrough: the functions of their slot, their IOMMU
// groups, and verdicts with the reason in words.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/expected.hpp"
#include "agent/pci.hpp"

namespace gpt {

struct CpuInfo;

struct IommuState {
  int groups = 0;                  // entries of /sys/kernel/iommu_groups
  std::vector<std::string> units;  // /sys/class/iommu: dmar0, ivhd0...
  // The firmware's IOMMU table (ACPI DMAR on Intel, IVRS on AMD) in /sys/firmware/acpi/tables:
  // true or false when the tables are readable, unknown when they are not (no ACPI, a sample tree).
  std::optional<bool> firmware_table;
  bool on() const { return groups > 0; }
};

struct Verdict {
  enum class Level { blocker, warning, info };
  Level level;
  std::string reason;
  std::string level_name() const;
};

// A process with the GPU's device nodes open.
struct GpuUser {
  long pid = 0;
  std::string comm;
  std::vector<std::string> nodes;  // /dev/dri/card1, /dev/nvidia0...
  std::vector<std::string> fds;    // /proc/PID/fd/N
};

struct Gpu {
  std::string address;  // the display function
  std::string id;       // vendor:device of that function
  std::string name;
  std::string driver;
  bool boot_vga = false;
  std::vector<std::string> functions;  // every function of the slot, the display one first
  std::vector<int> groups;             // IOMMU groups of those functions
  std::vector<std::string> peers;      // other devices in those groups, bridges excepted
  std::vector<Verdict> verdicts;
  std::vector<GpuUser> in_use;              // processes holding it
  std::string framebuffer;                  // the boot framebuffer in its memory (efifb, simpledrm...), or empty
  std::string framebuffer_param;            // the kernel parameter that releases it
  std::optional<std::string> reset_method;  // as sysfs says; nullopt where the kernel does not say
  std::string reset_bug;                    // the AMD family vendor-reset is for, or empty
  bool viable() const;                      // no blocker
  std::string users() const;                // "Xorg (pid 999), ..."
  std::string blockers() const;             // the blockers' reasons, joined
};

// The host's IOMMU in words: off in the kernel (and the parameter to add), off in the firmware,
// or turned off on the command line.
std::vector<Verdict> iommu_verdicts(const CpuInfo& cpu, const std::vector<std::string>& cmdline,
                                    const IommuState& iommu);

// Every display-class device with the rest of its slot and its group peers, and the verdicts.
std::vector<Gpu> discover_gpus(const std::vector<PciDevice>& devices, const IommuState& iommu,
                               const std::vector<Verdict>& host);

nlohmann::json to_json(const Verdict& v);
nlohmann::json to_json(const Gpu& g);
nlohmann::json to_json(const PciDevice& d);

struct Facts;
struct ArgSpec;
// The `gpus` argument of modules that take GPUs: "auto" or a list of PCI addresses; with a
// `default_value` ("auto") when the module has one.
ArgSpec gpus_arg(const nlohmann::json& default_value = {});
// The GPUs a task's `gpus:` means: "auto" (every viable GPU that is not the boot VGA) or a list of
// PCI addresses, each meaning its whole slot. An explicit GPU with a blocker fails with the reason
// unless `force`. Addresses must exist.
Expected<std::vector<Gpu>> select_gpus(const Facts& facts, const nlohmann::json& spec, bool force);

}  // namespace gpt
