// playbooks/host.yaml, the walkthrough's whole host side, on a sample tree per distribution: the
// exact commands each distribution needs, changed then ok, and --check predicting the first run.
#include <gtest/gtest.h>

#include "tests/support/converge.hpp"

namespace gpt {
namespace {

using Lines = std::vector<std::string>;

struct Distro {
  std::string tree;
  Lines commands;        // recorded on the first apply, in order
  Lines files;           // changed on the first apply, besides /etc/default/grub
  std::string vfio_ids;  // the options line vfio-pci gets
};

void PrintTo(const Distro& d, std::ostream* os) { *os << d.tree; }

const std::vector<Distro> kDistros = {
    {"debian-12",
     {"modprobe -a vfio vfio_iommu_type1 vfio_pci vfio_virqfd", "update-grub", "update-initramfs -u -k all"},
     {"/etc/modprobe.d/vfio.conf", "/etc/initramfs-tools/modules", "/etc/modules-load.d/vfio.conf"},
     "options vfio-pci ids=10de:1b80,10de:10f0"},
    // Ubuntu builds vfio into the kernel: nothing to load, and the ids go on the kernel command line.
    {"ubuntu-22.04",
     {"update-grub", "update-initramfs -u -k all"},
     {"/etc/modprobe.d/vfio.conf", "/etc/initramfs-tools/modules", "/etc/default/grub.d/gptagent-vfio.cfg",
      "/etc/modules-load.d/vfio.conf"},
     "options vfio-pci ids=10de:1b80,10de:10f0"},
    {"ubuntu-24.04",
     {"update-grub", "update-initramfs -u -k all"},
     {"/etc/modprobe.d/vfio.conf", "/etc/initramfs-tools/modules", "/etc/default/grub.d/gptagent-vfio.cfg",
      "/etc/modules-load.d/vfio.conf"},
     "options vfio-pci ids=10de:2206,10de:1aef"},
    {"fedora-40",
     {"modprobe -a vfio vfio_iommu_type1 vfio_pci", "grub2-mkconfig -o /boot/grub2/grub.cfg",
      "grubby --update-kernel=ALL '--args=intel_iommu=on iommu=pt nouveau.modeset=0'", "dracut -f --regenerate-all"},
     {"/etc/modprobe.d/vfio.conf", "/etc/dracut.conf.d/vfio.conf", "/etc/modules-load.d/vfio.conf"},
     "options vfio-pci ids=10de:1f07,10de:10f9,10de:1ada,10de:1adb"},
    {"arch",
     {"modprobe -a vfio vfio_iommu_type1 vfio_pci", "grub-mkconfig -o /boot/grub/grub.cfg", "mkinitcpio -P"},
     {"/etc/modprobe.d/vfio.conf", "/etc/mkinitcpio.conf", "/etc/modules-load.d/vfio.conf"},
     "options vfio-pci ids=10de:2684,10de:22ba"},
};

class HostPlaybook : public ::testing::TestWithParam<Distro> {
 protected:
  std::string playbook() { return test::slurp(test::source_path("playbooks/host.yaml")); }
};

TEST_P(HostPlaybook, ConvergesWithTheDistributionsOwnCommands) {
  const Distro& d = GetParam();
  test::SampleHost host(d.tree);
  const auto pristine = test::snapshot(host.root());

  auto check = test::converge_root(host.root(), playbook(), true);
  ASSERT_TRUE(check.load_errors.empty()) << check.load_errors.front();
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_TRUE(check.commands.empty());
  EXPECT_EQ(test::snapshot(host.root()), pristine) << "--check changed the tree";

  auto first = test::converge_root(host.root(), playbook(), false);
  ASSERT_EQ(first.exit_code, 0) << first.tasks.back().name << ": " << first.tasks.back().result.msg;
  EXPECT_EQ(first.commands, d.commands);
  EXPECT_EQ(first.changes(), check.changes()) << "--check did not predict the first run";
  EXPECT_TRUE(first.stats.reboot_required);
  EXPECT_EQ(first.tasks[0].name, "preflight (automatic: the playbook takes GPUs)");
  Lines files = first.tasks[3].result.data["files"];  // the vfio task
  EXPECT_EQ(files, d.files);
  EXPECT_NE(test::slurp(host.file("/etc/modprobe.d/vfio.conf")).find(d.vfio_ids + "\n"), std::string::npos);
  EXPECT_EQ(first.tasks[2].result.status, Outcome::changed) << "every sample tree has an NVIDIA X11 config";

  auto second = test::converge_root(host.root(), playbook(), false);
  EXPECT_EQ(second.stats.changed, 0);
  EXPECT_TRUE(second.commands.empty());
  for (const auto& t : second.tasks) EXPECT_EQ(t.result.status, Outcome::ok) << t.name << ": " << t.result.msg;
  EXPECT_EQ(test::converge_root(host.root(), playbook(), true).exit_code, 0);
}

TEST_P(HostPlaybook, NothingRunsUnderASandboxRoot) {
  const Distro& d = GetParam();
  test::SampleHost host(d.tree);
  auto first = test::converge_root(host.root(), playbook(), false, /*allow_system_commands=*/false);
  EXPECT_EQ(first.exit_code, 0);
  EXPECT_TRUE(first.commands.empty());
  for (const auto& t : first.tasks)
    if (t.handler) {
      EXPECT_EQ(t.result.status, Outcome::skipped) << t.name;
      EXPECT_NE(t.result.msg.find("not run under --root"), std::string::npos);
    }
  auto second = test::converge_root(host.root(), playbook(), false, false);
  EXPECT_EQ(second.stats.changed, 0);
}

INSTANTIATE_TEST_SUITE_P(SampleTrees, HostPlaybook, ::testing::ValuesIn(kDistros), [](const auto& info) {
  std::string n = info.param.tree;
  for (char& c : n)
    if (c == '-' || c == '.') c = '_';
  return n;
});

}  // namespace
}  // namespace gpt
