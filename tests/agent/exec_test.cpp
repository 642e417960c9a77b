#include "agent/exec.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <string>

namespace gpt {
namespace {

TEST(ProcessExec, CapturesOutputAndExitCode) {
  ProcessExec exec;
  auto ok = exec.run({{"sh", "-c", "echo out; echo err >&2; exit 3"}});
  EXPECT_EQ(ok.exit_code, 3);
  EXPECT_EQ(ok.out, "out\n");
  EXPECT_EQ(ok.err, "err\n");
  EXPECT_FALSE(ok.ok());
  EXPECT_EQ(ok.failure(), "exit code 3: err");
}

TEST(ProcessExec, ArgumentsNeverReachAShell) {
  ProcessExec exec;
  auto r = exec.run({{"printf", "%s|", "$(id)", "`id`", "a;b", "x y"}});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "$(id)|`id`|a;b|x y|");
}

TEST(ProcessExec, AHangingCommandIsKilledAtItsTimeout) {
  ProcessExec exec;
  Command cmd{{"sleep", "30"}};
  cmd.timeout = std::chrono::milliseconds(200);
  auto r = exec.run(cmd);
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.failure(), "timed out");
}

TEST(ProcessExec, ACommandSendingMoreThanItsCapIsKilledAndNotBuffered) {
  ProcessExec exec;
  Command endless{{"yes"}};  // never ends by itself
  endless.max_output = 1 << 20;
  const auto start = std::chrono::steady_clock::now();
  auto r = exec.run(endless);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(r.overflowed);
  EXPECT_FALSE(r.timed_out);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.out.size(), size_t{1} << 20);
  EXPECT_EQ(r.failure(), "more output than it may send");
  // Ending after too much is the same; at the cap is not.
  Command burst{{"sh", "-c", "head -c 1025 /dev/zero"}};
  burst.max_output = 1024;
  EXPECT_TRUE(exec.run(burst).overflowed);
  burst.max_output = 1025;
  auto fits = exec.run(burst);
  EXPECT_FALSE(fits.overflowed);
  EXPECT_TRUE(fits.ok());
  EXPECT_EQ(fits.out.size(), 1025u);
}

// A command that exits without reading its input (a host's shell refusing a copy of the agent)
// is a result, never a SIGPIPE that kills the agent; the command itself starts with SIGPIPE
// neither blocked nor ignored, and the caller's signal mask is as it was.
TEST(ProcessExec, ACommandThatDoesNotReadItsInputIsAResultNotASigpipe) {
  sigset_t before, after;
  ASSERT_EQ(::pthread_sigmask(SIG_SETMASK, nullptr, &before), 0);
  ProcessExec exec;
  Command c;
  c.argv = {"/bin/sh", "-c", "exec 0<&-; sleep 0.2; exit 3"};
  c.input.assign(32u << 20, 'x');  // far more than a pipe holds
  c.timeout = std::chrono::seconds(30);
  auto r = exec.run(c);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  ASSERT_EQ(::pthread_sigmask(SIG_SETMASK, nullptr, &after), 0);
  EXPECT_EQ(sigismember(&after, SIGPIPE), sigismember(&before, SIGPIPE));
  sigset_t pending;
  ASSERT_EQ(::sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGPIPE), 0) << "a SIGPIPE was left pending";

  Command status;
  status.argv = {"/bin/sh", "-c", "grep -E '^Sig(Blk|Ign):' /proc/self/status"};
  auto s = exec.run(status);
  ASSERT_EQ(s.exit_code, 0) << s.err;
  // SIGPIPE is signal 13: bit 0x1000 of the masks.
  for (const char* mask : {"SigBlk:", "SigIgn:"}) {
    const auto at = s.out.find(mask);
    ASSERT_NE(at, std::string::npos) << s.out;
    const unsigned long long bits = std::stoull(s.out.substr(at + std::string(mask).size()), nullptr, 16);
    EXPECT_EQ(bits & 0x1000u, 0u) << mask << " of the command has SIGPIPE: " << s.out;
  }
}

TEST(ProcessExec, AMissingProgramIsAClearFailure) {
  ProcessExec exec;
  auto r = exec.run({{"gptagent-no-such-program"}});
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_EQ(r.failure(), "could not run: gptagent-no-such-program: command not found");
}

TEST(Command, DisplayQuotesLikeAShell) {
  EXPECT_EQ((Command{{"grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"}}.display()),
            "grub2-mkconfig -o /boot/grub2/grub.cfg");
  EXPECT_EQ((Command{{"echo", "a b", "it's", ""}}.display()), "echo 'a b' 'it'\\''s' ''");
}

}  // namespace
}  // namespace gpt
