// Debian's ansible-core (/usr/bin) run by tests in a scratch home and directory: no ansible.cfg,
// cache or control socket of the machine's is read or written.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/sandbox.hpp"

namespace gpt::test {

class Ansible {
 public:
  Ansible() { std::filesystem::create_directories(home_ / "cp"); }
  ProcResult run(const std::string& program, const std::vector<std::string>& args, const std::string& cwd,
                 const std::vector<std::string>& extra_env = {}) const {
    std::vector<std::string> env{"HOME=" + home_.path(), "ANSIBLE_CONFIG=" + home_ / "none.cfg",
                                 "ANSIBLE_LOCAL_TEMP=" + home_ / "tmp", "ANSIBLE_SSH_CONTROL_PATH_DIR=" + home_ / "cp",
                                 "ANSIBLE_INVENTORY_UNPARSED_WARNING=False", "ANSIBLE_LOCALHOST_WARNING=False",
                                 "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0", "ANSIBLE_RETRY_FILES_ENABLED=False",
                                 // A file no plugin parses is skipped with a warning by default;
                                 // gptagent refuses such an inventory, so here it is fatal too.
                                 "ANSIBLE_INVENTORY_UNPARSED_FAILED=True",
                                 "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=True"};
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::vector<std::string> a{"-C", cwd, program};
    a.insert(a.end(), args.begin(), args.end());
    return run_program("/usr/bin/env", a, env);
  }
  const TempDir& home() const { return home_; }

 private:
  TempDir home_;
};

}  // namespace gpt::test
