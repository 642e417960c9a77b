#include <gtest/gtest.h>

#include <boost/process.hpp>

#include "tests/support/converge.hpp"

namespace gpt {
namespace {

using test::TempDir;
using Lines = std::vector<std::string>;

const std::string kInitramfsModules =
    "# List of modules that you want to include in your initramfs.\n# They will be loaded at boot time in the order below.\n#\n"
    "# Syntax:  module_name [args ...]\n#\n# You must run update-initramfs(8) to effect this change.\n#\n# Examples:\n#\n# raid1\n# sd_mod\n";

// A small Debian-like host: initramfs-tools, kernel `release`, one GPU at 0000:01:00.{0,1}.
struct Host {
  TempDir d;
  explicit Host(const std::string& release = "6.1.0-18-amd64", const std::string& initramfs_tool = "usr/sbin/update-initramfs") {
    test::write(d / "proc/sys/kernel/osrelease", release + "\n");
    test::write(d / "proc/cpuinfo", "vendor_id\t: GenuineIntel\n");
    test::write(d / "proc/modules", "nouveau 2322432 0 - Live 0x0000000000000000\n");
    if (!initramfs_tool.empty()) test::write(d / initramfs_tool, "#!/bin/sh\n", 0755);
    test::write(d / "etc/initramfs-tools/modules", kInitramfsModules);
    pci("0000:01:00.0", "0x10de", "0x1b80");
    pci("0000:01:00.1", "0x10de", "0x10f0");
    pci("0000:02:00.0", "0x8086", "0x1539");
  }
  void pci(const std::string& addr, const std::string& vendor, const std::string& device) {
    test::write(d / ("sys/bus/pci/devices/" + addr + "/vendor"), vendor + "\n");
    test::write(d / ("sys/bus/pci/devices/" + addr + "/device"), device + "\n");
  }
  std::string read(const std::string& p) { return test::slurp(d.path() + p); }
};

// Runs check, apply, apply, check and asserts the idempotence contract; returns the first apply.
test::Converged converge_twice(const std::string& root, const std::string& pb, bool system = true) {
  auto before = test::snapshot(root);
  auto check = test::converge_root(root, pb, true, system);
  EXPECT_TRUE(check.load_errors.empty()) << (check.load_errors.empty() ? "" : check.load_errors.front());
  EXPECT_EQ(test::snapshot(root), before) << "check mode changed the tree";
  auto first = test::converge_root(root, pb, false, system);
  EXPECT_EQ(first.exit_code, 0) << (first.tasks.empty() ? "" : first.tasks.back().result.msg);
  EXPECT_EQ(first.changes(), check.changes()) << "--check did not predict the first run";
  EXPECT_GT(first.stats.changed, 0);
  auto second = test::converge_root(root, pb, false, system);
  EXPECT_EQ(second.stats.changed, 0) << (second.tasks.empty() ? "" : second.tasks[0].result.msg);
  EXPECT_EQ(test::converge_root(root, pb, true, system).exit_code, 0);
  return first;
}

TEST(Vfio, WritesModulesOptionsSoftdepsAndTheInitramfsList) {
  Host h;
  test::write(h.d / "proc/modules", "vfio 45056 0 - Live 0x0\nvfio_virqfd 16384 0 - Live 0x0\nvfio_iommu_type1 45056 0 - Live 0x0\nvfio_pci 16384 0 - Live 0x0\n");
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {ids: [10DE:1B80, 10de:10f0], blacklist: [nouveau]}\n");
  EXPECT_EQ(h.read("/etc/modules-load.d/vfio.conf"),
            "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\nvfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf"),
            "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n"
            "options vfio-pci ids=10de:1b80,10de:10f0\nsoftdep nouveau pre: vfio-pci\nsoftdep nvidia pre: vfio-pci\n"
            "softdep snd_hda_intel pre: vfio-pci\nblacklist nouveau\n");
  EXPECT_EQ(h.read("/etc/initramfs-tools/modules"), kInitramfsModules + "vfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n");
  EXPECT_EQ(r.commands, (Lines{"update-initramfs -u -k all"}));  // all loaded already: no modprobe
  EXPECT_TRUE(r.stats.reboot_required);
}

TEST(Vfio, DefaultModulesFollowTheRunningKernel) {
  Host old_kernel("5.15.0-105-generic");
  converge_twice(old_kernel.d.path(), "tasks:\n  - vfio: {load: false}\n");
  EXPECT_NE(old_kernel.read("/etc/modules-load.d/vfio.conf").find("vfio_virqfd"), std::string::npos);
  Host new_kernel("6.8.0-31-generic");
  converge_twice(new_kernel.d.path(), "tasks:\n  - vfio: {load: false}\n");
  EXPECT_EQ(new_kernel.read("/etc/modules-load.d/vfio.conf").find("vfio_virqfd"), std::string::npos);
}

TEST(Vfio, DevicesBecomeTheIdsOfEveryFunctionOfTheSlot) {
  Host h;
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {devices: ['01:00.0'], load: false}\n");
  EXPECT_NE(h.read("/etc/modprobe.d/vfio.conf").find("options vfio-pci ids=10de:1b80,10de:10f0\n"), std::string::npos);
  EXPECT_EQ(r.tasks[0].result.data["ids"], (json{"10de:1b80", "10de:10f0"}));
}

TEST(Vfio, LoadsOnlyWhatIsMissingAndNeverUnderASandbox) {
  Host h("6.8.0-31-generic");
  test::write(h.d / "proc/modules", "vfio 45056 0 - Live 0x0\nnouveau 1 0 - Live 0x0\n");
  test::write(h.d / "lib/modules/6.8.0-31-generic/modules.builtin", "kernel/drivers/vfio/vfio_iommu_type1.ko\n");
  auto sandboxed = test::converge_root(h.d.path(), "tasks:\n  - vfio: {}\n", false, /*system=*/false);
  EXPECT_EQ(sandboxed.exit_code, 0);
  EXPECT_TRUE(sandboxed.commands.empty());
  EXPECT_NE(sandboxed.tasks[0].result.msg.find("vfio_pci not loaded now (not run under --root"), std::string::npos)
      << sandboxed.tasks[0].result.msg;
  EXPECT_EQ(sandboxed.tasks[1].result.status, Outcome::skipped);  // the initramfs handler

  Host live("6.8.0-31-generic");
  test::write(live.d / "proc/modules", "vfio 45056 0 - Live 0x0\n");
  test::write(live.d / "lib/modules/6.8.0-31-generic/modules.builtin", "kernel/drivers/vfio/vfio_iommu_type1.ko\n");
  auto run = test::converge_root(live.d.path(), "tasks:\n  - vfio: {}\n", false);
  EXPECT_EQ(run.commands, (Lines{"modprobe -a vfio_pci", "update-initramfs -u -k all"}));
}

TEST(Vfio, AMissingDeviceFailsNamingItAndChangesNothing) {
  Host h;
  auto before = test::snapshot(h.d.path());
  auto r = test::converge_root(h.d.path(), "tasks:\n  - vfio: {devices: ['0000:03:00.0']}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.tasks[0].result.msg, "PCI device 0000:03:00.0 does not exist (no /sys/bus/pci/devices/0000:03:00.0)");
  EXPECT_EQ(test::snapshot(h.d.path()), before);
}

TEST(Vfio, BadIdsAndAddressesAreLoadErrorsWithPositions) {
  Host h;
  auto ids = test::converge_root(h.d.path(), "tasks:\n  - vfio:\n      ids: [10de:1b80, 10de-10f0]\n", false);
  ASSERT_EQ(ids.load_errors.size(), 1u);
  EXPECT_EQ(ids.load_errors[0], "test.yaml:3:12: vfio argument 'ids': '10de-10f0' is not a vendor:device id like 10de:1b80");
  auto dev = test::converge_root(h.d.path(), "tasks:\n  - vfio: {devices: [0000:01:00.8]}\n", false);
  ASSERT_EQ(dev.load_errors.size(), 1u);
  EXPECT_NE(dev.load_errors[0].find("'0000:01:00.8' is not a PCI address like 0000:01:00.0"), std::string::npos);
  auto mod = test::converge_root(h.d.path(), "tasks:\n  - vfio: {modules: ['vfio; rm -rf /']}\n", false);
  ASSERT_EQ(mod.load_errors.size(), 1u);
}

TEST(Vfio, AnotherFilesIdsOptionIsReportedNotDoubled) {
  Host h;
  test::write(h.d / "etc/modprobe.d/gpu.conf", "# mine\noptions vfio_pci ids=10de:1b80 disable_vga=1\n");
  auto before = test::snapshot(h.d.path());
  auto r = test::converge_root(h.d.path(), "tasks:\n  - vfio: {ids: [10de:1b80]}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.tasks[0].result.msg,
            "/etc/modprobe.d/gpu.conf:2 already sets 'options vfio_pci ids=10de:1b80 disable_vga=1': remove it (or this "
            "task's ids) so vfio-pci gets one list of ids");
  EXPECT_EQ(test::snapshot(h.d.path()), before);
  // Without ids of its own, the task leaves that line alone.
  EXPECT_EQ(test::converge_root(h.d.path(), "tasks:\n  - vfio: {load: false}\n", false).exit_code, 0);
}

TEST(Vfio, DracutGetsADropIn) {
  Host h("6.8.5-301.fc40.x86_64", "usr/bin/dracut");
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {load: false}\n");
  EXPECT_EQ(h.read("/etc/dracut.conf.d/vfio.conf"),
            "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n"
            "force_drivers+=\" vfio vfio_iommu_type1 vfio_pci \"\n");
  EXPECT_EQ(r.commands, (Lines{"dracut -f --regenerate-all"}));
  EXPECT_EQ(h.read("/etc/initramfs-tools/modules"), kInitramfsModules);  // not this host's tool
}

TEST(Vfio, MkinitcpioModulesGoFirstInTheArray) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"MODULES=()\nHOOKS=(base udev)\n", "MODULES=(vfio vfio_iommu_type1 vfio_pci)\nHOOKS=(base udev)\n"},
      {"MODULES=(nvidia nvidia_drm)\n", "MODULES=(vfio vfio_iommu_type1 vfio_pci nvidia nvidia_drm)\n"},
      {"MODULES=(vfio_pci nvidia)\n", "MODULES=(vfio vfio_iommu_type1 vfio_pci nvidia)\n"},
      {"#MODULES=(old)\nMODULES=\"ext4\"\n", "#MODULES=(old)\nMODULES=\"vfio vfio_iommu_type1 ext4\"\n"},
      {"MODULES=(\n  nvidia\n)\n", "MODULES=(vfio vfio_iommu_type1 vfio_pci\n  nvidia\n)\n"},
      {"HOOKS=(base)", "HOOKS=(base)\nMODULES=(vfio vfio_iommu_type1 vfio_pci)\n"},
  };
  for (const auto& [in, out] : cases) {
    Host h("6.9.7-arch1-1", "usr/bin/mkinitcpio");
    test::write(h.d / "etc/mkinitcpio.conf", in);
    std::string pb = "tasks:\n  - vfio: {load: false}\n";
    if (in.find("\"ext4\"") != std::string::npos) pb = "tasks:\n  - vfio: {load: false, modules: [vfio, vfio_iommu_type1]}\n";
    auto r = converge_twice(h.d.path(), pb);
    EXPECT_EQ(h.read("/etc/mkinitcpio.conf"), out) << in;
    EXPECT_EQ(r.commands, (Lines{"mkinitcpio -P"}));
  }
}

// mkinitcpio sources its configuration with bash: a file bash refuses fails the task with its
// line, and nothing is written (not the modprobe.d or modules-load.d files either).
TEST(Vfio, AMkinitcpioConfBashRefusesFailsWithItsLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"<<<<<<< HEAD\nMODULES=(nvidia)\n=======\nMODULES=()\n>>>>>>> b\nHOOKS=(base udev)\n",
       "/etc/mkinitcpio.conf:1: not valid shell (bash -n refuses it): redirection unexpected (line 1 is a merge-conflict "
       "marker); nothing was changed"},
      {"MODULES=(vfio vfio_pci\nHOOKS=(base udev)\n",
       "/etc/mkinitcpio.conf:2: not valid shell (bash -n refuses it): \"(\" unexpected; nothing was changed"},
  };
  for (const auto& [text, msg] : cases) {
    Host h("6.9.7-arch1-1", "usr/bin/mkinitcpio");
    test::write(h.d / "etc/mkinitcpio.conf", text);
    auto before = test::snapshot(h.d.path());
    for (bool check : {true, false}) {
      auto r = test::converge_root(h.d.path(), "tasks:\n  - vfio: {load: false}\n", check);
      EXPECT_EQ(r.exit_code, 1);
      EXPECT_EQ(r.tasks[0].result.msg, msg);
      EXPECT_TRUE(r.commands.empty());
    }
    EXPECT_EQ(test::differences(test::snapshot(h.d.path()), before), "");
  }
}

// Where vfio-pci is built in, its ids go on the kernel command line through GRUB: a main GRUB file
// sh refuses fails the task, whether vfio would edit it (Arch) or only add a drop-in (Debian).
TEST(Vfio, ABuiltInVfioPciWithAGrubFileShRefusesFails) {
  const std::string conflict = test::slurp(test::source_path("tests/fixtures/grub/shell/broken-merge-conflict"));
  Host arch("6.9.7-arch1-1", "usr/bin/mkinitcpio");
  test::write(arch.d / "etc/os-release", "ID=arch\n");
  test::write(arch.d / "etc/mkinitcpio.conf", "MODULES=()\n");
  test::write(arch.d / "lib/modules/6.9.7-arch1-1/modules.builtin", "kernel/drivers/vfio/pci/vfio-pci.ko\n");
  Host ubuntu("5.15.0-105-generic");
  test::write(ubuntu.d / "etc/os-release", "ID=ubuntu\nID_LIKE=debian\n");
  test::write(ubuntu.d / "lib/modules/5.15.0-105-generic/modules.builtin", "kernel/drivers/vfio/pci/vfio-pci.ko\n");
  for (Host* h : {&arch, &ubuntu}) {
    test::write(h->d / "etc/default/grub", conflict);
    auto before = test::snapshot(h->d.path());
    for (bool check : {true, false}) {
      auto r = test::converge_root(h->d.path(), "tasks:\n  - vfio: {ids: [10de:2684], load: false}\n", check);
      EXPECT_EQ(r.exit_code, 1);
      EXPECT_EQ(r.tasks[0].result.msg.rfind("/etc/default/grub:9: not valid shell (sh -n refuses it): ", 0), 0u)
          << r.tasks[0].result.msg;
    }
    EXPECT_EQ(test::differences(test::snapshot(h->d.path()), before), "");
  }
}

TEST(Vfio, TheInitramfsIsRebuiltOnceForTwoChangingTasks) {
  Host h;
  auto r = test::converge_root(h.d.path(), R"(stages:
  - name: host
    tasks:
      - vfio: {load: false}
      - vfio: {load: false, ids: [10de:1b80], modprobe_conf: /etc/modprobe.d/vfio.conf}
)", false);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.commands, (Lines{"update-initramfs -u -k all"}));
}

TEST(Vfio, ABuiltInVfioPciGetsItsIdsOnTheKernelCommandLine) {
  Host h("5.15.0-105-generic");
  test::write(h.d / "etc/os-release", "ID=ubuntu\nID_LIKE=debian\n");
  test::write(h.d / "usr/sbin/update-grub", "#!/bin/sh\n", 0755);
  test::write(h.d / "etc/default/grub", "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n");
  test::write(h.d / "lib/modules/5.15.0-105-generic/modules.builtin",
              "kernel/drivers/vfio/vfio.ko\nkernel/drivers/vfio/vfio_virqfd.ko\nkernel/drivers/vfio/vfio_iommu_type1.ko\n"
              "kernel/drivers/vfio/pci/vfio-pci.ko\n");
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {devices: ['0000:01:00.0']}\n");
  EXPECT_EQ(r.commands, (Lines{"update-grub", "update-initramfs -u -k all"}));  // nothing to load: built in
  EXPECT_EQ(h.read("/etc/default/grub"), "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n");
  // grub-mkconfig sources the main file, then the drop-ins: bash sees the parameter there.
  namespace bp = boost::process;
  bp::ipstream out;
  bp::child c(bp::search_path("bash"), "--norc", "-c",
              "cd \"$0\" && . etc/default/grub && for f in etc/default/grub.d/*.cfg; do . \"$f\"; done; "
              "printf '%s' \"$GRUB_CMDLINE_LINUX\"",
              h.d.path(), bp::std_out > out);
  std::string value;
  std::getline(out, value);
  c.wait();
  EXPECT_EQ(value, " vfio-pci.ids=10de:1b80,10de:10f0");
  EXPECT_NE(r.tasks[0].result.msg.find("vfio_pci is built into this kernel"), std::string::npos);
}

TEST(Vfio, ABuiltInVfioPciOutsideDebianEditsTheMainGrubFile) {
  Host h("6.9.7-arch1-1", "usr/bin/mkinitcpio");
  test::write(h.d / "etc/os-release", "ID=arch\n");
  test::write(h.d / "usr/bin/grub-mkconfig", "#!/bin/sh\n", 0755);
  test::write(h.d / "etc/mkinitcpio.conf", "MODULES=()\n");
  test::write(h.d / "etc/default/grub", "GRUB_CMDLINE_LINUX=\"\"\n");
  test::write(h.d / "lib/modules/6.9.7-arch1-1/modules.builtin", "kernel/drivers/vfio/pci/vfio-pci.ko\n");
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {ids: [10de:2684], load: false}\n");
  EXPECT_EQ(h.read("/etc/default/grub"), "GRUB_CMDLINE_LINUX=\"vfio-pci.ids=10de:2684\"\n");
  EXPECT_EQ(r.commands, (Lines{"grub-mkconfig -o /boot/grub/grub.cfg", "mkinitcpio -P"}));
  // kernel_cmdline: never leaves the boot loader alone.
  Host never("6.9.7-arch1-1", "usr/bin/mkinitcpio");
  test::write(never.d / "etc/default/grub", "GRUB_CMDLINE_LINUX=\"\"\n");
  test::write(never.d / "lib/modules/6.9.7-arch1-1/modules.builtin", "kernel/drivers/vfio/pci/vfio-pci.ko\n");
  test::converge_root(never.d.path(), "tasks:\n  - vfio: {ids: [10de:2684], load: false, kernel_cmdline: never}\n", false);
  EXPECT_EQ(never.read("/etc/default/grub"), "GRUB_CMDLINE_LINUX=\"\"\n");
}

TEST(Vfio, NoInitramfsToolIsSaidNotHidden) {
  Host h("6.1.0-18-amd64", "");
  auto r = test::converge_root(h.d.path(), "tasks:\n  - vfio: {load: false}\n", false);
  EXPECT_NE(r.tasks[0].result.msg.find("no update-initramfs, dracut or mkinitcpio found"), std::string::npos);
}

}  // namespace
}  // namespace gpt
