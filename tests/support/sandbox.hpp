// Test support: throw-away host trees, a recording process runner, and the agent run as a process.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "agent/exec.hpp"

namespace gpt::test {

// A temporary directory removed with everything in it when the object goes.
class TempDir {
 public:
  TempDir();
  explicit TempDir(const std::string& parent);  // made in `parent` (a chroot's /tmp) instead
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

void write(const std::string& path, const std::string& content, int mode = 0644);
std::string slurp(const std::string& path);
// What the file holds, or "" when it cannot be read. With read(2), not a stream: /proc/PID/* of a
// process that exits between the open and the read fails with ESRCH, which libstdc++'s
// istreambuf_iterator throws out of underflow (a test aborted in LoopbackSshd's destructor, and
// its orphaned sshd kept ctest's pipe open).
std::string slurp_or_empty(const std::string& path);
bool exists(const std::string& path);
void copy_tree(const std::string& from, const std::string& to);
std::string source_path(const std::string& rel);  // a file of the source tree

// Every regular file and link under `dir`: relative path -> mode and content (or link target).
std::map<std::string, std::string> snapshot(const std::string& dir);
// The paths where two snapshots differ, a line each ("" when equal): the snapshots themselves are
// too long to print.
std::string differences(const std::map<std::string, std::string>& a, const std::map<std::string, std::string>& b);
// A host tree's files as a person sees them: its snapshot without the agent's state
// (var/lib/gptagent), the run lock (run/), the kernel's /proc and /sys, the agent's backups, and
// directories left holding only backups.
std::map<std::string, std::string> host_files(const std::string& root);

// A sample host tree (see playbooks/sandbox/) copied into a fresh temp dir.
struct SampleHost {
  explicit SampleHost(const std::string& name = "ubuntu-22.04");
  TempDir dir;
  std::string root() const { return dir.path(); }
  std::string file(const std::string& host_path) const { return dir.path() + host_path; }
};

struct ProcResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs a program with these arguments (never through a shell), env entries as NAME=VALUE.
ProcResult run_program(const std::string& program, const std::vector<std::string>& args,
                       const std::vector<std::string>& env = {});
// Runs the built gptagent binary.
ProcResult run_agent(const std::vector<std::string>& args, const std::vector<std::string>& env = {});
// Polls `done` until it holds (true) or `limit` has passed (false).
bool wait_until(const std::function<bool()>& done, std::chrono::seconds limit = std::chrono::seconds(60));
// Boots a sample host tree the way scripts/sandbox-reboot does: new boot_id, /proc/cmdline
// from its grub files, modules and vfio-pci bindings from its configuration.
ProcResult sandbox_reboot(const std::string& root);

// Records every command instead of running it; answers with a programmed result.
class RecordingExec final : public gpt::Exec {
 public:
  ExecResult run(const Command& cmd) override {
    commands.push_back(cmd.display());
    return next;
  }
  std::vector<std::string> commands;
  ExecResult next{0, false, "", ""};
};

}  // namespace gpt::test
