// A run killed at any point. `gptagent apply playbooks/demo.yaml --root` on a copy of the sandbox
// host (scripts/demo's tree) is killed with SIGKILL by strace's fault injection
// (`-e inject=SYSCALL:signal=SIGKILL:when=N`: no test hook in the product) at every call of every
// syscall that changes the tree or ends a file's write: each openat, write, pwrite64, ftruncate,
// fchmod, fsync, close, renameat, linkat, unlinkat and mkdir the run makes, counted first with
// `strace -f -c` (strace counts when=N per syscall, so each syscall is swept on its own; the
// signal is delivered on entry, so the Nth call never happens). After each kill the tree must be
// whole (every file the original or the finished one, every backup complete, the state file
// parseable, the lock free), and `apply` run again must end as an uninterrupted run does, byte for
// byte, with no temporary file left. What is normalised between the two trees: the time stamp in
// backup names, state.json's recorded_at, the lock holder's pid (see chaos::normalised).
// Under the sanitizers (a build there to find memory errors, each run ten times slower, whose
// runtime adds calls of its own) every 8th point is swept.
#include <gtest/gtest.h>

#include <iostream>

#include "tests/chaos/chaos.hpp"

namespace gpt {
namespace {

using chaos::has;
using Host = chaos::Host;

// Every syscall of a run that changes the tree or completes a change, each swept at every call.
const std::vector<std::string> kSyscalls = {"openat", "write",    "pwrite64", "ftruncate", "fchmod", "fsync",
                                            "close",  "renameat", "linkat",   "unlinkat",  "mkdir"};

std::vector<std::string> apply_args(const std::string& root) {
  return {"apply", chaos::demo_playbook(), "--root", root, "--color", "never"};
}

TEST(ChaosKill, DemoKilledAtEverySyscallThenRunAgainEndsLikeAnUninterruptedRun) {
  ASSERT_EQ(::access(chaos::kStrace.c_str(), X_OK), 0) << "strace is needed (scripts/deps installs it)";
  const Host pristine;
  const auto original = chaos::snapshot(pristine.root());
  const Host reference;
  auto ref = chaos::agent(apply_args(reference.root()));
  ASSERT_EQ(ref.exit_code, 3) << ref.out << ref.err;
  const auto finished = chaos::normalised(reference.root());
  ASSERT_TRUE(finished.count("var/lib/gptagent/state.json"));

  // How many calls of each syscall an uninterrupted run makes.
  const Host counted;
  int counted_exit = -1;
  const auto counts = chaos::count_syscalls(apply_args(counted.root()), &counted_exit);
  ASSERT_EQ(counted_exit, 3);
  EXPECT_EQ(chaos::differences(finished, chaos::normalised(counted.root())), "")
      << "a run under strace ended differently";

  struct Point {
    std::string syscall;
    int n;
  };
  std::vector<Point> points;
  const int stride = chaos::kAsan ? 8 : 1;
  for (const auto& sc : kSyscalls) {
    auto it = counts.find(sc);
    ASSERT_TRUE(it != counts.end() && it->second > 0) << "an uninterrupted run makes no " << sc << " call";
    for (int n = 1; n <= it->second + 1; ++n)  // N = count + 1: no kill, the run ends
      if (n % stride == 1 % stride || n == it->second + 1) points.push_back({sc, n});
  }

  auto verdicts = chaos::parallel(points.size(), [&](size_t i) -> std::string {
    const Point& p = points[i];
    const bool beyond = p.n > counts.at(p.syscall);
    const std::string at =
        (beyond ? "not killed (" : "killed at ") + p.syscall + " #" + std::to_string(p.n) + (beyond ? ")" : "");
    const Host host;
    auto killed = chaos::traced({"-o", "/dev/null", "-e", "trace=" + p.syscall, "-e",
                                 "inject=" + p.syscall + ":signal=SIGKILL:when=" + std::to_string(p.n)},
                                apply_args(host.root()));
    if (killed.timed_out) return at + ": the run never ended";
    std::string bad;
    if (beyond) {
      if (killed.exit_code != 3) return at + ": exit " + std::to_string(killed.exit_code) + "\n" + killed.all();
      bad += chaos::differences(finished, chaos::normalised(host.root()));
      return bad.empty() ? "" : at + ": the run did not end as the reference did\n" + bad;
    }
    // strace dies of the signal its tracee died of (128 + 9 from a shell's point of view).
    if (killed.signal != SIGKILL && killed.exit_code != 128 + SIGKILL)
      return at + ": not killed (exit " + std::to_string(killed.exit_code) +
             "): the run makes fewer calls than counted\n" + killed.all();
    bad += chaos::tree_invariants(host.root(), original, finished);
    if (!bad.empty()) return at + ": right after the kill:\n" + bad;

    auto rerun = chaos::agent(apply_args(host.root()));
    if (rerun.exit_code != 3) return at + ": the rerun exited " + std::to_string(rerun.exit_code) + "\n" + rerun.all();
    if (has(rerun.out, "failed: ")) return at + ": the rerun failed a task\n" + rerun.out;
    // The handlers of a change made before the kill still run (here: reported, as under --root).
    if (!has(rerun.out, "waiting for reboot") && !(has(rerun.out, "skipping: [regenerate the grub config]") &&
                                                   has(rerun.out, "skipping: [rebuild the initramfs]")))
      bad += "  the rerun lost a handler of the interrupted run\n";
    bad += chaos::differences(finished, chaos::normalised(host.root()));
    for (const auto& tmp : chaos::temp_files(host.root())) bad += "  a temporary file is left: " + tmp + "\n";
    bad += chaos::tree_invariants(host.root(), original, finished);
    return bad.empty() ? "" : at + ": after the rerun:\n" + bad + rerun.out;
  });

  std::map<std::string, int> kills;
  int failures = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    if (!verdicts[i].empty()) {
      if (++failures <= 10) ADD_FAILURE() << verdicts[i];
    } else if (points[i].n <= counts.at(points[i].syscall)) {
      ++kills[points[i].syscall];
    }
  }
  EXPECT_EQ(failures, 0) << failures << " of " << points.size() << " kill points failed";
  int total = 0;
  std::string summary;
  for (const auto& sc : kSyscalls) {
    total += kills[sc];
    summary += " " + sc + "=" + std::to_string(kills[sc]) + "/" + std::to_string(counts.at(sc));
  }
  EXPECT_GT(total, 150 / stride) << "too few kill points: is strace injecting?";
  RecordProperty("kill_points", total);
  std::cout << "[chaos] killed the demo run at " << total
            << " points, each survived (per syscall, survived/calls):" << summary << "\n";
}

}  // namespace
}  // namespace gpt
