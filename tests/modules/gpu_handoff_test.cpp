// gpu_handoff: the VM's plan and libvirt's qemu hook on the Ubuntu sample trees (22.04 has GNOME's
// remote desktop as a user unit only; 24.04 also as a system unit, its headless variant, gdm as
// the display manager and nvidia-persistenced), changed then ok, --check predicting the first run.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "agent/handoff.hpp"
#include "tests/support/converge.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using Lines = std::vector<std::string>;

const std::string kTask =
    "tasks:\n"
    "  - name: hand the RTX over to win11\n"
    "    gpu_handoff:\n"
    "      vm: win11\n"
    "      gpus: ['0000:01:00.0']\n"
    "      display_manager: true\n"
    "      units: [ollama]\n"
    "      user_units: [{name: sunshine, user: alice}]\n";

const std::string kHook =
    "#!/bin/sh\n"
    "# gptagent gpu_handoff: hands GPUs over around the VMs planned in /etc/gptagent/handoff/.\n"
    "# libvirt runs it at each step of every QEMU guest's life, the domain XML on standard input;\n"
    "# it prints nothing, which libvirt takes for that XML unchanged. Written by gptagent: an edit\n"
    "# here is undone by its next run.\n"
    "exec /usr/bin/gptagent handoff \"$1\" \"$2\" \"$3\" >/dev/null\n";

// A sample tree with the agent installed where its package puts it, and libvirt's daemon.
struct Host {
  test::SampleHost h;
  explicit Host(const std::string& tree = "ubuntu-24.04") : h(tree) {
    test::write(h.file("/usr/bin/gptagent"), "#!/bin/sh\n", 0755);
    test::write(h.file("/usr/lib/systemd/system/libvirtd.service"),
                "[Service]\nExecStart=/usr/sbin/libvirtd\n\n[Install]\nWantedBy=multi-user.target\n");
  }
  test::Converged run(const std::string& yaml, bool check) { return test::converge_root(h.root(), yaml, check); }
  const TaskReport& task(const test::Converged& c, const std::string& name) {
    auto it =
        std::find_if(c.tasks.begin(), c.tasks.end(), [&](const TaskReport& t) { return t.name.starts_with(name); });
    if (it == c.tasks.end()) throw std::runtime_error("no task " + name);
    return *it;
  }
};

mode_t mode_of(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return st.st_mode & 07777;
}

TEST(GpuHandoff, WritesThePlanAndOwnsTheHookThenIsOk) {
  Host host;
  const auto pristine = test::snapshot(host.h.root());
  auto check = host.run(kTask, true);
  ASSERT_TRUE(check.load_errors.empty()) << check.load_errors[0];
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_EQ(test::snapshot(host.h.root()), pristine);
  EXPECT_NE(check.tasks[1].result.diff.find("+exec /usr/bin/gptagent handoff"), std::string::npos)
      << check.tasks[1].result.diff;

  auto first = host.run(kTask, false);
  ASSERT_EQ(first.exit_code, 0) << first.tasks.back().result.msg;
  const TaskReport& t = host.task(first, "hand the RTX over");
  EXPECT_EQ(t.result.status, Outcome::changed);
  EXPECT_EQ(first.changes(), check.changes());
  EXPECT_EQ(t.result.msg,
            "VM win11 takes 0000:01:00.0, 0000:01:00.1; the hook stops ollama.service, sunshine.service (user alice), "
            "gnome-remote-desktop.service (every user), gnome-remote-desktop-headless.service (every user), "
            "gnome-remote-desktop.service, display-manager.service, nvidia-persistenced.service and waits up to 30 s "
            "for the GPU to be free");
  EXPECT_EQ(test::slurp(host.h.file(kHandoffHook)), kHook);
  EXPECT_EQ(mode_of(host.h.file(kHandoffHook)), 0755u);
  const auto plan = handoff_plan_from_json(
      nlohmann::json::parse(test::slurp(host.h.file("/etc/gptagent/handoff/win11.json"))), "plan");
  ASSERT_TRUE(plan) << plan.error();
  EXPECT_EQ(plan->gpus, (Lines{"0000:01:00.0", "0000:01:00.1"}));
  EXPECT_EQ(plan->units.size(), 7u);
  EXPECT_EQ(plan->units[1], (HandoffUnit{"sunshine.service", "alice"}));
  // libvirt reads its hooks when its daemon starts: a new hook restarts it (not under --root).
  const TaskReport& restart = host.task(first, "restart libvirtd");
  EXPECT_TRUE(restart.handler);
  EXPECT_EQ(restart.result.status, Outcome::skipped);
  EXPECT_NE(restart.result.msg.find("not run under --root"), std::string::npos) << restart.result.msg;

  auto second = host.run(kTask, false);
  EXPECT_EQ(second.stats.changed, 0);
  EXPECT_EQ(second.tasks.size(), 2u) << "no handler: the hook was there";
  EXPECT_EQ(host.run(kTask, true).exit_code, 0);
}

TEST(GpuHandoff, AHookThatIsThereIsRewrittenWithoutARestart) {
  Host host;
  ASSERT_EQ(host.run(kTask, false).exit_code, 0);
  test::write(host.h.file("/usr/local/bin/gptagent"), "#!/bin/sh\n", 0755);
  auto moved = host.run(kTask + "      agent: /usr/local/bin/gptagent\n", false);
  ASSERT_EQ(moved.exit_code, 0) << moved.tasks.back().result.msg;
  EXPECT_EQ(moved.tasks.size(), 2u);
  EXPECT_EQ(moved.tasks[1].result.status, Outcome::changed);
  EXPECT_NE(test::slurp(host.h.file(kHandoffHook)).find("exec /usr/local/bin/gptagent handoff"), std::string::npos);
}

TEST(GpuHandoff, RefusesToHaveRootRunAnAgentAnotherUserCanSwap) {
  Host host;
  test::write(host.h.file("/opt/tools/gptagent"), "#!/bin/sh\n", 0755);
  fs::permissions(host.h.file("/opt/tools"), fs::perms::all);
  auto open_dir = host.run(kTask + "      agent: /opt/tools/gptagent\n", false);
  EXPECT_EQ(open_dir.exit_code, 1);
  EXPECT_NE(
      open_dir.tasks[1].result.msg.find("belongs to uid 0 with mode 0777: root would run what another user can swap"),
      std::string::npos)
      << open_dir.tasks[1].result.msg;
  fs::permissions(host.h.file("/opt/tools"), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                                 fs::perms::others_read | fs::perms::others_exec);
  ASSERT_EQ(::chown(host.h.file("/opt/tools/gptagent").c_str(), 1000, 1000), 0);
  auto theirs = host.run(kTask + "      agent: /opt/tools/gptagent\n", false);
  EXPECT_EQ(theirs.exit_code, 1);
  EXPECT_EQ(theirs.tasks[1].result.msg.rfind("agent /opt/tools/gptagent: /opt/tools/gptagent belongs to uid 1000", 0),
            0u)
      << theirs.tasks[1].result.msg;
  fs::remove(host.h.file("/usr/bin/gptagent"));
  auto none = host.run(kTask, false);
  EXPECT_EQ(none.tasks[1].result.msg.rfind("no installed agent for the hook to run (/usr/bin/gptagent, ", 0), 0u)
      << none.tasks[1].result.msg;
  EXPECT_FALSE(test::exists(host.h.file(kHandoffHook)));
}

TEST(GpuHandoff, UbuntuJammyPlansItsUserUnitAndHasNoDisplayManagerToStop) {
  Host host("ubuntu-22.04");
  fs::remove(host.h.file("/usr/lib/systemd/system/libvirtd.service"));  // libvirt comes later
  const std::string plain = "tasks:\n  - gpu_handoff: {vm: desk, gpus: ['0000:01:00.0']}\n";
  auto r = host.run(plain, false);
  ASSERT_EQ(r.exit_code, 0) << r.tasks.back().result.msg;
  EXPECT_NE(r.tasks[1].result.msg.find("the hook stops gnome-remote-desktop.service (every user) and waits"),
            std::string::npos)
      << r.tasks[1].result.msg;
  EXPECT_NE(r.tasks[1].result.msg.find("(libvirt's daemon is not installed: it reads the hook when it first starts)"),
            std::string::npos);
  EXPECT_EQ(r.tasks.size(), 2u) << "no daemon to restart";
  auto dm = host.run("tasks:\n  - gpu_handoff: {vm: desk, gpus: ['0000:01:00.0'], display_manager: true}\n", false);
  EXPECT_EQ(dm.exit_code, 1);
  EXPECT_EQ(dm.tasks[1].result.msg, "display_manager: this host has no display manager (no display-manager.service)");
}

// A single-GPU host: the VM takes the GPU the host boots on, whose display manager holds it. Unset,
// display_manager follows that; a second card leaves the display manager alone.
TEST(GpuHandoff, TheDisplayManagerStopsWhenTheVmTakesTheBootGpu) {
  Host host("two-gpus-boot-vga");
  fs::create_directories(host.h.file("/etc/systemd/system"));
  fs::create_symlink("/usr/lib/systemd/system/gdm.service", host.h.file("/etc/systemd/system/display-manager.service"));
  test::write(host.h.file("/usr/lib/systemd/system/gdm.service"), "[Service]\nExecStart=/usr/sbin/gdm\n");
  auto boot = host.run(
      "tasks:\n  - gpu_handoff: {vm: single, gpus: ['0000:01:00.0'], known_units: false, force: true}\n", false);
  ASSERT_EQ(boot.exit_code, 0) << boot.tasks.back().result.msg;
  EXPECT_NE(boot.tasks[1].result.msg.find("the hook stops display-manager.service and waits"), std::string::npos)
      << boot.tasks[1].result.msg;
  auto other = host.run("tasks:\n  - gpu_handoff: {vm: second, gpus: ['0000:02:00.0'], known_units: false}\n", false);
  ASSERT_EQ(other.exit_code, 0) << other.tasks.back().result.msg;
  EXPECT_NE(other.tasks[1].result.msg.find("the hook stops no unit"), std::string::npos) << other.tasks[1].result.msg;
  auto declared = host.run(
      "tasks:\n  - gpu_handoff: {vm: single, gpus: ['0000:01:00.0'], known_units: false, display_manager: false, "
      "force: true}\n",
      false);
  EXPECT_NE(declared.tasks[1].result.msg.find("the hook stops no unit"), std::string::npos)
      << declared.tasks[1].result.msg;
}

TEST(GpuHandoff, AbsentTakesThePlanAndTheHookGoesWithTheLastOne) {
  Host host;
  const std::string two = kTask + "  - gpu_handoff: {vm: linux-ml, gpus: ['0000:01:00.0'], known_units: false}\n";
  ASSERT_EQ(host.run(two, false).exit_code, 0);
  EXPECT_TRUE(test::exists(host.h.file("/etc/gptagent/handoff/linux-ml.json")));
  auto one = host.run("tasks:\n  - gpu_handoff: {vm: win11, state: absent}\n", false);
  ASSERT_EQ(one.exit_code, 0) << one.tasks.back().result.msg;
  EXPECT_EQ(one.tasks[0].result.status, Outcome::changed);
  EXPECT_FALSE(test::exists(host.h.file("/etc/gptagent/handoff/win11.json")));
  EXPECT_TRUE(test::exists(host.h.file(kHandoffHook)));
  auto last = host.run("tasks:\n  - gpu_handoff: {vm: linux-ml, state: absent}\n", false);
  EXPECT_EQ(last.tasks[0].result.status, Outcome::changed);
  EXPECT_FALSE(test::exists(host.h.file(kHandoffHook)));
  EXPECT_EQ(host.run("tasks:\n  - gpu_handoff: {vm: linux-ml, state: absent}\n", false).tasks[0].result.status,
            Outcome::ok);
}

TEST(GpuHandoff, RejectsWhatCannotBeAPlanWithLineAndColumn) {
  Host host;
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{vm: ../etc/x, gpus: ['0000:01:00.0']}", "'../etc/x': a domain name of letters"},
      {"{vm: w, gpus: ['0000:01:00.0'], timeout: 0}", "must be 1 to 600 seconds"},
      {"{vm: w, gpus: ['0000:01:00.0'], units: ['a b']}", "'a b' is not a unit name"},
      {"{vm: w, gpus: ['0000:01:00.0'], user_units: [{name: x, user: 'a@b'}]}", "'a@b' is not a user name"},
      {"{vm: w}", "gpus: the VM's GPUs are required"},
  };
  for (const auto& [args, want] : bad) {
    auto r = host.run("tasks:\n  - gpu_handoff: " + args + "\n", false);
    ASSERT_EQ(r.load_errors.size(), 1u) << args;
    EXPECT_EQ(r.load_errors[0].rfind("test.yaml:2:", 0), 0u) << r.load_errors[0];
    EXPECT_NE(r.load_errors[0].find(want), std::string::npos) << r.load_errors[0];
  }
}

}  // namespace
}  // namespace gpt
