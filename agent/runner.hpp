// The runner: stages in order, tasks in order, notified handlers once at the end of their stage,
// the first failure stops the run unless the task ignores errors.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/module.hpp"
#include "agent/playbook.hpp"
#include "agent/state.hpp"

namespace gpt {

struct RunOptions {
  bool check = false;                  // converge with apply == false: change nothing, say what would change
  std::vector<std::string> tags;       // run only tasks with one of these (or `always`)
  std::vector<std::string> skip_tags;  // never run tasks with one of these
  bool staged = false;                 // honour the stages' reboot policies: stop when one asks for a reboot
  size_t start_stage = 0;              // the index of the first stage to run
  // The intent an interrupted run left (see StageIntent): its handlers run, and its reboot is
  // asked for, at the end of the stage of that name (or of the first stage run).
  std::optional<StageIntent> carried;
  // Apply mode: called with a stage's intent before a change that adds to it, and with nullptr
  // once the stage's handlers have run. A failure to record stops the task before it changes
  // anything.
  std::function<Status(const StageIntent*)> journal;
  // Apply's SIGINT/SIGTERM: once non-zero no task or handler starts (the one running is ended by
  // the Exec, which forwards the signal to its command).
  const std::atomic<int>* interrupt = nullptr;
  // Trial boots (agent/trial.hpp): in a stage that will stop for a reboot, handlers that regenerate
  // what the host boots are deferred (RunStats::deferred), and before the first change of a task
  // that changes the boot, `trial_gate` says whether a trial can be armed (an error fails the task
  // with nothing changed).
  bool trial = false;
  std::function<Status()> trial_gate;
};

struct TaskReport {
  std::string stage;
  std::string name;
  std::string module;
  bool handler = false;
  bool ignored = false;  // failed, with ignore_errors
  Result result;
  double seconds = 0;
};

// Ansible's RECAP counters: `ok` counts every task that did not fail or skip, changed ones too.
struct RunStats {
  int ok = 0;
  int changed = 0;
  int failed = 0;
  int skipped = 0;
  int ignored = 0;
  bool reboot_required = false;
  std::vector<std::string> reboot_stages;  // stages whose changes need a reboot
  // Staged runs: the run stopped after `stop_stage` for a reboot (in check mode: it would have).
  bool stopped_for_reboot = false;
  std::string stop_stage;
  size_t next_stage = 0;
  RebootExpectations expect;  // what the stopped stage's tasks need to hold after the reboot
  // Trial mode, the stopped stage: the handlers deferred to the trial's commit, and the files its
  // tasks and handlers wrote (path -> backup; empty: created), first write first.
  std::vector<HandlerRequest> deferred;
  std::vector<std::string> deferred_notified;
  std::vector<std::pair<std::string, std::string>> written;
};

class Reporter {
 public:
  virtual ~Reporter() = default;
  virtual void stage(const Stage& stage) = 0;
  virtual void handlers(const Stage& stage) = 0;
  virtual void task(const TaskReport& report) = 0;
  virtual void done(const RunStats& stats, int exit_code) = 0;
};

RunStats run_playbook(const Playbook& pb, Context& ctx, const RunOptions& opts, Reporter& reporter);

// The exit code Ansible and Puppet users expect: apply 0 converged, 1 failure; with --check,
// 2 when something would change.
int exit_code_for(const RunStats& stats, bool check);

}  // namespace gpt
