// The kernel-update guard where kernels are installed through kernel-install (Fedora and RHEL
// with grubby, systemd-boot hosts): the plugins the vfio and kernel_cmdline modules write to
// /etc/kernel/install.d/, run with the real /bin/sh as kernel-install runs them (`add VERSION
// ENTRY_DIR IMAGE`; the tree stands in for / through GPTAGENT_GUARD_ROOT, lsinitrd is played by a
// script that prints a listing), and what the modules and `gptagent status` make of their records.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "agent/kernel_guard.hpp"
#include "agent/text.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::slurp;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

const std::string kNewKernel = "6.9.4-200.fc40.x86_64";
const std::string kMachine = "bb004f8f88fb4f2b9b6924abee13ae59";

constexpr const char* kVfio = R"(tasks:
  - name: vfio-pci claims the GPU at boot
    vfio:
      devices: ["0000:01:00.0"]
)";
constexpr const char* kCmdline = R"(tasks:
  - name: IOMMU on
    kernel_cmdline:
      iommu: auto
      present: [iommu=pt]
)";

// lsinitrd's listing (ls -l lines) of a Fedora 40 initramfs, with the vfio modules or without.
std::string lsinitrd(bool with_vfio) {
  std::string out = "Image: /boot/initramfs-" + kNewKernel + ".img: 38M\n" +
                    "========================================================================\n" +
                    "-rw-r--r--   1 root     root        30712 Jun  1 12:00 usr/lib/modules/" + kNewKernel +
                    "/kernel/drivers/block/virtio_blk.ko.xz\n";
  if (with_vfio)
    for (const char* m : {"vfio/vfio.ko.xz", "vfio/vfio_iommu_type1.ko.xz", "vfio/pci/vfio-pci.ko.xz"})
      out += "-rw-r--r--   1 root     root        20000 Jun  1 12:00 usr/lib/modules/" + kNewKernel +
             "/kernel/drivers/" + m + "\n";
  return out;
}

struct FedoraHost : test::SampleHost {
  test::TempDir bin;
  FedoraHost() : SampleHost("fedora-40") { test::write(file("/usr/bin/kernel-install"), "#!/bin/sh\nexit 1\n", 0755); }
  // Runs a plugin as kernel-install does: `PLUGIN add VERSION ENTRY_DIR IMAGE`, lsinitrd printing `list`.
  test::ProcResult run_plugin(const std::string& plugin, const std::string& command, const std::string& list) {
    test::write(bin / "lsinitrd", "#!/bin/sh\ncat <<'EOF'\n" + list + "EOF\n", 0755);
    return test::run_program(
        "/bin/sh",
        {"-c", "GPTAGENT_GUARD_ROOT=\"$1\" PATH=\"$2:/usr/bin:/bin\" exec /bin/sh \"$3\" \"$4\" \"$5\" \"$6\" \"$7\"",
         "sh", root(), bin.path(), file(plugin), command, kNewKernel, "/boot/" + kMachine + "/" + kNewKernel,
         "/usr/lib/modules/" + kNewKernel + "/vmlinuz"});
  }
  void new_kernel_entry(const std::string& options) {
    fs::create_directories(file("/lib/modules/" + kNewKernel));
    test::write(file("/boot/loader/entries/" + kMachine + "-" + kNewKernel + ".conf"),
                "title Fedora Linux (" + kNewKernel + ") 40 (Workstation Edition)\nversion " + kNewKernel +
                    "\nlinux /vmlinuz-" + kNewKernel + "\ninitrd /initramfs-" + kNewKernel + ".img\noptions " +
                    options + "\ngrub_users $grub_users\ngrub_arg --unrestricted\ngrub_class fedora\n");
  }
};

TEST(KernelGuardInstall, TheVfioPluginChecksTheInitramfsDracutBuiltForANewKernel) {
  FedoraHost host;
  auto c = test::converge_root(host.root(), kVfio, false);
  ASSERT_EQ(c.exit_code, 0);
  ASSERT_TRUE(fs::exists(host.file(kInstallInitramfsGuard))) << c.tasks.front().result.msg;
  EXPECT_EQ(fs::status(host.file(kInstallInitramfsGuard)).permissions(), fs::perms(0755));
  EXPECT_FALSE(fs::exists(host.file(kInitramfsGuard))) << "no update-initramfs here";
  EXPECT_TRUE(fs::path(kInstallInitramfsGuard).filename().string() > "50-dracut.install");

  // dracut wrote the new kernel's initramfs without the modules: loud, and recorded.
  host.new_kernel_entry("root=UUID=4a81 ro rhgb quiet intel_iommu=on");
  test::write(host.file("/boot/initramfs-" + kNewKernel + ".img"), "initramfs\n");
  auto bad = host.run_plugin(kInstallInitramfsGuard, "add", lsinitrd(false));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(has(bad.err, "gptagent: kernel " + kNewKernel + ": /boot/initramfs-" + kNewKernel +
                               ".img lacks vfio vfio_iommu_type1 vfio_pci: vfio-pci will not claim the GPU"))
      << bad.err;
  auto status = test::run_agent({"status", "--root", host.root()});
  EXPECT_TRUE(has(status.out, "kernel guard: " + kNewKernel + ": initramfs LACKS vfio vfio_iommu_type1 vfio_pci"))
      << status.out;
  auto check = test::converge_root(host.root(), kVfio, true);
  EXPECT_EQ(check.exit_code, 2);
  auto repair = test::converge_root(host.root(), kVfio, false);
  // dracut --regenerate-all runs no plugin: the initramfs handler runs the guard's again.
  EXPECT_EQ(repair.commands,
            (std::vector<std::string>{"dracut -f --regenerate-all",
                                      std::string(kInstallInitramfsGuard) + " add " + kNewKernel + " ''"}));

  // With the modules in, it is quiet; removing a kernel is no check at all.
  auto good = host.run_plugin(kInstallInitramfsGuard, "add", lsinitrd(true));
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_TRUE(has(slurp(host.file(std::string(kGuardDir) + "/" + kNewKernel)), "\nmissing=\n"));
  EXPECT_EQ(test::converge_root(host.root(), kVfio, true).exit_code, 0);
  EXPECT_EQ(host.run_plugin(kInstallInitramfsGuard, "remove", "").exit_code, 0);

  // systemd-boot's layout: dracut writes the initramfs into the entry's directory.
  fs::remove(host.file("/boot/initramfs-" + kNewKernel + ".img"));
  test::write(host.file("/boot/" + kMachine + "/" + kNewKernel + "/initrd"), "initramfs\n");
  auto entry_dir = host.run_plugin(kInstallInitramfsGuard, "add", lsinitrd(false));
  EXPECT_EQ(entry_dir.exit_code, 1);
  EXPECT_TRUE(has(entry_dir.err, "/boot/" + kMachine + "/" + kNewKernel + "/initrd lacks vfio")) << entry_dir.err;
}

TEST(KernelGuardInstall, TheCmdlinePluginChecksANewKernelsEntryAndGrubbysUpdateClearsTheGap) {
  FedoraHost host;
  auto c = test::converge_root(host.root(), kCmdline, false);
  ASSERT_EQ(c.exit_code, 0);
  ASSERT_TRUE(fs::exists(host.file(kInstallCmdlineGuard))) << c.tasks.front().result.msg;
  EXPECT_TRUE(has(c.tasks.front().result.msg, "wrote /etc/kernel/install.d/95-gptagent-cmdline.install"))
      << c.tasks.front().result.msg;
  EXPECT_TRUE(has(slurp(host.file(kInstallCmdlineGuard)), "for p in intel_iommu=on iommu=pt; do"));
  EXPECT_TRUE(fs::path(kInstallCmdlineGuard).filename().string() > "90-loaderentry.install");

  // The new kernel's entry was written without iommu=pt (from a /proc/cmdline before the reboot).
  host.new_kernel_entry("root=UUID=4a81 ro rhgb quiet intel_iommu=on");
  auto bad = host.run_plugin(kInstallCmdlineGuard, "add", "");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(has(bad.err, "gptagent: kernel " + kNewKernel + ": its boot entry (loader/entries/*-" + kNewKernel +
                               ".conf) lacks iommu=pt"))
      << bad.err;
  EXPECT_TRUE(has(slurp(host.file(std::string(kGuardDir) + "/" + kNewKernel + ".cmdline")), "\nmissing=iommu=pt\n"));
  auto check = test::converge_root(host.root(), kCmdline, true);
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_TRUE(has(check.tasks.front().result.msg, "kernel " + kNewKernel + "'s entry lacks iommu=pt"))
      << check.tasks.front().result.msg;

  // grubby --update-kernel=ALL put it on every entry: the agent sees it and records it.
  host.new_kernel_entry("root=UUID=4a81 ro rhgb quiet intel_iommu=on iommu=pt");
  const std::string old = "/boot/loader/entries/" + kMachine + "-6.8.5-301.fc40.x86_64.conf";
  test::write(host.file(old),
              std::regex_replace(slurp(host.file(old)), std::regex("intel_iommu=on"), "intel_iommu=on iommu=pt"));
  auto after = test::converge_root(host.root(), kCmdline, false);
  EXPECT_EQ(after.exit_code, 0);
  EXPECT_EQ(after.stats.changed, 0) << after.tasks.front().result.msg;
  EXPECT_TRUE(has(slurp(host.file(std::string(kGuardDir) + "/" + kNewKernel + ".cmdline")), "\nmissing=\n"));
  EXPECT_EQ(host.run_plugin(kInstallCmdlineGuard, "add", "").exit_code, 0);

  // Boot counting (systemd-boot): NAME-VERSION+TRIES.conf is the same kernel's entry.
  fs::remove(host.file("/boot/loader/entries/" + kMachine + "-" + kNewKernel + ".conf"));
  test::write(host.file("/boot/loader/entries/" + kMachine + "-" + kNewKernel + "+3.conf"),
              "title x\nlinux /vmlinuz\noptions ro quiet\n");
  auto counted = host.run_plugin(kInstallCmdlineGuard, "add", "");
  EXPECT_EQ(counted.exit_code, 1);
  EXPECT_TRUE(has(counted.err, "lacks intel_iommu=on iommu=pt")) << counted.err;
  auto options = loader_entry_options(Root(host.root()), kNewKernel);
  ASSERT_TRUE(options);
  EXPECT_EQ(*options, (std::vector<std::string>{"ro", "quiet"}));
  EXPECT_FALSE(loader_entry_options(Root(host.root()), "6.9.4"));
}

// grub_cmdline on a BootLoaderSpec host: GRUB_CMDLINE_LINUX is not where a new kernel's entry
// takes its options from, so the plugin checks the entry, and a gap asks grubby to put the
// parameters on every entry (the task's own grubby request carries only what it changed).
TEST(KernelGuardInstall, GrubCmdlineOnABlsHostGuardsNewEntriesAndGrubbyRepairsThem) {
  constexpr const char* kGrub = R"(tasks:
  - name: IOMMU on
    grub_cmdline:
      iommu: auto
      present: [iommu=pt]
)";
  FedoraHost host;
  auto c = test::converge_root(host.root(), kGrub, false);
  ASSERT_EQ(c.exit_code, 0);
  ASSERT_TRUE(fs::exists(host.file(kInstallCmdlineGuard))) << c.tasks.front().result.msg;
  EXPECT_TRUE(has(slurp(host.file(kInstallCmdlineGuard)), "for p in intel_iommu=on iommu=pt; do"))
      << slurp(host.file(kInstallCmdlineGuard));
  EXPECT_FALSE(fs::exists(host.file(kCmdlineGuard))) << "no update-grub postinst.d hook on Fedora";

  host.new_kernel_entry("root=UUID=4a81 ro rhgb quiet intel_iommu=on");
  auto bad = host.run_plugin(kInstallCmdlineGuard, "add", "");
  EXPECT_EQ(bad.exit_code, 1) << bad.err;
  auto check = test::converge_root(host.root(), kGrub, true);
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_TRUE(has(check.tasks.front().result.msg, "kernel " + kNewKernel + "'s entry lacks iommu=pt"))
      << check.tasks.front().result.msg;
  auto repair = test::converge_root(host.root(), kGrub, false);
  EXPECT_EQ(repair.exit_code, 0);
  ASSERT_EQ(repair.tasks.size(), 2u) << join(repair.commands, "\n");
  EXPECT_EQ(repair.tasks[1].module, "grubby");
  EXPECT_EQ(std::count_if(repair.commands.begin(), repair.commands.end(),
                          [](const std::string& cmd) {
                            return cmd.rfind("grubby --update-kernel=ALL '--args=intel_iommu=on iommu=pt'", 0) == 0;
                          }),
            1)
      << join(repair.commands, "\n");
}

TEST(KernelGuardInstall, HostsWithoutKernelInstallGetNoPlugin) {
  test::SampleHost host("fedora-40");
  ASSERT_EQ(test::converge_root(host.root(), kVfio, false).exit_code, 0);
  ASSERT_EQ(test::converge_root(host.root(), kCmdline, false).exit_code, 0);
  EXPECT_FALSE(fs::exists(host.file("/etc/kernel/install.d")));
}

}  // namespace
}  // namespace gpt
