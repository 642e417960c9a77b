// Runs a playbook in-process on a root with a recording process runner: what every module test
// uses to prove `changed` then `ok`, and that --check predicted the first run exactly.
#pragma once

#include <string>
#include <vector>

#include "agent/runner.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt::test {

struct Converged {
  std::vector<std::string> load_errors;
  RunStats stats;
  std::vector<TaskReport> tasks;
  std::vector<std::string> commands;  // what the recorder was asked to run
  int exit_code = -1;
  // "changed: name" lines with diffs: what check mode must predict exactly.
  std::vector<std::string> changes() const;
};

Converged converge_root(const std::string& root, const std::string& playbook_yaml, bool check,
                        bool allow_system_commands = true);

}  // namespace gpt::test
