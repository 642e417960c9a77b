// libvirt_domain's interfaces: a bridge must exist on the host and a network must be defined and
// active before the domain is defined on them — checked in --check as well, except for a network
// that a libvirt_network task before the domain would start.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/converge.hpp"
#include "tests/support/libvirt_test_driver.hpp"

namespace gpt {
namespace {

using test::TestDriver;
using test::VmHost;
namespace fs = std::filesystem;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

std::string vm(const std::string& interface) {
  return "  - name: vm\n    libvirt_domain:\n      name: netvm\n      connect: test:///default\n"
         "      machine: pc-q35-7.2\n      memory: 2G\n      vcpus: 2\n      gpus: [\"0000:01:00.0\"]\n"
         "      interfaces: [" +
         interface + "]\n";
}

TEST(LibvirtDomainInterfaces, ABridgeMissingOnTheHostIsRefusedBeforeTheDomainIsDefined) {
  VmHost host;
  TestDriver lv;
  const std::string pb = "tasks:\n" + vm("{bridge: VMBridge}");
  for (bool check : {true, false}) {
    auto r = test::converge_root(host.root(), pb, check);
    ASSERT_FALSE(r.tasks.empty()) << (r.load_errors.empty() ? "" : r.load_errors[0]);
    EXPECT_EQ(r.exit_code, 1) << "check " << check;
    EXPECT_EQ(r.tasks.back().result.msg,
              "bridge VMBridge does not exist on this host (no /sys/class/net/VMBridge/bridge): create it (netplan, "
              "NetworkManager "
              "or ifupdown) or use `network: default` (domain netvm, nothing was changed)");
    EXPECT_EQ(lv.xml("netvm"), "");
  }
  fs::create_directories(host.file("/sys/class/net/VMBridge/bridge"));
  auto made = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(made.tasks.back().result.status, Outcome::changed) << made.tasks.back().result.msg;
  EXPECT_TRUE(has(lv.xml("netvm"), "<source bridge='VMBridge'/>")) << lv.xml("netvm");
}

TEST(LibvirtDomainInterfaces, AMissingOrInactiveNetworkIsRefusedWithWhatToDo) {
  VmHost host;
  TestDriver lv;
  auto missing = test::converge_root(host.root(), "tasks:\n" + vm("{network: nosuch}"), true);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(has(missing.tasks.back().result.msg, "network nosuch is not defined at test:///default"))
      << missing.tasks.back().result.msg;

  auto stopped = test::converge_root(
      host.root(),
      "tasks:\n  - libvirt_network: {connect: \"test:///default\", name: default, state: inactive}\n" +
          vm("{network: default}"),
      false);
  ASSERT_EQ(stopped.tasks.size(), 3u);  // the preflight, the network, the domain
  EXPECT_EQ(stopped.tasks[1].module, "libvirt_network");
  EXPECT_EQ(stopped.tasks[1].result.msg, "stopped");
  EXPECT_EQ(stopped.exit_code, 1);
  EXPECT_TRUE(
      has(stopped.tasks.back().result.msg,
          "network default is defined but not active: start it (virsh net-start default; net-autostart for boots), "
          "or add a libvirt_network task"))
      << stopped.tasks.back().result.msg;
  EXPECT_EQ(lv.xml("netvm"), "");
}

TEST(LibvirtDomainInterfaces, InCheckModeANetworkAnEarlierTaskWouldStartCounts) {
  VmHost host;
  TestDriver lv;
  const std::string pb =
      "tasks:\n  - name: net\n    libvirt_network:\n      connect: test:///default\n      name: vmnet\n"
      "      address: 192.168.160.1/24\n" +
      vm("{network: vmnet}");
  auto check = test::converge_root(host.root(), pb, true);
  ASSERT_EQ(check.tasks.size(), 3u);
  EXPECT_EQ(check.exit_code, 2) << check.tasks.back().result.msg;
  EXPECT_EQ(check.tasks.back().result.status, Outcome::changed) << check.tasks.back().result.msg;
  EXPECT_EQ(lv.xml("netvm"), "");
  // The same domain alone, in check mode: the network is not there and no task makes it.
  auto alone = test::converge_root(host.root(), "tasks:\n" + vm("{network: vmnet}"), true);
  EXPECT_EQ(alone.exit_code, 1);
  // A network the earlier task only defines, stopped: no help.
  auto inactive = test::converge_root(
      host.root(), pb.substr(0, pb.find("  - name: vm")) + "      state: inactive\n" + vm("{network: vmnet}"), true);
  EXPECT_EQ(inactive.exit_code, 1);

  auto first = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(first.exit_code, 0) << first.tasks.back().result.msg;
  EXPECT_EQ(first.changes(), check.changes());
  EXPECT_TRUE(has(lv.xml("netvm"), "<source network='vmnet'/>")) << lv.xml("netvm");
  EXPECT_EQ(test::converge_root(host.root(), pb, true).exit_code, 0);
}

}  // namespace
}  // namespace gpt
