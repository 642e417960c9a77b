// Facts and verdicts on real kernel sysfs: `gptagent facts --capture` of Debian's kernel booted under
// QEMU on each PCI layout of the lab's quick tier (tests/lab/run quick --update-captures writes
// tests/fixtures/hosts/lab-*). The hand-written trees say what the kernel should show; these are
// what it showed.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/verdicts.hpp"

namespace gpt {
namespace {

using test::gpu;
using test::says;

using Lines = std::vector<std::string>;

const std::string kConsole = "0000:00:01.0";   // the host's own display, the boot VGA
const std::string kRootPort = "0000:00:1c.0";  // the stand-in GPU's root port
const std::string kGpu = "0000:01:00.0";       // the stand-in GPU: display...
const std::string kAudio = "0000:01:00.1";     // ...and audio on one multifunction slot

Facts facts_of(const test::SampleHost& host) { return gather_facts(Root(host.root())); }

const PciDevice& dev(const Facts& f, const std::string& address) {
  for (const auto& d : f.pci)
    if (d.address == address) return d;
  throw std::runtime_error("no PCI device " + address);
}

Lines gpu_addresses(const std::vector<Gpu>& gpus) {
  Lines out;
  for (const auto& g : gpus) out.push_back(g.address);
  return out;
}

// Every device in the IOMMU group of `address`, as the kernel grouped them.
Lines group_members(const Facts& f, const std::string& address) {
  Lines out;
  for (const auto& d : f.pci)
    if (d.iommu_group && d.iommu_group == dev(f, address).iommu_group) out.push_back(d.address);
  return out;
}

// A capture holds /proc and /sys; a Debian host also has the directory vfio writes into.
void add_etc(const test::SampleHost& host) { std::filesystem::create_directories(host.file("/etc/modprobe.d")); }

TEST(LabCaptures, EveryCaptureIsDebiansKernelOnAnIntelQ35) {
  for (const char* tree : {"lab-gpu-alone", "lab-gpu-shares-nic", "lab-two-identical", "lab-iommu-off",
                           "lab-iommu-off-no-param", "lab-iommu-off-cmdline"}) {
    SCOPED_TRACE(tree);
    test::SampleHost host(tree);
    Facts f = facts_of(host);
    EXPECT_TRUE(f.warnings.empty()) << f.warnings.front();
    EXPECT_EQ(f.os.id, "debian");
    EXPECT_EQ(f.os.version_id, "12");
    EXPECT_EQ(f.cpu.vendor, "intel");
    EXPECT_TRUE(f.kernel_release.ends_with("-cloud-amd64")) << f.kernel_release;
    EXPECT_EQ(kernel_version(f.kernel_release).first, 6);
    EXPECT_EQ(f.boot.initramfs, "update-initramfs");
    EXPECT_FALSE(f.kvm);
    EXPECT_TRUE(f.modules.empty());                       // captured before anything was loaded
    EXPECT_FALSE(f.module_available("vfio_pci"));         // Debian builds vfio-pci as a module
    EXPECT_EQ(dev(f, "0000:00:00.0").id(), "8086:29c0");  // q35's host bridge
    for (const auto& d : f.pci) EXPECT_TRUE(d.problems.empty()) << d.address << ": " << d.problems.front();
    const PciDevice& console = dev(f, kConsole);
    EXPECT_TRUE(console.boot_vga);
    EXPECT_EQ(console.class_code, 0x030000u);
    EXPECT_TRUE(says(gpu(f, kConsole).verdicts, Verdict::Level::blocker, "it is the boot VGA device"));
    EXPECT_EQ(dev(f, kRootPort).driver, "pcieport");
  }
}

TEST(LabCaptures, AGpuAloneBehindItsRootPortGoesWithItsAudioFunction) {
  test::SampleHost host("lab-gpu-alone");
  Facts f = facts_of(host);
  EXPECT_TRUE(f.iommu.on());
  EXPECT_EQ(f.iommu.units, Lines{"dmar0"});
  EXPECT_EQ(gpu_addresses(f.gpus), (Lines{kConsole, kGpu}));
  EXPECT_EQ(dev(f, kConsole).id(), "1013:00b8");
  const Gpu& g = gpu(f, kGpu);
  EXPECT_EQ(g.id, "1234:1111");
  EXPECT_FALSE(g.boot_vga);
  EXPECT_EQ(g.functions, (Lines{kGpu, kAudio}));
  EXPECT_EQ(dev(f, kAudio).id(), "8086:2668");
  EXPECT_EQ(dev(f, kAudio).class_code, 0x040300u);
  ASSERT_EQ(g.groups.size(), 1u);
  EXPECT_EQ(group_members(f, kGpu), (Lines{kGpu, kAudio}));
  EXPECT_NE(dev(f, kRootPort).iommu_group, dev(f, kGpu).iommu_group);  // the root port is apart
  EXPECT_TRUE(g.peers.empty());
  EXPECT_TRUE(g.viable()) << g.blockers();
  EXPECT_TRUE(dev(f, kGpu).driver.empty());  // the lab's kernel has no display or sound driver

  auto selected = select_gpus(f, "auto", false);
  ASSERT_TRUE(selected.ok()) << selected.error();
  EXPECT_EQ(gpu_addresses(*selected), Lines{kGpu});

  add_etc(host);
  auto r = test::converge_root(host.root(), "tasks:\n  - vfio: {gpus: auto}\n", false);
  ASSERT_EQ(r.exit_code, 0) << r.tasks.back().result.msg;
  EXPECT_NE(test::slurp(host.file("/etc/modprobe.d/vfio.conf")).find("\noptions vfio-pci ids=1234:1111,8086:2668\n"),
            std::string::npos);
  // Linux 6.1: vfio_virqfd is still a module of its own.
  EXPECT_NE(
      test::slurp(host.file("/etc/modules-load.d/vfio.conf")).find("\nvfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n"),
      std::string::npos);
  EXPECT_EQ(r.commands,
            (Lines{"modprobe -a vfio vfio_iommu_type1 vfio_pci vfio_virqfd", "update-initramfs -u -k all"}));
}

TEST(LabCaptures, ADisplayDeviceSharingItsGroupWithANicBehindAPcieToPciBridgeCannotGo) {
  const std::string bridge = "0000:01:00.0", display = "0000:02:01.0", nic = "0000:02:02.0";
  test::SampleHost host("lab-gpu-shares-nic");
  Facts f = facts_of(host);
  EXPECT_TRUE(f.iommu.on());
  EXPECT_EQ(gpu_addresses(f.gpus), (Lines{kConsole, display}));
  EXPECT_EQ(dev(f, bridge).id(), "1b36:000e");
  EXPECT_TRUE(dev(f, bridge).bridge());
  EXPECT_EQ(dev(f, display).class_code, 0x038000u);  // a display controller, not VGA-compatible
  EXPECT_EQ(dev(f, nic).id(), "8086:100e");
  EXPECT_EQ(group_members(f, display), (Lines{bridge, display, nic}));
  EXPECT_NE(dev(f, kRootPort).iommu_group, dev(f, display).iommu_group);
  const Gpu& g = gpu(f, display);
  EXPECT_EQ(g.peers, Lines{nic});  // the bridge shares the group but is no peer
  EXPECT_FALSE(g.viable());
  EXPECT_TRUE(says(g.verdicts, Verdict::Level::blocker,
                   "IOMMU group " + std::to_string(*dev(f, display).iommu_group) + " also holds " + nic +
                       " (Ethernet controller 8086:100e): the GPU cannot be passed through without it"));

  auto selected = select_gpus(f, "auto", false);
  ASSERT_FALSE(selected.ok());
  EXPECT_NE(selected.error().find("gpus: auto found no GPU that can be passed through"), std::string::npos);
  add_etc(host);
  const auto pristine = test::snapshot(host.root());
  auto r = test::converge_root(host.root(), "tasks:\n  - vfio: {gpus: auto}\n  - vfio_bind: {}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(r.tasks.size(), 1u) << "nothing may run after a failed preflight";
  EXPECT_NE(r.tasks[0].result.msg.find("also holds " + nic), std::string::npos) << r.tasks[0].result.msg;
  EXPECT_EQ(test::snapshot(host.root()), pristine);
}

TEST(LabCaptures, TwoIdenticalDisplayDevicesAutoTakesTheOneThatIsNotTheBootVga) {
  test::SampleHost host("lab-two-identical");
  Facts f = facts_of(host);
  EXPECT_TRUE(f.iommu.on());
  EXPECT_EQ(gpu_addresses(f.gpus), (Lines{kConsole, kGpu}));
  EXPECT_EQ(gpu(f, kConsole).id, "1234:1111");
  EXPECT_EQ(gpu(f, kGpu).id, "1234:1111");
  EXPECT_FALSE(gpu(f, kConsole).viable());
  EXPECT_FALSE(gpu(f, kGpu).boot_vga);
  EXPECT_TRUE(gpu(f, kGpu).viable()) << gpu(f, kGpu).blockers();
  EXPECT_EQ(group_members(f, kGpu), (Lines{kGpu, kAudio}));
  auto selected = select_gpus(f, "auto", false);
  ASSERT_TRUE(selected.ok()) << selected.error();
  EXPECT_EQ(gpu_addresses(*selected), Lines{kGpu});
  EXPECT_EQ((*selected)[0].functions, (Lines{kGpu, kAudio}));
  auto boot = select_gpus(f, nlohmann::json{kConsole}, false);
  ASSERT_FALSE(boot.ok());
  EXPECT_NE(boot.error().find("it is the boot VGA device"), std::string::npos);
}

TEST(LabCaptures, NoDmarTableWithIntelIommuOnIsTheFirmwaresVtdOff) {
  test::SampleHost host("lab-iommu-off");
  Facts f = facts_of(host);
  EXPECT_FALSE(f.iommu.on());
  EXPECT_EQ(f.iommu.groups, 0);
  EXPECT_TRUE(f.iommu.units.empty());
  EXPECT_NE(std::find(f.cmdline.begin(), f.cmdline.end(), "intel_iommu=on"), f.cmdline.end());
  EXPECT_TRUE(says(f.iommu_verdicts, Verdict::Level::blocker,
                   "the kernel runs with intel_iommu=on but found no IOMMU: enable VT-d in the firmware setup"));
  for (const auto& d : f.pci) EXPECT_FALSE(d.iommu_group) << d.address;
  const Gpu& g = gpu(f, kGpu);
  EXPECT_EQ(g.functions, (Lines{kGpu, kAudio}));
  EXPECT_TRUE(g.groups.empty());
  EXPECT_FALSE(g.viable());
  EXPECT_TRUE(says(g.verdicts, Verdict::Level::info, "its isolation is unknown until the IOMMU is on"));

  add_etc(host);
  const auto pristine = test::snapshot(host.root());
  auto r = test::converge_root(host.root(), "tasks:\n  - vfio: {gpus: auto}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(r.tasks.size(), 1u);
  EXPECT_EQ(r.tasks[0].result.msg,
            "the kernel runs with intel_iommu=on but found no IOMMU: enable VT-d in the firmware setup");
  EXPECT_EQ(test::snapshot(host.root()), pristine);
}

TEST(LabCaptures, NoDmarTableAndNothingOnTheCommandLineHasNoGroups) {
  // Debian's kernel turns the Intel IOMMU on by default: here only the firmware has it off, and
  // the verdict says so (it once told the user to add intel_iommu=on, which cannot help).
  test::SampleHost host("lab-iommu-off-no-param");
  Facts f = facts_of(host);
  EXPECT_FALSE(f.iommu.on());
  EXPECT_EQ(f.iommu.firmware_table, false) << "the capture lists the ACPI tables, and DMAR is not among them";
  EXPECT_TRUE(says(f.iommu_verdicts, Verdict::Level::blocker,
                   "the firmware offers no IOMMU (no ACPI DMAR table): enable VT-d in the firmware setup"));
  EXPECT_TRUE(f.iommu.units.empty());
  for (const auto& p : f.cmdline) EXPECT_NE(param_name(p), "intel_iommu") << p;
  for (const auto& d : f.pci) EXPECT_FALSE(d.iommu_group) << d.address;
  EXPECT_EQ(gpu(f, kGpu).functions, (Lines{kGpu, kAudio}));
  EXPECT_TRUE(says(gpu(f, kGpu).verdicts, Verdict::Level::info, "its isolation is unknown until the IOMMU is on"));
}

TEST(LabCaptures, IntelIommuOffOnTheCommandLineIsAWarningTheVfioConfigurationWaitsFor) {
  test::SampleHost host("lab-iommu-off-cmdline");
  Facts f = facts_of(host);
  EXPECT_EQ(f.iommu.firmware_table, true);
  EXPECT_FALSE(f.iommu.on());
  EXPECT_TRUE(f.iommu.units.empty());  // the DMAR unit is there, but the kernel does not use it
  EXPECT_TRUE(says(f.iommu_verdicts, Verdict::Level::warning,
                   "intel_iommu=off on the kernel command line: replace it with intel_iommu=on"));
  const Gpu& g = gpu(f, kGpu);
  EXPECT_TRUE(g.viable()) << g.blockers();
  EXPECT_TRUE(says(g.verdicts, Verdict::Level::info, "its isolation is unknown until the IOMMU is on"));

  add_etc(host);
  test::write(host.file("/sys/bus/pci/drivers_probe"), "");
  auto r = test::converge_root(host.root(), "tasks:\n  - vfio_bind: {}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.sysfs_writes.empty());
  EXPECT_NE(r.tasks.back().result.msg.find("vfio-pci can only take a device when the IOMMU is on, and it is off"),
            std::string::npos);
}

TEST(LabCaptures, AProcessHoldingTheGpusCardNodeIsNamedAndVfioBindWaitsForIt) {
  // gpu-alone's machine on Debian's generic kernel: bochs drives the stand-in GPU, and busybox's
  // sleep (pid 106) holds its card node open; the Cirrus console has no driver.
  test::SampleHost host("lab-gpu-in-use");
  Facts f = facts_of(host);
  EXPECT_TRUE(f.warnings.empty()) << f.warnings.front();
  EXPECT_TRUE(f.kernel_release.ends_with("-amd64") && !f.kernel_release.ends_with("-cloud-amd64")) << f.kernel_release;
  EXPECT_TRUE(f.module_available("bochs"));
  EXPECT_FALSE(f.module_available("vfio_pci"));
  EXPECT_TRUE(f.iommu.on());
  EXPECT_EQ(gpu_addresses(f.gpus), (Lines{kConsole, kGpu}));
  EXPECT_TRUE(dev(f, kConsole).driver.empty());
  EXPECT_TRUE(gpu(f, kConsole).in_use.empty());
  const Gpu& g = gpu(f, kGpu);
  EXPECT_EQ(g.driver, "bochs-drm");
  EXPECT_EQ(dev(f, kGpu).drm, Lines{"card0"});  // bochs has no render node; controlD64 is no node
  EXPECT_EQ(group_members(f, kGpu), (Lines{kGpu, kAudio}));
  ASSERT_EQ(g.in_use.size(), 1u);
  EXPECT_EQ(g.in_use[0].pid, 106);
  EXPECT_EQ(g.in_use[0].comm, "sleep");
  EXPECT_EQ(g.in_use[0].nodes, Lines{"/dev/dri/card0"});
  EXPECT_EQ(g.in_use[0].fds, Lines{"/proc/106/fd/3"});
  EXPECT_TRUE(says(g.verdicts, Verdict::Level::warning,
                   "GPU 0000:01:00.0 is in use by sleep (pid 106): stop them before binding"));
  EXPECT_TRUE(g.viable()) << g.blockers();  // a warning: the user can stop it

  add_etc(host);
  test::write(host.file("/sys/bus/pci/drivers_probe"), "");
  test::write(host.file("/sys/bus/pci/drivers/bochs-drm/unbind"), "");
  const auto pristine = test::snapshot(host.root());
  const std::string pb = "tasks:\n  - vfio_bind: {gpus: auto}\n";
  auto refused = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_TRUE(refused.sysfs_writes.empty());
  EXPECT_EQ(refused.tasks.back().result.msg,
            "GPU 0000:01:00.0 is in use by sleep (pid 106): stop them before binding (nothing was unbound; force: true "
            "unbinds it anyway)");
  EXPECT_EQ(test::snapshot(host.root()), pristine);

  auto forced = test::converge_root(host.root(), "tasks:\n  - vfio_bind: {gpus: auto, force: true}\n", false);
  ASSERT_EQ(forced.exit_code, 0) << forced.tasks.back().result.msg;
  EXPECT_EQ(forced.tasks.back().result.msg,
            "bound 0000:01:00.0 (from bochs-drm), 0000:01:00.1 to vfio-pci (forced: it was in use by sleep (pid 106))");
  // As in the guest: bochs-drm's card node went with it, so the sleep that still holds its fd
  // holds no GPU, and the unforced task is ok.
  Facts after = facts_of(host);
  EXPECT_TRUE(gpu(after, kGpu).in_use.empty());
  EXPECT_EQ(test::converge_root(host.root(), pb, false).exit_code, 0);
}

}  // namespace
}  // namespace gpt
