// The binary as users and scripts call it: exit codes, output, JSON shape, the lock.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/process.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "agent/host.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using test::run_agent;
using test::SampleHost;

const std::string kDemo = test::source_path("playbooks/demo.yaml");

TEST(Cli, DemoConvergesThenStaysConverged) {
  SampleHost host;
  const auto pristine = test::snapshot(host.root());

  auto drift = run_agent({"apply", kDemo, "--root", host.root(), "--check", "--diff"});
  EXPECT_EQ(drift.exit_code, 2) << drift.out << drift.err;
  EXPECT_NE(drift.out.find("changed: [IOMMU and nouveau on the kernel command line]"), std::string::npos);
  EXPECT_NE(drift.out.find("+GRUB_CMDLINE_LINUX=\"intel_iommu=on iommu=pt nouveau.modeset=0\""), std::string::npos);
  EXPECT_NE(drift.out.find("drift: the host differs"), std::string::npos);
  EXPECT_EQ(test::snapshot(host.root()), pristine) << "--check changed the tree";

  auto first = run_agent({"apply", kDemo, "--root", host.root()});
  EXPECT_EQ(first.exit_code, 3) << first.out << first.err;  // the kernel command line needs a reboot
  EXPECT_NE(first.out.find("changed: [IOMMU and nouveau on the kernel command line]"), std::string::npos);
  EXPECT_NE(first.out.find("skipping: [regenerate the grub config] not run under --root"), std::string::npos);
  EXPECT_NE(
      first.out.find("changed: [No X11 config may take the GPU] emptied /usr/share/X11/xorg.conf.d/10-nvidia.conf"),
      std::string::npos);
  EXPECT_NE(first.out.find("changed: [vfio-pci claims the GPU at boot]"), std::string::npos);
  EXPECT_NE(first.out.find("skipping: [rebuild the initramfs] not run under --root"), std::string::npos);
  EXPECT_NE(first.out.find("localhost                  : ok=3    changed=3    unreachable=0    failed=0    skipped=2"),
            std::string::npos)
      << first.out;
  EXPECT_NE(first.out.find("stopped for a reboot after stage host"), std::string::npos) << first.out;
  EXPECT_EQ(first.out.find("\033["), std::string::npos) << "colour on a pipe";

  auto booted = test::sandbox_reboot(host.root());
  ASSERT_EQ(booted.exit_code, 0) << booted.err;
  auto verified = run_agent({"apply", kDemo, "--root", host.root()});
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("ok: [the kernel command line has intel_iommu=on]"), std::string::npos) << verified.out;

  auto second = run_agent({"apply", kDemo, "--root", host.root()});
  EXPECT_EQ(second.exit_code, 0);
  EXPECT_NE(second.out.find("ok: [IOMMU and nouveau on the kernel command line]"), std::string::npos);
  EXPECT_NE(second.out.find("ok=3    changed=0"), std::string::npos);

  auto check = run_agent({"apply", kDemo, "--root", host.root(), "--check"});
  EXPECT_EQ(check.exit_code, 0);
  EXPECT_NE(check.out.find("no drift"), std::string::npos);
}

TEST(Cli, JsonIsOneDocumentWithTasksAndTotals) {
  SampleHost host;
  auto r = run_agent({"apply", kDemo, "--root", host.root(), "--json", "--check"});
  EXPECT_EQ(r.exit_code, 2);
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["check"], true);
  EXPECT_EQ(doc["exit_code"], 2);
  EXPECT_EQ(doc["root"], Root(host.root()).dir());
  EXPECT_EQ(doc["stats"], (nlohmann::json{{"ok", 3},
                                          {"changed", 3},
                                          {"unreachable", 0},
                                          {"failed", 0},
                                          {"skipped", 2},
                                          {"rescued", 0},
                                          {"ignored", 0}}));
  EXPECT_EQ(doc["reboot_required"], true);
  ASSERT_EQ(doc["stages"].size(), 1u);
  const auto& tasks = doc["stages"][0]["tasks"];
  ASSERT_EQ(tasks.size(), 5u);
  EXPECT_EQ(tasks[0]["status"], "changed");
  EXPECT_EQ(tasks[0]["module"], "grub_cmdline");
  EXPECT_EQ(tasks[0]["handler"], false);
  EXPECT_TRUE(tasks[0]["diff"].get<std::string>().find("+GRUB_CMDLINE_LINUX=") != std::string::npos);
  EXPECT_EQ(tasks[0]["data"]["added"], (nlohmann::json{"intel_iommu=on", "iommu=pt", "nouveau.modeset=0"}));
  EXPECT_EQ(tasks[2]["data"]["ids"], (nlohmann::json{"10de:1b80", "10de:10f0"}));
  EXPECT_EQ(tasks[3]["status"], "skipped");
  EXPECT_EQ(tasks[3]["handler"], true);
  EXPECT_EQ(tasks[3]["commands"], nlohmann::json{"update-grub"});
  EXPECT_EQ(tasks[4]["commands"], nlohmann::json{"update-initramfs -u -k all"});
}

TEST(Cli, BadPlaybookIsExitOneWithPositionsAndTouchesNothing) {
  SampleHost host;
  test::TempDir d;
  test::write(d / "bad.yaml", "tasks:\n  - grub_cmdline:\n      present: [iommu=pt]\n      regenrate: no\n");
  const auto pristine = test::snapshot(host.root());
  auto r = run_agent({"apply", d / "bad.yaml", "--root", host.root()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(d / "bad.yaml:4:7: grub_cmdline has no argument 'regenrate' (did you mean 'regenerate'?)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("nothing was changed"), std::string::npos);
  EXPECT_EQ(test::snapshot(host.root()), pristine);

  auto v = run_agent({"validate", d / "bad.yaml", "--root", host.root()});
  EXPECT_EQ(v.exit_code, 1);
  auto j = run_agent({"apply", d / "bad.yaml", "--root", host.root(), "--json"});
  EXPECT_EQ(j.exit_code, 1);
  EXPECT_EQ(nlohmann::json::parse(j.out)["errors"].size(), 1u);
}

TEST(Cli, ValidateTouchesNothing) {
  SampleHost host;
  const auto pristine = test::snapshot(host.root());
  auto r = run_agent({"validate", kDemo, "--root", host.root()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("valid (1 stage, 3 tasks)"), std::string::npos);
  EXPECT_EQ(test::snapshot(host.root()), pristine);
}

TEST(Cli, MissingGrubFileFailsWithExitOne) {
  SampleHost host;
  std::remove(host.file("/etc/default/grub").c_str());
  const auto pristine = test::snapshot(host.root());
  auto r = run_agent({"apply", kDemo, "--root", host.root()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(
      r.out.find("failed: [IOMMU and nouveau on the kernel command line] cannot read /etc/default/grub: No such file"),
      std::string::npos)
      << r.out;
  auto after = test::snapshot(host.root());
  after.erase("run/");
  after.erase("run/gptagent.lock");
  EXPECT_EQ(after, pristine) << "the run stopped at the first failure: nothing after it ran";
  EXPECT_EQ(run_agent({"apply", kDemo, "--root", host.root(), "--check"}).exit_code, 1);
}

TEST(Cli, UnreadableGrubFileFailsForAnUnprivilegedRun) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  SampleHost host;
  ::chmod(host.file("/etc/default/grub").c_str(), 0600);
  ::chmod(host.root().c_str(), 0755);
  test::TempDir home;
  ::chmod(home.path().c_str(), 0755);
  // The run lock must be writable for nobody; the grub file must not be readable.
  std::filesystem::create_directories(host.file("/run"));
  ::chown(host.file("/run").c_str(), 65534, 65534);
  const std::string pb = home / "demo.yaml";
  test::write(pb, test::slurp(kDemo));
  test::write(host.file("/etc/default/grub"), "GRUB_CMDLINE_LINUX=\"\"\n", 0600);
  auto as_nobody = [&](std::vector<std::string> args) {
    std::vector<std::string> full = {"--reuid=65534", "--regid=65534", "--clear-groups", GPTAGENT_BIN};
    full.insert(full.end(), args.begin(), args.end());
    namespace bp = boost::process;
    bp::ipstream out;
    bp::child c(bp::search_path("setpriv"), bp::args(full), bp::std_out > out, bp::std_err > bp::null);
    std::string text, line;
    while (std::getline(out, line)) text += line + "\n";
    c.wait();
    return std::make_pair(c.exit_code(), text);
  };
  auto [code, out] = as_nobody({"apply", pb, "--root", host.root()});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("cannot read /etc/default/grub: Permission denied"), std::string::npos) << out;
  EXPECT_EQ(test::slurp(host.file("/etc/default/grub")), "GRUB_CMDLINE_LINUX=\"\"\n");
}

TEST(Cli, BadRootOrArgumentsExitOne) {
  EXPECT_EQ(run_agent({"apply", kDemo, "--root", "/nonexistent/gptagent"}).exit_code, 1);
  EXPECT_EQ(run_agent({"apply"}).exit_code, 1);
  EXPECT_EQ(run_agent({"frobnicate"}).exit_code, 1);
  EXPECT_EQ(run_agent({"apply", "/nonexistent.yaml"}).exit_code, 1);
  EXPECT_EQ(run_agent({"apply", kDemo, "--color", "purple"}).exit_code, 1);
  auto v = run_agent({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.out.find("gptagent "), std::string::npos);
}

TEST(Cli, ColourOnlyWhenAskedAndNeverWithNoColor) {
  SampleHost host;
  auto on = run_agent({"apply", kDemo, "--root", host.root(), "--check", "--color", "always"});
  EXPECT_NE(on.out.find("\033[0;33mchanged: "), std::string::npos);
  auto auto_pipe = run_agent({"apply", kDemo, "--root", host.root(), "--check"});
  EXPECT_EQ(auto_pipe.out.find("\033["), std::string::npos);
  auto never = run_agent({"apply", kDemo, "--root", host.root(), "--check", "--color", "never"});
  EXPECT_EQ(never.out.find("\033["), std::string::npos);
  // NO_COLOR wins over a terminal: `script` gives the agent a real tty.
  namespace bp = boost::process;
  auto with_tty = [&](bool no_color) {
    bp::ipstream out;
    bp::environment env = boost::this_process::environment();
    env.erase("NO_COLOR");
    if (no_color) env["NO_COLOR"] = "1";
    std::string cmd = std::string(GPTAGENT_BIN) + " apply " + kDemo + " --root " + host.root() + " --check";
    bp::child c(bp::search_path("script"), "-qec", cmd, "/dev/null", env, bp::std_out > out, bp::std_in < "/dev/null");
    std::string text, line;
    while (std::getline(out, line)) text += line + "\n";
    c.wait();
    return text;
  };
  EXPECT_NE(with_tty(false).find("\033["), std::string::npos);
  EXPECT_EQ(with_tty(true).find("\033["), std::string::npos);
}

TEST(Cli, SecondRunWithNoWaitFailsWhileTheLockIsHeld) {
  SampleHost host;
  Root root(host.root());
  auto lock = RunLock::acquire(root, RunLock::Mode::exclusive, false);
  ASSERT_TRUE(lock.ok());
  const auto pristine = test::snapshot(host.root());
  auto r = run_agent({"apply", kDemo, "--root", host.root(), "--no-wait"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("another gptagent run (pid " + std::to_string(::getpid()) + ") holds the lock"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(test::snapshot(host.root()), pristine);
}

TEST(Cli, SecondRunWaitsForTheLockNamingTheHolderThenRuns) {
  SampleHost host;
  Root root(host.root());
  auto lock = RunLock::acquire(root, RunLock::Mode::exclusive, false);
  ASSERT_TRUE(lock.ok());
  namespace bp = boost::process;
  bp::ipstream err;
  bp::child c(std::string(GPTAGENT_BIN), bp::args({"apply", kDemo, "--root", host.root()}), bp::std_in.close(),
              bp::std_out > bp::null, bp::std_err > err);
  std::string line;
  ASSERT_TRUE(std::getline(err, line));  // blocks until the agent says it waits
  EXPECT_EQ(line, "gptagent: waiting for the run holding the lock (pid " + std::to_string(::getpid()) + ")");
  EXPECT_EQ(test::slurp(host.file("/etc/default/grub")).find("intel_iommu=on"), std::string::npos);
  lock = RunLock{};  // the holder finishes; the waiting run goes on
  c.wait();
  EXPECT_EQ(c.exit_code(), 3);  // it ran, and stopped for the reboot its changes need
  EXPECT_NE(test::slurp(host.file("/etc/default/grub")).find("intel_iommu=on"), std::string::npos);
}

TEST(Cli, HostPlaybookCheckDiffShowsEveryFileThatWouldChange) {
  SampleHost host("fedora-40");
  const auto pristine = test::snapshot(host.root());
  auto r = run_agent({"apply", test::source_path("playbooks/host.yaml"), "--root", host.root(), "--check", "--diff"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  for (const std::string& expected : std::vector<std::string>{
           "--- /etc/default/grub (before)",
           "+GRUB_CMDLINE_LINUX=\"rhgb quiet intel_iommu=on iommu=pt nouveau.modeset=0\"",
           "--- /usr/share/X11/xorg.conf.d/nvidia.conf (before)",
           "--- /dev/null\n+++ /etc/modprobe.d/vfio.conf (new file)",
           "+options vfio-pci ids=10de:1f07,10de:10f9,10de:1ada,10de:1adb",
           "+++ /etc/dracut.conf.d/vfio.conf (new file)",
           "+vfio_iommu_type1",
           "skipping: [regenerate the grub config] not run under --root",
           "skipping: [update the boot entries with grubby (added intel_iommu=on, iommu=pt, nouveau.modeset=0)]",
           "skipping: [rebuild the initramfs] not run under --root " + Root(host.root()).dir() +
               ": dracut -f --regenerate-all",
       })
    EXPECT_NE(r.out.find(expected), std::string::npos) << expected << "\n" << r.out;
  EXPECT_EQ(test::snapshot(host.root()), pristine);
}

TEST(Cli, ExtraVarsReachThePlaybook) {
  SampleHost host;
  auto r = run_agent({"apply", kDemo, "--root", host.root(), "-e", "extra_params=iommu=pt", "--check", "--json"});
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["stages"][0]["tasks"][0]["data"]["added"], (nlohmann::json{"intel_iommu=on", "iommu=pt"}));
}

TEST(Cli, ExtraVarsAsJsonInlineOrFromAFileAndTheLastWins) {
  SampleHost host;
  test::TempDir d;
  test::write(d / "vars.json", R"({"extra_params": ["iommu=pt", "pcie_acs_override=downstream"]})");
  auto r = run_agent({"apply", kDemo, "--root", host.root(), "-e", "@" + (d / "vars.json"), "--check", "--json"});
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["stages"][0]["tasks"][0]["data"]["added"],
            (nlohmann::json{"intel_iommu=on", "iommu=pt", "pcie_acs_override=downstream"}));
  auto inline_json = run_agent({"apply", kDemo, "--root", host.root(), "-e", "@" + (d / "vars.json"), "-e",
                                R"({"extra_params": ["iommu=pt"]})", "--check", "--json"});
  EXPECT_EQ(nlohmann::json::parse(inline_json.out)["stages"][0]["tasks"][0]["data"]["added"],
            (nlohmann::json{"intel_iommu=on", "iommu=pt"}));
  auto missing = run_agent({"apply", kDemo, "--root", host.root(), "-e", "@" + (d / "nope.json")});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("-e: cannot read " + (d / "nope.json")), std::string::npos) << missing.err;
  test::write(d / "list.json", "[1, 2]");
  auto list = run_agent({"apply", kDemo, "--root", host.root(), "-e", "@" + (d / "list.json")});
  EXPECT_EQ(list.exit_code, 1);
  EXPECT_NE(list.err.find("does not hold a JSON object"), std::string::npos) << list.err;
}

// Every playbook shipped in playbooks/ is an example users copy: each one must validate.
TEST(Cli, EveryShippedPlaybookValidates) {
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(test::source_path("playbooks"))) {
    if (e.path().extension() != ".yaml") continue;
    ++seen;
    auto r = run_agent({"validate", e.path().string()});
    EXPECT_EQ(r.exit_code, 0) << e.path() << "\n" << r.out << r.err;
    EXPECT_NE(r.out.find(": valid ("), std::string::npos) << r.out;
  }
  EXPECT_GE(seen, 5);
}

// What libvirt's hook from gpu_handoff runs: its standard output stays empty (libvirt would take
// it for the domain's XML), and under --root no unit of this machine is asked or touched.
TEST(Cli, HandoffPrintsNothingAndUnderRootTouchesNoUnit) {
  SampleHost host("ubuntu-24.04");
  test::write(
      host.file("/etc/gptagent/handoff/win11.json"),
      R"({"vm": "win11", "gpus": ["0000:01:00.0"], "units": [{"name": "display-manager.service"}], "timeout": 1})");
  auto r = run_agent({"handoff", "win11", "prepare", "begin", "-", "--root", host.root()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(
      r.err.find("not run under --root " + Root(host.root()).dir() + ": systemctl is-active display-manager.service"),
      std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("win11: GPU 0000:01:00.0 free after"), std::string::npos) << r.err;
  for (const auto& step :
       std::vector<std::vector<std::string>>{{"win11", "started", "begin", "-"}, {"other", "prepare", "begin", "-"}}) {
    std::vector<std::string> args = {"handoff"};
    args.insert(args.end(), step.begin(), step.end());
    args.insert(args.end(), {"--root", host.root()});
    auto quiet = run_agent(args);
    EXPECT_EQ(quiet.exit_code, 0);
    EXPECT_EQ(quiet.out + quiet.err, "") << step[0] << " " << step[1];
  }
  EXPECT_EQ(run_agent({"handoff", "win11", "prepare", "--root", host.root()}).exit_code, 1)
      << "three arguments at least";
}

}  // namespace
}  // namespace gpt
