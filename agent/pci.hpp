// PCI devices as the root's sysfs shows them: addresses, ids, the functions of a slot.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/expected.hpp"

namespace gpt {

class Root;

// "01:00.0" or "0000:01:00.0" (any case) -> "0000:01:00.0"; nullopt when it is not DDDD:BB:SS.F.
std::optional<std::string> parse_pci_address(std::string_view text);
// "10de:1b80" (any case, no 0x) -> "10de:1b80"; nullopt when it is not two 4-digit hex ids.
std::optional<std::string> parse_pci_id(std::string_view text);

// "0000:01:00" of "0000:01:00.1".
std::string pci_slot(std::string_view address);

// Every function present under /sys/bus/pci/devices in the slot of `address`, sorted; an error
// naming the address when the device itself is not there.
Expected<std::vector<std::string>> pci_slot_functions(const Root& root, std::string_view address);
// "vendor:device" of a device, from its sysfs vendor and device files.
Expected<std::string> pci_device_id(const Root& root, std::string_view address);

}  // namespace gpt

namespace gpt {

// A range of physical addresses (both ends included) as /proc/iomem and sysfs `resource` give them;
// `name` and `depth` (the nesting) only for iomem.
struct MemRange {
  uint64_t start = 0, end = 0;
  std::string name;
  int depth = 0;
};

// One PCI function as sysfs shows it.
struct PciDevice {
  std::string address;         // 0000:01:00.0
  uint32_t class_code = 0;     // 0x030000
  std::string vendor, device;  // "10de", "1b80"
  std::string subsystem_vendor, subsystem_device;
  std::string driver;  // bound driver, empty when none
  std::optional<int> iommu_group;
  bool boot_vga = false;
  std::string name;                         // from pci.ids when the host has it
  std::vector<MemRange> bars;               // memory BARs (sysfs `resource`)
  std::optional<std::string> reset_method;  // "flr bus"; nullopt on kernels without the file (before 5.15)
  std::vector<std::string> drm;             // the DRM nodes its driver made: card1, renderD129
  std::vector<std::string> problems;        // what could not be read, in words

  std::string id() const { return vendor + ":" + device; }
  uint8_t base_class() const { return static_cast<uint8_t>(class_code >> 16); }
  bool display() const { return base_class() == 0x03; }
  bool bridge() const { return base_class() == 0x06; }
  std::string class_name() const;  // "VGA compatible controller", "Audio device"...
};

// "0x030000\n" -> 0x030000; nullopt for anything else.
std::optional<uint32_t> parse_sysfs_hex(std::string_view text);

// Every device under the root's /sys/bus/pci/devices, sorted by address. What cannot be read
// becomes the device's `problems`, never an error: facts must work on odd hosts.
std::vector<PciDevice> read_pci_devices(const Root& root);

// Names from a pci.ids database text: "vendor:device" -> "Vendor Device".
void name_pci_devices(std::vector<PciDevice>& devices, std::string_view pci_ids);

}  // namespace gpt
