// The kernel-update guard: the hooks the vfio and kernel_cmdline (or grub_cmdline) modules install on a Debian 12
// tree, run with the real /bin/sh as update-initramfs and the kernel package would run them (the
// tree stands in for / through GPTAGENT_GUARD_ROOT; lsinitramfs is played by a script that prints
// a listing), and what the modules and `gptagent status` make of what the hooks recorded.
#include "agent/kernel_guard.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "agent/text.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::slurp;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

const std::string kRelease = "6.1.0-18-amd64";
const std::string kNewKernel = "6.1.0-57-amd64";

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
// The walkthrough's own module (playbooks/host.yaml) guards new kernels the same way.
constexpr const char* kGrubCmdline = R"(tasks:
  - name: IOMMU on
    grub_cmdline:
      iommu: auto
      present: [iommu=pt]
)";

// An initramfs listing as lsinitramfs prints it (paths of Debian 12's 6.1 kernel), with the vfio
// modules or without them.
std::string listing(bool with_vfio) {
  std::string out = "usr/lib/modules/" + kNewKernel + "/kernel/drivers/block/virtio_blk.ko\n" + "usr/lib/modules/" +
                    kNewKernel + "/kernel/fs/ext4/ext4.ko\n";
  if (with_vfio)
    out += "usr/lib/modules/" + kNewKernel + "/kernel/drivers/vfio/vfio.ko\n" + "usr/lib/modules/" + kNewKernel +
           "/kernel/drivers/vfio/vfio_iommu_type1.ko\n" + "usr/lib/modules/" + kNewKernel +
           "/kernel/drivers/vfio/pci/vfio-pci.ko\n";
  return out;
}

struct GuardHost : test::SampleHost {
  test::TempDir bin;
  GuardHost() : SampleHost("debian-12") {}
  // Runs a hook of the tree as its caller would: `hook ARGS...`, lsinitramfs printing `list`.
  test::ProcResult run_hook(const std::string& hook, const std::vector<std::string>& args, const std::string& list) {
    test::write(bin / "lsinitramfs", "#!/bin/sh\ncat <<'EOF'\n" + list + "EOF\n", 0755);
    std::vector<std::string> argv = {
        "-c",       "GPTAGENT_GUARD_ROOT=\"$1\" PATH=\"$2:/usr/bin:/bin\" exec /bin/sh \"$3\" \"$4\" \"$5\"",
        "sh",       root(),
        bin.path(), file(hook)};
    argv.insert(argv.end(), args.begin(), args.end());
    while (argv.size() < 8) argv.push_back("");
    return test::run_program("/bin/sh", argv);
  }
};

TEST(KernelGuard, TheInitramfsHookRecordsAndFailsLoudlyWhenANewKernelsInitramfsLacksVfio) {
  GuardHost host;
  auto c = test::converge_root(host.root(), kVfio, false);
  ASSERT_EQ(c.exit_code, 0) << c.load_errors.size();
  ASSERT_TRUE(fs::exists(host.file(kInitramfsGuard)));
  EXPECT_EQ(fs::status(host.file(kInitramfsGuard)).permissions(), fs::perms(0755));
  EXPECT_TRUE(has(slurp(host.file(kInitramfsGuard)), "for m in vfio vfio_iommu_type1 vfio_pci; do"));

  // A kernel installed later whose initramfs lacks the modules: loud, and recorded.
  test::write(host.file("/lib/modules/" + kNewKernel + "/modules.builtin"), "kernel/fs/ext4/ext4.ko\n");
  const std::string image = "/boot/initrd.img-" + kNewKernel;
  auto bad = host.run_hook(kInitramfsGuard, {kNewKernel, image}, listing(false));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(
      has(bad.err, "gptagent: kernel " + kNewKernel + ": " + image +
                       " lacks vfio vfio_iommu_type1 vfio_pci: vfio-pci will not claim the GPU when this kernel boots"))
      << bad.err;
  EXPECT_EQ(slurp(host.file(std::string(kGuardDir) + "/" + kNewKernel)),
            "kernel=" + kNewKernel + "\nkind=initramfs\nwhat=" + image + "\nmissing=vfio vfio_iommu_type1 vfio_pci\n");
  auto status = test::run_agent({"status", "--root", host.root()});
  EXPECT_TRUE(has(status.out, "kernel guard: " + kNewKernel + ": initramfs LACKS vfio vfio_iommu_type1 vfio_pci"))
      << status.out;

  // The recorded gap is drift: --check says so, apply rebuilds every initramfs.
  auto check = test::converge_root(host.root(), kVfio, true);
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_TRUE(
      has(check.tasks.front().result.msg, "the kernel guard recorded: " + image + " (kernel " + kNewKernel +
                                              ") lacks vfio, vfio_iommu_type1, vfio_pci: the initramfs is rebuilt"))
      << check.tasks.front().result.msg;
  auto repair = test::converge_root(host.root(), kVfio, false);
  EXPECT_EQ(repair.commands, std::vector<std::string>{"update-initramfs -u -k all"});

  // update-initramfs runs the hook again for each kernel: with the modules in, it is quiet.
  auto good = host.run_hook(kInitramfsGuard, {kNewKernel, image}, listing(true));
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_EQ(good.err, "");
  EXPECT_TRUE(has(slurp(host.file(std::string(kGuardDir) + "/" + kNewKernel)), "\nmissing=\n"));
  EXPECT_EQ(test::converge_root(host.root(), kVfio, true).exit_code, 0);

  // A kernel built with vfio in (Ubuntu's) needs no module files.
  test::write(
      host.file("/lib/modules/" + kNewKernel + "/modules.builtin"),
      "kernel/drivers/vfio/vfio.ko\nkernel/drivers/vfio/vfio_iommu_type1.ko\nkernel/drivers/vfio/pci/vfio-pci.ko\n");
  EXPECT_EQ(host.run_hook(kInitramfsGuard, {kNewKernel, image}, listing(false)).exit_code, 0);

  // A removed kernel's record is no drift.
  fs::remove_all(host.file("/lib/modules/" + kNewKernel));
  test::write(host.file(std::string(kGuardDir) + "/" + kNewKernel),
              "kernel=" + kNewKernel + "\nkind=initramfs\nwhat=" + image + "\nmissing=vfio_pci\n");
  EXPECT_EQ(test::converge_root(host.root(), kVfio, true).exit_code, 0);
}

class KernelGuardGrub : public ::testing::TestWithParam<const char*> {};

TEST_P(KernelGuardGrub, TheHookChecksANewKernelsEntryAndARegeneratedGrubCfgClearsTheGap) {
  const char* kCmdline = GetParam();
  GuardHost host;
  fs::create_directories(host.file("/etc/kernel/postinst.d"));
  auto c = test::converge_root(host.root(), kCmdline, false);
  ASSERT_EQ(c.exit_code, 0);
  ASSERT_TRUE(fs::exists(host.file(kCmdlineGuard)));
  EXPECT_TRUE(has(slurp(host.file(kCmdlineGuard)), "for p in intel_iommu=on iommu=pt; do"))
      << slurp(host.file(kCmdlineGuard));
  EXPECT_TRUE(has(c.tasks.front().result.msg, "wrote /etc/kernel/postinst.d/zzz-gptagent-cmdline"))
      << c.tasks.front().result.msg;
  EXPECT_TRUE(fs::path(kCmdlineGuard).filename().string() > "zz-update-grub")
      << "runs after update-grub wrote the entry";

  // A new kernel whose entry grub-mkconfig wrote without the parameters (say /etc/default/grub was
  // edited since): recorded, loud.
  fs::create_directories(host.file("/lib/modules/" + kNewKernel));
  const std::string entry_without = "\tlinux\t/boot/vmlinuz-" + kNewKernel + " root=UUID=e9b2 ro quiet\n";
  test::write(host.file("/boot/grub/grub.cfg"), "menuentry 'Debian GNU/Linux' {\n" + entry_without + "}\n");
  auto bad = host.run_hook(kCmdlineGuard, {kNewKernel, "/boot/vmlinuz-" + kNewKernel}, "");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(has(bad.err, "gptagent: kernel " + kNewKernel +
                               ": its GRUB entry in /boot/grub/grub.cfg lacks intel_iommu=on iommu=pt"))
      << bad.err;
  auto check = test::converge_root(host.root(), kCmdline, true);
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_TRUE(has(check.tasks.front().result.msg,
                  "kernel " + kNewKernel + "'s entry lacks intel_iommu=on iommu=pt: grub.cfg is regenerated"))
      << check.tasks.front().result.msg;
  auto repair = test::converge_root(host.root(), kCmdline, false);
  EXPECT_EQ(repair.commands, std::vector<std::string>{"update-grub"});

  // update-grub wrote the entry with them (no hook runs then): the agent sees it and records it.
  test::write(host.file("/boot/grub/grub.cfg"), "menuentry 'Debian GNU/Linux' {\n\tlinux\t/boot/vmlinuz-" + kNewKernel +
                                                    " root=UUID=e9b2 ro intel_iommu=on iommu=pt quiet\n}\n");
  auto after = test::converge_root(host.root(), kCmdline, false);
  EXPECT_EQ(after.exit_code, 0);
  EXPECT_EQ(after.stats.changed, 0);
  EXPECT_TRUE(has(slurp(host.file(std::string(kGuardDir) + "/" + kNewKernel + ".cmdline")), "\nmissing=\n"));
  auto good = host.run_hook(kCmdlineGuard, {kNewKernel, "/boot/vmlinuz-" + kNewKernel}, "");
  EXPECT_EQ(good.exit_code, 0) << good.err;
}

INSTANTIATE_TEST_SUITE_P(Modules, KernelGuardGrub, ::testing::Values(kCmdline, kGrubCmdline), [](const auto& info) {
  return std::string(info.param).find("grub_cmdline") != std::string::npos ? std::string("grub_cmdline")
                                                                           : std::string("kernel_cmdline");
});

// The walkthrough's host.yaml (grub_cmdline) and a VM playbook's kernel_cmdline (hugepages) share
// the one hook: each run keeps what the other put there, so neither rewrites it in turn, and a
// parameter a task wants absent leaves it.
TEST(KernelGuard, TasksWithDifferentParametersShareTheHookWithoutRewritingItInTurn) {
  GuardHost host;
  fs::create_directories(host.file("/etc/kernel/postinst.d"));
  constexpr const char* kHugepages = R"(tasks:
  - name: 1 GiB pages at boot
    kernel_cmdline:
      present: [hugepagesz=1G, hugepages=8]
)";
  ASSERT_EQ(test::converge_root(host.root(), kGrubCmdline, false).exit_code, 0);
  ASSERT_EQ(test::converge_root(host.root(), kHugepages, false).exit_code, 0);
  const std::string both = slurp(host.file(kCmdlineGuard));
  EXPECT_TRUE(has(both, "for p in intel_iommu=on iommu=pt hugepagesz=1G hugepages=8; do")) << both;
  for (const char* playbook : {kGrubCmdline, kHugepages, kCmdline}) {
    auto again = test::converge_root(host.root(), playbook, false);
    EXPECT_EQ(again.exit_code, 0);
    EXPECT_EQ(again.stats.changed, 0) << again.tasks.front().result.msg;
  }
  EXPECT_EQ(slurp(host.file(kCmdlineGuard)), both);

  // hugepages=16 replaces hugepages=8 in the GRUB file: the hook follows; `absent` takes one out.
  ASSERT_EQ(
      test::converge_root(host.root(),
                          "tasks:\n  - kernel_cmdline:\n      present: [hugepages=16]\n      absent: [iommu]\n", false)
          .exit_code,
      0);
  EXPECT_TRUE(has(slurp(host.file(kCmdlineGuard)), "for p in intel_iommu=on hugepagesz=1G hugepages=16; do"))
      << slurp(host.file(kCmdlineGuard));
}

TEST(KernelGuard, ARecordThatIsNotTheHooksIsAnError) {
  test::SampleHost host("debian-12");
  test::write(host.file(std::string(kGuardDir) + "/x"), "kernel=../../etc\nkind=initramfs\n");
  auto r = read_guard_records(Root(host.root()));
  ASSERT_FALSE(r);
  EXPECT_TRUE(has(r.error(), "not a record the kernel guard writes")) << r.error();
}

// Arch (mkinitcpio): the post hook mkinitcpio runs after each image it builds, `HOOK KERNEL IMAGE`
// with KERNELVERSION set (or unset, by an older mkinitcpio: the version is read from the image),
// lsinitcpio played by a script that prints a listing with Arch's paths.
TEST(KernelGuard, TheMkinitcpioPostHookChecksEachImageAndMkinitcpioRebuildsAGap) {
  const std::string arch_kernel = "6.10.2-arch1-1";
  test::SampleHost host("arch");
  test::TempDir bin;
  const auto run_hook = [&](const std::string& image, const std::string& version, bool with_vfio) {
    std::string list = "usr/lib/modules/" + arch_kernel + "/kernel/drivers/nvme/host/nvme.ko.zst\n";
    if (with_vfio)
      for (const char* m : {"vfio/vfio.ko.zst", "vfio/vfio_iommu_type1.ko.zst", "vfio/pci/vfio-pci.ko.zst"})
        list += "usr/lib/modules/" + arch_kernel + "/kernel/drivers/" + m + "\n";
    test::write(bin / "lsinitcpio", "#!/bin/sh\ncat <<'EOF'\n" + list + "EOF\n", 0755);
    return test::run_program(
        "/bin/sh", {"-c",
                    "GPTAGENT_GUARD_ROOT=\"$1\" PATH=\"$2:/usr/bin:/bin\" KERNELVERSION=\"$3\" "
                    "exec /bin/sh \"$4\" \"$5\" \"$6\"",
                    "sh", host.root(), bin.path(), version, host.file(kMkinitcpioGuard), "/boot/vmlinuz-linux", image});
  };
  auto c = test::converge_root(host.root(), kVfio, false);
  ASSERT_EQ(c.exit_code, 0);
  ASSERT_TRUE(fs::exists(host.file(kMkinitcpioGuard))) << c.tasks.back().result.msg;
  EXPECT_EQ(fs::status(host.file(kMkinitcpioGuard)).permissions(), fs::perms(0755));
  EXPECT_TRUE(has(slurp(host.file(kMkinitcpioGuard)), "for m in vfio vfio_iommu_type1 vfio_pci; do"));
  EXPECT_FALSE(fs::exists(host.file(kInitramfsGuard)));

  // pacman installed a kernel, and mkinitcpio -P built its image without the modules: loud, recorded.
  fs::create_directories(host.file("/lib/modules/" + arch_kernel));
  auto bad = run_hook("/boot/initramfs-linux.img", arch_kernel, false);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(has(bad.err, "gptagent: kernel " + arch_kernel +
                               ": /boot/initramfs-linux.img lacks vfio vfio_iommu_type1 vfio_pci: vfio-pci will not "
                               "claim the GPU when this kernel boots"))
      << bad.err;
  EXPECT_EQ(slurp(host.file(std::string(kGuardDir) + "/" + arch_kernel)),
            "kernel=" + arch_kernel +
                "\nkind=initramfs\nwhat=/boot/initramfs-linux.img\nmissing=vfio vfio_iommu_type1 vfio_pci\n");
  auto status = test::run_agent({"status", "--root", host.root()});
  EXPECT_TRUE(has(status.out, "kernel guard: " + arch_kernel + ": initramfs LACKS vfio vfio_iommu_type1 vfio_pci"))
      << status.out;

  // The gap is drift; apply rebuilds every preset's image (and mkinitcpio runs the hook again).
  auto check = test::converge_root(host.root(), kVfio, true);
  EXPECT_EQ(check.exit_code, 2);
  auto repair = test::converge_root(host.root(), kVfio, false);
  EXPECT_EQ(repair.commands, std::vector<std::string>{"mkinitcpio -P"});
  // Without KERNELVERSION the version is the modules' directory in the image.
  auto good = run_hook("/boot/initramfs-linux-fallback.img", "", true);
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_EQ(slurp(host.file(std::string(kGuardDir) + "/" + arch_kernel)),
            "kernel=" + arch_kernel + "\nkind=initramfs\nwhat=/boot/initramfs-linux-fallback.img\nmissing=\n");
  EXPECT_EQ(test::converge_root(host.root(), kVfio, true).exit_code, 0);
  // A unified kernel image alone (no initramfs argument) is nothing to check.
  EXPECT_EQ(run_hook("", arch_kernel, false).exit_code, 0);
}

}  // namespace
}  // namespace gpt
