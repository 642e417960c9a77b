#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <boost/process.hpp>
#include <filesystem>

#include "modules/lib/grub_default.hpp"
#include "tests/support/converge.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

const std::string kIntelCpu = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx\n";
const std::string kAmdCpu = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu svm\n";

// Sources a file with a clean bash and prints variables: the proof that the result is still
// valid shell and what the shell, and so grub-mkconfig, will see.
std::string bash_eval(const std::string& file, const std::string& script) {
  namespace bp = boost::process;
  bp::ipstream out;
  bp::environment clean;  // empty: nothing from the test's environment leaks into the result
  clean["PATH"] = "/usr/bin:/bin";
  bp::child c(bp::search_path("bash"), "--norc", "--noprofile", "-c", "source \"$0\" 2>/dev/null; " + script, file,
              clean, bp::std_out > out, bp::std_err > bp::null);
  std::string text, line;
  while (std::getline(out, line)) text += line + "\n";
  c.wait();
  return text;
}

struct Case {
  std::string name;
  std::string dir;
  std::string input, expected, params;
  CmdlineEdit edit;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const auto& entry : fs::directory_iterator(test::source_path("tests/fixtures/grub"))) {
    if (entry.path().filename() == "shell") continue;  // the shell-syntax corpus (tests/agent/shell_syntax_test.cpp)
    Case c;
    c.name = entry.path().filename().string();
    c.dir = entry.path().string();
    c.input = test::slurp(c.dir + "/input");
    c.expected = test::slurp(c.dir + "/expected");
    c.params = test::slurp(c.dir + "/params");
    YAML::Node args = YAML::LoadFile(c.dir + "/args.yaml");
    if (args["key"]) c.edit.key = args["key"].as<std::string>();
    if (args["present"]) c.edit.present = args["present"].as<std::vector<std::string>>();
    if (args["absent"]) c.edit.absent = args["absent"].as<std::vector<std::string>>();
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const Case& a, const Case& b) { return a.name < b.name; });
  return out;
}

std::string list_yaml(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const auto& s : v) out += (out.size() > 1 ? ", " : "") + ("'" + s + "'");
  return out + "]";
}

std::string playbook_for(const CmdlineEdit& e) {
  return "tasks:\n  - name: params\n    grub_cmdline:\n      key: " + e.key +
         "\n      present: " + list_yaml(e.present) + "\n      absent: " + list_yaml(e.absent) + "\n";
}

class GrubFixture : public ::testing::TestWithParam<Case> {};

TEST_P(GrubFixture, EditMatchesTheExpectedFileByteForByte) {
  const Case& c = GetParam();
  auto res = edit_grub_cmdline(c.input, c.edit);
  ASSERT_TRUE(res.ok()) << res.error();
  EXPECT_EQ(res->text, c.expected);
  EXPECT_EQ(res->changed(), c.input != c.expected);
  auto again = edit_grub_cmdline(res->text, c.edit);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->changed()) << again->summary();
  EXPECT_EQ(again->text, res->text);
}

TEST_P(GrubFixture, ResultIsValidShellWithTheWantedParameters) {
  const Case& c = GetParam();
  TempDir d;
  test::write(d / "grub", c.expected);
  test::write(d / "before", c.input);
  EXPECT_EQ(bash_eval(d / "grub", "for p in $" + c.edit.key + "; do printf '%s\\n' \"$p\"; done"), c.params);
  // Every other GRUB_ variable is the same before and after.
  const std::string others = "for v in ${!GRUB_@}; do [ \"$v\" = " + c.edit.key + " ] || declare -p \"$v\"; done";
  EXPECT_EQ(bash_eval(d / "grub", others), bash_eval(d / "before", others));
}

TEST_P(GrubFixture, ApplyTwiceReportsChangedThenOkAndCheckPredictsTheFirstRun) {
  const Case& c = GetParam();
  TempDir d;
  test::write(d / "etc/default/grub", c.input);
  test::write(d / "proc/cpuinfo", kIntelCpu);
  test::write(d / "usr/sbin/update-grub", "#!/bin/sh\n", 0755);
  const std::string pb = playbook_for(c.edit);
  const bool changes = c.input != c.expected;

  auto before = test::snapshot(d.path());
  auto check = test::converge_root(d.path(), pb, true);
  ASSERT_TRUE(check.load_errors.empty()) << check.load_errors.front();
  EXPECT_EQ(test::snapshot(d.path()), before) << "check mode changed the tree";
  EXPECT_EQ(check.exit_code, changes ? 2 : 0);
  EXPECT_TRUE(check.commands.empty());

  auto first = test::converge_root(d.path(), pb, false);
  EXPECT_EQ(first.exit_code, 0);
  EXPECT_EQ(first.changes(), check.changes());
  EXPECT_EQ(test::slurp(d / "etc/default/grub"), c.expected);
  if (changes) {
    EXPECT_EQ(first.stats.changed, 2);  // the task and the grub handler
    EXPECT_EQ(first.commands, std::vector<std::string>{"update-grub"});
    EXPECT_TRUE(first.stats.reboot_required);
    ASSERT_TRUE(first.tasks[0].result.data.contains("backup"));
    EXPECT_EQ(test::slurp(d.path() + first.tasks[0].result.data["backup"].get<std::string>()), c.input);
  } else {
    EXPECT_EQ(test::snapshot(d.path()), before);
  }

  auto second = test::converge_root(d.path(), pb, false);
  EXPECT_EQ(second.stats.changed, 0);
  EXPECT_EQ(second.stats.ok, 1);
  EXPECT_TRUE(second.commands.empty());
  auto recheck = test::converge_root(d.path(), pb, true);
  EXPECT_EQ(recheck.exit_code, 0);
}

INSTANTIATE_TEST_SUITE_P(RealWorldFiles, GrubFixture, ::testing::ValuesIn(cases()), [](const auto& info) {
  std::string n = info.param.name;
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
});

TEST(GrubFixtures, CoverTheCasesTheIssueNames) {
  auto all = cases();
  EXPECT_GE(all.size(), 8u);
  for (const char* name :
       {"debian12", "ubuntu2204", "fedora40", "rhel9", "arch", "proxmox8", "single-quoted", "unquoted", "missing-key",
        "commented-only", "assigned-twice", "self-reference", "conflicting-values"})
    EXPECT_TRUE(std::any_of(all.begin(), all.end(), [&](const Case& c) { return c.name == name; })) << name;
}

CmdlineEdit edit(std::vector<std::string> present, std::vector<std::string> absent = {}) {
  CmdlineEdit e;
  e.present = std::move(present);
  e.absent = std::move(absent);
  return e;
}

TEST(GrubEdit, ReplacesOtherValuesOfAParameter) {
  auto r = edit_grub_cmdline("GRUB_CMDLINE_LINUX=\"intel_iommu=off quiet nouveau.modeset=1\"\n",
                             edit({"intel_iommu=on", "nouveau.modeset=0"}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->text, "GRUB_CMDLINE_LINUX=\"intel_iommu=on quiet nouveau.modeset=0\"\n");
  EXPECT_EQ(r->summary(), "replaced intel_iommu=off with intel_iommu=on, nouveau.modeset=1 with nouveau.modeset=0");
}

TEST(GrubEdit, ALaterConflictingValueGoesEvenWhenTheWantedOneIsThere) {
  // The kernel reads left to right: the later intel_iommu=off would win.
  auto r = edit_grub_cmdline("GRUB_CMDLINE_LINUX=\"intel_iommu=on quiet intel_iommu=off\"\n", edit({"intel_iommu=on"}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->text, "GRUB_CMDLINE_LINUX=\"intel_iommu=on quiet\"\n");
}

TEST(GrubEdit, AbsentByNameOrByValue) {
  const std::string in = "GRUB_CMDLINE_LINUX=\"iommu=off iommu=pt quiet splash\"\n";
  EXPECT_EQ(edit_grub_cmdline(in, edit({}, {"iommu"}))->text, "GRUB_CMDLINE_LINUX=\"quiet splash\"\n");
  EXPECT_EQ(edit_grub_cmdline(in, edit({}, {"iommu=off"}))->text, "GRUB_CMDLINE_LINUX=\"iommu=pt quiet splash\"\n");
  EXPECT_EQ(edit_grub_cmdline(in, edit({}, {"splash", "quiet", "iommu"}))->text, "GRUB_CMDLINE_LINUX=\"\"\n");
}

TEST(GrubEdit, RefusesWhatItCannotEditSafely) {
  auto cmdsub = edit_grub_cmdline("GRUB_CMDLINE_LINUX=\"$(cat /etc/params) quiet\"\n", edit({"iommu=pt"}));
  ASSERT_FALSE(cmdsub.ok());
  EXPECT_NE(cmdsub.error().find("runs a command"), std::string::npos);
  auto var = edit_grub_cmdline("GRUB_CMDLINE_LINUX=\"intel_iommu=$IOMMU\"\n", edit({"intel_iommu=on"}));
  ASSERT_FALSE(var.ok());
  EXPECT_NE(var.error().find("comes from a shell variable"), std::string::npos);
  auto open = edit_grub_cmdline("GRUB_CMDLINE_LINUX=\"quiet\nGRUB_TIMEOUT=5\n", edit({"iommu=pt"}));
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.error().find("unterminated double quote"), std::string::npos);
  EXPECT_FALSE(edit_grub_cmdline("", edit({"a b"})).ok());
  EXPECT_FALSE(edit_grub_cmdline("", edit({"x=\"y\""})).ok());
}

TEST(GrubEdit, AnotherVariablesMultiLineValueIsNotMistakenForTheKey) {
  const std::string in = "GRUB_OTHER=\"line one\nGRUB_CMDLINE_LINUX=fake\"\nGRUB_CMDLINE_LINUX=\"quiet\"\n";
  auto r = edit_grub_cmdline(in, edit({"iommu=pt"}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->text, "GRUB_OTHER=\"line one\nGRUB_CMDLINE_LINUX=fake\"\nGRUB_CMDLINE_LINUX=\"quiet iommu=pt\"\n");
}

TEST(GrubEdit, ParamsAsTheShellSeesThem) {
  auto p = grub_cmdline_params("GRUB_CMDLINE_LINUX=\"a b\"\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX c\"\n",
                               "GRUB_CMDLINE_LINUX");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, (std::vector<std::string>{"a", "b", "c"}));
}

// ---- the module through the runner ----

struct Host {
  TempDir d;
  explicit Host(const std::string& grub, const std::string& cpu = kIntelCpu) {
    if (!grub.empty()) test::write(d / "etc/default/grub", grub);
    test::write(d / "proc/cpuinfo", cpu);
  }
};

TEST(GrubCmdline, IommuAutoOnIntelAddsIntelIommu) {
  Host h("GRUB_CMDLINE_LINUX=\"quiet iommu=off\"\n");
  auto r = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {iommu: auto, regenerate: false}\n", false);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(test::slurp(h.d / "etc/default/grub"), "GRUB_CMDLINE_LINUX=\"quiet intel_iommu=on\"\n");
}

TEST(GrubCmdline, IommuAutoOnAmdOnlyRemovesWhatTurnsItOff) {
  Host h("GRUB_CMDLINE_LINUX=\"amd_iommu=off quiet\"\n", kAmdCpu);
  auto r = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {iommu: auto, regenerate: false}\n", false);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(test::slurp(h.d / "etc/default/grub"), "GRUB_CMDLINE_LINUX=\"quiet\"\n");
  EXPECT_NE(r.tasks[0].result.msg.find("on by default"), std::string::npos);
  Host clean("GRUB_CMDLINE_LINUX=\"quiet\"\n", kAmdCpu);
  EXPECT_EQ(test::converge_root(clean.d.path(), "tasks:\n  - grub_cmdline: {iommu: amd}\n", false).stats.changed, 0);
}

TEST(GrubCmdline, IommuAutoFailsWhenTheVendorIsUnknown) {
  Host h("GRUB_CMDLINE_LINUX=\"\"\n", "processor : 0\nCPU implementer : 0x41\n");
  auto r = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {iommu: auto}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.tasks[0].result.msg.find("set iommu: intel or amd"), std::string::npos);
}

TEST(GrubCmdline, MissingOrUnreadableFileFailsAndChangesNothing) {
  Host missing("");
  auto before = test::snapshot(missing.d.path());
  auto r = test::converge_root(missing.d.path(), "tasks:\n  - grub_cmdline: {present: [iommu=pt]}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.tasks[0].result.msg, "cannot read /etc/default/grub: No such file or directory");
  EXPECT_EQ(test::snapshot(missing.d.path()), before);

  Host dir("");
  fs::create_directories(dir.d / "etc/default/grub");
  auto r2 = test::converge_root(dir.d.path(), "tasks:\n  - grub_cmdline: {present: [iommu=pt]}\n", false);
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_EQ(r2.tasks[0].result.msg, "cannot read /etc/default/grub: it is a directory");
}

TEST(GrubCmdline, BrokenShellFailsAndChangesNothing) {
  Host h("GRUB_CMDLINE_LINUX=\"quiet\n");
  auto before = test::snapshot(h.d.path());
  auto r = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {present: [iommu=pt]}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(
      r.tasks[0].result.msg,
      "/etc/default/grub:2: not valid shell (sh -n refuses it): unterminated quoted string: the \" at line 1 is not "
      "closed; nothing was changed");
  EXPECT_EQ(test::snapshot(h.d.path()), before);
}

// A merge left its conflict markers in the file (tests/fixtures/grub/shell/broken-merge-conflict:
// `<<<<<<< HEAD` at line 9, where sh -n stops). update-grub would fail on it, edited or not.
TEST(GrubCmdline, AFileShRefusesFailsWithItsLineInCheckAndApplyAndChangesNothing) {
  Host h(test::slurp(test::source_path("tests/fixtures/grub/shell/broken-merge-conflict")));
  test::write(h.d / "usr/sbin/update-grub", "#!/bin/sh\n", 0755);
  auto before = test::snapshot(h.d.path());
  for (bool check : {true, false}) {
    auto r = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {iommu: intel, present: [iommu=pt]}\n", check);
    EXPECT_EQ(r.exit_code, 1) << check;
    ASSERT_EQ(r.tasks.size(), 1u) << "no handler runs";
    EXPECT_EQ(r.tasks[0].result.status, Outcome::failed);
    EXPECT_EQ(
        r.tasks[0].result.msg,
        "/etc/default/grub:9: not valid shell (sh -n refuses it): redirection unexpected (line 9 is a merge-conflict "
        "marker); nothing was changed");
    EXPECT_TRUE(r.commands.empty());
    EXPECT_EQ(test::differences(test::snapshot(h.d.path()), before), "");
  }
}

TEST(GrubCmdline, BadArgumentsAreLoadErrors) {
  Host h("GRUB_CMDLINE_LINUX=\"\"\n");
  auto bad = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline:\n      present: ['a b', 'x;rm']\n", false);
  ASSERT_FALSE(bad.load_errors.empty());
  EXPECT_NE(bad.load_errors[0].find("test.yaml:3:16: grub_cmdline argument 'present': 'a b' is not a kernel parameter"),
            std::string::npos)
      << bad.load_errors[0];
  auto both =
      test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {present: [iommu=pt], absent: [iommu]}\n", false);
  ASSERT_FALSE(both.load_errors.empty());
  EXPECT_NE(both.load_errors[0].find("'iommu=pt' is both present and absent"), std::string::npos);
  auto key = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {key: GRUB_CMDLINE}\n", false);
  ASSERT_FALSE(key.load_errors.empty());
}

TEST(GrubConfig, RegeneratesTheWayTheDistroDoes) {
  struct Distro {
    std::string tool, os_id, efi_cfg;
    std::vector<std::string> expected;
  };
  const std::vector<Distro> distros = {
      {"usr/sbin/update-grub", "debian", "", {"update-grub"}},
      {"usr/sbin/grub2-mkconfig",
       "fedora",
       "search --fs-uuid x\nconfigfile $prefix/grub.cfg\n",
       {"grub2-mkconfig -o /boot/grub2/grub.cfg"}},
      {"usr/sbin/grub2-mkconfig",
       "rhel",
       "### BEGIN /etc/grub.d/00_header ###\n",
       {"grub2-mkconfig -o /boot/efi/EFI/rhel/grub.cfg"}},
      {"usr/bin/grub-mkconfig", "arch", "", {"grub-mkconfig -o /boot/grub/grub.cfg"}},
  };
  for (const auto& d : distros) {
    Host h("GRUB_CMDLINE_LINUX=\"\"\n");
    test::write(h.d / d.tool, "#!/bin/sh\n", 0755);
    test::write(h.d / "etc/os-release", "ID=" + d.os_id + "\n");
    if (!d.efi_cfg.empty()) test::write(h.d / ("boot/efi/EFI/" + d.os_id + "/grub.cfg"), d.efi_cfg);
    auto r = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {present: [iommu=pt]}\n", false);
    EXPECT_EQ(r.commands, d.expected) << d.os_id;
  }
  Host none("GRUB_CMDLINE_LINUX=\"\"\n");
  auto r = test::converge_root(none.d.path(), "tasks:\n  - grub_cmdline: {present: [iommu=pt]}\n", false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.tasks.back().result.msg.find("no update-grub, grub2-mkconfig or grub-mkconfig"), std::string::npos);
}

TEST(GrubConfig, NeverRunsUnderASandboxRoot) {
  Host h("GRUB_CMDLINE_LINUX=\"\"\n");
  test::write(h.d / "usr/sbin/update-grub", "#!/bin/sh\n", 0755);
  auto r = test::converge_root(h.d.path(), "tasks:\n  - grub_cmdline: {present: [iommu=pt]}\n", false,
                               /*allow_system_commands=*/false);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(r.commands.empty());
  ASSERT_EQ(r.tasks.size(), 2u);
  EXPECT_EQ(r.tasks[1].result.status, Outcome::skipped);
  EXPECT_EQ(r.tasks[1].result.msg, "not run under --root " + Root(h.d.path()).dir() + ": update-grub");
}

TEST(GrubConfig, AFailingCommandFailsTheHandlerWithItsMessage) {
  Host h("GRUB_CMDLINE_LINUX=\"\"\n");
  test::write(h.d / "usr/sbin/update-grub", "#!/bin/sh\n", 0755);
  Root root(h.d.path());
  Facts facts = gather_facts(root);
  test::RecordingExec exec;
  exec.next = ExecResult{1, false, "",
                         "Generating grub configuration file ...\n/usr/sbin/grub-mkconfig: error: out of space\n"};
  Context ctx{root, exec, facts, true};
  const ModuleDef* def = Registry::instance().find("grub_config");
  Result r = converge_module(*def, ctx, with_defaults(def->schema, json::object()), true);
  EXPECT_EQ(r.status, Outcome::failed);
  EXPECT_EQ(r.msg, "update-grub failed: exit code 1: /usr/sbin/grub-mkconfig: error: out of space");
}

}  // namespace
}  // namespace gpt
