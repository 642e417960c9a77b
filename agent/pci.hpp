// PCI devices as the root's sysfs shows them: addresses, ids, the functions of a slot.
#pragma once

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
