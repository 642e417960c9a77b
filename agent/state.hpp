// Reboot-aware staged runs: what a run records when it stops for a reboot, and the checks the
// first run after the reboot makes before it goes on.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/expected.hpp"
#include "agent/module.hpp"

namespace gpt {

class Root;
struct Facts;

// What must be true after the reboot, gathered from the stage's tasks (Result::expect).
struct RebootExpectations {
  std::vector<std::string> cmdline_present;  // parameters /proc/cmdline must hold
  std::vector<std::string> cmdline_absent;   // names (any value) or name=value it must not hold
  std::vector<std::string> modules;          // loaded or built in
  std::vector<std::string> vfio_devices;     // bound to vfio-pci
  void merge(const nlohmann::json& expect);
  nlohmann::json to_json() const;
  static RebootExpectations from_json(const nlohmann::json& j);
};

// What a stage has set in motion and not finished: the handlers its changes asked for (module
// handlers, and the user's by name) and whether those changes need a reboot. A run records it
// before each change, so a run killed between a change and its handlers leaves the work to the
// next run instead of losing it (Ansible loses it: a handler not run is forgotten).
struct StageIntent {
  std::string stage;
  std::vector<HandlerRequest> handlers;
  std::vector<std::string> notified;
  bool reboot = false;
  bool empty() const { return handlers.empty() && notified.empty() && !reboot; }
  // Adds what a change asks for; true when that added anything.
  bool add(const std::vector<HandlerRequest>& more, const std::vector<std::string>& names, bool needs_reboot);
};

// A stage's boot change booted once before it becomes the default (agent/trial.hpp): what was
// armed, what the commit runs, and what undoing it puts back.
struct TrialRecord {
  std::string id;                   // the marker on the trial's command line: gptagent.trial=ID
  std::string grub_dir;             // /boot/grub or /boot/grub2: custom.cfg and grubenv are there
  std::string initrd;               // the trial's own initramfs (host path); empty when the initramfs did not change
  bool custom_cfg_created = false;  // custom.cfg did not exist before the trial: it goes with it
  std::string entry;                // BootLoaderSpec: the trial's entry file (kTrialBlsEntry); empty on GRUB's own
  std::string loader;               // "systemd-boot" (grub_dir empty, entry in a loader directory); empty: GRUB
  std::vector<HandlerRequest> deferred;        // module handlers the commit runs (grub_config, initramfs)
  std::vector<std::string> deferred_notified;  // the playbook's handlers the commit runs, by name
  // The stage's files, for undoing it: path -> its backup (empty: the stage created the file).
  std::vector<std::pair<std::string, std::string>> written;
  std::string note;  // what arming it said beyond the entry (not recorded)
  nlohmann::json to_json() const;
  // Refuses what the agent would never record (a path outside what a trial touches, a backup that
  // is not the file's own), so a state file cannot make it remove or overwrite another file.
  static Expected<TrialRecord> from_json(const nlohmann::json& j);
};

// /var/lib/gptagent/state.json holds one of two things, switched by one atomic rename:
// - running: a stage's intent (above), while its changes are being made;
// - waiting for reboot: the stage that stopped for one and what must hold after it.
struct RunState {
  bool waiting = true;          // false: `running`, an unfinished stage's intent
  std::string playbook;         // absolute path
  std::string playbook_sha256;  // of its bytes
  std::string stage;            // the stage that asked for the reboot (or is running)
  size_t next_stage = 0;        // where the run goes on after the reboot
  std::string boot_id;          // of the boot that asked
  std::string recorded_at;      // local time, for people
  RebootExpectations expect;
  StageIntent intent;                // running only
  std::optional<TrialRecord> trial;  // waiting only: the reboot boots this trial once
  // What load_state dropped from the recorded intent and why: the file is not trusted to name
  // commands (see unsafe_handler_request); nothing of a dropped handler runs.
  std::vector<std::string> dropped;
  nlohmann::json to_json() const;
};

constexpr const char* kStatePath = "/var/lib/gptagent/state.json";

// nullopt when no run waits for a reboot; an error naming the file when it does not parse.
Expected<std::optional<RunState>> load_state(const Root& root);
Status save_state(const Root& root, const RunState& state);
Status clear_state(const Root& root);

// The last run made with --textfile (the drift timer's `apply --check`), for `gptagent status`:
// /var/lib/gptagent/last-run.json, beside the state and apart from it (the state exists only while
// a run is unfinished, and a check changes no run's state).
struct LastRun {
  std::string playbook;  // absolute path
  bool check = false;
  int64_t finished_at = 0;  // Unix time
  double duration_seconds = 0;
  int exit_code = 1;
  int ok = 0, changed = 0, failed = 0, skipped = 0;
  bool waiting_for_reboot = false;  // a recorded reboot not yet made (the run changed nothing)
  bool drift() const { return changed > 0 || waiting_for_reboot; }
  nlohmann::json to_json() const;
};

constexpr const char* kLastRunPath = "/var/lib/gptagent/last-run.json";

// nullopt when no run was recorded; an error naming the file when it does not parse.
Expected<std::optional<LastRun>> load_last_run(const Root& root);
Status save_last_run(const Root& root, const LastRun& run);

struct Check {
  bool ok;
  std::string what;  // "kernel command line has intel_iommu=on"
  std::string why;   // the diagnosis when not ok
};
// The recorded expectations against the facts of the running (new) boot.
std::vector<Check> verify_after_reboot(const RebootExpectations& expect, const Facts& facts);

std::string sha256_hex(std::string_view data);

}  // namespace gpt
