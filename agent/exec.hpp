// The host boundary for processes: modules describe commands, an Exec runs (or records) them.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace gpt {

struct Command {
  std::vector<std::string> argv;  // never through a shell
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::string input = {};                     // written to its stdin (closed when empty)
  const std::atomic<bool>* cancel = nullptr;  // when it turns true the process is killed, as on a timeout
  size_t max_output = 0;  // >0: more than this on stdout or stderr kills the process (what it sent past it is not kept)
  std::string display() const;  // the command line as a user would type it
};

struct ExecResult {
  int exit_code = -1;  // -1 when the process could not start or was killed
  bool timed_out = false;
  std::string out;
  std::string err;
  bool cancelled = false;   // killed because Command::cancel turned true
  bool overflowed = false;  // killed because it wrote more than Command::max_output
  bool ok() const { return exit_code == 0 && !timed_out && !overflowed; }
  // A one-line explanation of a failure: exit code or timeout, and the last line of stderr (with
  // `all_of_stderr`, every non-blank line of it joined: for tools that explain over several).
  std::string failure(bool all_of_stderr = false) const;
};

class Exec {
 public:
  virtual ~Exec() = default;
  virtual ExecResult run(const Command& cmd) = 0;
};

// Runs processes with Boost.Process: an argument vector (no shell), stdout and stderr captured,
// bounded by the command's timeout after which the process is killed.
class ProcessExec final : public Exec {
 public:
  // `interrupt`: a signal number that an apply's SIGINT/SIGTERM handler sets. The running command's
  // process group gets that signal and is waited for (the run keeps its lock until it is gone);
  // no command starts once it is set. Both end with ExecResult::cancelled.
  explicit ProcessExec(const std::atomic<int>* interrupt = nullptr) : interrupt_(interrupt) {}
  ExecResult run(const Command& cmd) override;

 private:
  const std::atomic<int>* interrupt_;
};

// Quotes one argument for display the way a POSIX shell would need it.
std::string shell_quote(const std::string& arg);

}  // namespace gpt
