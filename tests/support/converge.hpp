// Runs a playbook in-process on a root with a recording process runner: what every module test
// uses to prove `changed` then `ok`, and that --check predicted the first run exactly.
#pragma once

#include <string>
#include <vector>

#include "agent/runner.hpp"
#include "tests/support/package_managers.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt::test {

struct Converged {
  std::vector<std::string> load_errors;
  RunStats stats;
  std::vector<TaskReport> tasks;
  std::vector<std::string> commands;  // what the recorder was asked to run
  std::vector<std::string> sysfs_writes;
  int exit_code = -1;
  // "changed: name" lines with diffs: what check mode must predict exactly.
  std::vector<std::string> changes() const;
};

// The kernel's side of sysfs writes on a fixture tree: records them; `unbind` drops the device's
// driver link, `drivers_probe` links it to the driver its driver_override names.
class SimulatedSysfs final : public gpt::SysfsWriter {
 public:
  Status write(const Root& root, const std::string& path, const std::string& value) override;
  std::vector<std::string> writes;  // "path=value"
};

// A reporter that keeps every task report.
class Collect final : public Reporter {
 public:
  explicit Collect(std::vector<TaskReport>& out) : out_(out) {}
  void stage(const Stage&) override {}
  void handlers(const Stage&) override {}
  void task(const TaskReport& r) override { out_.push_back(r); }
  void done(const RunStats&, int) override {}

 private:
  std::vector<TaskReport>& out_;
};

Converged converge_root(const std::string& root, const std::string& playbook_yaml, bool check,
                        bool allow_system_commands = true, const nlohmann::json& extra_vars = nlohmann::json::object());
// The same run with another process runner: one that changes the tree as the real tools would.
// Converged::commands stays empty (the runner keeps its own record).
Converged converge_root_with(Exec& exec, const std::string& root, const std::string& playbook_yaml, bool check,
                             bool allow_system_commands = true);

// The host's side of a command, faked at the host boundary: records every command; for
// `modprobe -a M...` lists the modules in the root's /proc/modules as the kernel would; hands the
// package managers' commands to their stand-ins (tests/support/package_managers.hpp); and runs
// the real systemctl where it works on the root's files only (`systemctl --root=ROOT`).
class SimulatedKernelExec final : public gpt::Exec {
 public:
  explicit SimulatedKernelExec(std::string root) : root_(std::move(root)), packages_(root_) {}
  ExecResult run(const Command& cmd) override;
  std::vector<std::string> commands;

 private:
  std::string root_;
  PackageManagers packages_;
  ProcessExec real_;
};

}  // namespace gpt::test
