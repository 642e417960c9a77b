// Two runs at once on the same root, through the binary: the lock is held by another process
// (flock(1) on <root>/run/gptagent.lock, or a real gptagent run held in the middle of its changes
// by strace's delay injection). A second run waits, saying which pid it waits for, or with
// --no-wait exits 1 at once; it never writes while the first one does, and the tree ends as one
// uninterrupted run leaves it. (tests/cli_test.cpp holds the lock in-process with RunLock.)
#include <gtest/gtest.h>

#include <boost/process.hpp>
#include <condition_variable>
#include <thread>

#include "agent/host.hpp"
#include "tests/chaos/chaos.hpp"

namespace gpt {
namespace {

using test::wait_until;

namespace bp = boost::process;
namespace fs = std::filesystem;
using chaos::has;
using Host = chaos::Host;

std::vector<std::string> apply_args(const std::string& root, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"apply", chaos::demo_playbook(), "--root", root, "--color", "never"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::map<std::string, std::string> finished_tree() {
  Host reference;
  auto r = chaos::agent(apply_args(reference.root()));
  EXPECT_EQ(r.exit_code, 3) << r.all();
  return chaos::normalised(reference.root());
}

// Kills a process that outlives its time, so that a test waiting on its output cannot hang.
class Watchdog {
 public:
  Watchdog(pid_t pid, std::chrono::seconds limit)
      : thread_([this, pid, limit] {
          std::unique_lock lock(mutex_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) ::kill(pid, SIGKILL);
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

long lock_pid(const std::string& root) {
  const std::string text = test::exists(root + "/run/gptagent.lock") ? test::slurp(root + "/run/gptagent.lock") : "";
  return text.empty() ? 0 : std::atol(text.c_str());
}

TEST(ChaosLock, AnotherProcessHoldingTheLockMakesNoWaitFailAtOnceAndARunWaitForIt) {
  const auto finished = finished_tree();
  Host host;
  const std::string lock = host.file("/run/gptagent.lock");
  fs::create_directories(host.file("/run"));
  // The holder writes its pid where a gptagent run writes its own, then holds the lock.
  bp::child holder(bp::search_path("flock"),
                   bp::args({"-x", lock, "sh", "-c", "echo $$ > " + lock + "; exec sleep 120"}), bp::std_in.close());
  ASSERT_TRUE(wait_until([&] { return chaos::lock_held(host.root()) && lock_pid(host.root()) > 0; }));
  const long pid = lock_pid(host.root());
  const auto before = chaos::snapshot(host.root());

  auto no_wait = chaos::agent(apply_args(host.root(), {"--no-wait"}), {}, {.wall = std::chrono::seconds(30)});
  EXPECT_FALSE(no_wait.timed_out) << "--no-wait waited";
  EXPECT_EQ(no_wait.exit_code, 1) << no_wait.all();
  EXPECT_TRUE(has(no_wait.err, "gptagent: another gptagent run (pid " + std::to_string(pid) + ") holds the lock "))
      << no_wait.err;
  EXPECT_EQ(chaos::differences(before, chaos::snapshot(host.root())), "");

  bp::ipstream err;
  bp::child waiting(std::string(GPTAGENT_BIN), bp::args(apply_args(host.root())), bp::std_in.close(),
                    bp::std_out > bp::null, bp::std_err > err);
  Watchdog watchdog(waiting.id(), std::chrono::seconds(60));
  std::string line;
  ASSERT_TRUE(std::getline(err, line));  // said once it blocks
  EXPECT_EQ(line, "gptagent: waiting for the run holding the lock (pid " + std::to_string(pid) + ")");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(waiting.running()) << "it did not wait for the lock";
  EXPECT_EQ(chaos::differences(before, chaos::snapshot(host.root())), "") << "it wrote while another held the lock";

  holder.terminate();  // the holder ends (flock(1) and the sleep that shares its lock): the waiting run goes on
  ::kill(static_cast<pid_t>(pid), SIGKILL);
  ASSERT_TRUE(wait_until([&] { return !waiting.running(); })) << "the run never went on";
  waiting.wait();
  EXPECT_EQ(waiting.exit_code(), 3);
  EXPECT_EQ(chaos::differences(finished, chaos::normalised(host.root())), "");
}

TEST(ChaosLock, ASecondRunNeverWritesWhileTheFirstIsInTheMiddleOfItsChanges) {
  ASSERT_EQ(::access(chaos::kStrace.c_str(), X_OK), 0) << "strace is needed (scripts/deps installs it)";
  const auto finished = finished_tree();
  Host host;
  test::TempDir logs;
  // The first run stops for 2 s before its first rename, its first change made (the state file's
  // journal entry is the first rename), holding the lock.
  std::thread first_run;
  chaos::Run first;
  first_run = std::thread([&] {
    first = chaos::traced({"-o", "/dev/null", "-e", "trace=renameat", "-e", "inject=renameat:delay_enter=2s:when=1"},
                          apply_args(host.root()));
  });
  ASSERT_TRUE(wait_until([&] { return chaos::lock_held(host.root()) && lock_pid(host.root()) > 0; }));
  const long pid = lock_pid(host.root());

  auto at_once = chaos::agent(apply_args(host.root(), {"--no-wait"}), {}, {.wall = std::chrono::seconds(30)});
  EXPECT_EQ(at_once.exit_code, 1) << at_once.all();
  EXPECT_TRUE(has(at_once.err, "another gptagent run (pid " + std::to_string(pid) + ") holds the lock")) << at_once.err;

  // The second run, traced: every call that could change the tree is recorded.
  auto second = chaos::traced({"-y", "-o", logs / "second", "-e", "trace=openat,write,renameat,linkat,unlinkat,mkdir"},
                              apply_args(host.root()));
  first_run.join();
  EXPECT_EQ(first.exit_code, 3) << first.all();
  EXPECT_TRUE(has(first.out, "changed: [IOMMU and nouveau on the kernel command line]")) << first.out;
  EXPECT_EQ(second.exit_code, 3) << second.all();
  EXPECT_TRUE(has(second.err, "gptagent: waiting for the run holding the lock (pid " + std::to_string(pid) + ")"))
      << second.err;
  EXPECT_TRUE(has(second.out, "waiting for reboot")) << second.out;
  std::istringstream calls(test::slurp(logs / "second"));
  int writes = 0, seen = 0;
  for (std::string call; std::getline(calls, call);) {
    if (!has(call, Root(host.root()).dir())) continue;
    ++seen;
    const bool changes =
        has(call, "renameat(") || has(call, "linkat(") || has(call, "unlinkat(") || has(call, "mkdir(") ||
        (has(call, "openat(") && (has(call, "O_WRONLY") || has(call, "O_RDWR")) && !has(call, "gptagent.lock"));
    if (changes) ADD_FAILURE() << "the second run changed the tree: " << call.substr(0, 300);
    writes += changes;
  }
  EXPECT_EQ(writes, 0);
  EXPECT_GT(seen, 3) << "the second run's trace shows nothing of the tree";
  EXPECT_EQ(chaos::differences(finished, chaos::normalised(host.root())), "");
}

TEST(ChaosLock, RunsStartedTogetherEndAsOneRun) {
  const auto finished = finished_tree();
  for (int round = 0; round < 6; ++round) {
    Host host;
    chaos::Run a, b;
    std::thread ta([&] { a = chaos::agent(apply_args(host.root())); });
    std::thread tb([&] { b = chaos::agent(apply_args(host.root())); });
    ta.join();
    tb.join();
    SCOPED_TRACE("round " + std::to_string(round));
    EXPECT_EQ(a.exit_code, 3) << a.all();
    EXPECT_EQ(b.exit_code, 3) << b.all();
    // One made the changes; the other found them made and the reboot pending.
    const bool a_changed = has(a.out, "changed: ["), b_changed = has(b.out, "changed: [");
    EXPECT_NE(a_changed, b_changed) << a.out << b.out;
    EXPECT_TRUE(has(a_changed ? b.out : a.out, "waiting for reboot")) << a.out << b.out;
    EXPECT_EQ(chaos::differences(finished, chaos::normalised(host.root())), "");
  }
}

}  // namespace
}  // namespace gpt
