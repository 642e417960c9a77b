// Issue 24 ("Ship it"): the agent the fleet copies to hosts, built by scripts/build-portable in a
// Debian 11 root, runs on a bare Debian 11 host (glibc 2.31) as a fleet's host (the ctest
// portable_agent runs it there as a program: scripts/prove-portable). Needs root (chroot, sshd's
// ChrootDirectory), build-portable/gptagent and the cached Debian 11 root (scripts/portable-root
// host); without them it is skipped and says what to run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "agent/ship.hpp"
#include "agent/text.hpp"
#include "tests/support/sandbox.hpp"
#include "tests/support/sshd.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::run_program;
using test::slurp;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// What the tests need, or why they skip ("" when all is there).
struct Portable {
  std::string agent = test::source_path("build-portable/gptagent");
  std::string root;  // the bare Debian 11 root
  std::string missing;
  Portable() {
    if (::geteuid() != 0) {
      missing = "needs root (chroot)";
      return;
    }
    if (!test::exists(agent)) {
      missing = "no build-portable/gptagent: run scripts/build-portable";
      return;
    }
    auto r = run_program(test::source_path("scripts/portable-root"), {"--cached", "host"});
    if (r.exit_code != 0) {
      missing = "no cached Debian 11 root: run scripts/prove-portable once";
      return;
    }
    root = std::string(trim(r.out));
  }
};

// Issue 24 item 1: a fleet run from this (Debian 12) machine converges a host whose sshd chroots
// every session into the Debian 11 root, so the agent the fleet copies runs on glibc 2.31 there.
TEST(PortableAgent, AFleetRunConvergesAHostWhoseAgentRunsOnDebian11) {
  Portable p;
  if (!p.missing.empty()) GTEST_SKIP() << p.missing;
  test::SshClient client;
  test::LoopbackSshd sshd(client, "ChrootDirectory " + p.root + "\n");
  // The host's side, seen from inside the root: its tree, its agent cache and its temporary files.
  test::TempDir host(p.root + "/tmp");
  const std::string inside = "/tmp/" + fs::path(host.path()).filename().string();
  test::copy_tree(test::source_path("playbooks/sandbox/ubuntu-22.04"), host / "tree");
  fs::create_directories(host / "tmp");
  test::TempDir files;
  test::write(files / "host.yaml", test::kFleetPlaybook);
  test::write(files / "inventory.yml",
              "all:\n  hosts:\n    bullseye:\n      ansible_host: 127.0.0.1\n      ansible_port: " +
                  std::to_string(sshd.port()) + "\n      ansible_user: root\n      ansible_ssh_private_key_file: " +
                  client.key() + "\n      ansible_ssh_common_args: \"" + client.common_args() +
                  "\"\n      extra_param: iommu=pt\n      gptagent_root: " + inside +
                  "/tree\n      gptagent_remote_dir: " + inside + "/cache\n      gptagent_remote_tmp: " + inside +
                  "/tmp\n");
  auto apply = [&](const std::string& controller) {
    return run_program(controller, {"apply", files / "host.yaml", "-i", files / "inventory.yml", "--color", "never"});
  };

  // The Debian 12 build, copied to that host, cannot run there: the problem this item solves.
  auto debian12 = apply(GPTAGENT_BIN);
  EXPECT_EQ(debian12.exit_code, 1) << debian12.out << debian12.err;
  EXPECT_TRUE(has(debian12.out + debian12.err, "GLIBC_2.3")) << debian12.out << debian12.err;
  fs::remove_all(host / "cache");

  auto first = apply(p.agent);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_TRUE(
      has(first.out,
          "changed: [bullseye] IOMMU on the kernel command line GRUB_CMDLINE_LINUX: added intel_iommu=on, iommu=pt"))
      << first.out;
  EXPECT_TRUE(has(slurp(host / "tree/etc/default/grub"), "intel_iommu=on iommu=pt"))
      << slurp(host / "tree/etc/default/grub");
  // What the host ran is the portable agent, cached inside the root.
  std::vector<std::string> cached;
  for (const auto& e : fs::directory_iterator(host / "cache")) cached.push_back(e.path());
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_TRUE(slurp(cached[0]) == *ship::loadable_image(slurp(p.agent)))
      << cached[0] << " is not build-portable/gptagent";

  auto second = apply(p.agent);
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_TRUE(has(second.out, "changed=0")) << second.out;
  EXPECT_FALSE(has(second.out, "changed: [bullseye]")) << second.out;
}

}  // namespace
}  // namespace gpt
