// The pure parsers of /proc, /sys and /etc text (agent/facts.hpp, agent/pci.hpp, agent/text.hpp),
// each given the whole input: /proc/cpuinfo, /etc/os-release, /proc/cmdline, /proc/modules,
// modules.builtin, the kernel release, sysfs hex attributes, PCI addresses and ids, pci.ids,
// sizes, shell words, /proc/iomem, sysfs resource, the SecureBoot efivar. Properties: no crash; a kernel command line
// split, joined with blanks and split again is the same; a PCI address or id parsed is parsed to itself; a size read is
// read again from its number of bytes; the facts they make serialise as JSON (`gptagent facts --json`).
#include <cstdint>
#include <sstream>
#include <string>

#include "agent/facts.hpp"
#include "agent/facts_view.hpp"
#include "agent/gpu.hpp"
#include "agent/gpu_hold.hpp"
#include "agent/pci.hpp"
#include "agent/text.hpp"
#include "tests/fuzz/fuzz_common.hpp"

using gpt::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = gpt::fuzz::text_of(data, size);

  gpt::Facts f;
  f.cpu = gpt::parse_cpuinfo(text);
  f.os = gpt::parse_os_release(text);
  f.cmdline = gpt::parse_cmdline(text);
  f.modules = gpt::parse_proc_modules(text);
  f.builtin_modules = gpt::parse_modules_builtin(text);
  f.kernel_release = std::string(gpt::trim(text.substr(0, text.find('\n'))));
  auto [major, minor] = gpt::kernel_version(text);
  check(major >= 0 && minor >= 0, "a negative kernel version");

  // The kernel command line: split, joined, split again.
  std::string joined;
  for (const auto& p : f.cmdline) {
    check(!p.empty(), "an empty kernel parameter");
    joined += (joined.empty() ? "" : " ") + p;
  }
  check(gpt::parse_cmdline(joined) == f.cmdline, "the kernel command line does not split the same way twice");
  for (const auto& p : f.cmdline) (void)gpt::param_name(p);

  // sysfs attributes and PCI names.
  if (auto v = gpt::parse_sysfs_hex(text)) {
    gpt::PciDevice d;
    d.class_code = *v;
    (void)d.class_name();
  }
  if (auto a = gpt::parse_pci_address(text)) {
    check(gpt::parse_pci_address(*a) == a, "a PCI address does not parse to itself: " + *a);
    (void)gpt::pci_slot(*a);
  }
  if (auto id = gpt::parse_pci_id(text))
    check(gpt::parse_pci_id(*id) == id, "a PCI id does not parse to itself: " + *id);
  std::vector<gpt::PciDevice> devs(3);
  devs[0].address = "0000:01:00.0", devs[0].vendor = "10de", devs[0].device = "1b80", devs[0].class_code = 0x030000;
  devs[1].address = "0000:01:00.1", devs[1].vendor = "10de", devs[1].device = "10f0", devs[1].class_code = 0x040300;
  devs[2].address = "0000:00:02.0", devs[2].vendor = "8086", devs[2].device = "3e92", devs[2].class_code = 0x030000;
  devs[0].iommu_group = devs[1].iommu_group = 1;
  gpt::name_pci_devices(devs, text);

  // /proc/iomem and BARs: ranges are ordered, a framebuffer found is one inside a BAR.
  const gpt::Iomem iomem = gpt::parse_iomem(text);
  for (const auto& r : iomem.ranges) check(r.start <= r.end && r.depth >= 0, "an iomem range out of order: " + r.name);
  devs[0].bars = gpt::parse_pci_resource(text);
  for (const auto& b : devs[0].bars) check(b.start < b.end, "an empty or reversed BAR");
  if (auto fb = gpt::framebuffer_in(iomem, devs[0].bars)) {
    check(gpt::boot_framebuffer_name(*fb), "a framebuffer that is none: " + *fb);
    (void)gpt::framebuffer_release_param(iomem, f.kernel_release, *fb);
  }
  (void)gpt::parse_secure_boot(text);
  (void)gpt::amd_reset_bug("1002", text.substr(0, 4));

  // Sizes (qemu_img, libvirt_domain memory).
  if (auto n = gpt::parse_size(text)) {
    check(*n > 0 && *n <= static_cast<uint64_t>(INT64_MAX), "a size out of range: " + std::to_string(*n));
    auto again = gpt::parse_size(std::to_string(*n));
    check(again.ok() && *again == *n, "a size does not read back from its bytes: " + std::to_string(*n));
    (void)gpt::size_text(*n);
  }
  for (bool comments : {false, true}) (void)gpt::shell_split(text, comments);
  (void)gpt::words(text, true);

  // The facts these make: verdicts, GPUs, the JSON and the table.
  f.iommu.groups = static_cast<int>(size % 3);
  f.iommu_verdicts = gpt::iommu_verdicts(f.cpu, f.cmdline, f.iommu);
  f.pci = devs;
  f.gpus = gpt::discover_gpus(f.pci, f.iommu, f.iommu_verdicts);
  (void)f.module_available("vfio_pci");
  gpt::fuzz::check_dumps(f.to_json(), "the facts");
  std::ostringstream table;
  gpt::print_facts_table(table, f);
  return 0;
}
