// Facts, verdicts and GPU selection on sysfs trees laid out as the kernel lays them out.
#include <gtest/gtest.h>

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

Facts facts_of(const std::string& tree) {
  test::SampleHost host(tree);
  return gather_facts(Root(host.root()));
}

std::vector<std::string> addresses(const std::vector<Gpu>& gpus) {
  Lines out;
  for (const auto& g : gpus) out.push_back(g.address);
  return out;
}

TEST(GpuFacts, OneGpuWithItsAudioUsbAndUcsiFunctions) {
  Facts f = facts_of("fedora-40");
  EXPECT_TRUE(f.iommu.on());
  const Gpu& g = gpu(f, "0000:01:00.0");
  EXPECT_EQ(g.id, "10de:1f07");
  EXPECT_EQ(g.functions, (Lines{"0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3"}));
  EXPECT_EQ(g.groups, (std::vector<int>{14}));
  EXPECT_TRUE(g.peers.empty());
  EXPECT_TRUE(g.viable());
  EXPECT_TRUE(says(g.verdicts, Verdict::Level::info, "bound to nouveau now"));
  auto selected = select_gpus(f, "auto", false);
  ASSERT_TRUE(selected.ok()) << selected.error();
  EXPECT_EQ(addresses(*selected), Lines{"0000:01:00.0"});  // the iGPU is the boot VGA
  const Gpu& igpu = gpu(f, "0000:00:02.0");
  EXPECT_TRUE(igpu.boot_vga);
  EXPECT_FALSE(igpu.viable());
}

TEST(GpuFacts, TwoIdenticalGpusAutoSkipsTheBootVga) {
  Facts f = facts_of("two-gpus-boot-vga");
  EXPECT_TRUE(says(gpu(f, "0000:01:00.0").verdicts, Verdict::Level::blocker, "it is the boot VGA device"));
  auto selected = select_gpus(f, "auto", false);
  ASSERT_TRUE(selected.ok());
  EXPECT_EQ(addresses(*selected), Lines{"0000:02:00.0"});
  auto explicit_boot = select_gpus(f, nlohmann::json{"0000:01:00.1"}, false);
  ASSERT_FALSE(explicit_boot.ok());
  EXPECT_NE(explicit_boot.error().find("GPU 0000:01:00.0 cannot be passed through: it is the boot VGA device"),
            std::string::npos);
  auto forced = select_gpus(f, nlohmann::json{"0000:01:00.0"}, true);
  ASSERT_TRUE(forced.ok());
  EXPECT_EQ((*forced)[0].functions, (Lines{"0000:01:00.0", "0000:01:00.1"}));
}

TEST(GpuFacts, AGroupSharedWithANicIsNotIsolatable) {
  Facts f = facts_of("gpu-shares-group-nic");
  const Gpu& g = gpu(f, "0000:04:00.0");
  EXPECT_EQ(g.peers, Lines{"0000:04:01.0"});  // the PCIe-to-PCI bridge in the group does not count
  EXPECT_TRUE(says(g.verdicts, Verdict::Level::blocker,
                   "IOMMU group 7 also holds 0000:04:01.0 (Ethernet controller 8086:1533, igb)"));
  auto selected = select_gpus(f, "auto", false);
  ASSERT_FALSE(selected.ok());
  EXPECT_NE(selected.error().find("found no GPU that can be passed through"), std::string::npos);
}

TEST(GpuFacts, AmdHostWithTheIommuOnByDefault) {
  Facts f = facts_of("arch");
  EXPECT_EQ(f.cpu.vendor, "amd");
  EXPECT_TRUE(f.iommu.on());
  EXPECT_TRUE(gpu(f, "0000:01:00.0").viable());
  EXPECT_TRUE(says(gpu(f, "0000:01:00.0").verdicts, Verdict::Level::info, "bound to nvidia now"));
}

TEST(GpuFacts, IommuVerdictsSayWhatToDo) {
  // Intel, nothing on the command line: a parameter the playbook can add.
  Facts debian = facts_of("debian-12");
  EXPECT_TRUE(says(debian.iommu_verdicts, Verdict::Level::warning, "add intel_iommu=on to the kernel command line"));
  EXPECT_TRUE(gpu(debian, "0000:01:00.0").viable());
  EXPECT_TRUE(says(gpu(debian, "0000:01:00.0").verdicts, Verdict::Level::info, "isolation is unknown"));
  // AMD with no IOMMU found: only the firmware can help.
  test::SampleHost amd_host("ubuntu-24.04");
  std::filesystem::remove_all(amd_host.file("/sys/kernel/iommu_groups"));
  Facts ubuntu = gather_facts(Root(amd_host.root()));
  EXPECT_TRUE(says(ubuntu.iommu_verdicts, Verdict::Level::blocker, "enable IOMMU / AMD-Vi in the firmware setup"));
  EXPECT_FALSE(gpu(ubuntu, "0000:01:00.0").viable());

  CpuInfo intel;
  intel.vendor = "intel";
  IommuState off;
  EXPECT_TRUE(says(iommu_verdicts(intel, {"ro", "intel_iommu=on"}, off), Verdict::Level::blocker,
                   "enable VT-d in the firmware"));
  EXPECT_TRUE(
      says(iommu_verdicts(intel, {"intel_iommu=off"}, off), Verdict::Level::warning, "replace it with intel_iommu=on"));
  EXPECT_TRUE(says(iommu_verdicts(intel, {"iommu=off"}, off), Verdict::Level::warning, "iommu=off"));
  CpuInfo amd;
  amd.vendor = "amd";
  EXPECT_TRUE(says(iommu_verdicts(amd, {"amd_iommu=off"}, off), Verdict::Level::warning, "amd_iommu=off"));
  // No DMAR table: the firmware has VT-d off, and no parameter can help (seen in the lab on a real
  // kernel); with the table, the missing parameter is the fix.
  IommuState no_table;
  no_table.firmware_table = false;
  EXPECT_TRUE(says(iommu_verdicts(intel, {"ro"}, no_table), Verdict::Level::blocker,
                   "the firmware offers no IOMMU (no ACPI DMAR table): enable VT-d in the firmware setup"));
  EXPECT_TRUE(says(iommu_verdicts(amd, {"ro"}, no_table), Verdict::Level::blocker, "no ACPI IVRS table"));
  IommuState table;
  table.firmware_table = true;
  EXPECT_TRUE(says(iommu_verdicts(intel, {"ro"}, table), Verdict::Level::warning, "add intel_iommu=on"));
  IommuState on;
  on.groups = 3;
  EXPECT_TRUE(says(iommu_verdicts(intel, {"pcie_acs_override=downstream,multifunction"}, on), Verdict::Level::warning,
                   "groups may look isolated"));
}

TEST(GpuFacts, ADamagedTreeGivesMessagesNotACrash) {
  test::SampleHost host("broken-sysfs");
  // Git cannot hold the tree's two empty directories: make them as the fixture describes.
  std::filesystem::create_directories(host.file("/sys/kernel/iommu_groups/99/devices"));
  std::filesystem::create_directories(host.file("/sys/devices/pci0000:00/0000:00:1c.0/0000:05:00.0"));
  Facts f = gather_facts(Root(host.root()));
  auto dev = [&](const std::string& a) -> const PciDevice& {
    for (const auto& d : f.pci)
      if (d.address == a) return d;
    throw std::runtime_error("no device " + a);
  };
  EXPECT_EQ(dev("0000:01:00.0").problems, Lines{"class is 'garbage', not a hex number"});
  EXPECT_EQ(dev("0000:01:00.1").problems, Lines{"no vendor"});
  EXPECT_EQ(dev("0000:05:00.0").problems, (Lines{"no class", "no vendor", "no device"}));
  EXPECT_EQ(dev("0000:00:01.0").driver, "pcieport");  // the link names it even if the directory is gone
  EXPECT_EQ(f.cpu.vendor, "intel");                   // from the three lines left of cpuinfo
  auto r = test::run_agent({"facts", "--root", host.root()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("! class is 'garbage', not a hex number"), std::string::npos) << r.out;
}

TEST(GpuFacts, FactsOnThisMachineAreAnAnswerNotAnError) {
  auto r = test::run_agent({"facts"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("IOMMU"), std::string::npos);
  EXPECT_NE(r.out.find("ADDRESS"), std::string::npos);
  auto j = test::run_agent({"facts", "--json"});
  EXPECT_EQ(j.exit_code, 0);
  EXPECT_TRUE(nlohmann::json::accept(j.out));
}

TEST(GpuFacts, JsonShape) {
  test::SampleHost host("fedora-40");
  auto r = test::run_agent({"facts", "--json", "--root", host.root()});
  ASSERT_EQ(r.exit_code, 0);
  auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"cpu_vendor", "distro", "kernel_release", "boot_id", "cmdline", "kvm", "modules", "boot",
                          "iommu", "pci", "gpus"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["iommu"]["on"], true);
  EXPECT_EQ(j["iommu"]["groups"], 4);
  const auto& pci = j["pci"];
  auto gpu_dev = std::find_if(pci.begin(), pci.end(), [](const auto& d) { return d["address"] == "0000:01:00.0"; });
  ASSERT_NE(gpu_dev, pci.end());
  EXPECT_EQ((*gpu_dev)["class"], "0x030000");
  EXPECT_EQ((*gpu_dev)["vendor"], "10de");
  EXPECT_EQ((*gpu_dev)["device"], "1f07");
  EXPECT_EQ((*gpu_dev)["driver"], "nouveau");
  EXPECT_EQ((*gpu_dev)["iommu_group"], 14);
  EXPECT_EQ((*gpu_dev)["boot_vga"], false);
  const auto& g = j["gpus"][1];
  EXPECT_EQ(g["address"], "0000:01:00.0");
  EXPECT_EQ(g["viable"], true);
  EXPECT_EQ(g["functions"].size(), 4u);
  EXPECT_EQ(g["verdicts"][0]["level"], "info");
}

TEST(GpuFacts, CaptureReplaysTheSameFacts) {
  for (const char* tree : {"fedora-40", "two-gpus-boot-vga", "debian-12"}) {
    test::SampleHost host(tree);
    test::TempDir capture;
    auto c = test::run_agent({"facts", "--root", host.root(), "--capture", capture / "host"});
    ASSERT_EQ(c.exit_code, 0) << c.err;
    auto original = nlohmann::json::parse(test::run_agent({"facts", "--json", "--root", host.root()}).out);
    auto replayed = nlohmann::json::parse(test::run_agent({"facts", "--json", "--root", capture / "host"}).out);
    EXPECT_EQ(replayed, original) << tree;
  }
}

TEST(GpuFacts, FactsAreUsableInPlaybooks) {
  test::SampleHost host("fedora-40");
  auto r = test::converge_root(host.root(), R"yaml(tasks:
  - name: "only with the IOMMU on ({{ facts.iommu.groups }} groups)"
    probe: {id: a}
    when: facts.iommu.on and facts.gpus.1.viable
  - name: skipped
    probe: {id: b}
    when: facts.cpu_vendor == 'amd'
)yaml",
                               false);
  ASSERT_TRUE(r.load_errors.empty()) << r.load_errors.front();
  EXPECT_EQ(r.tasks[0].name, "only with the IOMMU on (4 groups)");
  EXPECT_EQ(r.tasks[0].result.status, Outcome::ok);
  EXPECT_EQ(r.tasks[1].result.status, Outcome::skipped);
}

// ---- modules that take GPUs ----

TEST(VfioGpus, AutoTakesEveryFunctionOfTheViableGpu) {
  test::SampleHost host("fedora-40");
  auto r = test::converge_root(host.root(), "tasks:\n  - vfio: {gpus: auto, load: false}\n", false);
  ASSERT_EQ(r.exit_code, 0) << r.tasks.back().result.msg;
  EXPECT_EQ(r.tasks[0].name, "preflight (automatic: the playbook takes GPUs)");
  EXPECT_EQ(r.tasks[0].result.status, Outcome::ok);
  EXPECT_NE(test::slurp(host.file("/etc/modprobe.d/vfio.conf")).find("ids=10de:1f07,10de:10f9,10de:1ada,10de:1adb\n"),
            std::string::npos);
}

TEST(VfioGpus, IdenticalCardsAreBoundByAddressNotById) {
  // Two GTX 1070s: the boot VGA at 01:00 stays with the host, 02:00 goes to VMs. ids= would take
  // both (and both audio functions), so vfio-pci gets 02:00.0 and 02:00.1 by address.
  test::SampleHost host("two-gpus-boot-vga");
  const std::string pb = "stages:\n  - name: host\n    reboot: when_needed\n    tasks:\n      - vfio: {gpus: auto}\n";
  auto check = test::converge_root(host.root(), pb, true);
  auto first = test::converge_root(host.root(), pb, false);
  ASSERT_EQ(first.tasks.size(), 3u);  // the automatic preflight, vfio, the initramfs handler
  ASSERT_EQ(first.tasks[1].result.status, Outcome::changed) << first.tasks[1].result.msg;
  EXPECT_EQ(first.changes(), check.changes());
  EXPECT_TRUE(first.tasks[1].result.msg.starts_with(
      "vfio modules vfio, vfio_iommu_type1, vfio_pci; vfio-pci takes 0000:02:00.0, 0000:02:00.1 by address "
      "(0000:01:00.0 (VGA compatible controller, on nouveau, the boot VGA, 10de:1b81), 0000:01:00.1 (Audio device, on "
      "snd_hda_intel, 10de:10f0) has the same id)"))
      << first.tasks[1].result.msg;
  const std::string conf = test::slurp(host.file("/etc/modprobe.d/vfio.conf"));
  EXPECT_EQ(conf.find("ids="), std::string::npos) << conf;
  EXPECT_NE(conf.find("install vfio-pci /bin/sh -c 'for d in 0000:02:00.0 0000:02:00.1; do echo vfio-pci > "
                      "/sys/bus/pci/devices/$d/driver_override; done 2>/dev/null; exec /sbin/modprobe --ignore-install "
                      "vfio-pci $CMDLINE_OPTS'\n"),
            std::string::npos)
      << conf;
  EXPECT_NE(conf.find("softdep nouveau pre: vfio-pci\n"), std::string::npos) << conf;
  auto second = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(second.stats.changed, 0) << second.tasks[1].result.msg;

  // After the reboot only the chosen card is on vfio-pci; the host keeps its own.
  auto boot = test::sandbox_reboot(host.root());
  ASSERT_EQ(boot.exit_code, 0) << boot.err;
  auto driver = [&](const std::string& a) {
    return std::filesystem::path(std::filesystem::read_symlink(host.file("/sys/bus/pci/devices/" + a) + "/driver"))
        .filename()
        .string();
  };
  EXPECT_EQ(driver("0000:02:00.0"), "vfio-pci");
  EXPECT_EQ(driver("0000:02:00.1"), "vfio-pci");
  EXPECT_EQ(driver("0000:01:00.0"), "nouveau");
  EXPECT_EQ(driver("0000:01:00.1"), "snd_hda_intel");

  // Explicit ids that would take the host's card are refused, and so is a vfio-pci that only the
  // command line can configure.
  test::SampleHost again("two-gpus-boot-vga");
  const auto pristine = test::snapshot(again.root());
  auto ids = test::converge_root(again.root(), "tasks:\n  - vfio: {gpus: auto, ids: ['10de:1b81']}\n", false);
  EXPECT_EQ(ids.exit_code, 1);
  EXPECT_TRUE(ids.tasks.back().result.msg.starts_with("ids: 10de:1b81 would also give vfio-pci 0000:01:00.0"))
      << ids.tasks.back().result.msg;
  auto cmdline = test::converge_root(again.root(), "tasks:\n  - vfio: {gpus: auto, kernel_cmdline: always}\n", false);
  EXPECT_EQ(cmdline.exit_code, 1);
  EXPECT_TRUE(cmdline.tasks.back().result.msg.find("bind the GPU after boot with vfio_bind (by address) instead") !=
              std::string::npos)
      << cmdline.tasks.back().result.msg;
  EXPECT_EQ(test::snapshot(again.root()), pristine);
}

TEST(Preflight, FailsEarlyOnWhatCannotWork) {
  test::SampleHost amd("ubuntu-24.04");
  std::filesystem::remove_all(amd.file("/sys/kernel/iommu_groups"));  // the firmware has it off
  const auto pristine = test::snapshot(amd.root());
  auto r = test::converge_root(
      amd.root(), test::slurp(test::source_path("playbooks/host.yaml")) + "      - vfio_bind: {gpus: auto}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(r.tasks.size(), 1u) << "nothing may run after a failed preflight";
  EXPECT_EQ(r.tasks[0].result.msg,
            "the kernel found no IOMMU (AMD enables it by default): enable IOMMU / AMD-Vi in the firmware setup");
  EXPECT_EQ(test::snapshot(amd.root()), pristine);

  test::SampleHost nic("gpu-shares-group-nic");
  auto n = test::converge_root(nic.root(), "tasks:\n  - preflight: {gpus: ['0000:04:00.0']}\n", false);
  EXPECT_EQ(n.exit_code, 1);
  EXPECT_NE(n.tasks[0].result.msg.find("also holds 0000:04:01.0"), std::string::npos);

  test::SampleHost debian("debian-12");
  auto d = test::converge_root(debian.root(), "tasks:\n  - preflight: {}\n", true);
  EXPECT_EQ(d.exit_code, 0);
  EXPECT_NE(d.tasks[0].result.msg.find(
                "passthrough possible for 0000:01:00.0 (10de:1b80, 2 functions); the IOMMU is off in the kernel"),
            std::string::npos)
      << d.tasks[0].result.msg;
}

TEST(Preflight, BadAddressesAreLoadErrors) {
  test::SampleHost host("fedora-40");
  auto r = test::converge_root(host.root(), "tasks:\n  - vfio_bind: {gpus: [01:00.0, banana]}\n", false);
  ASSERT_EQ(r.load_errors.size(), 1u);
  EXPECT_EQ(r.load_errors[0],
            "test.yaml:2:23: vfio_bind argument 'gpus': 'banana' is not a PCI address like 0000:01:00.0");
  auto missing = test::converge_root(host.root(), "tasks:\n  - vfio_bind: {gpus: ['0000:09:00.0']}\n", false);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.tasks[0].result.msg, "PCI device 0000:09:00.0 does not exist on this host");
}

TEST(VfioBind, BindsEveryFunctionThenIsOk) {
  test::SampleHost host("fedora-40");
  test::write(host.file("/sys/bus/pci/drivers_probe"), "");
  const std::string pb = "tasks:\n  - vfio_bind: {gpus: ['0000:01:00.0']}\n";
  auto check = test::converge_root(host.root(), pb, true);
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_TRUE(check.sysfs_writes.empty());
  auto first = test::converge_root(host.root(), pb, false);
  ASSERT_EQ(first.exit_code, 0) << first.tasks.back().result.msg;
  EXPECT_EQ(first.commands, Lines{"modprobe vfio-pci"});
  ASSERT_EQ(first.sysfs_writes.size(), 12u);  // 4 functions: override, unbind, probe
  EXPECT_EQ(Lines(first.sysfs_writes.begin(), first.sysfs_writes.begin() + 3),
            (Lines{"/sys/bus/pci/devices/0000:01:00.0/driver_override=vfio-pci",
                   "/sys/bus/pci/devices/0000:01:00.0/driver/unbind=0000:01:00.0",
                   "/sys/bus/pci/drivers_probe=0000:01:00.0"}));
  EXPECT_EQ(first.tasks.back().result.msg,
            "bound 0000:01:00.0 (from nouveau), 0000:01:00.1 (from snd_hda_intel), 0000:01:00.2 (from xhci_hcd), "
            "0000:01:00.3 (from nvidia-gpu) to vfio-pci");
  auto second = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(second.stats.changed, 0);
  EXPECT_TRUE(second.sysfs_writes.empty());
  EXPECT_EQ(second.tasks.back().result.msg, "0000:01:00.0, 0000:01:00.1, 0000:01:00.2, 0000:01:00.3 bound to vfio-pci");
}

TEST(VfioBind, NeverUnderASandboxRootAndNeverWithTheIommuOff) {
  test::SampleHost host("fedora-40");
  const auto pristine = test::snapshot(host.root());
  auto sandboxed =
      test::converge_root(host.root(), "tasks:\n  - vfio_bind: {}\n", false, /*allow_system_commands=*/false);
  EXPECT_EQ(sandboxed.exit_code, 0);
  EXPECT_TRUE(sandboxed.sysfs_writes.empty());
  EXPECT_EQ(sandboxed.tasks.back().result.status, Outcome::skipped);
  EXPECT_NE(sandboxed.tasks.back().result.commands.front().find(
                "echo vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override"),
            std::string::npos);
  EXPECT_EQ(test::snapshot(host.root()), pristine);

  test::SampleHost off("debian-12");
  auto r = test::converge_root(off.root(), "tasks:\n  - vfio_bind: {}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.sysfs_writes.empty());
  EXPECT_NE(r.tasks.back().result.msg.find("vfio-pci can only take a device when the IOMMU is on, and it is off"),
            std::string::npos);
}

TEST(VfioBind, ADeviceTheKernelWillNotBindIsAFailureWithTheReasonToLook) {
  test::SampleHost host("fedora-40");
  test::write(host.file("/sys/bus/pci/drivers_probe"), "");
  Root root(host.root());
  Facts facts = gather_facts(root);
  test::RecordingExec exec;
  SysfsWriter files;  // plain file writes: the fixture's driver links never move, as if the kernel refused
  Context ctx{root, exec, facts, true, &files};
  const ModuleDef* def = Registry::instance().find("vfio_bind");
  Result r = converge_module(*def, ctx, with_defaults(def->schema, {{"gpus", {"0000:01:00.0"}}}), true);
  EXPECT_EQ(r.status, Outcome::failed);
  EXPECT_EQ(r.msg, "0000:01:00.0 is on nouveau after binding, not vfio-pci: see the kernel log (dmesg) for why");
}

}  // namespace
}  // namespace gpt
