#include "tests/support/converge.hpp"

#include "agent/facts.hpp"
#include "agent/playbook.hpp"

namespace gpt::test {
namespace {

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

}  // namespace

std::vector<std::string> Converged::changes() const {
  std::vector<std::string> out;
  for (const auto& t : tasks)
    if (t.result.status == Outcome::changed) out.push_back(t.name + "\n" + t.result.diff);
  return out;
}

Converged converge_root(const std::string& root_dir, const std::string& yaml, bool check, bool allow_system) {
  Converged c;
  Root root(root_dir);
  Facts facts = gather_facts(root);
  LoadOptions opts;
  opts.facts = facts.to_json();
  auto loaded = load_playbook_text(yaml, "test.yaml", opts);
  if (!loaded.ok()) {
    c.load_errors = loaded.errors;
    c.exit_code = 1;
    return c;
  }
  RecordingExec exec;
  Context ctx{root, exec, facts, allow_system};
  Collect rep(c.tasks);
  RunOptions ro;
  ro.check = check;
  c.stats = run_playbook(loaded.playbook, ctx, ro, rep);
  c.commands = exec.commands;
  c.exit_code = exit_code_for(c.stats, check);
  return c;
}

}  // namespace gpt::test
