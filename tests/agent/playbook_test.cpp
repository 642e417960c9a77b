#include "agent/playbook.hpp"

#include <gtest/gtest.h>

#include "agent/module.hpp"

namespace gpt {
namespace {

LoadResult load(const std::string& yaml, nlohmann::json extra = nlohmann::json::object()) {
  LoadOptions opts;
  opts.extra_vars = std::move(extra);
  opts.facts = {{"cpu_vendor", "intel"}, {"distro", "ubuntu"}};
  return load_playbook_text(yaml, "host.yaml", opts);
}

::testing::AssertionResult HasError(const LoadResult& r, const std::string& expected) {
  for (const auto& e : r.errors)
    if (e.find(expected) != std::string::npos) return ::testing::AssertionSuccess();
  std::string all;
  for (const auto& e : r.errors) all += "\n  " + e;
  return ::testing::AssertionFailure() << "no error containing '" << expected << "'; errors:" << all;
}

TEST(Playbook, LoadsStagesTasksAndDefaults) {
  auto r = load(R"(vars:
  vm: win10
stages:
  - name: host
    reboot: when_needed
    tasks:
      - name: params
        grub_cmdline:
          present: [iommu=pt]
  - name: vm
    tasks:
      - typed: {path: "/var/lib/{{ vm }}.qcow2"}
)");
  ASSERT_TRUE(r.ok()) << r.errors.front();
  const auto& pb = r.playbook;
  ASSERT_EQ(pb.stages.size(), 2u);
  EXPECT_EQ(pb.stages[0].reboot, RebootPolicy::when_needed);
  EXPECT_EQ(pb.stages[0].tasks[0].name, "params");
  EXPECT_EQ(pb.stages[0].tasks[0].args["key"], "GRUB_CMDLINE_LINUX");
  EXPECT_EQ(pb.stages[0].tasks[0].args["present"], nlohmann::json::array({"iommu=pt"}));
  EXPECT_EQ(pb.stages[1].tasks[0].name, "typed");  // no name: the module's
  EXPECT_EQ(pb.stages[1].tasks[0].args["path"], "/var/lib/win10.qcow2");
  EXPECT_EQ(pb.stages[1].tasks[0].args["count"], 1);
  EXPECT_EQ(pb.stages[1].reboot, RebootPolicy::never);
}

TEST(Playbook, TopLevelTasksAreOneStage) {
  auto r = load("tasks:\n  - typed: {path: /x}\n");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.playbook.stages.size(), 1u);
  EXPECT_EQ(r.playbook.stages[0].tasks.size(), 1u);
}

TEST(Playbook, RejectsUnknownModuleWithLineAndColumn) {
  auto r = load("tasks:\n  - name: x\n    grub_cmdlin:\n      present: [a]\n");
  EXPECT_TRUE(
      HasError(r, "host.yaml:3:5: unknown module or task keyword 'grub_cmdlin' (did you mean 'grub_cmdline'?)"));
}

TEST(Playbook, RejectsUnknownArgumentWithLineAndColumn) {
  auto r = load("tasks:\n  - grub_cmdline:\n      presnt: [a]\n");
  EXPECT_TRUE(HasError(r, "host.yaml:3:7: grub_cmdline has no argument 'presnt' (did you mean 'present'?)"));
}

TEST(Playbook, RejectsWrongTypesAtTheValue) {
  auto r = load("tasks:\n  - typed:\n      path: /x\n      count: many\n      enabled: maybe\n      opts: 3\n");
  EXPECT_TRUE(HasError(r, "host.yaml:4:14: typed argument 'count' must be an integer, not a string"));
  EXPECT_TRUE(HasError(r, "host.yaml:5:16: typed argument 'enabled' must be a boolean (true or false), not a string"));
  EXPECT_TRUE(HasError(r, "host.yaml:6:13: typed argument 'opts' must be a mapping, not a number"));
}

TEST(Playbook, RejectsMissingRequiredArgument) {
  auto r = load("tasks:\n  - typed:\n      count: 2\n");
  EXPECT_TRUE(HasError(r, "host.yaml:2:5: typed is missing the required argument 'path'"));
}

TEST(Playbook, ValidatesNestedMappingsChoicesChecksAndExclusions) {
  auto r = load(
      "tasks:\n  - typed:\n      path: /x\n      mode: turbo\n      opts: {sise: 1G}\n      even: 3\n      a: x\n      "
      "b: y\n");
  EXPECT_TRUE(HasError(r, "host.yaml:4:13: typed argument 'mode' must be one of fast, safe, not 'turbo'"));
  EXPECT_TRUE(HasError(r, "host.yaml:5:14: typed argument 'opts' has no argument 'sise' (did you mean 'size'?)"));
  EXPECT_TRUE(HasError(r, "typed argument 'opts' is missing the required argument 'size'"));
  EXPECT_TRUE(HasError(r, "host.yaml:6:13: typed argument 'even': must be even"));
  EXPECT_TRUE(HasError(r, "typed takes only one of a, b"));
}

TEST(Playbook, CoercesScalarsLikeAnsible) {
  auto r = load("tasks:\n  - typed: {path: 1.10, count: '8', enabled: yes, names: one}\n");
  ASSERT_TRUE(r.ok()) << r.errors.front();
  const auto& a = r.playbook.stages[0].tasks[0].args;
  EXPECT_EQ(a["path"], "1.10");  // the text as written, not a float
  EXPECT_EQ(a["count"], 8);
  EXPECT_EQ(a["enabled"], true);
  EXPECT_EQ(a["names"], nlohmann::json::array({"one"}));
}

TEST(Playbook, ReportsYamlSyntaxErrorsWithPosition) {
  auto r = load("tasks:\n  - typed: {path: /x\n  - other\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_TRUE(HasError(r, "host.yaml:"));
  EXPECT_TRUE(HasError(r, "YAML syntax error"));
}

TEST(Playbook, RejectsDuplicateKeys) {
  auto r = load("tasks:\n  - typed:\n      path: /x\n      path: /y\n");
  EXPECT_TRUE(HasError(r, "host.yaml:4:7: duplicate key 'path'"));
}

TEST(Playbook, RejectsTwoModulesInOneTask) {
  auto r = load("tasks:\n  - typed: {path: /x}\n    probe: {}\n");
  EXPECT_TRUE(HasError(r, "host.yaml:2:5: a task runs one module, this one names probe, typed"));
}

TEST(Playbook, RejectsStructureErrors) {
  EXPECT_TRUE(HasError(load("tasks: []\nstages: []\n"), "use either `stages:` or `tasks:`"));
  EXPECT_TRUE(HasError(load("vars: {}\n"), "the playbook has no `stages:` and no `tasks:`"));
  EXPECT_TRUE(HasError(load("stages:\n  - name: a\n    reboot: sometimes\n    tasks: []\n"),
                       "host.yaml:3:13: reboot must be never, when_needed or always"));
  EXPECT_TRUE(HasError(load("stages:\n  - name: a\n    taks: []\n"),
                       "host.yaml:3:5: unknown stage key 'taks' (did you mean 'tasks'?)"));
  EXPECT_TRUE(HasError(load("tasks:\n  - typed: path=/x\n"), "the arguments of typed must be a mapping"));
  EXPECT_TRUE(HasError(load(""), "host.yaml:1:1: the playbook is empty"));
  EXPECT_TRUE(HasError(load("- a\n- b\n"), "a playbook is a mapping"));
}

TEST(Playbook, NotifyMustNameAHandler) {
  auto r =
      load("tasks:\n  - name: t\n    probe: {}\n    notify: restart it\nhandlers:\n  - name: restart\n    probe: {}\n");
  EXPECT_TRUE(HasError(r, "host.yaml:4:13: task 't' notifies 'restart it', but no handler has that name"));
  auto unnamed = load("tasks:\n  - probe: {}\nhandlers:\n  - probe: {}\n");
  EXPECT_TRUE(HasError(unnamed, "a handler needs a name"));
}

TEST(Playbook, SubstitutesVarsExtraVarsAndFacts) {
  auto r = load(R"(vars:
  name: win10
  dir: /var/lib/{{ name }}
  params: [iommu=pt]
tasks:
  - name: "{{ name }} on {{ facts.cpu_vendor }}"
    typed: {path: "{{ dir }}/disk", count: "{{ n }}", names: "{{ params }}"}
)",
                {{"n", 4}, {"name", "linux"}});
  ASSERT_TRUE(r.ok()) << r.errors.front();
  const auto& t = r.playbook.stages[0].tasks[0];
  EXPECT_EQ(t.name, "linux on intel");  // -e wins over vars
  EXPECT_EQ(t.args["path"], "/var/lib/linux/disk");
  EXPECT_EQ(t.args["count"], 4);
  EXPECT_EQ(t.args["names"], nlohmann::json::array({"iommu=pt"}));  // a whole {{ }} keeps its type
}

TEST(Playbook, ExtraVarsThatReachAnArgumentAreCheckedAtTheTemplate) {
  // -e values reach module arguments only through templates: the loader renders them, then the
  // argument checker types them, and the message points at the template.
  auto r = load("tasks:\n  - typed: {path: /x, count: \"{{ n }}\", mode: \"{{ m }}\"}\n",
                {{"n", {{"not", "a number"}}}, {"m", "slow"}});
  EXPECT_EQ(r.errors,
            (std::vector<std::string>{"host.yaml:2:30: typed argument 'count' must be an integer, not a mapping",
                                      "host.yaml:2:47: typed argument 'mode' must be one of fast, safe, not 'slow'"}));
}

TEST(Playbook, UndefinedVariableIsAnErrorAtTheValue) {
  auto r = load("tasks:\n  - typed: {path: \"/x/{{ nope }}\"}\n");
  EXPECT_TRUE(HasError(r, "host.yaml:2:19: undefined variable 'nope'"));
  auto filt = load("tasks:\n  - typed: {path: \"{{ x | default('y') }}\"}\n");
  EXPECT_TRUE(HasError(filt, "only variable names are substituted"));
  auto loop = load("vars: {a: '{{ b }}', b: '{{ a }}'}\ntasks:\n  - typed: {path: '{{ a }}'}\n");
  EXPECT_TRUE(HasError(loop, "too deeply"));
}

TEST(Playbook, WhenIsEvaluatedAndCheckedAtLoad) {
  auto r = load(R"(vars: {gpus: 2}
tasks:
  - typed: {path: /a}
    when: facts.cpu_vendor == 'intel' and gpus > 1
  - typed: {path: /b}
    when:
      - facts.distro in ['fedora', 'rhel']
      - gpus > 1
  - typed: {path: /c}
    when: missing is not defined
  - typed: {path: /d}
    when: false
)");
  ASSERT_TRUE(r.ok()) << r.errors.front();
  EXPECT_TRUE(r.playbook.stages[0].tasks[0].when);
  EXPECT_FALSE(r.playbook.stages[0].tasks[1].when);
  EXPECT_TRUE(r.playbook.stages[0].tasks[2].when);
  EXPECT_FALSE(r.playbook.stages[0].tasks[3].when);
  EXPECT_TRUE(HasError(load("tasks:\n  - typed: {path: /a}\n    when: nope == 1\n"),
                       "host.yaml:3:11: when: undefined variable 'nope'"));
  EXPECT_TRUE(HasError(load("tasks:\n  - typed: {path: /a}\n    when: x ==\n"), "when: expression ends too early"));
}

TEST(Playbook, RefusesAliasBombs) {
  std::string yaml = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'k'; ++c, ++prev)
    yaml += std::string(1, c) + ": &" + c + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev +
            ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n";
  yaml += "tasks: []\n";
  auto r = load(yaml);
  EXPECT_TRUE(HasError(r, "an alias bomb?"));
}

TEST(Playbook, RefusesBinaryAndOversizedInput) {
  EXPECT_TRUE(HasError(load(std::string("tasks: []\n\0\0", 12)), "NUL bytes"));
  LoadOptions opts;
  opts.max_bytes = 64;
  auto r = load_playbook_text(std::string(100, '#'), "big.yaml", opts);
  EXPECT_TRUE(HasError(r, "big.yaml:1:1: the playbook is larger than 64 bytes"));
}

TEST(Playbook, ReportsAllErrorsInFileOrder) {
  auto r = load("tasks:\n  - typed: {count: x}\n  - bogus: {}\n");
  ASSERT_GE(r.errors.size(), 3u);
  EXPECT_NE(r.errors[0].find("host.yaml:2:"), std::string::npos);
  EXPECT_NE(r.errors.back().find("host.yaml:3:"), std::string::npos);
}

TEST(Playbook, ParsesExtraVars) {
  EXPECT_EQ(*parse_extra_var("n=3"), (nlohmann::json{{"n", 3}}));
  EXPECT_EQ(*parse_extra_var("name=win 10"), (nlohmann::json{{"name", "win 10"}}));
  EXPECT_EQ(*parse_extra_var("flag=true"), (nlohmann::json{{"flag", true}}));
  EXPECT_FALSE(parse_extra_var("novalue").ok());
  EXPECT_FALSE(parse_extra_var("facts=1").ok());
}

}  // namespace
}  // namespace gpt
