// Reboot-aware staged runs, driven through the binary on a sample Ubuntu 22.04 tree (an Intel
// host, a GTX 1080 on nouveau, an NVIDIA X config): stop for the reboot (exit 3), wait for it,
// verify it with the facts of the new boot, go on with the next stage; the diagnoses when the
// reboot did not bring what was asked for; the operator's overrides; and a run killed anywhere.
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/chaos/chaos.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using test::run_agent;
using test::SampleHost;
using test::slurp;
namespace fs = std::filesystem;

// Stage 1 needs a reboot (the kernel command line, vfio-pci at boot); stage 2 does not, and must
// run only once the reboot has been verified.
constexpr const char* kTwoStages = R"(vars:
  gpu: "0000:01:00.0"
stages:
  - name: boot
    reboot: when_needed
    tasks:
      - name: IOMMU on the kernel command line
        grub_cmdline:
          iommu: auto
          present: [nouveau.modeset=0]
      - name: vfio-pci claims the GPU at boot
        vfio:
          devices: ["{{ gpu }}"]
  - name: desktop
    tasks:
      - name: No X11 config may take the GPU
        xorg_cleanup: {}
)";

constexpr const char* kXorg = "/usr/share/X11/xorg.conf.d/10-nvidia.conf";
constexpr const char* kState = "/var/lib/gptagent/state.json";

struct StagedHost : SampleHost {
  test::TempDir plays;
  std::string playbook = plays / "host.yaml";
  StagedHost() { test::write(playbook, kTwoStages); }
  test::ProcResult apply(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args{"apply", playbook, "--root", root(), "--color", "never"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_agent(args);
  }
  nlohmann::json state() const { return nlohmann::json::parse(slurp(file(kState))); }
  void reboot() const {
    auto r = test::sandbox_reboot(root());
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // A boot that does not come from the grub files: only a new boot_id.
  void reboot_keeping_cmdline() const {
    test::write(file("/proc/sys/kernel/random/boot_id"), "1b4e28ba-2fa1-11d2-883f-0016d3cca427\n");
  }
};

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

using test::differences;

TEST(Stages, TheWholeCycleStopsWaitsVerifiesAndGoesOn) {
  StagedHost host;
  const std::string xorg_before = slurp(host.file(kXorg));
  const std::string boot_before = slurp(host.file("/proc/sys/kernel/random/boot_id"));

  auto first = host.apply();
  ASSERT_EQ(first.exit_code, 3) << first.out << first.err;
  EXPECT_TRUE(has(first.out, "changed: [IOMMU on the kernel command line]")) << first.out;
  EXPECT_TRUE(has(first.out, "stopped for a reboot after stage boot")) << first.out;
  EXPECT_FALSE(has(first.out, "STAGE [desktop]")) << "the stage after the reboot ran before it";
  EXPECT_EQ(slurp(host.file(kXorg)), xorg_before);
  auto st = host.state();
  EXPECT_EQ(st["phase"], "waiting_for_reboot");
  EXPECT_EQ(st["stage"], "boot");
  EXPECT_EQ(st["next_stage"], 1);
  EXPECT_EQ(st["playbook"], fs::canonical(host.playbook).string());
  EXPECT_EQ(st["boot_id"].get<std::string>() + "\n", boot_before);
  EXPECT_EQ(st["expect"]["cmdline_present"],
            (nlohmann::json{"intel_iommu=on", "nouveau.modeset=0", "vfio-pci.ids=10de:1b80,10de:10f0"}));
  EXPECT_EQ(st["expect"]["cmdline_absent"], nlohmann::json{"iommu=off"});
  EXPECT_EQ(st["expect"]["vfio_devices"], (nlohmann::json{"0000:01:00.0", "0000:01:00.1"}));
  EXPECT_EQ(st["expect"]["modules"], (nlohmann::json{"vfio", "vfio_iommu_type1", "vfio_pci", "vfio_virqfd"}));

  // Before the reboot: nothing is touched, whatever the mode (the lock in /run names each run's pid).
  auto without_lock = [&] {
    auto tree = test::snapshot(host.root());
    tree.erase("run/gptagent.lock");
    return tree;
  };
  const auto waiting_tree = without_lock();
  auto again = host.apply();
  EXPECT_EQ(again.exit_code, 3);
  EXPECT_TRUE(has(again.out, "waiting for reboot: stage boot of")) << again.out;
  EXPECT_TRUE(has(again.out, "nothing was changed")) << again.out;
  auto check = host.apply({"--check"});
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_TRUE(has(check.out, "waiting for reboot")) << check.out;
  auto json = host.apply({"--json"});
  EXPECT_EQ(json.exit_code, 3);
  auto doc = nlohmann::json::parse(json.out);
  EXPECT_EQ(doc["waiting_for_reboot"], true);
  EXPECT_EQ(doc["state"]["stage"], "boot");
  auto status = run_agent({"status", "--root", host.root()});
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_TRUE(has(status.out, "stage boot of " + fs::canonical(host.playbook).string() + " asked for a reboot"))
      << status.out;
  EXPECT_TRUE(has(status.out, "the host has not rebooted since")) << status.out;
  EXPECT_TRUE(has(status.out,
                  "kernel command line must have: intel_iommu=on nouveau.modeset=0 vfio-pci.ids=10de:1b80,10de:10f0"))
      << status.out;
  EXPECT_TRUE(has(status.out, "bound to vfio-pci: 0000:01:00.0 0000:01:00.1")) << status.out;
  EXPECT_EQ(differences(waiting_tree, without_lock()), "");

  host.reboot();
  auto status_after = run_agent({"status", "--root", host.root(), "--json"});
  EXPECT_EQ(nlohmann::json::parse(status_after.out)["rebooted"], true) << status_after.out;

  auto after = host.apply();
  ASSERT_EQ(after.exit_code, 0) << after.out << after.err;
  for (const char* line :
       {"STAGE [after the reboot (stage boot)]", "ok: [the kernel command line has intel_iommu=on]",
        "ok: [the kernel command line has no iommu=off]", "ok: [vfio_iommu_type1 is loaded]",
        "ok: [0000:01:00.1 is bound to vfio-pci]", "STAGE [desktop]", "changed: [No X11 config may take the GPU]"})
    EXPECT_TRUE(has(after.out, line)) << line << "\n" << after.out;
  EXPECT_FALSE(has(after.out, "STAGE [boot]")) << "the verified stage ran again";
  EXPECT_FALSE(test::exists(host.file(kState)));
  EXPECT_NE(slurp(host.file(kXorg)), xorg_before);

  auto converged = host.apply();
  EXPECT_EQ(converged.exit_code, 0) << converged.out;
  EXPECT_TRUE(has(converged.out, "ok=3    changed=0    unreachable=0    failed=0    skipped=0")) << converged.out;
  EXPECT_FALSE(has(converged.out, "after the reboot"));
  auto no_drift = host.apply({"--check"});
  EXPECT_EQ(no_drift.exit_code, 0) << no_drift.out;
  auto idle = run_agent({"status", "--root", host.root()});
  EXPECT_EQ(idle.out,
            "no run is waiting for a reboot\n"
            "no drift check recorded (apply --textfile records one; gptagent-drift.timer runs it)\n");
}

TEST(Stages, AParameterMissingAfterTheRebootIsDiagnosedAndTheWaitKept) {
  StagedHost host;
  ASSERT_EQ(host.apply().exit_code, 3);
  host.reboot_keeping_cmdline();  // the old entry booted: grub.cfg not regenerated
  auto r = host.apply();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(has(r.out,
                  "failed: [the kernel command line has intel_iommu=on] intel_iommu=on is not on the running "
                  "kernel's command line (/proc/cmdline): the boot configuration was not regenerated, or another "
                  "boot entry was booted"))
      << r.out;
  EXPECT_FALSE(has(r.out, "STAGE [desktop]"));
  EXPECT_TRUE(test::exists(host.file(kState))) << "the checks must run again after the next reboot";
  host.reboot();
  EXPECT_EQ(host.apply().exit_code, 0);
}

TEST(Stages, AnIommuWithoutGroupsPointsAtTheFirmware) {
  StagedHost host;
  ASSERT_EQ(host.apply().exit_code, 3);
  host.reboot();
  // VT-d off in the firmware: intel_iommu=on is on the command line, the kernel makes no groups.
  fs::remove_all(host.file("/sys/kernel/iommu_groups"));
  for (const auto& dev : fs::directory_iterator(host.file("/sys/bus/pci/devices")))
    fs::remove(fs::canonical(dev.path()) / "iommu_group");
  auto r = host.apply();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(has(r.out,
                  "failed: [the IOMMU is on (0 groups)] the IOMMU is enabled on the command line but the kernel "
                  "made no IOMMU groups: enable VT-d / AMD-Vi in the firmware setup"))
      << r.out;
  EXPECT_TRUE(has(r.out, "ok: [the kernel command line has intel_iommu=on]")) << r.out;
}

TEST(Stages, AGpuStillOnNouveauSaysWhy) {
  StagedHost host;
  ASSERT_EQ(host.apply().exit_code, 3);
  host.reboot();
  const fs::path gpu = fs::canonical(host.file("/sys/bus/pci/devices/0000:01:00.0"));
  fs::remove(gpu / "driver");
  fs::create_symlink("../../../../bus/pci/drivers/nouveau", gpu / "driver");
  auto r = host.apply();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(has(r.out,
                  "failed: [0000:01:00.0 is bound to vfio-pci] 0000:01:00.0 is on nouveau, not vfio-pci: the "
                  "initramfs was not rebuilt"))
      << r.out;
  EXPECT_TRUE(has(r.out, "ok: [0000:01:00.1 is bound to vfio-pci]")) << r.out;
}

TEST(Stages, FromStageAndResetStateOverrideTheRecord) {
  StagedHost host;
  ASSERT_EQ(host.apply().exit_code, 3);
  auto bad = host.apply({"--from-stage", "nosuch"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(has(bad.err, "--from-stage: the playbook has no stage 'nosuch' (stages: boot, desktop)")) << bad.err;
  EXPECT_TRUE(test::exists(host.file(kState)));

  auto from = host.apply({"--from-stage", "desktop"});
  EXPECT_EQ(from.exit_code, 0) << from.out;
  EXPECT_FALSE(has(from.out, "STAGE [boot]"));
  EXPECT_TRUE(has(from.out, "changed: [No X11 config may take the GPU]")) << from.out;
  EXPECT_FALSE(test::exists(host.file(kState)));

  StagedHost other;
  ASSERT_EQ(other.apply().exit_code, 3);
  auto reset = other.apply({"--reset-state"});
  // Everything the first stage wanted is on disk already: nothing asks for a reboot now.
  EXPECT_EQ(reset.exit_code, 0) << reset.out;
  EXPECT_TRUE(has(reset.out, "ok: [IOMMU on the kernel command line]")) << reset.out;
  EXPECT_TRUE(has(reset.out, "changed: [No X11 config may take the GPU]")) << reset.out;
  EXPECT_FALSE(test::exists(other.file(kState)));
}

TEST(Stages, AChangedPlaybookIsVerifiedThenConvergedFromTheStart) {
  StagedHost host;
  ASSERT_EQ(host.apply().exit_code, 3);
  std::string changed = kTwoStages;
  changed.replace(changed.find("[nouveau.modeset=0]"), 19, "[nouveau.modeset=0, iommu=pt]");
  test::write(host.playbook, changed);
  host.reboot();
  auto r = host.apply();
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "ok: [the kernel command line has intel_iommu=on]")) << r.out;
  EXPECT_TRUE(has(r.out, "the playbook changed since the reboot was asked for: converging it from the first stage"))
      << r.out;
  EXPECT_TRUE(has(r.out, "changed: [IOMMU on the kernel command line] GRUB_CMDLINE_LINUX: added iommu=pt")) << r.out;
  EXPECT_EQ(host.state()["expect"]["cmdline_present"][2], "iommu=pt");
  host.reboot();
  EXPECT_EQ(host.apply().exit_code, 0);
}

// The tree a run leaves, with what differs between two runs on two trees normalised: the backup
// time stamps, when the state was recorded and the playbook's temporary path, the lock holder's pid.
std::map<std::string, std::string> normalised(const std::string& root) {
  std::map<std::string, std::string> out;
  static const std::regex stamp(R"(\.gptagent-\d{8}T\d{6})");
  static const std::regex recorded(R"re("(recorded_at|playbook)": "[^"]*")re");
  for (auto [path, content] : test::snapshot(root)) {
    if (path.ends_with("state.json")) content = std::regex_replace(content, recorded, R"("$1": "")");
    if (path == "run/gptagent.lock") content = "(pid)";
    out[std::regex_replace(path, stamp, ".gptagent-STAMP")] = content;
  }
  return out;
}

// Kills the run at the Nth call of each syscall that changes the tree (strace counts the calls of
// each syscall apart), for every N the run makes, then runs apply again: the tree must be what an
// uninterrupted run leaves, and the state file must parse whenever it exists.
// With --json, stdout is the report alone, whatever the run has to say about the run before it
// (a fleet parses it): an interrupted run that left work, a playbook changed since the reboot.
TEST(Stages, JsonOutputIsTheReportAloneAfterAnInterruptedRunOrAChangedPlaybook) {
  auto expect_report_alone = [](const test::ProcResult& r, const std::string& note) {
    const auto doc = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << "stdout is not one JSON document:\n" << r.out;
    EXPECT_TRUE(doc.is_object() && doc.contains("exit_code")) << r.out;
    EXPECT_TRUE(has(r.err, "gptagent: " + note)) << r.err;
  };
  {
    // Killed by strace at a write once the run's intent is recorded: the state says so.
    StagedHost host;
    for (int n = 1; n < 60 && !test::exists(host.file(kState)); ++n) {
      auto killed = test::run_program("/usr/bin/strace",
                                      {"-f", "-o", "/dev/null", "-e", "trace=renameat,rename", "-e",
                                       "inject=renameat,rename:signal=SIGKILL:when=" + std::to_string(n), GPTAGENT_BIN,
                                       "apply", host.playbook, "--root", host.root()},
                                      {"ASAN_OPTIONS=detect_leaks=0"});
      if (killed.exit_code != SIGKILL && killed.exit_code != 128 + SIGKILL) break;
    }
    ASSERT_TRUE(test::exists(host.file(kState))) << "no kill point left an interrupted run";
    ASSERT_NE(host.state().value("phase", ""), "waiting_for_reboot") << host.state().dump();
    auto r = host.apply({"--json"});
    EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
    expect_report_alone(r, "an interrupted run (");
  }
  {
    StagedHost host;
    ASSERT_EQ(host.apply().exit_code, 3);
    host.reboot();
    test::write(host.playbook, slurp(host.playbook) + "# edited after the reboot was asked for\n");
    auto r = host.apply({"--json"});
    expect_report_alone(r, "the playbook changed since the reboot was asked for");
  }
}

TEST(Stages, ARunKilledAtAnyPointAndRunAgainEndsLikeAnUninterruptedOne) {
  const std::string strace = "/usr/bin/strace";
  if (::access(strace.c_str(), X_OK) != 0) GTEST_FAIL() << "strace is needed (scripts/deps installs it)";
  StagedHost reference;
  ASSERT_EQ(reference.apply().exit_code, 3);
  const auto want = normalised(reference.root());

  int kills = 0;
  std::map<std::string, int> per_syscall;
  // Under ASan (each run about ten times slower) every 8th point, as ChaosKill does: the first
  // call of each kind is always among them.
  const int stride = chaos::kAsan ? 8 : 1;
  for (const std::string syscall : {"write", "fsync", "renameat", "linkat", "unlinkat", "mkdir", "fchmod"}) {
    for (int n = 1; n < 200; n += stride) {
      StagedHost host;
      std::vector<std::string> args{"-f",
                                    "-o",
                                    "/dev/null",
                                    "-e",
                                    "trace=" + syscall,
                                    "-e",
                                    "inject=" + syscall + ":signal=SIGKILL:when=" + std::to_string(n),
                                    GPTAGENT_BIN,
                                    "apply",
                                    host.playbook,
                                    "--root",
                                    host.root(),
                                    "--color",
                                    "never"};
      // LeakSanitizer cannot run under ptrace: under ASan builds the leak check is left to the other tests.
      auto killed = test::run_program(strace, args, {"ASAN_OPTIONS=detect_leaks=0"});
      // Boost reports a death by signal as the signal's number; strace dies by the tracee's signal.
      if (killed.exit_code != SIGKILL && killed.exit_code != 128 + SIGKILL) {  // fewer than n calls: it ended
        EXPECT_EQ(killed.exit_code, 3) << syscall << " " << n << ": " << killed.err;
        break;
      }
      ++kills;
      ++per_syscall[syscall];
      const std::string at = "killed at " + syscall + " #" + std::to_string(n);
      if (test::exists(host.file(kState))) {
        EXPECT_FALSE(nlohmann::json::parse(slurp(host.file(kState)), nullptr, false).is_discarded()) << at;
      }
      auto rerun = host.apply();
      EXPECT_EQ(rerun.exit_code, 3) << at << ": " << rerun.out << rerun.err;
      // The change that was made before the kill still gets its handler.
      EXPECT_TRUE(has(rerun.out, "skipping: [regenerate the grub config]") || has(rerun.out, "waiting for reboot"))
          << at << ": the grub config would not be regenerated\n"
          << rerun.out;
      EXPECT_EQ(differences(want, normalised(host.root())), "") << at << "\n" << rerun.out;
      if (HasFailure()) return;
    }
  }
  for (const auto& [syscall, count] : per_syscall) EXPECT_GT(count, 0) << "strace never killed at " << syscall;
  EXPECT_GT(kills, 40 / stride) << "too few kill points: is strace injecting?";
  RecordProperty("kill_points", kills);
  std::cout << "killed the run at " << kills << " points; every rerun ended like an uninterrupted run\n";
}

}  // namespace
}  // namespace gpt
