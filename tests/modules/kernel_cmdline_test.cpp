// kernel_cmdline: one sample tree per boot path (tests/fixtures/kernel_cmdline/<distro>/), each run
// in check mode, then applied twice: check predicts the first run, the first run changes, the
// second is ok, and the commands are exactly the distribution's.
#include <gtest/gtest.h>

#include <boost/process.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "agent/facts.hpp"
#include "agent/playbook.hpp"
#include "agent/text.hpp"
#include "tests/support/converge.hpp"

namespace gpt {
namespace {

using test::TempDir;

// The boot tools' side, faked at the host boundary: records every command; grubby edits the
// `options` of every BootLoaderSpec entry the way grubby's update_args does (removals by exact
// text, then each added argument replaces one of the same written name and goes last); kernelstub
// edits user.kernel_options of its configuration. Other commands only succeed.
class BootToolsExec final : public Exec {
 public:
  explicit BootToolsExec(std::string root) : root_(std::move(root)) {}
  ExecResult run(const Command& cmd) override {
    commands.push_back(cmd.display());
    if (!cmd.argv.empty() && cmd.argv[0] == "grubby") grubby(cmd);
    if (cmd.argv.size() == 3 && cmd.argv[0] == "kernelstub") kernelstub(cmd.argv[1], cmd.argv[2]);
    return {0, false, "", ""};
  }
  std::vector<std::string> commands;

 private:
  static std::string name(const std::string& p) { return p.substr(0, p.find('=')); }
  void grubby(const Command& cmd) {
    std::vector<std::string> add, remove;
    for (const auto& a : cmd.argv) {
      if (a.rfind("--args=", 0) == 0) add = words(a.substr(7));
      if (a.rfind("--remove-args=", 0) == 0) remove = words(a.substr(14));
    }
    namespace fs = std::filesystem;
    for (const auto& e : fs::directory_iterator(root_ + "/boot/loader/entries")) {
      std::string out;
      const std::string text = test::slurp(e.path().string());  // lines() views it: keep it alive
      for (std::string_view line : lines(text)) {
        std::string l(line);
        if (l.rfind("options ", 0) == 0) {
          std::vector<std::string> args = words(l.substr(8)), kept;
          for (const auto& a : args) {
            bool gone = std::any_of(remove.begin(), remove.end(), [&](const std::string& r) {
              return r.find('=') != std::string::npos ? a == r : name(a) == r;
            });
            gone =
                gone || std::any_of(add.begin(), add.end(), [&](const std::string& n) { return name(a) == name(n); });
            if (!gone) kept.push_back(a);
          }
          kept.insert(kept.end(), add.begin(), add.end());
          l = "options";
          for (const auto& k : kept) l += " " + k;
        }
        out += l + "\n";
      }
      test::write(e.path().string(), out);
    }
  }
  void kernelstub(const std::string& op, const std::string& param) {
    const std::string path = root_ + "/etc/kernelstub/configuration";
    auto conf = nlohmann::json::parse(test::slurp(path));
    auto& opts = conf["user"]["kernel_options"];
    nlohmann::json kept = nlohmann::json::array();
    for (const auto& o : opts)
      if (o != param) kept.push_back(o);
    if (op == "-a") kept.push_back(param);
    opts = kept;
    test::write(path, conf.dump(2) + "\n");
  }
  std::string root_;
};

// converge_root's run with BootToolsExec: the commands change the tree as the tools would.
test::Converged converge(const std::string& root_dir, const std::string& yaml, bool check) {
  BootToolsExec exec(root_dir);
  test::Converged c = test::converge_root_with(exec, root_dir, yaml, check);
  c.commands = exec.commands;
  return c;
}

// A sample tree copied into a temp dir, with stand-ins for the boot tools it has.
struct Tree {
  TempDir d;
  Tree(const std::string& name, const std::vector<std::string>& tools) {
    test::copy_tree(test::source_path("tests/fixtures/kernel_cmdline/" + name), d.path());
    for (const auto& t : tools) test::write(d / t, "#!/bin/sh\nexit 1\n", 0755);
  }
  std::string root() const { return d.path(); }
  std::string file(const std::string& p) const { return d.path() + p; }
};

// What the kernel gets from GRUB: /etc/default/grub and the drop-ins sourced by bash the way
// grub-mkconfig sources them, GRUB_CMDLINE_LINUX then GRUB_CMDLINE_LINUX_DEFAULT.
std::vector<std::string> grub_linux_line(const std::string& root) {
  namespace bp = boost::process;
  bp::ipstream out;
  bp::environment clean;
  clean["PATH"] = "/usr/bin:/bin";
  const std::string script =
      "source \"$0/etc/default/grub\" 2>/dev/null; for x in \"$0\"/etc/default/grub.d/*.cfg; do [ -e \"$x\" ] && "
      "source \"$x\" 2>/dev/null; done; for p in $GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT; do printf '%s\\n' "
      "\"$p\"; done";
  bp::child c(bp::search_path("bash"), "--norc", "--noprofile", "-c", script, root, clean, bp::std_out > out,
              bp::std_err > bp::null);
  std::vector<std::string> params;
  std::string line;
  while (std::getline(out, line)) params.push_back(line);
  c.wait();
  return params;
}

// The kernel's way: the last value of a parameter wins, names compare with '-' == '_'.
std::optional<std::string> kernel_value(const std::vector<std::string>& cmdline, const std::string& name) {
  std::optional<std::string> v;
  for (const auto& p : cmdline)
    if (param_name(p) == param_name(name)) v = p;
  return v;
}

struct Run {
  test::Converged check, first, second;
};

// Check, apply, apply again: the contract every module test proves.
Run check_apply_twice(const Tree& t, const std::string& playbook) {
  Run r;
  auto before = test::snapshot(t.root());
  r.check = converge(t.root(), playbook, true);
  EXPECT_TRUE(r.check.load_errors.empty()) << r.check.load_errors.front();
  EXPECT_EQ(test::snapshot(t.root()), before) << "check mode changed the tree";
  EXPECT_EQ(r.check.exit_code, 2);
  EXPECT_TRUE(r.check.commands.empty());
  r.first = converge(t.root(), playbook, false);
  EXPECT_EQ(r.first.exit_code, 0) << (r.first.tasks.empty() ? "" : r.first.tasks.back().result.msg);
  EXPECT_EQ(r.first.changes(), r.check.changes());
  EXPECT_TRUE(r.first.stats.reboot_required);
  r.second = converge(t.root(), playbook, false);
  EXPECT_EQ(r.second.exit_code, 0);
  EXPECT_EQ(r.second.stats.changed, 0) << r.second.tasks[0].result.msg;
  EXPECT_TRUE(r.second.commands.empty());
  return r;
}

const Result& task(const test::Converged& c) { return c.tasks.at(0).result; }

// ---- GRUB ----

TEST(KernelCmdlineGrub, UbuntuCloudImageTheDropInsDefaultIsWhatBoots) {
  Tree t("ubuntu-cloud", {"usr/sbin/update-grub"});
  const std::string drop_in = test::slurp(t.file("/etc/default/grub.d/50-cloudimg-settings.cfg"));
  const std::string pb =
      "tasks:\n  - name: gpu\n    kernel_cmdline: {iommu: auto, present: [iommu=pt, vfio-pci.ids=10de:1b80]}\n";
  auto r = check_apply_twice(t, pb);
  EXPECT_EQ(task(r.first).data["boot_path"], "grub");
  EXPECT_EQ(task(r.first).msg,
            "boot path grub (detected): GRUB (+ 2 drop-ins in /etc/default/grub.d): added intel_iommu=on, iommu=pt, "
            "vfio-pci.ids=10de:1b80 (edited /etc/default/grub: GRUB_CMDLINE_LINUX)");
  EXPECT_EQ(r.first.commands, std::vector<std::string>{"update-grub"});
  EXPECT_EQ(r.first.stats.changed, 2);  // the task and the grub_config handler
  // The drop-in still sets _DEFAULT after the main file: the effective line is what counts.
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub.d/50-cloudimg-settings.cfg")), drop_in);
  EXPECT_EQ(grub_linux_line(t.root()), (std::vector<std::string>{"intel_iommu=on", "iommu=pt", "vfio-pci.ids=10de:1b80",
                                                                 "console=tty1", "console=ttyS0"}));
  EXPECT_EQ(task(r.first).data["cmdline"], grub_linux_line(t.root()));
  EXPECT_EQ(task(r.first).expect["cmdline_present"],
            (std::vector<std::string>{"intel_iommu=on", "iommu=pt", "vfio-pci.ids=10de:1b80"}));
}

TEST(KernelCmdlineGrub, ConflictsAreRemovedFromTheDropInThatHoldsThem) {
  // 50-cloudimg-settings.cfg's _DEFAULT holds intel_iommu=off and nouveau.modeset=1; 99-gpu.cfg
  // extends GRUB_CMDLINE_LINUX with vfio_pci.ids (the same parameter as vfio-pci.ids).
  Tree t("ubuntu-cloud-conflicts", {"usr/sbin/update-grub"});
  const std::string main_before = test::slurp(t.file("/etc/default/grub"));
  const std::string readme = test::slurp(t.file("/etc/default/grub.d/README"));
  const std::string pb =
      "tasks:\n  - name: gpu\n    kernel_cmdline:\n      iommu: intel\n      present: [vfio-pci.ids=10de:2206, "
      "nouveau.modeset=0, nvidia.modeset=1]\n";
  auto r = check_apply_twice(t, pb);
  EXPECT_EQ(r.first.commands, std::vector<std::string>{"update-grub"});
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub")), main_before)
      << "GRUB_CMDLINE_LINUX's last assignment is in 99-gpu.cfg";
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub.d/99-gpu.cfg")),
            "# GPU passthrough\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX vfio-pci.ids=10de:2206 intel_iommu=on "
            "nouveau.modeset=0 nvidia.modeset=1\"\n");
  EXPECT_NE(test::slurp(t.file("/etc/default/grub.d/50-cloudimg-settings.cfg"))
                .find("GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\n"),
            std::string::npos);
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub.d/README")), readme);
  const auto line = grub_linux_line(t.root());
  EXPECT_EQ(line, (std::vector<std::string>{"vfio-pci.ids=10de:2206", "intel_iommu=on", "nouveau.modeset=0",
                                            "nvidia.modeset=1", "console=tty1", "console=ttyS0"}));
  EXPECT_EQ(kernel_value(line, "intel_iommu"), "intel_iommu=on");
  EXPECT_EQ(kernel_value(line, "vfio_pci.ids"), "vfio-pci.ids=10de:2206");
  EXPECT_EQ(kernel_value(line, "nouveau.modeset"), "nouveau.modeset=0");  // nvidia.modeset is another parameter
  EXPECT_EQ(task(r.first).data["removed"], (std::vector<std::string>{"intel_iommu=off", "nouveau.modeset=1"}));
  EXPECT_EQ(task(r.first).data["replaced"],
            std::vector<std::string>{"vfio_pci.ids=10de:1b80 with vfio-pci.ids=10de:2206"});
  EXPECT_EQ(task(r.first).data["edited"],
            (std::vector<std::string>{"/etc/default/grub.d/50-cloudimg-settings.cfg: GRUB_CMDLINE_LINUX_DEFAULT",
                                      "/etc/default/grub.d/99-gpu.cfg: GRUB_CMDLINE_LINUX"}));
}

TEST(KernelCmdlineGrub, DebianIntelIommuOffInDefaultIsRemoved) {
  Tree t("debian-12", {"usr/sbin/update-grub"});
  auto r = check_apply_twice(t, "tasks:\n  - name: iommu\n    kernel_cmdline: {iommu: auto}\n");
  EXPECT_EQ(r.first.commands, std::vector<std::string>{"update-grub"});
  const std::string grub = test::slurp(t.file("/etc/default/grub"));
  EXPECT_NE(grub.find("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"intel_iommu=on\"\n"),
            std::string::npos)
      << grub;
  EXPECT_EQ(grub_linux_line(t.root()), (std::vector<std::string>{"intel_iommu=on", "quiet"}));
  EXPECT_EQ(task(r.first).msg,
            "boot path grub (detected): GRUB: added intel_iommu=on; removed intel_iommu=off (edited /etc/default/grub: "
            "GRUB_CMDLINE_LINUX, /etc/default/grub: GRUB_CMDLINE_LINUX_DEFAULT)");
}

TEST(KernelCmdlineGrub, ProxmoxInGrubModeIsGrub) {
  Tree t("proxmox-8-grub", {"usr/sbin/update-grub", "usr/sbin/proxmox-boot-tool"});
  auto r = check_apply_twice(t, "tasks:\n  - name: iommu\n    kernel_cmdline: {iommu: auto, present: [iommu=pt]}\n");
  EXPECT_EQ(task(r.first).data["boot_path"], "grub");
  EXPECT_EQ(r.first.commands, std::vector<std::string>{"update-grub"});
  EXPECT_EQ(grub_linux_line(t.root()),
            (std::vector<std::string>{"root=ZFS=rpool/ROOT/pve-1", "boot=zfs", "intel_iommu=on", "iommu=pt", "quiet"}));
}

TEST(KernelCmdlineGrub, AShellProgramIsRefusedAndLeftUntouched) {
  Tree t("shell-program", {"usr/sbin/update-grub"});
  const std::string main_grub = test::slurp(t.file("/etc/default/grub"));
  auto before = test::snapshot(t.root());
  for (bool check : {true, false}) {
    auto r = converge(t.root(), "tasks:\n  - kernel_cmdline: {iommu: auto}\n", check);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(r.commands.empty());
    EXPECT_EQ(task(r).msg,
              "boot path grub (detected): /etc/default/grub.d/60-gpu.cfg:2: defines a shell function (gpu_params()): "
              "gptagent edits assignments, not shell programs; left untouched, edit the kernel parameters by hand");
  }
  EXPECT_EQ(test::snapshot(t.root()), before);

  // Sourcing another file, and a command substitution in the value, are refused the same way.
  test::write(t.file("/etc/default/grub.d/60-gpu.cfg"), "GRUB_TIMEOUT=3\n. /etc/gpu-params\n");
  auto sourced = converge(t.root(), "tasks:\n  - kernel_cmdline: {iommu: auto}\n", false);
  EXPECT_NE(task(sourced).msg.find("/etc/default/grub.d/60-gpu.cfg:2: sources another file (.)"), std::string::npos)
      << task(sourced).msg;
  test::write(t.file("/etc/default/grub.d/60-gpu.cfg"), "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet `cat /etc/gpu-params`\"\n");
  auto cmdsub = converge(t.root(), "tasks:\n  - kernel_cmdline: {iommu: auto}\n", false);
  EXPECT_NE(
      task(cmdsub).msg.find("/etc/default/grub.d/60-gpu.cfg: GRUB_CMDLINE_LINUX_DEFAULT at line 1 runs a command"),
      std::string::npos)
      << task(cmdsub).msg;
  EXPECT_EQ(cmdsub.exit_code, 1);
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub")), main_grub);
}

// A GRUB file sh refuses, the main one or a drop-in: grub-mkconfig sources them all, so the task
// fails naming the file and sh's line, in --check too, and no file is touched.
TEST(KernelCmdlineGrub, AFileShRefusesFailsWithItsLineAndNothingIsWritten) {
  struct Case {
    std::string tree, file, text, path_line;
  };
  const std::string conflict = test::slurp(test::source_path("tests/fixtures/grub/shell/broken-merge-conflict"));
  const std::vector<Case> cases = {
      {"debian-12", "/etc/default/grub", conflict, "/etc/default/grub:9: "},
      {"ubuntu-cloud", "/etc/default/grub.d/50-cloudimg-settings.cfg",
       "# cloud-init\nGRUB_TERMINAL=console\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\n",
       "/etc/default/grub.d/50-cloudimg-settings.cfg:4: "},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.tree);
    Tree t(c.tree, {"usr/sbin/update-grub"});
    test::write(t.file(c.file), c.text);
    auto before = test::snapshot(t.root());
    for (bool check : {true, false}) {
      auto r = converge(t.root(), "tasks:\n  - kernel_cmdline: {iommu: intel, present: [iommu=pt]}\n", check);
      EXPECT_EQ(r.exit_code, 1);
      EXPECT_TRUE(r.commands.empty());
      EXPECT_EQ(
          task(r).msg.rfind("boot path grub (detected): " + c.path_line + "not valid shell (sh -n refuses it): ", 0),
          0u)
          << task(r).msg;
    }
    EXPECT_EQ(test::differences(test::snapshot(t.root()), before), "");
  }
  // grubby keeps GRUB_CMDLINE_LINUX of /etc/default/grub in step: that file is checked too.
  Tree fedora("fedora-40", {"usr/sbin/grubby", "usr/sbin/grub2-mkconfig"});
  test::write(fedora.file("/etc/default/grub"), test::slurp(fedora.file("/etc/default/grub")) + "if true; then\n");
  auto before = test::snapshot(fedora.root());
  auto r = converge(fedora.root(), "tasks:\n  - kernel_cmdline: {boot_path: grubby, present: [iommu=pt]}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.commands.empty());
  EXPECT_EQ(task(r).msg,
            "boot path grubby: /etc/default/grub:10: not valid shell (sh -n refuses it): end of file unexpected "
            "(expecting \"fi\"): the \"if\" at line 9 is not closed; nothing was changed");
  EXPECT_EQ(test::differences(test::snapshot(fedora.root()), before), "");
}

// The effective-command-line rules on small trees: main file plus drop-ins, conflicts in either key.
using Files = std::vector<std::pair<std::string, std::string>>;
struct GrubTree {
  TempDir d;
  explicit GrubTree(const Files& files) {
    test::write(d / "proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\n");
    test::write(d / "usr/sbin/update-grub", "#!/bin/sh\nexit 1\n", 0755);
    for (const auto& [path, text] : files) test::write(d.path() + path, text);
  }
  std::string root() const { return d.path(); }
  std::string file(const std::string& p) const { return d.path() + p; }
};
Run check_apply_twice(const GrubTree& t, const std::string& pb) {
  Run r;
  auto before = test::snapshot(t.root());
  r.check = converge(t.root(), pb, true);
  EXPECT_TRUE(r.check.load_errors.empty());
  EXPECT_EQ(test::snapshot(t.root()), before);
  EXPECT_EQ(r.check.exit_code, 2);
  r.first = converge(t.root(), pb, false);
  EXPECT_EQ(r.first.exit_code, 0) << (r.first.tasks.empty() ? "" : r.first.tasks[0].result.msg);
  EXPECT_EQ(r.first.changes(), r.check.changes());
  EXPECT_EQ(r.first.commands, std::vector<std::string>{"update-grub"});
  r.second = converge(t.root(), pb, false);
  EXPECT_EQ(r.second.stats.changed, 0) << r.second.tasks[0].result.msg;
  EXPECT_TRUE(r.second.commands.empty());
  return r;
}

TEST(KernelCmdlineGrubRules, ALaterOffInDefaultBeatsOnInLinuxAndGoes) {
  GrubTree t(Files{{"/etc/default/grub",
                    "GRUB_CMDLINE_LINUX=\"intel_iommu=on\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=off\"\n"}});
  check_apply_twice(t, "tasks:\n  - kernel_cmdline: {iommu: intel}\n");
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub")),
            "GRUB_CMDLINE_LINUX=\"intel_iommu=on\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n");
  EXPECT_EQ(grub_linux_line(t.root()), (std::vector<std::string>{"intel_iommu=on", "quiet"}));
}

TEST(KernelCmdlineGrubRules, AnOverriddenAssignmentIsNotTheOneToEdit) {
  // The drop-in replaces GRUB_CMDLINE_LINUX: the main file's intel_iommu=off never boots.
  const std::string main = "GRUB_CMDLINE_LINUX=\"intel_iommu=off\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n";
  GrubTree t(Files{{"/etc/default/grub", main}, {"/etc/default/grub.d/50-local.cfg", "GRUB_CMDLINE_LINUX='splash'\n"}});
  check_apply_twice(t, "tasks:\n  - kernel_cmdline: {iommu: intel}\n");
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub")), main);
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub.d/50-local.cfg")), "GRUB_CMDLINE_LINUX='splash intel_iommu=on'\n");
  EXPECT_EQ(grub_linux_line(t.root()), (std::vector<std::string>{"splash", "intel_iommu=on", "quiet"}));
}

TEST(KernelCmdlineGrubRules, DashAndUnderscoreAreOneParameterAcrossFilesAndKeys) {
  GrubTree t(Files{{"/etc/default/grub", "GRUB_CMDLINE_LINUX=\"\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n"},
                   {"/etc/default/grub.d/10-a.cfg",
                    "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT vfio_pci.ids=10de:1b80\"\n"},
                   {"/etc/default/grub.d/20-b.cfg",
                    "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT iommu=off nouveau.modeset=0\"\n"}});
  auto r = check_apply_twice(
      t, "tasks:\n  - kernel_cmdline: {present: [vfio-pci.ids=10de:2206, nvidia.modeset=1], absent: [iommu]}\n");
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub")),
            "GRUB_CMDLINE_LINUX=\"vfio-pci.ids=10de:2206 nvidia.modeset=1\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n");
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub.d/10-a.cfg")),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT\"\n");
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub.d/20-b.cfg")),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT nouveau.modeset=0\"\n");
  const auto line = grub_linux_line(t.root());
  EXPECT_EQ(line,
            (std::vector<std::string>{"vfio-pci.ids=10de:2206", "nvidia.modeset=1", "quiet", "nouveau.modeset=0"}));
  EXPECT_EQ(task(r.first).data["cmdline"], line);
}

// ---- framebuffer: release ----

// A GRUB host with a GTX 1080 at 01:00.0 (not the boot VGA) whose 256 MiB BAR1 the boot
// framebuffer may sit in, and the running kernel's release.
Files framebuffer_host(const std::string& kernel, const std::string& framebuffer_range) {
  return {{"/etc/default/grub", "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n"},
          {"/proc/sys/kernel/osrelease", kernel + "\n"},
          {"/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-" + kernel + " root=/dev/sda1 ro quiet\n"},
          {"/proc/iomem", "c0000000-fec2ffff : PCI Bus 0000:00\n  e0000000-efffffff : 0000:01:00.0\n  " +
                              framebuffer_range + "\n  f6000000-f6ffffff : 0000:01:00.0\n"},
          {"/sys/bus/pci/devices/0000:01:00.0/class", "0x030000\n"},
          {"/sys/bus/pci/devices/0000:01:00.0/vendor", "0x10de\n"},
          {"/sys/bus/pci/devices/0000:01:00.0/device", "0x1b80\n"},
          {"/sys/bus/pci/devices/0000:01:00.0/boot_vga", "0\n"},
          {"/sys/bus/pci/devices/0000:01:00.0/resource",
           "0x00000000f6000000 0x00000000f6ffffff 0x0000000000040200\n"
           "0x00000000e0000000 0x00000000efffffff 0x000000000014220c\n"}};
}

TEST(KernelCmdlineFramebuffer, ReleaseOnASysfbKernelBlacklistsSysfbInit) {
  GrubTree t(framebuffer_host("6.1.0-18-amd64", "  e0000000-e07e8fff : BOOTFB\n    e0000000-e07e8fff : simpledrm"));
  auto r = check_apply_twice(t, "tasks:\n  - kernel_cmdline: {framebuffer: release}\n");
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub")),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"initcall_blacklist=sysfb_init\"\n");
  EXPECT_EQ(task(r.first).msg,
            "boot path grub (detected): GRUB: added initcall_blacklist=sysfb_init (edited /etc/default/grub: "
            "GRUB_CMDLINE_LINUX) "
            "(framebuffer: release: simpledrm holds 0000:01:00.0: initcall_blacklist=sysfb_init)");
  EXPECT_EQ(task(r.first).expect["cmdline_present"], std::vector<std::string>{"initcall_blacklist=sysfb_init"});
  EXPECT_EQ(task(r.second).status, Outcome::ok);
}

TEST(KernelCmdlineFramebuffer, ReleaseOnAnOldKernelTurnsEfifbOff) {
  GrubTree t(framebuffer_host("5.10.0-28-amd64", "  e0000000-e07e8fff : efifb"));
  auto r = check_apply_twice(t, "tasks:\n  - kernel_cmdline: {iommu: intel, framebuffer: release}\n");
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub")),
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"intel_iommu=on video=efifb:off\"\n");
  EXPECT_EQ(grub_linux_line(t.root()), (std::vector<std::string>{"intel_iommu=on", "video=efifb:off", "quiet"}));
  EXPECT_NE(task(r.first).msg.find("(framebuffer: release: efifb holds 0000:01:00.0: video=efifb:off)"),
            std::string::npos)
      << task(r.first).msg;
}

TEST(KernelCmdlineFramebuffer, NothingIsAddedWhenNoFramebufferHoldsTheGpu) {
  // efifb in another device's window; and `keep`, the default, never looks.
  GrubTree t(framebuffer_host("6.1.0-18-amd64", "d0000000-d07e8fff : efifb"));
  const auto before = test::snapshot(t.root());
  for (const char* pb : {"tasks:\n  - kernel_cmdline: {framebuffer: release}\n", "tasks:\n  - kernel_cmdline: {}\n"}) {
    for (bool check : {true, false}) {
      auto r = converge(t.root(), pb, check);
      EXPECT_EQ(r.exit_code, 0) << task(r).msg;
      EXPECT_EQ(task(r).status, Outcome::ok);
      EXPECT_TRUE(r.commands.empty());
    }
  }
  EXPECT_EQ(task(converge(t.root(), "tasks:\n  - kernel_cmdline: {framebuffer: release}\n", false)).msg,
            "boot path grub (detected): GRUB: the command line is as wanted (framebuffer: release: no boot framebuffer "
            "holds memory of 0000:01:00.0, nothing to add)");
  EXPECT_EQ(test::snapshot(t.root()), before);
}

TEST(KernelCmdlineFramebuffer, TheUsersOwnVideoParameterIsNotReplaced) {
  GrubTree t(framebuffer_host("5.10.0-28-amd64", "  e0000000-e07e8fff : efifb"));
  test::write(t.file("/proc/cmdline"), "BOOT_IMAGE=/boot/vmlinuz-5.10.0-28-amd64 ro video=HDMI-A-1:1920x1080@60\n");
  const auto before = test::snapshot(t.root());
  auto r = converge(t.root(), "tasks:\n  - kernel_cmdline: {framebuffer: release}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(task(r).msg,
            "framebuffer: release would replace video=HDMI-A-1:1920x1080@60 with video=efifb:off (the kernel "
            "reads every video= parameter): add video=efifb:off to present by hand if both are wanted");
  EXPECT_EQ(test::snapshot(t.root()), before);
  // An explicit GPU that does not exist is an error, not "nothing to add": `gpus:` brings the
  // automatic preflight, which says so first.
  auto missing =
      converge(t.root(), "tasks:\n  - kernel_cmdline: {framebuffer: release, gpus: ['0000:09:00.0']}\n", false);
  EXPECT_EQ(missing.exit_code, 1);
  ASSERT_EQ(missing.tasks.size(), 1u);
  EXPECT_EQ(task(missing).msg, "PCI device 0000:09:00.0 does not exist on this host");
}

// ---- grubby (Fedora, RHEL) ----

TEST(KernelCmdlineGrubby, FedoraBlsEntriesThroughGrubby) {
  Tree t("fedora-40", {"usr/sbin/grubby", "usr/sbin/grub2-mkconfig"});
  auto r = check_apply_twice(
      t, "tasks:\n  - name: gpu\n    kernel_cmdline: {iommu: auto, present: ['vfio-pci.ids=10de:1f07,10de:10f9']}\n");
  EXPECT_EQ(task(r.first).data["boot_path"], "grubby");
  // grubby compares names as written: the old spelling must be removed explicitly.
  EXPECT_EQ(r.first.commands, std::vector<std::string>{
                                  "grubby --update-kernel=ALL '--args=intel_iommu=on vfio-pci.ids=10de:1f07,10de:10f9' "
                                  "--remove-args=vfio_pci.ids=10de:1f07"});
  EXPECT_EQ(r.check.tasks[0].result.commands, r.first.tasks[0].result.commands);
  for (const char* entry : {"/boot/loader/entries/bb004f8f88fb4f2b9b6924abee13ae59-6.8.5-301.fc40.x86_64.conf",
                            "/boot/loader/entries/bb004f8f88fb4f2b9b6924abee13ae59-0-rescue.conf"})
    EXPECT_NE(test::slurp(t.file(entry))
                  .find("options root=UUID=4a8128f8-b0e9-434a-a0b6-1197bf43f9dc ro "
                        "rootflags=subvol=root rhgb quiet intel_iommu=on vfio-pci.ids=10de:1f07,10de:10f9\n"),
              std::string::npos)
        << entry;
  EXPECT_NE(test::slurp(t.file("/etc/default/grub"))
                .find("GRUB_CMDLINE_LINUX=\"rhgb quiet vfio-pci.ids=10de:1f07,10de:10f9 intel_iommu=on\"\n"),
            std::string::npos)
      << test::slurp(t.file("/etc/default/grub"));
  // The task and grubby, its handler (deferred by a trial boot); no grub2-mkconfig: the entries hold
  // the command line.
  EXPECT_EQ(r.first.stats.changed, 2);
  ASSERT_EQ(r.first.tasks.size(), 2u);
  EXPECT_EQ(r.first.tasks[1].module, "grubby");
}

// ---- /etc/kernel/cmdline ----

TEST(KernelCmdlineKernelInstall, ArchSystemdBootAmdIommuAuto) {
  Tree t("arch-systemd-boot", {"usr/bin/kernel-install"});
  auto r = check_apply_twice(
      t, "tasks:\n  - name: gpu\n    kernel_cmdline: {iommu: auto, present: ['vfio-pci.ids=10de:2684,10de:22ba']}\n");
  EXPECT_EQ(task(r.first).data["boot_path"], "kernel-install");
  EXPECT_EQ(test::slurp(t.file("/etc/kernel/cmdline")),
            "root=UUID=7f3e2a1b-9c8d-4e6f-a5b4-3c2d1e0f9a8b rw quiet vfio-pci.ids=10de:2684,10de:22ba\n");
  EXPECT_EQ(r.first.commands,
            std::vector<std::string>{"kernel-install add 6.9.7-arch1-1 /usr/lib/modules/6.9.7-arch1-1/vmlinuz"});
  EXPECT_EQ(task(r.first).msg,
            "boot path kernel-install (detected): kernel-install (/etc/kernel/cmdline): added "
            "vfio-pci.ids=10de:2684,10de:22ba; removed amd_iommu=off (the AMD IOMMU is on by default: nothing to add "
            "for it); wrote /etc/kernel/install.d/95-gptagent-cmdline.install (checks the boot entry of each kernel "
            "installed from now on)");
  // Nothing claims amd_iommu=on: the kernel has no such switch.
  EXPECT_EQ(task(r.first).expect["cmdline_present"], std::vector<std::string>{"vfio-pci.ids=10de:2684,10de:22ba"});
  EXPECT_EQ(task(r.first).expect["cmdline_absent"], (std::vector<std::string>{"amd_iommu=off", "iommu=off"}));
}

TEST(KernelCmdlineProxmox, KernelCmdlineThenProxmoxBootToolRefresh) {
  Tree t("proxmox-8", {"usr/sbin/update-grub", "usr/sbin/proxmox-boot-tool"});
  const std::string grub = test::slurp(t.file("/etc/default/grub"));
  auto r = check_apply_twice(t, "tasks:\n  - name: iommu\n    kernel_cmdline: {iommu: auto, present: [iommu=pt]}\n");
  EXPECT_EQ(task(r.first).data["boot_path"], "proxmox");
  EXPECT_EQ(test::slurp(t.file("/etc/kernel/cmdline")), "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on iommu=pt\n");
  EXPECT_EQ(r.first.commands, std::vector<std::string>{"proxmox-boot-tool refresh"});
  EXPECT_EQ(test::slurp(t.file("/etc/default/grub")), grub);
  EXPECT_FALSE(r.check.changes().empty());
}

// ---- kernelstub (Pop!_OS) ----

TEST(KernelCmdlineKernelstub, PopOsOptionsThroughKernelstub) {
  Tree t("popos-22.04", {"usr/bin/kernelstub"});
  auto r = check_apply_twice(t, "tasks:\n  - name: gpu\n    kernel_cmdline: {iommu: auto, present: [iommu=pt]}\n");
  EXPECT_EQ(task(r.first).data["boot_path"], "kernelstub");
  EXPECT_EQ(r.first.commands, (std::vector<std::string>{"kernelstub -d amd_iommu=off", "kernelstub -a iommu=pt"}));
  auto conf = nlohmann::json::parse(test::slurp(t.file("/etc/kernelstub/configuration")));
  EXPECT_EQ(conf["user"]["kernel_options"],
            (std::vector<std::string>{"quiet", "loglevel=0", "systemd.show_status=false", "splash", "iommu=pt"}));
}

// ---- detection and override ----

TEST(KernelCmdlineDetect, NothingFoundSaysWhatWasLookedFor) {
  TempDir d;
  test::write(d / "proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\n");
  auto r = converge(d.path(), "tasks:\n  - kernel_cmdline: {present: [iommu=pt]}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(task(r).msg.find("cannot tell how this host boots: looked for kernelstub"), std::string::npos);
  EXPECT_NE(task(r).msg.find("set boot_path to say which"), std::string::npos);
}

TEST(KernelCmdlineDetect, BootPathOverridesDetection) {
  // Proxmox with /etc/kernel/cmdline, told to edit GRUB.
  Tree t("proxmox-8", {"usr/sbin/update-grub", "usr/sbin/proxmox-boot-tool"});
  auto r = converge(t.root(), "tasks:\n  - kernel_cmdline: {boot_path: grub, present: [iommu=pt]}\n", false);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(task(r).data["boot_path"], "grub");
  EXPECT_EQ(task(r).msg.rfind("boot path grub: ", 0), 0u) << task(r).msg;
  EXPECT_EQ(r.commands, std::vector<std::string>{"update-grub"});
  auto bad = converge(t.root(), "tasks:\n  - kernel_cmdline: {boot_path: lilo}\n", false);
  ASSERT_FALSE(bad.load_errors.empty());
}

TEST(KernelCmdlineSchema, BadArgumentsAreLoadErrorsWithPositions) {
  TempDir d;
  test::write(d / "proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\n");
  auto bad = converge(d.path(), "tasks:\n  - kernel_cmdline:\n      present: ['a b']\n", false);
  ASSERT_FALSE(bad.load_errors.empty());
  EXPECT_NE(
      bad.load_errors[0].find("test.yaml:3:16: kernel_cmdline argument 'present': 'a b' is not a kernel parameter"),
      std::string::npos)
      << bad.load_errors[0];
  auto both = converge(d.path(), "tasks:\n  - kernel_cmdline: {present: [iommu=pt], absent: [iommu]}\n", false);
  ASSERT_FALSE(both.load_errors.empty());
  EXPECT_NE(both.load_errors[0].find("'iommu=pt' is both present and absent"), std::string::npos);
}

}  // namespace
}  // namespace gpt
