// libvirt_domain: a VM for GPU passthrough, the walkthrough's domain XML from a few YAML keys.
//
// The module owns some fields of the domain and leaves the rest to libvirt and to the people who
// use it: the desired XML is the domain's current inactive XML with the managed fields replaced
// (uuid, PCI addresses, controllers, devices we do not manage are kept). Drift is decided on a
// projection of the managed fields read the same way from both documents, so what libvirt adds
// (defaults, addresses, aliases) never counts; --diff shows the XML change that will be defined.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <sstream>

#include <pugixml.hpp>
#include <spdlog/spdlog.h>

#include "agent/changes.hpp"
#include "agent/diff.hpp"
#include "agent/gpu.hpp"
#include "agent/module.hpp"
#include "agent/pci.hpp"
#include "agent/text.hpp"
#include "agent/virt.hpp"
#include "modules/vm_tuning.hpp"

namespace gpt {
namespace {

constexpr const char* kDefaultUri = "qemu:///system";

// ---------------------------------------------------------------------------------------------
// Arguments

std::optional<std::string> size_check(const json& v) {
  if (v.is_number_integer() && v.get<long long>() > 0) return std::nullopt;
  if (v.is_string() && parse_size(v.get<std::string>()).ok()) return std::nullopt;
  return "'" + (v.is_string() ? v.get<std::string>() : v.dump()) + "' is not a size like 16G, 8192M or 4096 (MiB)";
}

uint64_t size_kib(const json& v) {
  if (v.is_number_integer()) return v.get<uint64_t>() * 1024;  // a bare number is MiB, as virt-install takes it
  return *parse_size(v.get<std::string>()) / 1024;
}

std::optional<std::string> pci_address_check(const json& v) {
  if (v.is_string() && parse_pci_address(v.get<std::string>())) return std::nullopt;
  return "'" + (v.is_string() ? v.get<std::string>() : v.dump()) + "' is not a PCI address like 0000:01:00.0";
}

std::optional<std::string> positive(const json& v) {
  if (v.get<long long>() < 1 || v.get<long long>() > 4096) return "must be between 1 and 4096";
  return std::nullopt;
}

std::optional<std::string> cpuset_check(const json& v) {
  auto cpus = vm::parse_cpuset(v.get<std::string>());
  if (!cpus) return cpus.error();
  return std::nullopt;
}

// "2560x1440" -> {2560, 1440}
std::optional<std::pair<uint64_t, uint64_t>> resolution(const std::string& text) {
  const size_t x = text.find('x');
  if (x == std::string::npos || x == 0 || x + 1 == text.size() || text.find_first_not_of("0123456789x") != std::string::npos)
    return std::nullopt;
  const std::string w = text.substr(0, x), h = text.substr(x + 1);
  if (h.find('x') != std::string::npos || w.size() > 5 || h.size() > 5) return std::nullopt;
  const uint64_t width = std::stoull(w), height = std::stoull(h);
  if (width == 0 || height == 0 || width > 16384 || height > 16384) return std::nullopt;
  return std::make_pair(width, height);
}

std::optional<std::string> resolution_check(const json& v) {
  if (resolution(v.get<std::string>())) return std::nullopt;
  return "'" + v.get<std::string>() + "' is not a resolution like 2560x1440";
}

// hugepages: true | false | 2M | 1G | {size: auto|2M|1G, reserve: bool}
std::optional<std::string> hugepages_check(const json& v) {
  const std::string usage = "must be true, false, a page size (2M, 1G) or {size, reserve}";
  auto size_ok = [](const json& s) {
    if (!s.is_string()) return false;
    if (s.get<std::string>() == "auto") return true;
    auto b = parse_size(s.get<std::string>());
    return b.ok() && *b >= 4096 && (*b & (*b - 1)) == 0;
  };
  if (v.is_boolean()) return std::nullopt;
  if (v.is_string()) {
    const std::string t = lower(v.get<std::string>());
    if (t == "true" || t == "false" || t == "yes" || t == "no" || size_ok(v)) return std::nullopt;
    return "'" + v.get<std::string>() + "' is not a page size like 2M or 1G";
  }
  if (!v.is_object()) return usage;
  for (const auto& [k, x] : v.items()) {
    if (k == "size" && !size_ok(x)) return "size: '" + (x.is_string() ? x.get<std::string>() : x.dump()) + "' is not a page size like 2M or 1G";
    if (k == "reserve" && !x.is_boolean()) return "reserve must be true or false";
    if (k != "size" && k != "reserve") return "has no key '" + k + "' (size, reserve)";
  }
  return std::nullopt;
}

ModuleSchema schema() {
  ModuleSchema s;
  s.args = {
      {.name = "name", .required = true, .check = [](const json& v) -> std::optional<std::string> {
         const auto n = v.get<std::string>();
         if (n.empty() || n.find('/') != std::string::npos || n.size() > 200) return "'" + n + "' is not a domain name";
         return std::nullopt;
       }},
      {.name = "connect"},
      {.name = "type", .default_value = "auto", .choices = {"auto", "kvm", "qemu"}},
      {.name = "memory", .type = ArgType::any, .required = true, .check = size_check},
      {.name = "vcpus", .type = ArgType::integer, .default_value = 2, .check = [](const json& v) -> std::optional<std::string> {
         if (v.get<long long>() < 1 || v.get<long long>() > 4096) return "must be between 1 and 4096";
         return std::nullopt;
       }},
      {.name = "machine", .default_value = "auto"},
      {.name = "firmware", .type = ArgType::dict, .default_value = json::object(),
       .fields = {{.name = "code"}, {.name = "vars"}}},
      {.name = "nvram"},
      {.name = "cpu_mode", .default_value = "auto", .choices = {"auto", "host-passthrough", "host-model", "maximum"}},
      {.name = "hide_kvm", .type = ArgType::boolean, .default_value = true},
      {.name = "hyperv_vendor_id", .check = [](const json& v) -> std::optional<std::string> {
         const auto id = v.get<std::string>();
         if (id.empty() || id.size() > 12) return "must be 1 to 12 characters (libvirt's vendor_id limit)";
         return std::nullopt;
       }},
      gpus_arg(),
      {.name = "force", .type = ArgType::boolean, .default_value = false},
      {.name = "disks", .type = ArgType::list, .default_value = json::array(), .elements = ArgType::any},
      {.name = "interfaces", .type = ArgType::list, .default_value = json::array(), .elements = ArgType::dict,
       .fields = {{.name = "bridge"}, {.name = "network"}, {.name = "mac"}, {.name = "model", .default_value = "virtio"}}},
      {.name = "graphics", .type = ArgType::dict, .default_value = json::object({{"type", "spice"}}),
       .fields = {{.name = "type", .default_value = "spice", .choices = {"spice", "vnc", "none"}},
                  {.name = "port", .type = ArgType::integer},
                  {.name = "listen"}}},
      {.name = "video", .default_value = "vga", .choices = {"vga", "qxl", "virtio", "bochs", "ramfb", "none"}},
      {.name = "boot", .type = ArgType::list, .default_value = json::array({"hd"})},
      {.name = "state", .default_value = "defined", .choices = {"defined", "running", "shutoff", "absent"}},
      {.name = "autostart", .type = ArgType::boolean},
      {.name = "shutdown_timeout", .type = ArgType::integer, .default_value = 120},
      {.name = "force_shutoff", .type = ArgType::boolean, .default_value = false},
      {.name = "keep_nvram", .type = ArgType::boolean, .default_value = true},
      // VM tuning (see the module's documentation in README.md).
      {.name = "rom", .type = ArgType::list, .default_value = json::array(), .elements = ArgType::dict,
       .fields = {{.name = "gpu", .check = pci_address_check},
                  {.name = "file", .required = true},
                  {.name = "bar", .type = ArgType::boolean, .default_value = true}}},
      {.name = "cpu", .type = ArgType::dict,
       .fields = {{.name = "sockets", .type = ArgType::integer, .default_value = 1, .check = positive},
                  {.name = "cores", .type = ArgType::integer, .required = true, .check = positive},
                  {.name = "threads", .type = ArgType::integer, .default_value = 1, .check = positive}}},
      {.name = "pin", .type = ArgType::dict,
       .fields = {{.name = "vcpus", .required = true, .check = cpuset_check},
                  {.name = "emulator", .check = cpuset_check},
                  {.name = "iothreads", .check = cpuset_check}}},
      {.name = "hugepages", .type = ArgType::any, .check = hugepages_check},
      {.name = "looking_glass", .type = ArgType::dict,
       .fields = {{.name = "resolution", .required = true, .check = resolution_check},
                  {.name = "user", .required = true},
                  {.name = "group", .default_value = "kvm"}}},
      {.name = "hyperv", .type = ArgType::boolean, .default_value = false},
      {.name = "evdev", .type = ArgType::list, .default_value = json::array(), .check = [](const json& v) -> std::optional<std::string> {
         for (const auto& p : v)
           if (!p.get<std::string>().starts_with("/dev/input/")) return "'" + p.get<std::string>() + "' is not a /dev/input/ path";
         return std::nullopt;
       }},
      {.name = "usb_controllers", .type = ArgType::any, .check = [](const json& v) -> std::optional<std::string> {
         if (v.is_string() && v.get<std::string>() == "auto") return std::nullopt;
         if (!v.is_array()) return "must be auto or a list of PCI addresses";
         for (const auto& a : v)
           if (auto bad = pci_address_check(a)) return bad;
         return std::nullopt;
       }},
  };
  s.check = [](const json& a) -> std::optional<std::string> {
    for (const auto& d : a["disks"]) {
      if (d.is_string()) continue;
      if (!d.is_object() || !d.contains("path") || !d["path"].is_string())
        return "disks: each disk is a path or {path, format, bus, target}";
      for (auto it = d.begin(); it != d.end(); ++it)
        if (it.key() != "path" && it.key() != "format" && it.key() != "bus" && it.key() != "target")
          return "disks: unknown key '" + it.key() + "' (path, format, bus, target)";
    }
    for (const auto& i : a["interfaces"]) {
      if (i.contains("bridge") == i.contains("network")) return "interfaces: each interface has either bridge or network";
      if (i.contains("mac")) {
        const auto mac = i["mac"].get<std::string>();
        bool ok = mac.size() == 17;
        for (size_t k = 0; ok && k < 17; ++k) ok = k % 3 == 2 ? mac[k] == ':' : std::isxdigit(static_cast<unsigned char>(mac[k]));
        if (!ok) return "interfaces: '" + mac + "' is not a MAC address like 52:54:00:12:34:56";
      }
    }
    if (a["firmware"].contains("code") != a["firmware"].contains("vars"))
      return "firmware: give both code and vars, or neither (found on the host)";
    if (a.contains("cpu")) {
      const auto& c = a["cpu"];
      const long long n = c["sockets"].get<long long>() * c["cores"].get<long long>() * c["threads"].get<long long>();
      if (n != a["vcpus"].get<long long>())
        return "cpu: " + std::to_string(c["sockets"].get<long long>()) + " sockets x " + std::to_string(c["cores"].get<long long>()) +
               " cores x " + std::to_string(c["threads"].get<long long>()) + " threads is " + std::to_string(n) +
               " vCPUs, but vcpus is " + std::to_string(a["vcpus"].get<long long>());
    }
    if (a.contains("pin")) {
      const size_t n = vm::parse_cpuset(a["pin"]["vcpus"].get<std::string>())->size();
      if (n != a["vcpus"].get<size_t>())
        return "pin: vcpus names " + std::to_string(n) + " host CPUs for " + std::to_string(a["vcpus"].get<long long>()) +
               " vCPUs: give one host CPU per vCPU";
    }
    for (const auto& b : a["boot"]) {
      const auto dev = b.get<std::string>();
      if (dev != "hd" && dev != "cdrom" && dev != "network" && dev != "fd") return "boot: '" + dev + "' is not hd, cdrom, network or fd";
    }
    return std::nullopt;
  };
  return s;
}

// ---------------------------------------------------------------------------------------------
// What the hypervisor offers

struct Offer {
  std::vector<std::string> types;                  // domain types for x86_64 hvm guests
  std::vector<std::pair<std::string, std::string>> machines;  // name, canonical name (or "")
};

// x86_64 hvm guests; a driver that offers none (libvirt's test:/// driver emulates only i686)
// is read for whatever hvm guests it has. One pass over the document fills both.
Offer read_capabilities(const std::string& caps_xml) {
  Offer x86, any;
  pugi::xml_document doc;
  if (!doc.load_string(caps_xml.c_str())) return x86;
  for (auto guest : doc.child("capabilities").children("guest")) {
    if (std::string(guest.child_value("os_type")) != "hvm") continue;
    auto arch = guest.child("arch");
    const bool is_x86 = std::string(arch.attribute("name").value()) == "x86_64";
    for (Offer* o : {&any, is_x86 ? &x86 : nullptr}) {
      if (!o) continue;
      for (auto m : arch.children("machine")) o->machines.emplace_back(m.child_value(), m.attribute("canonical").value());
      for (auto d : arch.children("domain")) {
        std::string t = d.attribute("type").value();
        if (std::find(o->types.begin(), o->types.end(), t) == o->types.end()) o->types.push_back(t);
        for (auto m : d.children("machine")) o->machines.emplace_back(m.child_value(), m.attribute("canonical").value());
      }
    }
  }
  return x86.types.empty() ? any : x86;
}

// pc-q35-7.2 -> {7, 2}; for choosing the newest.
std::vector<int> machine_version(const std::string& name) {
  std::vector<int> v;
  std::string rest = name.substr(std::string("pc-q35-").size());
  std::stringstream ss(rest);
  std::string part;
  while (std::getline(ss, part, '.')) {
    try {
      v.push_back(std::stoi(part));
    } catch (...) {
      v.push_back(0);
    }
  }
  return v;
}

Expected<std::string> choose_machine(const std::string& wanted, const Offer& offer, const std::string& uri) {
  if (wanted != "auto") {
    for (const auto& [name, canonical] : offer.machines)
      if (name == wanted && !canonical.empty()) return canonical;  // "q35" -> "pc-q35-7.2": what libvirt stores
    return wanted;
  }
  std::string best;
  for (const auto& [name, canonical] : offer.machines)
    if (name.starts_with("pc-q35-") && (best.empty() || machine_version(name) > machine_version(best))) best = name;
  if (best.empty())
    return Error{"machine: auto: the hypervisor at " + uri + " offers no pc-q35 machine type; set machine: explicitly"};
  return best;
}

// OVMF as each distribution installs it: code (read-only) and the template of the variables.
const std::vector<std::pair<std::string, std::string>> kFirmware = {
    {"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},   // Debian 12, Ubuntu 22.04+
    {"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},         // older Debian and Ubuntu
    {"/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"},  // Fedora, RHEL
    {"/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"},  // Arch
    {"/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"},  // older Arch
};

Expected<std::pair<std::string, std::string>> choose_firmware(const Root& root, const json& fw) {
  if (fw.contains("code")) {
    for (const char* key : {"code", "vars"})
      if (!path_exists(root, fw[key].get<std::string>()))
        return Error{std::string("firmware: ") + key + " " + fw[key].get<std::string>() + " does not exist"};
    return std::make_pair(fw["code"].get<std::string>(), fw["vars"].get<std::string>());
  }
  for (const auto& [code, vars] : kFirmware)
    if (path_exists(root, code) && path_exists(root, vars)) return std::make_pair(code, vars);
  std::vector<std::string> tried;
  for (const auto& f : kFirmware) tried.push_back(f.first);
  return Error{"no OVMF firmware found (looked for " + join(tried, ", ") +
               "): install ovmf (Debian, Ubuntu), edk2-ovmf (Fedora, Arch), or give firmware: {code, vars}"};
}

// ---------------------------------------------------------------------------------------------
// The managed fields, written into a domain document

struct Disk {
  std::string path, format, bus, target;
};

struct Want {
  std::string type, name, machine, loader, vars, nvram, cpu_mode, hyperv_vendor_id, video;
  uint64_t memory_kib = 0;
  int vcpus = 0;
  bool hide_kvm = true;
  std::vector<std::string> boot;
  std::vector<Gpu> gpus;
  int gpu_bus_base = 0;  // the first pcie-root-port index the GPUs sit behind
  std::vector<Disk> disks;
  json interfaces, graphics;
  // Tuning.
  std::map<std::string, std::pair<std::string, bool>> roms;  // GPU display function -> file, bar
  int sockets = 0, cores = 0, threads = 0;                    // 0: no topology
  std::vector<int> vcpu_pins;                                 // host CPU of each vCPU; empty: none
  std::string emulator_pin, iothread_pin;                     // canonical cpusets; empty: none
  std::optional<uint64_t> hugepage_kib;                       // 0: the default size
  uint64_t looking_glass_mib = 0;
  bool hyperv = false;
  std::vector<std::string> evdev;
  std::vector<std::string> usb;                               // USB controllers passed whole
  std::vector<std::string> warnings;
  int managed_ports() const { return static_cast<int>(gpus.size() + usb.size()); }
};

std::string hex(int v, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*x", width, v);
  return buf;
}

void set_text(pugi::xml_node parent, const char* name, const std::string& text) {
  auto n = parent.child(name);
  if (!n) n = parent.append_child(name);
  n.text().set(text.c_str());
}

pugi::xml_node child_or_add(pugi::xml_node parent, const char* name) {
  auto n = parent.child(name);
  return n ? n : parent.append_child(name);
}

std::string attr(pugi::xml_node n, const char* name) { return n.attribute(name).value(); }

void set_attr(pugi::xml_node n, const char* name, const std::string& value) {
  auto a = n.attribute(name);
  if (!a) a = n.append_attribute(name);
  a.set_value(value.c_str());
}

// A kind of device the module manages: the old ones are taken out (their <address> kept by key,
// so that devices defined again keep their guest address) and the new ones go where the first
// old one was, so that the XML diff shows a change in place rather than a move.
struct Managed {
  pugi::xml_node devices;
  // Insert before this (null: append): a comment where the first old one was, removed with the
  // Managed. Not the device after it, which another kind's Managed may remove (freeing the node:
  // found by fuzzing, the new root ports then silently went missing).
  pugi::xml_node anchor;
  std::map<std::string, pugi::xml_document> addresses;

  Managed(pugi::xml_node devs, const std::function<bool(pugi::xml_node)>& managed,
          const std::function<std::string(pugi::xml_node)>& key = {})
      : devices(devs) {
    std::vector<pugi::xml_node> gone;
    for (auto d : devices.children()) {
      if (!managed(d)) continue;
      if (auto a = d.child("address"); a && key) addresses[key(d)].append_copy(a);
      gone.push_back(d);
    }
    if (!gone.empty()) anchor = devices.insert_child_before(pugi::node_comment, gone.front());
    for (auto d : gone) devices.remove_child(d);
  }
  ~Managed() {
    if (anchor) devices.remove_child(anchor);
  }
  Managed(const Managed&) = delete;
  Managed& operator=(const Managed&) = delete;
  pugi::xml_node add(const char* name) { return anchor ? devices.insert_child_before(name, anchor) : devices.append_child(name); }
  void keep_address(pugi::xml_node dev, const std::string& key) {
    auto it = addresses.find(key);
    if (it != addresses.end()) dev.append_copy(it->second.first_child());
  }
};

// The pcie-root-ports the module adds: one per GPU, then one per USB controller.
bool is_managed_port(pugi::xml_node c, const Want& w) {
  if (std::string(c.name()) != "controller" || std::string(c.attribute("type").value()) != "pci" ||
      std::string(c.attribute("model").value()) != "pcie-root-port")
    return false;
  const int index = c.attribute("index").as_int(-1);
  return index >= w.gpu_bus_base && index < w.gpu_bus_base + w.managed_ports();
}

bool is_looking_glass(pugi::xml_node d) {
  return std::string(d.name()) == "shmem" && std::string(d.attribute("name").value()) == "looking-glass";
}
bool is_evdev(pugi::xml_node d) { return std::string(d.name()) == "input" && std::string(d.attribute("type").value()) == "evdev"; }

// A host PCI function as a hostdev on guest bus `bus`, slot 0, with the host's function number.
pugi::xml_node add_hostdev(Managed& hostdevs, const std::string& addr, int bus, int guest_function, bool multifunction) {
  auto hd = hostdevs.add("hostdev");
  set_attr(hd, "mode", "subsystem");
  set_attr(hd, "type", "pci");
  set_attr(hd, "managed", "yes");
  set_attr(hd.append_child("driver"), "name", "vfio");
  auto src = hd.append_child("source").append_child("address");
  set_attr(src, "domain", "0x" + addr.substr(0, 4));
  set_attr(src, "bus", "0x" + addr.substr(5, 2));
  set_attr(src, "slot", "0x" + addr.substr(8, 2));
  set_attr(src, "function", "0x" + addr.substr(11, 1));
  auto guest = hd.append_child("address");
  set_attr(guest, "type", "pci");
  set_attr(guest, "domain", "0x0000");
  set_attr(guest, "bus", hex(bus, 2));
  set_attr(guest, "slot", "0x00");
  set_attr(guest, "function", hex(guest_function, 1));
  if (multifunction) set_attr(guest, "multifunction", "on");
  return hd;
}

// The Hyper-V enlightenments libvirt users give Windows guests (virt-manager's set and the
// passthrough guides'), in libvirt's order.
const std::vector<std::string> kHyperv = {"relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "stimer", "reset", "frequencies"};

// Writes the managed fields into `doc` (the current inactive XML, or an empty one).
void apply_want(pugi::xml_document& doc, const Want& w) {
  auto dom = child_or_add(doc, "domain");
  set_attr(dom, "type", w.type);
  // Element order matters only to people reading the XML: libvirt reorders on define.
  set_text(dom, "name", w.name);
  auto mem = child_or_add(dom, "memory");
  set_attr(mem, "unit", "KiB");
  mem.text().set(std::to_string(w.memory_kib).c_str());
  if (auto cur = dom.child("currentMemory")) {
    set_attr(cur, "unit", "KiB");
    cur.text().set(std::to_string(w.memory_kib).c_str());
  }
  auto vcpu = child_or_add(dom, "vcpu");
  if (!vcpu.attribute("placement")) set_attr(vcpu, "placement", "static");
  vcpu.text().set(std::to_string(w.vcpus).c_str());

  auto os = child_or_add(dom, "os");
  os.remove_attribute("firmware");  // firmware autoselection and an explicit loader exclude each other
  auto type = child_or_add(os, "type");
  set_attr(type, "arch", "x86_64");
  set_attr(type, "machine", w.machine);
  type.text().set("hvm");
  os.remove_child("loader");
  auto loader = os.append_child("loader");
  set_attr(loader, "readonly", "yes");
  set_attr(loader, "type", "pflash");
  loader.text().set(w.loader.c_str());
  os.remove_child("nvram");
  auto nvram = os.append_child("nvram");
  set_attr(nvram, "template", w.vars);
  nvram.text().set(w.nvram.c_str());
  while (os.remove_child("boot")) {
  }
  for (const auto& b : w.boot) set_attr(os.append_child("boot"), "dev", b);

  auto features = child_or_add(dom, "features");
  child_or_add(features, "acpi");
  child_or_add(features, "apic");
  if (w.hide_kvm) {
    set_attr(child_or_add(child_or_add(features, "kvm"), "hidden"), "state", "on");
  } else if (auto kvm = features.child("kvm")) {
    kvm.remove_child("hidden");
    if (!kvm.first_child()) features.remove_child(kvm);
  }
  // Hyper-V: the enlightenments (all or none) and the vendor_id, each owned by the module.
  {
    auto hv = child_or_add(features, "hyperv");
    for (const auto& e : kHyperv) hv.remove_child(e.c_str());
    hv.remove_child("vendor_id");
    if (w.hyperv) {
      for (const auto& e : kHyperv) {
        auto n = hv.append_child(e.c_str());
        set_attr(n, "state", "on");
        if (e == "spinlocks") set_attr(n, "retries", "8191");
      }
    }
    if (!w.hyperv_vendor_id.empty()) {
      auto vid = hv.append_child("vendor_id");
      set_attr(vid, "state", "on");
      set_attr(vid, "value", w.hyperv_vendor_id);
    }
    if (hv.first_child() && !hv.attribute("mode")) set_attr(hv, "mode", "custom");
    if (!hv.first_child() && attr(hv, "mode") != "passthrough") features.remove_child(hv);
  }
  {
    // Windows keeps its clock in local time; the Hyper-V clock source goes with the enlightenments.
    auto clock = dom.child("clock");
    if (w.hyperv && !clock) {
      clock = dom.append_child("clock");
      set_attr(clock, "offset", "localtime");
    }
    if (clock) {
      for (auto t = clock.find_child_by_attribute("timer", "name", "hypervclock"); t;
           t = clock.find_child_by_attribute("timer", "name", "hypervclock"))
        clock.remove_child(t);
      if (w.hyperv) {
        auto t = clock.append_child("timer");
        set_attr(t, "name", "hypervclock");
        set_attr(t, "present", "yes");
      }
    }
  }

  auto cpu = child_or_add(dom, "cpu");
  set_attr(cpu, "mode", w.cpu_mode);
  set_attr(cpu, "check", w.cpu_mode == "host-passthrough" ? "partial" : "none");
  cpu.remove_child("topology");
  if (w.cores) {
    auto t = cpu.prepend_child("topology");
    set_attr(t, "sockets", std::to_string(w.sockets));
    set_attr(t, "dies", "1");
    set_attr(t, "cores", std::to_string(w.cores));
    set_attr(t, "threads", std::to_string(w.threads));
  }

  // Pinning: vcpupin, emulatorpin and iothreadpin are the module's; other <cputune> settings stay.
  {
    auto tune = child_or_add(dom, "cputune");
    for (const char* n : {"vcpupin", "emulatorpin", "iothreadpin"})
      while (tune.remove_child(n)) {
      }
    for (size_t v = 0; v < w.vcpu_pins.size(); ++v) {
      auto pin = tune.append_child("vcpupin");
      set_attr(pin, "vcpu", std::to_string(v));
      set_attr(pin, "cpuset", std::to_string(w.vcpu_pins[v]));
    }
    if (!w.emulator_pin.empty()) set_attr(tune.append_child("emulatorpin"), "cpuset", w.emulator_pin);
    if (!w.iothread_pin.empty()) {
      auto pin = tune.append_child("iothreadpin");
      set_attr(pin, "iothread", "1");
      set_attr(pin, "cpuset", w.iothread_pin);
      auto n = child_or_add(dom, "iothreads");
      if (n.text().as_int() < 1) n.text().set("1");
    }
    if (!tune.first_child()) dom.remove_child(tune);
  }

  // Hugepages: <memoryBacking><hugepages> is the module's; other backing settings stay.
  {
    auto backing = child_or_add(dom, "memoryBacking");
    backing.remove_child("hugepages");
    if (w.hugepage_kib) {
      auto hp = backing.prepend_child("hugepages");
      if (*w.hugepage_kib) {
        auto page = hp.append_child("page");
        set_attr(page, "size", std::to_string(*w.hugepage_kib));
        set_attr(page, "unit", "KiB");
      }
    }
    if (!backing.first_child()) dom.remove_child(backing);
  }

  auto devices = child_or_add(dom, "devices");
  // Disks (device='disk' only: CD-ROMs and others are the user's), by target.
  Managed disks(
      devices, [](pugi::xml_node d) { return std::string(d.name()) == "disk" && std::string(d.attribute("device").value()) == "disk"; },
      [](pugi::xml_node d) { return std::string(d.child("target").attribute("dev").value()); });
  for (const auto& d : w.disks) {
    auto disk = disks.add("disk");
    set_attr(disk, "type", "file");
    set_attr(disk, "device", "disk");
    auto drv = disk.append_child("driver");
    set_attr(drv, "name", "qemu");
    set_attr(drv, "type", d.format);
    if (!w.iothread_pin.empty() && d.bus == "virtio") set_attr(drv, "iothread", "1");
    set_attr(disk.append_child("source"), "file", d.path);
    auto target = disk.append_child("target");
    set_attr(target, "dev", d.target);
    set_attr(target, "bus", d.bus);
    disks.keep_address(disk, d.target);
  }
  // Interfaces, by position (their MAC is kept when the playbook gives none).
  std::vector<std::string> macs;
  for (auto i : devices.children("interface")) macs.push_back(i.child("mac").attribute("address").value());
  int position = 0;
  Managed nics(
      devices, [](pugi::xml_node d) { return std::string(d.name()) == "interface"; },
      [&](pugi::xml_node) { return std::to_string(position++); });
  for (size_t k = 0; k < w.interfaces.size(); ++k) {
    const json& i = w.interfaces[k];
    auto nic = nics.add("interface");
    const bool bridge = i.contains("bridge");
    set_attr(nic, "type", bridge ? "bridge" : "network");
    std::string mac = i.contains("mac") ? lower(i["mac"].get<std::string>()) : (k < macs.size() ? macs[k] : "");
    if (!mac.empty()) set_attr(nic.append_child("mac"), "address", mac);
    set_attr(nic.append_child("source"), bridge ? "bridge" : "network", i[bridge ? "bridge" : "network"].get<std::string>());
    set_attr(nic.append_child("model"), "type", i["model"].get<std::string>());
    nics.keep_address(nic, std::to_string(k));
  }
  // GPUs: each behind its own pcie-root-port, its functions together on one multifunction slot
  // with the host's function numbers (display .0, audio .1...), as the walkthrough lays them out.
  Managed ports(devices, [&](pugi::xml_node d) { return is_managed_port(d, w); });
  Managed hostdevs(devices, [](pugi::xml_node d) {
    return std::string(d.name()) == "hostdev" && std::string(d.attribute("type").value()) == "pci";
  });
  for (size_t g = 0; g < w.gpus.size(); ++g) {
    const int bus = w.gpu_bus_base + static_cast<int>(g);
    auto port = ports.add("controller");
    set_attr(port, "type", "pci");
    set_attr(port, "index", std::to_string(bus));
    set_attr(port, "model", "pcie-root-port");
    const auto& fns = w.gpus[g].functions;
    for (const auto& f : fns) {
      const std::string addr = *parse_pci_address(f);  // DDDD:BB:SS.F
      const int function = addr[11] - '0';
      auto hd = add_hostdev(hostdevs, addr, bus, function, function == 0 && fns.size() > 1);
      if (auto rom = w.roms.find(addr); rom != w.roms.end()) {
        auto r = hd.insert_child_before("rom", hd.child("address"));
        set_attr(r, "bar", rom->second.second ? "on" : "off");
        set_attr(r, "file", rom->second.first);
      }
    }
  }
  // Whole USB controllers, each behind a root port of its own after the GPUs'.
  for (size_t u = 0; u < w.usb.size(); ++u) {
    const int bus = w.gpu_bus_base + static_cast<int>(w.gpus.size() + u);
    auto port = ports.add("controller");
    set_attr(port, "type", "pci");
    set_attr(port, "index", std::to_string(bus));
    set_attr(port, "model", "pcie-root-port");
    add_hostdev(hostdevs, w.usb[u], bus, 0, false);
  }
  // Graphics, video, console and the spice agent's channel.
  Managed graphics(devices, [](pugi::xml_node d) { return std::string(d.name()) == "graphics"; });
  const std::string gtype = w.graphics["type"].get<std::string>();
  if (gtype != "none") {
    auto gfx = graphics.add("graphics");
    set_attr(gfx, "type", gtype);
    if (w.graphics.contains("port")) {
      set_attr(gfx, "port", std::to_string(w.graphics["port"].get<int>()));
      set_attr(gfx, "autoport", "no");
    } else {
      set_attr(gfx, "autoport", "yes");
    }
    if (w.graphics.contains("listen")) {
      const auto listen = w.graphics["listen"].get<std::string>();
      set_attr(gfx, "listen", listen);
      auto l = gfx.append_child("listen");
      set_attr(l, "type", "address");
      set_attr(l, "address", listen);
    }
  }
  Managed videos(devices, [](pugi::xml_node d) { return std::string(d.name()) == "video"; },
                 [](pugi::xml_node) { return std::string("video"); });
  if (w.video != "none") {
    auto video = videos.add("video");
    set_attr(video.append_child("model"), "type", w.video);
    videos.keep_address(video, "video");
  }
  if (!devices.child("console")) set_attr(devices.append_child("console"), "type", "pty");
  Managed channels(devices, [](pugi::xml_node d) {
    return std::string(d.name()) == "channel" && std::string(d.attribute("type").value()) == "spicevmc";
  });
  if (gtype == "spice") {
    bool serial = false;
    for (auto c : devices.children("controller")) serial = serial || std::string(c.attribute("type").value()) == "virtio-serial";
    if (!serial) {
      auto c = devices.append_child("controller");
      set_attr(c, "type", "virtio-serial");
      set_attr(c, "index", "0");
    }
    auto ch = channels.add("channel");
    set_attr(ch, "type", "spicevmc");
    auto t = ch.append_child("target");
    set_attr(t, "type", "virtio");
    set_attr(t, "name", "com.redhat.spice.0");
  }
  // Looking Glass's frame buffer, shared with the host through /dev/shm/looking-glass.
  Managed shmem(devices, is_looking_glass, [](pugi::xml_node) { return std::string("lg"); });
  if (w.looking_glass_mib) {
    auto m = shmem.add("shmem");
    set_attr(m, "name", "looking-glass");
    set_attr(m.append_child("model"), "type", "ivshmem-plain");
    auto size = m.append_child("size");
    set_attr(size, "unit", "M");
    size.text().set(std::to_string(w.looking_glass_mib).c_str());
    shmem.keep_address(m, "lg");
  }
  // Keyboard and mouse handed over whole (evdev); the keyboard's grab takes every input device
  // and toggles with both Ctrl keys, as libvirt defines it.
  Managed inputs(devices, is_evdev);
  for (const auto& path : w.evdev) {
    auto in = inputs.add("input");
    set_attr(in, "type", "evdev");
    auto src = in.append_child("source");
    set_attr(src, "dev", path);
    if (ends_with(path, "-event-kbd")) {
      set_attr(src, "grab", "all");
      set_attr(src, "repeat", "on");
    }
  }
}

// The managed fields of a domain document as lines of text: what drift is decided on.
std::string projection(const pugi::xml_document& doc, const Want& w) {
  std::ostringstream out;
  auto dom = doc.child("domain");
  auto os = dom.child("os");
  out << "type " << attr(dom, "type") << "\nname " << dom.child_value("name") << "\nmemory "
      << dom.child("memory").text().as_ullong() << " " << attr(dom.child("memory"), "unit") << "\nvcpus " << dom.child("vcpu").text().as_int() << "\nmachine " << attr(os.child("type"), "machine") << "\nloader "
      << attr(os.child("loader"), "type") << " " << attr(os.child("loader"), "readonly") << " " << os.child_value("loader")
      << "\nnvram " << attr(os.child("nvram"), "template") << " " << os.child_value("nvram") << "\nboot";
  for (auto b : os.children("boot")) out << " " << attr(b, "dev");
  auto f = dom.child("features");
  out << "\nfeatures" << (f.child("acpi") ? " acpi" : "") << (f.child("apic") ? " apic" : "")
      << " kvm-hidden=" << attr(f.child("kvm").child("hidden"), "state") << " hyperv-vendor="
      << attr(f.child("hyperv").child("vendor_id"), "value") << "\ncpu " << attr(dom.child("cpu"), "mode") << " "
      << attr(dom.child("cpu"), "check") << "\n";
  // Tuning: only what the module writes; libvirt's additions (dies, clusters, units) do not count.
  out << "hyperv";
  for (const auto& e : kHyperv)
    if (auto n = f.child("hyperv").child(e.c_str())) out << " " << e << "=" << attr(n, "state") << attr(n, "retries");
  out << "\nhypervclock " << (dom.child("clock").find_child_by_attribute("timer", "name", "hypervclock") ? "yes" : "no");
  auto topo = dom.child("cpu").child("topology");
  out << "\ntopology " << attr(topo, "sockets") << "/" << attr(topo, "cores") << "/" << attr(topo, "threads") << "\npins";
  auto tune = dom.child("cputune");
  auto cpuset = [](pugi::xml_node n) {
    auto set = vm::parse_cpuset(attr(n, "cpuset"));
    return set ? vm::format_cpuset(*set) : attr(n, "cpuset");
  };
  for (auto p : tune.children("vcpupin")) out << " " << attr(p, "vcpu") << ":" << cpuset(p);
  for (auto p : tune.children("emulatorpin")) out << " emulator:" << cpuset(p);
  for (auto p : tune.children("iothreadpin")) out << " iothread" << attr(p, "iothread") << ":" << cpuset(p);
  out << "\nhugepages";
  if (auto hp = dom.child("memoryBacking").child("hugepages")) {
    out << " on";
    for (auto page : hp.children("page")) {
      auto kib = parse_size(attr(page, "size") + (attr(page, "unit").empty() ? "K" : attr(page, "unit")));
      out << " " << (kib ? *kib / 1024 : 0) << "KiB";
    }
  }
  out << "\n";
  // Devices as a sorted list: libvirt keeps them in an order of its own.
  std::vector<std::string> lines;
  auto devices = dom.child("devices");
  for (auto d : devices.children()) {
    std::ostringstream out;
    const std::string name = d.name();
    if (name == "disk" && attr(d, "device") == "disk") {
      out << "disk " << attr(d.child("source"), "file") << " " << attr(d.child("driver"), "type") << " "
          << attr(d.child("target"), "dev") << " " << attr(d.child("target"), "bus") << " iothread="
          << attr(d.child("driver"), "iothread") << "\n";
    } else if (name == "interface") {
      out << "interface " << attr(d, "type") << " " << attr(d.child("source"), "bridge") << attr(d.child("source"), "network")
          << " " << attr(d.child("mac"), "address") << " " << attr(d.child("model"), "type") << "\n";
    } else if (name == "hostdev" && attr(d, "type") == "pci") {
      auto s = d.child("source").child("address");
      auto g = d.child("address");
      out << "hostdev " << attr(d, "managed") << " " << attr(d.child("driver"), "name") << " "
          << s.attribute("domain").as_int() << ":" << s.attribute("bus").as_int() << ":" << s.attribute("slot").as_int() << "."
          << s.attribute("function").as_int() << " -> " << g.attribute("bus").as_int() << ":" << g.attribute("slot").as_int()
          << "." << g.attribute("function").as_int() << (attr(g, "multifunction") == "on" ? " multifunction" : "");
      if (auto rom = d.child("rom")) out << " rom=" << attr(rom, "file") << " bar=" << attr(rom, "bar");
      out << "\n";
    } else if (is_managed_port(d, w)) {
      out << "pcie-root-port " << attr(d, "index") << "\n";
    } else if (name == "graphics") {
      std::string listen = attr(d, "listen");
      if (listen.empty()) listen = attr(d.child("listen"), "address");
      out << "graphics " << attr(d, "type") << " autoport=" << (attr(d, "autoport") == "no" ? "no port=" + attr(d, "port") : "yes")
          << " listen=" << listen << "\n";
    } else if (name == "video") {
      out << "video " << attr(d.child("model"), "type") << "\n";
    } else if (name == "console") {
      out << "console " << attr(d, "type") << "\n";
    } else if (name == "channel" && attr(d, "type") == "spicevmc") {
      out << "channel spicevmc\n";
    } else if (is_looking_glass(d)) {
      auto size = parse_size(std::string(d.child_value("size")) + (attr(d.child("size"), "unit").empty() ? "M" : attr(d.child("size"), "unit")));
      out << "shmem looking-glass " << attr(d.child("model"), "type") << " " << (size ? *size >> 20 : 0) << "MiB\n";
    } else if (is_evdev(d)) {
      auto src = d.child("source");
      out << "input evdev " << attr(src, "dev") << " grab=" << attr(src, "grab") << " repeat=" << attr(src, "repeat") << "\n";
    }
    lines.push_back(out.str());
  }
  std::sort(lines.begin(), lines.end());
  for (const auto& l : lines) out << l;
  return out.str();
}

std::string render(const pugi::xml_document& doc) {
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
  return out.str();
}

// ---------------------------------------------------------------------------------------------

// The tuning keys into `w`, checked against the host.
Status tuning(Context& ctx, const json& args, Want& w) {
  // ROMs: on a GPU's display function; `gpu` may be left out when there is one GPU.
  for (const auto& r : args["rom"]) {
    std::string gpu;
    if (r.contains("gpu")) {
      gpu = *parse_pci_address(r["gpu"].get<std::string>());
    } else if (w.gpus.size() == 1) {
      gpu = w.gpus[0].address;
    } else {
      return Error{"rom: say which GPU the ROM is for (gpu: ADDRESS): the domain has " + std::to_string(w.gpus.size()) + " GPUs"};
    }
    auto g = std::find_if(w.gpus.begin(), w.gpus.end(), [&](const Gpu& x) {
      return std::find(x.functions.begin(), x.functions.end(), gpu) != x.functions.end();
    });
    if (g == w.gpus.end()) return Error{"rom: " + gpu + " is not one of the domain's GPUs"};
    const std::string file = r["file"].get<std::string>();
    if (auto ok = vm::check_rom(ctx.root, file, vm::hypervisor_user(ctx.root, ctx.facts)); !ok) return Error{ok.error()};
    w.roms[g->functions.front()] = {file, r["bar"].get<bool>()};
  }
  if (args.contains("cpu")) {
    w.sockets = args["cpu"]["sockets"].get<int>();
    w.cores = args["cpu"]["cores"].get<int>();
    w.threads = args["cpu"]["threads"].get<int>();
  }
  if (args.contains("pin")) {
    const auto& pin = args["pin"];
    w.vcpu_pins = *vm::parse_cpuset(pin["vcpus"].get<std::string>());
    std::vector<int> emulator, io;
    if (pin.contains("emulator")) emulator = *vm::parse_cpuset(pin["emulator"].get<std::string>());
    if (pin.contains("iothreads")) io = *vm::parse_cpuset(pin["iothreads"].get<std::string>());
    if (!emulator.empty()) w.emulator_pin = vm::format_cpuset(emulator);
    if (!io.empty()) w.iothread_pin = vm::format_cpuset(io);
    auto host = vm::read_host_cpus(ctx.root);
    if (!host) return Error{"pin: " + host.error()};
    auto checked = vm::check_pinning(*host, w.vcpu_pins, w.threads ? w.threads : 1, emulator, io);
    if (checked.error) return Error{*checked.error};
    w.warnings.insert(w.warnings.end(), checked.warnings.begin(), checked.warnings.end());
  }
  if (args.contains("hugepages") && !args["hugepages"].is_null()) {
    const json& h = args["hugepages"];
    std::string size = "auto";
    if (h.is_object()) size = h.value("size", std::string("auto"));
    else if (h.is_string() && parse_size(h.get<std::string>()).ok()) size = h.get<std::string>();
    const bool on = h.is_object() || (h.is_boolean() ? h.get<bool>() : (size != "auto" || lower(h.get<std::string>()) == "true" ||
                                                                        lower(h.get<std::string>()) == "yes"));
    if (on) w.hugepage_kib = size == "auto" ? 0 : *parse_size(size) / 1024;
  }
  if (args.contains("looking_glass")) {
    auto [width, height] = *resolution(args["looking_glass"]["resolution"].get<std::string>());
    w.looking_glass_mib = vm::looking_glass_mib(width, height);
  }
  w.hyperv = args["hyperv"].get<bool>();
  const bool nvidia = std::any_of(w.gpus.begin(), w.gpus.end(), [](const Gpu& g) { return g.id.starts_with("10de:"); });
  if (w.hyperv && nvidia && w.hide_kvm && w.hyperv_vendor_id.empty()) w.hyperv_vendor_id = "gptagent";
  if (w.hyperv && nvidia && !w.hide_kvm)
    w.warnings.push_back("hyperv: NVIDIA drivers older than 465 stop with code 43 when they see a hypervisor: "
                         "hide_kvm: false shows KVM to them");
  if (!w.hyperv_vendor_id.empty() && !w.hide_kvm)
    w.warnings.push_back("hyperv_vendor_id hides the hypervisor from NVIDIA drivers only together with hide_kvm: true");
  for (const auto& p : args["evdev"]) {
    const std::string path = p.get<std::string>();
    if (!path_exists(ctx.root, path)) return Error{"evdev: " + path + " does not exist (list them: ls /dev/input/by-id/)"};
    w.evdev.push_back(path);
  }
  if (args.contains("usb_controllers") && !args["usb_controllers"].is_null()) {
    std::vector<std::string> gpu_functions;
    for (const auto& g : w.gpus) gpu_functions.insert(gpu_functions.end(), g.functions.begin(), g.functions.end());
    auto usb = vm::select_usb_controllers(ctx.facts, args["usb_controllers"], args["force"].get<bool>(), gpu_functions);
    if (!usb) return Error{usb.error()};
    w.usb = *usb;
  }
  return {};
}

Expected<Want> want_from(Context& ctx, const json& args, const Offer& offer, const std::string& uri) {
  Want w;
  w.name = args["name"].get<std::string>();
  const std::string type = args["type"].get<std::string>();
  auto offered = [&](const std::string& t) { return std::find(offer.types.begin(), offer.types.end(), t) != offer.types.end(); };
  if (type == "auto") {
    if (ctx.facts.kvm && offered("kvm")) {
      w.type = "kvm";
    } else if (offered("qemu")) {
      w.type = "qemu";
      spdlog::warn("{}: no /dev/kvm on this host: the domain is defined with type qemu (emulation, slow)", w.name);
    } else if (!offer.types.empty()) {
      w.type = offer.types.front();  // a driver with one type of its own, such as test:///
    } else {
      return Error{"type: auto: the hypervisor at " + uri + " offers no x86_64 hvm guests"};
    }
  } else {
    if (!offer.types.empty() && !offered(type))
      return Error{"type: " + type + ": the hypervisor at " + uri + " offers " + join(offer.types, ", ")};
    w.type = type;
  }
  auto machine = choose_machine(args["machine"].get<std::string>(), offer, uri);
  if (!machine) return Error{machine.error()};
  w.machine = *machine;
  if (w.machine.find("i440fx") != std::string::npos || w.machine == "pc")
    return Error{"machine: " + w.machine + " is the i440FX chipset, which has no PCIe for a GPU: use q35 (pc-q35-4.2 or newer)"};
  // The walkthrough's floor: older q35 machine types lack what GPU guests rely on.
  if (w.machine.starts_with("pc-q35-") && machine_version(w.machine) < std::vector<int>{4, 2})
    return Error{"machine: " + w.machine + " is older than pc-q35-4.2, the oldest q35 machine type for GPU passthrough"};
  auto fw = choose_firmware(ctx.root, args["firmware"]);
  if (!fw) return Error{fw.error()};
  w.loader = fw->first;
  w.vars = fw->second;
  w.nvram = args.contains("nvram") && !args["nvram"].is_null() ? args["nvram"].get<std::string>()
                                                               : "/var/lib/libvirt/qemu/nvram/" + w.name + "_VARS.fd";
  w.memory_kib = size_kib(args["memory"]);
  w.vcpus = args["vcpus"].get<int>();
  std::string mode = args["cpu_mode"].get<std::string>();
  if (mode == "auto") mode = w.type == "qemu" ? "maximum" : "host-passthrough";  // TCG has no host CPU to pass
  w.cpu_mode = mode;
  w.hide_kvm = args["hide_kvm"].get<bool>();
  if (args.contains("hyperv_vendor_id") && !args["hyperv_vendor_id"].is_null())
    w.hyperv_vendor_id = args["hyperv_vendor_id"].get<std::string>();
  for (const auto& b : args["boot"]) w.boot.push_back(b.get<std::string>());
  if (args.contains("gpus") && !args["gpus"].is_null()) {
    auto gpus = select_gpus(ctx.facts, args["gpus"], args["force"].get<bool>());
    if (!gpus) return Error{gpus.error()};
    w.gpus = *gpus;
  }
  int letter = 0;
  for (const auto& d : args["disks"]) {
    Disk disk;
    disk.path = d.is_string() ? d.get<std::string>() : d["path"].get<std::string>();
    if (disk.path.empty() || disk.path[0] != '/') return Error{"disks: '" + disk.path + "' is not an absolute path"};
    disk.format = d.is_object() && d.contains("format") ? d["format"].get<std::string>() : (ends_with(disk.path, ".qcow2") ? "qcow2" : "raw");
    disk.bus = d.is_object() && d.contains("bus") ? d["bus"].get<std::string>() : "virtio";
    const std::string prefix = disk.bus == "virtio" ? "vd" : "sd";
    disk.target = d.is_object() && d.contains("target") ? d["target"].get<std::string>() : prefix + static_cast<char>('a' + letter);
    ++letter;
    w.disks.push_back(disk);
  }
  w.interfaces = args["interfaces"];
  w.graphics = args["graphics"];
  if (!w.graphics.contains("type")) w.graphics["type"] = "spice";
  w.video = args["video"].get<std::string>();
  if (auto t = tuning(ctx, args, w); !t) return Error{t.error()};
  // Root ports libvirt adds for the other devices come first (one each for disks, NICs, the
  // virtio-serial and USB controllers and the balloon); the GPUs' ports follow them, so that no
  // gap of empty ports is filled in between.
  w.gpu_bus_base = 1 + static_cast<int>(w.disks.size() + w.interfaces.size()) + 3;
  return w;
}

// The nvram file, from the template, when it does not exist yet (never replaced: the VM's UEFI
// settings live in it).
Expected<bool> ensure_nvram(Context& ctx, const Want& w, bool apply) {
  if (path_exists(ctx.root, w.nvram)) return false;
  if (!apply) return true;
  auto vars = read_file(ctx.root, w.vars, 64u << 20);
  if (!vars) return Error{"cannot read the firmware variables template: " + vars.error()};
  WriteOptions wo;
  wo.create_mode = 0600;
  auto written = write_file_atomic(ctx.root, w.nvram, *vars, wo);
  if (!written) return Error{"cannot create the nvram file: " + written.error()};
  return true;
}

// Hugepages for the domain: the memory in whole pages; enough of them free when the domain is
// (re)defined or started while not running; with reserve, vm.nr_hugepages raised by what is
// missing, persisted in sysctl.d and applied now.
Status hugepages(Context& ctx, const json& args, Want& w, bool needs_free, FileChanges& files,
                 std::vector<std::pair<Command, std::string>>& commands) {
  auto pool = vm::read_hugepages(ctx.root, *w.hugepage_kib);
  if (!pool) return Error{pool.error()};
  const std::string page = size_text(pool->size_kib * 1024);
  if (w.memory_kib % pool->size_kib)
    return Error{"hugepages: memory " + size_text(w.memory_kib * 1024) + " is not a whole number of " + page + " pages"};
  const uint64_t need = w.memory_kib / pool->size_kib;
  const uint64_t missing = needs_free && pool->free < need ? need - pool->free : 0;
  const json& h = args["hugepages"];
  const bool reserve = h.is_object() && h.value("reserve", false);
  if (!reserve) {
    if (missing)
      return Error{"hugepages: the domain needs " + std::to_string(need) + " pages of " + page + ", the host has " +
                   std::to_string(pool->free) + " free (of " + std::to_string(pool->total) + "): " + std::to_string(missing) +
                   " missing; reserve them (hugepages: {reserve: true}, or hugepages=N on the kernel command line)"};
    return {};
  }
  if (!pool->default_size)
    return Error{"hugepages: reserve: true sets vm.nr_hugepages, which counts pages of the default size only, not " + page +
                 " pages: reserve those at boot (kernel_cmdline: hugepagesz=" +
                 (pool->size_kib % (1024 * 1024) ? std::to_string(pool->size_kib / 1024) + "M" : std::to_string(pool->size_kib / 1024 / 1024) + "G") +
                 " hugepages=" + std::to_string(need) + ") and leave reserve off"};
  const std::string conf = "/etc/sysctl.d/80-gptagent-hugepages.conf";
  auto text = read_file_if_exists(ctx.root, conf);
  if (!text) return Error{"hugepages: " + text.error()};
  uint64_t persisted = 0;
  if (*text)
    for (auto line : lines(**text))
      if (auto eq = line.find('='); eq != std::string_view::npos && trim(line.substr(0, eq)) == "vm.nr_hugepages")
        persisted = std::strtoull(std::string(trim(line.substr(eq + 1))).c_str(), nullptr, 10);
  const uint64_t target = std::max(pool->total + missing, need);
  if (persisted >= target) return {};
  const std::string value = std::to_string(target);
  files.write(conf, *text, "# Managed by gptagent: hugepages for libvirt domains (" + page + " pages)\nvm.nr_hugepages = " + value + "\n");
  commands.push_back({Command{{"sysctl", "-w", "vm.nr_hugepages=" + value}}, "reserved " + value + " hugepages of " + page});
  return {};
}

Result converge(Context& ctx, const json& args, bool apply) {
  const std::string name = args["name"].get<std::string>();
  std::string uri = args.contains("connect") && !args["connect"].is_null() ? args["connect"].get<std::string>() : ctx.libvirt_uri;
  if (uri.empty()) {
    // A sandbox root manages files, not this machine's hypervisor: only an explicit connection.
    if (!ctx.system_commands_allowed)
      return Result::skipped("not run under --root " + ctx.root.dir() + ": domain " + name + " would be defined at " +
                             kDefaultUri + " (give connect: or --connect to manage another hypervisor)");
    uri = kDefaultUri;
  }
  auto conn = virt::Connection::open(uri);
  if (!conn) return Result::failed(conn.error());
  auto found = conn->lookup(name);
  if (!found) return Result::failed(found.error());
  std::optional<virt::Domain>& dom = *found;
  const std::string state = args["state"].get<std::string>();

  if (state == "absent") {
    if (!dom) return Result::ok("domain " + name + " is absent");
    Result r = Result::changed("undefined domain " + name);
    auto st = dom->state();
    if (!st) return Result::failed(st.error());
    if (*st != virt::State::shutoff) r.msg = "powered off and undefined domain " + name;
    if (apply) {
      if (*st != virt::State::shutoff)
        if (auto s = dom->destroy(); !s) return Result::failed(s.error());
      if (auto s = dom->undefine(args["keep_nvram"].get<bool>()); !s) return Result::failed(s.error());
    }
    return r;
  }

  auto caps = conn->capabilities();
  if (!caps) return Result::failed(caps.error());
  auto want = want_from(ctx, args, read_capabilities(*caps), conn->uri());
  if (!want) return Result::failed(want.error());

  pugi::xml_document current;
  if (dom) {
    auto xml = dom->xml(true);
    if (!xml) return Result::failed(xml.error());
    if (!current.load_string(xml->c_str())) return Result::failed("libvirt returned XML that does not parse for domain " + name);
  }
  pugi::xml_document desired;
  desired.reset(current);
  apply_want(desired, *want);

  std::vector<std::string> done;
  Result r = Result::ok();
  const std::string before = dom ? projection(current, *want) : "";
  const std::string after = projection(desired, *want);
  const bool redefine = before != after;
  virt::State run = virt::State::shutoff;
  if (dom) {
    auto st = dom->state();
    if (!st) return Result::failed(st.error());
    run = *st;
  }
  // What the host must provide besides the definition: hugepages, Looking Glass's shared file.
  FileChanges host_files(ctx.root);
  std::vector<std::pair<Command, std::string>> host_commands;  // run when host_files changed
  if (want->hugepage_kib) {
    const bool starts = state == "running" && run != virt::State::running;
    auto hp = hugepages(ctx, args, *want, run != virt::State::running && (redefine || starts), host_files, host_commands);
    if (!hp) return Result::failed(hp.error());
  }
  if (args.contains("looking_glass")) {
    const auto& lg = args["looking_glass"];
    const std::string user = lg["user"].get<std::string>(), group = lg["group"].get<std::string>();
    if (auto ok = vm::check_owner(ctx.root, user, group); !ok) return Result::failed("looking_glass: " + ok.error());
    const std::string conf = "/etc/tmpfiles.d/10-looking-glass.conf";
    if (auto s = host_files.write(conf, "# Managed by gptagent: Looking Glass's shared memory for domain " + name +
                                            ", readable by its client\nf /dev/shm/looking-glass 0660 " + user + " " + group + " -\n");
        !s)
      return Result::failed("looking_glass: " + s.error());
    host_commands.push_back({Command{{"systemd-tmpfiles", "--create", conf}}, "created /dev/shm/looking-glass"});
  }
  if (redefine) {
    r.diff = unified_diff(dom ? render(current) : "", render(desired), "domain " + name + " (libvirt XML)");
    done.push_back(dom ? "redefined domain " + name : "defined domain " + name);
  }
  // The definition first: when libvirt refuses it, nothing at all has changed.
  if (apply && redefine) {
    auto defined = conn->define(render(desired));
    if (!defined) return Result::failed(defined.error() + " (domain " + name + ", nothing was changed)");
    dom.emplace(std::move(*defined));
  }
  if (!host_files.empty()) {
    r.diff += host_files.diff();
    for (const auto& p : host_files.paths()) done.push_back("wrote " + p);
    if (apply)
      if (auto s = host_files.apply(r.data); !s) return Result::failed(s.error());
    for (const auto& [cmd, what] : host_commands) {
      Result ran = ctx.run_system(cmd, apply, what);
      r.commands.insert(r.commands.end(), ran.commands.begin(), ran.commands.end());
      if (ran.status == Outcome::failed) return Result::failed(ran.msg);
      if (!ran.msg.empty()) done.push_back(ran.msg);
    }
    if (apply && want->hugepage_kib)
      if (auto pool = vm::read_hugepages(ctx.root, *want->hugepage_kib); pool && pool->free * pool->size_kib < want->memory_kib)
        want->warnings.push_back("hugepages: the kernel has " + std::to_string(pool->free) + " free pages of " +
                                 size_text(pool->size_kib * 1024) + " after the reservation, fewer than the domain needs (" +
                                 std::to_string(want->memory_kib / pool->size_kib) +
                                 "): its memory is fragmented; reboot, or reserve them at boot (hugepages=N)");
  }
  auto nvram = ensure_nvram(ctx, *want, apply);
  if (!nvram) return Result::failed(nvram.error());
  if (*nvram) done.push_back("created " + want->nvram + " from " + want->vars);

  // Autostart and the run state, on the defined domain (in check mode: as it is, or would be).
  if (args.contains("autostart") && !args["autostart"].is_null()) {
    const bool on = args["autostart"].get<bool>();
    bool is_on = false;
    if (dom) {
      auto a = dom->autostart();
      if (!a) return Result::failed(a.error());
      is_on = *a;
    }
    if (is_on != on) {
      done.push_back(on ? "autostart on" : "autostart off");
      if (apply)
        if (auto s = dom->set_autostart(on); !s) return Result::failed(s.error());
    }
  }
  if (state == "running" && run != virt::State::running) {
    done.push_back("started");
    if (apply)
      if (auto s = dom->start(); !s) return Result::failed(s.error());
  } else if (state == "shutoff" && run != virt::State::shutoff) {
    const bool force = args["force_shutoff"].get<bool>();
    done.push_back(force ? "powered off" : "shut down");
    if (apply) {
      if (force) {
        if (auto s = dom->destroy(); !s) return Result::failed(s.error());
      } else {
        if (auto s = dom->shutdown(); !s) return Result::failed(s.error());
        const int timeout = args["shutdown_timeout"].get<int>();
        for (int waited = 0;; ++waited) {
          auto st = dom->state();
          if (!st) return Result::failed(st.error());
          if (*st == virt::State::shutoff) break;
          if (waited >= timeout * 10)
            return Result::failed("domain " + name + " did not shut down within " + std::to_string(timeout) +
                                  " s of the ACPI power button; it is left running (force_shutoff: true powers it off)");
          ::usleep(100 * 1000);
        }
      }
    }
  } else if (redefine && run == virt::State::running) {
    done.push_back("the running domain keeps its old configuration until it is shut down");
  }

  r.data = {{"name", name},      {"uri", conn->uri()},     {"type", want->type},   {"machine", want->machine},
            {"loader", want->loader}, {"nvram", want->nvram}, {"state", state}};
  json hostdevs = json::array();
  for (const auto& g : want->gpus)
    for (const auto& f : g.functions) hostdevs.push_back(f);
  r.data["hostdevs"] = hostdevs;
  if (redefine) r.data["xml"] = render(desired);  // what is (or would be) defined
  const std::string warnings = want->warnings.empty() ? "" : " [warning: " + join(want->warnings, "; ") + "]";
  if (!want->warnings.empty()) r.data["warnings"] = want->warnings;
  for (const auto& w : want->warnings) spdlog::warn("domain {}: {}", name, w);
  if (done.empty()) {
    r.msg = "domain " + name + " is as wanted (" + want->machine + ", " + std::to_string(hostdevs.size()) + " host devices, " +
            virt::state_name(run) + ")" + warnings;
    return r;
  }
  r.status = Outcome::changed;
  r.msg = join(done, "; ") + warnings;
  return r;
}

const Registration reg{{"libvirt_domain", "define a libvirt domain for GPU passthrough (q35, OVMF, vfio hostdevs)", schema(),
                        converge}};

}  // namespace
}  // namespace gpt
