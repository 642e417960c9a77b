// The shell syntax check the editors of shell files run: its verdicts are dash's (`sh -n`) and
// bash's (`bash -n`), which the corpus test asks at test time.
#include "agent/shell_syntax.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::optional<ShellSyntaxError> posix(std::string_view text) { return find_shell_syntax_error(text); }
std::optional<ShellSyntaxError> bash(std::string_view text) {
  return find_shell_syntax_error(text, ShellDialect::bash);
}

// ---- the corpus: real files, broken ones derived from them, and the project's own fixtures ----

struct ShellVerdict {
  bool ok = false;
  int line = 0;  // dash's, when it names one
  std::string said;
};

ShellVerdict ask(const std::string& shell, const std::string& file) {
  auto r = test::run_program(shell, {"-n", file});
  ShellVerdict v{r.exit_code == 0, 0, r.err};
  // dash: "FILE: LINE: Syntax error: ..."
  std::smatch m;
  if (std::regex_search(r.err, m, std::regex(": ([0-9]+): "))) v.line = std::stoi(m[1]);
  return v;
}

enum class Expect { agree, bash_only, dash_only };

struct CorpusFile {
  std::string path, name;
  Expect expect = Expect::agree;
};

// tests/fixtures/grub/shell/ (see its SOURCES.md), then every other shell file the fixtures hold:
// the grub editor's cases, the kernel_cmdline trees and the sample hosts.
std::vector<CorpusFile> corpus() {
  std::vector<CorpusFile> out;
  auto add = [&](const fs::path& p, const std::string& name) {
    CorpusFile f{p.string(), name};
    const std::string base = p.filename().string();
    if (base.rfind("bash-only-", 0) == 0 || base.find("mkinitcpio") != std::string::npos) f.expect = Expect::bash_only;
    if (base.rfind("dash-only-", 0) == 0) f.expect = Expect::dash_only;
    out.push_back(f);
  };
  const fs::path fixtures = test::source_path("tests/fixtures");
  for (const auto& e : fs::directory_iterator(fixtures / "grub/shell"))
    if (e.path().filename() != "SOURCES.md") add(e.path(), "shell/" + e.path().filename().string());
  std::sort(out.begin(), out.end(), [](const CorpusFile& a, const CorpusFile& b) { return a.name < b.name; });
  for (const char* tree : {"grub", "kernel_cmdline", "hosts"})
    for (const auto& e : fs::recursive_directory_iterator(fixtures / tree)) {
      if (!e.is_regular_file()) continue;
      const std::string rel = fs::relative(e.path(), fixtures).string();
      const std::string base = e.path().filename().string();
      const bool grub_case =
          std::string(tree) == "grub" && rel.rfind("grub/shell/", 0) != 0 && (base == "input" || base == "expected");
      const bool etc_file = (rel.find("/etc/default/grub") != std::string::npos && base != "README") ||
                            rel.find("/etc/mkinitcpio.conf") != std::string::npos;
      if (grub_case || etc_file) add(e.path(), rel);
    }
  return out;
}

TEST(ShellSyntax, VerdictEqualsDashAndBashOnTheCorpus) {
  const auto files = corpus();
  auto count = [&](const std::string& prefix) {
    return std::count_if(files.begin(), files.end(), [&](const CorpusFile& f) { return f.name.rfind(prefix, 0) == 0; });
  };
  const auto derived =
      count("shell/broken-") + count("shell/valid-") + count("shell/bash-only-") + count("shell/dash-only-");
  ASSERT_GE(count("shell/") - derived, 10) << "real files, as SOURCES.md lists them";
  ASSERT_GE(count("shell/broken-"), 10);
  int valid = 0, invalid = 0, disagree = 0, lines = 0;
  for (const auto& f : files) {
    SCOPED_TRACE(f.name);
    const std::string text = test::slurp(f.path);
    const ShellVerdict dash = ask("/bin/sh", f.path), bash_says = ask("/bin/bash", f.path);
    const auto ours = posix(text), ours_bash = bash(text);

    switch (f.expect) {
      case Expect::agree:
        EXPECT_EQ(dash.ok, bash_says.ok) << "dash and bash disagree on a file not marked so:\n"
                                         << dash.said << bash_says.said;
        break;
      case Expect::bash_only:  // bash's syntax: the checker refuses it as sh, takes it as bash
        EXPECT_FALSE(dash.ok);
        EXPECT_TRUE(bash_says.ok) << bash_says.said;
        ++disagree;
        break;
      case Expect::dash_only:  // POSIX allows what bash does not
        EXPECT_TRUE(dash.ok) << dash.said;
        EXPECT_FALSE(bash_says.ok);
        ++disagree;
        break;
    }
    EXPECT_EQ(!ours, dash.ok) << "dash: " << (dash.ok ? "valid" : dash.said)
                              << "checker: " << (ours ? std::to_string(ours->line) + ": " + ours->message : "valid");
    EXPECT_EQ(!ours_bash, bash_says.ok) << "bash: " << (bash_says.ok ? "valid" : bash_says.said) << "checker (bash): "
                                        << (ours_bash ? std::to_string(ours_bash->line) + ": " + ours_bash->message
                                                      : "valid");
    if (!dash.ok && ours && dash.line > 0) {
      EXPECT_EQ(ours->line, dash.line) << "dash: " << dash.said << "checker: " << ours->message;
      ++lines;
    }
    (dash.ok ? valid : invalid)++;
  }
  std::printf(
      "[ corpus   ] %zu files: %d valid to dash, %d refused (%d lines compared), %d on which dash and bash differ\n",
      files.size(), valid, invalid, lines, disagree);
}

// ---- what the messages say ----

TEST(ShellSyntax, AMergeConflictMarkerIsAHereDocumentThenARedirection) {
  const std::string text =
      "GRUB_DEFAULT=0\n<<<<<<< HEAD\nGRUB_CMDLINE_LINUX=\"quiet\"\n=======\nGRUB_CMDLINE_LINUX=\"\"\n>>>>>>> b\n";
  auto e = posix(text);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->line, 2);
  EXPECT_EQ(e->message, "redirection unexpected");
  auto st = check_shell_file("/etc/default/grub", text);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(
      st.error(),
      "/etc/default/grub:2: not valid shell (sh -n refuses it): redirection unexpected (line 2 is a merge-conflict "
      "marker); nothing was changed");
  // bash reads <<< as a here-string; it is refused all the same.
  EXPECT_EQ(bash(text)->line, 2);
}

TEST(ShellSyntax, UnclosedThingsSayWhereTheyBegan) {
  // dash reports where it noticed (the end of the file); the message says where to look.
  auto quote = posix("A=1\nGRUB_CMDLINE_LINUX=\"quiet\nB=2\n");
  ASSERT_TRUE(quote);
  EXPECT_EQ(quote->line, 4);
  EXPECT_EQ(quote->message, "unterminated quoted string: the \" at line 2 is not closed");
  EXPECT_EQ(posix("A='x\n")->message, "unterminated quoted string: the ' at line 1 is not closed");
  EXPECT_EQ(posix("if true; then\n  A=1\n")->message,
            "end of file unexpected (expecting \"fi\"): the \"if\" at line 1 is not closed");
  EXPECT_EQ(posix("A=$(sed 's/x/y/' /etc/os-release\n")->message,
            "end of file unexpected (expecting \")\"): the $( at line 1 is not closed");
  EXPECT_EQ(posix("A=${B:-x\n")->message, "missing '}': the ${ at line 1 is not closed");
  EXPECT_EQ(posix("A=$((1 + 2\n")->message, "missing '))': the $(( at line 1 is not closed");
  EXPECT_EQ(posix("A=`uname -r\n")->message,
            "end of file in a `...` command substitution: the ` at line 1 is not closed");
}

TEST(ShellSyntax, StrayKeywordsAndOperatorsAreDashsWords) {
  EXPECT_EQ(posix("then\n")->message, "\"then\" unexpected");
  EXPECT_EQ(posix("A=1\nfi\n")->message, "\"fi\" unexpected");
  EXPECT_EQ(posix("done\n")->message, "\"done\" unexpected");
  EXPECT_EQ(posix("A=1 ;;\n")->message, "\";;\" unexpected");
  EXPECT_EQ(posix("A=1\n&& B=2\n")->line, 2);
  EXPECT_EQ(posix("A=1\n&& B=2\n")->message, "\"&&\" unexpected");
  EXPECT_EQ(posix("{ }\n")->message, "\"}\" unexpected");
  EXPECT_EQ(posix("for \"x\" in a; do :; done\n")->message, "bad for loop variable");
  EXPECT_EQ(posix("export() { :; }\n")->message, "bad function name");
  EXPECT_EQ(posix("f(\n)\n")->line, 2);  // the newline was read: dash counts it
  EXPECT_EQ(posix("f(\n)\n")->message, "newline unexpected (expecting \")\")");
}

TEST(ShellSyntax, WhatGrubFilesHoldIsValid) {
  for (const char* ok : {
           "",
           "# only a comment",
           "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n",
           "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n",
           "GRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\n",
           "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX vfio-pci.ids=10de:1b80\"\n",
           "GRUB_CMDLINE_LINUX=\"a \\\n b\nc\"\n",
           "export GRUB_COLOR_NORMAL='light-blue/black'\n",
           "GRUB_TIMEOUT=${GRUB_TIMEOUT:-5}\n",
           "if [ -x /usr/bin/x ]; then\n  A=1\nelif true; then B=2\nelse :\nfi\n",
           "for f in /etc/default/grub.d/*.cfg; do [ -e \"$f\" ] && . \"$f\"; done\n",
           "case \"$(uname -m)\" in\n  x86_64|amd64) A=1 ;;\n  (*) A=2\nesac\n",
           "gpu_params() {\n  echo intel_iommu=on\n}\nGRUB_CMDLINE_LINUX=\"$(gpu_params)\"\n",
           "cat <<EOF >/dev/null\n$HOME and `date` are expanded; \"quotes\" and 'these' are text\nEOF\n",
           "cat <<'EOF'\n$(\nEOF\n",
       })
    EXPECT_FALSE(posix(ok)) << ok << " -> " << posix(ok)->message;
}

TEST(ShellSyntax, DashsQuirksAreKept) {
  // A character after ${name that is no operator is dropped: to dash this is a whole substitution.
  EXPECT_FALSE(posix("echo ${x\"}\n"));
  EXPECT_TRUE(bash("echo ${x\"}\n"));
  // Only the start of a `...` substitution is parsed, up to the first token that ends a list.
  EXPECT_FALSE(posix("x=`a; fi; (`\n"));
  // Inside it, lines count from 1: dash says line 2 here.
  EXPECT_EQ(posix("A=1\nB=2\nx=`\nif`\n")->line, 2);
  // Here-documents begun inside $(...) get no body there.
  EXPECT_EQ(posix("x=$(cat <<EOF)\nfi\nEOF\n")->message, "\"fi\" unexpected");
  // An unquoted here-document's body is parsed for its substitutions; bash leaves it to run time.
  EXPECT_EQ(posix("cat <<EOF\n$(\nEOF\n")->message,
            "end of file unexpected (expecting \")\"): the $( at line 2 is not closed");
  EXPECT_FALSE(bash("cat <<EOF\n$(\nEOF\n"));
  // NUL bytes are dropped before parsing.
  EXPECT_EQ(posix(std::string("i\0f true; then :; fi\n", 21)), std::nullopt);
}

TEST(ShellSyntax, BashFilesMayUseBashsSyntax) {
  const std::string mkinitcpio =
      "MODULES=(vfio vfio_iommu_type1 vfio_pci\n  # the GPU's\n  nvidia)\nHOOKS=(base udev autodetect)\n"
      "COMPRESSION_OPTIONS=()\nA+=(x) B[1]=y\ndeclare -a C=(\"a b\" 'c')\n";
  EXPECT_FALSE(bash(mkinitcpio)) << bash(mkinitcpio)->message;
  EXPECT_EQ(posix(mkinitcpio)->message, "\"(\" unexpected");
  for (const char* ok : {"A=$'a\\'b'\n", "[[ -n $x && $y == z* ]] && echo\n", "(( i = 1 + (2) ))\n",
                         "function f { :; }\n", "cat <<< \"$x\"\n", "a &> /dev/null\n", "a |& b\n", "diff <(a) >(b)\n",
                         "f-g() { :; }\n", "for ((i = 0; i < 3; i++)); do :; done\n",
                         "select x in a b; do break; done\n", "time ! a | b\n", "case $x in a) ;& b) ;;& esac\n"})
    EXPECT_FALSE(bash(ok)) << ok << " -> " << bash(ok)->message;
  for (const char* bad : {"MODULES=(vfio\n", "A=(a;b)\n", "MODULES=(vfio\nHOOKS=(base)\n", "echo A=(x)\n", "A=$'x\n",
                          "f() echo\n", "[[ a\n", "]]\n"})
    EXPECT_TRUE(bash(bad)) << bad;
}

TEST(ShellSyntax, DeepNestingIsRefusedNotACrash) {
  std::string deep;
  for (int i = 0; i < 5000; ++i) deep += "$(";
  auto e = posix(deep);
  ASSERT_TRUE(e);
  EXPECT_NE(e->message.find("nested more than"), std::string::npos);
  std::string parens(100000, '(');
  EXPECT_TRUE(posix(parens));
  EXPECT_TRUE(bash(parens));
}

}  // namespace
}  // namespace gpt
