// Issue 20, item 1: root runs only the agent it hashed, from a cache nobody else controls. Each
// test plays another local user of a host (uid 12345) against a real sshd on loopback: a cache
// they own or may write, links they plant where the agent is copied, a swap of the cached agent
// after its check.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/fleet_lab.hpp"

namespace gpt {
namespace {

using test::entries;
using test::has;
using test::Lab;
using test::shipped;
using test::slurp;
namespace fs = std::filesystem;

// Root runs what is in the agent cache: a cache another user owns or may write, or under such a
// directory, is refused on that host before anything is copied there or run from it.
TEST(AgentCache, AnAgentCacheAnotherUserControlsIsRefusedAndNothingRuns) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  constexpr uid_t kOther = 12345;
  Lab lab(1);
  const std::string cache = lab.nodes[0].remote_dir;
  const std::string ran = lab.files / "planted-agent-ran";
  auto expect_refused = [&](const std::string& why) {
    auto r = lab.apply();
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(has(r.out, "fatal: [gpu01]: FAILED! refused the agent cache " + cache + ": " + why +
                               " (it and every directory above it must belong to the ssh user or root and be writable "
                               "by no one else, as OpenSSH's StrictModes asks): nothing was copied or run"))
        << r.out;
    EXPECT_TRUE(has(r.out, "gpu01                      : ok=0    changed=0    unreachable=0    failed=1")) << r.out;
    EXPECT_FALSE(has(lab.grub(0), "intel_iommu=on"));
    EXPECT_FALSE(fs::exists(ran)) << "root ran the other user's program";
  };

  // Another user made the cache first and put "the agent" in it.
  fs::create_directories(cache);
  ASSERT_EQ(::chown(cache.c_str(), kOther, kOther), 0);
  fs::permissions(cache, fs::perms::owner_all, fs::perm_options::replace);
  expect_refused(cache + " belongs to uid 12345");
  EXPECT_EQ(entries(cache), std::vector<std::string>{}) << "the agent was copied into it";

  // Root's, but anyone may write it.
  ASSERT_EQ(::chown(cache.c_str(), 0, 0), 0);
  fs::permissions(cache, fs::perms::all, fs::perm_options::replace);
  expect_refused(cache + " is writable by group or others");

  // Root's and private, but under a directory of that user's: they could rename it away.
  fs::permissions(cache, fs::perms::owner_all, fs::perm_options::replace);
  const std::string parent = fs::path(cache).parent_path();
  ASSERT_EQ(::chown(parent.c_str(), kOther, kOther), 0);
  expect_refused(parent + " belongs to uid 12345");
  ASSERT_EQ(::chown(parent.c_str(), 0, 0), 0);

  // Made safe, the same host converges.
  auto ok = lab.apply();
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_TRUE(has(lab.grub(0), "intel_iommu=on"));
}

// A new copy of the agent goes to a name mktemp makes (O_EXCL), never to .gptagent.new.$$: links
// planted at every pid the copying shell could get are left alone, as is what they point to.
TEST(AgentCache, LinksPlantedWhereTheAgentIsCopiedAreNotFollowed) {
  Lab lab(1);
  const std::string cache = lab.nodes[0].remote_dir;
  fs::create_directories(cache);
  fs::permissions(cache, fs::perms::owner_all, fs::perm_options::replace);
  const std::string victim = lab.files / "victim";
  test::write(victim, "not the agent\n", 0600);
  long last = 0;
  try {
    last = std::stol(slurp("/proc/sys/kernel/ns_last_pid"));
  } catch (...) {
  }
  for (long pid = last + 1; pid <= last + 5000; ++pid)
    fs::create_symlink(victim, cache + "/.gptagent.new." + std::to_string(pid));
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(has(lab.grub(0), "intel_iommu=on"));
  EXPECT_EQ(slurp(victim), "not the agent\n");
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(victim)));
  size_t links = 0, agents = 0;
  for (const auto& e : fs::directory_iterator(cache)) {
    if (fs::is_symlink(e.symlink_status())) ++links;
    if (e.path().filename().string().starts_with("gptagent-")) {
      ++agents;
      EXPECT_TRUE(slurp(e.path()) == shipped(GPTAGENT_BIN)) << "the cached agent is not the real one";
    }
  }
  EXPECT_EQ(links, 5000u);
  EXPECT_EQ(agents, 1u);
}

// What runs is the copy that was hashed, in the run's private directory: a swap of the cached
// agent after its check (here made by the become wrapper, just before it starts the agent) never
// makes root run anything else.
TEST(AgentCache, TheAgentThatRunsIsTheCopyThatWasHashed) {
  Lab lab(1);
  const std::string cache = lab.nodes[0].remote_dir, ran = lab.files / "swapped-agent-ran";
  const std::string swapper = lab.files / "sudo-that-swaps";
  test::write(
      swapper,
      "#!/bin/sh\n[ \"$1\" = -n ] && shift\n[ \"$1\" = -- ] && shift\nfor f in " + cache +
          "/gptagent-*; do printf '#!/bin/sh\\necho ran > " + ran +
          "\\necho {}\\n' > \"$f.swap\" && chmod 700 \"$f.swap\" && mv -f \"$f.swap\" \"$f\"; done\nexec \"$@\"\n",
      0700);
  std::string inv = slurp(lab.inventory);
  const std::string line = "          gptagent_root: " + lab.nodes[0].tree->root() + "\n";
  inv.replace(inv.find(line), line.size(),
              line + "          ansible_become: yes\n          ansible_become_exe: " + swapper + "\n");
  test::write(lab.inventory, inv);
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_FALSE(fs::exists(ran)) << "root ran the agent swapped in after its hash was checked";
  EXPECT_TRUE(has(lab.grub(0), "intel_iommu=on iommu=pt")) << lab.grub(0);
  const auto cached = entries(cache);
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_TRUE(has(slurp(cache + "/" + cached[0]), "echo ran")) << "the swap did not happen";
}

}  // namespace
}  // namespace gpt
