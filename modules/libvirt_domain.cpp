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

#include "agent/diff.hpp"
#include "agent/gpu.hpp"
#include "agent/module.hpp"
#include "agent/pci.hpp"
#include "agent/text.hpp"
#include "agent/virt.hpp"

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
  pugi::xml_node anchor;  // insert before this (null: append)
  std::map<std::string, pugi::xml_document> addresses;

  Managed(pugi::xml_node devs, const std::function<bool(pugi::xml_node)>& managed,
          const std::function<std::string(pugi::xml_node)>& key = {})
      : devices(devs) {
    std::vector<pugi::xml_node> gone;
    for (auto d : devices.children()) {
      if (managed(d)) {
        if (auto a = d.child("address"); a && key) addresses[key(d)].append_copy(a);
        gone.push_back(d);
      } else if (!gone.empty() && !anchor) {
        anchor = d;
      }
    }
    for (auto d : gone) devices.remove_child(d);
  }
  pugi::xml_node add(const char* name) { return anchor ? devices.insert_child_before(name, anchor) : devices.append_child(name); }
  void keep_address(pugi::xml_node dev, const std::string& key) {
    auto it = addresses.find(key);
    if (it != addresses.end()) dev.append_copy(it->second.first_child());
  }
};

bool is_gpu_port(pugi::xml_node c, const Want& w) {
  if (std::string(c.name()) != "controller" || std::string(c.attribute("type").value()) != "pci" ||
      std::string(c.attribute("model").value()) != "pcie-root-port")
    return false;
  const int index = c.attribute("index").as_int(-1);
  return index >= w.gpu_bus_base && index < w.gpu_bus_base + static_cast<int>(w.gpus.size());
}

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
  if (!w.hyperv_vendor_id.empty()) {
    auto hv = child_or_add(features, "hyperv");
    if (!hv.attribute("mode")) set_attr(hv, "mode", "custom");
    auto vid = child_or_add(hv, "vendor_id");
    set_attr(vid, "state", "on");
    set_attr(vid, "value", w.hyperv_vendor_id);
  } else if (auto hv = features.child("hyperv")) {
    hv.remove_child("vendor_id");
    if (!hv.first_child()) features.remove_child(hv);
  }

  auto cpu = child_or_add(dom, "cpu");
  set_attr(cpu, "mode", w.cpu_mode);
  set_attr(cpu, "check", w.cpu_mode == "host-passthrough" ? "partial" : "none");

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
  Managed ports(devices, [&](pugi::xml_node d) { return is_gpu_port(d, w); });
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
      auto a = parse_pci_address(f);
      const std::string& addr = *a;  // DDDD:BB:SS.F
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
      set_attr(guest, "function", "0x" + addr.substr(11, 1));
      if (addr.substr(11, 1) == "0" && fns.size() > 1) set_attr(guest, "multifunction", "on");
    }
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
}

std::string attr(pugi::xml_node n, const char* name) { return n.attribute(name).value(); }

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
  // Devices as a sorted list: libvirt keeps them in an order of its own.
  std::vector<std::string> lines;
  auto devices = dom.child("devices");
  for (auto d : devices.children()) {
    std::ostringstream out;
    const std::string name = d.name();
    if (name == "disk" && attr(d, "device") == "disk") {
      out << "disk " << attr(d.child("source"), "file") << " " << attr(d.child("driver"), "type") << " "
          << attr(d.child("target"), "dev") << " " << attr(d.child("target"), "bus") << "\n";
    } else if (name == "interface") {
      out << "interface " << attr(d, "type") << " " << attr(d.child("source"), "bridge") << attr(d.child("source"), "network")
          << " " << attr(d.child("mac"), "address") << " " << attr(d.child("model"), "type") << "\n";
    } else if (name == "hostdev" && attr(d, "type") == "pci") {
      auto s = d.child("source").child("address");
      auto g = d.child("address");
      out << "hostdev " << attr(d, "managed") << " " << attr(d.child("driver"), "name") << " "
          << s.attribute("domain").as_int() << ":" << s.attribute("bus").as_int() << ":" << s.attribute("slot").as_int() << "."
          << s.attribute("function").as_int() << " -> " << g.attribute("bus").as_int() << ":" << g.attribute("slot").as_int()
          << "." << g.attribute("function").as_int() << (attr(g, "multifunction") == "on" ? " multifunction" : "") << "\n";
    } else if (is_gpu_port(d, w)) {
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
  virt::State run = virt::State::shutoff;
  if (dom) {
    auto st = dom->state();
    if (!st) return Result::failed(st.error());
    run = *st;
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
  if (done.empty()) {
    r.msg = "domain " + name + " is as wanted (" + want->machine + ", " + std::to_string(hostdevs.size()) + " host devices, " +
            virt::state_name(run) + ")";
    return r;
  }
  r.status = Outcome::changed;
  r.msg = join(done, "; ");
  return r;
}

const Registration reg{{"libvirt_domain", "define a libvirt domain for GPU passthrough (q35, OVMF, vfio hostdevs)", schema(),
                        converge}};

}  // namespace
}  // namespace gpt
