#include "agent/exec.hpp"

// Boost.Process starts children with vfork when asked (bp::posix::use_vfork), but only where its
// config sees an old X/Open: told here that glibc has vfork. A fork of this multi-threaded
// process copies its page tables, and every page either side then writes is copied again while
// the other threads are interrupted to flush their TLBs: a fleet's controller spent half its CPU
// time there. vfork shares the memory until the child's execve; the child does nothing but the
// handlers' dup2, setpgid, sigprocmask and close before it.
#define BOOST_POSIX_HAS_VFORK 1
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/posix.hpp>
#include <limits>

#include "agent/text.hpp"

namespace gpt {

namespace bp = boost::process;

namespace {

// While a command runs, SIGPIPE is blocked in the thread that feeds its input: a command that
// exits before reading all of it (a host's shell that refuses a copy) makes that write fail with
// EPIPE instead of killing the agent. Its pending SIGPIPE is taken back and the mask restored at
// the end; the command itself starts with SIGPIPE unblocked (sigpipe_unblocked_in_child).
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    const timespec now{0, 0};
    sigset_t pending;
    while (::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1 &&
           ::sigtimedwait(&pipe_, nullptr, &now) == SIGPIPE) {
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_, old_;
};

// In the child, between fork and exec (async-signal-safe calls only).
void unblock_sigpipe() {
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  ::sigprocmask(SIG_UNBLOCK, &pipe, nullptr);
}

}  // namespace

std::string shell_quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789_-+=./:,@%") == std::string::npos)
    return arg;
  std::string out = "'";
  for (char c : arg) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string Command::display() const {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    out += shell_quote(a);
  }
  return out;
}

std::string ExecResult::failure(bool all_of_stderr) const {
  std::string msg = timed_out       ? "timed out"
                    : overflowed    ? "more output than it may send"
                    : cancelled     ? "interrupted"
                    : exit_code < 0 ? "could not run"
                                    : "exit code " + std::to_string(exit_code);
  std::string text;
  if (all_of_stderr) {
    for (std::string_view line : lines(err)) {
      line = trim(line);
      if (!line.empty()) text += (text.empty() ? "" : " ") + std::string(line);
    }
  } else {
    std::string_view e = err;
    while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.remove_suffix(1);
    if (auto nl = e.find_last_of('\n'); nl != std::string_view::npos) e = e.substr(nl + 1);
    text = e;
  }
  if (!text.empty()) msg += ": " + text;
  return msg;
}

namespace {

// Reads a pipe to its end, or until `cap` bytes are in `text` (then stops reading).
struct PipeReader {
  bp::async_pipe& pipe;
  size_t cap;
  std::string text;
  std::vector<char> chunk = std::vector<char>(65536);
  void start() {
    pipe.async_read_some(boost::asio::buffer(chunk), [this](const boost::system::error_code& ec, size_t n) {
      text.append(chunk.data(), std::min(n, cap - text.size()));
      if (!ec && text.size() < cap) start();
    });
  }
};

}  // namespace

ExecResult ProcessExec::run(const Command& cmd) {
  ExecResult res;
  if (cmd.argv.empty()) {
    res.err = "empty command";
    return res;
  }
  boost::filesystem::path exe =
      cmd.argv[0].find('/') == std::string::npos ? bp::search_path(cmd.argv[0]) : boost::filesystem::path(cmd.argv[0]);
  if (exe.empty()) {
    res.err = cmd.argv[0] + ": command not found";
    return res;
  }
  if (interrupt_ && interrupt_->load() != 0) {
    res.cancelled = true;
    return res;
  }
  spdlog::debug("run: {}", cmd.display());
  try {
    boost::asio::io_context ios;
    // Read into strings that stop growing one byte past the cap: a command that sends more is
    // killed, never buffered whole (a hostile host could send without end).
    const size_t cap = cmd.max_output > 0 ? cmd.max_output + 1 : std::numeric_limits<size_t>::max();
    bp::async_pipe out_pipe(ios), err_pipe(ios);
    PipeReader out_reader{out_pipe, cap, {}}, err_reader{err_pipe, cap, {}};
    std::string& out = out_reader.text;
    std::string& err = err_reader.text;
    auto overflowed = [&] {
      return cmd.max_output > 0 && (out.size() > cmd.max_output || err.size() > cmd.max_output);
    };
    out_reader.start();
    err_reader.start();
    std::vector<std::string> args(cmd.argv.begin() + 1, cmd.argv.end());
    // Its own process group: a timeout kills what the command started too (a child that kept
    // stdout or stderr open would keep its output from us, and run on after the agent).
    bp::group group;
    SigpipeBlocked sigpipe_blocked;
    const auto sigpipe_unblocked_in_child = bp::extend::on_exec_setup = [](auto&) { unblock_sigpipe(); };
    bp::child child =
        cmd.input.empty()
            ? bp::child(exe, bp::args(args), bp::std_in.close(), bp::std_out > out_pipe, bp::std_err > err_pipe, ios,
                        group, sigpipe_unblocked_in_child, bp::posix::use_vfork)
            : bp::child(exe, bp::args(args), bp::std_in<boost::asio::buffer(cmd.input), bp::std_out> out_pipe,
                        bp::std_err > err_pipe, ios, group, sigpipe_unblocked_in_child, bp::posix::use_vfork);
    // Until it ends or its time is up; a cancel flag is looked at ten times a second.
    const auto deadline = std::chrono::steady_clock::now() + cmd.timeout;
    const std::chrono::steady_clock::duration step =
        cmd.cancel || interrupt_ || cmd.max_output > 0
            ? std::chrono::steady_clock::duration(std::chrono::milliseconds(100))
            : cmd.timeout;
    const auto signalled = [&] { return interrupt_ ? interrupt_->load() : 0; };
    for (auto now = std::chrono::steady_clock::now();
         !ios.stopped() && !(cmd.cancel && cmd.cancel->load()) && !signalled() && !overflowed() && now < deadline;
         now = std::chrono::steady_clock::now())
      ios.run_for(std::min(step, deadline - now));
    res.overflowed = overflowed();  // a command may also have ended after sending too much
    if (!ios.stopped() && signalled()) {
      // Ctrl-C or SIGTERM on the agent: its command gets the same and is waited for, so that
      // nothing it writes goes on after the run (and its lock) ended. One that ignores it for
      // half a minute is killed.
      ::kill(-group.native_handle(), signalled());
      const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (!ios.stopped() && std::chrono::steady_clock::now() < grace) ios.run_for(std::chrono::milliseconds(100));
      std::error_code ec;
      if (!ios.stopped()) {
        group.terminate(ec);
        ios.run_for(std::chrono::seconds(2));
      }
      child.wait(ec);
      res.cancelled = true;
      res.exit_code = -1;
    } else if (!ios.stopped()) {
      res.cancelled = !res.overflowed && cmd.cancel && cmd.cancel->load();
      res.timed_out = !res.cancelled && !res.overflowed;
      std::error_code ec;
      group.terminate(ec);
      child.terminate(ec);
      ios.run_for(std::chrono::seconds(2));
      res.exit_code = -1;
    } else {
      child.wait();
      res.exit_code = child.exit_code();
      group.detach();  // what it left running on purpose (an ssh ControlMaster) stays
    }
    if (cmd.max_output > 0) {
      out.resize(std::min(out.size(), cmd.max_output));
      err.resize(std::min(err.size(), cmd.max_output));
    }
    res.out = std::move(out);
    res.err = std::move(err);
  } catch (const std::exception& e) {
    res.exit_code = -1;
    res.err = cmd.argv[0] + ": " + e.what();
  }
  spdlog::debug("exit {}{}: {}", res.exit_code, res.timed_out ? " (timed out)" : "", cmd.argv[0]);
  return res;
}

}  // namespace gpt
