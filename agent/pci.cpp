#include "agent/pci.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "agent/gpu_hold.hpp"
#include "agent/host.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

bool hex(std::string_view s, size_t n) {
  return s.size() == n &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
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
  if (!id)
    return Error{"PCI device " + std::string(address) + " has unreadable ids: '" + std::string(trim(*vendor)) + "', '" +
                 std::string(trim(*device)) + "'"};
  return *id;
}

}  // namespace gpt

namespace gpt {

std::optional<uint32_t> parse_sysfs_hex(std::string_view text) {
  auto v = parse_hex(trim(text), 8);
  if (!v) return std::nullopt;
  return static_cast<uint32_t>(*v);
}

std::string PciDevice::class_name() const {
  const uint32_t sub = class_code >> 8;
  switch (sub) {
    case 0x0300:
      return "VGA compatible controller";
    case 0x0302:
      return "3D controller";
    case 0x0380:
      return "Display controller";
    case 0x0403:
      return "Audio device";
    case 0x0c03:
      return "USB controller";
    case 0x0c80:
      return "Serial bus controller";
    case 0x0200:
      return "Ethernet controller";
    case 0x0280:
      return "Network controller";
    case 0x0600:
      return "Host bridge";
    case 0x0601:
      return "ISA bridge";
    case 0x0604:
      return "PCI bridge";
    case 0x0108:
      return "Non-Volatile memory controller";
    case 0x0106:
      return "SATA controller";
    case 0x0500:
      return "RAM memory";
    case 0x0c05:
      return "SMBus";
    case 0x1180:
      return "Signal processing controller";
  }
  switch (base_class()) {
    case 0x01:
      return "Mass storage controller";
    case 0x02:
      return "Network controller";
    case 0x03:
      return "Display controller";
    case 0x04:
      return "Multimedia controller";
    case 0x05:
      return "Memory controller";
    case 0x06:
      return "Bridge";
    case 0x08:
      return "System peripheral";
    case 0x0c:
      return "Serial bus controller";
  }
  return "Device";
}

std::vector<PciDevice> read_pci_devices(const Root& root) {
  std::vector<PciDevice> out;
  auto names = list_dir(root, "/sys/bus/pci/devices");
  if (!names) return out;
  for (const auto& n : *names) {
    auto addr = parse_pci_address(n);
    if (!addr) continue;
    PciDevice d;
    d.address = *addr;
    const std::string dir = "/sys/bus/pci/devices/" + n;
    auto attr = [&](const char* file, bool required) -> std::optional<uint32_t> {
      auto text = read_file(root, dir + "/" + file, 256);
      if (!text) {
        if (required) d.problems.push_back(std::string("no ") + file);
        return std::nullopt;
      }
      auto v = parse_sysfs_hex(*text);
      if (!v) d.problems.push_back(std::string(file) + " is '" + std::string(trim(*text)) + "', not a hex number");
      return v;
    };
    auto hex4 = [](std::optional<uint32_t> v) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%04x", v.value_or(0) & 0xffff);
      return std::string(buf);
    };
    if (auto c = attr("class", true)) d.class_code = *c;
    auto vendor = attr("vendor", true), device = attr("device", true);
    d.vendor = vendor ? hex4(vendor) : "????";
    d.device = device ? hex4(device) : "????";
    if (auto sv = attr("subsystem_vendor", false)) d.subsystem_vendor = hex4(sv);
    if (auto sd = attr("subsystem_device", false)) d.subsystem_device = hex4(sd);
    if (auto bv = read_file(root, dir + "/boot_vga", 16); bv) d.boot_vga = trim(*bv) == "1";
    if (auto drv = read_link(root, dir + "/driver")) d.driver = drv->substr(drv->find_last_of('/') + 1);
    if (auto res = read_file(root, dir + "/resource", 4096)) d.bars = parse_pci_resource(*res);
    if (auto rm = read_file_if_exists(root, dir + "/reset_method", 256); rm && *rm)
      d.reset_method = std::string(trim(**rm));
    if (auto drm = list_dir(root, dir + "/drm"); drm)
      for (const auto& n : *drm)
        if ((n.starts_with("card") || n.starts_with("renderD")) && n.find('-') == std::string::npos) d.drm.push_back(n);
    if (auto grp = read_link(root, dir + "/iommu_group")) {
      std::string g = grp->substr(grp->find_last_of('/') + 1);
      if (!g.empty() && g.find_first_not_of("0123456789") == std::string::npos && g.size() < 9)
        d.iommu_group = std::stoi(g);
      else
        d.problems.push_back("iommu_group link '" + *grp + "' names no group");
    }
    out.push_back(std::move(d));
  }
  std::sort(out.begin(), out.end(), [](const PciDevice& a, const PciDevice& b) { return a.address < b.address; });
  return out;
}

void name_pci_devices(std::vector<PciDevice>& devices, std::string_view pci_ids) {
  // Only the vendors present are looked up: one pass, remembering the current vendor.
  std::string vendor, vendor_name;
  for (std::string_view line : lines(pci_ids)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == 'C' && line.size() > 1 && line[1] == ' ') break;  // the class list follows the vendors
    if (line[0] != '\t') {
      vendor = std::string(line.substr(0, 4));
      vendor_name = std::string(trim(line.substr(std::min<size_t>(4, line.size()))));  // a cut line: no name
      for (auto& d : devices)
        if (d.vendor == vendor && d.name.empty()) d.name = vendor_name;
      continue;
    }
    if (line.size() > 6 && line[1] != '\t') {
      std::string dev(line.substr(1, 4));
      for (auto& d : devices)
        if (d.vendor == vendor && d.device == dev) d.name = vendor_name + " " + std::string(trim(line.substr(5)));
    }
  }
}

}  // namespace gpt
