// The hand-off libvirt's hook runs (agent/handoff.hpp) on Ubuntu 24.04's desktop tree: systemd is
// stood in for at the host boundary, each unit with the processes it runs in the tree's /proc (a
// stop ends them, a start brings them back), so what holds the GPU is what the agent reads.
#include "agent/handoff.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "agent/facts.hpp"
#include "agent/facts_view.hpp"
#include "agent/host.hpp"
#include "tests/support/desktop.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using Lines = std::vector<std::string>;

struct Proc {
  long pid;
  std::string comm;
  std::map<int, std::string> fds;
};

class FakeSystemd final : public Exec {
 public:
  struct Unit {
    bool active = false;
    std::vector<Proc> procs = {};
    bool stop_fails = false;
  };
  explicit FakeSystemd(const test::SampleHost& h) : h_(h) {}
  std::map<std::string, Unit> units;  // "name", or "name@user" for a user's
  Lines commands;

  void run_unit(const Unit& u) {
    for (const auto& p : u.procs) test::add_process(h_, p.pid, p.comm, p.fds);
  }
  ExecResult run(const Command& cmd) override {
    commands.push_back(cmd.display());
    const std::string verb = cmd.argv[cmd.argv.size() - 2];
    std::string key = cmd.argv.back();
    if (cmd.argv[0] == "runuser") key += "@" + cmd.argv[2];  // runuser -u USER -- env ... systemctl --user
    auto it = units.find(key);
    if (verb == "is-active") {
      const bool active = it != units.end() && it->second.active;
      return {active ? 0 : 3, false, active ? "active\n" : "inactive\n", ""};
    }
    if (it == units.end()) return {5, false, "", "Failed to " + verb + " " + key + ": Unit not found.\n"};
    Unit& u = it->second;
    if (verb == "stop") {
      if (u.stop_fails) return {1, false, "", "Job for " + key + " failed.\n"};
      u.active = false;
      for (const auto& p : u.procs) fs::remove_all(h_.file("/proc/" + std::to_string(p.pid)));
    } else if (verb == "start") {
      u.active = true;
      run_unit(u);
    }
    return {0, false, "", ""};
  }

 private:
  const test::SampleHost& h_;
};

// Ubuntu 24.04 with a desktop: the RTX 3080 (nvidia, minor 0) with its DRM nodes and an I2C bus;
// alice logged in (her user manager runs), bob not. Alice's remote desktop renders on the RTX, gdm's
// Xorg and nvidia-persistenced hold its nvidia nodes; Firefox runs on the iGPU.
struct Desktop {
  test::SampleHost h{"ubuntu-24.04"};
  FakeSystemd systemd{h};
  Lines log;
  HandoffIo io{systemd, [this](const std::string& line) { log.push_back(line); }, nullptr,
               std::chrono::milliseconds(20)};
  HandoffPlan plan;

  Desktop() {
    test::add_drm(h, "0000:01:00.0", {"card1", "renderD129"});
    test::add_drm(h, "0000:0c:00.0", {"card0", "renderD128"});
    fs::create_directories(h.file("/sys/bus/pci/devices/0000:01:00.0/i2c-4"));
    test::write(h.file("/proc/driver/nvidia/gpus/0000:01:00.0/information"), "Device Minor: \t 0\n");
    test::write(h.file("/etc/passwd"),
                "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n"
                "bob:x:1001:1001::/home/bob:/bin/bash\n");
    fs::create_directories(h.file("/run/user/1000"));
    systemd.units["gnome-remote-desktop.service@alice"] = {true,
                                                           {{1234, "gnome-remote-de", {{21, "/dev/dri/renderD129"}}}}};
    systemd.units["gnome-remote-desktop.service@bob"] = {true, {}};  // not logged in: never asked
    systemd.units["gnome-remote-desktop.service"] = {false, {}};
    systemd.units["display-manager.service"] = {true, {{999, "Xorg", {{12, "/dev/nvidiactl"}, {13, "/dev/nvidia0"}}}}};
    systemd.units["nvidia-persistenced.service"] = {true, {{800, "nvidia-persiste", {{3, "/dev/nvidia0"}}}}};
    for (const auto& [name, unit] : systemd.units)
      if (unit.active) systemd.run_unit(unit);
    test::add_process(h, 2000, "firefox", {{40, "/dev/dri/renderD128"}});
    plan = {"win11", {"0000:01:00.0", "0000:01:00.1"}, known_gpu_units(Root(h.root()), true), 5};
    write_plan();
  }
  void write_plan() { test::write(h.file("/etc/gptagent/handoff/win11.json"), to_json(plan).dump(2)); }
  int hook(const std::string& op, const std::string& sub) { return run_handoff(Root(h.root()), io, "win11", op, sub); }
  Lines holders() { return gpu_holders(Root(h.root()), plan.gpus); }
  std::string record() { return test::slurp_or_empty(h.file("/run/gptagent/handoff/win11.json")); }
};

bool logged(const Lines& log, const std::string& text) {
  return std::any_of(log.begin(), log.end(), [&](const std::string& l) { return l.find(text) != std::string::npos; });
}

TEST(Handoff, TheKnownUnitsAreThoseThisHostHasInStopOrder) {
  test::SampleHost noble("ubuntu-24.04"), jammy("ubuntu-22.04");
  EXPECT_EQ(known_gpu_units(Root(noble.root()), true),
            (std::vector<HandoffUnit>{{"gnome-remote-desktop.service", "*"},
                                      {"gnome-remote-desktop-headless.service", "*"},
                                      {"gnome-remote-desktop.service", ""},
                                      {"display-manager.service", ""},
                                      {"nvidia-persistenced.service", ""}}));
  // 22.04 has GNOME's remote desktop as a user unit only, and no nvidia-persistenced.
  EXPECT_EQ(known_gpu_units(Root(jammy.root()), false),
            (std::vector<HandoffUnit>{{"gnome-remote-desktop.service", "*"}}));
}

TEST(Handoff, PrepareStopsWhatHoldsTheGpuInOrderAndReleaseStartsExactlyThatInReverse) {
  Desktop d;
  ASSERT_EQ(d.holders().size(), 3u) << "the remote desktop, Xorg and nvidia-persistenced hold the RTX";

  ASSERT_EQ(d.hook("prepare", "begin"), 0) << testing::PrintToString(d.log);
  EXPECT_EQ(
      d.systemd.commands,
      (Lines{
          "runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 systemctl --user is-active "
          "gnome-remote-desktop.service",
          "runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 systemctl --user stop gnome-remote-desktop.service",
          "runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 systemctl --user is-active "
          "gnome-remote-desktop-headless.service",
          "systemctl is-active gnome-remote-desktop.service",
          "systemctl is-active display-manager.service",
          "systemctl stop display-manager.service",
          "systemctl is-active nvidia-persistenced.service",
          "systemctl stop nvidia-persistenced.service",
      }));
  EXPECT_TRUE(d.holders().empty());
  EXPECT_TRUE(test::exists(d.h.file("/proc/2000"))) << "Firefox, on the iGPU, is none of the hand-off's business";
  const auto rec = nlohmann::json::parse(d.record());
  EXPECT_EQ(rec["stopped"], nlohmann::json::parse(R"([{"name": "gnome-remote-desktop.service", "user": "alice"},
      {"name": "display-manager.service"}, {"name": "nvidia-persistenced.service"}])"));
  EXPECT_TRUE(logged(d.log, "win11: stopped gnome-remote-desktop.service (user alice)"));
  EXPECT_TRUE(logged(d.log, "win11: GPU 0000:01:00.0, 0000:01:00.1 free after"));
  // facts shows the plan, and what is stopped for the VM while it runs.
  const Facts f = gather_facts(Root(d.h.root()));
  ASSERT_EQ(f.handoff.size(), 1u);
  EXPECT_EQ(f.handoff[0]["vm"], "win11");
  EXPECT_EQ(f.handoff[0]["stopped"], rec["stopped"]);
  std::ostringstream table;
  print_facts_table(table, f);
  EXPECT_NE(table.str().find("Hand-off for VM win11: 0000:01:00.0 0000:01:00.1; its hook stops "
                             "gnome-remote-desktop.service (every user), gnome-remote-desktop-headless.service "
                             "(every user), gnome-remote-desktop.service, display-manager.service, "
                             "nvidia-persistenced.service, then waits up to 5 s for the GPU\n    stopped now, started "
                             "again when the VM stops: gnome-remote-desktop.service (user alice), "
                             "display-manager.service, nvidia-persistenced.service\n"),
            std::string::npos)
      << table.str();

  // The steps in between are not the hand-off's.
  d.systemd.commands.clear();
  for (const auto& [op, sub] : std::vector<std::pair<std::string, std::string>>{
           {"start", "begin"}, {"started", "begin"}, {"stopped", "end"}, {"prepare", "end"}, {"reconnect", "begin"}})
    EXPECT_EQ(d.hook(op, sub), 0);
  EXPECT_TRUE(d.systemd.commands.empty());

  ASSERT_EQ(d.hook("release", "end"), 0) << testing::PrintToString(d.log);
  EXPECT_EQ(
      d.systemd.commands,
      (Lines{
          "systemctl start nvidia-persistenced.service",
          "systemctl start display-manager.service",
          "runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 systemctl --user start gnome-remote-desktop.service",
      }));
  EXPECT_EQ(d.holders().size(), 3u);
  EXPECT_EQ(d.record(), "") << "the record goes with the release";
  EXPECT_TRUE(logged(d.log, "win11: every unit stopped for it runs again"));
  // A second release has nothing to start.
  d.systemd.commands.clear();
  EXPECT_EQ(d.hook("release", "end"), 0);
  EXPECT_TRUE(d.systemd.commands.empty());
}

TEST(Handoff, AHolderThatStaysFailsThePrepareAndEverythingStoppedRunsAgain) {
  Desktop d;
  d.plan.timeout = 1;
  d.write_plan();
  // KDE's powerdevil on the RTX's I2C bus: no unit of the plan runs it.
  test::add_process(d.h, 5000, "powerdevil", {{9, "/dev/i2c-4"}});
  EXPECT_EQ(d.hook("prepare", "begin"), 1);
  EXPECT_TRUE(logged(d.log,
                     "win11: the GPU 0000:01:00.0, 0000:01:00.1 is still held after 1 s: powerdevil (pid 5000) "
                     "has /dev/i2c-4 open; the VM does not start"))
      << testing::PrintToString(d.log);
  const Lines starts(d.systemd.commands.end() - 3, d.systemd.commands.end());
  EXPECT_EQ(starts, (Lines{"systemctl start nvidia-persistenced.service", "systemctl start display-manager.service",
                           "runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 systemctl --user start "
                           "gnome-remote-desktop.service"}));
  EXPECT_EQ(d.holders().size(), 4u) << "the host is as it was";
  EXPECT_EQ(d.record(), "");
}

TEST(Handoff, AUnitThatWillNotStopFailsThePrepareAndWhatStoppedBeforeItRunsAgain) {
  Desktop d;
  d.systemd.units["display-manager.service"].stop_fails = true;
  EXPECT_EQ(d.hook("prepare", "begin"), 1);
  EXPECT_TRUE(logged(
      d.log, "systemctl stop display-manager.service failed: exit code 1: Job for display-manager.service failed."))
      << testing::PrintToString(d.log);
  EXPECT_EQ(
      d.systemd.commands.back(),
      "runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/1000 systemctl --user start gnome-remote-desktop.service");
  EXPECT_EQ(std::count_if(d.systemd.commands.begin(), d.systemd.commands.end(),
                          [](const std::string& c) { return c.find(" stop ") != std::string::npos; }),
            2);
  EXPECT_EQ(d.holders().size(), 3u);
}

TEST(Handoff, ReleaseGivesBackAGpuLibvirtLeftOnVfioPciBeforeTheUnitsStart) {
  Desktop d;
  ASSERT_EQ(d.hook("prepare", "begin"), 0);
  // managed='no': libvirt leaves the device on vfio-pci. The kernel's side of the writes: probing
  // without an override binds the device's own driver again.
  const std::string dev = Root(d.h.root()).resolve("/sys/bus/pci/devices/0000:01:00.0").value();
  fs::remove(dev + "/driver");
  fs::create_directories(d.h.file("/sys/bus/pci/drivers/vfio-pci"));
  fs::create_symlink("../../../../bus/pci/drivers/vfio-pci", dev + "/driver");
  struct Kernel final : SysfsWriter {
    std::string dev;
    Lines writes;
    Status write(const Root&, const std::string& path, const std::string& value) override {
      writes.push_back(path + "=" + value);
      if (path == "/sys/bus/pci/drivers_probe") {
        fs::remove(dev + "/driver");
        fs::create_symlink("../../../../bus/pci/drivers/nvidia", dev + "/driver");
      }
      return {};
    }
  } kernel;
  kernel.dev = dev;
  d.io.sysfs = &kernel;
  ASSERT_EQ(d.hook("release", "end"), 0) << testing::PrintToString(d.log);
  EXPECT_EQ(kernel.writes,
            (Lines{"/sys/bus/pci/devices/0000:01:00.0/driver_override=\n",
                   "/sys/bus/pci/drivers/vfio-pci/unbind=0000:01:00.0", "/sys/bus/pci/drivers_probe=0000:01:00.0"}));
  EXPECT_TRUE(logged(d.log, "win11: 0000:01:00.0 given back from vfio-pci to nvidia"));
  EXPECT_EQ(d.holders().size(), 3u);
}

TEST(Handoff, AVmWithoutAPlanIsLeftAloneAndABrokenPlanIsSaid) {
  Desktop d;
  EXPECT_EQ(run_handoff(Root(d.h.root()), d.io, "other-vm", "prepare", "begin"), 0);
  EXPECT_EQ(run_handoff(Root(d.h.root()), d.io, "../etc/passwd", "prepare", "begin"), 0);
  EXPECT_TRUE(d.systemd.commands.empty());
  test::write(d.h.file("/etc/gptagent/handoff/win11.json"), R"({"vm": "win11", "gpus": ["banana"]})");
  EXPECT_EQ(d.hook("prepare", "begin"), 1);
  EXPECT_TRUE(logged(d.log, "/etc/gptagent/handoff/win11.json: \"banana\" is not a PCI address"))
      << testing::PrintToString(d.log);
  EXPECT_TRUE(d.systemd.commands.empty());
}

}  // namespace
}  // namespace gpt
