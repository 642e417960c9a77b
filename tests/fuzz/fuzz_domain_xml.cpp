// libvirt_domain's XML side (modules/libvirt_domain.cpp): the declared keys merged into the
// domain's current XML (merge, with the ownership record in <metadata>) and the capabilities
// reader. Those functions live in the module's anonymous namespace, so this target compiles the
// module's source itself (tests/fuzz/CMakeLists.txt links every other object of the core).
//
// The first input byte picks the wanted domain (GPUs, disks, NICs, graphics, tuning), its last byte
// which keys the playbook declares; the rest is the current inactive XML as libvirt would return
// it, and also a capabilities document. Properties, for an XML that parses (converge refuses
// others with a message):
//  - the desired document renders as XML that parses again;
//  - once that is defined, the next run sees no drift: merging again into the re-parsed desired
//    document renders exactly as it;
//  - giving every key back (a playbook that declares none of them) and merging again is also
//    stable;
//  - nothing crashes: the diff, the capabilities, the machine type chosen from them.
#include <cstdint>

#include "modules/libvirt_domain.cpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

gpt::Want wanted(uint8_t b, uint8_t keys) {
  gpt::Want w;
  w.type = (b & 1) ? "kvm" : "qemu";
  w.name = "gpuvm";
  w.machine = "pc-q35-7.2";
  w.loader = "/usr/share/OVMF/OVMF_CODE_4M.fd";
  w.vars = "/usr/share/OVMF/OVMF_VARS_4M.fd";
  w.nvram = "/var/lib/libvirt/qemu/nvram/gpuvm_VARS.fd";
  w.cpu_mode = (b & 1) ? "host-passthrough" : "maximum";
  w.memory_kib = 8u << 20;
  w.vcpus = 4;
  w.hide_kvm = b & 2;
  w.boot = (b & 4) ? std::vector<std::string>{"hd", "cdrom"} : std::vector<std::string>{"hd"};
  const int gpus = (b >> 3) & 3;
  for (int g = 0; g < gpus && g < 2; ++g) {
    gpt::Gpu gpu;
    gpu.address = g == 0 ? "0000:01:00.0" : "0000:02:00.0";
    gpu.id = "10de:1b80";
    gpu.functions = {gpu.address, gpu.address.substr(0, 11) + "1"};
    w.gpus.push_back(gpu);
  }
  if (b & 0x20) {
    w.disks.push_back({"/var/lib/libvirt/images/gpuvm.qcow2", "qcow2", "virtio", "", false});
    w.disks.push_back({"/dev/sdb", "raw", "sata", "sdb", false});
  }
  if (b & 0x20)
    w.cdroms = {{"/var/lib/libvirt/images/Win11.iso", false}, {"/var/lib/libvirt/images/virtio-win.iso", (b & 1) != 0}};
  if (b & 0x40) {
    w.interfaces.push_back({"network", "default", "", "virtio", false});
    w.interfaces.push_back({"bridge", "br0", "52:54:00:12:34:56", "e1000e", false});
  }
  if (b & 0x80)
    w.graphics = {.type = "vnc", .port = 5901, .listen = "127.0.0.1"};
  else
    w.graphics.type = (b & 4) ? "none" : "spice";
  w.video = (b & 0x10) ? "none" : "virtio";
  if (b & 0x10) {  // the tuning of a gaming VM
    w.hyperv_vendor_id = "1234567890ab";
    w.hyperv = true;
    w.tpm = true;  // Windows 11's TPM and Secure Boot
    w.secure_boot = true;
    w.plain_loader = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    w.plain_vars = "/usr/share/OVMF/OVMF_VARS_4M.fd";
    w.loader = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
    w.vars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
    w.sockets = 1, w.cores = 2, w.threads = 2;
    w.vcpu_pins = {2, 3, 4, 5};
    w.emulator_pin = "0-1";
    w.iothread_pin = "0-1";
    w.hugepage_kib = 2048;
    w.looking_glass_mib = 64;
    w.evdev = {"/dev/input/by-id/usb-kbd-event-kbd"};
    if (!w.gpus.empty()) w.roms[w.gpus[0].address] = {"/usr/share/vgabios/gpu.rom", false};
  }
  // Which keys are declared: all of them, or a part picked by the second byte.
  const std::vector<std::vector<std::string>> groups = {{"type", "machine", "firmware", "cpu_mode"},
                                                        {"vcpus", "hide_kvm", "boot"},
                                                        {"gpus", "hostdevs", "rom"},
                                                        {"disks", "interfaces", "cdrom"},
                                                        {"graphics", "video"},
                                                        {"hyperv", "hyperv_vendor_id", "tpm", "secure_boot"},
                                                        {"cpu", "pin", "hugepages"},
                                                        {"looking_glass", "evdev"}};
  w.declared = {"memory"};
  for (size_t g = 0; g < groups.size(); ++g)
    if (keys & (1u << g)) w.declared.insert(groups[g].begin(), groups[g].end());
  if (!w.declared.count("gpus")) w.gpus.clear(), w.roms.clear();
  if (!w.declared.count("disks")) w.disks.clear(), w.interfaces.clear(), w.cdroms.clear();
  if (!w.declared.count("looking_glass")) w.looking_glass_mib = 0, w.evdev.clear();
  if (b & 0x04) w.exclusive = {"disks", "hostdevs"};
  return w;
}

std::string merged(const std::string& xml, gpt::Want w) {
  pugi::xml_document doc;
  if (!doc.load_string(xml.c_str())) return "";
  w.creating = !doc.child("domain");
  if (!gpt::merge(doc, w)) return "";
  return gpt::render_xml(doc);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using gpt::fuzz::check;
  if (size < 1) return 0;
  const std::string xml = gpt::fuzz::text_of(data + 1, size - 1);

  // The capabilities reader and the machine type chosen from them.
  const gpt::Offer offer = gpt::read_capabilities(xml);
  for (const auto& [name, canonical] : offer.machines)
    if (name.starts_with("pc-q35-")) (void)gpt::machine_version(name);
  (void)gpt::choose_machine("auto", offer, "test:///default");
  (void)gpt::choose_machine("q35", offer, "test:///default");

  // As converge does: the current XML, the desired one, the diff.
  pugi::xml_document current;
  if (!current.load_string(xml.c_str())) return 0;
  gpt::Want w = wanted(data[0], data[size - 1]);
  w.creating = !current.child("domain");
  pugi::xml_document desired;
  desired.reset(current);
  if (!gpt::merge(desired, w)) return 0;  // refused, with a message: nothing to define
  const std::string rendered = gpt::render_xml(desired);
  (void)gpt::unified_diff(gpt::render_xml(current), rendered, "domain gpuvm (libvirt XML)");

  // Defined, then converged again: no drift.
  pugi::xml_document defined;
  const auto parsed = defined.load_string(rendered.c_str());
  check(bool(parsed), std::string("the desired XML does not parse: ") + parsed.description() + "\n" + rendered);
  const std::string again = merged(rendered, w);
  check(again == rendered,
        "a defined domain drifts on the next run:\n--- defined\n" + rendered + "--- merged again\n" + again);

  // Every key given back, then again: stable too.
  gpt::Want none = w;
  none.declared = {"memory"};
  none.gpus.clear(), none.roms.clear(), none.disks.clear(), none.interfaces.clear(), none.evdev.clear(),
      none.exclusive.clear();
  none.looking_glass_mib = 0;
  const std::string released = merged(rendered, none);
  if (!released.empty()) {
    const std::string released_again = merged(released, none);
    check(released_again == released, "a released domain drifts on the next run:\n--- released\n" + released +
                                          "--- merged again\n" + released_again);
  }
  return 0;
}
