#include "agent/apply.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>

#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "agent/kernel_guard.hpp"
#include "agent/metrics.hpp"
#include "agent/playbook.hpp"
#include "agent/report.hpp"
#include "agent/runner.hpp"
#include "agent/signals.hpp"
#include "agent/state.hpp"
#include "agent/text.hpp"
#include "agent/trial.hpp"

namespace gpt {
namespace {

std::string now_text() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string absolute(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

void add(RunStats& into, const RunStats& s) {
  into.ok += s.ok;
  into.changed += s.changed;
  into.failed += s.failed;
  into.skipped += s.skipped;
  into.ignored += s.ignored;
  into.reboot_required = into.reboot_required || s.reboot_required;
  into.reboot_stages.insert(into.reboot_stages.end(), s.reboot_stages.begin(), s.reboot_stages.end());
  into.stopped_for_reboot = s.stopped_for_reboot;
  into.stop_stage = s.stop_stage;
  into.next_stage = s.next_stage;
  into.expect = s.expect;
  into.deferred = s.deferred;
  into.deferred_notified = s.deferred_notified;
  into.written = s.written;
}

// SIGINT and SIGTERM during an apply's changes: noted here, the running command gets the signal
// from its Exec and is waited for, and no task starts after it.
std::atomic<int> g_interrupt{0};
static_assert(std::atomic<int>::is_always_lock_free);  // stored from a signal handler

extern "C" void on_apply_signal(int sig) { g_interrupt.store(sig); }

// What a run found, beyond its exit code: for --textfile.
struct RunSeen {
  RunStats stats;
  bool waiting_for_reboot = false;
};

// "drift check of /etc/gptagent/host.yaml: 3 tasks would change, exit 2": one line for the journal
// and for `gptagent status`.
std::string run_summary(const LastRun& r) {
  auto tasks = [](int n) { return std::to_string(n) + (n == 1 ? " task" : " tasks"); };
  std::string what;
  if (r.failed > 0)
    what = tasks(r.failed) + " failed";
  else if (r.waiting_for_reboot)
    what = "waiting for a reboot, nothing was checked";
  else if (r.exit_code == 1)
    what = "failed";
  else if (r.changed > 0)
    what = tasks(r.changed) + (r.check ? " would change" : " changed");
  else
    what = r.check ? "no drift" : "converged";
  if (!r.check && r.exit_code == 3) what += ", stopped for a reboot";
  // One line whatever the path holds: a line feed in it is escaped too.
  return std::string(r.check ? "drift check of " : "run of ") + terminal_safe(r.playbook, false) + ": " + what +
         ", exit " + std::to_string(r.exit_code);
}

std::string local_time_text(std::time_t t) {
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", &tm);
  return buf;
}

std::string age_text(int64_t seconds) {
  if (seconds < 0) return "in the future: check the clock";
  if (seconds < 120) return std::to_string(seconds) + " seconds ago";
  if (seconds < 2 * 3600) return std::to_string(seconds / 60) + " minutes ago";
  if (seconds < 2 * 86400) return std::to_string(seconds / 3600) + " hours ago";
  return std::to_string(seconds / 86400) + " days ago";
}

int apply_playbook(const ApplyOptions& o, Exec& exec, std::ostream& out, std::ostream& err, RunSeen& seen);

}  // namespace

const std::atomic<int>& apply_interrupt() { return g_interrupt; }

int run_apply(const ApplyOptions& o, Exec& exec, std::ostream& out, std::ostream& err) {
  RunSeen seen;
  if (o.textfile.empty()) return apply_playbook(o, exec, out, err, seen);
  if (o.textfile.front() != '/') {
    err << "gptagent: --textfile " << o.textfile << ": give an absolute path (under --root when one is given)\n";
    return 1;
  }
  const auto started = std::chrono::steady_clock::now();
  int code = apply_playbook(o, exec, out, err, seen);
  if (!Root::check(o.root)) return code;  // said already, and there is nowhere to write
  const Root root(o.root);
  LastRun run;
  run.playbook = absolute(o.playbook);
  run.check = o.check;
  run.finished_at = std::time(nullptr);
  run.duration_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  run.ok = seen.stats.ok;
  run.changed = seen.stats.changed;
  run.failed = seen.stats.failed;
  run.skipped = seen.stats.skipped;
  run.waiting_for_reboot = seen.waiting_for_reboot;
  run.exit_code = code;
  // A run that ends here unrecorded, or that Prometheus cannot see, has failed at what it was for.
  if (auto s = save_last_run(root, run); !s) {
    err << "gptagent: " << s.error() << "\n";
    run.exit_code = code = 1;
  }
  if (auto s = write_textfile(root, o.textfile, run); !s) {
    err << "gptagent: " << s.error() << "\n";
    run.exit_code = code = 1;
  }
  if (o.json) err << "gptagent: " << run_summary(run) << "\n";  // the journal's line; stdout is the document
  return code;
}

namespace {

int apply_playbook(const ApplyOptions& o, Exec& exec, std::ostream& out, std::ostream& err, RunSeen& seen) {
  if (auto ok = Root::check(o.root); !ok) {
    err << "gptagent: " << ok.error() << "\n";
    return 1;
  }
  Root root(o.root);
  Facts facts = gather_facts(root);
  for (const auto& w : facts.warnings) spdlog::info("facts: {}", w);
  if (!facts.errors.empty()) {  // what the modules decide from must not be a guess
    for (const auto& e : facts.errors) err << "gptagent: " << e << "\n";
    err << "gptagent: cannot read the host's facts, nothing was changed\n";
    return 1;
  }
  spdlog::debug("facts: cpu {}, distro {} {}, kernel {}, boot {}", facts.cpu.vendor, facts.os.id, facts.os.version_id,
                facts.kernel_release, facts.boot_id);

  LoadOptions lo;
  lo.facts = facts.to_json();
  lo.extra_vars = o.extra_vars;
  auto loaded =
      o.playbook_text.empty() ? load_playbook(o.playbook, lo) : load_playbook_text(o.playbook_text, o.playbook, lo);
  if (!loaded.ok()) {
    if (o.json)
      out << nlohmann::json{{"playbook", o.playbook}, {"errors", loaded.errors}, {"exit_code", 1}}.dump(
                 2, ' ', false, nlohmann::json::error_handler_t::replace)
          << "\n";
    for (const auto& e : loaded.errors) err << e << "\n";
    err << "gptagent: " << o.playbook << ": " << loaded.errors.size()
        << (loaded.errors.size() == 1 ? " error" : " errors") << ", nothing was changed\n";
    return 1;
  }
  const Playbook& pb = loaded.playbook;
  // The playbook's identity, hashed only when a state is compared or recorded (a converged run
  // needs none, and OpenSSL's start-up costs about 2 ms).
  std::string sha_cache, sha_error;  // empty with an error when the playbook cannot be read again
  auto sha = [&]() -> const std::string& {
    if (sha_cache.empty() && !o.playbook_text.empty()) sha_cache = sha256_hex(o.playbook_text);
    if (sha_cache.empty()) {
      std::ifstream in(o.playbook, std::ios::binary);
      std::string text(std::istreambuf_iterator<char>(in), {});
      if (!in.is_open() || in.bad())
        sha_error = "cannot read " + o.playbook + " again to record it: " + std::strerror(errno);
      else
        sha_cache = sha256_hex(text);
    }
    return sha_cache;
  };
  const std::string pb_path = absolute(o.playbook);

  auto lock = RunLock::acquire(
      root, o.check ? RunLock::Mode::shared_if_exists : RunLock::Mode::exclusive, !o.no_wait,
      [](long pid) { std::cerr << "gptagent: waiting for the run holding the lock (pid " << pid << ")\n"; });
  if (!lock) {
    err << "gptagent: " << lock.error() << "\n";
    return 1;
  }
  // Once the lock is held: a run still waiting for it has changed nothing and just ends.
  g_interrupt = 0;
  ScopedSignalHandlers signals({SIGINT, SIGTERM}, on_apply_signal);

  size_t start = 0;
  if (!o.from_stage.empty()) {
    auto it = std::find_if(pb.stages.begin(), pb.stages.end(), [&](const Stage& s) { return s.name == o.from_stage; });
    if (it == pb.stages.end()) {
      std::vector<std::string> names;
      for (const auto& s : pb.stages) names.push_back(s.name);
      err << "gptagent: --from-stage: the playbook has no stage '" << o.from_stage << "' (stages: " << join(names, ", ")
          << ")\n";
      return 1;
    }
    start = static_cast<size_t>(it - pb.stages.begin());
  }
  Context ctx{root, exec, facts, !root.sandboxed() || o.system_commands, nullptr, o.connect};
  // A trial boot is armed where this run, or its caller, reboots the host for a stage's change.
  const bool trial_mode = !o.check && !o.no_trial && (o.reboot || o.trial) && ctx.system_commands_allowed;
  std::optional<RunState> state;
  if (!o.reset_state && o.from_stage.empty()) {
    auto loaded_state = load_state(root);
    if (!loaded_state) {
      err << "gptagent: " << loaded_state.error() << "\n";
      return 1;
    }
    state = std::move(*loaded_state);
  } else if (!o.check) {
    // The operator knows better: whatever was recorded is forgotten. A trial armed for it is taken
    // back first (its stage's files too, so that this run makes the change, and its regeneration,
    // again): forgetting it would leave the next boot booting it.
    if (auto old = load_state(root); old && *old && (*old)->trial) {
      Result undone = undo_trial(ctx, *(*old)->trial);
      if (undone.status == Outcome::failed) {
        err << "gptagent: the recorded trial boot: " << undone.msg << "\n";
        return 1;
      }
      (o.json ? err << "gptagent: " : out) << "the recorded trial boot is forgotten: " << undone.msg << "\n";
    }
    if (auto s = clear_state(root); !s) {
      err << "gptagent: " << s.error() << "\n";
      return 1;
    }
  }

  ReportOptions rep{use_color(o.color) && !o.json, o.diff, o.check, o.playbook, root.dir(), "localhost"};
  auto reporter = o.json ? make_json_reporter(out, rep) : make_human_reporter(out, rep);

  // An interrupted run's intent: its handlers and reboot are carried into this run.
  std::optional<StageIntent> carried;
  if (state && !state->waiting) {
    for (const auto& d : state->dropped)
      err << "gptagent: warning: " << kStatePath << ": " << d << ": dropped, not run\n";
    // Handlers the user notified are named only, and run as the playbook of this run defines them.
    std::erase_if(state->intent.notified, [&](const std::string& name) {
      const bool known =
          std::any_of(pb.handlers.begin(), pb.handlers.end(), [&](const Task& h) { return h.name == name; }) ||
          std::any_of(pb.stages.begin(), pb.stages.end(), [&](const Stage& st) {
            return std::any_of(st.handlers.begin(), st.handlers.end(), [&](const Task& h) { return h.name == name; });
          });
      if (!known)
        err << "gptagent: warning: " << kStatePath << ": pending handler '" << name
            << "' is not in the playbook: dropped\n";
      return !known;
    });
    carried = state->intent;
    // A note, never a line in --json's stdout, which is the report alone (a fleet parses it).
    (o.json ? err << "gptagent: " : out) << "an interrupted run (" << state->recorded_at << ") left work for stage "
                                         << state->stage << ": it is finished in this run\n";
    state.reset();
  }

  RunStats& stats = seen.stats;
  if (state) {
    if (state->boot_id == facts.boot_id) {
      seen.waiting_for_reboot = true;
      const int code = o.check ? 2 : 3;
      if (o.json) {
        out << nlohmann::json{{"playbook", o.playbook},     {"root", root.dir()},        {"check", o.check},
                              {"waiting_for_reboot", true}, {"state", state->to_json()}, {"exit_code", code}}
                   .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
            << "\n";
      } else {
        out << "waiting for reboot: stage " << state->stage << " of " << state->playbook << " asked for one at "
            << state->recorded_at << " and the host has not rebooted since (boot " << facts.boot_id
            << "). Reboot it, then run again; nothing was changed.\n";
        if (state->trial)
          out << "the next boot boots the trial entry " << kTrialEntry << " once; the default entry is unchanged until "
              << "that boot passes the stage's checks\n";
      }
      return code;
    }
    // A new boot: check that what the stopped stage set up took effect, then go on.
    Stage verify;
    verify.name = "after the reboot (stage " + state->stage + ")";
    reporter->stage(verify);
    const auto report = [&](const std::string& what, const std::string& module, Result r, bool handler) {
      TaskReport t{verify.name, what, module, handler, false, std::move(r), 0};
      if (t.result.status == Outcome::failed)
        ++stats.failed;
      else
        ++stats.ok;
      if (t.result.status == Outcome::changed) ++stats.changed;
      reporter->task(t);
    };
    std::vector<std::string> diagnosis;
    if (state->trial && !booted_trial(*state->trial, facts)) {
      diagnosis.push_back(
          "the trial boot did not come up: the host fell back to the previous entry (its command line "
          "lacks gptagent.trial=" +
          state->trial->id + ")");
      report("the trial boot came up", "reboot check", Result::failed(diagnosis.back()), false);
    } else {
      for (const auto& c : verify_after_reboot(state->expect, facts)) {
        if (!c.ok) diagnosis.push_back(c.why);
        report(c.what, "reboot check", c.ok ? Result::ok() : Result::failed(c.why), false);
      }
    }
    if (stats.failed > 0 && state->trial && !o.check) {
      // Nothing is committed: the trial goes, the stage's files come back, the default entry
      // boots as before (the running trial boot until the next reboot).
      Result undone = undo_trial(ctx, *state->trial);
      if (booted_trial(*state->trial, facts))
        undone.msg += "; this boot is the trial's: the next reboot boots the previous default entry";
      report("undo the trial boot", "trial", undone, false);
      if (undone.status != Outcome::failed) {
        if (auto s = save_trial_result(root, {state->stage, "failed", now_text(), diagnosis}); !s)
          err << "gptagent: " << s.error() << "\n";
        if (auto s = clear_state(root); !s) err << "gptagent: " << s.error() << "\n";
      }
    }
    if (stats.failed > 0) {
      reporter->done(stats, 1);
      return 1;  // the state stays: fix the cause, reboot or rerun, and the checks run again
    }
    if (state->trial) {
      // The trial passed: what the stage deferred makes it the default, then the trial goes.
      bool committed = true;
      for (const auto& h : state->trial->deferred) {
        const ModuleDef* def = Registry::instance().find(h.module);
        auto args = def ? handler_request_args(*def, h) : Expected<nlohmann::json>(Error{"no module " + h.module});
        Result r = args ? converge_module(*def, ctx, *args, !o.check) : Result::failed(args.error());
        // A regeneration not run (under --root) commits nothing.
        if (r.status == Outcome::skipped && !o.check) r = Result::failed("the trial cannot be committed: " + r.msg);
        committed = committed && r.status != Outcome::failed;
        report(h.name, h.module, std::move(r), true);
        if (!committed) break;
      }
      const Stage* stopped = nullptr;
      for (const auto& st : pb.stages)
        if (st.name == state->stage) stopped = &st;
      for (const auto& name : state->trial->deferred_notified) {
        if (!committed) break;
        const Task* task = nullptr;
        for (const auto* list : {stopped ? &stopped->handlers : nullptr, &pb.handlers})
          if (list && !task)
            for (const Task& h : *list)
              if (h.name == name) task = &h;
        Result r = task ? converge_module(*task->module, ctx, task->args, !o.check)
                        : Result::failed("handler '" + name +
                                         "' is not in the playbook any more: run it by hand, then --reset-state");
        if (r.status == Outcome::skipped && !o.check) r = Result::failed("the trial cannot be committed: " + r.msg);
        committed = r.status != Outcome::failed;
        report(name, task ? task->module->name : "handler", std::move(r), true);
      }
      if (committed && !o.check) {
        Status removed = remove_trial(ctx, *state->trial);
        report("remove the trial entry", "trial",
               removed
                   ? Result::changed("committed: the default entry boots the stage's change; the trial entry" +
                                     (state->trial->initrd.empty() ? std::string() : " and " + state->trial->initrd) +
                                     " removed")
                   : Result::failed(removed.error()),
               false);
        if (removed)
          if (auto s = save_trial_result(root, {state->stage, "committed", now_text(), {}}); !s)
            err << "gptagent: " << s.error() << "\n";
      }
      if (stats.failed > 0) {
        reporter->done(stats, 1);
        return 1;  // the state stays: the next run (the trial still booted) commits again
      }
    }
    if (!o.check) {
      if (auto s = clear_state(root); !s) {
        err << "gptagent: " << s.error() << "\n";
        return 1;
      }
    }
    // The same content is the same playbook, wherever it lies (a fleet copies it to a new
    // temporary directory for every run).
    if (state->playbook_sha256 == sha()) {
      start = state->next_stage;
    } else {
      (o.json ? err << "gptagent: " : out)
          << "the playbook changed since the reboot was asked for: converging it from the first stage\n";
      start = 0;
    }
  }

  RunOptions ro{o.check, o.tags, o.skip_tags,  true,       start,
                carried, {},     &g_interrupt, trial_mode, [&] { return trial_possible(ctx); }};
  if (!o.check) {
    ro.journal = [&](const StageIntent* intent) -> Status {
      if (!intent) return clear_state(root);
      if (sha().empty()) return Error{sha_error};
      RunState running;
      running.waiting = false;
      running.playbook = pb_path;
      running.playbook_sha256 = sha();
      running.stage = intent->stage;
      running.boot_id = facts.boot_id;
      running.recorded_at = now_text();
      running.intent = *intent;
      return save_state(root, running);
    };
  }
  add(stats, run_playbook(pb, ctx, ro, *reporter));
  if (const int sig = g_interrupt.load()) {
    // What was recorded stays (the next run finishes the stage's handlers); the lock is let go
    // only now, after the command the signal reached has ended.
    reporter->done(stats, 128 + sig);
    err << "gptagent: interrupted (" << ::strsignal(sig) << "): the command running was stopped and waited for; "
        << "run again to finish\n";
    return 128 + sig;
  }

  if (stats.stopped_for_reboot && !o.check && stats.failed == 0 && sha().empty()) {
    err << "gptagent: " << sha_error << "\n";
    stats.failed++;
  } else if (stats.stopped_for_reboot && !o.check && stats.failed == 0) {
    RunState s;
    s.playbook = pb_path;
    s.playbook_sha256 = sha();
    s.stage = stats.stop_stage;
    s.next_stage = stats.next_stage;
    s.boot_id = facts.boot_id;
    s.recorded_at = now_text();
    s.expect = stats.expect;
    if (trial_mode && (!stats.deferred.empty() || !stats.deferred_notified.empty())) {
      Stage arm;
      arm.name = "trial boot (stage " + stats.stop_stage + ")";
      reporter->stage(arm);
      auto trial = prepare_trial(ctx, stats.stop_stage, stats.deferred);
      TaskReport t{arm.name, "arm the trial boot", "trial", false, false, {}, 0};
      if (trial) {
        trial->deferred_notified = stats.deferred_notified;
        trial->written = stats.written;
        s.trial = *trial;
        t.result =
            Result::changed("the next boot boots " + std::string(kTrialEntry) + " once (gptagent.trial=" + trial->id +
                            "), the default entry stays as it was until that boot passes the stage's checks. A panic "
                            "resets it into the previous default after 10 s (panic=10); a boot that hangs is brought "
                            "back only by a hardware watchdog, a BMC or a person at the console resetting it" +
                            trial->note);
        ++stats.ok;
        ++stats.changed;
        if (o.reboot) {
          // A lone host rebooting itself: nobody runs it again, the boot-time unit does.
          reporter->task(t);
          t = TaskReport{arm.name, "finish the run after the reboot", "trial", false,
                         false,    install_resume_unit(ctx),          0};
          if (t.result.status == Outcome::failed)
            ++stats.failed;
          else
            ++stats.ok;
          if (t.result.status == Outcome::changed) ++stats.changed;
        }
      } else {
        // Nothing of the stage stays: its files are put back, and the intent recorded while it ran
        // (whose handlers would commit the change directly) is dropped.
        TrialRecord undo;
        undo.written = stats.written;
        auto restored = restore_stage_files(ctx, undo);
        t.result = Result::failed("cannot arm the trial boot: " + trial.error() + "; " +
                                  (restored ? "the stage's files put back" +
                                                  (restored->empty() ? std::string() : ": " + join(*restored, ", "))
                                            : restored.error()) +
                                  ". Run with --no-trial to commit the change directly (no automatic fallback)");
        ++stats.failed;
        stats.stopped_for_reboot = false;  // nothing waits for a reboot: the stage was taken back
        if (auto st = clear_state(root); !st) err << "gptagent: " << st.error() << "\n";
      }
      reporter->task(t);
    }
    if (stats.failed == 0) {
      if (auto st = save_state(root, s); !st) {
        err << "gptagent: " << st.error() << "\n";
        stats.failed++;
      } else if (o.reboot) {
        out.flush();  // what the run did is read before the reboot ends this process
        Result r = ctx.run_system(Command{{"reboot"}}, true, "rebooting");
        if (r.status == Outcome::failed)
          err << "gptagent: " << r.msg << "\n";
        else
          out << (r.status == Outcome::skipped ? "not rebooting: " : "") << r.msg << "\n";
      }
    }
  }
  const int code = exit_code_for(stats, o.check);
  reporter->done(stats, code);
  seen.waiting_for_reboot = stats.stopped_for_reboot && !o.check && stats.failed == 0;
  return code;
}

void print_run_state(std::ostream& out, const std::optional<RunState>& state, const std::string& boot) {
  if (!state) {
    out << "no run is waiting for a reboot\n";
    return;
  }
  const RunState& s = *state;
  if (!s.waiting) {
    std::vector<std::string> work;
    for (const auto& h : s.intent.handlers) work.push_back(h.name);
    for (const auto& n : s.intent.notified) work.push_back(n);
    out << "a run of " << s.playbook << " was interrupted in stage " << s.stage << " (" << s.recorded_at
        << "); the next apply finishes its work:\n";
    if (!work.empty()) out << "  handlers: " << join(work, ", ") << "\n";
    if (s.intent.reboot) out << "  a reboot\n";
    return;
  }
  out << "stage " << s.stage << " of " << s.playbook << " asked for a reboot at " << s.recorded_at << "\n"
      << (s.boot_id == boot ? "the host has not rebooted since (boot " + boot + ")"
                            : "the host has rebooted since: the next apply checks what follows and goes on")
      << "\n";
  auto list = [&](const char* what, const std::vector<std::string>& items) {
    if (!items.empty()) out << "  " << what << ": " << join(items, " ") << "\n";
  };
  list("kernel command line must have", s.expect.cmdline_present);
  list("kernel command line must not have", s.expect.cmdline_absent);
  list("modules loaded", s.expect.modules);
  list("bound to vfio-pci", s.expect.vfio_devices);
  if (s.trial)
    out << "  a trial boot is armed (gptagent.trial=" << s.trial->id << "): the next boot boots " << kTrialEntry
        << " once; the default entry changes only when that boot passes these checks\n";
}

void print_guard_records(std::ostream& out, const std::vector<GuardRecord>& records) {
  for (const auto& g : records)
    out << "kernel guard: " << terminal_safe(g.kernel, false) << ": "
        << (g.kind == "initramfs" ? "initramfs " : "GRUB entry ")
        << (g.missing.empty() ? "has everything the playbook wants"
                              : "LACKS " + terminal_safe(join(g.missing, " "), false))
        << "\n";
}

void print_trial_result(std::ostream& out, const std::optional<TrialResult>& t) {
  if (!t) return;
  out << "last trial boot: stage " << terminal_safe(t->stage, false) << ", " << t->outcome << " (" << t->at << ")\n";
  for (const auto& d : t->diagnosis) out << "  " << terminal_safe(d, false) << "\n";
}

void print_last_run(std::ostream& out, const std::optional<LastRun>& run) {
  if (!run) {
    out << "no drift check recorded (apply --textfile records one; gptagent-drift.timer runs it)\n";
    return;
  }
  out << (run->check ? "last drift check: " : "last recorded run: ") << local_time_text(run->finished_at) << " ("
      << age_text(std::time(nullptr) - run->finished_at) << "): " << run_summary(*run) << "\n";
}

}  // namespace

int run_status(const std::string& root_dir, bool json, std::ostream& out, std::ostream& err) {
  if (auto ok = Root::check(root_dir); !ok) {
    err << "gptagent: " << ok.error() << "\n";
    return 1;
  }
  Root root(root_dir);
  auto state = load_state(root);
  if (!state) {
    err << "gptagent: " << state.error() << "\n";
    return 1;
  }
  // A broken record of the last check is said, and the rest of the status still shown.
  auto last = load_last_run(root);
  if (!last) err << "gptagent: warning: " << last.error() << "\n";
  const std::optional<LastRun> last_run = last ? *last : std::nullopt;
  const std::string boot = gather_facts(root).boot_id;
  auto trial = load_trial_result(root);
  if (!trial) err << "gptagent: warning: " << trial.error() << "\n";
  const std::optional<TrialResult> last_trial = trial ? *trial : std::nullopt;
  auto guard = read_guard_records(root);
  if (!guard) err << "gptagent: warning: " << guard.error() << "\n";
  const std::vector<GuardRecord> guard_records = guard ? *guard : std::vector<GuardRecord>{};
  if (json) {
    nlohmann::json j = {{"waiting_for_reboot", state->has_value() && (*state)->waiting}, {"boot_id", boot}};
    if (*state) {
      j["state"] = (*state)->to_json();
      j["rebooted"] = (*state)->boot_id != boot;
    }
    j["last_run"] = last_run ? last_run->to_json() : nlohmann::json(nullptr);
    j["last_trial"] = last_trial ? last_trial->to_json() : nlohmann::json(nullptr);
    j["kernel_guard"] = nlohmann::json::array();
    for (const auto& g : guard_records)
      j["kernel_guard"].push_back({{"kernel", g.kernel}, {"kind", g.kind}, {"what", g.what}, {"missing", g.missing}});
    out << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  print_run_state(out, *state, boot);
  print_trial_result(out, last_trial);
  print_guard_records(out, guard_records);
  print_last_run(out, last_run);
  return 0;
}

namespace {

const char* const kRevertText =
    R"(# gptagent revert: the host as it was before the agent's first change of each unit and file.
stages:
  - name: revert
    reboot: when_needed
    tasks:
      - name: every unit the agent changed, as it was before
        restore_units: {}
      - name: every file the agent changed, as it was before
        restore_files: {}
)";

}  // namespace

int run_revert(ApplyOptions o, Exec& exec, std::ostream& out, std::ostream& err) {
  o.playbook = kRevertPlaybook;
  o.playbook_text = kRevertText;
  return run_apply(o, exec, out, err);
}

int run_resume(const ApplyOptions& base, Exec& exec, std::ostream& out, std::ostream& err) {
  const std::string& root_dir = base.root;
  if (auto ok = Root::check(root_dir); !ok) {
    err << "gptagent: " << ok.error() << "\n";
    return 1;
  }
  auto state = load_state(Root(root_dir));
  if (!state) {
    err << "gptagent: " << state.error() << "\n";
    return 1;
  }
  if (!*state) {
    out << "no run to finish: " << kStatePath << " records none\n";
    return 0;
  }
  ApplyOptions o = base;
  o.playbook = (*state)->playbook;
  o.color = "never";
  o.trial = true;
  const int code = o.playbook == kRevertPlaybook ? run_revert(o, exec, out, err) : run_apply(o, exec, out, err);
  if (auto retired = retire_resume_unit(Root(root_dir)); !retired) {
    err << "gptagent: " << retired.error() << "\n";
    return code == 0 ? 1 : code;
  } else if (*retired) {
    out << **retired << "\n";
  }
  return code;
}

}  // namespace gpt
