// playbooks/host.yaml, the walkthrough's whole host side, on a sample tree per distribution: the
// exact commands each distribution needs, changed then ok, and --check predicting the first run.
// The trees carry their package databases; the package managers are stood in for at the host
// boundary (tests/support/package_managers.hpp) and systemctl works offline on the tree
// (`systemctl --root`), so the playbook installs the virtualization set and enables libvirt's
// daemon as on a bare server.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/support/converge.hpp"

namespace gpt {
namespace {

using Lines = std::vector<std::string>;

struct Distro {
  std::string tree;
  Lines commands;        // recorded on the first apply, in order; {root} is the tree
  Lines files;           // changed on the first apply, besides /etc/default/grub
  std::string vfio_ids;  // the options line vfio-pci gets
};

void PrintTo(const Distro& d, std::ostream* os) { *os << d.tree; }

const std::string kApt =
    "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l APT_LISTCHANGES_FRONTEND=none apt-get -q -y -o "
    "DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install "
    "qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients ovmf";
const std::string kRpmQuery =
    "rpm --root {root} --dbpath /var/lib/rpm -qa --qf '%{NAME}\\t%{ARCH}\\t[%{PROVIDENAME} ]\\n'";
Lines enable(const std::string& unit) {
  return {"systemctl --root={root} is-enabled " + unit, "systemctl --root={root} enable " + unit};
}
Lines plus(Lines a, const Lines& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

const std::vector<Distro> kDistros = {
    {"debian-12",
     plus(plus({kApt}, enable("libvirtd.service")),
          {"modprobe -a vfio vfio_iommu_type1 vfio_pci vfio_virqfd", "update-grub", "update-initramfs -u -k all"}),
     {"/etc/modprobe.d/vfio.conf", "/etc/initramfs-tools/modules", "/etc/modules-load.d/vfio.conf",
      "/etc/initramfs/post-update.d/gptagent-vfio"},
     "options vfio-pci ids=10de:1b80,10de:10f0"},
    // Ubuntu builds vfio into the kernel: nothing to load, and the ids go on the kernel command line.
    {"ubuntu-22.04",
     plus(plus({kApt}, enable("libvirtd.service")), {"update-grub", "update-initramfs -u -k all"}),
     {"/etc/modprobe.d/vfio.conf", "/etc/initramfs-tools/modules", "/etc/default/grub.d/gptagent-vfio.cfg",
      "/etc/modules-load.d/vfio.conf", "/etc/initramfs/post-update.d/gptagent-vfio"},
     "options vfio-pci ids=10de:1b80,10de:10f0"},
    {"ubuntu-24.04",
     plus(plus({kApt}, enable("libvirtd.service")), {"update-grub", "update-initramfs -u -k all"}),
     {"/etc/modprobe.d/vfio.conf", "/etc/initramfs-tools/modules", "/etc/default/grub.d/gptagent-vfio.cfg",
      "/etc/modules-load.d/vfio.conf", "/etc/initramfs/post-update.d/gptagent-vfio"},
     "options vfio-pci ids=10de:2206,10de:1aef"},
    // Fedora runs libvirt's modular daemons: virtqemud for QEMU.
    {"fedora-40",
     plus(plus({kRpmQuery, "dnf -y install qemu-kvm qemu-img libvirt-daemon-kvm libvirt-client edk2-ovmf", kRpmQuery},
               enable("virtqemud.service")),
          {"modprobe -a vfio vfio_iommu_type1 vfio_pci", "grub2-mkconfig -o /boot/grub2/grub.cfg",
           "grubby --update-kernel=ALL '--args=intel_iommu=on iommu=pt nouveau.modeset=0'",
           "dracut -f --regenerate-all"}),
     {"/etc/modprobe.d/vfio.conf", "/etc/dracut.conf.d/vfio.conf", "/etc/modules-load.d/vfio.conf"},
     "options vfio-pci ids=10de:1f07,10de:10f9,10de:1ada,10de:1adb"},
    {"arch",
     plus(plus({"pacman -S --noconfirm --needed qemu-base qemu-img libvirt edk2-ovmf"}, enable("libvirtd.service")),
          {"modprobe -a vfio vfio_iommu_type1 vfio_pci", "grub-mkconfig -o /boot/grub/grub.cfg", "mkinitcpio -P"}),
     {"/etc/modprobe.d/vfio.conf", "/etc/mkinitcpio.conf", "/etc/modules-load.d/vfio.conf",
      "/etc/initcpio/post/gptagent-vfio"},
     "options vfio-pci ids=10de:2684,10de:22ba"},
};

// {root} in each line replaced by the tree's path as the agent names it.
Lines at(const Lines& lines, const std::string& root) {
  Lines out;
  for (std::string l : lines) {
    for (size_t at = l.find("{root}"); at != std::string::npos; at = l.find("{root}", at + root.size()))
      l.replace(at, 6, root);
    out.push_back(l);
  }
  return out;
}

// What only reads the host: apt's simulation, rpm's query, systemctl's is-enabled.
bool reads_only(const std::string& cmd) {
  return cmd.find(" apt-get -q -y -s ") != std::string::npos || cmd.find(" -qa --qf ") != std::string::npos ||
         cmd.find(" is-enabled ") != std::string::npos;
}

const TaskReport& task_named(const test::Converged& c, const std::string& name) {
  auto it = std::find_if(c.tasks.begin(), c.tasks.end(), [&](const TaskReport& t) { return t.name == name; });
  if (it == c.tasks.end()) throw std::runtime_error("no task named " + name);
  return *it;
}

const std::string kDaemon = "libvirt's daemon running, and at boot";
const std::string kQemuDaemon = "libvirt's QEMU daemon running, and at boot";

class HostPlaybook : public ::testing::TestWithParam<Distro> {
 protected:
  std::string playbook() { return test::slurp(test::source_path("playbooks/host.yaml")); }
};

TEST_P(HostPlaybook, ConvergesWithTheDistributionsOwnCommands) {
  const Distro& d = GetParam();
  test::SampleHost host(d.tree);
  const std::string root = Root(host.root()).dir();
  const auto pristine = test::snapshot(host.root());
  const bool fedora = d.tree == "fedora-40";

  auto check = test::converge_root(host.root(), playbook(), true);
  ASSERT_TRUE(check.load_errors.empty()) << check.load_errors.front();
  EXPECT_EQ(check.exit_code, 2);
  for (const auto& c : check.commands) EXPECT_TRUE(reads_only(c)) << c;
  EXPECT_EQ(test::snapshot(host.root()), pristine) << "--check changed the tree:\n"
                                                   << test::differences(pristine, test::snapshot(host.root()));
  // The daemon's unit comes with the packages: check mode says what it would do with it.
  EXPECT_NE(task_named(check, fedora ? kQemuDaemon : kDaemon).result.msg.find("would be enabled, started"),
            std::string::npos);

  auto first = test::converge_root(host.root(), playbook(), false);
  ASSERT_EQ(first.exit_code, 0) << first.tasks.back().name << ": " << first.tasks.back().result.msg;
  EXPECT_EQ(first.commands, at(d.commands, root));
  EXPECT_EQ(first.changes(), check.changes()) << "--check did not predict the first run";
  EXPECT_TRUE(first.stats.reboot_required);
  EXPECT_EQ(first.tasks[0].name, "preflight (automatic: the playbook takes GPUs)");
  EXPECT_EQ(task_named(first, "QEMU, libvirt and OVMF installed").result.status, Outcome::changed);
  const TaskReport& daemon = task_named(first, fedora ? kQemuDaemon : kDaemon);
  EXPECT_EQ(daemon.result.status, Outcome::changed) << daemon.result.msg;
  EXPECT_EQ(task_named(first, fedora ? kDaemon : kQemuDaemon).result.status, Outcome::skipped) << "when: is false";
  const std::string unit = fedora ? "virtqemud.service" : "libvirtd.service";
  EXPECT_TRUE(test::exists(host.file("/etc/systemd/system/multi-user.target.wants/" + unit)));
  Lines files = task_named(first, "vfio-pci claims the GPU at boot").result.data["files"];
  EXPECT_EQ(files, d.files);
  EXPECT_NE(test::slurp(host.file("/etc/modprobe.d/vfio.conf")).find(d.vfio_ids + "\n"), std::string::npos);
  EXPECT_EQ(task_named(first, "No X11 config may take the GPU").result.status, Outcome::changed)
      << "every sample tree has an NVIDIA X11 config";

  // Converged: the package database says all is installed (no package manager runs), the unit is
  // enabled; starting it is the running system's, never done under --root.
  auto second = test::converge_root(host.root(), playbook(), false);
  EXPECT_EQ(second.stats.changed, 0);
  for (const auto& c : second.commands) EXPECT_TRUE(reads_only(c)) << c;
  for (const auto& t : second.tasks) {
    if (t.name == kDaemon || t.name == kQemuDaemon) {
      EXPECT_EQ(t.result.status, Outcome::skipped) << t.name << ": " << t.result.msg;
      continue;
    }
    EXPECT_EQ(t.result.status, Outcome::ok) << t.name << ": " << t.result.msg;
  }
  EXPECT_EQ(task_named(second, fedora ? kQemuDaemon : kDaemon).result.msg,
            unit + " not run under --root " + root + ": systemctl start " + unit);
  EXPECT_EQ(test::converge_root(host.root(), playbook(), true).exit_code, 0);
}

TEST_P(HostPlaybook, NothingRunsUnderASandboxRoot) {
  const Distro& d = GetParam();
  test::SampleHost host(d.tree);
  auto first = test::converge_root(host.root(), playbook(), false, /*allow_system_commands=*/false);
  EXPECT_EQ(first.exit_code, 0);
  for (const auto& c : first.commands) EXPECT_TRUE(reads_only(c)) << c;
  for (const auto& t : first.tasks)
    if (t.handler) {
      EXPECT_EQ(t.result.status, Outcome::skipped) << t.name;
      EXPECT_NE(t.result.msg.find("not run under --root"), std::string::npos);
    }
  EXPECT_EQ(task_named(first, "QEMU, libvirt and OVMF installed").result.status, Outcome::skipped);
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
