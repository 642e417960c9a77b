// Faults. strace's injector makes the demo run's syscalls fail with ENOSPC, EIO, EROFS and EACCES
// (`-e inject=SYSCALL:error=ERRNO:when=N`), one call at a time, at every openat, write, fsync,
// fchmod, renameat, linkat, unlinkat and mkdir the run makes under its root (and the playbook's
// open): each must be a failed run (exit 1) with a message that names the cause, a whole tree (no
// file half written, no temporary file left, every backup complete) and a next run that finishes
// the work; or a fault the run can do without (a stale temporary file that could not be removed,
// a backup link replaced by a copy), after which the tree is exactly the uninterrupted run's.
// Under the sanitizers (a build there to find memory errors, each run ten times slower) every
// other call is faulted, with one errno each, in turn. And the tools a task runs: a qemu-img or an update-grub that
// fails or hangs is a failed task with its stderr, bounded by the task's timeout, never a stuck agent.
#include <gtest/gtest.h>

#include <iostream>

#include "agent/facts.hpp"
#include "agent/playbook.hpp"
#include "agent/runner.hpp"
#include "tests/chaos/chaos.hpp"
#include "tests/support/converge.hpp"

namespace gpt {
namespace {

using chaos::has;
using Host = chaos::Host;

std::vector<std::string> apply_args(const std::string& root) {
  return {"apply", chaos::demo_playbook(), "--root", root, "--color", "never"};
}

// One syscall of an uninterrupted run, as `strace -y` shows it.
struct Call {
  std::string syscall;
  int n = 0;         // its rank among the run's calls of that syscall (strace's when=N)
  std::string line;  // the traced line, the root replaced by ROOT
};

std::vector<Call> trace_calls(const std::string& root, const std::string& syscalls) {
  test::TempDir d;
  auto r = chaos::traced({"-y", "-o", d / "trace", "-e", "trace=" + syscalls}, apply_args(root));
  EXPECT_EQ(r.exit_code, 3) << r.all();
  std::vector<Call> out;
  std::map<std::string, int> seen;
  static const std::regex call(R"(^(?:\d+\s+)?([a-z0-9_]+)\((.*)$)");
  std::ifstream in(d / "trace");
  const std::string real_root = Root(root).dir();
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_match(line, m, call)) continue;
    Call c{m[1], ++seen[m[1]], line};
    for (size_t at; (at = c.line.find(real_root)) != std::string::npos;) c.line.replace(at, real_root.size(), "ROOT");
    out.push_back(std::move(c));
  }
  return out;
}

TEST(ChaosFault, EveryFailingWriteRenameOrOpenIsAFailedRunWithTheCauseAndAWholeTree) {
  ASSERT_EQ(::access(chaos::kStrace.c_str(), X_OK), 0) << "strace is needed (scripts/deps installs it)";
  const Host pristine;
  const auto original = chaos::snapshot(pristine.root());
  const Host reference;
  ASSERT_EQ(chaos::agent(apply_args(reference.root())).exit_code, 3);
  const auto finished = chaos::normalised(reference.root());

  const Host traced;
  const auto calls = trace_calls(traced.root(), "openat,write,fsync,fchmod,renameat,linkat,unlinkat,mkdir");
  // The calls on the managed tree, and the playbook's open.
  std::vector<Call> points;
  for (const auto& c : calls)
    if (has(c.line, "ROOT") || has(c.line, "demo.yaml")) points.push_back(c);
  ASSERT_GT(points.size(), 100u) << "the trace shows too few calls on the tree";

  const std::vector<std::pair<std::string, int>> errnos = {
      {"ENOSPC", ENOSPC}, {"EIO", EIO}, {"EROFS", EROFS}, {"EACCES", EACCES}};
  // Where a failure cannot be done without: everything that makes or moves a file, reads the
  // playbook or reads the file the first task edits.
  auto must_fail = [](const Call& c) {
    if (c.syscall == "write" || c.syscall == "fchmod" || c.syscall == "renameat" || c.syscall == "mkdir") return true;
    if (c.syscall == "fsync") return true;
    if (c.syscall == "openat")  // a file made, a directory opened to write in it, the playbook, the grub file
      return has(c.line, "O_CREAT") || has(c.line, "O_RDONLY|O_CLOEXEC|O_DIRECTORY)") || has(c.line, "demo.yaml") ||
             has(c.line, "\"ROOT/etc/default/grub\"");
    return false;
  };

  struct Outcome {
    bool tried = false;
    bool failed = false;
    std::string message;
  };
  std::vector<Outcome> outcomes(points.size() * errnos.size());
  std::atomic<int> kept_originals{0};  // failures where the file being replaced was checked
  auto verdicts = chaos::parallel(outcomes.size(), [&](size_t i) -> std::string {
    const Call& c = points[i / errnos.size()];
    const auto& [errname, err] = errnos[i % errnos.size()];
    if (chaos::kAsan && ((i / errnos.size()) % 2 != 0 || (i / errnos.size() / 2) % errnos.size() != i % errnos.size()))
      return "";  // not in the sanitizer build's sample
    outcomes[i].tried = true;
    const std::string at = errname + " at " + c.syscall + " #" + std::to_string(c.n) + ": " + c.line.substr(0, 160);
    const Host host;
    auto r = chaos::traced({"-o", "/dev/null", "-e", "trace=" + c.syscall, "-e",
                            "inject=" + c.syscall + ":error=" + errname + ":when=" + std::to_string(c.n)},
                           apply_args(host.root()));
    if (r.timed_out) return at + ": the run never ended";
    std::string bad;
    for (const auto& tmp : chaos::temp_files(host.root())) bad += "  a temporary file is left: " + tmp + "\n";
    bad += chaos::tree_invariants(host.root(), original, finished);
    if (r.exit_code == 3 && !must_fail(c)) {  // a fault the run could do without
      bad += chaos::differences(finished, chaos::normalised(host.root()));
      return bad.empty() ? "" : at + ": the run went on, but not to the same end:\n" + bad + r.out;
    }
    if (r.exit_code != 1) return at + ": exit " + std::to_string(r.exit_code) + " (1 expected)\n" + r.all();
    // The cause, in a failed task's line or the agent's own error line.
    const std::string cause = std::strerror(err);
    std::string message;
    for (const std::string& text : {r.out, r.err}) {
      std::istringstream lines(text);
      for (std::string line; std::getline(lines, line);)
        if ((line.starts_with("failed: [") || line.starts_with("gptagent: ") || has(line, ".yaml: ")) &&
            has(line, cause))
          message = line;
    }
    if (message.empty()) bad += "  no failed task or error line says '" + cause + "'\n";
    outcomes[i].failed = true;
    outcomes[i].message = message;
    // The file the failing call was writing is still the original (the temporary file is gone).
    {  // its temporary file, as a path (write, fchmod, fsync, openat's result) or as a name in a directory (renameat)
      static const std::regex tmp_path(R"re(ROOT/([^"<>]*)/\.([^/"<>]+)\.gptagent-tmp)re");
      static const std::regex tmp_in_dir(R"re(ROOT/([^"<>]*)>, "\.([^/"]+)\.gptagent-tmp")re");
      std::smatch m;
      if ((std::regex_search(c.line, m, tmp_path) || std::regex_search(c.line, m, tmp_in_dir)) &&
          m[2].str() != "state.json" && !m[1].str().ends_with("/pre-images")) {  // the run's own journals aside
        const std::string target = m[1].str() + "/" + m[2].str();
        ++kept_originals;
        const auto now = chaos::snapshot(host.root());
        const bool was = original.count(target), is = now.count(target);
        if (was != is || (was && original.at(target) != now.at(target)))
          bad += "  " + target + " is not the original any more\n";
      }
    }
    if (!bad.empty()) return at + ":\n" + bad + r.all();
    // The next run, without the fault, finishes the work.
    auto rerun = chaos::agent(apply_args(host.root()));
    if (rerun.exit_code != 3)
      return at + ": the next run exited " + std::to_string(rerun.exit_code) + "\n" + rerun.all();
    bad += chaos::differences(finished, chaos::normalised(host.root()));
    return bad.empty() ? "" : at + ": the next run did not end as an uninterrupted run\n" + bad + rerun.out;
  });

  int failures = 0, failed_runs = 0, tried = 0;
  std::map<std::string, std::string> messages;  // the first message per syscall and errno, for the record
  for (size_t i = 0; i < verdicts.size(); ++i) {
    if (!verdicts[i].empty() && ++failures <= 10) ADD_FAILURE() << verdicts[i];
    tried += outcomes[i].tried;
    if (outcomes[i].failed) {
      ++failed_runs;
      auto& m = messages[points[i / errnos.size()].syscall + " " + errnos[i % errnos.size()].first];
      if (m.empty()) m = outcomes[i].message;
    }
  }
  EXPECT_EQ(failures, 0) << failures << " of " << tried << " faults went wrong";
  EXPECT_GT(failed_runs, chaos::kAsan ? 25 : 200);
  EXPECT_GT(kept_originals.load(), chaos::kAsan ? 5 : 100) << "too few failures checked the file they were replacing";
  std::cout << "[chaos] injected " << tried << " faults (" << points.size() << " calls x " << errnos.size() << " errnos"
            << (chaos::kAsan ? ", sampled" : "") << "): " << failed_runs << " failed runs with the cause named, "
            << tried - failed_runs << " done without\n";
  for (const auto& [name, m] : messages) std::cout << "[chaos]   " << name << ": " << m << "\n";
}

// A stand-in tool that says something on stderr, then hangs in a child that keeps stderr open
// (as a tool stuck on a dead mount does) and ignores SIGTERM. Its sleeping child's pid goes to
// DIR/sleeper.pid.
std::string hanging_tool(const std::string& dir, const std::string& says) {
  return "#!/bin/sh\ntrap '' TERM\necho '" + says + "' >&2\nsleep 600 &\necho $! > " + dir +
         "/sleeper.pid\nwait\nwait\n";
}

// The hanging tool's sleeping child is gone `when`: SIGKILL went to its process group, and the kernel
// tears it down (given up to 5 s). Killed here if not, so that no test leaves it behind.
void expect_sleeper_killed(const chaos::Stubs& stubs, const std::string& when) {
  const std::string file = stubs.dir / "sleeper.pid";
  const pid_t left = test::exists(file) ? static_cast<pid_t>(std::stol(test::slurp(file))) : 0;
  ASSERT_GT(left, 0) << "the stand-in never ran";
  EXPECT_TRUE(test::wait_until([&] { return chaos::process_gone(left); }, std::chrono::seconds(5)))
      << "the hung tool's child (pid " << left << ") outlived " << when;
  if (!chaos::process_gone(left)) ::kill(left, SIGKILL);
}

TEST(ChaosFault, AQemuImgThatHangsIsAFailedTaskWithItsStderrBoundedByItsTimeout) {
  chaos::Stubs stubs;
  stubs.add("qemu-img", hanging_tool(stubs.dir.path(), "qemu-img: waiting for a lock on /images"));
  test::TempDir root, plays;
  ::mkdir((root / "images").c_str(), 0755);
  test::write(plays / "vm.yaml",
              "tasks:\n  - name: the VM's disk\n    qemu_img: {path: /images/vm.qcow2, size: 1G, timeout: 2}\n");
  const auto before = chaos::snapshot(root.path());
  auto r = chaos::agent({"apply", plays / "vm.yaml", "--root", root.path(), "--color", "never"}, {stubs.path_env()},
                        {.wall = std::chrono::seconds(60), .kill_leftovers = false});
  EXPECT_FALSE(r.timed_out) << "the agent is stuck";
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_LT(r.seconds, 30) << "a 2 s timeout did not bound the run";
  EXPECT_TRUE(has(r.out, "failed: [the VM's disk] qemu-img create -f qcow2 " + Root(root.path()).dir() +
                             "/images/vm.qcow2 1G failed: timed out: qemu-img: waiting for a lock on /images"))
      << r.out;
  EXPECT_EQ(chaos::without_lock(chaos::snapshot(root.path())), before);
  expect_sleeper_killed(stubs, "the agent");
}

TEST(ChaosFault, AQemuImgThatFailsIsAFailedTaskWithItsStderrAndNoPartialImage) {
  chaos::Stubs stubs;
  // Leaves half an image, then fails as a full disk makes it.
  stubs.add(
      "qemu-img",
      "#!/bin/sh\nfor a; do case \"$a\" in /*) image=$a;; esac; done\nprintf 'QFI' > \"$image\"\n"
      "echo \"qemu-img: $image: Could not preallocate data for the new file: No space left on device\" >&2\nexit 1\n");
  test::TempDir root, plays;
  ::mkdir((root / "images").c_str(), 0755);
  test::write(plays / "vm.yaml",
              "tasks:\n  - name: the VM's disk\n    qemu_img: {path: /images/vm.raw, format: raw, size: 1G, "
              "preallocation: full}\n");
  auto r = chaos::agent({"apply", plays / "vm.yaml", "--root", root.path(), "--color", "never"}, {stubs.path_env()});
  EXPECT_EQ(r.exit_code, 1) << r.all();
  EXPECT_TRUE(has(r.out,
                  "Could not preallocate data for the new file: No space left on device; the partial "
                  "/images/vm.raw was removed"))
      << r.out;
  EXPECT_FALSE(test::exists(root / "images/vm.raw"));
}

// update-grub runs only where the root is "/": here in-process, with the real process runner and
// a stand-in first on PATH, the way the agent runs it on a host.
struct SystemRun {
  std::vector<TaskReport> tasks;
  RunStats stats;
  double seconds = 0;
};
SystemRun run_with_system_commands(const std::string& root_dir, const std::string& yaml) {
  SystemRun out;
  Root root(root_dir);
  Facts facts = gather_facts(root);
  LoadOptions lo;
  lo.facts = facts.to_json();
  auto loaded = load_playbook_text(yaml, "host.yaml", lo);
  EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors[0]);
  if (!loaded.ok()) return out;
  ProcessExec exec;
  Context ctx{root, exec, facts, /*system_commands_allowed=*/true};
  test::Collect rep(out.tasks);
  RunOptions ro;
  const auto start = std::chrono::steady_clock::now();
  out.stats = run_playbook(loaded.playbook, ctx, ro, rep);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

TEST(ChaosFault, AnUpdateGrubThatHangsIsAFailedTaskWithItsStderrBoundedByItsTimeout) {
  chaos::Stubs stubs;
  stubs.add("update-grub", hanging_tool(stubs.dir.path(), "grub-probe: stuck reading /dev/sda"));
  chaos::ScopedEnv path("PATH", stubs.path_env().substr(5));
  Host host;
  auto r =
      run_with_system_commands(host.root(), "tasks:\n  - name: regenerate grub.cfg\n    grub_config: {timeout: 2}\n");
  ASSERT_EQ(r.tasks.size(), 1u);
  EXPECT_EQ(r.stats.failed, 1);
  EXPECT_EQ(r.tasks[0].result.status, Outcome::failed);
  EXPECT_EQ(r.tasks[0].result.msg, "update-grub failed: timed out: grub-probe: stuck reading /dev/sda");
  EXPECT_LT(r.seconds, 30);
  expect_sleeper_killed(stubs, "its timeout");
}

TEST(ChaosFault, AnUpdateGrubThatFailsIsAFailedHandlerWithItsStderrAndTheEditKept) {
  chaos::Stubs stubs;
  stubs.add("update-grub",
            "#!/bin/sh\necho 'Sourcing file `/etc/default/grub'\"'\" >&2\n"
            "echo \"grub-mkconfig: error: failed to get canonical path of 'overlay'.\" >&2\nexit 1\n");
  chaos::ScopedEnv path("PATH", stubs.path_env().substr(5));
  Host host;
  auto r = run_with_system_commands(host.root(), "tasks:\n  - name: IOMMU on\n    grub_cmdline: {iommu: auto}\n");
  ASSERT_EQ(r.tasks.size(), 2u);
  EXPECT_EQ(r.tasks[0].result.status, Outcome::changed) << r.tasks[0].result.msg;
  EXPECT_TRUE(r.tasks[1].handler);
  EXPECT_EQ(r.tasks[1].result.status, Outcome::failed);
  EXPECT_EQ(r.tasks[1].result.msg,
            "update-grub failed: exit code 1: grub-mkconfig: error: failed to get canonical path of 'overlay'.");
  EXPECT_EQ(r.stats.failed, 1);
  EXPECT_EQ(exit_code_for(r.stats, false), 1);
  EXPECT_TRUE(has(test::slurp(host.file("/etc/default/grub")), "intel_iommu=on"));
}

}  // namespace
}  // namespace gpt
