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

ExecResult SimulatedKernelExec::run(const Command& cmd) {
  commands.push_back(cmd.display());
  if (cmd.argv.size() > 2 && cmd.argv[0] == "modprobe" && cmd.argv[1] == "-a") {
    std::string modules = exists(root_ + "/proc/modules") ? slurp(root_ + "/proc/modules") : "";
    for (size_t i = 2; i < cmd.argv.size(); ++i) modules += cmd.argv[i] + " 16384 0 - Live 0x0000000000000000\n";
    write(root_ + "/proc/modules", modules);
  }
  return {0, false, "", ""};
}

Converged converge_root(const std::string& root_dir, const std::string& yaml, bool check, bool allow_system,
                        const nlohmann::json& extra_vars) {
  Converged c;
  Root root(root_dir);
  Facts facts = gather_facts(root);
  LoadOptions opts;
  opts.facts = facts.to_json();
  opts.extra_vars = extra_vars;
  auto loaded = load_playbook_text(yaml, "test.yaml", opts);
  if (!loaded.ok()) {
    c.load_errors = loaded.errors;
    c.exit_code = 1;
    return c;
  }
  SimulatedKernelExec exec(root_dir);
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
