#include "agent/runner.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <set>

namespace gpt {
namespace {

bool selected(const Task& t, const RunOptions& opts) {
  auto has = [&](const std::vector<std::string>& set, const std::string& tag) {
    return std::find(set.begin(), set.end(), tag) != set.end();
  };
  for (const auto& tag : t.tags)
    if (has(opts.skip_tags, tag)) return false;
  if (opts.tags.empty()) return true;
  for (const auto& tag : t.tags)
    if (tag == "always" || has(opts.tags, tag)) return true;
  return false;
}

// The files a change wrote (FileChanges::apply's data): path -> backup, empty when created; the
// first write of a path is the one that holds what was there before the stage.
void note_written(std::vector<std::pair<std::string, std::string>>& written, const Result& r) {
  if (r.status != Outcome::changed) return;
  auto add = [&](const std::string& path, const std::string& backup) {
    if (std::none_of(written.begin(), written.end(), [&](const auto& w) { return w.first == path; }))
      written.emplace_back(path, backup);
  };
  if (r.data.contains("backups") && r.data["backups"].is_object())
    for (const auto& [path, backup] : r.data["backups"].items())
      if (backup.is_string()) add(path, backup.get<std::string>());
  if (r.data.contains("created") && r.data["created"].is_array())
    for (const auto& path : r.data["created"])
      if (path.is_string()) add(path.get<std::string>(), "");
}

void count(RunStats& stats, const TaskReport& r) {
  switch (r.result.status) {
    case Outcome::ok:
      ++stats.ok;
      break;
    case Outcome::changed:
      ++stats.ok;
      ++stats.changed;
      break;
    case Outcome::skipped:
      ++stats.skipped;
      break;
    case Outcome::failed:
      r.ignored ? ++stats.ignored : ++stats.failed;
      break;
  }
}

TaskReport converge_task(const Stage& stage, const std::string& name, const ModuleDef& def, const nlohmann::json& args,
                         Context& ctx, bool apply, bool handler) {
  TaskReport rep{stage.name, name, def.name, handler, false, {}, 0};
  auto start = std::chrono::steady_clock::now();
  rep.result = converge_module(def, ctx, args, apply);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::debug("{} [{}] {}: {} in {:.2f} ms", handler ? "handler" : "task", name, def.name,
                outcome_name(rep.result.status), rep.seconds * 1000);
  return rep;
}

}  // namespace

RunStats run_playbook(const Playbook& pb, Context& ctx, const RunOptions& opts, Reporter& reporter) {
  RunStats stats;
  const bool apply = !opts.check;
  size_t carry_index = opts.start_stage;
  if (opts.carried)
    for (size_t i = opts.start_stage; i < pb.stages.size(); ++i)
      if (pb.stages[i].name == opts.carried->stage) carry_index = i;

  std::optional<Status> trial_ok;  // the gate's answer, asked once per run
  for (size_t index = opts.start_stage; index < pb.stages.size(); ++index) {
    const Stage& stage = pb.stages[index];
    reporter.stage(stage);
    std::vector<std::pair<std::string, std::string>> written;
    std::vector<HandlerRequest> deferred;
    std::vector<std::string> deferred_notified;
    RebootExpectations stage_expect;
    StageIntent intent{stage.name, {}, {}, false};  // handlers (module ones in order of request), reboot
    bool journaled = false;                         // the state file holds this stage's intent
    if (opts.carried && index == carry_index) {
      intent.add(opts.carried->handlers, opts.carried->notified, opts.carried->reboot);
      journaled = true;
      spdlog::info("an interrupted run left work for stage {}: {} handler(s){}", stage.name,
                   intent.handlers.size() + intent.notified.size(), intent.reboot ? ", a reboot" : "");
    }
    bool stop = false;

    const auto interrupted = [&] { return opts.interrupt && opts.interrupt->load() != 0; };
    for (const Task& task : stage.tasks) {
      if (interrupted()) {
        stop = true;
        break;
      }
      if (!selected(task, opts)) continue;
      TaskReport rep;
      if (!task.when) {
        rep = TaskReport{stage.name, task.name, task.module->name,
                         false,      false,     Result::skipped("condition is false: " + task.when_text),
                         0};
      } else if (apply && opts.journal && (task.module->sets_in_motion() || !task.notify.empty())) {
        // Predict first: a task that will change records what its change sets in motion before
        // making it; one that will not is done (check mode and apply agree on `ok`). Modules
        // whose changes set nothing in motion (no handler, no reboot) need no prediction.
        rep = converge_task(stage, task.name, *task.module, task.args, ctx, false, false);
        // A boot change in a stage that may stop for a reboot is booted as a trial: the host must
        // be able to boot one before anything is changed.
        if (rep.result.status == Outcome::changed && opts.trial && opts.trial_gate && task.module->reboot &&
            stage.reboot != RebootPolicy::never) {
          if (!trial_ok) trial_ok = opts.trial_gate();
          if (!*trial_ok) rep.result = Result::failed(trial_ok->error());
          // A trial that does not come up puts the stage's files back from their backups.
          const json& a = task.args;
          if (*trial_ok && a.is_object() && a.contains("backup") && a["backup"].is_boolean() &&
              !a["backup"].get<bool>())
            rep.result = Result::failed(
                "backup: false: this change is booted as a trial, and a trial that does not come up puts the "
                "stage's files back from their backups, of which this task would keep none; drop backup: false, or "
                "run with --no-trial to commit the change directly");
        }
        if (rep.result.status == Outcome::changed) {
          StageIntent next = intent;
          Status recorded;
          if (next.add(rep.result.handlers, task.notify, rep.result.reboot_required)) recorded = opts.journal(&next);
          if (recorded) {
            intent = std::move(next);
            journaled = true;
            rep = converge_task(stage, task.name, *task.module, task.args, ctx, true, false);
          } else {
            rep.result = Result::failed("cannot record the run's intent before changing anything: " + recorded.error());
          }
        }
      } else {
        rep = converge_task(stage, task.name, *task.module, task.args, ctx, apply, false);
      }
      const Result& r = rep.result;
      if (apply) note_written(written, r);
      if (r.status == Outcome::failed && task.ignore_errors) rep.ignored = true;
      if (r.status == Outcome::changed) intent.add(r.handlers, task.notify, r.reboot_required);
      count(stats, rep);
      reporter.task(rep);
      stage_expect.merge(r.expect);
      if (r.status == Outcome::failed && !task.ignore_errors) {
        stop = true;
        break;
      }
    }
    if (stop) break;
    const std::vector<HandlerRequest>& builtin = intent.handlers;
    const std::set<std::string> notified(intent.notified.begin(), intent.notified.end());
    bool stage_reboot = intent.reboot;

    // Handlers: the ones modules asked for first (they finish the module's own work, such as
    // regenerating grub.cfg), then the user's in the order they are defined.
    std::vector<const Task*> user;
    for (const auto* list : {&stage.handlers, &pb.handlers})
      for (const Task& h : *list)
        if (notified.count(h.name) &&
            std::none_of(user.begin(), user.end(), [&](const Task* u) { return u->name == h.name; }))
          user.push_back(&h);
    if (!builtin.empty() || !user.empty()) reporter.handlers(stage);
    // Trial mode: a stage that will stop for a reboot leaves what the host boots as it is until
    // the trial has booted and passed its checks.
    const bool trial_stage =
        opts.trial && apply && opts.staged &&
        (stage.reboot == RebootPolicy::always || (stage.reboot == RebootPolicy::when_needed && stage_reboot));
    const auto defer = [&](const std::string& name, const std::string& module) {
      TaskReport rep{stage.name, name,
                     module,     true,
                     false,      Result::skipped("deferred: runs when the trial boot has passed the stage's checks"),
                     0};
      count(stats, rep);
      reporter.task(rep);
    };
    for (const auto& h : builtin) {
      if (interrupted()) {
        stop = true;
        break;
      }
      const ModuleDef* def = Registry::instance().find(h.module);
      if (trial_stage && def && def->regenerates_boot) {
        deferred.push_back(h);
        defer(h.name, h.module);
        continue;
      }
      // A request is checked like a task's arguments: a module that asks for a wrong one fails here.
      const auto args = def ? handler_request_args(*def, h) : Expected<json>(Error{"no module " + h.module});
      TaskReport rep = args ? converge_task(stage, h.name, *def, *args, ctx, apply, true)
                            : TaskReport{stage.name, h.name, h.module, true, false, Result::failed(args.error()), 0};
      if (rep.result.status == Outcome::changed && rep.result.reboot_required) stage_reboot = true;
      if (apply) note_written(written, rep.result);
      count(stats, rep);
      reporter.task(rep);
      if (rep.result.status == Outcome::failed) {
        stop = true;
        break;
      }
    }
    for (const Task* h : user) {
      if (stop || interrupted()) {
        stop = true;
        break;
      }
      if (trial_stage && h->when && h->module->regenerates_boot) {
        deferred_notified.push_back(h->name);
        defer(h->name, h->module->name);
        continue;
      }
      TaskReport rep = h->when ? converge_task(stage, h->name, *h->module, h->args, ctx, apply, true)
                               : TaskReport{stage.name, h->name, h->module->name,
                                            true,       false,   Result::skipped("condition is false: " + h->when_text),
                                            0};
      if (rep.result.status == Outcome::failed && h->ignore_errors) rep.ignored = true;
      if (apply) note_written(written, rep.result);
      count(stats, rep);
      reporter.task(rep);
      if (rep.result.status == Outcome::failed && !h->ignore_errors) stop = true;
    }
    if (stage_reboot) {
      stats.reboot_required = true;
      stats.reboot_stages.push_back(stage.name);
    }
    if (stop) break;  // the intent stays recorded: the next run finishes the handlers
    const bool wants_reboot =
        stage.reboot == RebootPolicy::always || (stage.reboot == RebootPolicy::when_needed && stage_reboot);
    // In check mode only a change makes a reboot: `always` on a converged host is no drift.
    const bool stops = opts.staged && wants_reboot && (!opts.check || stage_reboot);
    // A stage that stops for a reboot hands over to the caller, which records the wait in place
    // of the intent (one rename); otherwise the finished stage's intent is cleared.
    if (journaled && !stops && apply && opts.journal) {
      if (auto s = opts.journal(nullptr); !s) {
        TaskReport rep{stage.name, "finish the stage", "state", true, false, Result::failed(s.error()), 0};
        count(stats, rep);
        reporter.task(rep);
        break;
      }
    }
    if (stops) {
      stats.stopped_for_reboot = true;
      stats.stop_stage = stage.name;
      stats.next_stage = index + 1;
      stats.expect = std::move(stage_expect);
      stats.deferred = std::move(deferred);
      stats.deferred_notified = std::move(deferred_notified);
      stats.written = std::move(written);
      break;
    }
  }
  return stats;
}

int exit_code_for(const RunStats& stats, bool check) {
  if (stats.failed > 0) return 1;
  if (!check && stats.stopped_for_reboot) return 3;
  if (check && stats.changed > 0) return 2;
  return 0;
}

}  // namespace gpt
