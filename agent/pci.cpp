#include "agent/pci.hpp"

#include <algorithm>
#include <cctype>

#include "agent/host.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

bool hex(std::string_view s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

std::optional<std::string> parse_pci_address(std::string_view t) {
  std::string full = t.size() == 7 ? "0000:" + std::string(t) : std::string(t);
  std::string_view s = full;
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return std::nullopt;
  if (!hex(s.substr(0, 4), 4) || !hex(s.substr(5, 2), 2) || !hex(s.substr(8, 2), 2)) return std::nullopt;
  if (s[11] < '0' || s[11] > '7') return std::nullopt;
  int slot = std::stoi(std::string(s.substr(8, 2)), nullptr, 16);
  if (slot > 0x1f) return std::nullopt;
  return lower(s);
}

std::optional<std::string> parse_pci_id(std::string_view t) {
  if (t.size() != 9 || t[4] != ':' || !hex(t.substr(0, 4), 4) || !hex(t.substr(5, 4), 4)) return std::nullopt;
  return lower(t);
}

std::string pci_slot(std::string_view address) { return std::string(address.substr(0, address.rfind('.'))); }

Expected<std::vector<std::string>> pci_slot_functions(const Root& root, std::string_view address) {
  if (!path_exists(root, "/sys/bus/pci/devices/" + std::string(address)))
    return Error{"PCI device " + std::string(address) + " does not exist (no /sys/bus/pci/devices/" +
                 std::string(address) + ")"};
  auto names = list_dir(root, "/sys/bus/pci/devices");
  if (!names) return Error{names.error()};
  std::vector<std::string> out;
  const std::string slot = pci_slot(address) + ".";
  for (const auto& n : *names)
    if (n.rfind(slot, 0) == 0 && parse_pci_address(n)) out.push_back(n);
  return out;
}

Expected<std::string> pci_device_id(const Root& root, std::string_view address) {
  const std::string dir = "/sys/bus/pci/devices/" + std::string(address);
  auto vendor = read_file(root, dir + "/vendor", 64);
  if (!vendor) return Error{vendor.error()};
  auto device = read_file(root, dir + "/device", 64);
  if (!device) return Error{device.error()};
  auto strip = [](std::string_view v) {
    v = trim(v);
    if (v.substr(0, 2) == "0x") v.remove_prefix(2);
    return std::string(v);
  };
  auto id = parse_pci_id(strip(*vendor) + ":" + strip(*device));
  if (!id) return Error{"PCI device " + std::string(address) + " has unreadable ids: '" + std::string(trim(*vendor)) +
                        "', '" + std::string(trim(*device)) + "'"};
  return *id;
}

}  // namespace gpt
