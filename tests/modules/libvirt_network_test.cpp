// libvirt_network against real libvirt: the test:/// driver in process (it has an active NAT
// network "default"), and a private libvirtd through the binary. Bridges come from the sample
// tree's /sys/class/net, the only part faked.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "agent/virt.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/libvirt_test_driver.hpp"

namespace gpt {
namespace {

using test::TestDriver;
namespace fs = std::filesystem;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

std::string network_xml(const TestDriver& lv, const std::string& name) {
  auto n = lv.conn.lookup_network(name);
  return n.ok() && n->has_value() ? *(*n)->xml(true) : "";
}
bool network_active(const TestDriver& lv, const std::string& name) {
  auto n = lv.conn.lookup_network(name);
  return n.ok() && n->has_value() && *(*n)->active();
}

std::string task(const std::string& args) {
  return "tasks:\n  - name: net\n    libvirt_network:\n      connect: test:///default\n" + args;
}

const std::string kLab = task(
    "      name: lab\n      mode: nat\n      bridge: virbr7\n      address: 192.168.100.1/24\n"
    "      dhcp: {start: 192.168.100.10, end: 192.168.100.99}\n");

TEST(LibvirtNetwork, DefinesStartsAndIsOkTheSecondTimeWithCheckExact) {
  test::SampleHost host;
  TestDriver lv;
  auto check = test::converge_root(host.root(), kLab, true);
  ASSERT_EQ(check.tasks.size(), 1u) << (check.load_errors.empty() ? "" : check.load_errors[0]);
  EXPECT_EQ(check.tasks[0].result.status, Outcome::changed) << check.tasks[0].result.msg;
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_EQ(network_xml(lv, "lab"), "") << "check mode defined the network";

  auto first = test::converge_root(host.root(), kLab, false);
  ASSERT_EQ(first.tasks[0].result.status, Outcome::changed) << first.tasks[0].result.msg;
  EXPECT_EQ(first.tasks[0].result.msg, "defined network lab; started");
  EXPECT_EQ(first.changes(), check.changes()) << "check mode predicted another change";
  EXPECT_TRUE(has(first.tasks[0].result.diff, "+  <forward mode=\"nat\" />")) << first.tasks[0].result.diff;
  const std::string xml = network_xml(lv, "lab");
  for (const char* want : {"<forward mode='nat'", "<bridge name='virbr7'", "<ip address='192.168.100.1' prefix='24'>",
                           "<range start='192.168.100.10' end='192.168.100.99'/>"})
    EXPECT_TRUE(has(xml, want)) << want << "\n" << xml;
  EXPECT_TRUE(network_active(lv, "lab"));

  auto second = test::converge_root(host.root(), kLab, false);
  EXPECT_EQ(second.tasks[0].result.status, Outcome::ok) << second.tasks[0].result.msg;
  EXPECT_EQ(second.tasks[0].result.msg, "network lab is as wanted (active)");
  auto clean = test::converge_root(host.root(), kLab, true);
  EXPECT_EQ(clean.exit_code, 0) << clean.tasks[0].result.msg;
}

// The test driver reads an active network's live definition only, which a define does not touch:
// the networks whose definitions are edited here are inactive.
const std::string kLabInactive = kLab + "      state: inactive\n";

// A bare host: libvirt not installed (its hypervisor cannot be opened), its daemon's unit unknown.
// In check mode, after a packages task that would install libvirt, the service and network tasks
// say what they would do; without that task, each fails as a real run would.
TEST(LibvirtNetwork, CheckModeOnAHostWithoutLibvirtPredictsWhatPackagesWouldBring) {
  test::SampleHost host;
  test::write(host.file("/var/lib/dpkg/status"),
              "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n\n");
  const std::string absent_hypervisor = "test:///" + host.root() + "/no-such-libvirt.xml";
  const std::string later =
      "  - service: {name: libvirtd, enabled: true, state: started}\n"
      "  - libvirt_network: {name: lab, connect: '" +
      absent_hypervisor + "', mode: nat, address: 192.168.100.1/24}\n";
  auto check =
      test::converge_root(host.root(), "tasks:\n  - packages: {present: [libvirt-daemon-system]}\n" + later, true);
  ASSERT_EQ(check.tasks.size(), 3u) << (check.load_errors.empty() ? "" : check.load_errors[0]);
  EXPECT_EQ(check.tasks[0].result.status, Outcome::changed) << check.tasks[0].result.msg;
  EXPECT_EQ(check.tasks[1].result.status, Outcome::changed) << check.tasks[1].result.msg;
  EXPECT_EQ(check.tasks[1].result.msg,
            "would be enabled, started: libvirtd.service is not known to systemd yet; an earlier task would install "
            "packages, which may bring it");
  EXPECT_EQ(check.tasks[2].result.status, Outcome::changed) << check.tasks[2].result.msg;
  EXPECT_TRUE(has(check.tasks[2].result.msg,
                  "network lab would be defined at " + absent_hypervisor + ": libvirt cannot be reached yet ("))
      << check.tasks[2].result.msg;
  EXPECT_TRUE(has(check.tasks[2].result.msg, "), and an earlier task would install packages first"))
      << check.tasks[2].result.msg;
  EXPECT_EQ(check.exit_code, 2);

  // Under --root nothing is installed: the service task says why it cannot tell, and fails nothing.
  auto sandboxed = test::converge_root(host.root(),
                                       "tasks:\n  - packages: {present: [libvirt-daemon-system]}\n"
                                       "  - service: {name: libvirtd, enabled: true, state: started}\n",
                                       false, /*allow_system_commands=*/false);
  ASSERT_EQ(sandboxed.tasks.size(), 2u);
  EXPECT_EQ(sandboxed.tasks[1].result.status, Outcome::skipped) << sandboxed.tasks[1].result.msg;
  EXPECT_EQ(sandboxed.tasks[1].result.msg,
            "libvirtd.service is not known to systemd yet; an earlier task has packages to "
            "install that are not installed under --root " +
                host.root() + ", which may bring it");
  EXPECT_EQ(sandboxed.exit_code, 0);
  // And --check under --root predicts just that: the package manager will not run there either.
  auto sandboxed_check = test::converge_root(host.root(),
                                             "tasks:\n  - packages: {present: [libvirt-daemon-system]}\n"
                                             "  - service: {name: libvirtd, enabled: true, state: started}\n",
                                             true, /*allow_system_commands=*/false);
  ASSERT_EQ(sandboxed_check.tasks.size(), 2u);
  EXPECT_EQ(sandboxed_check.tasks[1].result.status, Outcome::skipped) << sandboxed_check.tasks[1].result.msg;
  EXPECT_EQ(sandboxed_check.tasks[1].result.msg, sandboxed.tasks[1].result.msg);
  EXPECT_EQ(sandboxed_check.exit_code, 0);

  auto alone = test::converge_root(host.root(), "tasks:\n" + later, true);
  ASSERT_EQ(alone.tasks.size(), 1u) << "the failed service task stops the run";
  EXPECT_EQ(alone.tasks[0].result.status, Outcome::failed) << alone.tasks[0].result.msg;
  EXPECT_TRUE(has(alone.tasks[0].result.msg, "unit libvirtd.service is not known to systemd"))
      << alone.tasks[0].result.msg;
  auto network_alone = test::converge_root(
      host.root(), "tasks:\n  - libvirt_network: {name: lab, connect: '" + absent_hypervisor + "', mode: nat}\n", true);
  ASSERT_EQ(network_alone.tasks.size(), 1u);
  EXPECT_EQ(network_alone.tasks[0].result.status, Outcome::failed) << network_alone.tasks[0].result.msg;
}

TEST(LibvirtNetwork, AHandEditOfADeclaredPartIsDriftAndOfAnUndeclaredOneIsNot) {
  test::SampleHost host;
  TestDriver lv;
  const std::string& kLab = kLabInactive;
  ASSERT_EQ(test::converge_root(host.root(), kLab, false).exit_code, 0);
  const std::string defined = network_xml(lv, "lab");

  // Undeclared: the DNS domain, the bridge's STP. Not drift; kept as the user made them.
  std::string edited =
      std::regex_replace(defined, std::regex("<bridge name='virbr7'[^/]*/>"),
                         "<bridge name='virbr7' stp='off' delay='2'/>\n  <domain name='lab.example'/>");
  ASSERT_NE(edited, defined);
  ASSERT_TRUE(lv.conn.define_network(edited).ok());
  auto undeclared = test::converge_root(host.root(), kLab, true);
  EXPECT_EQ(undeclared.exit_code, 0) << undeclared.tasks[0].result.msg << undeclared.tasks[0].result.diff;

  // Declared: the DHCP range. Drift, and the change is that one line.
  const std::string narrowed =
      std::regex_replace(network_xml(lv, "lab"), std::regex("end='192.168.100.99'"), "end='192.168.100.50'");
  ASSERT_TRUE(lv.conn.define_network(narrowed).ok());
  auto drift = test::converge_root(host.root(), kLab, true);
  EXPECT_EQ(drift.exit_code, 2);
  const std::string& diff = drift.tasks[0].result.diff;
  EXPECT_TRUE(has(diff, "-      <range start=\"192.168.100.10\" end=\"192.168.100.50\" />")) << diff;
  EXPECT_TRUE(has(diff, "+      <range start=\"192.168.100.10\" end=\"192.168.100.99\" />")) << diff;
  EXPECT_TRUE(has(drift.tasks[0].result.msg, "redefined network lab")) << drift.tasks[0].result.msg;
  auto fixed = test::converge_root(host.root(), kLab, false);
  EXPECT_EQ(fixed.changes(), drift.changes());
  const std::string after = network_xml(lv, "lab");
  EXPECT_TRUE(has(after, "end='192.168.100.99'")) << after;
  EXPECT_TRUE(has(after, "<domain name='lab.example'/>")) << "an undeclared part was dropped\n" << after;
  EXPECT_TRUE(has(after, "stp='off' delay='2'")) << after;
  EXPECT_EQ(test::converge_root(host.root(), kLab, true).exit_code, 0);
}

TEST(LibvirtNetwork, AdoptsTheUsersNetworkChangingOnlyWhatIsDeclared) {
  test::SampleHost host;
  TestDriver lv;
  const std::string before = network_xml(lv, "default");
  ASSERT_TRUE(has(before, "<range start='192.168.122.2' end='192.168.122.254'/>")) << before;
  const std::string pb = task(
      "      name: default\n      address: 192.168.122.1/24\n"
      "      dhcp: {start: 192.168.122.100, end: 192.168.122.199}\n      autostart: true\n"
      "      state: inactive\n");
  auto run = test::converge_root(host.root(), pb, false);
  ASSERT_EQ(run.tasks[0].result.status, Outcome::changed) << run.tasks[0].result.msg;
  const std::string after = network_xml(lv, "default");
  EXPECT_EQ(std::regex_replace(after, std::regex("start='192.168.122.100' end='192.168.122.199'"),
                               "start='192.168.122.2' end='192.168.122.254'"),
            before)
      << "something besides the DHCP range changed:\n"
      << after;
  EXPECT_EQ(run.tasks[0].result.msg, "redefined network default; stopped; autostart on");
  auto again = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(again.tasks[0].result.status, Outcome::ok) << again.tasks[0].result.msg << again.tasks[0].result.diff;
}

TEST(LibvirtNetwork, InactiveAndAbsent) {
  test::SampleHost host;
  TestDriver lv;
  ASSERT_EQ(test::converge_root(host.root(), kLab, false).exit_code, 0);
  const std::string stopped = kLab + "      state: inactive\n";
  auto stop = test::converge_root(host.root(), stopped, false);
  EXPECT_EQ(stop.tasks[0].result.msg, "stopped");
  EXPECT_FALSE(network_active(lv, "lab"));
  EXPECT_EQ(test::converge_root(host.root(), stopped, false).tasks[0].result.status, Outcome::ok);

  const std::string absent = task("      name: lab\n      state: absent\n");
  auto check = test::converge_root(host.root(), absent, true);
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_NE(network_xml(lv, "lab"), "");
  auto gone = test::converge_root(host.root(), absent, false);
  EXPECT_EQ(gone.tasks[0].result.msg, "undefined network lab");
  EXPECT_EQ(network_xml(lv, "lab"), "");
  EXPECT_EQ(test::converge_root(host.root(), absent, false).tasks[0].result.msg, "network lab is absent");
}

TEST(LibvirtNetwork, ABridgeNetworkNeedsTheHostBridge) {
  test::SampleHost host;
  TestDriver lv;
  const std::string pb = task("      name: lan\n      mode: bridge\n      bridge: br0\n");
  auto missing = test::converge_root(host.root(), pb, true);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(has(missing.tasks[0].result.msg, "bridge br0 does not exist on this host"))
      << missing.tasks[0].result.msg;
  EXPECT_EQ(network_xml(lv, "lan"), "");

  fs::create_directories(host.file("/sys/class/net/br0/bridge"));
  auto made = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(made.tasks[0].result.status, Outcome::changed) << made.tasks[0].result.msg;
  const std::string xml = network_xml(lv, "lan");
  EXPECT_TRUE(has(xml, "<forward mode='bridge'/>")) << xml;
  EXPECT_TRUE(has(xml, "<bridge name='br0'/>")) << xml;
  EXPECT_FALSE(has(xml, "<ip")) << xml;
  EXPECT_EQ(test::converge_root(host.root(), pb, false).tasks[0].result.status, Outcome::ok);
}

TEST(LibvirtNetwork, RefusesWhatLibvirtCouldNotUseAtLoadTime) {
  test::SampleHost host;
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"      name: x\n      mode: bridge\n", "mode: bridge needs bridge:"},
           {"      name: x\n      mode: bridge\n      bridge: br0\n      address: 10.0.0.1/24\n",
            "no address of its own"},
           {"      name: x\n      address: 10.0.0.1\n", "with a prefix length"},
           {"      name: x\n      ip: 10.0.0.1\n", "ip: and netmask: go together"},
           {"      name: x\n      ip: 10.0.0.1\n      netmask: 255.0.255.0\n", "is not a netmask"},
           {"      name: x\n      dhcp: {start: 10.0.0.2, end: 10.0.0.9}\n", "dhcp: needs the network's address"}}) {
    auto r = test::converge_root(host.root(), task(args), true);
    ASSERT_EQ(r.load_errors.size(), 1u) << args;
    EXPECT_TRUE(has(r.load_errors[0], message)) << r.load_errors[0];
  }
}

// A private libvirtd (its network driver, unprivileged): what a real daemon keeps and returns.
class RealNetworks : public test::WithPrivateLibvirtd<RealNetworks> {};

TEST_F(RealNetworks, DefinesChecksAndFindsDriftOnARealDaemon) {
  test::SampleHost host;
  fs::create_directories(host.file("/sys/class/net/br0/bridge"));
  test::TempDir work;
  // An unprivileged daemon cannot make a NAT bridge: the NAT network stays defined, not started;
  // the bridge network needs nothing made and starts.
  test::write(work / "pb.yaml",
              "tasks:\n  - name: nat\n    libvirt_network:\n      name: natnet\n      address: 192.168.150.1/24\n"
              "      dhcp: {start: 192.168.150.10, end: 192.168.150.20}\n      state: inactive\n"
              "  - name: lan\n    libvirt_network:\n      name: lan\n      mode: bridge\n      bridge: br0\n      "
              "autostart: true\n");
  const std::vector<std::string> base{"apply",     work / "pb.yaml", "--root",  host.root(),
                                      "--connect", daemon->uri(),    "--color", "never"};
  auto with = [&](std::initializer_list<std::string> more) {
    auto a = base;
    a.insert(a.end(), more);
    return test::run_agent(a);
  };
  auto check = with({"--check"});
  EXPECT_EQ(check.exit_code, 2) << check.out << check.err;
  EXPECT_FALSE(has(daemon->virsh("net-list --all --name"), "natnet"));

  auto first = with({});
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_TRUE(has(first.out, "changed: [nat] defined network natnet")) << first.out;
  EXPECT_TRUE(has(first.out, "changed: [lan] defined network lan; started; autostart on")) << first.out;
  EXPECT_TRUE(
      has(daemon->virsh("net-dumpxml --inactive natnet"), "<range start='192.168.150.10' end='192.168.150.20'/>"));
  EXPECT_TRUE(has(daemon->virsh("net-info lan"), "Active:         yes")) << daemon->virsh("net-info lan");

  auto second = with({});
  EXPECT_EQ(second.exit_code, 0) << second.out;
  EXPECT_TRUE(has(second.out, "ok: [nat] network natnet is as wanted (inactive)")) << second.out;
  EXPECT_TRUE(has(second.out, "ok: [lan] network lan is as wanted (active)")) << second.out;
  EXPECT_EQ(with({"--check"}).exit_code, 0);

  // A hand edit of the declared range through virsh: drift, shown as the XML change, then fixed.
  const std::string xml = daemon->virsh("net-dumpxml --inactive natnet");
  test::write(work / "edited.xml", std::regex_replace(xml, std::regex("192.168.150.20"), "192.168.150.30"));
  daemon->virsh("net-define " + work / "edited.xml");
  auto drift = with({"--check", "--diff"});
  EXPECT_EQ(drift.exit_code, 2) << drift.out;
  EXPECT_TRUE(has(drift.out, "end=\"192.168.150.30\"")) << drift.out;
  EXPECT_EQ(with({}).exit_code, 0);
  EXPECT_EQ(with({"--check"}).exit_code, 0);

  test::write(
      work / "absent.yaml",
      "tasks:\n  - libvirt_network: {name: natnet, state: absent}\n  - libvirt_network: {name: lan, state: absent}\n");
  auto gone = test::run_agent(
      {"apply", work / "absent.yaml", "--root", host.root(), "--connect", daemon->uri(), "--color", "never"});
  EXPECT_EQ(gone.exit_code, 0) << gone.out << gone.err;
  EXPECT_FALSE(has(daemon->virsh("net-list --all --name"), "natnet"));
  EXPECT_FALSE(has(daemon->virsh("net-list --all --name"), "lan"));
}

}  // namespace
}  // namespace gpt
