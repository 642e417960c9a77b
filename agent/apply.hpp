// `gptagent apply` and `gptagent status`: a run over the stages, with the reboot cycle around it.
#pragma once

#include <atomic>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace gpt {

class Exec;

struct ApplyOptions {
  std::string playbook;
  std::string root = "/";
  nlohmann::json extra_vars = nlohmann::json::object();
  bool check = false, diff = false, json = false, no_wait = false;
  std::string color = "auto";
  std::vector<std::string> tags, skip_tags;
  bool reboot = false;       // reboot the host when a stage stops for one (never under --root)
  bool reset_state = false;  // forget a recorded reboot and start from the first stage
  // Trial boots (agent/trial.hpp): a stage's boot change is booted once before it becomes the
  // default when the host is rebooted for it: by this run (--reboot) or by its caller (--trial:
  // the fleet controller). no_trial commits it directly.
  bool trial = false, no_trial = false;
  // The playbook's text when it is the agent's own (gptagent revert's), `playbook` its name.
  std::string playbook_text;
  // Tests: the host's commands go to the given Exec under --root too (it stands in for the host).
  bool system_commands = false;
  std::string from_stage;  // start at this stage, whatever was recorded
  std::string connect;     // libvirt URI for libvirt modules that give none
  // After the run: its metrics for node_exporter's textfile collector at this host path (under
  // the root), and the run recorded for `gptagent status` (kLastRunPath).
  std::string textfile;
};

// Exit codes: 0 converged, 1 failure or bad input, 2 drift (check), 3 stopped for (or waiting
// for) a reboot.
// An apply interrupted by SIGINT or SIGTERM exits 128 + the signal, as shells say (130 for Ctrl-C),
// once the command it was running has ended.
int run_apply(const ApplyOptions& opts, Exec& exec, std::ostream& out, std::ostream& err);
// The signal that interrupted the apply running (0: none): what its ProcessExec watches.
const std::atomic<int>& apply_interrupt();
int run_status(const std::string& root, bool json, std::ostream& out, std::ostream& err);
// `gptagent resume`: applies the playbook the state file names (a run that stopped for a reboot,
// or was interrupted), arming a trial for a later stage's boot change but rebooting nothing; 0
// with a note when there is nothing to finish.
// `gptagent revert`: every file the agent changed put back as it was before its first change
// (modules/restore_files.cpp), grub.cfg and the initramfs regenerated, as a run of the agent's own
// playbook: --check, --diff, --reboot and the trial boot as for any apply.
int run_revert(ApplyOptions o, Exec& exec, std::ostream& out, std::ostream& err);
constexpr const char* kRevertPlaybook = "(gptagent revert)";

// `base` gives the root (and, in tests, system_commands).
int run_resume(const ApplyOptions& base, Exec& exec, std::ostream& out, std::ostream& err);

}  // namespace gpt
