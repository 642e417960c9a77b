#include <gtest/gtest.h>

#include <algorithm>
#include <boost/process.hpp>
#include <filesystem>
#include <map>
#include <set>

#include "agent/facts.hpp"
#include "agent/text.hpp"
#include "tests/support/converge.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using Lines = std::vector<std::string>;

const std::string kInitramfsModules =
    "# List of modules that you want to include in your initramfs.\n# They will be loaded at boot time in the order "
    "below.\n#\n"
    "# Syntax:  module_name [args ...]\n#\n# You must run update-initramfs(8) to effect this change.\n#\n# "
    "Examples:\n#\n# raid1\n# sd_mod\n";

// A small Debian-like host: initramfs-tools, kernel `release`, one GPU at 0000:01:00.{0,1}.
struct Host {
  TempDir d;
  explicit Host(const std::string& release = "6.1.0-18-amd64",
                const std::string& initramfs_tool = "usr/sbin/update-initramfs") {
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
  test::write(h.d / "proc/modules",
              "vfio 45056 0 - Live 0x0\nvfio_virqfd 16384 0 - Live 0x0\nvfio_iommu_type1 45056 0 - Live 0x0\nvfio_pci "
              "16384 0 - Live 0x0\n");
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {ids: [10DE:1B80, 10de:10f0], blacklist: [nouveau]}\n");
  EXPECT_EQ(h.read("/etc/modules-load.d/vfio.conf"),
            "# Managed by gptagent (GPU passthrough): changes made here by hand are "
            "replaced.\nvfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf"),
            "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n"
            "options vfio-pci ids=10de:1b80,10de:10f0\nsoftdep nouveau pre: vfio-pci\nsoftdep nvidia pre: vfio-pci\n"
            "softdep snd_hda_intel pre: vfio-pci\nblacklist nouveau\n");
  EXPECT_EQ(h.read("/etc/initramfs-tools/modules"),
            kInitramfsModules + "vfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n");
  EXPECT_EQ(r.commands, (Lines{"update-initramfs -u -k all"}));  // all loaded already: no modprobe
  EXPECT_TRUE(r.stats.reboot_required);
}

// udev loads a device's drivers by its modalias, in the initramfs too, possibly before vfio-pci:
// each module of the running kernel whose alias matches a chosen function gets its softdep (the
// kernel's real modules.alias). Bound to vfio-pci after the reboot, the functions keep them.
TEST(Vfio, TheKernelsOwnDriversForTheChosenFunctionsGoAfterVfioPci) {
  const std::string aliases = test::slurp(test::source_path("tests/fixtures/modules-alias/debian-12-6.1.0-50-amd64"));
  test::SampleHost fedora("fedora-40");  // an RTX 2070: VGA, HD audio, USB-C (xhci), UCSI
  test::write(fedora.file("/lib/modules/6.8.5-301.fc40.x86_64/modules.alias"), aliases);
  converge_twice(fedora.root(), "tasks:\n  - vfio: {gpus: ['0000:01:00.0'], load: false}\n");
  EXPECT_NE(
      test::slurp(fedora.file("/etc/modprobe.d/vfio.conf"))
          .find("softdep nouveau pre: vfio-pci\nsoftdep nvidia pre: vfio-pci\nsoftdep snd_hda_intel pre: vfio-pci\n"
                "softdep xhci_pci pre: vfio-pci\n"),
      std::string::npos)
      << test::slurp(fedora.file("/etc/modprobe.d/vfio.conf"));

  // QEMU's VGA (the lab's stand-in GPU): bochs, which Debian's generic kernel has.
  Host h;
  h.pci("0000:03:00.0", "0x1234", "0x1111");
  test::write(h.d / "sys/bus/pci/devices/0000:03:00.0/modalias",
              "pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00\n");
  test::write(h.d / "lib/modules/6.1.0-18-amd64/modules.alias", aliases);
  const std::string pb = "tasks:\n  - vfio: {devices: ['0000:03:00.0'], load: false}\n";
  converge_twice(h.d.path(), pb);
  EXPECT_NE(
      h.read("/etc/modprobe.d/vfio.conf").find("softdep snd_hda_intel pre: vfio-pci\nsoftdep bochs pre: vfio-pci\n"),
      std::string::npos)
      << h.read("/etc/modprobe.d/vfio.conf");
  fs::create_directories(h.d / "sys/bus/pci/drivers/vfio-pci");
  fs::create_symlink("../../../bus/pci/drivers/vfio-pci", h.d / "sys/bus/pci/devices/0000:03:00.0/driver");
  EXPECT_EQ(test::converge_root(h.d.path(), pb, false).stats.changed, 0) << "on vfio-pci after the reboot: as it was";
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
  EXPECT_EQ(ids.load_errors[0],
            "test.yaml:3:12: vfio argument 'ids': '10de-10f0' is not a vendor:device id like 10de:1b80");
  auto dev = test::converge_root(h.d.path(), "tasks:\n  - vfio: {devices: [0000:01:00.8]}\n", false);
  ASSERT_EQ(dev.load_errors.size(), 1u);
  EXPECT_NE(dev.load_errors[0].find("'0000:01:00.8' is not a PCI address like 0000:01:00.0"), std::string::npos);
  auto mod = test::converge_root(h.d.path(), "tasks:\n  - vfio: {modules: ['vfio; rm -rf /']}\n", false);
  ASSERT_EQ(mod.load_errors.size(), 1u);
}

TEST(Vfio, ForeignLineWithExactlyTheWantedIdsIsOk) {
  // Another file's line already gives vfio-pci the task's ids: nothing to merge, nothing doubled.
  Host h;
  const std::string mine = "# mine\noptions vfio_pci ids=10de:1b80 disable_vga=1\n";
  test::write(h.d / "etc/modprobe.d/gpu.conf", mine);
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {ids: [10de:1b80], load: false}\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/gpu.conf"), mine);
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf").find("ids="), std::string::npos);
  EXPECT_NE(r.tasks[0].result.msg.find("; the ids are in the user's /etc/modprobe.d/gpu.conf:2"), std::string::npos)
      << r.tasks[0].result.msg;

  // The same set in another order, in the user's own vfio.conf that has the softdeps too: the task
  // is ok as it stands, and nothing at all is written.
  Host same;
  const std::string user =
      "options vfio-pci ids=10de:10f0,10DE:1B80\nsoftdep nouveau pre: vfio-pci\n"
      "softdep nvidia pre: vfio_pci\nsoftdep snd_hda_intel pre: vfio-pci\n";
  test::write(same.d / "etc/modprobe.d/vfio.conf", user);
  test::write(same.d / "etc/modules-load.d/vfio.conf",
              "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n"
              "vfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n");
  const auto before = test::snapshot(same.d.path());
  auto ok = test::converge_root(same.d.path(),
                                "tasks:\n  - vfio: {devices: ['01:00.0'], load: false, initramfs: false}\n", false);
  EXPECT_EQ(ok.exit_code, 0);
  ASSERT_EQ(ok.tasks.size(), 1u);
  EXPECT_EQ(ok.tasks[0].result.status, Outcome::ok) << ok.tasks[0].result.msg;
  EXPECT_EQ(test::differences(test::snapshot(same.d.path()), before), "");
}

TEST(Vfio, KeepsEveryUserLineAndMergesTheIdsIntoOneOptionsLine) {
  Host h;
  const std::string user =
      "# My passthrough setup, see the wiki\n"
      "\n"
      "options vfio-pci ids=10de:1b81,10de:10f0 disable_vga=1\n"
      "install vfio-pci /sbin/vfio-pci-override.sh\n"
      "softdep nvidia pre: vfio-pci\n"
      "\tblacklist nouveau   # old habits\n";
  test::write(h.d / "etc/modprobe.d/vfio.conf", user);
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {devices: ['01:00.0'], blacklist: [nouveau], load: false}\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf"),
            "# My passthrough setup, see the wiki\n"
            "\n"
            "options vfio-pci ids=10de:1b81,10de:10f0,10de:1b80 disable_vga=1\n"
            "install vfio-pci /sbin/vfio-pci-override.sh\n"
            "softdep nvidia pre: vfio-pci\n"
            "\tblacklist nouveau   # old habits\n"
            "# BEGIN gptagent vfio: the lines up to END are the agent's; the rest of this file is yours and kept\n"
            "softdep nouveau pre: vfio-pci\n"
            "softdep snd_hda_intel pre: vfio-pci\n"
            "# END gptagent vfio\n");
  const Result& res = r.tasks[0].result;
  EXPECT_NE(res.msg.find("; merged ids 10de:1b80 into /etc/modprobe.d/vfio.conf:3 (kept the user's 10de:1b81)"),
            std::string::npos)
      << res.msg;
  EXPECT_NE(res.diff.find("-options vfio-pci ids=10de:1b81,10de:10f0 disable_vga=1\n"
                          "+options vfio-pci ids=10de:1b81,10de:10f0,10de:1b80 disable_vga=1\n"),
            std::string::npos)
      << res.diff;
  EXPECT_EQ(r.commands, (Lines{"update-initramfs -u -k all"}));
}

TEST(Vfio, MergesIntoTheUsersLineInAnotherFileNotASecondLine) {
  Host h;
  const std::string user = "# GTX 1080 for the VM\noptions vfio_pci disable_vga=1 \"ids=10de:1b81\" # the card\n";
  test::write(h.d / "etc/modprobe.d/gpu-passthrough.conf", user);
  // An ids line the agent wrote in its own file before the user's line came: it goes.
  test::write(h.d / "etc/modprobe.d/vfio.conf",
              "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n"
              "options vfio-pci ids=10de:1b80\n");
  auto r = converge_twice(h.d.path(), "tasks:\n  - vfio: {devices: ['01:00.0'], load: false}\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/gpu-passthrough.conf"),
            "# GTX 1080 for the VM\noptions vfio_pci disable_vga=1 \"ids=10de:1b81,10de:1b80,10de:10f0\" # the card\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf"),
            "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n"
            "softdep nouveau pre: vfio-pci\nsoftdep nvidia pre: vfio-pci\nsoftdep snd_hda_intel pre: vfio-pci\n");
  EXPECT_NE(r.tasks[0].result.msg.find(
                "; merged ids 10de:1b80,10de:10f0 into /etc/modprobe.d/gpu-passthrough.conf:2 (kept the "
                "user's 10de:1b81); wrote /etc/modprobe.d/gpu-passthrough.conf, /etc/modprobe.d/vfio.conf"),
            std::string::npos)
      << r.tasks[0].result.msg;
}

TEST(Vfio, TheAgentsBlockInAUserFileIsReplacedNotDoubled) {
  Host h;
  const std::string user = "# mine\nblacklist radeon";  // no newline at the end
  test::write(h.d / "etc/modprobe.d/vfio.conf", user);
  converge_twice(h.d.path(),
                 "tasks:\n  - vfio: {ids: [10de:1b80], softdep: false, blacklist: [nouveau], load: false}\n");
  const std::string begin =
      "# BEGIN gptagent vfio: the lines up to END are the agent's; the rest of this file is yours and kept\n";
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf"),
            user + "\n" + begin + "options vfio-pci ids=10de:1b80\nblacklist nouveau\n# END gptagent vfio\n");
  // The user adds a line after the block; the task changes: only the block follows it.
  test::write(h.d / "etc/modprobe.d/vfio.conf",
              h.read("/etc/modprobe.d/vfio.conf") + "options snd_hda_intel power_save=0\n");
  converge_twice(h.d.path(), "tasks:\n  - vfio: {ids: [10de:1b80, 10de:10f0], softdep: false, load: false}\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf"),
            user + "\n" + begin +
                "options vfio-pci ids=10de:1b80,10de:10f0\n# END gptagent vfio\noptions snd_hda_intel power_save=0\n");
  // Nothing left of the agent's: the block goes, the user's lines stay.
  converge_twice(h.d.path(), "tasks:\n  - vfio: {softdep: false, load: false}\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf"), user + "\noptions snd_hda_intel power_save=0\n");
}

TEST(Vfio, TheAgentsOwnFileIsStillReplacedWhole) {
  Host h;
  test::write(h.d / "etc/modprobe.d/vfio.conf",
              "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n"
              "options vfio-pci ids=1234:5678\nsoftdep nouveau pre: vfio-pci\nblacklist nouveau\n");
  converge_twice(h.d.path(), "tasks:\n  - vfio: {ids: [10de:1b80], load: false}\n");
  EXPECT_EQ(h.read("/etc/modprobe.d/vfio.conf"),
            "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n"
            "options vfio-pci ids=10de:1b80\nsoftdep nouveau pre: vfio-pci\nsoftdep nvidia pre: vfio-pci\n"
            "softdep snd_hda_intel pre: vfio-pci\n");
}

// Runs a task that must be refused: exit 1, this message, the tree as it was.
void expect_refused(const std::string& root, const std::string& pb, const std::string& msg) {
  const auto before = test::snapshot(root);
  for (const bool check : {true, false}) {
    auto r = test::converge_root(root, pb, check);
    EXPECT_EQ(r.exit_code, 1);
    ASSERT_FALSE(r.tasks.empty());
    EXPECT_EQ(r.tasks.back().result.msg, msg);
    EXPECT_EQ(test::differences(test::snapshot(root), before), "");
  }
}

TEST(Vfio, RefusesUserIdsNamingTheBootGpuWithFileAndLine) {
  Host h;
  h.pci("0000:00:02.0", "0x8086", "0x3e92");
  test::write(h.d / "sys/bus/pci/devices/0000:00:02.0/class", "0x030000\n");
  test::write(h.d / "sys/bus/pci/devices/0000:00:02.0/boot_vga", "1\n");
  test::write(h.d / "etc/modprobe.d/vfio.conf", "# both GPUs\noptions vfio-pci ids=10de:1b80,8086:3E92\n");
  expect_refused(
      h.d.path(), "tasks:\n  - vfio: {devices: ['01:00.0'], load: false}\n",
      "/etc/modprobe.d/vfio.conf:2: the user's vfio-pci ids include 8086:3E92, which is 0000:00:02.0 (VGA compatible "
      "controller, the boot VGA, 8086:3e92), the host's boot GPU: vfio-pci would take it at the next boot; take "
      "8086:3E92 out of 'options vfio-pci ids=10de:1b80,8086:3E92' (nothing written)");
}

TEST(Vfio, RefusesTwoUserIdsLinesInDifferentFiles) {
  Host h;
  test::write(h.d / "etc/modprobe.d/a-gpu.conf", "options vfio-pci ids=10de:1b81\n");
  test::write(h.d / "etc/modprobe.d/vfio.conf", "# mine\noptions vfio_pci ids=10de:1b80 disable_vga=1\n");
  expect_refused(
      h.d.path(), "tasks:\n  - vfio: {ids: [10de:1b80], load: false}\n",
      "/etc/modprobe.d/a-gpu.conf:1: one of 2 lines that give vfio-pci a list of ids: /etc/modprobe.d/a-gpu.conf:1 "
      "'options vfio-pci ids=10de:1b81', /etc/modprobe.d/vfio.conf:2 'options vfio_pci ids=10de:1b80 disable_vga=1' "
      "(modprobe passes them all, and only the last one counts): keep one line of ids (nothing written)");
  // Without ids of its own, the task leaves those lines alone.
  EXPECT_EQ(test::converge_root(h.d.path(), "tasks:\n  - vfio: {load: false}\n", false).exit_code, 0);
  EXPECT_EQ(h.read("/etc/modprobe.d/a-gpu.conf"), "options vfio-pci ids=10de:1b81\n");
}

TEST(Vfio, RefusesWhatTheByAddressModeCannotMerge) {
  // Two GTX 1070s, the boot VGA's the host's: 02:00 goes by address, so neither an ids entry of
  // the shared ids nor an install hook of the user's can stay.
  const std::string pb = "tasks:\n  - vfio: {gpus: auto, load: false}\n";
  test::SampleHost ids("two-gpus-boot-vga");
  test::write(ids.file("/etc/modprobe.d/vfio.conf"), "options vfio-pci ids=10de:10f0\n");
  expect_refused(
      ids.root(), pb,
      "/etc/modprobe.d/vfio.conf:1: the user's vfio-pci ids include 10de:10f0, which is 0000:01:00.1 (Audio device, "
      "on snd_hda_intel, 10de:10f0), not passed through: vfio-pci must take this task's GPU by address, not by id; "
      "take 10de:10f0 out of 'options vfio-pci ids=10de:10f0' (nothing written)");
  test::SampleHost hook("two-gpus-boot-vga");
  test::write(hook.file("/etc/modprobe.d/gpu.conf"), "# bind early\n\ninstall vfio_pci /usr/local/bin/vfio-early.sh\n");
  expect_refused(
      hook.root(), pb,
      "/etc/modprobe.d/gpu.conf:3 has the user's own 'install vfio_pci /usr/local/bin/vfio-early.sh', and binding by "
      "address needs this task's install line for vfio-pci, of which modprobe runs one: fold the two together by "
      "hand, or pass the GPU by id (nothing written)");
  // A user's line naming another card entirely is kept beside the install line.
  test::SampleHost other("two-gpus-boot-vga");
  test::write(other.file("/etc/modprobe.d/vfio.conf"), "options vfio-pci ids=1002:67df disable_idle_d3=1\n");
  converge_twice(other.root(), pb);
  const std::string conf = test::slurp(other.file("/etc/modprobe.d/vfio.conf"));
  EXPECT_TRUE(conf.starts_with("options vfio-pci ids=1002:67df disable_idle_d3=1\n# BEGIN gptagent vfio")) << conf;
  EXPECT_NE(conf.find("\ninstall vfio-pci /bin/sh -c 'for d in 0000:02:00.0 0000:02:00.1;"), std::string::npos) << conf;
}

TEST(Vfio, RefusesABlockWhoseEndLineIsGone) {
  Host h;
  test::write(
      h.d / "etc/modprobe.d/vfio.conf",
      "# mine\n# BEGIN gptagent vfio: the lines up to END are the agent's; the rest of this file is yours and kept\n"
      "options vfio-pci ids=10de:1b80\nblacklist nouveau\n");
  expect_refused(
      h.d.path(), "tasks:\n  - vfio: {ids: [10de:1b80], load: false}\n",
      "/etc/modprobe.d/vfio.conf:2 opens the agent's lines with '# BEGIN gptagent' but no '# END gptagent' closes "
      "them: put the END line back where they end (nothing written)");
}

TEST(Vfio, AUsersModulesLoadFileAndDracutDropInKeepTheirLinesAndGetOnlyWhatTheyLack) {
  // The wiki's /etc/modules-load.d/vfio.conf, with Looking Glass's kvmfr beside the vfio modules.
  Host h;
  const std::string wiki = "# from the Arch wiki\nvfio_pci\nvfio\nkvmfr\n";
  test::write(h.d / "etc/modules-load.d/vfio.conf", wiki);
  converge_twice(h.d.path(), "tasks:\n  - vfio: {load: false}\n");
  EXPECT_EQ(h.read("/etc/modules-load.d/vfio.conf"), wiki + "vfio_iommu_type1\nvfio_virqfd\n");
  // One that already names them all is left byte for byte.
  Host all;
  const std::string complete = "vfio\nvfio_iommu_type1\nvfio-pci\nvfio_virqfd";
  test::write(all.d / "etc/modules-load.d/vfio.conf", complete);
  test::converge_root(all.d.path(), "tasks:\n  - vfio: {load: false}\n", false);
  EXPECT_EQ(all.read("/etc/modules-load.d/vfio.conf"), complete);

  // A user's dracut drop-in of that name: kept, one force_drivers line for what it lacks.
  Host fedora("6.8.5-301.fc40.x86_64", "usr/bin/dracut");
  const std::string dropin = "# mine\nadd_drivers+=\" vfio vfio_pci \"\nhostonly=\"yes\"\n";
  test::write(fedora.d / "etc/dracut.conf.d/vfio.conf", dropin);
  converge_twice(fedora.d.path(), "tasks:\n  - vfio: {load: false}\n");
  EXPECT_EQ(fedora.read("/etc/dracut.conf.d/vfio.conf"),
            dropin + "force_drivers+=\" vfio_iommu_type1 \"  # added by gptagent (vfio)\n");
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
    if (in.find("\"ext4\"") != std::string::npos)
      pb = "tasks:\n  - vfio: {load: false, modules: [vfio, vfio_iommu_type1]}\n";
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
       "/etc/mkinitcpio.conf:1: not valid shell (bash -n refuses it): redirection unexpected (line 1 is a "
       "merge-conflict "
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
)",
                               false);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.commands, (Lines{"update-initramfs -u -k all"}));
}

TEST(Vfio, ABuiltInVfioPciGetsItsIdsOnTheKernelCommandLine) {
  Host h("5.15.0-105-generic");
  test::write(h.d / "etc/os-release", "ID=ubuntu\nID_LIKE=debian\n");
  test::write(h.d / "usr/sbin/update-grub", "#!/bin/sh\n", 0755);
  test::write(h.d / "etc/default/grub", "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n");
  test::write(
      h.d / "lib/modules/5.15.0-105-generic/modules.builtin",
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
  test::converge_root(never.d.path(), "tasks:\n  - vfio: {ids: [10de:2684], load: false, kernel_cmdline: never}\n",
                      false);
  EXPECT_EQ(never.read("/etc/default/grub"), "GRUB_CMDLINE_LINUX=\"\"\n");
}

TEST(Vfio, NoInitramfsToolIsSaidNotHidden) {
  Host h("6.1.0-18-amd64", "");
  auto r = test::converge_root(h.d.path(), "tasks:\n  - vfio: {load: false}\n", false);
  EXPECT_NE(r.tasks[0].result.msg.find("no update-initramfs, dracut or mkinitcpio found"), std::string::npos);
}

// ---- the corpus: real modprobe.d files (tests/fixtures/modprobe/SOURCES.md says whose) ----

// The lines of a text without their '\n', the agent's marked block left out.
std::vector<std::string> user_lines(const std::string& text) {
  std::vector<std::string> out;
  bool block = false;
  for (std::string_view l : lines(text)) {
    if (trim(l).starts_with("# BEGIN gptagent")) block = true;
    if (!block) out.emplace_back(l);
    if (trim(l).starts_with("# END gptagent")) block = false;
  }
  return out;
}

bool vfio_pci_options(std::string_view line) {
  auto w = words(line, true);
  return w.size() >= 2 && w[0] == "options" && module_name(w[1]) == "vfio_pci";
}

// The ids of every `options vfio-pci ... ids=` command in force in a modprobe.d text, as modprobe
// reads it (a backslash joins lines; '#' lines are none), one list per command, lowercased.
std::vector<std::vector<std::string>> ids_commands(const std::string& text) {
  std::vector<std::vector<std::string>> out;
  std::string joined;
  for (std::string_view l : lines(text)) {
    if (l.ends_with('\\')) {
      joined += l.substr(0, l.size() - 1);
      continue;
    }
    joined += l;
    auto w = words(joined, true);
    joined.clear();
    if (w.size() < 3 || w[0] != "options" || module_name(w[1]) != "vfio_pci") continue;
    std::optional<std::vector<std::string>> ids;
    for (std::string word : w) {
      word.erase(std::remove(word.begin(), word.end(), '"'), word.end());
      if (!word.starts_with("ids=")) continue;
      ids.emplace();  // the last ids= of a line is the one the kernel keeps
      std::string list = word.substr(4);
      std::replace(list.begin(), list.end(), ',', ' ');
      for (const auto& id : words(list)) ids->push_back(lower(id));
    }
    if (ids) out.push_back(*ids);
  }
  return out;
}

TEST(Vfio, CorpusEveryUserLineSurvives) {
  namespace fs = std::filesystem;
  const std::string dir = SOURCE_DIR "/tests/fixtures/modprobe";
  std::vector<std::string> names;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".conf") names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  ASSERT_GE(names.size(), 10u) << dir << " should hold at least 10 real modprobe.d files";
  // The files that must be refused, and what the message says after "FILE:LINE".
  const std::map<std::string, std::string> refused = {
      // Five ids lines meant as one list: only the last one counts, which the refusal says.
      {"05-vfio-commented-multi-options-proxmox.conf", ": one of 5 lines that give vfio-pci a list of ids: "},
  };
  const std::vector<std::string> task_ids = {"10de:1b80", "10de:10f0"};
  const std::string pb = "tasks:\n  - vfio: {devices: ['01:00.0'], load: false}\n";
  std::set<std::string> seen_refused;
  for (const auto& name : names) {
    const std::string original = test::slurp(dir + "/" + name);
    for (const std::string& placed : std::set<std::string>{"vfio.conf", name}) {
      SCOPED_TRACE(name + " as /etc/modprobe.d/" + placed);
      Host h;
      const std::string path = "/etc/modprobe.d/" + placed;
      test::write(h.d.path() + path, original);
      if (auto it = refused.find(name); it != refused.end()) {
        seen_refused.insert(name);
        const auto before = test::snapshot(h.d.path());
        auto r = test::converge_root(h.d.path(), pb, false);
        EXPECT_EQ(r.exit_code, 1);
        ASSERT_FALSE(r.tasks.empty());
        const std::string& msg = r.tasks[0].result.msg;
        EXPECT_TRUE(msg.starts_with(path + ":")) << msg;
        EXPECT_NE(msg.find(it->second), std::string::npos) << msg;
        EXPECT_EQ(test::differences(test::snapshot(h.d.path()), before), "");
        continue;
      }
      converge_twice(h.d.path(), pb);
      // Every line of the user's is where it was; only an `options vfio-pci` line may differ.
      const auto was = user_lines(original), is = user_lines(h.read(path));
      ASSERT_EQ(is.size(), was.size()) << h.read(path);
      int changed = 0;
      for (size_t i = 0; i < was.size(); ++i) {
        if (is[i] == was[i]) continue;
        ++changed;
        EXPECT_TRUE(vfio_pci_options(was[i]))
            << "line " << i + 1 << " changed: '" << was[i] << "' -> '" << is[i] << "'";
      }
      EXPECT_LE(changed, 1);
      // One ids list in force across the .conf files, with the user's ids and the task's.
      std::vector<std::vector<std::string>> in_force;
      for (const auto& e : fs::directory_iterator(h.d / "etc/modprobe.d"))
        if (e.path().extension() == ".conf")
          for (auto& ids : ids_commands(test::slurp(e.path().string()))) in_force.push_back(ids);
      ASSERT_EQ(in_force.size(), 1u);
      std::vector<std::string> wanted = task_ids;
      for (const auto& ids : ids_commands(original)) wanted.insert(wanted.end(), ids.begin(), ids.end());
      for (const auto& id : wanted)
        EXPECT_NE(std::find(in_force[0].begin(), in_force[0].end(), id), in_force[0].end()) << id << " not in force";
    }
  }
  for (const auto& [name, why] : refused) EXPECT_TRUE(seen_refused.count(name)) << name << " is not in the corpus";
}

}  // namespace
}  // namespace gpt
