// service: against a scripted systemd that answers `is-enabled` and `is-active` the way systemd
// 252's systemctl does (output and exit code) and keeps the state its changing verbs set; and,
// offline, the real systemctl on a temporary root (`systemctl --root=DIR`), which needs no manager.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "agent/exec.hpp"
#include "agent/module.hpp"
#include "agent/playbook.hpp"
#include "agent/runner.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// A systemd manager behind `systemctl`: units by scope ("" for the system, "USER" for a user's,
// reached as `runuser -u USER -- env XDG_RUNTIME_DIR=/run/user/UID systemctl --user`) and name, each
// with its unit file state and its activity.
class FakeSystemd final : public Exec {
 public:
  struct Unit {
    std::string enabled;  // is-enabled's answer: enabled, disabled, static, masked, alias, indirect
    std::string active;   // is-active's answer: active, inactive, failed, activating
  };
  std::map<std::string, Unit> units;  // "SCOPE|NAME"
  std::vector<std::string> commands;  // all of them
  std::vector<std::string> changes;   // the ones that are no query

  void add(const std::string& name, std::string enabled, std::string active, const std::string& scope = "") {
    units[scope + "|" + name] = {std::move(enabled), std::move(active)};
  }
  const Unit& unit(const std::string& name, const std::string& scope = "") { return units.at(scope + "|" + name); }

  ExecResult run(const Command& cmd) override {
    commands.push_back(cmd.display());
    std::string scope;
    size_t i = 1;
    if (cmd.argv.size() > 7 && cmd.argv[0] == "runuser" && cmd.argv[6] == "systemctl" && cmd.argv[7] == "--user") {
      scope = cmd.argv[2];
      i = 8;
    } else if (cmd.argv.empty() || cmd.argv[0] != "systemctl") {
      return {2, false, "", "unexpected command\n"};
    }
    for (; i < cmd.argv.size() && cmd.argv[i].starts_with("--"); ++i) scope += (scope.empty() ? "" : " ") + cmd.argv[i];
    if (i + 2 != cmd.argv.size()) return {2, false, "", "unexpected command\n"};
    const std::string verb = cmd.argv[i], name = cmd.argv[i + 1];
    auto it = units.find(scope + "|" + name);
    if (verb == "is-active") {
      // An unknown unit is simply inactive to is-active.
      const std::string state = it == units.end() ? "inactive" : it->second.active;
      return {state == "active" ? 0 : 3, false, state + "\n", ""};
    }
    if (verb == "is-enabled") {
      if (it == units.end())
        return {1, false, "", "Failed to get unit file state for " + name + ": No such file or directory\n"};
      const std::string& s = it->second.enabled;
      const bool zero = s == "enabled" || s == "static" || s == "alias" || s == "indirect";
      return {zero ? 0 : 1, false, s + "\n", ""};
    }
    changes.push_back(cmd.display());
    if (it == units.end()) return {5, false, "", "Failed to " + verb + " unit: Unit " + name + " not found.\n"};
    Unit& u = it->second;
    if (u.enabled == "masked") return {1, false, "", "Failed to " + verb + " unit: Unit " + name + " is masked.\n"};
    if (verb == "enable")
      u.enabled = "enabled";
    else if (verb == "disable")
      u.enabled = "disabled";
    else if (verb == "start" || verb == "restart")
      u.active = "active";
    else if (verb == "stop")
      u.active = "inactive";
    else
      return {1, false, "", "Unknown command verb " + verb + ".\n"};
    return {0, false, "", ""};
  }
};

// Runs a module as on a live system whose manager is the fake, every command going to it; the
// tree stands in for / (its /etc/passwd has nobody, whose user manager a test reaches), so what
// the agent records (the units' state before its first change) goes there.
struct Live {
  test::TempDir dir;
  Root root{dir.path()};
  Facts facts;
  FakeSystemd systemd;
  Live() {
    test::write(dir / "etc/passwd",
                "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n");
  }
  Result run(const json& args, bool apply, const std::string& module = "service") {
    const ModuleDef* def = Registry::instance().find(module);
    Context ctx{root, systemd, facts, true};
    ctx.manager = true;
    return converge_module(*def, ctx, with_defaults(def->schema, args), apply);
  }
};

TEST(Service, EnablesAndStartsThenIsOkWithNoChangingCommand) {
  Live live;
  live.systemd.add("foo.service", "disabled", "inactive");
  const json args = {{"name", "foo"}, {"enabled", true}, {"state", "started"}};

  Result check = live.run(args, false);
  EXPECT_EQ(check.status, Outcome::changed) << check.msg;
  EXPECT_EQ(check.msg, "would be enabled, started: foo.service");
  EXPECT_TRUE(live.systemd.changes.empty()) << "check mode changed something";
  EXPECT_EQ(live.systemd.unit("foo.service").enabled, "disabled");

  Result first = live.run(args, true);
  EXPECT_EQ(first.status, Outcome::changed) << first.msg;
  EXPECT_EQ(live.systemd.changes,
            (std::vector<std::string>{"systemctl enable foo.service", "systemctl start foo.service"}));
  EXPECT_EQ(first.commands, check.commands) << "check mode named other commands than the run made";

  live.systemd.changes.clear();
  Result second = live.run(args, true);
  EXPECT_EQ(second.status, Outcome::ok) << second.msg;
  EXPECT_EQ(second.msg, "foo.service is as wanted: enabled, active");
  EXPECT_TRUE(live.systemd.changes.empty());
  EXPECT_EQ(live.run(args, false).status, Outcome::ok);
}

// gptagent revert's restore_units: what the service module changed, back as it was before the
// agent's first change of each unit (a later change keeps that first record), then ok.
TEST(Service, RestoreUnitsPutsBackWhatTheAgentChangedAsItWasBefore) {
  Live live;
  live.systemd.add("foo.service", "disabled", "inactive");
  live.systemd.add("bar.service", "enabled", "active");
  live.systemd.add("static.service", "static", "inactive");
  live.systemd.add("gnome-remote-desktop.service", "enabled", "active", "nobody");
  for (const json& args :
       {json{{"name", "foo"}, {"enabled", true}, {"state", "started"}}, json{{"name", "foo"}, {"state", "stopped"}},
        json{{"name", "bar"}, {"enabled", false}, {"state", "stopped"}}, json{{"name", "static"}, {"state", "started"}},
        json{{"name", "gnome-remote-desktop.service"}, {"scope", "user"}, {"user", "nobody"}, {"state", "stopped"}}})
    ASSERT_EQ(live.run(args, true).status, Outcome::changed) << args.dump();
  EXPECT_FALSE(fs::exists("/var/lib/gptagent/pre-images/index.json")) << "written to this machine";

  live.systemd.changes.clear();
  Result check = live.run(json::object(), false, "restore_units");
  EXPECT_EQ(check.status, Outcome::changed) << check.msg;
  EXPECT_TRUE(live.systemd.changes.empty()) << "check mode changed something";
  Result r = live.run(json::object(), true, "restore_units");
  EXPECT_EQ(r.status, Outcome::changed) << r.msg;
  EXPECT_EQ(r.commands, check.commands) << "check mode named other commands than the run made";
  EXPECT_EQ(live.systemd.changes,
            (std::vector<std::string>{"systemctl enable bar.service", "systemctl start bar.service",
                                      "systemctl disable foo.service", "systemctl stop static.service",
                                      "runuser -u nobody -- env XDG_RUNTIME_DIR=/run/user/65534 systemctl --user "
                                      "start gnome-remote-desktop.service"}));
  EXPECT_EQ(live.systemd.unit("foo.service").enabled, "disabled");
  EXPECT_EQ(live.systemd.unit("foo.service").active, "inactive");
  EXPECT_EQ(live.systemd.unit("bar.service").enabled, "enabled");
  EXPECT_EQ(live.systemd.unit("bar.service").active, "active");
  EXPECT_EQ(live.systemd.unit("static.service").enabled, "static");
  EXPECT_EQ(live.systemd.unit("gnome-remote-desktop.service", "nobody").active, "active");

  live.systemd.changes.clear();
  Result again = live.run(json::object(), true, "restore_units");
  EXPECT_EQ(again.status, Outcome::ok) << again.msg;
  EXPECT_EQ(again.msg, "4 units the agent changed are as before");
  EXPECT_TRUE(live.systemd.changes.empty());
}

// A handler's restart leaves the unit as it was: revert has nothing of it to put back.
TEST(Service, ARestartIsNotRecordedForRevert) {
  Live live;
  live.systemd.add("libvirtd.service", "enabled", "inactive");
  Result r = live.run({{"name", "libvirtd"}, {"state", "restarted"}}, true);
  EXPECT_EQ(r.status, Outcome::changed) << r.msg;
  EXPECT_EQ(live.systemd.unit("libvirtd.service").active, "active");
  EXPECT_FALSE(fs::exists(live.dir / "var/lib/gptagent/pre-images/index.json"));
  EXPECT_EQ(live.run(json::object(), true, "restore_units").msg, "0 units the agent changed are as before");
}

// A record the agent would not write names no unit to change.
TEST(Service, AUnitRecordTheAgentWouldNotWriteIsAnError) {
  Live live;
  test::write(live.dir / "var/lib/gptagent/pre-images/index.json",
              R"({"version": 1, "files": {}, "units": {"system|x; rm -rf /": {"unit": "x; rm -rf /", "scope": )"
              R"("system", "user": "", "enabled": "enabled", "active": ""}}})");
  Result r = live.run(json::object(), true, "restore_units");
  EXPECT_EQ(r.status, Outcome::failed);
  EXPECT_TRUE(has(r.msg, "is not one the agent writes")) << r.msg;
  EXPECT_TRUE(live.systemd.commands.empty());
}

TEST(Service, StopsAndDisablesARunningEnabledUnit) {
  Live live;
  live.systemd.add("gdm.service", "enabled", "active");
  Result r = live.run({{"name", "gdm.service"}, {"enabled", false}, {"state", "stopped"}}, true);
  EXPECT_EQ(r.status, Outcome::changed) << r.msg;
  EXPECT_EQ(live.systemd.changes,
            (std::vector<std::string>{"systemctl disable gdm.service", "systemctl stop gdm.service"}));
  EXPECT_EQ(live.systemd.unit("gdm.service").active, "inactive");
  live.systemd.changes.clear();
  EXPECT_EQ(live.run({{"name", "gdm.service"}, {"enabled", false}, {"state", "stopped"}}, true).status, Outcome::ok);
  EXPECT_TRUE(live.systemd.changes.empty());
}

TEST(Service, EachActivityIsReadAsSystemdMeansIt) {
  struct Case {
    std::string active, want;
    std::vector<std::string> changes;
  };
  for (const Case& c : std::vector<Case>{{"failed", "started", {"systemctl start foo.service"}},
                                         {"failed", "stopped", {}},
                                         {"activating", "started", {}},
                                         {"activating", "stopped", {"systemctl stop foo.service"}},
                                         {"inactive", "stopped", {}},
                                         {"active", "started", {}}}) {
    Live live;
    live.systemd.add("foo.service", "enabled", c.active);
    Result r = live.run({{"name", "foo.service"}, {"state", c.want}}, true);
    EXPECT_EQ(r.status, c.changes.empty() ? Outcome::ok : Outcome::changed)
        << c.active << " -> " << c.want << ": " << r.msg;
    EXPECT_EQ(live.systemd.changes, c.changes) << c.active << " -> " << c.want;
    EXPECT_EQ(r.data["active"], c.active);
  }
}

TEST(Service, UnitsWithoutAnInstallSectionNeedNoEnabling) {
  for (const std::string state : {"static", "alias", "indirect"}) {
    Live live;
    live.systemd.add("foo.service", state, "inactive");
    Result r = live.run({{"name", "foo.service"}, {"enabled", true}}, true);
    EXPECT_EQ(r.status, Outcome::ok) << state << ": " << r.msg;
    EXPECT_TRUE(live.systemd.changes.empty()) << state;
  }
  Live live;
  live.systemd.add("foo.service", "static", "inactive");
  Result r = live.run({{"name", "foo.service"}, {"enabled", false}}, true);
  EXPECT_EQ(r.status, Outcome::ok) << r.msg;
  EXPECT_TRUE(has(r.msg, "static: nothing to disable")) << r.msg;
  // An indirect unit is one systemctl counts as enabled (exit 0): disabling it is a change.
  Live indirect;
  indirect.systemd.add("foo.service", "indirect", "inactive");
  EXPECT_EQ(indirect.run({{"name", "foo.service"}, {"enabled", false}}, true).status, Outcome::changed);
  EXPECT_EQ(indirect.systemd.changes, std::vector<std::string>{"systemctl disable foo.service"});
}

TEST(Service, ASocketActivatedDaemonIsStartedWhenItsSocketIsActive) {
  Live live;
  live.systemd.add("libvirtd.service", "enabled", "inactive");
  live.systemd.add("libvirtd.socket", "enabled", "active");
  Result r = live.run({{"name", "libvirtd"}, {"state", "started"}}, true);
  EXPECT_EQ(r.status, Outcome::ok) << r.msg;
  EXPECT_TRUE(has(r.msg, "socket-activated: libvirtd.socket is active")) << r.msg;
  EXPECT_TRUE(live.systemd.changes.empty()) << "the service was started beside its socket";
  EXPECT_EQ(live.systemd.commands.back(), "systemctl is-active libvirtd.socket");

  // With the socket down too, the daemon is started.
  live.systemd.add("libvirtd.socket", "enabled", "inactive");
  r = live.run({{"name", "libvirtd"}, {"state", "started"}}, true);
  EXPECT_EQ(r.status, Outcome::changed) << r.msg;
  EXPECT_EQ(live.systemd.changes, std::vector<std::string>{"systemctl start libvirtd.service"});
}

// A user's unit goes through the user's own manager, as the user (its private socket: a server
// has no user D-Bus for `--machine=USER@`, as the lab's full tier found). `nobody` is a user every
// host has.
TEST(Service, AUsersUnitGoesThroughTheirManager) {
  Live live;
  const std::string scope = "nobody";
  live.systemd.add("gnome-remote-desktop.service", "enabled", "active", scope);
  const json args = {
      {"name", "gnome-remote-desktop.service"}, {"scope", "user"}, {"user", "nobody"}, {"state", "stopped"}};
  Result r = live.run(args, true);
  EXPECT_EQ(r.status, Outcome::changed) << r.msg;
  EXPECT_EQ(r.msg, "stopped: gnome-remote-desktop.service (user nobody)");
  EXPECT_EQ(live.systemd.changes,
            std::vector<std::string>{"runuser -u nobody -- env XDG_RUNTIME_DIR=/run/user/65534 systemctl --user stop "
                                     "gnome-remote-desktop.service"});
  EXPECT_EQ(live.systemd.unit("gnome-remote-desktop.service", scope).active, "inactive");
  EXPECT_EQ(live.run(args, true).status, Outcome::ok);
  // A user the host does not have is said, and nothing runs.
  live.systemd.commands.clear();
  Result none = live.run({{"name", "x"}, {"scope", "user"}, {"user", "gpt-no-such-user"}, {"state", "stopped"}}, true);
  EXPECT_EQ(none.status, Outcome::failed);
  EXPECT_EQ(none.msg, "unit x.service (user gpt-no-such-user): no user named 'gpt-no-such-user' in /etc/passwd under " +
                          live.dir.path());
  EXPECT_TRUE(live.systemd.commands.empty());
}

TEST(Service, AMaskedUnitFailsClearlyAndNothingIsChanged) {
  Live live;
  live.systemd.add("foo.service", "masked", "inactive");
  Result r = live.run({{"name", "foo"}, {"state", "started"}}, true);
  EXPECT_EQ(r.status, Outcome::failed);
  EXPECT_TRUE(has(r.msg, "foo.service is masked")) << r.msg;
  EXPECT_TRUE(has(r.msg, "systemctl unmask foo.service")) << r.msg;
  EXPECT_TRUE(live.systemd.changes.empty());
  EXPECT_EQ(live.run({{"name", "foo"}, {"enabled", true}}, true).status, Outcome::failed);
  // Stopped and not enabled is what a masked unit is.
  EXPECT_EQ(live.run({{"name", "foo"}, {"enabled", false}, {"state", "stopped"}}, true).status, Outcome::ok);
  EXPECT_TRUE(live.systemd.changes.empty());
}

TEST(Service, AnUnknownUnitFailsWithSystemctlsMessage) {
  Live live;
  Result r = live.run({{"name", "nosuch"}, {"state", "started"}}, true);
  EXPECT_EQ(r.status, Outcome::failed);
  EXPECT_EQ(
      r.msg,
      "unit nosuch.service is not known to systemd: exit code 1: Failed to get unit file state for nosuch.service: "
      "No such file or directory");
  EXPECT_TRUE(live.systemd.changes.empty());
}

TEST(Service, RestartedIsForHandlersOnly) {
  auto as_task = load_playbook_text("tasks:\n  - service: {name: foo, state: restarted}\n", "pb.yaml", {});
  ASSERT_EQ(as_task.errors.size(), 1u);
  EXPECT_TRUE(has(as_task.errors[0], "pb.yaml:2:")) << as_task.errors[0];
  EXPECT_TRUE(has(as_task.errors[0], "use it in a handler")) << as_task.errors[0];

  const std::string pb =
      "tasks:\n  - name: config\n    service: {name: foo, enabled: true}\n    notify: restart foo\n"
      "handlers:\n  - name: restart foo\n    service: {name: foo, state: restarted}\n";
  auto loaded = load_playbook_text(pb, "pb.yaml", {});
  ASSERT_TRUE(loaded.ok()) << loaded.errors[0];
  Live live;
  live.systemd.add("foo.service", "disabled", "active");
  std::vector<TaskReport> reports;
  test::Collect collect(reports);
  Context ctx{live.root, live.systemd, live.facts, true};
  ctx.manager = true;
  run_playbook(loaded.playbook, ctx, {}, collect);
  EXPECT_EQ(live.systemd.changes,
            (std::vector<std::string>{"systemctl enable foo.service", "systemctl restart foo.service"}));
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_TRUE(reports[1].handler);
  // The restart is recorded nowhere (revert has nothing to put back); the enabling is.
  EXPECT_TRUE(has(test::slurp(live.dir / "var/lib/gptagent/pre-images/index.json"), "\"enabled\": \"disabled\""));
  // Converged: not notified, not restarted.
  live.systemd.changes.clear();
  reports.clear();
  run_playbook(loaded.playbook, ctx, {}, collect);
  EXPECT_TRUE(live.systemd.changes.empty());
  EXPECT_EQ(reports.size(), 1u);
}

TEST(Service, UserScopeNeedsAUserAndTheReverse) {
  auto no_user = load_playbook_text("tasks:\n  - service: {name: foo, scope: user, state: started}\n", "pb.yaml", {});
  ASSERT_EQ(no_user.errors.size(), 1u);
  EXPECT_TRUE(has(no_user.errors[0], "scope: user needs user:")) << no_user.errors[0];
  auto stray = load_playbook_text("tasks:\n  - service: {name: foo, user: alice, state: started}\n", "pb.yaml", {});
  ASSERT_EQ(stray.errors.size(), 1u);
  EXPECT_TRUE(has(stray.errors[0], "user: is only for scope: user")) << stray.errors[0];
  auto neither = load_playbook_text("tasks:\n  - service: {name: foo}\n", "pb.yaml", {});
  EXPECT_FALSE(neither.ok());
}

// ---------------------------------------------------------------------------------------------
// Offline, under --root: the real systemctl on a temporary tree.

struct OfflineRoot {
  test::TempDir dir;
  OfflineRoot() {
    test::write(dir / "usr/lib/systemd/system/foo.service",
                "[Unit]\nDescription=foo\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n");
    test::write(dir / "usr/lib/systemd/system/plain.service",
                "[Unit]\nDescription=no install section\n[Service]\nExecStart=/bin/true\n");
    fs::create_directories(dir / "etc/systemd/system");
  }
  Result run(const json& args, bool apply, std::vector<std::string>* commands = nullptr) {
    Root root(dir.path());
    Facts facts;
    ProcessExec exec;
    const ModuleDef* def = Registry::instance().find("service");
    Context ctx{root, exec, facts, false};
    Result r = converge_module(*def, ctx, with_defaults(def->schema, args), apply);
    if (commands) *commands = r.commands;
    return r;
  }
  std::string wants() const { return dir / "etc/systemd/system/multi-user.target.wants/foo.service"; }
};

TEST(Service, UnderRootEnablesOfflineWithTheRealSystemctl) {
  if (!test::exists("/usr/bin/systemctl") && !test::exists("/bin/systemctl"))
    GTEST_SKIP() << "no systemctl (scripts/deps installs systemd)";
  OfflineRoot host;
  const json args = {{"name", "foo.service"}, {"enabled", true}};
  Result check = host.run(args, false);
  EXPECT_EQ(check.status, Outcome::changed) << check.msg;
  EXPECT_FALSE(fs::is_symlink(host.wants())) << "check mode enabled the unit";
  EXPECT_EQ(check.commands.back(), "systemctl --root=" + host.dir.path() + " enable foo.service");

  Result first = host.run(args, true);
  EXPECT_EQ(first.status, Outcome::changed) << first.msg;
  ASSERT_TRUE(fs::is_symlink(host.wants())) << first.msg;
  EXPECT_EQ(fs::read_symlink(host.wants()), "/usr/lib/systemd/system/foo.service");

  Result second = host.run(args, true);
  EXPECT_EQ(second.status, Outcome::ok) << second.msg;
  EXPECT_EQ(second.msg, "foo.service is as wanted: enabled");

  Result off = host.run({{"name", "foo.service"}, {"enabled", false}}, true);
  EXPECT_EQ(off.status, Outcome::changed) << off.msg;
  EXPECT_FALSE(fs::is_symlink(host.wants()));
  EXPECT_EQ(host.run({{"name", "plain"}, {"enabled", true}}, true).status, Outcome::ok)
      << "a static unit needs no enabling";
}

// gptagent apply then gptagent revert under --root, through the binary: the unit the run enabled
// offline is disabled again, and a second revert changes nothing.
TEST(Service, UnderRootRevertDisablesWhatTheRunEnabled) {
  if (!test::exists("/usr/bin/systemctl") && !test::exists("/bin/systemctl")) GTEST_SKIP() << "no systemctl";
  OfflineRoot host;
  test::TempDir plays;
  test::write(plays / "units.yaml", "tasks:\n  - name: foo at boot\n    service: {name: foo, enabled: true}\n");
  auto applied = test::run_agent({"apply", plays / "units.yaml", "--root", host.dir.path(), "--color", "never"});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;
  ASSERT_TRUE(fs::is_symlink(host.wants()));
  auto reverted = test::run_agent({"revert", "--root", host.dir.path()});
  EXPECT_EQ(reverted.exit_code, 0) << reverted.out << reverted.err;
  EXPECT_TRUE(has(reverted.out, "disabled: foo.service")) << reverted.out;
  EXPECT_FALSE(fs::is_symlink(host.wants()));
  auto again = test::run_agent({"revert", "--root", host.dir.path()});
  EXPECT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_TRUE(has(again.out, "changed=0")) << again.out;
}

TEST(Service, UnderRootStartingIsReportedAsWhatWouldRun) {
  if (!test::exists("/usr/bin/systemctl") && !test::exists("/bin/systemctl")) GTEST_SKIP() << "no systemctl";
  OfflineRoot host;
  Result only_start = host.run({{"name", "foo.service"}, {"state", "started"}}, true);
  EXPECT_EQ(only_start.status, Outcome::skipped) << only_start.msg;
  EXPECT_TRUE(has(only_start.msg, "not run under --root " + host.dir.path() + ": systemctl start foo.service"))
      << only_start.msg;
  Result both = host.run({{"name", "foo.service"}, {"state", "started"}, {"enabled", true}}, true);
  EXPECT_EQ(both.status, Outcome::changed) << both.msg;
  EXPECT_TRUE(has(both.msg, "systemctl start foo.service")) << both.msg;
  EXPECT_TRUE(fs::is_symlink(host.wants()));
}

TEST(Service, UnderRootMaskedAndUnknownUnitsFailWithSystemctlsWords) {
  if (!test::exists("/usr/bin/systemctl") && !test::exists("/bin/systemctl")) GTEST_SKIP() << "no systemctl";
  OfflineRoot host;
  fs::create_symlink("/dev/null", host.dir / "etc/systemd/system/foo.service");
  Result masked = host.run({{"name", "foo.service"}, {"enabled", true}}, true);
  EXPECT_EQ(masked.status, Outcome::failed);
  EXPECT_TRUE(has(masked.msg, "is masked (masked)")) << masked.msg;
  Result unknown = host.run({{"name", "nosuch.service"}, {"enabled", true}}, true);
  EXPECT_EQ(unknown.status, Outcome::failed);
  EXPECT_TRUE(has(unknown.msg, "Failed to get unit file state for nosuch.service: No such file or directory"))
      << unknown.msg;
}

}  // namespace
}  // namespace gpt
