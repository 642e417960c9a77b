// libvirt_domain: a VM for GPU passthrough, the walkthrough's domain XML from a few YAML keys.
//
// The module manages only what the playbook declares. A new domain is made whole (q35, OVMF,
// defaults for every key left out); of an existing one, only the declared keys are ensured and
// the rest stays byte for byte as libvirt has it. Lists (disks, CD-ROMs, interfaces, host devices,
// evdev inputs, ROMs) are managed item by item by identity. What the agent took over is recorded in the
// domain's own <metadata> with what was there before, so that a key or item the playbook drops is
// given back. Each part is written only where it differs, so the document changes exactly where
// a change is needed: drift is a difference between the current and the merged XML, and --diff
// shows that very change.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <memory>
#include <pugixml.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "agent/changes.hpp"
#include "agent/declare.hpp"
#include "agent/diff.hpp"
#include "agent/gpu.hpp"
#include "agent/module.hpp"
#include "agent/pci.hpp"
#include "agent/text.hpp"
#include "agent/virt.hpp"
#include "modules/lib/libvirt_shared.hpp"
#include "modules/lib/vm_tuning.hpp"

namespace gpt {
namespace {

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
  if (x == std::string::npos || x == 0 || x + 1 == text.size() ||
      text.find_first_not_of("0123456789x") != std::string::npos)
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
    if (k == "size" && !size_ok(x))
      return "size: '" + (x.is_string() ? x.get<std::string>() : x.dump()) + "' is not a page size like 2M or 1G";
    if (k == "reserve" && !x.is_boolean()) return "reserve must be true or false";
    if (k != "size" && k != "reserve") return "has no key '" + k + "' (size, reserve)";
  }
  return std::nullopt;
}

// The domain's arguments. Every key without a default is optional: a key the playbook leaves out
// is the domain's own (only a new domain gets the defaults), so what the playbook declares is
// exactly what has a value here.
struct Firmware {
  std::optional<std::string> code, vars;
};
struct Interface {
  std::optional<std::string> bridge, network, mac, model;
  std::string state = "present";
};
struct Graphics {
  std::string type = "spice";
  std::optional<long long> port;
  std::optional<std::string> listen;
};
struct Rom {
  std::optional<std::string> gpu;
  std::string file;
  bool bar = true;
};
struct Topology {
  long long sockets = 1, cores = 0, threads = 1;
};
struct Pin {
  std::string vcpus;
  std::optional<std::string> emulator, iothreads;
};
struct LookingGlass {
  std::string resolution, user, group = "kvm";
};
struct Args {
  std::string name;
  std::optional<std::string> connect, type;
  json memory;  // a size (16G) or MiB
  std::optional<long long> vcpus;
  std::optional<std::string> machine;
  std::optional<Firmware> firmware;
  std::optional<std::string> nvram, cpu_mode;
  std::optional<bool> hide_kvm;
  std::optional<std::string> hyperv_vendor_id;
  json gpus;  // null: not given
  bool force = false;
  std::optional<std::vector<json>> disks;  // a path, or {path, format, bus, target, state}
  std::optional<std::vector<Interface>> interfaces;
  std::optional<Graphics> graphics;
  std::optional<std::string> video;
  std::optional<std::vector<std::string>> boot;
  std::string state = "defined";
  std::optional<bool> autostart;
  long long shutdown_timeout = 120;
  bool force_shutoff = false, keep_nvram = true;
  std::optional<bool> tpm, secure_boot;
  std::optional<std::vector<json>> cdrom;  // an ISO's path, or {path, state}
  std::optional<std::vector<Rom>> rom;
  std::optional<Topology> cpu;
  std::optional<Pin> pin;
  std::optional<json> hugepages;
  std::optional<LookingGlass> looking_glass;
  std::optional<bool> hyperv;
  std::optional<std::vector<std::string>> evdev;
  std::optional<json> usb_controllers, exclusive;
};

// A list of disks or CD-ROMs: each a path or a mapping of these string keys.
std::optional<std::string> path_items_check(const std::vector<json>& items, const std::string& list,
                                            const std::string& usage, const std::vector<std::string>& keys) {
  for (const auto& d : items) {
    if (d.is_string()) continue;
    if (!d.is_object() || !d.contains("path") || !d["path"].is_string()) return list + ": each " + usage;
    for (auto it = d.begin(); it != d.end(); ++it) {
      if (std::find(keys.begin(), keys.end(), it.key()) == keys.end())
        return list + ": unknown key '" + it.key() + "' (" + join(keys, ", ") + ")";
      if (list == "disks" && !it.value().is_string()) return list + ": " + it.key() + " must be a string";
    }
    if (d.contains("state") && d["state"] != "present" && d["state"] != "absent")
      return list + ": state '" + (d["state"].is_string() ? d["state"].get<std::string>() : d["state"].dump()) +
             "' is not present or absent";
  }
  return std::nullopt;
}

std::optional<std::string> check_args(const Args& a) {
  if (a.disks)
    if (auto bad = path_items_check(*a.disks, "disks", "disk is a path or {path, format, bus, target, state}",
                                    {"path", "format", "bus", "target", "state"}))
      return bad;
  if (a.cdrom)
    if (auto bad = path_items_check(*a.cdrom, "cdrom", "CD-ROM is an ISO's path or {path, state}", {"path", "state"}))
      return bad;
  for (const auto& i : a.interfaces.value_or(std::vector<Interface>{})) {
    if (i.bridge.has_value() == i.network.has_value()) return "interfaces: each interface has either bridge or network";
    if (i.mac) {
      const std::string& mac = *i.mac;
      bool ok = mac.size() == 17;
      for (size_t k = 0; ok && k < 17; ++k)
        ok = k % 3 == 2 ? mac[k] == ':' : std::isxdigit(static_cast<unsigned char>(mac[k]));
      if (!ok) return "interfaces: '" + mac + "' is not a MAC address like 52:54:00:12:34:56";
    }
  }
  if (a.firmware && a.firmware->code.has_value() != a.firmware->vars.has_value())
    return "firmware: give both code and vars, or neither (found on the host)";
  const long long vcpus = a.vcpus.value_or(2);
  if (a.cpu) {
    const auto& c = *a.cpu;
    const long long n = c.sockets * c.cores * c.threads;
    if (n != vcpus)
      return "cpu: " + std::to_string(c.sockets) + " sockets x " + std::to_string(c.cores) + " cores x " +
             std::to_string(c.threads) + " threads is " + std::to_string(n) + " vCPUs, but vcpus is " +
             std::to_string(vcpus);
  }
  if (a.pin) {
    const size_t n = vm::parse_cpuset(a.pin->vcpus)->size();
    if (n != static_cast<size_t>(vcpus))
      return "pin: vcpus names " + std::to_string(n) + " host CPUs for " + std::to_string(vcpus) +
             " vCPUs: give one host CPU per vCPU";
  }
  for (const auto& dev : a.boot.value_or(std::vector<std::string>{}))
    if (dev != "hd" && dev != "cdrom" && dev != "network" && dev != "fd")
      return "boot: '" + dev + "' is not hd, cdrom, network or fd";
  return std::nullopt;
}

const ArgsDecl<Args>& decl() {
  static const auto d =
      ArgsDecl<Args>()
          .arg("name", &Args::name, "the domain's name",
               {.required = true,
                .check = [](const json& v) -> std::optional<std::string> {
                  const auto n = v.get<std::string>();
                  if (n.empty() || n.find('/') != std::string::npos || n.size() > 200)
                    return "'" + n + "' is not a domain name";
                  return std::nullopt;
                }})
          .arg(connect_arg(), &Args::connect)
          .arg("type", &Args::type,
               "the domain type: auto (kvm where /dev/kvm is, else qemu with a warning), kvm or qemu",
               {.choices = {"auto", "kvm", "qemu"}})
          .arg("memory", &Args::memory, "the guest's memory: a size (16G, 8192M) or a number of MiB",
               {.required = true, .check = size_check, .example = "16G"})
          .arg("vcpus", &Args::vcpus, "virtual CPUs (2 for a new domain when not given)",
               {.check = [](const json& v) -> std::optional<std::string> {
                 if (v.get<long long>() < 1 || v.get<long long>() > 4096) return "must be between 1 and 4096";
                 return std::nullopt;
               }})
          .arg("machine", &Args::machine,
               "the machine type: auto (the newest pc-q35-* the hypervisor offers), or a name; i440FX and q35 older "
               "than 4.2 refused",
               {.example = "q35"})
          .arg("firmware", &Args::firmware, "OVMF's code and variables template (found on the host when not given)",
               ArgsDecl<Firmware>()
                   .arg("code", &Firmware::code, "the OVMF code file (read-only pflash)")
                   .arg("vars", &Firmware::vars, "the variables template the nvram file is made from"))
          .arg("nvram", &Args::nvram,
               "the domain's UEFI variables file (default /var/lib/libvirt/qemu/nvram/NAME_VARS.fd); never replaced")
          .arg("cpu_mode", &Args::cpu_mode, "the CPU model: auto (host-passthrough, maximum under TCG)",
               {.choices = {"auto", "host-passthrough", "host-model", "maximum"}})
          .arg("hide_kvm", &Args::hide_kvm,
               "hide KVM from the guest (<kvm><hidden state='on'/>), for NVIDIA drivers (true for a new domain)")
          .arg("hyperv_vendor_id", &Args::hyperv_vendor_id, "the Hyper-V vendor_id the guest sees (1 to 12 characters)",
               {.check = [](const json& v) -> std::optional<std::string> {
                 const auto id = v.get<std::string>();
                 if (id.empty() || id.size() > 12) return "must be 1 to 12 characters (libvirt's vendor_id limit)";
                 return std::nullopt;
               }})
          .arg(gpus_arg(), &Args::gpus)
          .arg("force", &Args::force,
               "take a GPU whose verdict blocks passthrough, or a USB controller not alone in its IOMMU group")
          .arg(ArgSpec{.name = "disks",
                       .type = ArgType::list,
                       .elements = ArgType::any,
                       .doc = "disks by path: a path, or {path, format, bus, target, state: present|absent}",
                       .example = json::array({"/var/lib/libvirt/images/vm.qcow2"})},
               &Args::disks)
          .arg("interfaces", &Args::interfaces,
               "NICs, by MAC or by source: {bridge or network, mac, model, state: present|absent}",
               ArgsDecl<Interface>()
                   .arg("bridge", &Interface::bridge, "a host bridge")
                   .arg("network", &Interface::network, "a libvirt network")
                   .arg("mac", &Interface::mac, "the MAC address")
                   .arg("model", &Interface::model, "the NIC model (virtio, e1000e...)")
                   .arg("state", &Interface::state, "absent removes this NIC", {.choices = {"present", "absent"}}),
               {.example = json::array({json{{"bridge", "br0"}}})})
          .arg("graphics", &Args::graphics, "the display: {type: spice|vnc|none, port, listen}",
               ArgsDecl<Graphics>()
                   .arg("type", &Graphics::type, "spice (with its agent's channel), vnc or none",
                        {.choices = {"spice", "vnc", "none"}})
                   .arg("port", &Graphics::port, "a fixed port (autoport when not given)")
                   .arg("listen", &Graphics::listen, "the address it listens on"))
          .arg("video", &Args::video, "the video model (vga for a new domain)",
               {.choices = {"vga", "qxl", "virtio", "bochs", "ramfb", "none"}})
          .arg("boot", &Args::boot,
               "boot order: hd, cdrom, network, fd (a new domain: hd, then cdrom when it has an ISO)",
               {.example = json::array({"hd", "cdrom"})})
          .arg("state", &Args::state, "defined, running, shutoff, or absent (undefined)",
               {.choices = {"defined", "running", "shutoff", "absent"}})
          .arg("autostart", &Args::autostart,
               "whether libvirt starts the domain at boot (left as it is when not given)")
          .arg("shutdown_timeout", &Args::shutdown_timeout,
               "seconds state: shutoff waits for the guest after the ACPI power button")
          .arg("force_shutoff", &Args::force_shutoff,
               "state: shutoff powers the domain off instead of asking the guest")
          .arg("keep_nvram", &Args::keep_nvram, "state: absent keeps the nvram file")
          .arg("tpm", &Args::tpm, "an emulated TPM 2.0 (swtpm) as Windows 11 requires; false: none")
          .arg("secure_boot", &Args::secure_boot,
               "the distribution's Secure Boot OVMF with Microsoft's keys in the variables template")
          .arg(ArgSpec{.name = "cdrom",
                       .type = ArgType::list,
                       .elements = ArgType::any,
                       .doc = "CD-ROMs by ISO path: a path, or {path, state: present|absent}",
                       .example = json::array({"/var/lib/libvirt/images/Win11.iso"})},
               &Args::cdrom)
          .arg("rom", &Args::rom,
               "a ROM file on a GPU's display function: {file, bar, gpu} (gpu may be left out with one GPU)",
               ArgsDecl<Rom>()
                   .arg("gpu", &Rom::gpu, "the GPU the ROM is for", {.check = pci_address_check})
                   .arg("file", &Rom::file, "the ROM file (starts with 0x55 0xAA, readable by the hypervisor's user)",
                        {.required = true})
                   .arg("bar", &Rom::bar, "the ROM BAR visible to the guest"))
          .arg("cpu", &Args::cpu, "the CPU topology: sockets x cores x threads = vcpus",
               ArgsDecl<Topology>()
                   .arg("sockets", &Topology::sockets, "sockets", {.check = positive})
                   .arg("cores", &Topology::cores, "cores per socket", {.required = true, .check = positive})
                   .arg("threads", &Topology::threads, "threads per core", {.check = positive}))
          .arg("pin", &Args::pin, "pinning: vCPU i on the i-th host CPU of vcpus, the emulator's and I/O threads' CPUs",
               ArgsDecl<Pin>()
                   .arg("vcpus", &Pin::vcpus, "host CPUs, one per vCPU (2-7,10-15)",
                        {.required = true, .check = cpuset_check})
                   .arg("emulator", &Pin::emulator, "host CPUs for the emulator threads", {.check = cpuset_check})
                   .arg("iothreads", &Pin::iothreads, "host CPUs for an I/O thread of the virtio disks",
                        {.check = cpuset_check}))
          .arg("hugepages", &Args::hugepages,
               "back the memory with hugepages: true, false, a page size (2M, 1G) or {size, reserve}",
               {.check = hugepages_check, .example = json{{"size", "1G"}, {"reserve", true}}})
          .arg("looking_glass", &Args::looking_glass, "Looking Glass's shared memory for a client that runs as user",
               ArgsDecl<LookingGlass>()
                   .arg("resolution", &LookingGlass::resolution, "the guest's resolution (2560x1440)",
                        {.required = true, .check = resolution_check})
                   .arg("user", &LookingGlass::user, "the user the client runs as", {.required = true})
                   .arg("group", &LookingGlass::group, "the group of /dev/shm/looking-glass"))
          .arg("hyperv", &Args::hyperv, "the Hyper-V enlightenments and hypervclock; false: none of them")
          .arg("evdev", &Args::evdev, "keyboards and mice passed through evdev (/dev/input/by-id/...)",
               {.check = [](const json& v) -> std::optional<std::string> {
                 for (const auto& p : v)
                   if (!p.get<std::string>().starts_with("/dev/input/"))
                     return "'" + p.get<std::string>() + "' is not a /dev/input/ path";
                 return std::nullopt;
               }})
          .arg("usb_controllers", &Args::usb_controllers,
               "whole USB controllers passed through: auto, or a list of PCI addresses",
               {.check = [](const json& v) -> std::optional<std::string> {
                 if (v.is_string() && v.get<std::string>() == "auto") return std::nullopt;
                 if (!v.is_array()) return "must be auto or a list of PCI addresses";
                 for (const auto& a : v)
                   if (auto bad = pci_address_check(a)) return bad;
                 return std::nullopt;
               }})
          .arg("exclusive", &Args::exclusive,
               "lists that hold only what the playbook lists (the user's other items removed): true, or some of disks, "
               "cdrom, "
               "interfaces, hostdevs, evdev",
               {.check = [](const json& v) -> std::optional<std::string> {
                 const std::vector<std::string> lists = {"disks", "cdrom", "interfaces", "hostdevs", "evdev"};
                 if (v.is_boolean()) return std::nullopt;
                 if (!v.is_array()) return "must be true, false or a list of disks, cdrom, interfaces, hostdevs, evdev";
                 for (const auto& l : v)
                   if (!l.is_string() || std::find(lists.begin(), lists.end(), l.get<std::string>()) == lists.end())
                     return "'" + (l.is_string() ? l.get<std::string>() : l.dump()) +
                            "' is not one of disks, cdrom, interfaces, hostdevs, evdev";
                 return std::nullopt;
               }})
          .check(check_args);
  return d;
}

// ---------------------------------------------------------------------------------------------
// What the hypervisor offers

struct Offer {
  std::vector<std::string> types;                             // domain types for x86_64 hvm guests
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
      for (auto m : arch.children("machine"))
        o->machines.emplace_back(m.child_value(), m.attribute("canonical").value());
      for (auto d : arch.children("domain")) {
        std::string t = d.attribute("type").value();
        if (std::find(o->types.begin(), o->types.end(), t) == o->types.end()) o->types.push_back(t);
        for (auto m : d.children("machine"))
          o->machines.emplace_back(m.child_value(), m.attribute("canonical").value());
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
    {"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},              // Debian 12, Ubuntu 22.04+
    {"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},                    // older Debian and Ubuntu
    {"/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"},          // Fedora, RHEL
    {"/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"},      // Arch
    {"/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"},  // older Arch
};

// The Secure Boot builds (SMM required) with the variables template that holds Microsoft's keys,
// as the distributions pair them in their QEMU firmware descriptors (/usr/share/qemu/firmware/).
// Arch ships no template with keys enrolled: its guests start in Secure Boot's setup mode, which
// Windows 11 setup accepts (it asks for a machine capable of Secure Boot).
const std::vector<std::pair<std::string, std::string>> kSecureFirmware = {
    {"/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
     "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"},  // Debian 12 (40-edk2-x86_64-secure-enrolled.json), Ubuntu 22.04+
    {"/usr/share/OVMF/OVMF_CODE.ms.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd"},  // older Debian and Ubuntu
    {"/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd"},  // Fedora, RHEL
    {"/usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"},  // Arch (no keys enrolled)
    {"/usr/share/edk2-ovmf/x64/OVMF_CODE.secboot.fd",
     "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"},  // older Arch (no keys enrolled)
};

bool keys_enrolled(const std::string& vars) {
  return vars.find("/edk2/x64/") == std::string::npos && vars.find("/edk2-ovmf/") == std::string::npos;
}

Expected<std::pair<std::string, std::string>> choose_firmware(const Root& root, const Firmware& fw, bool secure) {
  if (fw.code && fw.vars) {
    for (const auto& [key, path] : {std::pair{"code", *fw.code}, std::pair{"vars", *fw.vars}})
      if (!path_exists(root, path)) return Error{std::string("firmware: ") + key + " " + path + " does not exist"};
    return std::make_pair(*fw.code, *fw.vars);
  }
  const auto& table = secure ? kSecureFirmware : kFirmware;
  for (const auto& [code, vars] : table)
    if (path_exists(root, code) && path_exists(root, vars)) return std::make_pair(code, vars);
  std::vector<std::string> tried;
  for (const auto& f : table) tried.push_back(f.first);
  if (!secure)
    return Error{"no OVMF firmware found (looked for " + join(tried, ", ") +
                 "): install ovmf (Debian, Ubuntu), edk2-ovmf (Fedora, Arch), or give firmware: {code, vars}"};
  std::string plain;
  for (const auto& f : kFirmware)
    if (plain.empty() && path_exists(root, f.first))
      plain = " (this host has " + f.first + ", which has no Secure Boot)";
  return Error{
      "secure_boot: no Secure Boot build of OVMF found" + plain + " (looked for " + join(tried, ", ") +
      "): install ovmf (Debian, Ubuntu) or edk2-ovmf (Fedora, Arch), or give firmware: {code, vars} of a Secure Boot "
      "build; nothing was changed"};
}

// ---------------------------------------------------------------------------------------------
// What the agent set: a record inside the domain's own <metadata>
//
// The agent manages only what the playbook declares. Each key it manages (a "part" of the domain)
// and each list item it ensures (a disk, an interface, a host device...) is written down in the
// domain itself, with what the domain had there before the agent first took it over. A key the
// playbook no longer declares, or an item it no longer lists, is given back: the user's prior
// version is restored, or what the agent created is removed. Like kubectl's last-applied
// configuration, the record travels with the object, so any controller sees the same ownership.

constexpr const char* kRecordNs = "https://gptagent.dev/xmlns/libvirt_domain/1";
constexpr const char* kRecord = "gptagent:managed";

std::string attr(pugi::xml_node n, const char* name) { return n.attribute(name).value(); }

void set_attr(pugi::xml_node n, const char* name, const std::string& value) {
  auto a = n.attribute(name);
  if (!a) a = n.append_attribute(name);
  if (value != a.value()) a.set_value(value.c_str());
}

void set_text(pugi::xml_node n, const std::string& text) {
  if (text != n.text().get()) n.text().set(text.c_str());
}

pugi::xml_node child_or_add(pugi::xml_node parent, const char* name) {
  auto n = parent.child(name);
  return n ? n : parent.append_child(name);
}

bool named(pugi::xml_node n, const char* name) { return std::string_view(n.name()) == name; }

std::string raw(pugi::xml_node n) {
  std::ostringstream out;
  n.print(out, "", pugi::format_raw);
  return out.str();
}

// Where the nodes of a managed part live: the children of `parent` that `match` takes, or (with
// `attribute`) one attribute of `parent`.
struct Slot {
  std::vector<const char*> parent;
  std::function<bool(pugi::xml_node)> match = {};
  const char* attribute = nullptr;
};

Slot children_named(std::vector<const char*> parent, std::vector<std::string> names) {
  return {std::move(parent), [names = std::move(names)](pugi::xml_node n) {
            return std::find(names.begin(), names.end(), n.name()) != names.end();
          }};
}
Slot attribute_of(std::vector<const char*> parent, const char* name) { return {std::move(parent), {}, name}; }

pugi::xml_node navigate(pugi::xml_node dom, const std::vector<const char*>& path, bool create) {
  for (const char* step : path) {
    if (!dom) return {};
    auto next = dom.child(step);
    if (!next && create) next = dom.append_child(step);
    dom = next;
  }
  return dom;
}

// Removes the elements of `path` (deepest first) that hold nothing any more.
void prune(pugi::xml_node dom, const std::vector<const char*>& path) {
  for (size_t depth = path.size(); depth > 0; --depth) {
    auto n = navigate(dom, std::vector<const char*>(path.begin(), path.begin() + static_cast<long>(depth)), false);
    if (!n || n.first_child() || n.first_attribute()) return;
    n.parent().remove_child(n);
  }
}

// The slots of each part (a playbook key), in the order their priors are kept.
const std::vector<std::string> kHyperv = {"relaxed", "vapic",  "spinlocks", "vpindex",    "runtime",
                                          "synic",   "stimer", "reset",     "frequencies"};

bool is_hypervclock(pugi::xml_node n) { return named(n, "timer") && attr(n, "name") == "hypervclock"; }
bool is_looking_glass(pugi::xml_node d) { return named(d, "shmem") && attr(d, "name") == "looking-glass"; }
bool is_evdev(pugi::xml_node d) { return named(d, "input") && attr(d, "type") == "evdev"; }
bool is_spice_channel(pugi::xml_node d) { return named(d, "channel") && attr(d, "type") == "spicevmc"; }
bool is_virtio_serial(pugi::xml_node d) { return named(d, "controller") && attr(d, "type") == "virtio-serial"; }

std::vector<Slot> part_slots(const std::string& key) {
  if (key == "type") return {attribute_of({}, "type")};
  if (key == "memory") return {children_named({}, {"memory", "currentMemory"})};
  if (key == "vcpus") return {children_named({}, {"vcpu"})};
  if (key == "machine") return {attribute_of({"os", "type"}, "machine")};
  if (key == "firmware") return {attribute_of({"os"}, "firmware"), children_named({"os"}, {"loader", "nvram"})};
  // The loader and the nvram's template change with it, and the autoselection (with its feature
  // list) gives way to them.
  if (key == "secure_boot")
    return {attribute_of({"os"}, "firmware"), children_named({"os"}, {"loader", "nvram", "firmware"}),
            children_named({"features"}, {"smm"})};
  if (key == "tpm") return {children_named({"devices"}, {"tpm"})};
  if (key == "cpu_mode") return {attribute_of({"cpu"}, "mode"), attribute_of({"cpu"}, "check")};
  if (key == "hide_kvm") return {children_named({"features", "kvm"}, {"hidden"})};
  if (key == "hyperv_vendor_id") return {children_named({"features", "hyperv"}, {"vendor_id"})};
  if (key == "hyperv")
    return {attribute_of({"features", "hyperv"}, "mode"),
            children_named({"features", "hyperv"}, kHyperv),
            children_named({"features", "hyperv"}, {"vendor_id"}),
            attribute_of({"clock"}, "offset"),
            {{"clock"}, is_hypervclock}};
  if (key == "cpu") return {children_named({"cpu"}, {"topology"})};
  if (key == "pin")
    return {children_named({"cputune"}, {"vcpupin", "emulatorpin", "iothreadpin"}), children_named({}, {"iothreads"})};
  if (key == "hugepages") return {children_named({"memoryBacking"}, {"hugepages"})};
  if (key == "looking_glass") return {{{"devices"}, is_looking_glass}};
  if (key == "graphics")
    return {
        children_named({"devices"}, {"graphics"}), {{"devices"}, is_spice_channel}, {{"devices"}, is_virtio_serial}};
  if (key == "video") return {children_named({"devices"}, {"video"})};
  if (key == "boot") return {children_named({"os"}, {"boot"})};
  return {};
}

// Keys whose part the agent records; the list keys are recorded item by item.
const std::vector<std::string> kParts = {"type",        "memory",   "vcpus",     "machine",          "firmware",
                                         "secure_boot", "cpu_mode", "hide_kvm",  "hyperv_vendor_id", "hyperv",
                                         "cpu",         "pin",      "hugepages", "looking_glass",    "graphics",
                                         "video",       "boot",     "tpm"};

using Fragment = std::shared_ptr<pugi::xml_document>;  // a <prior> element and what it holds

Fragment capture(pugi::xml_node dom, const std::vector<Slot>& slots) {
  auto doc = std::make_shared<pugi::xml_document>();
  auto prior = doc->append_child("gptagent:prior");
  for (size_t i = 0; i < slots.size(); ++i) {
    auto slot = prior.append_child("gptagent:slot");
    set_attr(slot, "i", std::to_string(i));
    auto parent = navigate(dom, slots[i].parent, false);
    if (!parent) continue;
    if (slots[i].attribute) {
      if (auto a = parent.attribute(slots[i].attribute)) set_attr(slot, "value", a.value());
      continue;
    }
    for (auto c : parent.children())
      if (c.type() == pugi::node_element && slots[i].match(c)) slot.append_copy(c);
  }
  return doc;
}

void restore(pugi::xml_node dom, const std::vector<Slot>& slots, const Fragment& prior) {
  auto saved = prior ? prior->first_child() : pugi::xml_node();
  for (size_t i = 0; i < slots.size(); ++i) {
    auto slot = saved.find_child_by_attribute("gptagent:slot", "i", std::to_string(i).c_str());
    if (slots[i].attribute) {
      if (auto v = slot.attribute("value")) {
        set_attr(navigate(dom, slots[i].parent, true), slots[i].attribute, v.value());
      } else if (auto parent = navigate(dom, slots[i].parent, false)) {
        parent.remove_attribute(slots[i].attribute);
      }
    } else {
      auto parent = navigate(dom, slots[i].parent, slot.first_child() != nullptr);
      if (!parent) continue;
      std::vector<pugi::xml_node> now;
      for (auto c : parent.children())
        if (c.type() == pugi::node_element && slots[i].match(c)) now.push_back(c);
      for (auto c : slot.children()) now.empty() ? parent.append_copy(c) : parent.insert_copy_before(c, now.front());
      for (auto c : now) parent.remove_child(c);
    }
    prune(dom, slots[i].parent);
  }
}

struct Owned {
  std::string kind;  // "part", or an item kind: disk, cdrom, interface, hostdev, port, evdev, rom
  std::string id;    // the key, or the item's identity
  Fragment prior;    // what was there before the agent took it over; null: the agent created it
};

struct Record {
  std::vector<Owned> owned;
  Owned* find(const std::string& kind, const std::string& id) {
    for (auto& o : owned)
      if (o.kind == kind && o.id == id) return &o;
    return nullptr;
  }
  void drop(const std::string& kind, const std::string& id) {
    owned.erase(
        std::remove_if(owned.begin(), owned.end(), [&](const Owned& o) { return o.kind == kind && o.id == id; }),
        owned.end());
  }
};

pugi::xml_node record_node(pugi::xml_node dom) { return dom.child("metadata").child(kRecord); }

Record read_record(pugi::xml_node dom) {
  Record r;
  for (auto e : record_node(dom).children()) {
    Owned o;
    if (named(e, "gptagent:part")) {
      o.kind = "part";
      o.id = attr(e, "key");
    } else if (named(e, "gptagent:item")) {
      o.kind = attr(e, "kind");
      o.id = attr(e, "id");
    } else {
      continue;
    }
    if (auto p = e.child("gptagent:prior")) {
      o.prior = std::make_shared<pugi::xml_document>();
      o.prior->append_copy(p);
    }
    r.owned.push_back(std::move(o));
  }
  return r;
}

// Writes the record into the domain; the element is replaced only when what it says changed.
void write_record(pugi::xml_node dom, const Record& r) {
  pugi::xml_document fresh;
  auto managed = fresh.append_child(kRecord);
  set_attr(managed, "xmlns:gptagent", kRecordNs);
  for (const auto& o : r.owned) {
    auto e = managed.append_child(o.kind == "part" ? "gptagent:part" : "gptagent:item");
    if (o.kind == "part") {
      set_attr(e, "key", o.id);
    } else {
      set_attr(e, "kind", o.kind);
      set_attr(e, "id", o.id);
    }
    if (o.prior) e.append_copy(o.prior->first_child());
  }
  auto old = record_node(dom);
  if (old && raw(old) == raw(managed)) return;
  auto metadata = dom.child("metadata");
  if (old) metadata.remove_child(old);
  if (r.owned.empty()) {
    if (metadata && !metadata.first_child()) dom.remove_child(metadata);
    return;
  }
  if (!metadata)
    metadata = dom.insert_child_after("metadata", dom.child("uuid") ? dom.child("uuid") : dom.child("name"));
  metadata.append_copy(managed);
}

// ---------------------------------------------------------------------------------------------
// What the playbook asks for

struct DiskWant {
  std::string path, format, bus, target;  // format, bus, target: empty when not given
  bool absent = false;
};

struct CdromWant {
  std::string path;
  bool absent = false;
};

struct NicWant {
  std::string type, source, mac, model;  // mac, model: empty when not given
  bool absent = false;
};

struct Want {
  std::set<std::string> declared;  // the keys the playbook gives: the only parts of an existing domain managed
  bool creating = false;           // no domain yet: the parts not declared get the defaults too
  std::string type, name, machine, loader, vars, nvram, cpu_mode, hyperv_vendor_id, video;
  bool secure_boot = false;              // the loader is a Secure Boot build (declared, or the domain's own)
  std::string plain_loader, plain_vars;  // a new domain's firmware without secure_boot: what giving it back returns to
  bool tpm = false;
  std::vector<CdromWant> cdroms;
  uint64_t memory_kib = 0;
  int vcpus = 0;
  bool hide_kvm = true;
  std::vector<std::string> boot;
  std::vector<Gpu> gpus;
  std::vector<DiskWant> disks;
  std::vector<NicWant> interfaces;
  Graphics graphics;
  std::set<std::string> exclusive;  // lists that hold only what the playbook lists
  // Tuning.
  std::map<std::string, std::pair<std::string, bool>> roms;  // GPU display function -> file, bar
  int sockets = 0, cores = 0, threads = 0;                   // 0: no topology
  std::vector<int> vcpu_pins;                                // host CPU of each vCPU; empty: none
  std::string emulator_pin, iothread_pin;                    // canonical cpusets; empty: none
  std::optional<uint64_t> hugepage_kib;                      // 0: the default size
  uint64_t looking_glass_mib = 0;
  bool hyperv = false;
  std::vector<std::string> evdev;
  std::vector<std::string> usb;  // USB controllers passed whole
  std::vector<std::string> warnings;
  bool manages(const std::string& key) const { return creating || declared.count(key); }
};

std::string hex(int v, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*x", width, v);
  return buf;
}

// "0000:01:00.0" of a <source><address .../> or a guest <address .../>.
std::string pci_text(pugi::xml_node a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", a.attribute("domain").as_uint() & 0xffff,
                a.attribute("bus").as_uint() & 0xff, a.attribute("slot").as_uint() & 0x1f,
                a.attribute("function").as_uint() & 0x7);
  return buf;
}

// A size in libvirt's form: the element's text (or its attribute `value_attr`) in `unit` units.
std::optional<uint64_t> kib_of(pugi::xml_node n, const char* default_unit, const char* value_attr = nullptr) {
  std::string unit = attr(n, "unit");
  if (unit.empty()) unit = default_unit;
  if (unit == "b" || unit == "bytes") unit = "B";
  const std::string value = value_attr ? attr(n, value_attr) : std::string(trim(n.text().get()));
  auto bytes = parse_size(value + unit);
  if (!bytes) return std::nullopt;
  return *bytes / 1024;
}

// ---------------------------------------------------------------------------------------------
// The parts, each written only where the domain differs from what is wanted

void ensure_memory(pugi::xml_node dom, const Want& w) {
  auto mem = child_or_add(dom, "memory");
  const auto old = kib_of(mem, "KiB");
  if (old != w.memory_kib) {
    set_attr(mem, "unit", "KiB");
    set_text(mem, std::to_string(w.memory_kib));
  }
  // The current (balloon) size follows when it followed the maximum, or would exceed it.
  if (auto cur = dom.child("currentMemory")) {
    const auto kib = kib_of(cur, "KiB");
    if (kib != w.memory_kib && (kib == old || !kib || *kib > w.memory_kib)) {
      set_attr(cur, "unit", "KiB");
      set_text(cur, std::to_string(w.memory_kib));
    }
  }
}

void ensure_vcpus(pugi::xml_node dom, const Want& w) {
  auto vcpu = child_or_add(dom, "vcpu");
  if (!vcpu.attribute("placement")) set_attr(vcpu, "placement", "static");
  if (vcpu.text().as_int() != w.vcpus) set_text(vcpu, std::to_string(w.vcpus));
  if (vcpu.attribute("current") && vcpu.attribute("current").as_int() > w.vcpus) vcpu.remove_attribute("current");
}

// The loader and the nvram; `secure` (when secure_boot is declared) sets or removes the loader's
// secure attribute and the autoselection's feature list, which names another firmware.
void ensure_firmware(pugi::xml_node dom, const std::string& code, const std::string& vars,
                     const std::string& nvram_path, std::optional<bool> secure) {
  auto os = child_or_add(dom, "os");
  os.remove_attribute("firmware");  // firmware autoselection and an explicit loader exclude each other
  if (secure) os.remove_child("firmware");
  auto loader = os.child("loader");
  if (!loader) loader = os.append_child("loader");
  set_attr(loader, "readonly", "yes");
  if (secure && *secure) set_attr(loader, "secure", "yes");
  if (secure && !*secure) loader.remove_attribute("secure");
  set_attr(loader, "type", "pflash");
  set_text(loader, code);
  auto nvram = os.child("nvram");
  if (!nvram) nvram = os.append_child("nvram");
  set_attr(nvram, "template", vars);
  set_text(nvram, nvram_path);
}

// An emulated TPM 2.0 (swtpm): a domain's own emulated TPM 2.0 keeps its model (tpm-tis or
// tpm-crb, both TPM 2.0 interfaces) and whatever else it sets; any other TPM gives way to one.
bool is_tpm2_emulator(pugi::xml_node t) {
  const std::string model = attr(t, "model");
  return attr(t.child("backend"), "type") == "emulator" && attr(t.child("backend"), "version") == "2.0" &&
         (model == "tpm-crb" || model == "tpm-tis");
}

void ensure_tpm(pugi::xml_node devices, const Want& w) {
  std::vector<pugi::xml_node> all;
  for (auto t : devices.children("tpm")) all.push_back(t);
  if (w.tpm && all.size() == 1 && is_tpm2_emulator(all[0])) return;
  for (auto t : all) devices.remove_child(t);
  if (!w.tpm) return;
  // Where libvirt keeps it: after the inputs, before graphics, sound, video and host devices.
  const std::set<std::string> after = {"graphics",  "sound",  "audio",    "video",      "hostdev", "redirdev",
                                       "smartcard", "hub",    "watchdog", "memballoon", "rng",     "panic",
                                       "shmem",     "memory", "iommu",    "vsock"};
  auto next = devices.find_child([&](pugi::xml_node n) { return after.count(n.name()) > 0; });
  auto tpm = next ? devices.insert_child_before("tpm", next) : devices.append_child("tpm");
  set_attr(tpm, "model", "tpm-crb");
  auto backend = tpm.append_child("backend");
  set_attr(backend, "type", "emulator");
  set_attr(backend, "version", "2.0");
}

void ensure_hyperv(pugi::xml_node dom, const Want& w) {
  auto features = child_or_add(dom, "features");
  auto hv = features.child("hyperv");
  if (w.hyperv) {
    if (!hv) hv = features.append_child("hyperv");
    for (const auto& e : kHyperv) {
      auto n = hv.child(e.c_str());
      if (!n) {
        n = hv.append_child(e.c_str());
        if (e == "spinlocks") set_attr(n, "retries", "8191");
      }
      set_attr(n, "state", "on");
      if (e == "spinlocks" && !n.attribute("retries")) set_attr(n, "retries", "8191");
    }
    // NVIDIA's drivers before 465 stop with code 43 on Hyper-V's vendor id: another one hides it.
    const bool nvidia =
        std::any_of(w.gpus.begin(), w.gpus.end(), [](const Gpu& g) { return g.id.starts_with("10de:"); });
    if (nvidia && w.hide_kvm && !w.declared.count("hyperv_vendor_id") && !hv.child("vendor_id")) {
      auto vid = hv.append_child("vendor_id");
      set_attr(vid, "state", "on");
      set_attr(vid, "value", "gptagent");
    }
    if (!hv.attribute("mode")) set_attr(hv, "mode", "custom");
    // Windows keeps its clock in local time; the Hyper-V clock source goes with the enlightenments.
    auto clock = dom.child("clock");
    if (!clock) {
      clock = dom.append_child("clock");
      set_attr(clock, "offset", "localtime");
    }
    if (!clock.find_child(is_hypervclock)) {
      auto t = clock.append_child("timer");
      set_attr(t, "name", "hypervclock");
      set_attr(t, "present", "yes");
    }
  } else {
    for (const auto& e : kHyperv)
      if (hv) hv.remove_child(e.c_str());
    if (auto clock = dom.child("clock"))
      while (auto t = clock.find_child(is_hypervclock)) clock.remove_child(t);
    if (hv && !hv.first_child() && attr(hv, "mode") != "passthrough") features.remove_child(hv);
  }
}

void ensure_vendor_id(pugi::xml_node dom, const Want& w) {
  auto features = child_or_add(dom, "features");
  auto hv = child_or_add(features, "hyperv");
  auto vid = child_or_add(hv, "vendor_id");
  set_attr(vid, "state", "on");
  set_attr(vid, "value", w.hyperv_vendor_id);
  if (!hv.attribute("mode")) set_attr(hv, "mode", "custom");
}

void ensure_topology(pugi::xml_node dom, const Want& w) {
  auto cpu = child_or_add(dom, "cpu");
  auto t = cpu.child("topology");
  if (!t) {
    t = cpu.prepend_child("topology");
    set_attr(t, "sockets", std::to_string(w.sockets));
    set_attr(t, "dies", "1");
  }
  set_attr(t, "sockets", std::to_string(w.sockets));
  set_attr(t, "cores", std::to_string(w.cores));
  set_attr(t, "threads", std::to_string(w.threads));
}

std::string cpuset_of(pugi::xml_node n) {
  auto set = vm::parse_cpuset(attr(n, "cpuset"));
  return set ? vm::format_cpuset(*set) : attr(n, "cpuset");
}

// Pinning: vcpupin, emulatorpin and iothreadpin; other <cputune> settings stay.
void ensure_pins(pugi::xml_node dom, const Want& w) {
  auto tune = child_or_add(dom, "cputune");
  std::string have, want;
  for (auto p : tune.children())
    if (named(p, "vcpupin") || named(p, "emulatorpin") || named(p, "iothreadpin"))
      have += std::string(p.name()) + attr(p, "vcpu") + attr(p, "iothread") + "=" + cpuset_of(p) + ";";
  for (size_t v = 0; v < w.vcpu_pins.size(); ++v)
    want += "vcpupin" + std::to_string(v) + "=" + std::to_string(w.vcpu_pins[v]) + ";";
  if (!w.emulator_pin.empty()) want += "emulatorpin=" + w.emulator_pin + ";";
  if (!w.iothread_pin.empty()) want += "iothreadpin1=" + w.iothread_pin + ";";
  if (have != want) {
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
    }
  }
  if (!w.iothread_pin.empty()) {
    auto n = child_or_add(dom, "iothreads");
    if (n.text().as_int() < 1) set_text(n, "1");
  }
  if (!tune.first_child()) dom.remove_child(tune);
}

void ensure_hugepages(pugi::xml_node dom, const Want& w) {
  auto backing = child_or_add(dom, "memoryBacking");
  auto hp = backing.child("hugepages");
  if (!w.hugepage_kib) {
    backing.remove_child(hp);
  } else {
    std::optional<uint64_t> have;
    if (hp) have = 0;
    if (auto page = hp.child("page")) have = kib_of(page, "KiB", "size").value_or(0);
    if (have != *w.hugepage_kib) {
      backing.remove_child(hp);
      hp = backing.prepend_child("hugepages");
      if (*w.hugepage_kib) {
        auto page = hp.append_child("page");
        set_attr(page, "size", std::to_string(*w.hugepage_kib));
        set_attr(page, "unit", "KiB");
      }
    }
  }
  if (!backing.first_child()) dom.remove_child(backing);
}

// Looking Glass's frame buffer, shared with the host through /dev/shm/looking-glass.
void ensure_looking_glass(pugi::xml_node devices, const Want& w) {
  auto m = devices.find_child(is_looking_glass);
  if (!w.looking_glass_mib) {
    devices.remove_child(m);
    return;
  }
  if (!m) {
    m = devices.append_child("shmem");
    set_attr(m, "name", "looking-glass");
  }
  set_attr(child_or_add(m, "model"), "type", "ivshmem-plain");
  auto size = m.child("size");
  const auto kib = size ? kib_of(size, "M") : std::nullopt;
  if (kib != w.looking_glass_mib * 1024) {
    if (!size) size = m.insert_child_after("size", m.child("model"));
    set_attr(size, "unit", "M");
    set_text(size, std::to_string(w.looking_glass_mib));
  }
}

// Graphics, and the spice agent's channel with spice.
void ensure_graphics(pugi::xml_node devices, const Want& w) {
  const std::string& type = w.graphics.type;
  std::vector<pugi::xml_node> all;
  for (auto g : devices.children("graphics")) all.push_back(g);
  auto fits = [&](pugi::xml_node g) {
    if (attr(g, "type") != type) return false;
    if (w.graphics.port && (attr(g, "autoport") != "no" || attr(g, "port") != std::to_string(*w.graphics.port)))
      return false;
    if (!w.graphics.port && attr(g, "autoport") == "no") return false;
    if (w.graphics.listen) {
      std::string listen = attr(g, "listen");
      if (listen.empty()) listen = attr(g.child("listen"), "address");
      if (listen != *w.graphics.listen) return false;
    }
    return true;
  };
  const bool as_wanted = type == "none" ? all.empty() : all.size() == 1 && fits(all[0]);
  if (!as_wanted) {
    for (auto g : all) devices.remove_child(g);
    if (type != "none") {
      auto gfx = devices.append_child("graphics");
      set_attr(gfx, "type", type);
      if (w.graphics.port) {
        set_attr(gfx, "port", std::to_string(*w.graphics.port));
        set_attr(gfx, "autoport", "no");
      } else {
        set_attr(gfx, "autoport", "yes");
      }
      if (w.graphics.listen) {
        const std::string& listen = *w.graphics.listen;
        set_attr(gfx, "listen", listen);
        auto l = gfx.append_child("listen");
        set_attr(l, "type", "address");
        set_attr(l, "address", listen);
      }
    }
  }
  if (type == "spice") {
    if (!devices.find_child(is_virtio_serial)) {
      auto c = devices.append_child("controller");
      set_attr(c, "type", "virtio-serial");
      set_attr(c, "index", "0");
    }
    if (!devices.find_child(is_spice_channel)) {
      auto ch = devices.append_child("channel");
      set_attr(ch, "type", "spicevmc");
      auto t = ch.append_child("target");
      set_attr(t, "type", "virtio");
      set_attr(t, "name", "com.redhat.spice.0");
    }
  } else {
    while (auto ch = devices.find_child(is_spice_channel)) devices.remove_child(ch);
  }
}

// One video device of the model; "none" is libvirt's <model type='none'/>: no emulated display
// beside a passed-through GPU, and none added by libvirt either.
void ensure_video(pugi::xml_node devices, const Want& w) {
  std::vector<pugi::xml_node> all;
  for (auto v : devices.children("video")) all.push_back(v);
  if (all.size() == 1 && attr(all[0].child("model"), "type") == w.video) return;
  auto video = all.empty() ? devices.append_child("video") : devices.insert_child_before("video", all.front());
  set_attr(video.append_child("model"), "type", w.video);
  if (!all.empty() && all.front().child("address") && w.video != "none")
    video.append_copy(all.front().child("address"));
  for (auto v : all) devices.remove_child(v);
}

void ensure_boot(pugi::xml_node dom, const Want& w) {
  auto os = child_or_add(dom, "os");
  std::vector<std::string> have;
  for (auto b : os.children("boot")) have.push_back(attr(b, "dev"));
  if (have == w.boot) return;
  while (os.remove_child("boot")) {
  }
  for (const auto& b : w.boot) set_attr(os.append_child("boot"), "dev", b);
}

// ---------------------------------------------------------------------------------------------
// The lists, item by item: an item the playbook lists is ensured (the user's own, when the domain
// has it, is adopted: its prior form is kept in the record); an item the agent recorded that the
// playbook no longer lists is given back; the user's other items stay unless the list is exclusive.

Fragment item_prior(pugi::xml_node node) {
  auto doc = std::make_shared<pugi::xml_document>();
  doc->append_child("gptagent:prior").append_copy(node);
  return doc;
}

// Gives an item back: the user's prior form in its place, or nothing where the agent created it.
void give_back(pugi::xml_node node, const Owned& o) {
  if (!node) return;
  if (o.prior && o.prior->first_child().first_child())
    node.parent().insert_copy_before(o.prior->first_child().first_child(), node);
  node.parent().remove_child(node);
}

// Takes an item over: records its prior form the first time.
void own(Record& rec, const std::string& kind, const std::string& id, pugi::xml_node existing) {
  if (rec.find(kind, id)) return;
  rec.owned.push_back({kind, id, existing ? item_prior(existing) : nullptr});
}

struct Items {
  pugi::xml_node devices;
  Record& rec;
  const char* kind;
  std::function<bool(pugi::xml_node)> is;
  std::function<std::string(pugi::xml_node)> id;
  std::vector<std::string> claimed = {};

  pugi::xml_node find(const std::string& key) const {
    for (auto n : devices.children())
      if (is(n) && id(n) == key) return n;
    return {};
  }
  void claim(const std::string& key) { claimed.push_back(key); }
  // A listed item: the domain's node of that identity (claimed), or, for `state: absent`, none
  // after removing it and its record.
  pugi::xml_node listed(const std::string& key, bool absent) {
    auto node = find(key);
    if (!absent) {
      claim(key);
      return node;
    }
    if (node) devices.remove_child(node);
    rec.drop(kind, key);
    return {};
  }
  bool is_claimed(const std::string& key) const {
    return std::find(claimed.begin(), claimed.end(), key) != claimed.end();
  }
  // After the listed items: the recorded ones not listed go back; with exclusive, the rest go.
  void finish(bool exclusive) {
    std::vector<Owned> gone;
    for (const auto& o : rec.owned)
      if (o.kind == kind && !is_claimed(o.id)) gone.push_back(o);
    for (const auto& o : gone) {
      give_back(find(o.id), o);
      rec.drop(kind, o.id);
    }
    if (!exclusive) return;
    std::vector<pugi::xml_node> rest;
    for (auto n : devices.children())
      if (is(n) && !is_claimed(id(n))) rest.push_back(n);
    for (auto n : rest) devices.remove_child(n);
  }
};

// A new child after the last one `like` takes (beside its kind), or last.
pugi::xml_node insert_after_last(pugi::xml_node parent, const char* name,
                                 const std::function<bool(pugi::xml_node)>& like) {
  pugi::xml_node last;
  for (auto n : parent.children())
    if (like(n)) last = n;
  return last ? parent.insert_child_after(name, last) : parent.append_child(name);
}

// A new child before the first one `before` takes (libvirt's own order of device kinds), or last.
pugi::xml_node insert_before(pugi::xml_node parent, const char* name,
                             const std::function<bool(pugi::xml_node)>& before) {
  auto next = parent.find_child(before);
  return next ? parent.insert_child_before(name, next) : parent.append_child(name);
}

bool is_disk(pugi::xml_node d) { return named(d, "disk") && attr(d, "device") == "disk"; }
std::string disk_source(pugi::xml_node d) {
  auto s = d.child("source");
  for (const char* a : {"file", "dev", "name", "volume"})
    if (s.attribute(a)) return attr(s, a);
  return "";
}
bool is_pci_hostdev(pugi::xml_node d) { return named(d, "hostdev") && attr(d, "type") == "pci"; }
std::string hostdev_source(pugi::xml_node d) { return pci_text(d.child("source").child("address")); }
std::string mac_of(pugi::xml_node d) { return lower(attr(d.child("mac"), "address")); }

// A MAC in QEMU's range that stays the same for the same domain and interface: --check and the
// run that follows agree on it, and so does a run on another controller.
std::string stable_mac(const std::string& seed) {
  uint32_t h = 2166136261u;
  for (unsigned char c : seed) h = (h ^ c) * 16777619u;
  char buf[18];
  std::snprintf(buf, sizeof buf, "52:54:00:%02x:%02x:%02x", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
  return buf;
}

// The targets of the domain's disks and CD-ROMs (vda, sdb...).
std::set<std::string> disk_targets(pugi::xml_node devices) {
  std::set<std::string> targets;
  for (auto d : devices.children("disk")) targets.insert(attr(d.child("target"), "dev"));
  return targets;
}

// The first free target of a bus's prefix (vd, sd, hd), taken; empty when a to z are all in use.
std::string take_target(std::set<std::string>& targets, const std::string& prefix) {
  for (char letter = 'a'; letter <= 'z'; ++letter)
    if (targets.insert(prefix + letter).second) return prefix + letter;
  return "";
}

Status merge_disks(pugi::xml_node devices, Want& w, Record& rec) {
  Items disks{devices, rec, "disk", is_disk, disk_source};
  std::set<std::string> targets = disk_targets(devices);
  for (const auto& d : w.disks) {
    auto node = disks.listed(d.path, d.absent);
    if (d.absent) continue;
    if (node && !d.target.empty() && attr(node.child("target"), "dev") != d.target && targets.count(d.target))
      return Error{"disks: target " + d.target + " of " + d.path + " is already another disk's in domain " + w.name};
    if (!node) {
      std::string target = d.target;
      const std::string bus = d.bus.empty() ? "virtio" : d.bus;
      if (target.empty()) {
        const std::string prefix = bus == "virtio" ? "vd" : bus == "ide" ? "hd" : "sd";
        target = take_target(targets, prefix);
        if (target.empty()) return Error{"disks: no free " + prefix + "? target left for " + d.path};
      } else if (!targets.insert(target).second) {
        return Error{"disks: target " + target + " of " + d.path + " is already another disk's in domain " + w.name};
      }
      node = insert_before(devices, "disk", [](pugi::xml_node n) { return !is_disk(n) && !named(n, "emulator"); });
      set_attr(node, "type", "file");
      set_attr(node, "device", "disk");
      auto drv = node.append_child("driver");
      set_attr(drv, "name", "qemu");
      set_attr(drv, "type", d.format.empty() ? (ends_with(d.path, ".qcow2") ? "qcow2" : "raw") : d.format);
      set_attr(node.append_child("source"), "file", d.path);
      auto t = node.append_child("target");
      set_attr(t, "dev", target);
      set_attr(t, "bus", bus);
      own(rec, "disk", d.path, {});
    } else {
      own(rec, "disk", d.path, node);
      if (!d.format.empty()) {
        auto drv = node.child("driver");
        if (!drv) set_attr(drv = node.prepend_child("driver"), "name", "qemu");
        set_attr(drv, "type", d.format);
      }
      if (!d.target.empty()) set_attr(child_or_add(node, "target"), "dev", d.target);
      if (!d.bus.empty()) set_attr(child_or_add(node, "target"), "bus", d.bus);
    }
    if (!w.iothread_pin.empty() && attr(node.child("target"), "bus") == "virtio")
      set_attr(child_or_add(node, "driver"), "iothread", "1");
  }
  disks.finish(w.exclusive.count("disks"));
  return {};
}

bool is_cdrom(pugi::xml_node d) { return named(d, "disk") && attr(d, "device") == "cdrom"; }

// CD-ROMs by their ISO: a new one is a read-only SATA drive on the first free sdX, after the disks.
Status merge_cdroms(pugi::xml_node devices, const Want& w, Record& rec) {
  Items drives{devices, rec, "cdrom", is_cdrom, disk_source};
  std::set<std::string> targets = disk_targets(devices);
  for (const auto& c : w.cdroms) {
    auto node = drives.listed(c.path, c.absent);
    if (c.absent) continue;
    if (node) {
      own(rec, "cdrom", c.path, node);
      continue;
    }
    const std::string target = take_target(targets, "sd");
    if (target.empty()) return Error{"cdrom: no free sd? target left for " + c.path};
    node = insert_before(devices, "disk", [](pugi::xml_node n) { return !named(n, "disk") && !named(n, "emulator"); });
    set_attr(node, "type", "file");
    set_attr(node, "device", "cdrom");
    auto drv = node.append_child("driver");
    set_attr(drv, "name", "qemu");
    set_attr(drv, "type", "raw");
    set_attr(node.append_child("source"), "file", c.path);
    auto t = node.append_child("target");
    set_attr(t, "dev", target);
    set_attr(t, "bus", "sata");
    node.append_child("readonly");
    own(rec, "cdrom", c.path, {});
  }
  drives.finish(w.exclusive.count("cdrom"));
  return {};
}

void merge_interfaces(pugi::xml_node devices, Want& w, Record& rec) {
  Items nics{devices, rec, "interface", [](pugi::xml_node n) { return named(n, "interface"); }, mac_of};
  auto source_of = [](pugi::xml_node n) {
    return attr(n, "type") + ":" + attr(n.child("source"), attr(n, "type") == "bridge" ? "bridge" : "network");
  };
  for (size_t k = 0; k < w.interfaces.size(); ++k) {
    const auto& i = w.interfaces[k];
    pugi::xml_node node;
    if (!i.mac.empty()) {
      node = nics.find(i.mac);
    } else {
      // No MAC given: the agent's own interface on that source first, then the user's.
      for (int pass = 0; pass < 2 && !node; ++pass)
        for (auto n : devices.children("interface"))
          if (source_of(n) == i.type + ":" + i.source && !nics.is_claimed(mac_of(n)) &&
              (pass == 1 || rec.find("interface", mac_of(n)))) {
            node = n;
            break;
          }
    }
    if (i.absent) {
      if (node) {
        rec.drop("interface", mac_of(node));
        devices.remove_child(node);
      }
      continue;
    }
    if (!node) {
      const std::string mac =
          !i.mac.empty() ? i.mac : stable_mac(w.name + "/" + i.type + ":" + i.source + "/" + std::to_string(k));
      node = insert_before(devices, "interface", [](pugi::xml_node n) {
        return !named(n, "disk") && !named(n, "controller") && !named(n, "filesystem") && !named(n, "emulator") &&
               !named(n, "interface");
      });
      set_attr(node, "type", i.type);
      set_attr(node.append_child("mac"), "address", mac);
      set_attr(node.append_child("source"), i.type.c_str(), i.source);
      set_attr(node.append_child("model"), "type", i.model.empty() ? "virtio" : i.model);
      own(rec, "interface", mac, {});
      nics.claim(mac);
      continue;
    }
    if (mac_of(node).empty())
      set_attr(child_or_add(node, "mac"), "address", stable_mac(w.name + "/" + std::to_string(k)));
    own(rec, "interface", mac_of(node), node);
    nics.claim(mac_of(node));
    if (source_of(node) != i.type + ":" + i.source) {
      set_attr(node, "type", i.type);
      auto src = node.child("source");
      if (src) node.remove_child(src);
      src = node.child("mac") ? node.insert_child_after("source", node.child("mac")) : node.prepend_child("source");
      set_attr(src, i.type.c_str(), i.source);
    }
    if (!i.model.empty()) set_attr(child_or_add(node, "model"), "type", i.model);
  }
  nics.finish(w.exclusive.count("interfaces"));
}

// A host PCI function as a vfio hostdev at a guest address.
pugi::xml_node make_hostdev(pugi::xml_node devices, const std::string& addr, int bus, int slot, int function,
                            bool multifunction) {
  auto hd = insert_after_last(devices, "hostdev", [](pugi::xml_node n) { return named(n, "hostdev"); });
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
  set_attr(guest, "slot", hex(slot, 2));
  set_attr(guest, "function", hex(function, 1));
  if (multifunction) set_attr(guest, "multifunction", "on");
  return hd;
}

bool is_pci_controller(pugi::xml_node n) { return named(n, "controller") && attr(n, "type") == "pci"; }

// The guest PCI addresses in use: bus, slot, function.
std::set<std::tuple<unsigned, unsigned, unsigned>> used_addresses(pugi::xml_node devices) {
  std::set<std::tuple<unsigned, unsigned, unsigned>> used;
  for (auto d : devices.children()) {
    auto a = d.child("address");
    if (attr(a, "type") == "pci")
      used.insert({a.attribute("bus").as_uint(), a.attribute("slot").as_uint(), a.attribute("function").as_uint()});
  }
  return used;
}

bool is_i440fx(const std::string& machine) { return machine.find("i440fx") != std::string::npos || machine == "pc"; }

// GPUs and USB controllers: each a group of host functions that goes to the guest together.
Status merge_hostdevs(pugi::xml_node dom, pugi::xml_node devices, Want& w, Record& rec) {
  Items hostdevs{devices, rec, "hostdev", is_pci_hostdev, hostdev_source};
  std::vector<std::vector<std::string>> groups;
  for (const auto& g : w.gpus) groups.push_back(g.functions);
  for (const auto& u : w.usb) groups.push_back({u});
  // A new bus after every bus the domain names, as a controller or in a device's address (index 0
  // is the root bus itself).
  int next_index = 1;
  for (auto c : devices.children("controller"))
    if (is_pci_controller(c)) next_index = std::max(next_index, c.attribute("index").as_int() + 1);
  for (const auto& [bus, slot, function] : used_addresses(devices))
    next_index = std::max(next_index, static_cast<int>(bus) + 1);
  // On a new domain the ports libvirt adds for the other devices come first (one each for disks,
  // NICs, the virtio-serial and USB controllers and the balloon): no gap of empty ports between.
  if (w.creating) next_index = std::max(next_index, 1 + static_cast<int>(w.disks.size() + w.interfaces.size()) + 3);
  for (const auto& functions : groups) {
    std::vector<std::string> missing;
    pugi::xml_node present;  // a function of the group the domain has
    for (const auto& f : functions) {
      hostdevs.claim(f);
      if (auto n = hostdevs.find(f)) {
        own(rec, "hostdev", f, n);
        if (!present || f.back() == '0') present = n;
      } else {
        missing.push_back(f);
      }
    }
    if (missing.empty()) continue;
    const std::string machine = attr(dom.child("os").child("type"), "machine");
    if (is_i440fx(machine))
      return Error{
          "domain " + w.name + " uses the i440FX chipset (" + machine + "), which has no PCIe root port for " +
          missing.front() +
          ": gptagent does not move an existing domain to q35 (the guest would see a new chipset, and Windows its "
          "devices "
          "as new hardware); define a new domain with machine: q35 and the same disks instead. Nothing was changed"};
    // Beside a function the domain already has, on its slot, when those addresses are free;
    // otherwise behind a new root port of their own.
    auto used = used_addresses(devices);
    int bus = -1, slot = 0;
    if (present && attr(present.child("address"), "type") == "pci") {
      auto a = present.child("address");
      bus = a.attribute("bus").as_int();
      slot = a.attribute("slot").as_int();
      for (const auto& f : missing)
        if (used.count(
                {static_cast<unsigned>(bus), static_cast<unsigned>(slot), static_cast<unsigned>(f.back() - '0')}))
          bus = -1;
      if (bus >= 0 && functions.size() > 1) {
        for (const auto& f : functions)
          if (auto n = hostdevs.find(f); n && f.back() == '0') set_attr(n.child("address"), "multifunction", "on");
      }
    }
    if (bus < 0) {
      bus = next_index++;
      slot = 0;
      auto port = insert_after_last(devices, "controller", is_pci_controller);
      set_attr(port, "type", "pci");
      set_attr(port, "index", std::to_string(bus));
      set_attr(port, "model", "pcie-root-port");
      own(rec, "port", std::to_string(bus), {});
    }
    const bool whole = present == pugi::xml_node();
    for (const auto& f : missing) {
      const int function = f.back() - '0';
      make_hostdev(devices, f, bus, slot, function, whole && function == 0 && functions.size() > 1);
      own(rec, "hostdev", f, {});
    }
  }
  hostdevs.finish(w.exclusive.count("hostdevs"));
  // The root ports the agent added that no device sits behind any more.
  std::vector<Owned> ports;
  for (const auto& o : rec.owned)
    if (o.kind == "port") ports.push_back(o);
  auto used = used_addresses(devices);
  for (const auto& o : ports) {
    const unsigned index = static_cast<unsigned>(std::stoi(o.id));
    if (std::any_of(used.begin(), used.end(), [&](const auto& a) { return std::get<0>(a) == index; })) continue;
    for (auto c : devices.children("controller"))
      if (is_pci_controller(c) && attr(c, "index") == o.id && attr(c, "model") == "pcie-root-port") {
        devices.remove_child(c);
        break;
      }
    rec.drop("port", o.id);
  }
  return {};
}

// A GPU's ROM file: on its display function's hostdev.
void merge_roms(pugi::xml_node devices, const Want& w, Record& rec) {
  Items hostdevs{devices, rec, "hostdev", is_pci_hostdev, hostdev_source};
  for (const auto& [function, rom] : w.roms) {
    auto hd = hostdevs.find(function);
    if (!hd) continue;
    if (!rec.find("rom", function))
      rec.owned.push_back({"rom", function, hd.child("rom") ? item_prior(hd.child("rom")) : nullptr});
    auto r = hd.child("rom");
    if (!r) r = hd.child("address") ? hd.insert_child_before("rom", hd.child("address")) : hd.append_child("rom");
    set_attr(r, "bar", rom.second ? "on" : "off");
    set_attr(r, "file", rom.first);
  }
  std::vector<Owned> gone;
  for (const auto& o : rec.owned)
    if (o.kind == "rom" && !w.roms.count(o.id)) gone.push_back(o);
  for (const auto& o : gone) {
    // The user's ROM back where the agent's was (or before the address), or none.
    if (auto hd = hostdevs.find(o.id)) {
      hd.remove_child(hd.child("rom"));
      if (auto prior = o.prior ? o.prior->first_child().first_child() : pugi::xml_node())
        hd.child("address") ? hd.insert_copy_before(prior, hd.child("address")) : hd.append_copy(prior);
    }
    rec.drop("rom", o.id);
  }
}

// Keyboard and mouse handed over whole (evdev); the keyboard's grab takes every input device
// and toggles with both Ctrl keys, as libvirt defines it.
void merge_evdev(pugi::xml_node devices, const Want& w, Record& rec) {
  Items inputs{devices, rec, "evdev", is_evdev, [](pugi::xml_node n) { return attr(n.child("source"), "dev"); }};
  for (const auto& path : w.evdev) {
    inputs.claim(path);
    auto in = inputs.find(path);
    if (in) {
      own(rec, "evdev", path, in);
      if (rec.find("evdev", path)->prior) continue;  // the user's: as they set it
    } else {
      in = insert_after_last(devices, "input", [](pugi::xml_node n) { return named(n, "input"); });
      set_attr(in, "type", "evdev");
      set_attr(in.append_child("source"), "dev", path);
      own(rec, "evdev", path, {});
    }
    if (ends_with(path, "-event-kbd")) {
      set_attr(in.child("source"), "grab", "all");
      set_attr(in.child("source"), "repeat", "on");
    }
  }
  inputs.finish(w.exclusive.count("evdev"));
}

// Everything the playbook declares, merged into `doc` (the current inactive XML, or an empty one
// for a new domain), with the record of what the agent owns updated. Fails before any change
// where the domain cannot take what is asked.
Status merge(pugi::xml_document& doc, Want& w) {
  auto dom = child_or_add(doc, "domain");
  Record rec = read_record(dom);
  // Parts given back first, then the priors of newly declared parts, before any part is written
  // (two parts may share a slot: hyperv and hyperv_vendor_id both hold the vendor_id).
  for (const auto& key : kParts)
    if (auto o = rec.find("part", key); o && !w.declared.count(key)) {
      restore(dom, part_slots(key), o->prior);
      rec.drop("part", key);
    }
  for (const auto& key : kParts) {
    if (!w.declared.count(key) || rec.find("part", key)) continue;
    Fragment prior = w.creating ? nullptr : capture(dom, part_slots(key));
    if (w.creating && key == "secure_boot" && !w.plain_loader.empty()) {
      // A new domain starts from the default firmware: without secure_boot it goes back to that
      // (not to no loader at all, which would leave a UEFI guest unbootable).
      pugi::xml_document start;
      ensure_firmware(start.append_child("domain"), w.plain_loader, w.plain_vars, w.nvram, false);
      prior = capture(start.child("domain"), part_slots(key));
    }
    bool empty = true;
    if (prior)
      for (auto s : prior->first_child().children()) empty = empty && !s.first_child() && !s.attribute("value");
    rec.owned.push_back({"part", key, empty ? nullptr : prior});
  }

  // With NUMA cells libvirt takes the domain's memory from their sum: another size would be drift
  // on every run.
  if (auto numa = dom.child("cpu").child("numa"); numa.child("cell")) {
    uint64_t kib = 0, cells = 0;
    for (auto c : numa.children("cell")) {
      kib += kib_of(c, "KiB", "memory").value_or(0);
      ++cells;
    }
    if (kib != w.memory_kib)
      return Error{"memory: domain " + w.name + " sets its memory per NUMA node (" + std::to_string(cells) +
                   " <numa> cells, " + size_text(kib * 1024) +
                   " in all), and libvirt takes that over <memory>: give memory: " + std::to_string(kib / 1024) +
                   "M, or change the cells in the domain"};
  }
  if (w.manages("type")) set_attr(dom, "type", w.type);
  if (w.creating) set_text(child_or_add(dom, "name"), w.name);
  ensure_memory(dom, w);
  if (w.manages("vcpus")) ensure_vcpus(dom, w);
  auto os = child_or_add(dom, "os");
  if (w.creating) {
    auto type = child_or_add(os, "type");
    set_attr(type, "arch", "x86_64");
    set_text(type, "hvm");
  }
  if (w.manages("machine")) {
    // A chipset is not changed under a guest: libvirt would refuse the controllers it has, and the
    // guest would see all its devices as new.
    const std::string machine = attr(os.child("type"), "machine");
    if (!w.creating && is_i440fx(machine) && !is_i440fx(w.machine))
      return Error{
          "machine: domain " + w.name + " uses the i440FX chipset (" + machine +
          "), and gptagent does not move an existing domain to " + w.machine +
          " (the guest would see a new chipset, and Windows its devices as new hardware); define a new domain with "
          "machine: q35 and the same disks instead. Nothing was changed"};
    set_attr(child_or_add(os, "type"), "machine", w.machine);
  }
  if (w.manages("firmware") || w.declared.count("secure_boot")) {
    // The nvram stays where it is: the VM's UEFI boot entries and keys live in it.
    if (!w.declared.count("nvram") && os.child("nvram") && !std::string_view(os.child("nvram").text().get()).empty())
      w.nvram = std::string(trim(os.child("nvram").text().get()));
    ensure_firmware(dom, w.loader, w.vars, w.nvram,
                    w.declared.count("secure_boot") ? std::optional<bool>(w.secure_boot) : std::nullopt);
  }
  if (w.creating) {
    auto features = child_or_add(dom, "features");
    child_or_add(features, "acpi");
    child_or_add(features, "apic");
  }
  if (w.declared.count("secure_boot") && w.secure_boot) {
    // Secure Boot's variables are guarded by SMM, which only q35 has; libvirt refuses it elsewhere.
    const std::string machine = attr(os.child("type"), "machine");
    if (is_i440fx(machine))
      return Error{"secure_boot: domain " + w.name + " uses the i440FX chipset (" + machine +
                   "), and Secure Boot needs q35 (SMM guards its keys): define a new domain with machine: q35 and the "
                   "same disks "
                   "instead. Nothing was changed"};
    set_attr(child_or_add(child_or_add(dom, "features"), "smm"), "state", "on");
  }
  if (w.manages("hide_kvm")) {
    auto features = child_or_add(dom, "features");
    if (w.hide_kvm) {
      set_attr(child_or_add(child_or_add(features, "kvm"), "hidden"), "state", "on");
    } else if (auto kvm = features.child("kvm")) {
      kvm.remove_child("hidden");
      if (!kvm.first_child()) features.remove_child(kvm);
    }
  }
  if (w.manages("cpu_mode")) {
    auto cpu = child_or_add(dom, "cpu");
    set_attr(cpu, "mode", w.cpu_mode);
    set_attr(cpu, "check", w.cpu_mode == "host-passthrough" ? "partial" : "none");
  }
  if (w.declared.count("cpu")) ensure_topology(dom, w);
  if (w.declared.count("pin")) ensure_pins(dom, w);
  if (w.declared.count("hugepages")) ensure_hugepages(dom, w);

  auto devices = child_or_add(dom, "devices");
  if (auto s = merge_disks(devices, w, rec); !s) return s;
  if (auto s = merge_cdroms(devices, w, rec); !s) return s;
  merge_interfaces(devices, w, rec);
  if (auto s = merge_hostdevs(dom, devices, w, rec); !s) return s;
  merge_roms(devices, w, rec);
  merge_evdev(devices, w, rec);
  // hyperv after the hostdevs: the vendor_id it may add depends on the GPUs.
  if (w.manages("hyperv")) ensure_hyperv(dom, w);
  if (w.declared.count("hyperv_vendor_id")) ensure_vendor_id(dom, w);
  if (w.declared.count("looking_glass")) ensure_looking_glass(devices, w);
  if (w.manages("graphics")) ensure_graphics(devices, w);
  if (w.manages("video")) ensure_video(devices, w);
  if (w.declared.count("tpm")) ensure_tpm(devices, w);
  if (w.creating && !devices.child("console")) set_attr(devices.append_child("console"), "type", "pty");
  if (w.manages("boot")) {
    // libvirt refuses <os><boot> beside per-device <boot order>: such a domain orders itself.
    std::vector<std::string> ordered;
    for (auto d : devices.children())
      if (d.child("boot")) {
        std::string what = attr(d.child("target"), "dev");
        if (what.empty()) what = attr(d.child("mac"), "address");
        if (what.empty() && is_pci_hostdev(d)) what = hostdev_source(d);
        ordered.push_back(std::string(d.name()) + (what.empty() ? "" : " " + what) + " (order " +
                          attr(d.child("boot"), "order") + ")");
      }
    if (ordered.empty()) {
      ensure_boot(dom, w);
    } else if (w.declared.count("boot")) {
      return Error{"boot: domain " + w.name + " orders its devices itself (" + join(ordered, ", ") +
                   "), and libvirt refuses <os><boot> beside that: leave boot: out, or set the order in the domain"};
    }
  }
  write_record(dom, rec);
  return {};
}

// ---------------------------------------------------------------------------------------------

// The tuning keys into `w`, checked against the host.
Status tuning(Context& ctx, const Args& args, Want& w) {
  // ROMs: on a GPU's display function; `gpu` may be left out when there is one GPU.
  for (const auto& r : args.rom.value_or(std::vector<Rom>{})) {
    std::string gpu;
    if (r.gpu) {
      gpu = *parse_pci_address(*r.gpu);
    } else if (w.gpus.size() == 1) {
      gpu = w.gpus[0].address;
    } else {
      return Error{"rom: say which GPU the ROM is for (gpu: ADDRESS): the domain has " + std::to_string(w.gpus.size()) +
                   " GPUs"};
    }
    auto g = std::find_if(w.gpus.begin(), w.gpus.end(), [&](const Gpu& x) {
      return std::find(x.functions.begin(), x.functions.end(), gpu) != x.functions.end();
    });
    if (g == w.gpus.end()) return Error{"rom: " + gpu + " is not one of the domain's GPUs"};
    if (auto ok = vm::check_rom(ctx.root, r.file, vm::hypervisor_user(ctx.root, ctx.facts)); !ok)
      return Error{ok.error()};
    w.roms[g->functions.front()] = {r.file, r.bar};
  }
  if (args.cpu) {
    w.sockets = static_cast<int>(args.cpu->sockets);
    w.cores = static_cast<int>(args.cpu->cores);
    w.threads = static_cast<int>(args.cpu->threads);
  }
  if (args.pin) {
    const Pin& pin = *args.pin;
    w.vcpu_pins = *vm::parse_cpuset(pin.vcpus);
    std::vector<int> emulator, io;
    if (pin.emulator) emulator = *vm::parse_cpuset(*pin.emulator);
    if (pin.iothreads) io = *vm::parse_cpuset(*pin.iothreads);
    if (!emulator.empty()) w.emulator_pin = vm::format_cpuset(emulator);
    if (!io.empty()) w.iothread_pin = vm::format_cpuset(io);
    auto host = vm::read_host_cpus(ctx.root);
    if (!host) return Error{"pin: " + host.error()};
    auto checked = vm::check_pinning(*host, w.vcpu_pins, w.threads ? w.threads : 1, emulator, io);
    if (checked.error) return Error{*checked.error};
    w.warnings.insert(w.warnings.end(), checked.warnings.begin(), checked.warnings.end());
  }
  if (args.hugepages) {
    const json& h = *args.hugepages;
    std::string size = "auto";
    if (h.is_object())
      size = h.value("size", std::string("auto"));
    else if (h.is_string() && parse_size(h.get<std::string>()).ok())
      size = h.get<std::string>();
    const bool on = h.is_object() || (h.is_boolean() ? h.get<bool>()
                                                     : (size != "auto" || lower(h.get<std::string>()) == "true" ||
                                                        lower(h.get<std::string>()) == "yes"));
    if (on) w.hugepage_kib = size == "auto" ? 0 : *parse_size(size) / 1024;
  }
  if (args.looking_glass) {
    auto [width, height] = *resolution(args.looking_glass->resolution);
    w.looking_glass_mib = vm::looking_glass_mib(width, height);
  }
  w.hyperv = args.hyperv.value_or(false);
  const bool nvidia = std::any_of(w.gpus.begin(), w.gpus.end(), [](const Gpu& g) { return g.id.starts_with("10de:"); });
  if (w.hyperv && nvidia && !w.hide_kvm)
    w.warnings.push_back(
        "hyperv: NVIDIA drivers older than 465 stop with code 43 when they see a hypervisor: "
        "hide_kvm: false shows KVM to them");
  if (!w.hyperv_vendor_id.empty() && !w.hide_kvm)
    w.warnings.push_back("hyperv_vendor_id hides the hypervisor from NVIDIA drivers only together with hide_kvm: true");
  for (const auto& path : args.evdev.value_or(std::vector<std::string>{})) {
    if (!path_exists(ctx.root, path))
      return Error{"evdev: " + path + " does not exist (list them: ls /dev/input/by-id/)"};
    w.evdev.push_back(path);
  }
  if (args.usb_controllers) {
    std::vector<std::string> gpu_functions;
    for (const auto& g : w.gpus) gpu_functions.insert(gpu_functions.end(), g.functions.begin(), g.functions.end());
    auto usb = vm::select_usb_controllers(ctx.facts, *args.usb_controllers, args.force, gpu_functions);
    if (!usb) return Error{usb.error()};
    w.usb = *usb;
  }
  return {};
}

// What the playbook asks for. `current` is the domain as libvirt has it (empty: none yet): the keys
// the playbook leaves out are its own, and only a new domain gets their defaults.
Expected<Want> want_from(Context& ctx, const Args& args, const Offer& offer, const std::string& uri,
                         const pugi::xml_document& current) {
  Want w;
  w.creating = !current.child("domain");
  const json given = decl().dump(args);  // the keys that have a value: what the playbook declares
  for (auto it = given.begin(); it != given.end(); ++it) w.declared.insert(it.key());
  if (w.declared.count("nvram")) w.declared.insert("firmware");
  if (w.declared.count("gpus") || w.declared.count("usb_controllers")) w.declared.insert("hostdevs");
  w.name = args.name;
  if (w.manages("type")) {
    const std::string type = args.type.value_or("auto");
    auto offered = [&](const std::string& t) {
      return std::find(offer.types.begin(), offer.types.end(), t) != offer.types.end();
    };
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
  } else {
    w.type = attr(current.child("domain"), "type");
  }
  if (w.manages("machine")) {
    auto machine = choose_machine(args.machine.value_or("auto"), offer, uri);
    if (!machine) return Error{machine.error()};
    w.machine = *machine;
    if (is_i440fx(w.machine))
      return Error{"machine: " + w.machine +
                   " is the i440FX chipset, which has no PCIe for a GPU: use q35 (pc-q35-4.2 or newer)"};
    // The walkthrough's floor: older q35 machine types lack what GPU guests rely on.
    if (w.machine.starts_with("pc-q35-") && machine_version(w.machine) < std::vector<int>{4, 2})
      return Error{"machine: " + w.machine +
                   " is older than pc-q35-4.2, the oldest q35 machine type for GPU passthrough"};
  }
  // Without secure_boot the firmware stays of the kind the domain has: its own Secure Boot loader
  // is not swapped for a plain one when only firmware: or nvram: is declared (one the agent set
  // for secure_boot goes with that key).
  if (args.secure_boot)
    w.secure_boot = *args.secure_boot;
  else if (!read_record(current.child("domain")).find("part", "secure_boot"))
    w.secure_boot = attr(current.child("domain").child("os").child("loader"), "secure") == "yes";
  if (w.manages("firmware") || w.declared.count("secure_boot")) {
    const Firmware fw_arg = args.firmware.value_or(Firmware{});
    auto fw = choose_firmware(ctx.root, fw_arg, w.secure_boot);
    if (!fw && w.secure_boot && !args.secure_boot) fw = choose_firmware(ctx.root, fw_arg, false);
    if (!fw) return Error{fw.error()};
    w.loader = fw->first;
    w.vars = fw->second;
    w.nvram = args.nvram.value_or("/var/lib/libvirt/qemu/nvram/" + w.name + "_VARS.fd");
    if (w.creating && w.secure_boot && !fw_arg.code)
      if (auto plain = choose_firmware(ctx.root, fw_arg, false)) std::tie(w.plain_loader, w.plain_vars) = *plain;
    if (args.secure_boot && w.secure_boot && !fw_arg.code && !keys_enrolled(w.vars))
      w.warnings.push_back(
          "secure_boot: " + w.vars +
          " has no Secure Boot keys enrolled (Arch ships none): the guest starts in "
          "setup mode, which Windows 11 setup accepts; Secure Boot is enforced once keys are enrolled");
  }
  if (args.tpm.value_or(false)) {
    // libvirt starts swtpm for the domain and makes its state with swtpm_setup (swtpm-tools).
    // In check mode (or under --root) an earlier packages task may be about to install them.
    const bool coming = ctx.provided.count("package:swtpm") || ctx.provided.count("package:swtpm-tools");
    for (const char* bin : {"/usr/bin/swtpm", "/usr/bin/swtpm_setup"})
      if (!path_exists(ctx.root, bin) && !coming)
        return Error{std::string("tpm: the emulated TPM needs swtpm, and this host has no ") + bin +
                     ": install swtpm and swtpm-tools (the packages module's set tpm). Nothing was changed"};
    w.tpm = true;
  }
  for (const auto& c : args.cdrom.value_or(std::vector<json>{})) {
    CdromWant drive;
    drive.path = c.is_string() ? c.get<std::string>() : c["path"].get<std::string>();
    drive.absent = c.is_object() && c.value("state", "present") == "absent";
    if (drive.path.empty() || drive.path[0] != '/') return Error{"cdrom: '" + drive.path + "' is not an absolute path"};
    if (!drive.absent && !path_exists(ctx.root, drive.path))
      return Error{"cdrom: " + drive.path +
                   " does not exist: download the ISO there first, or correct the path. Nothing was changed"};
    w.cdroms.push_back(drive);
  }
  w.memory_kib = size_kib(args.memory);
  w.vcpus = static_cast<int>(args.vcpus.value_or(2));
  std::string mode = args.cpu_mode.value_or("auto");
  if (mode == "auto") mode = w.type == "qemu" ? "maximum" : "host-passthrough";  // TCG has no host CPU to pass
  w.cpu_mode = mode;
  w.hide_kvm = args.hide_kvm.value_or(true);
  w.hyperv_vendor_id = args.hyperv_vendor_id.value_or("");
  // A new domain with an installation ISO boots from the disk first: a blank disk falls through to
  // the ISO, and once the system is installed the disk boots with the ISO still inserted.
  const bool installs = std::any_of(w.cdroms.begin(), w.cdroms.end(), [](const CdromWant& c) { return !c.absent; });
  w.boot = args.boot.value_or(installs ? std::vector<std::string>{"hd", "cdrom"} : std::vector<std::string>{"hd"});
  if (!args.gpus.is_null()) {
    auto gpus = select_gpus(ctx.facts, args.gpus, args.force);
    if (!gpus) return Error{gpus.error()};
    w.gpus = *gpus;
  }
  for (const auto& d : args.disks.value_or(std::vector<json>{})) {
    DiskWant disk;
    disk.path = d.is_string() ? d.get<std::string>() : d["path"].get<std::string>();
    if (disk.path.empty() || disk.path[0] != '/') return Error{"disks: '" + disk.path + "' is not an absolute path"};
    if (d.is_object()) {
      disk.format = d.value("format", "");
      disk.bus = d.value("bus", "");
      disk.target = d.value("target", "");
      disk.absent = d.value("state", "present") == "absent";
    }
    w.disks.push_back(disk);
  }
  for (const auto& i : args.interfaces.value_or(std::vector<Interface>{})) {
    NicWant nic;
    nic.type = i.bridge ? "bridge" : "network";
    nic.source = i.bridge ? *i.bridge : i.network.value_or("");
    nic.mac = lower(i.mac.value_or(""));
    nic.model = i.model.value_or("");
    nic.absent = i.state == "absent";
    w.interfaces.push_back(nic);
  }
  w.graphics = args.graphics.value_or(Graphics{});
  w.video = args.video.value_or("vga");
  const json exclusive = args.exclusive.value_or(false);
  for (const char* list : {"disks", "cdrom", "interfaces", "hostdevs", "evdev"})
    if ((exclusive.is_boolean() && exclusive.get<bool>() && w.declared.count(list)) ||
        (exclusive.is_array() && std::find(exclusive.begin(), exclusive.end(), list) != exclusive.end()))
      w.exclusive.insert(list);
  if (auto t = tuning(ctx, args, w); !t) return Error{t.error()};
  return w;
}

// The nvram file, from the template, when the agent sets the domain's nvram and the file does not
// exist yet (never replaced: the VM's UEFI settings live in it).
Expected<bool> ensure_nvram(Context& ctx, const Want& w, bool apply) {
  if ((!w.manages("firmware") && !w.declared.count("secure_boot")) || path_exists(ctx.root, w.nvram)) return false;
  if (!apply) return true;
  auto vars = read_file(ctx.root, w.vars, 64u << 20);
  if (!vars) return Error{"cannot read the firmware variables template: " + vars.error()};
  WriteOptions wo;
  wo.create_mode = 0600;
  auto written = write_file_atomic(ctx.root, w.nvram, *vars, wo);
  if (!written) return Error{"cannot create the nvram file: " + written.error()};
  return true;
}

// Looking Glass's tmpfiles.d entry. The file the client's documentation tells users to write has
// this very name: theirs is merged (their other lines kept, the /dev/shm/looking-glass line made to
// give the declared user and group, and said), ours is written whole.
struct TmpfilesMerge {
  std::string text, note;
};
TmpfilesMerge looking_glass_tmpfiles(const std::string& text, const std::string& domain, const std::string& user,
                                     const std::string& group) {
  const std::string header = "# Managed by gptagent: Looking Glass's shared memory";
  const std::string line = "f /dev/shm/looking-glass 0660 " + user + " " + group + " -";
  if (text.empty() || text.starts_with(header))
    return {header + " for domain " + domain + ", readable by its client\n" + line + "\n", ""};
  std::string out, note;
  bool found = false;
  int number = 0;
  for (std::string_view l : lines(text)) {
    ++number;
    const auto w = words(l, true);
    if (w.size() >= 2 && w[1] == "/dev/shm/looking-glass") {
      const bool same = w.size() >= 5 && w[0] == "f" && w[2] == "0660" && w[3] == user && w[4] == group;
      if (found) {
        note += (note.empty() ? "" : "; ") + std::string("dropped the duplicate line ") + std::to_string(number) +
                " '" + std::string(l) + "'";
        continue;
      }
      found = true;
      if (!same) {
        note += (note.empty() ? "" : "; ") + std::string("line ") + std::to_string(number) + " '" + std::string(l) +
                "' now gives " + user + ":" + group;
        out += line + "\n";
        continue;
      }
    }
    out += std::string(l) + "\n";
  }
  if (!found) {
    out += line + "\n";
    note = "added '" + line + "' to the user's file";
  }
  if (note.empty()) return {text, ""};  // theirs already says it: byte for byte as it is
  return {out, note};
}

// Hugepages for the domain: the memory in whole pages; enough of them free when the domain is
// (re)defined or started while not running; with reserve, vm.nr_hugepages raised by what is
// missing, persisted in sysctl.d and applied now.
Status hugepages(Context& ctx, const Args& args, Want& w, bool needs_free, FileChanges& files,
                 std::vector<std::pair<Command, std::string>>& commands) {
  auto pool = vm::read_hugepages(ctx.root, *w.hugepage_kib);
  if (!pool) return Error{pool.error()};
  const std::string page = size_text(pool->size_kib * 1024);
  if (w.memory_kib % pool->size_kib)
    return Error{"hugepages: memory " + size_text(w.memory_kib * 1024) + " is not a whole number of " + page +
                 " pages"};
  const uint64_t need = w.memory_kib / pool->size_kib;
  const uint64_t missing = needs_free && pool->free < need ? need - pool->free : 0;
  const json& h = *args.hugepages;
  const bool reserve = h.is_object() && h.value("reserve", false);
  if (!reserve) {
    if (missing)
      return Error{"hugepages: the domain needs " + std::to_string(need) + " pages of " + page + ", the host has " +
                   std::to_string(pool->free) + " free (of " + std::to_string(pool->total) +
                   "): " + std::to_string(missing) +
                   " missing; reserve them (hugepages: {reserve: true}, or hugepages=N on the kernel command line)"};
    return {};
  }
  if (!pool->default_size)
    return Error{"hugepages: reserve: true sets vm.nr_hugepages, which counts pages of the default size only, not " +
                 page + " pages: reserve those at boot (kernel_cmdline: hugepagesz=" +
                 (pool->size_kib % (1024 * 1024) ? std::to_string(pool->size_kib / 1024) + "M"
                                                 : std::to_string(pool->size_kib / 1024 / 1024) + "G") +
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
  files.write(
      conf, *text,
      "# Managed by gptagent: hugepages for libvirt domains (" + page + " pages)\nvm.nr_hugepages = " + value + "\n");
  commands.push_back(
      {Command{{"sysctl", "-w", "vm.nr_hugepages=" + value}}, "reserved " + value + " hugepages of " + page});
  return {};
}

// Each interface's bridge exists on the host and each network is defined and active: a domain
// defined on a missing one would not start. In check mode a network that a libvirt_network task
// before this one would start counts as there.
Status check_interfaces(const Context& ctx, const virt::Connection& conn, const std::vector<NicWant>& nics,
                        bool apply) {
  for (const auto& nic : nics) {
    if (nic.absent) continue;
    if (nic.type == "bridge") {
      // A remote hypervisor's bridges are not this host's to look at.
      if (conn.local() && !host_bridge_exists(ctx.root, nic.source))
        return Error{"bridge " + nic.source + " does not exist on this host (no /sys/class/net/" + nic.source +
                     "/bridge): create it (netplan, NetworkManager or ifupdown) or use `network: default`"};
      continue;
    }
    if (!apply && ctx.provided.count(provided_network(conn.uri(), nic.source))) continue;
    auto net = conn.lookup_network(nic.source);
    if (!net) return Error{net.error()};
    if (!*net)
      return Error{"network " + nic.source + " is not defined at " + conn.uri() +
                   ": define it with a libvirt_network task before this one, or use a bridge"};
    auto active = (*net)->active();
    if (!active) return Error{active.error()};
    if (!*active)
      return Error{"network " + nic.source + " is defined but not active: start it (virsh net-start " + nic.source +
                   "; net-autostart for boots), or add a libvirt_network task"};
  }
  return {};
}

// An existing nvram file is never remade (the guest's boot entries and keys live in it): when the
// domain's variables template changes under it (secure_boot turned on or off, another firmware),
// the file keeps the variables of the old one, and the user is told how to start afresh.
std::optional<std::string> kept_nvram(const Context& ctx, const pugi::xml_document& current,
                                      const pugi::xml_document& desired, const std::string& name) {
  auto was = current.child("domain").child("os").child("nvram"),
       now = desired.child("domain").child("os").child("nvram");
  const std::string path(trim(now.text().get()));
  if (!was || attr(was, "template") == attr(now, "template") || path.empty() || !path_exists(ctx.root, path))
    return std::nullopt;
  const std::string from = attr(was, "template").empty() ? "" : " (made from " + attr(was, "template") + ")";
  return "nvram: " + path + " is kept" + from +
         ": its variables, Secure Boot keys included, are not re-enrolled from " + attr(now, "template") +
         "; to start it afresh from that template (its boot entries are lost): virsh start " + name + " --reset-nvram";
}

// state: absent — powered off first when it runs; its nvram kept only with keep_nvram.
Expected<Result> converge_absent(std::optional<virt::Domain>& dom, const Args& args, bool apply) {
  const std::string& name = args.name;
  if (!dom) return Result::ok("domain " + name + " is absent");
  Result r = Result::changed("undefined domain " + name);
  auto st = dom->state();
  if (!st) return Error{st.error()};
  if (*st != virt::State::shutoff) r.msg = "powered off and undefined domain " + name;
  if (apply) {
    if (*st != virt::State::shutoff)
      if (auto s = dom->destroy(); !s) return Error{s.error()};
    if (auto s = dom->undefine(args.keep_nvram); !s) return Error{s.error()};
  }
  return r;
}

// What the host must provide besides the definition (hugepages, Looking Glass's shared file): the
// files to write and the commands to run once they changed.
struct HostSide {
  FileChanges files;
  std::vector<std::pair<Command, std::string>> commands;
};

Status plan_host_side(Context& ctx, const Args& args, Want& want, virt::State run, bool redefine, HostSide& host) {
  if (want.hugepage_kib) {
    const bool starts = args.state == "running" && run != virt::State::running;
    if (auto hp =
            hugepages(ctx, args, want, run != virt::State::running && (redefine || starts), host.files, host.commands);
        !hp)
      return hp;
  }
  if (args.looking_glass) {
    const std::string &user = args.looking_glass->user, &group = args.looking_glass->group;
    if (auto ok = vm::check_owner(ctx.root, user, group); !ok) return Error{"looking_glass: " + ok.error()};
    const std::string conf = "/etc/tmpfiles.d/10-looking-glass.conf";
    auto text = read_file_if_exists(ctx.root, conf);
    if (!text) return Error{"looking_glass: " + text.error()};
    auto merged = looking_glass_tmpfiles(text->value_or(""), args.name, user, group);
    host.files.write(conf, *text, merged.text);
    if (!merged.note.empty()) want.warnings.push_back(conf + ": " + merged.note);
    host.commands.push_back({Command{{"systemd-tmpfiles", "--create", conf}}, "created /dev/shm/looking-glass"});
  }
  return {};
}

// Writes the host's files and runs what they need; after a hugepage reservation, warns when the
// kernel could not find the pages free.
Status apply_host_side(Context& ctx, HostSide& host, Want& want, bool apply, Result& r,
                       std::vector<std::string>& done) {
  if (host.files.empty()) return {};
  r.diff += host.files.diff();
  for (const auto& p : host.files.paths()) done.push_back("wrote " + p);
  if (apply)
    if (auto s = host.files.apply(r.data); !s) return s;
  for (const auto& [cmd, what] : host.commands) {
    Result ran = ctx.run_system(cmd, apply, what);
    r.commands.insert(r.commands.end(), ran.commands.begin(), ran.commands.end());
    if (ran.status == Outcome::failed) return Error{ran.msg};
    if (!ran.msg.empty()) done.push_back(ran.msg);
  }
  if (apply && want.hugepage_kib)
    if (auto pool = vm::read_hugepages(ctx.root, *want.hugepage_kib);
        pool && pool->free * pool->size_kib < want.memory_kib)
      want.warnings.push_back("hugepages: the kernel has " + std::to_string(pool->free) + " free pages of " +
                              size_text(pool->size_kib * 1024) +
                              " after the reservation, fewer than the domain needs (" +
                              std::to_string(want.memory_kib / pool->size_kib) +
                              "): its memory is fragmented; reboot, or reserve them at boot (hugepages=N)");
  return {};
}

// The run state, on the defined domain (in check mode: as it is, or would be): started, shut down
// by the ACPI power button within shutdown_timeout, or powered off with force_shutoff.
Status converge_run_state(std::optional<virt::Domain>& dom, const Args& args, virt::State run, bool redefine,
                          bool apply, std::vector<std::string>& done) {
  if (args.state == "running" && run != virt::State::running) {
    done.push_back("started");
    if (apply) return dom->start();
  } else if (args.state == "shutoff" && run != virt::State::shutoff) {
    done.push_back(args.force_shutoff ? "powered off" : "shut down");
    if (!apply) return {};
    if (args.force_shutoff) return dom->destroy();
    if (auto s = dom->shutdown(); !s) return s;
    const long long timeout = args.shutdown_timeout;
    for (int waited = 0;; ++waited) {
      auto st = dom->state();
      if (!st) return Error{st.error()};
      if (*st == virt::State::shutoff) return {};
      if (waited >= timeout * 10)
        return Error{"domain " + args.name + " did not shut down within " + std::to_string(timeout) +
                     " s of the ACPI power button; it is left running (force_shutoff: true powers it off)"};
      ::usleep(100 * 1000);
    }
  } else if (redefine && run == virt::State::running) {
    done.push_back("the running domain keeps its old configuration until it is shut down");
  }
  return {};
}

// The result's data (as defined, or to be: the values the domain keeps where the playbook leaves
// them out), message and warnings.
Result report(Result r, const Args& args, const virt::Connection& conn, const pugi::xml_document& desired,
              const Want& want, const std::string& after, bool redefine, virt::State run,
              const std::vector<std::string>& done) {
  const std::string& name = args.name;
  auto os = desired.child("domain").child("os");
  const std::string machine = attr(os.child("type"), "machine");
  r.data = {{"name", name},
            {"uri", conn.uri()},
            {"type", attr(desired.child("domain"), "type")},
            {"machine", machine},
            {"loader", std::string(trim(os.child_value("loader")))},
            {"nvram", std::string(trim(os.child_value("nvram")))},
            {"state", args.state},
            {"managed", json::array()}};
  for (const auto& o : read_record(desired.child("domain")).owned)
    r.data["managed"].push_back(o.kind == "part" ? o.id : o.kind + " " + o.id);
  json hostdevs = json::array();
  for (const auto& g : want.gpus)
    for (const auto& f : g.functions) hostdevs.push_back(f);
  r.data["hostdevs"] = hostdevs;
  if (redefine) r.data["xml"] = after;  // what is (or would be) defined
  const std::string warnings = want.warnings.empty() ? "" : " [warning: " + join(want.warnings, "; ") + "]";
  if (!want.warnings.empty()) r.data["warnings"] = want.warnings;
  for (const auto& w : want.warnings) spdlog::warn("domain {}: {}", name, w);
  if (done.empty()) {
    r.msg = "domain " + name + " is as wanted (" + machine + ", " + std::to_string(hostdevs.size()) +
            " host devices, " + virt::state_name(run) + ")" + warnings;
    return r;
  }
  r.status = Outcome::changed;
  r.msg = join(done, "; ") + warnings;
  return r;
}

// The domain as declared: the definition merged into what the domain has (what the playbook leaves
// out stays as it is), then the host's side, the nvram, autostart and the run state, each checked
// and applied in turn.
Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  const std::string& name = args.name;
  auto opened = open_libvirt(ctx, args.connect, "domain " + name, apply);
  if (auto* skip = std::get_if<Result>(&opened)) return *skip;
  virt::Connection* conn = &std::get<virt::Connection>(opened);
  auto found = conn->lookup(name);
  if (!found) return Result::failed(found.error());
  std::optional<virt::Domain>& dom = *found;
  if (args.state == "absent") return converge_absent(dom, args, apply);

  auto caps = conn->capabilities();
  if (!caps) return Result::failed(caps.error());
  pugi::xml_document current;
  if (dom) {
    auto xml = dom->xml(true);
    if (!xml) return Result::failed(xml.error());
    if (!current.load_string(xml->c_str()))
      return Result::failed("libvirt returned XML that does not parse for domain " + name);
  }
  auto want = want_from(ctx, args, read_capabilities(*caps), conn->uri(), current);
  if (!want) return Result::failed(want.error());
  if (auto plugged = check_interfaces(ctx, *conn, want->interfaces, apply); !plugged)
    return Result::failed(plugged.error() + " (domain " + name + ", nothing was changed)");
  pugi::xml_document desired;
  desired.reset(current);
  if (auto merged = merge(desired, *want); !merged) return Result::failed(merged.error());
  if (auto kept = kept_nvram(ctx, current, desired, name)) want->warnings.push_back(*kept);

  std::vector<std::string> done;
  Result r = Result::ok();
  // Every node the merge leaves alone renders as it was: any difference is a change it made.
  // Rendered once: compared, shown, defined and reported below.
  const std::string before = dom ? render_xml(current) : "", after = render_xml(desired);
  const bool redefine = !dom || before != after;
  virt::State run = virt::State::shutoff;
  if (dom) {
    auto st = dom->state();
    if (!st) return Result::failed(st.error());
    run = *st;
  }
  HostSide host{FileChanges(ctx.root), {}};
  if (auto s = plan_host_side(ctx, args, *want, run, redefine, host); !s) return Result::failed(s.error());
  if (redefine) {
    r.diff = unified_diff(before, after, "domain " + name + " (libvirt XML)");
    done.push_back(dom ? "redefined domain " + name : "defined domain " + name);
  }
  // The definition first: when libvirt refuses it, nothing at all has changed.
  if (apply && redefine) {
    auto defined = conn->define(after);
    if (!defined) return Result::failed(defined.error() + " (domain " + name + ", nothing was changed)");
    dom.emplace(std::move(*defined));
  }
  if (auto s = apply_host_side(ctx, host, *want, apply, r, done); !s) return Result::failed(s.error());
  auto nvram = ensure_nvram(ctx, *want, apply);
  if (!nvram) return Result::failed(nvram.error());
  if (*nvram) done.push_back("created " + want->nvram + " from " + want->vars);
  if (args.autostart)
    if (auto s = converge_autostart(dom, *args.autostart, apply, done); !s) return Result::failed(s.error());
  if (auto s = converge_run_state(dom, args, run, redefine, apply, done); !s) return Result::failed(s.error());
  return report(std::move(r), args, *conn, desired, *want, after, redefine, run, done);
}

// What `gptagent doc libvirt_domain` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "A VM for GPU passthrough from a few keys: name, memory (16G), vcpus, machine (default: the newest "
          "pc-q35-* the hypervisor offers; i440FX and q35 older than 4.2 refused), OVMF found on the host "
          "(/usr/share/OVMF/, /usr/share/edk2/ovmf/, /usr/share/edk2/x64/, or firmware: {code, vars}) with a per-VM "
          "nvram created from the template and never replaced (an existing domain keeps its nvram path and file), "
          "<cpu mode='host-passthrough' check='partial'/>, <kvm><hidden state='on'/>, hyperv_vendor_id, one managed "
          "vfio <hostdev> per function of each GPU in gpus (auto or addresses), each GPU's functions together on "
          "one multifunction slot behind a PCIe root port of its own (the first free controller index; libvirt "
          "places it on a free slot), disks (a path or {path, format, bus, target, state}), cdrom (ISOs as "
          "read-only SATA CD-ROMs on free sdX targets: a path or {path, state}; each ISO must exist; a new domain "
          "given one boots hd then cdrom, so a blank disk falls through to the installer), tpm and secure_boot "
          "(Windows 11), interfaces (bridge or network, mac, model, state), graphics (spice, vnc or none, port, "
          "listen), video (none is libvirt's <model type='none'/>), boot, and on a new domain a pty console and the "
          "spice agent channel. type: auto is kvm with /dev/kvm, else qemu with a warning. state: defined, running, "
          "shutoff or absent; autostart.\n\n"
          "VM tuning keys, each checked on the host before libvirt sees the domain, compared for drift and given "
          "back when left out again: rom, cpu, pin, hugepages, looking_glass, hyperv, evdev, tpm, secure_boot, "
          "usb_controllers (README.md, \"VM tuning keys of libvirt_domain\", says what each writes and checks).\n\n"
          "A new domain gets a default for every key left out (vcpus: 2, spice, vga, boot: [hd], hide_kvm: "
          "true...); an existing one is adopted: the agent manages only the keys the playbook declares, remembers "
          "what it set in the domain's <metadata>, and gives back a key the playbook no longer declares (README.md, "
          "\"What the agent owns\"). Drift is any difference between the domain and the declared keys merged into "
          "it, and --diff shows exactly the XML that will be defined.\n\n"
          "Connection: connect or --connect (default qemu:///system; under --root only an explicit one). libvirt is "
          "loaded at run time: a host without it runs every other module. Before a domain is defined, each "
          "interfaces[].bridge must exist on the host (/sys/class/net/NAME/bridge) and each network must be "
          "defined and active in libvirt; otherwise the task fails, in --check too, saying what to do, with nothing "
          "defined (in --check a network that an earlier libvirt_network task of the run would start counts as "
          "there).",
      .examples = {"# A 16 GiB, 8-vCPU VM with the GPU, a qcow2 disk and a bridged NIC, defined\n"
                   "- name: the VM\n"
                   "  libvirt_domain:\n"
                   "    name: win11\n"
                   "    memory: 16G\n"
                   "    vcpus: 8\n"
                   "    gpus: [\"0000:01:00.0\"]\n"
                   "    disks: [/var/lib/libvirt/images/win11.qcow2]\n"
                   "    interfaces:\n"
                   "      - bridge: br0\n"
                   "    state: defined\n",
                   "# Windows 11 setup: TPM, Secure Boot and the installer's ISO, the VM started\n"
                   "- libvirt_domain:\n"
                   "    name: win11\n"
                   "    memory: 16G\n"
                   "    vcpus: 8\n"
                   "    tpm: true\n"
                   "    secure_boot: true\n"
                   "    cdrom: [/var/lib/libvirt/images/Win11_24H2_English_x64.iso]\n"
                   "    state: running\n"},
  };
}

const Registration reg{
    declare_module("libvirt_domain", "define a libvirt domain for GPU passthrough (q35, OVMF, vfio hostdevs)", decl(),
                   converge),
    docs()};

}  // namespace
}  // namespace gpt
