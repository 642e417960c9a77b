#include "agent/runner.hpp"

#include <gtest/gtest.h>

#include "tests/support/probe_modules.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using test::probe_calls;

class CollectingReporter final : public Reporter {
 public:
  void stage(const Stage& s) override { lines.push_back("stage " + s.name); }
  void handlers(const Stage& s) override { lines.push_back("handlers " + s.name); }
  void task(const TaskReport& r) override {
    lines.push_back(std::string(outcome_name(r.result.status)) + " " + r.name + (r.ignored ? " ignored" : ""));
  }
  void done(const RunStats&, int) override {}
  std::vector<std::string> lines;
};

struct Run {
  RunStats stats;
  std::vector<std::string> lines;
  std::vector<std::string> calls;
};

RunStats run_to(const std::string& yaml, Reporter& rep, RunOptions opts = {}) {
  auto loaded = load_playbook_text(yaml, "t.yaml", {});
  EXPECT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors.front());
  probe_calls().clear();
  test::TempDir dir;
  Root root(dir.path());
  test::RecordingExec exec;
  Facts facts;
  Context ctx{root, exec, facts, true};
  return run_playbook(loaded.playbook, ctx, opts, rep);
}

Run run(const std::string& yaml, RunOptions opts = {}) {
  CollectingReporter rep;
  Run out;
  out.stats = run_to(yaml, rep, opts);
  out.lines = rep.lines;
  for (const auto& c : probe_calls()) out.calls.push_back(c.id + (c.apply ? "" : " (check)"));
  return out;
}

using Lines = std::vector<std::string>;

TEST(Runner, RunsStagesAndTasksInOrderAndCountsLikeAnsible) {
  auto r = run(R"(stages:
  - name: one
    tasks:
      - {name: a, probe: {id: a}}
      - {name: b, probe: {id: b, outcome: changed}}
  - name: two
    tasks:
      - {name: c, probe: {id: c, outcome: skipped}}
)");
  EXPECT_EQ(r.lines, (Lines{"stage one", "ok a", "changed b", "stage two", "skipped c"}));
  EXPECT_EQ(r.calls, (Lines{"a", "b", "c"}));
  EXPECT_EQ(r.stats.ok, 2);  // changed counts as ok too, as in Ansible's RECAP
  EXPECT_EQ(r.stats.changed, 1);
  EXPECT_EQ(r.stats.skipped, 1);
  EXPECT_EQ(exit_code_for(r.stats, false), 0);
  EXPECT_EQ(exit_code_for(r.stats, true), 2);
}

TEST(Runner, NotifiedHandlersRunOnceAtTheEndOfTheirStage) {
  auto r = run(R"(stages:
  - name: one
    tasks:
      - {name: a, probe: {id: a, outcome: changed}, notify: h2}
      - {name: b, probe: {id: b, outcome: changed, handler: builtin}, notify: [h1, h2]}
      - {name: c, probe: {id: c, outcome: changed, handler: builtin}}
      - {name: d, probe: {id: d}, notify: h3}
    handlers:
      - {name: h1, probe: {id: h1, outcome: changed}}
      - {name: h3, probe: {id: h3}}
  - name: two
    tasks:
      - {name: e, probe: {id: e}}
handlers:
  - {name: h2, probe: {id: h2, outcome: changed}}
)");
  // Module-requested handlers first, then the user's in definition order; h3 was notified by
  // an unchanged task only, so it does not run.
  EXPECT_EQ(r.calls, (Lines{"a", "b", "c", "d", "builtin", "h1", "h2", "e"}));
  EXPECT_EQ(r.lines, (Lines{"stage one", "changed a", "changed b", "changed c", "ok d", "handlers one",
                            "changed builtin", "changed h1", "changed h2", "stage two", "ok e"}));
}

class MessageReporter final : public Reporter {
 public:
  void stage(const Stage&) override {}
  void handlers(const Stage&) override {}
  void task(const TaskReport& r) override { lines.push_back(r.name + ": " + r.result.msg); }
  void done(const RunStats&, int) override {}
  std::vector<std::string> lines;
};

TEST(Runner, AHandlerRequestIsCheckedAgainstItsModulesDeclaration) {
  // A module that asks for a handler with wrong arguments fails there, with the validator's message,
  // instead of running the handler on arguments no playbook could give.
  MessageReporter rep;
  RunStats stats = run_to(R"(tasks:
  - {name: a, probe: {id: a, outcome: changed, handler: h, handler_outcome: sideways}}
  - {name: b, probe: {id: b}}
)",
                          rep);
  EXPECT_EQ(stats.failed, 1);
  ASSERT_EQ(probe_calls().size(), 2u);  // a, b; never h
  EXPECT_EQ(rep.lines.back(),
            "h: handler 'h': probe argument 'outcome' must be one of ok, changed, failed, skipped, not 'sideways'");

  // The same request with a right outcome runs, with the declaration's defaults filled in.
  auto good = run(R"(tasks:
  - {name: a, probe: {id: a, outcome: changed, handler: h, handler_outcome: ok}}
)");
  EXPECT_EQ(good.lines, (Lines{"stage main", "changed a", "handlers main", "ok h"}));
}

TEST(Runner, FirstFailureStopsTheRunAndItsHandlers) {
  auto r = run(R"(stages:
  - name: one
    tasks:
      - {name: a, probe: {id: a, outcome: changed}, notify: h}
      - {name: b, probe: {id: b, outcome: failed}}
      - {name: c, probe: {id: c}}
    handlers:
      - {name: h, probe: {id: h}}
  - name: two
    tasks:
      - {name: d, probe: {id: d}}
)");
  EXPECT_EQ(r.calls, (Lines{"a", "b"}));
  EXPECT_EQ(r.stats.failed, 1);
  EXPECT_EQ(exit_code_for(r.stats, false), 1);
  EXPECT_EQ(exit_code_for(r.stats, true), 1);
}

TEST(Runner, IgnoreErrorsGoesOn) {
  auto r = run(R"(tasks:
  - {name: a, probe: {id: a, outcome: failed}, ignore_errors: true}
  - {name: b, probe: {id: b}}
)");
  EXPECT_EQ(r.lines, (Lines{"stage main", "failed a ignored", "ok b"}));
  EXPECT_EQ(r.stats.failed, 0);
  EXPECT_EQ(r.stats.ignored, 1);
  EXPECT_EQ(exit_code_for(r.stats, false), 0);
}

TEST(Runner, FalseConditionSkipsWithoutCallingTheModule) {
  auto r =
      run("vars: {x: 1}\ntasks:\n  - {name: a, probe: {id: a}, when: x == 2}\n  - {name: b, probe: {id: b}, when: x == "
          "1}\n");
  EXPECT_EQ(r.calls, (Lines{"b"}));
  EXPECT_EQ(r.lines, (Lines{"stage main", "skipped a", "ok b"}));
}

TEST(Runner, CheckModeCallsTheSameConvergeWithApplyFalse) {
  RunOptions opts;
  opts.check = true;
  auto r = run("tasks:\n  - {name: a, probe: {id: a, outcome: changed, handler: h}}\n", opts);
  EXPECT_EQ(r.calls, (Lines{"a (check)", "h (check)"}));
}

TEST(Runner, TagsSelectAndSkipTasks) {
  const std::string yaml = R"(tasks:
  - {name: a, probe: {id: a}, tags: [grub]}
  - {name: b, probe: {id: b}, tags: vfio}
  - {name: c, probe: {id: c}, tags: [always]}
  - {name: d, probe: {id: d}}
)";
  RunOptions only;
  only.tags = {"grub"};
  EXPECT_EQ(run(yaml, only).calls, (Lines{"a", "c"}));
  RunOptions skip;
  skip.skip_tags = {"vfio"};
  EXPECT_EQ(run(yaml, skip).calls, (Lines{"a", "c", "d"}));
}

TEST(Runner, RecordsWhichStagesNeedAReboot) {
  auto r = run(R"(stages:
  - name: host
    tasks: [{probe: {id: a, outcome: changed, reboot: true}}]
  - name: vm
    tasks: [{probe: {id: b, outcome: changed}}]
)");
  EXPECT_TRUE(r.stats.reboot_required);
  EXPECT_EQ(r.stats.reboot_stages, (Lines{"host"}));
}

}  // namespace
}  // namespace gpt
