// The facts as the agent gathers them through a Root (agent/facts.hpp gather_facts, agent/pci.hpp
// read_pci_devices, agent/facts_view.hpp): the input is cut at "\n%%\n" into the files of a host
// tree, written into a directory of this process for each run:
//   0 /proc/cpuinfo   1 /etc/os-release   2 /proc/sys/kernel/osrelease   3 /proc/cmdline
//   4 /proc/modules   5 /usr/share/misc/pci.ids
//   6 the names under /sys/bus/pci/devices, one a line (4 at most)
//   7.. one part a device, one line an attribute: class, vendor, device, boot_vga, the target of
//       its driver link, of its iommu_group link, subsystem_vendor, subsystem_device
//   11 the names under /sys/kernel/iommu_groups and /sys/class/iommu, one a line
// Properties: no crash; facts that serialise as JSON; the table prints; GPU selection ("auto",
// each address, forced or not) returns GPUs of the host or an error.
#include <cstdint>
#include <sstream>
#include <string>

#include "agent/facts.hpp"
#include "agent/facts_view.hpp"
#include "agent/gpu.hpp"
#include "agent/host.hpp"
#include "agent/text.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using gpt::fuzz::check;

// A name a directory can have.
bool file_name(std::string_view n) {
  return !n.empty() && n != "." && n != ".." && n.size() < 200 && n.find('/') == std::string_view::npos &&
         n.find('\0') == std::string_view::npos;
}

const gpt::fuzz::ScratchDir& scratch() {
  static const gpt::fuzz::ScratchDir dir;
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = gpt::fuzz::split_parts(gpt::fuzz::text_of(data, size), "\n%%\n", 12);
  const auto& t = scratch();
  t.clear();
  t.write("proc/cpuinfo", parts[0]);
  t.write("etc/os-release", parts[1]);
  t.write("proc/sys/kernel/osrelease", parts[2]);
  t.write("proc/cmdline", parts[3]);
  t.write("proc/modules", parts[4]);
  t.write("usr/share/misc/pci.ids", parts[5]);
  const std::string release(gpt::trim(parts[2]));
  if (file_name(release))
    t.write("lib/modules/" + release + "/modules.builtin", "kernel/drivers/vfio/vfio.ko\n" + parts[4]);
  t.write("usr/sbin/update-grub", "#!/bin/sh\nexit 1\n");
  int n = 0;
  for (std::string_view name : gpt::lines(parts[6])) {
    if (n >= 4) break;
    if (!file_name(name)) continue;
    const std::string dir = "sys/devices/pci0000:00/" + std::string(name);
    t.symlink("../../../devices/pci0000:00/" + std::string(name), "sys/bus/pci/devices/" + std::string(name));
    t.mkdir(dir);
    const auto attrs = gpt::lines(parts[static_cast<size_t>(7 + n)]);
    auto attr = [&](size_t i) { return i < attrs.size() ? std::string(attrs[i]) : std::string(); };
    const char* files[] = {"class", "vendor", "device", "boot_vga"};
    for (size_t i = 0; i < 4; ++i)
      if (i < attrs.size()) t.write(dir + "/" + files[i], attr(i) + "\n");
    if (!attr(4).empty() && attr(4).find('\0') == std::string::npos) t.symlink(attr(4), dir + "/driver");
    if (!attr(5).empty() && attr(5).find('\0') == std::string::npos) t.symlink(attr(5), dir + "/iommu_group");
    if (attrs.size() > 6) t.write(dir + "/subsystem_vendor", attr(6) + "\n");
    if (attrs.size() > 7) t.write(dir + "/subsystem_device", attr(7) + "\n");
    ++n;
  }
  for (std::string_view name : gpt::lines(parts[11]))
    if (file_name(name)) {
      t.mkdir("sys/kernel/iommu_groups/" + std::string(name) + "/devices");
      t.mkdir("sys/class/iommu/" + std::string(name));
    }

  const gpt::Root root(t.path());
  gpt::Facts f = gpt::gather_facts(root);
  gpt::name_devices_from_host(root, f);
  gpt::fuzz::check_dumps(f.to_json(), "the facts");
  std::ostringstream table;
  gpt::print_facts_table(table, f);

  for (bool force : {false, true}) {
    auto sel = gpt::select_gpus(f, "auto", force);
    if (sel) check(!sel->empty(), "gpus: auto selected nothing without an error");
    for (const auto& d : f.pci) {
      auto one = gpt::select_gpus(f, nlohmann::json::array({d.address}), force);
      if (one) {
        check(!one->empty(), "a GPU selection by address selected nothing");
        for (const auto& g : *one) check(!g.functions.empty(), "a selected GPU without functions: " + g.address);
      }
    }
  }
  return 0;
}
