// The run lock and the state file are the agent's own: a symlink planted at their names (by
// another local user, uid 12345 here) is refused with an error naming the path, or removed itself
// by --reset-state; what it points to is never truncated, written or deleted (issue 20).
#include <gtest/gtest.h>
#include <unistd.h>

#include "agent/state.hpp"
#include "tests/chaos/chaos.hpp"

namespace gpt {
namespace {

using chaos::has;
namespace fs = std::filesystem;

constexpr uid_t kOther = 12345;
const std::string kSentinel = "/etc/sentinel.conf";
const std::string kPrecious = "# another file of the host's\nprecious=1\n";

std::vector<std::string> apply_args(const chaos::Host& host, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"apply", chaos::demo_playbook(), "--root", host.root(), "--color", "never"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// A symlink at `host_path` to `target` (a path as the managed host sees it), owned by another user.
void plant_link(const chaos::Host& host, const std::string& target, const std::string& host_path) {
  fs::create_directories(fs::path(host.file(host_path)).parent_path());
  ASSERT_EQ(::symlink(target.c_str(), host.file(host_path).c_str()), 0) << host_path;
  ASSERT_EQ(::lchown(host.file(host_path).c_str(), kOther, kOther), 0);
}

bool is_link(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

// Item 8: the lock linked to another file.
TEST(StateLockLinks, ALockLinkedToAnotherFileIsRefusedAndItsTargetKeptByteForByte) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (files owned by another user)";
  chaos::Host host;
  test::write(host.file(kSentinel), kPrecious);
  plant_link(host, kSentinel, "/run/gptagent.lock");
  const auto before = chaos::snapshot(host.root());

  for (const auto& extra : {std::vector<std::string>{}, std::vector<std::string>{"--check"}}) {
    auto r = chaos::agent(apply_args(host, extra));
    EXPECT_EQ(r.exit_code, 1) << r.all();
    EXPECT_TRUE(has(r.err, "refusing /run/gptagent.lock: it is a symbolic link")) << r.err;
    EXPECT_EQ(test::differences(chaos::snapshot(host.root()), before), "") << "the run wrote something";
  }
  EXPECT_EQ(test::slurp(host.file(kSentinel)), kPrecious);
}

// Item 8: the state file linked to another file: refused, and --reset-state removes the link only.
TEST(StateLockLinks, AStateLinkedToAFileIsRefusedAndResetStateRemovesTheLinkNotItsTarget) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (files owned by another user)";
  chaos::Host host;
  test::write(host.file(kSentinel), kPrecious);
  plant_link(host, kSentinel, kStatePath);
  const auto before = chaos::without_lock(chaos::snapshot(host.root()));

  auto refused = chaos::agent(apply_args(host));
  EXPECT_EQ(refused.exit_code, 1) << refused.all();
  EXPECT_TRUE(has(refused.err, "refusing /var/lib/gptagent/state.json: it is a symbolic link")) << refused.err;
  EXPECT_TRUE(has(refused.err, "--reset-state")) << refused.err;
  EXPECT_EQ(test::differences(chaos::without_lock(chaos::snapshot(host.root())), before), "");

  auto status = chaos::agent({"status", "--root", host.root()});
  EXPECT_EQ(status.exit_code, 1) << status.all();
  EXPECT_TRUE(has(status.err, "refusing /var/lib/gptagent/state.json")) << status.err;

  auto reset = chaos::agent(apply_args(host, {"--reset-state"}));
  EXPECT_EQ(reset.exit_code, 3) << reset.all();  // the demo stops for its reboot
  EXPECT_EQ(test::slurp(host.file(kSentinel)), kPrecious) << "the link's target was written or deleted";
  EXPECT_FALSE(is_link(host.file(kStatePath)));
  EXPECT_TRUE(has(test::slurp(host.file(kStatePath)), "\"phase\": \"waiting_for_reboot\""));
}

// Item 8: a dangling link at the state's name: the state JSON is never written to its target.
TEST(StateLockLinks, ADanglingStateLinkGetsNothingWrittenThroughIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (files owned by another user)";
  chaos::Host host;
  const std::string target = "/etc/cron.d/planted";  // what the link's owner wants root to write
  plant_link(host, target, kStatePath);
  const auto before = chaos::without_lock(chaos::snapshot(host.root()));

  auto refused = chaos::agent(apply_args(host));
  EXPECT_EQ(refused.exit_code, 1) << refused.all();
  EXPECT_TRUE(has(refused.err, "refusing /var/lib/gptagent/state.json: it is a symbolic link")) << refused.err;
  EXPECT_FALSE(test::exists(host.file(target)));
  EXPECT_EQ(test::differences(chaos::without_lock(chaos::snapshot(host.root())), before), "");

  auto reset = chaos::agent(apply_args(host, {"--reset-state"}));
  EXPECT_EQ(reset.exit_code, 3) << reset.all();
  EXPECT_FALSE(test::exists(host.file(target))) << "the state was written through the link";
  EXPECT_FALSE(is_link(host.file(kStatePath)));
}

}  // namespace
}  // namespace gpt
