// What the trial-boot tests share: the playbooks (a good boot change, the walkthrough's parameters
// and vfio then a stage that needs them; one with a parameter that stops the boot, the kernel
// panics without an init), a boot with panic fallback, and a count of recorded commands.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "agent/apply.hpp"
#include "agent/exec.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt::test {

inline constexpr const char* kTrialGood = R"(stages:
  - name: boot
    reboot: when_needed
    tasks:
      - name: IOMMU on the kernel command line
        kernel_cmdline:
          iommu: auto
          present: [iommu=pt]
      - name: vfio-pci claims the GPU at boot
        vfio:
          devices: ["0000:01:00.0"]
  - name: after
    tasks:
      - name: the GPU on vfio-pci now
        vfio_bind:
          gpus: ["0000:01:00.0"]
)";

inline constexpr const char* kTrialBad = R"(stages:
  - name: boot
    reboot: when_needed
    tasks:
      - name: a parameter that stops the boot
        kernel_cmdline:
          present: [rdinit=/gptagent-missing]
)";

// A machine's boot as far as a trial needs it: `loader` plays the boot loader (the command line it
// boots, a one-shot cleared as it is taken). A kernel without its init panics, and panic=N resets
// the machine into the loader again. Then the rest of the boot as sandbox-reboot plays it
// (modules, vfio-pci), and the command line in /proc/cmdline.
inline std::string boot_with_fallback(const std::string& root, const std::function<std::string()>& loader) {
  std::string cmdline;
  for (int attempt = 0; attempt < 3; ++attempt) {
    cmdline = loader();
    if (cmdline.find("rdinit=/gptagent-missing") == std::string::npos) break;
    EXPECT_NE(cmdline.find(" panic="), std::string::npos)
        << "a panic without panic= would hang the machine: " << cmdline;
  }
  auto r = sandbox_reboot(root);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  write(root + "/proc/cmdline", cmdline + "\n");
  return cmdline;
}

// One in-process `gptagent apply` of `yaml` (written to dir/host.yaml) on the tree at `root`, the
// host's commands played by `exec`, as a trial (or --no-trial).
struct ApplyRun {
  int code;
  std::string out, err;
};
inline ApplyRun apply_on_tree(const TempDir& dir, const std::string& root, Exec& exec, const std::string& yaml,
                              bool trial) {
  write(dir / "host.yaml", yaml);
  ApplyOptions o;
  o.playbook = dir / "host.yaml";
  o.root = root;
  o.color = "never";
  o.trial = trial;
  o.no_trial = !trial;
  o.system_commands = true;
  std::ostringstream out, err;
  const int code = run_apply(o, exec, out, err);
  return {code, out.str(), err.str()};
}

// How many of the recorded commands start with `prefix`.
inline size_t count_of(const std::vector<std::string>& commands, const std::string& prefix) {
  return std::count_if(commands.begin(), commands.end(), [&](const std::string& c) { return c.rfind(prefix, 0) == 0; });
}

}  // namespace gpt::test
