// Hostile and broken input, through the binary, each run bounded from the test (a wall-clock
// limit, an address-space limit of 1 GiB outside sanitizer builds, the peak resident memory
// measured): YAML alias bombs (of values, of bytes, of keys), 100 000-deep nesting, a 1 GiB
// (sparse) playbook or grub file, binary garbage, invalid UTF-8, NUL bytes, CRLF, very long
// lines, values with shell syntax (which must never reach a shell: a `$(touch FILE)` must never
// make FILE), `..` paths and symlinks that lead out of --root (a sentinel outside the root must be
// neither changed nor read into the output or the tree). Each is a clear error (exit 1, with the
// file and position where there is a file) that changes nothing, or, where the input is valid
// (CRLF YAML, a long comment, latin-1 in a grub comment), the same run as a clean input makes.
#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <random>

#include "agent/facts.hpp"
#include "agent/playbook.hpp"
#include "agent/runner.hpp"
#include "tests/chaos/chaos.hpp"
#include "tests/support/converge.hpp"

namespace gpt {
namespace {

using chaos::has;
using Host = chaos::Host;
namespace fs = std::filesystem;

constexpr size_t kGiB = size_t{1} << 30;
const chaos::Limits kBounded{.wall = std::chrono::seconds(60), .address_space = kGiB};
// Peak resident memory a refused input may cost (the sanitizers' own memory counts too).
constexpr long kMaxRssKb = chaos::kAsan ? 1536L << 10 : 256L << 10;

// Every run of the agent on a hostile input, counted for the figure printed at the end.
std::atomic<int> g_runs{0};
chaos::Run hostile_run(const std::vector<std::string>& args) {
  ++g_runs;
  return chaos::agent(args, {}, kBounded);
}
struct PrintRuns : ::testing::Environment {
  void TearDown() override {
    if (g_runs) std::cout << "[chaos] hostile inputs: " << g_runs << " runs of the agent, each bounded and checked\n";
  }
};
[[maybe_unused]] auto* const g_print_runs = ::testing::AddGlobalTestEnvironment(new PrintRuns);

std::string apply_out(const chaos::Run& r) { return r.all().substr(0, 4000); }

// A run that must refuse its input: exit 1, within the limits, a message with every `expect`
// part, and the tree as it was (the run lock aside).
void expect_refused(const chaos::Run& r, const std::map<std::string, std::string>& before, const std::string& root,
                    const std::vector<std::string>& expect, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_FALSE(r.timed_out) << "not bounded in time";
  EXPECT_EQ(r.exit_code, 1) << apply_out(r);
  EXPECT_LT(r.max_rss_kb, kMaxRssKb) << "peak memory";
  for (const auto& e : expect) EXPECT_TRUE(has(r.all(), e)) << "missing: " << e << "\n" << apply_out(r);
  EXPECT_EQ(chaos::differences(before, chaos::without_lock(chaos::snapshot(root))), "") << "the tree changed";
}

struct Case {
  Host host;
  test::TempDir plays;
  std::map<std::string, std::string> before = chaos::snapshot(host.root());
  chaos::Run apply(const std::string& playbook_text, std::vector<std::string> extra = {}) {
    test::write(plays / "play.yaml", playbook_text);
    return apply_file(plays / "play.yaml", extra);
  }
  chaos::Run apply_file(const std::string& playbook, std::vector<std::string> extra = {}) const {
    std::vector<std::string> args{"apply", playbook, "--root", host.root(), "--color", "never"};
    args.insert(args.end(), extra.begin(), extra.end());
    return hostile_run(args);
  }
  std::string playbook() const { return plays / "play.yaml"; }
};

// ---- playbooks ----

TEST(ChaosHostile, AliasBombsAreRefusedInBoundedTimeAndMemory) {
  // NAME0 (given), then NAME1 ... NAME<levels>, each a list of ten aliases of the one before: NAME0
  // seen 10^levels times. Then an empty task list.
  auto bomb = [](const std::string& name, const std::string& first, int levels) {
    std::string text = name + "0: &" + name + "0 " + first + "\n";
    for (int level = 1; level <= levels; ++level) {
      text += name + std::to_string(level) + ": &" + name + std::to_string(level) + " [";
      for (int i = 0; i < 10; ++i) text += std::string(i ? ", " : "") + "*" + name + std::to_string(level - 1);
      text += "]\n";
    }
    return text + "tasks: []\n";
  };
  // Billion laughs: ten values seen 10^10 times, from 11 lines.
  const std::string laughs = bomb("l", "[x, x, x, x, x, x, x, x, x, x]", 10);
  // Few values, many bytes: a 4 MiB string seen 10^5 times is 400 GiB.
  const std::string bytes = bomb("s", "\"" + std::string(4 << 20, 'x') + "\"", 5);
  // The same with a 1 MiB mapping key (an explicit key: implicit ones stop at 1024 characters):
  // keys are copied with every alias too.
  const std::string keys = bomb("k", "\n  ? \"" + std::string(1 << 20, 'k') + "\"\n  : 1", 5);
  for (const auto& [name, text] :
       std::vector<std::pair<std::string, std::string>>{{"values", laughs}, {"bytes", bytes}, {"keys", keys}}) {
    Case c;
    auto r = c.apply(text);
    expect_refused(r, c.before, c.host.root(), {c.playbook() + ":", "(an alias bomb?)", "nothing was changed"},
                   "a bomb of " + name);
    EXPECT_TRUE(std::regex_search(r.err, std::regex(c.playbook() + R"(:\d+:\d+: the document expands to more than)")))
        << r.err.substr(0, 2000);
  }
}

TEST(ChaosHostile, HundredThousandDeepNestingIsAClearError) {
  const int depth = 100000;
  const std::vector<std::pair<std::string, std::string>> nests = {
      {"flow sequences", "tasks: " + std::string(depth, '[') + std::string(depth, ']') + "\n"},
      {"flow mappings",
       [&] {
         std::string s = "tasks:\n  - grub_cmdline: ";
         for (int i = 0; i < depth; ++i) s += "{a: ";
         return s + "1" + std::string(depth, '}') + "\n";
       }()},
      {"block sequences",
       [&] {
         std::string s = "tasks:\n";
         for (int i = 0; i < depth; ++i) s += "- ";
         return s + "x\n";
       }()},
  };
  for (const auto& [name, text] : nests) {
    Case c;
    auto r = c.apply(text);
    expect_refused(r, c.before, c.host.root(), {"nothing was changed"}, name);
    EXPECT_TRUE(std::regex_search(r.err, std::regex(c.playbook() + R"(:\d+:\d+: .*nested deeper than \d+ levels)")))
        << name << ": " << r.err.substr(0, 2000);
  }
}

TEST(ChaosHostile, OversizedBinaryAndMalformedPlaybooksAreClearErrors) {
  {  // 1 GiB, sparse: never read whole
    Case c;
    const std::string big = c.plays / "big.yaml";
    test::write(big, "tasks: []\n");
    ASSERT_EQ(::truncate(big.c_str(), static_cast<off_t>(kGiB)), 0);
    auto r = c.apply_file(big);
    expect_refused(r, c.before, c.host.root(), {big + ":1:1: the playbook is larger than 8388608 bytes"}, "1 GiB");
    EXPECT_LT(r.max_rss_kb, chaos::kAsan ? kMaxRssKb : 64L << 10);
  }
  std::mt19937 random(20240607);
  {  // binary garbage
    Case c;
    std::string garbage(64 << 10, '\0');
    for (auto& ch : garbage) ch = static_cast<char>(random() & 0xff);
    auto r = c.apply(garbage);
    expect_refused(r, c.before, c.host.root(), {c.playbook() + ":1:1: the playbook contains NUL bytes"}, "garbage");
  }
  {  // garbage without a NUL byte: not UTF-8
    Case c;
    std::string garbage(64 << 10, '\0');
    for (auto& ch : garbage) ch = static_cast<char>(0x80 | (random() & 0x7f));
    auto r = c.apply("tasks: []\n# " + garbage + "\n");
    expect_refused(r, c.before, c.host.root(), {c.playbook() + ":2:3: the playbook is not UTF-8 text"}, "high bytes");
  }
  {  // a NUL byte in a valid playbook
    Case c;
    auto r = c.apply(std::string("tasks:\n  - xorg_cleanup: {}\n\0\n", 29));
    expect_refused(r, c.before, c.host.root(), {c.playbook() + ":1:1: the playbook contains NUL bytes"}, "NUL");
  }
  {  // invalid UTF-8 in a name and in a value; --json stays one JSON document
    Case c;
    const std::string text = "tasks:\n  - name: \"caf\xe9\"\n    grub_cmdline: {present: [\"a=\xff\xfe\"]}\n";
    auto r = c.apply(text);
    expect_refused(r, c.before, c.host.root(), {c.playbook() + ":2:15: the playbook is not UTF-8 text (byte 0xE9)"},
                   "invalid UTF-8");
    auto j = c.apply_file(c.playbook(), {"--json"});
    expect_refused(j, c.before, c.host.root(), {}, "invalid UTF-8, --json");
    auto doc = nlohmann::json::parse(j.out, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << j.out;
    EXPECT_EQ(doc["exit_code"], 1);
    EXPECT_EQ(doc["errors"].size(), 1u);
  }
  {  // a playbook named in bytes that are not UTF-8: --json and the state file still work
    Case c;
    const std::string odd = c.plays / "d\xff\xfe.yaml";
    test::write(odd, test::slurp(chaos::demo_playbook()));
    auto r = c.apply_file(odd, {"--json"});
    EXPECT_EQ(r.exit_code, 3) << apply_out(r);
    EXPECT_FALSE(nlohmann::json::parse(r.out, nullptr, false).is_discarded()) << r.out.substr(0, 2000);
    EXPECT_FALSE(
        nlohmann::json::parse(test::slurp(c.host.file("/var/lib/gptagent/state.json")), nullptr, false).is_discarded());
    auto again = c.apply_file(odd);
    EXPECT_EQ(again.exit_code, 3) << apply_out(again);
    EXPECT_TRUE(has(again.out, "waiting for reboot")) << again.out;
  }
}

TEST(ChaosHostile, ValidButOddPlaybooksRunAsTheCleanOne) {
  Case clean;
  auto want = clean.apply_file(chaos::demo_playbook());
  ASSERT_EQ(want.exit_code, 3) << want.all();
  const auto finished = chaos::normalised(clean.host.root());
  const std::string demo = test::slurp(chaos::demo_playbook());
  std::string crlf;
  for (char ch : demo) crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"CRLF line ends", crlf}, {"a 7 MiB comment line", "# " + std::string(7 << 20, '#') + "\n" + demo}}) {
    Case c;
    auto r = c.apply(text);
    EXPECT_FALSE(r.timed_out) << name;
    EXPECT_EQ(r.exit_code, 3) << name << "\n" << apply_out(r);
    EXPECT_LT(r.max_rss_kb, chaos::kAsan ? kMaxRssKb : 512L << 10) << name;
    auto got = chaos::normalised(c.host.root());
    // The state records the playbook by path and content: those differ from demo.yaml's.
    got.erase("var/lib/gptagent/state.json");
    auto expected = finished;
    expected.erase("var/lib/gptagent/state.json");
    EXPECT_EQ(chaos::differences(expected, got), "") << name;
  }
}

// An error about a 7 MiB value or key quotes it by its ends: the report stays readable and small.
TEST(ChaosHostile, LongValuesAndKeysAreQuotedByTheirEnds) {
  {  // a 7 MiB line in a value: a clear error that does not repeat the 7 MiB
    Case c;
    auto r = c.apply("tasks:\n  - grub_cmdline: {present: [\"" + std::string(7 << 20, 'a') + " \"]}\n");
    expect_refused(
        r, c.before, c.host.root(),
        {c.playbook() + ":2:29: grub_cmdline argument 'present': 'aaaa", " bytes ...]", "is not a kernel parameter"},
        "long value");
    EXPECT_LT(r.all().size(), 4u << 10) << "the message repeats the whole value";
  }
  {  // a 7 MiB unknown key, explicit (an implicit one longer than 1024 is a syntax error)
    Case c;
    auto r = c.apply("tasks:\n  - grub_cmdline:\n      ? " + std::string(7 << 20, 'k') + "\n      : 1\n");
    expect_refused(r, c.before, c.host.root(),
                   {c.playbook() + ":3:9: grub_cmdline has no argument 'kkkk", " bytes ...]"}, "long key");
    EXPECT_LT(r.all().size(), 4u << 10) << "the message repeats the whole key";
  }
}

// ---- the grub file ----

TEST(ChaosHostile, BrokenGrubFilesAreClearErrorsAndStayUntouched) {
  const std::string demo = chaos::demo_playbook();
  const std::string failed = "failed: [IOMMU and nouveau on the kernel command line] ";
  std::mt19937 random(7);
  std::string garbage(64 << 10, '\0');
  for (auto& ch : garbage) ch = static_cast<char>(random() & 0xff);
  const std::vector<std::tuple<std::string, std::function<void(const std::string&)>, std::string>> broken = {
      {"1 GiB (sparse)", [](const std::string& f) { ASSERT_EQ(::truncate(f.c_str(), static_cast<off_t>(kGiB)), 0); },
       "cannot read /etc/default/grub: larger than 1048576 bytes"},
      {"2 MiB of parameters",
       [](const std::string& f) {
         test::write(f, "GRUB_CMDLINE_LINUX=\"" + std::string(1 << 20, 'a') + " " + std::string(1 << 20, 'b') + "\"\n");
       },
       "cannot read /etc/default/grub: larger than 1048576 bytes"},
      {"binary garbage", [&](const std::string& f) { test::write(f, garbage); },
       "/etc/default/grub:2: not valid shell (sh -n refuses it): "},  // sh's verdict comes first
      {"a NUL byte",
       [](const std::string& f) {
         test::write(f, std::string("GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"quiet\0\"\n", 42));
       },
       "/etc/default/grub: line 2: a NUL byte: this is not a text file"},
      {"CRLF line ends",
       [](const std::string& f) { test::write(f, "GRUB_DEFAULT=0\r\nGRUB_CMDLINE_LINUX=\"quiet\"\r\n"); },
       "/etc/default/grub: line 1 ends in a carriage return (CRLF): sh would read it as part of the value"},
      {"a command substitution",
       [](const std::string& f) {
         test::write(f, "GRUB_CMDLINE_LINUX=\"quiet $(touch /tmp/gptagent-chaos-pwned-grub)\"\n");
       },
       "/etc/default/grub: GRUB_CMDLINE_LINUX at line 1 runs a command ($(...) or backticks)"},
      {"backticks",
       [](const std::string& f) {
         test::write(f, "GRUB_CMDLINE_LINUX=\"quiet `touch /tmp/gptagent-chaos-pwned-grub`\"\n");
       },
       "/etc/default/grub: GRUB_CMDLINE_LINUX at line 1 runs a command ($(...) or backticks)"},
  };
  ::unlink("/tmp/gptagent-chaos-pwned-grub");
  for (const auto& [name, make, message] : broken) {
    Host host;
    make(host.file("/etc/default/grub"));
    const auto before = chaos::snapshot(host.root());
    auto r = hostile_run({"apply", demo, "--root", host.root(), "--color", "never", "--diff"});
    expect_refused(r, before, host.root(), {failed + message}, name);
  }
  EXPECT_FALSE(test::exists("/tmp/gptagent-chaos-pwned-grub")) << "a command in the grub file ran";
}

TEST(ChaosHostile, OddButValidGrubFilesAreEditedWithinBounds) {
  const std::string demo = chaos::demo_playbook();
  {  // a 900 KiB value: edited, in bounded time and memory
    Host host;
    test::write(
        host.file("/etc/default/grub"), "GRUB_CMDLINE_LINUX=\"" + [] {
          std::string s;
          while (s.size() < (900u << 10)) s += "opt" + std::to_string(s.size()) + "=1 ";
          return s;
        }() + "\"\n");
    auto r = hostile_run({"apply", demo, "--root", host.root(), "--color", "never"});
    EXPECT_EQ(r.exit_code, 3) << apply_out(r);
    EXPECT_LT(r.seconds, 30);
    EXPECT_LT(r.max_rss_kb, chaos::kAsan ? kMaxRssKb : 512L << 10);
    EXPECT_TRUE(has(test::slurp(host.file("/etc/default/grub")), " intel_iommu=on iommu=pt nouveau.modeset=0\"\n"));
  }
  {  // 250 000 assignments (1 MB): every line is lexed, and counted, once
    Host host;
    std::string text;
    for (int i = 0; i < 250000; ++i) text += "A=1\n";
    test::write(host.file("/etc/default/grub"), text + "GRUB_CMDLINE_LINUX=\"\"\n");
    auto r = hostile_run({"apply", demo, "--root", host.root(), "--color", "never"});
    EXPECT_EQ(r.exit_code, 3) << apply_out(r);
    EXPECT_LT(r.seconds, 30) << "lexing is not linear";
  }
  {  // latin-1 in a comment and a value: sh does not care, and neither do the report nor --json
    Host host;
    test::write(host.file("/etc/default/grub"), "# Gr\xfc\xdf Gott\nGRUB_CMDLINE_LINUX=\"quiet caf\xe9=1\"\n");
    auto r = hostile_run({"apply", demo, "--root", host.root(), "--json", "--diff"});
    EXPECT_EQ(r.exit_code, 3) << apply_out(r);
    auto doc = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << r.out.substr(0, 2000);
    EXPECT_EQ(doc["exit_code"], 3);
    EXPECT_EQ(test::slurp(host.file("/etc/default/grub")),
              "# Gr\xfc\xdf Gott\nGRUB_CMDLINE_LINUX=\"quiet caf\xe9=1 intel_iommu=on iommu=pt nouveau.modeset=0\"\n");
  }
}

// ---- shell syntax in values ----

TEST(ChaosHostile, ValuesWithShellSyntaxNeverReachAShell) {
  // A shell would make this file in the working directory the agent and its tools share.
  const std::string name = "gptagent-chaos-pwned-" + std::to_string(::getpid());
  const std::string pwned = (fs::current_path() / name).string();
  ::unlink(pwned.c_str());
  const std::vector<std::string> values = {
      "$(touch " + name + ")", "`touch " + name + "`", "a;touch " + name, "a\\\"b", "a'b", "a\\nb", "a|b",
      "a&&touch " + name};
  for (const auto& v : values) {
    Case c;
    auto r = c.apply("tasks:\n  - grub_cmdline:\n      present: [\"" + v + "\"]\n");
    expect_refused(r, c.before, c.host.root(),
                   {c.playbook() + ":3:16: grub_cmdline argument 'present':", "is not a kernel parameter"}, v);
  }
  {
    Case c;
    auto r = c.apply_file(chaos::demo_playbook(), {"-e", "extra_params=$(touch " + name + ")"});
    expect_refused(r, c.before, c.host.root(), {"is not a kernel parameter"}, "-e");
  }
  {  // qemu_img: the real qemu-img is given the path as one argument, never a command line
    Case c;
    ::mkdir(c.host.file("/images").c_str(), 0755);
    const std::string odd = "/images/$(touch " + name + ")`touch " + name + "`;'q\".qcow2";
    std::string quoted;
    for (char ch : odd) quoted += ch == '"' ? std::string("\\\"") : std::string(1, ch);
    auto r = c.apply("tasks:\n  - qemu_img: {path: \"" + quoted + "\", size: 16M}\n");
    EXPECT_EQ(r.exit_code, 0) << apply_out(r);
    EXPECT_TRUE(test::exists(c.host.file(odd))) << "the image is not where its path says";
    auto b = c.apply("tasks:\n  - qemu_img: {path: /images/b.qcow2, backing: \"/images/$(touch " + name +
                     ").qcow2\", backing_format: qcow2}\n");
    EXPECT_EQ(b.exit_code, 1) << apply_out(b);
    EXPECT_TRUE(has(b.out, "the backing file /images/$(touch " + name + ").qcow2 does not exist")) << b.out;
  }
  {  // a command given as a list reaches the program as arguments (in-process, the real runner)
    chaos::Stubs stubs;
    stubs.add("update-grub", "#!/bin/sh\nprintf '%s|' \"$@\" > " + stubs.dir / "args" + "\n");
    chaos::ScopedEnv path("PATH", stubs.path_env().substr(5));
    Host host;
    Root root(host.root());
    Facts facts = gather_facts(root);
    LoadOptions lo;
    lo.facts = facts.to_json();
    auto loaded = load_playbook_text("tasks:\n  - grub_config: {command: [update-grub, \"$(touch " + name +
                                         ")\", \"a;b\", \"`touch " + name + "`\"]}\n",
                                     "play.yaml", lo);
    ASSERT_TRUE(loaded.ok()) << loaded.errors[0];
    ProcessExec exec;
    Context ctx{root, exec, facts, true};
    std::vector<TaskReport> tasks;
    test::Collect rep(tasks);
    auto stats = run_playbook(loaded.playbook, ctx, RunOptions{}, rep);
    EXPECT_EQ(stats.failed, 0) << (tasks.empty() ? "" : tasks[0].result.msg);
    EXPECT_EQ(test::slurp(stubs.dir / "args"), "$(touch " + name + ")|a;b|`touch " + name + "`|");
  }
  EXPECT_FALSE(test::exists(pwned)) << "a value reached a shell";
  EXPECT_FALSE(test::exists("/" + name)) << "a value reached a shell";
  ::unlink(pwned.c_str());
}

// ---- leaving the root ----

// A directory outside the root with files a run would want, each holding a secret: none may be
// changed, and no secret may reach the output or the tree.
struct Outside {
  test::TempDir dir;
  Outside() {
    test::write(dir / "grub", "GRUB_CMDLINE_LINUX=\"SECRET-grub\"\n");
    test::write(dir / "xorg/10-nvidia.conf", "# SECRET-xorg\nSection \"Device\"\n  Driver \"nvidia\"\nEndSection\n");
    test::write(dir / "modprobe/vfio.conf", "# SECRET-modprobe\noptions vfio-pci ids=1:2\n");
    test::write(dir / "state/state.json", "{\"SECRET-state\": 1}\n");
    test::write(dir / "run/gptagent.lock", "SECRET-lock\n");
    before = chaos::snapshot(dir.path());
  }
  std::map<std::string, std::string> before;
  std::string path(const std::string& rel) const { return dir / rel; }
  // Relative from a link at `link` (a host path in the root) up past the root, then down here.
  std::string climb(const std::string& link, const std::string& rel) const {
    std::string up;
    for (size_t depth = std::count(link.begin(), link.end(), '/') + 10; depth > 1; --depth) up += "../";
    return up + dir.path().substr(1) + "/" + rel;
  }
  void expect_untouched_and_unread(const chaos::Run& r, const std::string& root, const std::string& what) const {
    SCOPED_TRACE(what);
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(chaos::differences(before, chaos::snapshot(dir.path())), "") << "outside the root changed";
    EXPECT_FALSE(has(r.all(), "SECRET-")) << "read from outside the root:\n" << apply_out(r);
    for (const auto& [path, content] : chaos::snapshot(root))
      EXPECT_FALSE(has(content, "SECRET-") || has(path, "SECRET")) << "copied from outside the root into " << path;
  }
};

TEST(ChaosHostile, DotDotPathsStayInTheRoot) {
  Outside out;
  Case c;
  const std::string up = "/../../../../../../../.." + out.dir.path();
  auto r =
      c.apply("tasks:\n  - grub_cmdline: {path: \"" + up + "/grub\", present: [iommu=pt]}\n", {"--diff", "--json"});
  EXPECT_EQ(r.exit_code, 1) << apply_out(r);
  EXPECT_TRUE(has(r.out, "cannot read " + up + "/grub: No such file or directory")) << apply_out(r);
  out.expect_untouched_and_unread(r, c.host.root(), "grub_cmdline path");

  r = c.apply("tasks:\n  - xorg_cleanup: {paths: [\"" + up + "/xorg/10-nvidia.conf\"], dirs: [\"" + up + "/xorg\"]}\n",
              {"--diff"});
  EXPECT_EQ(r.exit_code, 0) << apply_out(r);
  EXPECT_TRUE(has(r.out, "ok: [xorg_cleanup] no X11 config takes an NVIDIA GPU")) << apply_out(r);
  out.expect_untouched_and_unread(r, c.host.root(), "xorg_cleanup paths");

  r = c.apply("tasks:\n  - vfio: {ids: [\"10de:1b80\"], modprobe_conf: \"" + up + "/modprobe/vfio.conf\"}\n",
              {"--diff"});
  EXPECT_EQ(r.exit_code, 0) << apply_out(r);
  EXPECT_TRUE(test::exists(c.host.root() + out.path("modprobe/vfio.conf"))) << "written anywhere but under the root";
  out.expect_untouched_and_unread(r, c.host.root(), "vfio modprobe_conf");

  Case fresh;  // where the directory outside does not exist under the root
  ::mkdir(fresh.host.file("/images").c_str(), 0755);
  r = fresh.apply("tasks:\n  - qemu_img: {path: \"/images/../../../../.." + out.dir.path() +
                  "/vm.qcow2\", size: 16M}\n");
  EXPECT_EQ(r.exit_code, 1) << apply_out(r);
  EXPECT_TRUE(has(r.out, "the directory /images/../../../../.." + out.dir.path() + " does not exist")) << apply_out(r);
  out.expect_untouched_and_unread(r, fresh.host.root(), "qemu_img path");
}

TEST(ChaosHostile, SymlinksOutOfTheRootResolveInsideIt) {
  Outside out;
  const std::string demo = chaos::demo_playbook();
  struct Link {
    std::string at, target_rel;  // a link at this host path to this file or directory outside
    std::function<void(const chaos::Run&, const Host&)> check;
  };
  const std::vector<Link> links = {
      {"/etc/default/grub", "grub",
       [&](const chaos::Run& r, const Host&) {
         EXPECT_EQ(r.exit_code, 1);
         EXPECT_TRUE(has(r.out, "cannot read /etc/default/grub: No such file or directory")) << apply_out(r);
       }},
      {"/usr/share/X11/xorg.conf.d", "xorg",
       [&](const chaos::Run& r, const Host&) {
         EXPECT_EQ(r.exit_code, 3) << apply_out(r);
         EXPECT_TRUE(has(r.out, "ok: [No X11 config may take the GPU]")) << apply_out(r);
       }},
      {"/etc/modprobe.d", "modprobe",
       [&](const chaos::Run& r, const Host& h) {
         EXPECT_EQ(r.exit_code, 3) << apply_out(r);
         EXPECT_TRUE(
             has(test::slurp(h.root() + out.path("modprobe/vfio.conf")), "options vfio-pci ids=10de:1b80,10de:10f0"));
       }},
      {"/etc/default/grub.d", "modprobe",
       [&](const chaos::Run& r, const Host& h) {
         EXPECT_EQ(r.exit_code, 3) << apply_out(r);
         EXPECT_TRUE(test::exists(h.root() + out.path("modprobe/gptagent-vfio.cfg")));
       }},
      {"/var/lib/gptagent", "state",
       [&](const chaos::Run& r, const Host& h) {
         EXPECT_EQ(r.exit_code, 3) << apply_out(r);
         EXPECT_TRUE(test::exists(h.root() + out.path("state/state.json")));
       }},
      {"/run", "run",
       [&](const chaos::Run& r, const Host& h) {
         EXPECT_EQ(r.exit_code, 3) << apply_out(r);
         EXPECT_TRUE(test::exists(h.root() + out.path("run/gptagent.lock")));
       }},
  };
  for (const auto& link : links)
    for (const bool absolute : {true, false}) {
      Host host;
      const std::string at = host.file(link.at);
      fs::remove_all(at);
      fs::create_directories(fs::path(at).parent_path());
      const std::string target = absolute ? out.path(link.target_rel) : out.climb(link.at, link.target_rel);
      ASSERT_EQ(::symlink(target.c_str(), at.c_str()), 0) << at;
      auto r = hostile_run({"apply", demo, "--root", host.root(), "--color", "never", "--diff"});
      const std::string what = link.at + " -> " + target;
      SCOPED_TRACE(what);
      link.check(r, host);
      out.expect_untouched_and_unread(r, host.root(), what);
      auto j = hostile_run({"apply", demo, "--root", host.root(), "--json", "--check", "--diff"});
      out.expect_untouched_and_unread(j, host.root(), what + " (--json --check)");
    }
}

TEST(ChaosHostile, FactsCaptureOfAHostileTreeWritesOnlyIntoItsDestination) {
  Outside out;
  Host host;
  // Device links pointing out of the root, absolute and relative, at directories that do not exist.
  const std::string devices = host.file("/sys/bus/pci/devices");
  ASSERT_EQ(::symlink(out.path("escape-abs/dev").c_str(), (devices + "/0000:09:00.0").c_str()), 0);
  ASSERT_EQ(::symlink(out.climb("/sys/bus/pci/devices/0000:0a:00.0", "escape-rel/dev").c_str(),
                      (devices + "/0000:0a:00.0").c_str()),
            0);
  test::TempDir capture;
  auto r = hostile_run({"facts", "--root", host.root(), "--capture", capture / "c"});
  EXPECT_EQ(r.exit_code, 0) << apply_out(r);
  out.expect_untouched_and_unread(r, host.root(), "facts --capture");
  EXPECT_FALSE(test::exists(out.path("escape-abs"))) << "--capture wrote outside its destination";
  EXPECT_FALSE(test::exists(out.path("escape-rel"))) << "--capture wrote outside its destination";
  // The capture is still a usable tree.
  auto replay = hostile_run({"facts", "--root", capture / "c", "--json"});
  EXPECT_EQ(replay.exit_code, 0) << apply_out(replay);
}

}  // namespace
}  // namespace gpt
