// Facts about the managed host, read from its /proc, /sys and /etc under the root, parsed by pure
// functions that tests feed with text copied from real machines.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/gpu.hpp"
#include "agent/pci.hpp"

namespace gpt {

class Root;

struct CpuInfo {
  std::string vendor_id;  // GenuineIntel, AuthenticAMD, ... (empty when unknown)
  std::string vendor;     // intel, amd, or unknown
  std::string model_name;
  std::vector<std::string> flags;  // of the first processor
  bool has_flag(std::string_view f) const;
};

struct OsRelease {
  std::string id;  // debian, ubuntu, fedora, rhel, arch...
  std::vector<std::string> id_like;
  std::string version_id;
  std::string pretty_name;
};

// How the host builds its boot files: the tools found under the root.
struct BootTools {
  std::string grub;       // update-grub, grub2-mkconfig, grub-mkconfig, or empty
  std::string initramfs;  // update-initramfs, dracut, mkinitcpio, or empty
  bool grubby = false;    // Fedora/RHEL: boot entries edited with grubby
};

struct Facts {
  CpuInfo cpu;
  OsRelease os;
  std::string kernel_release;
  std::string boot_id;
  std::vector<std::string> cmdline;  // the running kernel's parameters, in order
  BootTools boot;
  std::vector<std::string> modules;                    // loaded (from /proc/modules), names with '_'
  std::vector<std::string> builtin_modules;            // built into the running kernel (modules.builtin)
  bool module_available(std::string_view name) const;  // loaded or built in
  bool kvm = false;                                    // /dev/kvm exists
  IommuState iommu;
  std::vector<Verdict> iommu_verdicts;
  std::vector<PciDevice> pci;
  std::vector<Gpu> gpus;
  std::optional<bool> secure_boot;     // from efivars; nullopt when not booted through UEFI or unreadable
  std::vector<Verdict> host_verdicts;  // Secure Boot, and what the expert checks could not look at
  std::vector<std::string> warnings;   // what could not be read, in words
  // Files that exist but could not be read (an I/O error, no permission): facts a run must not
  // guess at (each is among the warnings too).
  std::vector<std::string> errors;
  // The VMs' GPU hand-off plans (gpu_handoff), each with `stopped`: the units its hook stopped and
  // has not started again (the VM runs, or its release never came).
  nlohmann::json handoff = nlohmann::json::array();
  nlohmann::json to_json() const;
};

CpuInfo parse_cpuinfo(std::string_view text);
OsRelease parse_os_release(std::string_view text);
// Splits a kernel command line the way the kernel does: on blanks, with double quotes grouping.
std::vector<std::string> parse_cmdline(std::string_view text);
// The name of a kernel parameter as the kernel compares it: the text before '=', with '-' and
// '_' equal ("vfio-pci.ids" is "vfio_pci.ids").
std::string param_name(std::string_view param);

// Module names from /proc/modules text.
std::vector<std::string> parse_proc_modules(std::string_view text);
// Module names from a modules.builtin file ("kernel/drivers/vfio/vfio.ko" -> "vfio").
std::vector<std::string> parse_modules_builtin(std::string_view text);
// "6.1.0-18-amd64" -> {6, 1}; {0, 0} when it cannot be read.
std::pair<int, int> kernel_version(std::string_view release);
// The kernel's module name form: '-' is '_'.
std::string module_name(std::string_view name);
BootTools detect_boot_tools(const Root& root);

// Reads the facts this release knows of. Missing files become warnings, never errors; files that
// exist and cannot be read become errors too.
Facts gather_facts(const Root& root);

}  // namespace gpt
