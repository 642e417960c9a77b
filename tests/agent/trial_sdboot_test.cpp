// Trial boots on a systemd-boot host with kernel-install (the Fedora 40 sample tree made to boot
// the way a systemd-boot install of it does: the ESP on /efi, kernel-install's layout, the entry
// 90-loaderentry.install writes, /etc/kernel/cmdline): the running kernel's entry is copied to
// gptagent-trial+1.conf with the stage's options, booted once through bootctl set-oneshot, and
// only then do kernel-install and dracut make the change the default. systemd-boot (its one-shot
// variable, boot counting, default selection) and the boot tools are played at the host boundary
// (SdbootHostExec, boot()); the agent's code runs in-process through run_apply.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "agent/apply.hpp"
#include "agent/exec.hpp"
#include "agent/text.hpp"
#include "agent/trial.hpp"
#include "tests/support/sandbox.hpp"
#include "tests/support/trial_host.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::count_of;
using test::slurp;

const std::string kRelease = "6.8.5-301.fc40.x86_64";
const std::string kMachineId = "bb004f8f88fb4f2b9b6924abee13ae59";
const std::string kEntries = "/efi/loader/entries";
const std::string kEntry = kEntries + "/" + kMachineId + "-" + kRelease + ".conf";
const std::string kKernelDir = "/efi/" + kMachineId + "/" + kRelease;
const std::string kCmdline = "root=UUID=4a8128f8-b0e9-434a-a0b6-1197bf43f9dc ro rootflags=subvol=root rhgb quiet";
const std::string kVarDir = "/sys/firmware/efi/efivars/";

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// What 90-loaderentry.install (systemd 255) writes for a kernel from /etc/kernel/cmdline.
std::string loader_entry(const std::string& options) {
  return "# Boot Loader Specification type#1 entry\n"
         "# File created by /usr/lib/kernel/install.d/90-loaderentry.install (systemd 255.4-1.fc40)\n"
         "title      Fedora Linux 40 (Workstation Edition)\n"
         "version    " +
         kRelease + "\nmachine-id " + kMachineId + "\nsort-key   fedora\noptions    " + options + "\nlinux      /" +
         kMachineId + "/" + kRelease + "/linux\ninitrd     /" + kMachineId + "/" + kRelease + "/initrd\n";
}

// An EFI variable as efivarfs shows it: four bytes of attributes, then the UTF-16LE string.
std::string efi_string(const std::string& s) {
  std::string out("\x07\x00\x00\x00", 4);
  for (char c : s) out += std::string{c, '\0'};
  return out + std::string(2, '\0');
}
std::string loader_var(const std::string& name) { return kVarDir + name + "-" + kLoaderVendorGuid; }

class SdbootHostExec final : public Exec {
 public:
  explicit SdbootHostExec(std::string root) : root_(std::move(root)) {}
  ExecResult run(const Command& cmd) override {
    commands.push_back(cmd.display());
    const auto& a = cmd.argv;
    if (a.size() == 3 && a[0] == "bootctl" && a[1] == "set-oneshot") {
      if (a[2].empty())
        fs::remove(root_ + loader_var("LoaderEntryOneShot"));
      else
        test::write(root_ + loader_var("LoaderEntryOneShot"), efi_string(a[2]));
    } else if (a.size() == 4 && a[0] == "dracut" && a[1] == "-f") {
      test::write(root_ + a[2], initramfs());
    } else if (a.size() == 3 && a[0] == "dracut" && a[2] == "--regenerate-all") {
      // dracut's own choice where /efi/loader/entries and /efi/MACHINE-ID exist.
      test::write(root_ + kKernelDir + "/initrd", initramfs());
    } else if (a.size() == 3 && a[0] == "systemctl" && a[1] == "enable") {
      // [Install] RequiredBy=boot-complete.target, as systemctl makes it.
      fs::create_directories(fs::path(root_ + kTrialCheckLink).parent_path());
      fs::create_symlink("../" + a[2], root_ + kTrialCheckLink);
    } else if (a.size() == 4 && a[0] == "kernel-install" && a[1] == "add") {
      // 50-dracut.install, then 90-loaderentry.install, from /etc/kernel/cmdline.
      test::write(root_ + kKernelDir + "/initrd", initramfs());
      test::write(root_ + kEntry, loader_entry(join(words(slurp(root_ + "/etc/kernel/cmdline")), " ")));
    }
    return {0, false, "", ""};
  }
  std::vector<std::string> commands;
  // What dracut builds from the tree's configuration: the *.conf files of /etc/modprobe.d (the
  // only ones modprobe reads; a backup beside one is not), in the order of their names.
  std::string initramfs() const {
    std::vector<fs::path> confs;
    for (const auto& e : fs::directory_iterator(root_ + "/etc/modprobe.d"))
      if (e.path().extension() == ".conf") confs.push_back(e.path());
    std::sort(confs.begin(), confs.end());
    std::string out = "initramfs of " + kRelease + "\n";
    for (const auto& c : confs) out += slurp(c.string());
    return out;
  }

 private:
  std::string root_;
};

struct SdbootHost : test::SampleHost {
  test::TempDir plays;
  SdbootHostExec exec{root()};
  SdbootHost() : SampleHost("fedora-40") {
    // No GRUB: the ESP on /efi holds systemd-boot's configuration, the entries and the kernels.
    for (const char* gone : {"/etc/default/grub", "/usr/sbin/grubby", "/usr/sbin/grub2-mkconfig", "/boot/loader",
                             "/boot/efi/EFI/fedora/grub.cfg"})
      fs::remove_all(file(gone));
    for (const char* tool : {"/usr/bin/bootctl", "/usr/bin/kernel-install"})
      test::write(file(tool), "#!/bin/sh\nexit 1\n", 0755);
    test::write(file("/etc/kernel/cmdline"), kCmdline + "\n");
    test::write(file("/usr/lib/modules/" + kRelease + "/vmlinuz"), "kernel\n");
    test::write(file("/efi/loader/loader.conf"), "#timeout 3\n#console-mode keep\n");
    test::write(file(kEntry), loader_entry(kCmdline));
    test::write(file(kKernelDir + "/linux"), "kernel\n");
    test::write(file(kKernelDir + "/initrd"), exec.initramfs());
    test::write(file(loader_var("LoaderInfo")), efi_string("systemd-boot 255.4-1.fc40"));
    test::write(file(loader_var("LoaderFeatures")),
                std::string("\x06\x00\x00\x00\xff\x1f\x00\x00\x00\x00\x00\x00", 12));
    test::write(file("/proc/cmdline"), kCmdline + "\n");
  }
  test::ApplyRun apply(const std::string& yaml, bool trial = true) {
    exec.commands.clear();
    return test::apply_on_tree(plays, root(), exec, yaml, trial);
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(file(kEntries))) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  // systemd-boot: the one-shot entry when LoaderEntryOneShot names one (the variable removed as it
  // is read), else the first entry in its order (entries without tries left last, entries with a
  // sort-key before those without, then by ID, highest first). A counted entry is renamed as it
  // is booted. The kernel boots the entry's options.
  std::string boot() {
    return test::boot_with_fallback(root(), [&] {
      std::string oneshot;
      if (fs::exists(file(loader_var("LoaderEntryOneShot")))) {
        const std::string raw = slurp(file(loader_var("LoaderEntryOneShot")));
        for (size_t i = 4; i + 1 < raw.size() && raw[i]; i += 2) oneshot += raw[i];
        fs::remove(file(loader_var("LoaderEntryOneShot")));
      }
      struct Entry {
        std::string id;
        int left;
        bool sort_key;
      };
      std::vector<Entry> all;
      for (const auto& n : entries()) {
        std::smatch m;
        const bool counted = std::regex_match(n, m, std::regex(".*\\+([0-9]+)(-[0-9]+)?\\.conf"));
        all.push_back({n, counted ? std::stoi(m[1].str()) : -1, has(slurp(file(kEntries + "/" + n)), "\nsort-key")});
      }
      std::sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) {
        if ((a.left == 0) != (b.left == 0)) return b.left == 0;
        if (a.sort_key != b.sort_key) return a.sort_key;
        return a.id > b.id;
      });
      auto chosen = std::find_if(all.begin(), all.end(), [&](const Entry& e) { return e.id == oneshot; });
      if (chosen == all.end()) chosen = all.begin();
      std::string path = file(kEntries + "/" + chosen->id);
      std::smatch m;
      if (chosen->left > 0 && std::regex_match(chosen->id, m, std::regex("(.*)\\+([0-9]+)(-([0-9]+))?\\.conf"))) {
        const int done = m[4].matched ? std::stoi(m[4].str()) : 0;
        const std::string next =
            m[1].str() + "+" + std::to_string(chosen->left - 1) + "-" + std::to_string(done + 1) + ".conf";
        fs::rename(path, file(kEntries + "/" + next));
        path = file(kEntries + "/" + next);
      }
      std::string options;
      const std::string text = slurp(path);
      for (const auto& line : lines(text))
        if (line.rfind("options", 0) == 0) options += (options.empty() ? "" : " ") + join(words(line.substr(7)), " ");
      return options;
    });
  }
  std::map<std::string, std::string> host_files() const { return test::host_files(root()); }
};

const std::string kTrialInitrd = kKernelDir + "/initrd.gptagent-trial";

TEST(TrialBootSdboot, AGoodChangeIsBootedOnceFromACountedEntryThenKernelInstallCommitsIt) {
  SdbootHost host;
  const std::string entry = slurp(host.file(kEntry));
  const std::string initrd = slurp(host.file(kKernelDir + "/initrd"));

  auto first = host.apply(test::kTrialGood);
  ASSERT_EQ(first.code, 3) << first.out << first.err;
  EXPECT_EQ(host.exec.commands, (std::vector<std::string>{"modprobe -a vfio vfio_iommu_type1 vfio_pci",
                                                          "dracut -f " + kTrialInitrd + " " + kRelease,
                                                          "bootctl set-oneshot gptagent-trial+1.conf"}))
      << first.out;
  EXPECT_EQ(count_of(host.exec.commands, "kernel-install"), 0u);
  // No entry and no initramfs of the host's changed; the trial has its own of both.
  EXPECT_EQ(slurp(host.file(kEntry)), entry);
  EXPECT_EQ(slurp(host.file(kKernelDir + "/initrd")), initrd);
  EXPECT_TRUE(has(slurp(host.file(kTrialInitrd)), "vfio-pci")) << slurp(host.file(kTrialInitrd));
  auto state = nlohmann::json::parse(slurp(host.file("/var/lib/gptagent/state.json")));
  ASSERT_TRUE(state.contains("trial")) << state.dump(2);
  const std::string id = state["trial"]["id"];
  EXPECT_EQ(state["trial"]["loader"], "systemd-boot");
  EXPECT_EQ(state["trial"]["entry"], kEntries + "/gptagent-trial+1.conf");
  EXPECT_EQ(state["trial"]["initrd"], kTrialInitrd);
  // The copy: its title, no sort-key (it sorts after every entry that has one), the options
  // kernel-install will write from the stage's /etc/kernel/cmdline, the trial's initramfs.
  EXPECT_EQ(slurp(host.file(kEntries + "/gptagent-trial+1.conf")),
            "# Boot Loader Specification type#1 entry\n"
            "# File created by /usr/lib/kernel/install.d/90-loaderentry.install (systemd 255.4-1.fc40)\n"
            "title gptagent trial boot (stage boot)\nversion    " +
                kRelease + "\nmachine-id " + kMachineId + "\noptions " + kCmdline +
                " intel_iommu=on iommu=pt panic=10 gptagent.trial=" + id + "\nlinux      /" + kMachineId + "/" +
                kRelease + "/linux\ninitrd     /" + kMachineId + "/" + kRelease + "/initrd.gptagent-trial\n");
  EXPECT_EQ(slurp(host.file("/etc/kernel/cmdline")), kCmdline + " intel_iommu=on iommu=pt\n");

  const std::string trial_cmdline = host.boot();
  EXPECT_TRUE(has(trial_cmdline, "gptagent.trial=" + id)) << trial_cmdline;
  EXPECT_FALSE(fs::exists(host.file(loader_var("LoaderEntryOneShot")))) << "systemd-boot took the one-shot";
  EXPECT_EQ(host.entries(),
            (std::vector<std::string>{kMachineId + "-" + kRelease + ".conf", "gptagent-trial+0-1.conf"}));

  auto second = host.apply(test::kTrialGood);
  ASSERT_EQ(second.code, 0) << second.out << second.err;
  EXPECT_EQ(
      count_of(host.exec.commands, "kernel-install add " + kRelease + " /usr/lib/modules/" + kRelease + "/vmlinuz"), 1u)
      << join(host.exec.commands, "\n");
  EXPECT_EQ(count_of(host.exec.commands, "dracut -f --regenerate-all"), 1u) << join(host.exec.commands, "\n");
  EXPECT_TRUE(has(second.out, "committed: the default entry boots the stage's change")) << second.out;
  // The tried entry goes under the name systemd-boot's counting gave it; so does its initramfs.
  EXPECT_EQ(host.entries(), std::vector<std::string>{kMachineId + "-" + kRelease + ".conf"});
  EXPECT_FALSE(fs::exists(host.file(kTrialInitrd)));
  EXPECT_FALSE(fs::exists(host.file("/var/lib/gptagent/state.json")));
  EXPECT_TRUE(has(slurp(host.file(kEntry)), "quiet intel_iommu=on iommu=pt\n")) << slurp(host.file(kEntry));
  EXPECT_TRUE(has(slurp(host.file(kKernelDir + "/initrd")), "vfio-pci"));

  // A plain reboot boots the kernel's entry, which carries the change now; a third run changes nothing.
  const std::string plain = host.boot();
  EXPECT_TRUE(has(plain, "intel_iommu=on iommu=pt")) << plain;
  EXPECT_FALSE(has(plain, "gptagent.trial=")) << plain;
  auto third = host.apply(test::kTrialGood);
  EXPECT_EQ(third.code, 0) << third.out << third.err;
  EXPECT_TRUE(has(third.out, "changed=0")) << third.out;
}

// systemd-bless-boot marks a counted entry good once boot-complete.target is reached: with an
// installed agent, a unit in the trial boot runs the stage's checks before it, so that the trial is
// marked good only when they pass. `resume --check` is that check: it changes and commits nothing.
TEST(TrialBootSdboot, TheTrialIsMarkedGoodOnlyAfterTheChecksBeforeBootComplete) {
  SdbootHost host;
  test::write(host.file("/usr/bin/gptagent"), "#!/bin/sh\n", 0755);
  auto first = host.apply(test::kTrialGood);
  ASSERT_EQ(first.code, 3) << first.out << first.err;
  EXPECT_EQ(host.exec.commands,
            (std::vector<std::string>{
                "modprobe -a vfio vfio_iommu_type1 vfio_pci", "dracut -f " + kTrialInitrd + " " + kRelease,
                "systemctl enable gptagent-trial-check.service", "bootctl set-oneshot gptagent-trial+1.conf"}));
  EXPECT_TRUE(has(first.out, "runs the stage's checks before boot-complete.target")) << first.out;
  const std::string id =
      nlohmann::json::parse(slurp(host.file("/var/lib/gptagent/state.json")))["trial"]["id"].get<std::string>();
  EXPECT_EQ(slurp(host.file(kTrialCheckUnit)),
            "# Written by gptagent: in a trial boot only, the stage's checks before boot-complete.target, so\n"
            "# that systemd-bless-boot marks the trial entry good only when they pass. Removed with the trial.\n"
            "[Unit]\nDescription=gptagent: check the trial boot before it is marked good\n"
            "ConditionKernelCommandLine=gptagent.trial=" +
                id +
                "\nBefore=boot-complete.target\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/gptagent resume "
                "--check\nSuccessExitStatus=2\n\n[Install]\nRequiredBy=boot-complete.target\n");

  host.boot();
  // In the trial boot the check passes (2: the commit is what is left) and commits nothing.
  ApplyOptions o;
  o.root = host.root();
  o.system_commands = true;
  o.check = true;
  host.exec.commands.clear();
  std::ostringstream out, err;
  EXPECT_EQ(run_resume(o, host.exec, out, err), 2) << out.str() << err.str();
  EXPECT_EQ(count_of(host.exec.commands, "kernel-install"), 0u);
  EXPECT_TRUE(fs::exists(host.file(kEntries + "/gptagent-trial+0-1.conf")));
  EXPECT_TRUE(fs::exists(host.file("/var/lib/gptagent/state.json")));

  // The commit takes the check away with the trial.
  auto second = host.apply(test::kTrialGood);
  ASSERT_EQ(second.code, 0) << second.out << second.err;
  EXPECT_FALSE(fs::exists(host.file(kTrialCheckUnit)));
  EXPECT_FALSE(fs::is_symlink(host.file(kTrialCheckLink)));
}

TEST(TrialBootSdboot, ATrialThatPanicsFallsBackAndLeavesEveryFileAsItWas) {
  SdbootHost host;
  const auto before = host.host_files();
  const std::string cmdline_before = slurp(host.file("/proc/cmdline"));
  auto first = host.apply(test::kTrialBad);
  ASSERT_EQ(first.code, 3) << first.out << first.err << join(host.exec.commands, "\n");
  EXPECT_TRUE(
      has(slurp(host.file(kEntries + "/gptagent-trial+1.conf")), " rdinit=/gptagent-missing panic=10 gptagent.trial="));
  // Only the command line changed: the trial boots the kernel's own initramfs.
  EXPECT_TRUE(has(slurp(host.file(kEntries + "/gptagent-trial+1.conf")), "/initrd\n"));
  EXPECT_EQ(count_of(host.exec.commands, "dracut"), 0u);

  // The trial panics; panic=10 resets the machine, systemd-boot boots the default entry (the
  // tried one, with no tries left, sorts last).
  const std::string fallen_back = host.boot();
  EXPECT_FALSE(has(fallen_back, "gptagent.trial=")) << fallen_back;

  auto second = host.apply(test::kTrialBad);
  EXPECT_EQ(second.code, 1) << second.out << second.err;
  EXPECT_TRUE(has(second.out, "the trial boot did not come up: the host fell back to the previous entry"))
      << second.out;
  EXPECT_EQ(count_of(host.exec.commands, "kernel-install"), 0u) << "nothing is committed";
  EXPECT_EQ(test::differences(before, host.host_files()), "");
  EXPECT_EQ(host.boot() + "\n", cmdline_before);
}

// gptagent revert on systemd-boot: /etc/kernel/cmdline and the vfio files put back, booted as a
// trial whose commit is kernel-install writing the entry again from the original file.
TEST(TrialBootSdboot, RevertPutsTheEntryBackThroughATrialAndKernelInstall) {
  SdbootHost host;
  const auto before = host.host_files();
  const std::string cmdline_before = slurp(host.file("/proc/cmdline"));
  ASSERT_EQ(host.apply(test::kTrialGood).code, 3);
  host.boot();
  ASSERT_EQ(host.apply(test::kTrialGood).code, 0);
  host.boot();
  ASSERT_NE(test::differences(before, host.host_files()), "");

  ApplyOptions o;
  o.root = host.root();
  o.trial = true;
  o.system_commands = true;
  host.exec.commands.clear();
  std::ostringstream out, err;
  ASSERT_EQ(run_revert(o, host.exec, out, err), 3) << out.str() << err.str();
  EXPECT_EQ(count_of(host.exec.commands, "kernel-install"), 0u) << "the revert is booted as a trial first" << out.str();
  EXPECT_EQ(count_of(host.exec.commands, "bootctl set-oneshot gptagent-trial+1.conf"), 1u)
      << join(host.exec.commands, "\n");
  const std::string trial = host.boot();
  EXPECT_TRUE(has(trial, "gptagent.trial=")) << trial;
  EXPECT_FALSE(has(trial, "iommu=pt")) << trial;
  std::ostringstream out2, err2;
  EXPECT_EQ(run_resume(o, host.exec, out2, err2), 0) << out2.str() << err2.str();
  EXPECT_EQ(count_of(host.exec.commands, "kernel-install add " + kRelease), 1u) << join(host.exec.commands, "\n");
  // Byte for byte as before the first run (backups aside): the entry kernel-install wrote again
  // from the original /etc/kernel/cmdline is the one the host had.
  EXPECT_EQ(test::differences(before, host.host_files()), "");
  EXPECT_EQ(host.boot() + "\n", cmdline_before);
  std::ostringstream out3, err3;
  EXPECT_EQ(run_revert(o, host.exec, out3, err3), 0) << out3.str() << err3.str();
  EXPECT_TRUE(has(out3.str(), "changed=0")) << out3.str();
}

// A trial armed but never booted is taken back (what --reset-state does with one): the one-shot is
// disarmed along with the entry, so that no later reset boots an entry that is gone.
TEST(TrialBootSdboot, UndoingAnArmedTrialDisarmsTheOneShot) {
  SdbootHost host;
  auto first = host.apply(test::kTrialBad);
  ASSERT_EQ(first.code, 3) << first.out << first.err;
  auto state = nlohmann::json::parse(slurp(host.file("/var/lib/gptagent/state.json")));
  auto trial = TrialRecord::from_json(state["trial"]);
  ASSERT_TRUE(trial) << trial.error();
  ASSERT_TRUE(fs::exists(host.file(loader_var("LoaderEntryOneShot"))));
  Root root(host.root());
  Facts facts;
  Context ctx{root, host.exec, facts};
  ctx.system_commands_allowed = true;
  host.exec.commands.clear();
  Result undone = undo_trial(ctx, *trial);
  EXPECT_EQ(undone.status, Outcome::changed) << undone.msg;
  EXPECT_EQ(host.exec.commands, std::vector<std::string>{"bootctl set-oneshot ''"});
  EXPECT_FALSE(fs::exists(host.file(loader_var("LoaderEntryOneShot"))));
  EXPECT_EQ(host.entries(), std::vector<std::string>{kMachineId + "-" + kRelease + ".conf"});
  EXPECT_EQ(slurp(host.file("/etc/kernel/cmdline")), kCmdline + "\n");
}

// Where the trial cannot be booted once and then fall back, the run is refused before anything
// changes, with --no-trial as the way out.
TEST(TrialBootSdboot, HostsWhereTheOneShotCannotBeTrustedAreRefused) {
  struct Case {
    std::string what;
    std::function<void(SdbootHost&)> make;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"booted through another loader", [](SdbootHost& h) { fs::remove(h.file(loader_var("LoaderInfo"))); },
            "this boot did not come through systemd-boot (its LoaderInfo EFI variable is not set)"},
           {"a systemd-boot without one-shot entries",
            [](SdbootHost& h) {
              test::write(h.file(loader_var("LoaderFeatures")), std::string("\x06\x00\x00\x00\x07\x00\x00\x00", 8));
            },
            "does not take a one-shot entry"},
           {"a default pattern that takes the trial",
            [](SdbootHost& h) { test::write(h.file("/efi/loader/loader.conf"), "timeout 3\ndefault *\n"); },
            "/efi/loader/loader.conf names the default entry as '*', which takes the trial's gptagent-trial+1.conf"},
           {"two entries of the running kernel",
            [](SdbootHost& h) {
              test::write(h.file("/boot/loader/entries/other-" + kRelease + ".conf"), "linux /x\n");
            },
            "several boot entries of the running kernel"},
           {"no entry of the running kernel", [](SdbootHost& h) { fs::remove(h.file(kEntry)); },
            "no boot entry of the running kernel " + kRelease},
           {"a unified kernel image",
            [](SdbootHost& h) { test::write(h.file(kEntry), "title UKI\nefi /EFI/Linux/fedora.efi\n"); },
            "boots efi /EFI/Linux/fedora.efi, not a kernel with a command line of its own"},
       }) {
    SdbootHost host;
    c.make(host);
    const auto before = host.host_files();
    auto run = host.apply(test::kTrialGood);
    EXPECT_EQ(run.code, 1) << c.what << "\n" << run.out;
    EXPECT_TRUE(has(run.out, c.says)) << c.what << "\n" << run.out;
    EXPECT_TRUE(has(run.out, "Run with --no-trial")) << c.what << "\n" << run.out;
    EXPECT_EQ(test::differences(before, host.host_files()), "") << c.what;
    EXPECT_TRUE(host.exec.commands.empty()) << c.what << "\n" << join(host.exec.commands, "\n");
  }
}

// A link planted where the trial's entry goes is not followed: the file it names stays as it was.
TEST(TrialBootSdboot, ALinkWhereTheTrialEntryGoesIsNotFollowed) {
  SdbootHost host;
  test::write(host.file("/etc/victim"), "untouched\n");
  fs::create_symlink("../../../etc/victim", host.file(kEntries + "/gptagent-trial+1.conf"));
  auto run = host.apply(test::kTrialGood);
  EXPECT_EQ(run.code, 1) << run.out;
  EXPECT_TRUE(has(run.out, "cannot arm the trial boot")) << run.out;
  EXPECT_EQ(slurp(host.file("/etc/victim")), "untouched\n");
  EXPECT_EQ(count_of(host.exec.commands, "bootctl"), 0u) << join(host.exec.commands, "\n");
}

TEST(TrialBootSdboot, NoTrialCommitsThroughKernelInstallDirectly) {
  SdbootHost host;
  auto run = host.apply(test::kTrialGood, false);
  EXPECT_EQ(run.code, 3) << run.out << run.err;
  EXPECT_EQ(count_of(host.exec.commands, "kernel-install add " + kRelease), 1u) << join(host.exec.commands, "\n");
  EXPECT_EQ(count_of(host.exec.commands, "bootctl"), 0u);
  EXPECT_EQ(host.entries(), std::vector<std::string>{kMachineId + "-" + kRelease + ".conf"});
  EXPECT_TRUE(has(slurp(host.file(kEntry)), "quiet intel_iommu=on iommu=pt\n"));
}

// ---- the real entries of tests/fixtures/loader_entries, each as the running kernel's ----

constexpr const char* kCmdlineOnly = R"(stages:
  - name: boot
    reboot: when_needed
    tasks:
      - name: IOMMU passthrough mode
        kernel_cmdline:
          present: [iommu=pt]
)";
constexpr const char* kVfioOnly = R"(stages:
  - name: boot
    reboot: when_needed
    tasks:
      - name: vfio-pci claims the GPU at boot
        vfio:
          devices: ["0000:01:00.0"]
)";

std::vector<fs::path> corpus(const std::string& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(test::source_path("tests/fixtures/loader_entries/" + dir)))
    if (e.is_regular_file() && e.path().extension() == ".conf" && e.path().parent_path().filename() != "loader.conf")
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string first_word(std::string_view line) {
  auto w = words(line);
  return w.empty() ? "" : w[0];
}

// What a trial made of `original` must be: every line as it was, in order, but the title, the
// sort-key, the options (one line, `options` then the parameters) and the kernel's own initrd
// (the same line naming the trial's, when `initrd` is set).
void expect_trial_of(const std::string& original, const std::string& trial, const std::vector<std::string>& params,
                     const std::string& initrd, const std::string& what) {
  std::vector<std::string> kept, got;
  for (std::string_view line : lines(original)) {
    const std::string w = first_word(line);
    if (w == "title" || w == "sort-key" || w == "options") continue;
    if (w == "initrd" && !initrd.empty() && (words(line).size() > 1 && (words(line)[1] == initrd))) {
      std::string l(line);
      l.replace(l.find(initrd, l.find("initrd") + 6), initrd.size(), initrd + ".gptagent-trial");
      kept.push_back(l);
      continue;
    }
    kept.emplace_back(line);
  }
  std::vector<std::string> options;
  for (std::string_view line : lines(trial)) {
    const std::string w = first_word(line);
    if (w == "title") {
      EXPECT_EQ(line, "title gptagent trial boot (stage boot)") << what;
    } else if (w == "options") {
      options.emplace_back(line);
    } else {
      EXPECT_NE(w, "sort-key") << what;
      got.emplace_back(line);
    }
  }
  EXPECT_EQ(got, kept) << what << "\n" << trial;
  ASSERT_EQ(options.size(), 1u) << what << "\n" << trial;
  EXPECT_EQ(options[0], "options " + join(params, " ")) << what;
}

TEST(TrialBootSdbootCorpus, EveryRealEntryIsCopiedLineForLineOrRefusedWithItsReason) {
  size_t trials = 0, refused = 0;
  for (const auto& path : corpus("")) {
    const std::string original = slurp(path.string());
    const auto all = lines(original);
    const bool boots_linux =
        std::any_of(all.begin(), all.end(), [](std::string_view l) { return first_word(l) == "linux"; });
    // The entry's own options, as systemd-boot joins its options lines.
    std::vector<std::string> own;
    for (std::string_view line : lines(original))
      if (first_word(line) == "options") {
        line = trim(line);
        for (auto& p : parse_cmdline(line.substr(7))) own.push_back(p);
      }
    // The kernel's own initramfs, as kernel-install names it: `initrd` in the kernel's directory.
    std::string kernel_initrd;
    for (std::string_view line : lines(original))
      if (auto w = words(line); w.size() > 1 && w[0] == "initrd" && fs::path(w[1]).filename() == "initrd")
        kernel_initrd = w[1];
    for (const char* playbook : {kCmdlineOnly, kVfioOnly}) {
      const bool vfio = playbook == kVfioOnly;
      const std::string what = path.string() + (vfio ? " (vfio)" : " (kernel_cmdline)");
      SdbootHost host;
      test::write(host.file(kEntry), original);
      const auto before = host.host_files();
      auto run = host.apply(playbook);
      const bool can = boots_linux && (!vfio || !kernel_initrd.empty());
      if (!can) {
        ++refused;
        EXPECT_EQ(run.code, 1) << what << "\n" << run.out;
        EXPECT_TRUE(has(run.out, kEntry)) << what << "\n" << run.out;
        EXPECT_TRUE(has(run.out, "Run with --no-trial")) << what << "\n" << run.out;
        EXPECT_EQ(test::differences(before, host.host_files()), "") << what;
        continue;
      }
      ++trials;
      ASSERT_EQ(run.code, 3) << what << "\n" << run.out << run.err;
      auto state = nlohmann::json::parse(slurp(host.file("/var/lib/gptagent/state.json")));
      std::vector<std::string> params = vfio ? own : words(slurp(host.file("/etc/kernel/cmdline")));
      // kernel-install keeps the machine ID on the command line of entries named after it.
      for (const auto& p : own)
        if (!vfio && p.rfind("systemd.machine_id=", 0) == 0) params.push_back(p);
      params.push_back("panic=10");
      params.push_back("gptagent.trial=" + state["trial"]["id"].get<std::string>());
      expect_trial_of(original, slurp(host.file(kEntries + "/gptagent-trial+1.conf")), params,
                      vfio ? kernel_initrd : "", what);
      if (vfio) {
        EXPECT_EQ(state["trial"]["initrd"], "/efi" + kernel_initrd + ".gptagent-trial") << what;
      }
    }
  }
  // The corpus holds both kinds: kernel-install's entries, and Windows, shells, UKIs and Arch's
  // hand-made initramfs names that a trial cannot copy.
  EXPECT_GE(trials, 25u);
  EXPECT_GE(refused, 10u);
}

// The real loader.conf files: none names a default that the trial's ID would match.
TEST(TrialBootSdbootCorpus, RealLoaderConfsLeaveTheTrialOutOfTheDefault) {
  const auto confs = [] {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(test::source_path("tests/fixtures/loader_entries/loader.conf")))
      out.push_back(e.path());
    return out;
  }();
  ASSERT_GE(confs.size(), 5u);
  for (const auto& conf : confs) {
    SdbootHost host;
    test::write(host.file("/efi/loader/loader.conf"), slurp(conf.string()));
    auto run = host.apply(kCmdlineOnly);
    EXPECT_EQ(run.code, 3) << conf << "\n" << run.out;
    EXPECT_TRUE(fs::exists(host.file(kEntries + "/gptagent-trial+1.conf"))) << conf;
  }
}

TEST(TrialBootSdboot, AStateFileCannotNameAnotherEntryOrInitramfs) {
  nlohmann::json j = {{"id", "0123456789ab"},
                      {"grub_dir", ""},
                      {"loader", "systemd-boot"},
                      {"initrd", kTrialInitrd},
                      {"custom_cfg_created", false},
                      {"deferred", nlohmann::json::array()},
                      {"deferred_notified", nlohmann::json::array()},
                      {"written", nlohmann::json::array()},
                      {"entry", kEntries + "/gptagent-trial+1.conf"}};
  ASSERT_TRUE(TrialRecord::from_json(j)) << TrialRecord::from_json(j).error();
  for (const std::string& other : {kEntry, std::string("/etc/shadow"), kEntries + "/../../etc/gptagent-trial+1.conf",
                                   std::string(kTrialBlsEntry)}) {
    auto k = j;
    k["entry"] = other;
    EXPECT_FALSE(TrialRecord::from_json(k)) << other;
  }
  for (const std::string& other :
       {kKernelDir + "/initrd", std::string("/etc/initrd.gptagent-trial"),
        std::string("/efi/../etc/initrd.gptagent-trial"), kKernelDir + "/x y.gptagent-trial"}) {
    auto k = j;
    k["initrd"] = other;
    EXPECT_FALSE(TrialRecord::from_json(k)) << other;
  }
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"loader", "lilo"}, {"grub_dir", "/boot/grub"}}) {
    auto k = j;
    k[key] = value;
    EXPECT_FALSE(TrialRecord::from_json(k)) << key << "=" << value;
  }
}

}  // namespace
}  // namespace gpt
