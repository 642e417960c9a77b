// libvirt_domain's XML side (modules/libvirt_domain.cpp): the managed fields written into the
// domain's current XML (apply_want), the projection drift is decided on, and the capabilities
// reader. Those functions live in the module's anonymous namespace, so this target compiles the
// module's source itself (tests/fuzz/CMakeLists.txt links every other object of the core).
//
// The first input byte picks the wanted domain (GPUs, disks, NICs, graphics, tuning); the rest is
// the current inactive XML as libvirt would return it, and also a capabilities document.
// Properties, for an XML that parses (converge refuses others with a message):
//  - the desired document renders as XML that parses again;
//  - once that is defined, the next run sees no drift: writing the managed fields into the
//    re-parsed desired document leaves its projection as it was, and equal to the desired one;
//  - nothing crashes: the diff, the capabilities, the machine type chosen from them.
#include "modules/libvirt_domain.cpp"

#include <cstdint>

#include "tests/fuzz/fuzz_common.hpp"

namespace {

gpt::Want wanted(uint8_t b) {
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
    gpu.functions = {gpu.address, gpu.address.substr(0, 11) + "1"};
    w.gpus.push_back(gpu);
  }
  if (b & 0x20) {
    w.disks.push_back({"/var/lib/libvirt/images/gpuvm.qcow2", "qcow2", "virtio", "vda"});
    w.disks.push_back({"/dev/sdb", "raw", "sata", "sdb"});
  }
  w.interfaces = nlohmann::json::array();
  if (b & 0x40) {
    w.interfaces.push_back({{"network", "default"}, {"model", "virtio"}});
    w.interfaces.push_back({{"bridge", "br0"}, {"model", "e1000e"}, {"mac", "52:54:00:12:34:56"}});
  }
  w.graphics = (b & 0x80) ? nlohmann::json{{"type", "vnc"}, {"port", 5901}, {"listen", "127.0.0.1"}}
                          : nlohmann::json{{"type", (b & 4) ? "none" : "spice"}};
  w.video = (b & 0x10) ? "none" : "virtio";
  if (b & 0x10) {  // the tuning of a gaming VM
    w.hyperv_vendor_id = "1234567890ab";
    w.hyperv = true;
    w.sockets = 1, w.cores = 2, w.threads = 2;
    w.vcpu_pins = {2, 3, 4, 5};
    w.emulator_pin = "0-1";
    w.iothread_pin = "0-1";
    w.hugepage_kib = 2048;
    w.looking_glass_mib = 64;
    w.evdev = {"/dev/input/by-id/usb-kbd-event-kbd"};
    if (!w.gpus.empty()) w.roms[w.gpus[0].address] = {"/usr/share/vgabios/gpu.rom", false};
  }
  w.gpu_bus_base = 1 + static_cast<int>(w.disks.size() + w.interfaces.size()) + 3;
  return w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using gpt::fuzz::check;
  if (size < 1) return 0;
  const gpt::Want w = wanted(data[0]);
  const std::string xml = gpt::fuzz::text_of(data + 1, size - 1);

  // The capabilities reader and the machine type chosen from them.
  const gpt::Offer offer = gpt::read_capabilities(xml);
  for (const auto& [name, canonical] : offer.machines)
    if (name.starts_with("pc-q35-")) (void)gpt::machine_version(name);
  (void)gpt::choose_machine("auto", offer, "test:///default");
  (void)gpt::choose_machine("q35", offer, "test:///default");

  // As converge does: the current XML, the desired one, their projections and the diff.
  pugi::xml_document current;
  if (!current.load_string(xml.c_str())) return 0;
  pugi::xml_document desired;
  desired.reset(current);
  gpt::apply_want(desired, w);
  const std::string before = gpt::projection(current, w);
  const std::string after = gpt::projection(desired, w);
  const std::string rendered = gpt::render(desired);
  (void)gpt::unified_diff(gpt::render(current), rendered, "domain gpuvm (libvirt XML)");

  // Defined, then converged again.
  pugi::xml_document defined;
  const auto parsed = defined.load_string(rendered.c_str());
  check(bool(parsed), std::string("the desired XML does not parse: ") + parsed.description() + "\n" + rendered);
  const std::string defined_projection = gpt::projection(defined, w);
  check(defined_projection == after, "the desired XML reads differently once rendered:\n--- desired\n" + after +
                                         "--- rendered and parsed\n" + defined_projection);
  pugi::xml_document again;
  again.reset(defined);
  gpt::apply_want(again, w);
  const std::string again_projection = gpt::projection(again, w);
  check(again_projection == defined_projection, "a defined domain drifts on the next run:\n--- defined\n" +
                                                    defined_projection + "--- wanted again\n" + again_projection);
  (void)before;
  return 0;
}
