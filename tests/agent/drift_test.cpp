// Pull mode: `apply --check --textfile` writes the run's metrics for node_exporter's textfile
// collector (parsed here as the exposition format defines it), records the run for `status`, and
// the systemd units that run it every hour pass systemd-analyze verify.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <thread>

#include "agent/metrics.hpp"
#include "agent/state.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using test::run_agent;
using test::SampleHost;
using test::slurp;
namespace fs = std::filesystem;

const std::string kDemo = test::source_path("playbooks/demo.yaml");
constexpr const char* kTextfileDir = "/var/lib/prometheus/node-exporter";
constexpr const char* kTextfile = "/var/lib/prometheus/node-exporter/gptagent.prom";

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// The Prometheus text exposition format, strictly: every line a HELP or TYPE comment or a sample
// `name{label="value",...} number`, label values with only \\, \" and \n escaped; HELP and TYPE
// of a metric before its samples. What breaks the format goes to `errors`.
struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> help, type;
  std::vector<std::string> errors;

  std::optional<double> value(const std::string& name, const std::map<std::string, std::string>& labels = {}) const {
    for (const auto& s : samples) {
      if (s.name != name) continue;
      bool match = true;
      for (const auto& [k, v] : labels) match = match && s.labels.count(k) && s.labels.at(k) == v;
      if (match) return s.value;
    }
    return std::nullopt;
  }
};

Exposition parse_exposition(const std::string& text) {
  Exposition e;
  if (text.empty() || text.back() != '\n') e.errors.push_back("the text does not end with a line feed");
  static const std::regex comment(R"(# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+))");
  static const std::regex metric_name("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::regex label_name("[a-zA-Z_][a-zA-Z0-9_]*");
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    std::smatch m;
    if (line.starts_with("#")) {
      if (!std::regex_match(line, m, comment)) {
        e.errors.push_back("bad comment: " + line);
      } else if (m[1] == "TYPE" && m[3] != "gauge" && m[3] != "counter") {
        e.errors.push_back("bad type: " + line);
      } else {
        (m[1] == "HELP" ? e.help : e.type)[m[2]] = m[3];
      }
      continue;
    }
    Sample s;
    size_t i = line.find_first_of("{ ");
    s.name = line.substr(0, i);
    if (i == std::string::npos || !std::regex_match(s.name, metric_name)) {
      e.errors.push_back("bad sample: " + line);
      continue;
    }
    if (line[i] == '{') {
      ++i;
      bool ok = true;
      while (ok && i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        const std::string name = eq == std::string::npos ? "" : line.substr(i, eq - i);
        if (!std::regex_match(name, label_name) || eq + 1 >= line.size() || line[eq + 1] != '"') {
          ok = false;
          break;
        }
        std::string value;
        for (i = eq + 2; ok && i < line.size() && line[i] != '"'; ++i) {
          if (line[i] != '\\') {
            value += line[i];
            continue;
          }
          const char c = ++i < line.size() ? line[i] : '\0';
          if (c == '\\' || c == '"')
            value += c;
          else if (c == 'n')
            value += '\n';
          else
            ok = false;
        }
        if (!ok || i >= line.size()) {
          ok = false;
          break;
        }
        s.labels[name] = value;
        ++i;  // the closing quote
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (!ok || i >= line.size() || line[i] != '}') {
        e.errors.push_back("bad labels: " + line);
        continue;
      }
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      e.errors.push_back("no value: " + line);
      continue;
    }
    const std::string number = line.substr(i + 1);
    char* rest = nullptr;
    s.value = std::strtod(number.c_str(), &rest);
    if (number.empty() || *rest != '\0') e.errors.push_back("bad value: " + line);
    if (!e.help.count(s.name) || !e.type.count(s.name)) e.errors.push_back("no HELP or TYPE before: " + line);
    e.samples.push_back(std::move(s));
  }
  return e;
}

std::string canonical(const std::string& path) { return fs::canonical(path).string(); }

// A sample host with node_exporter's textfile directory, as its Debian package makes it.
struct DriftHost {
  SampleHost host;
  DriftHost() { fs::create_directories(host.file(kTextfileDir)); }
  test::ProcResult check(const std::string& playbook = kDemo, std::vector<std::string> more = {}) {
    std::vector<std::string> args{"apply",   playbook, "--root",     host.root(),
                                  "--check", "--json", "--textfile", kTextfile};
    args.insert(args.end(), more.begin(), more.end());
    return run_agent(args);
  }
  std::string textfile() const { return host.file(kTextfile); }
  std::vector<std::string> textfile_dir() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(host.file(kTextfileDir))) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

TEST(Drift, CheckWithDriftWritesTheTextfileAndOneLineForTheJournal) {
  DriftHost h;
  auto pristine = test::snapshot(h.host.root());
  const auto before = std::time(nullptr);
  auto r = h.check();
  const auto after = std::time(nullptr);
  ASSERT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["exit_code"], 2) << "stdout stays one JSON document";
  EXPECT_EQ(r.err, "gptagent: drift check of " + canonical(kDemo) + ": 3 tasks would change, exit 2\n");

  const auto e = parse_exposition(slurp(h.textfile()));
  EXPECT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors) << "\n" << slurp(h.textfile());
  const std::map<std::string, std::string> pb{{"playbook", canonical(kDemo)}};
  EXPECT_EQ(e.value("gptagent_drift", pb), 1.0);
  EXPECT_EQ(e.value("gptagent_tasks", {{"playbook", canonical(kDemo)}, {"status", "ok"}}), 3.0);
  EXPECT_EQ(e.value("gptagent_tasks", {{"playbook", canonical(kDemo)}, {"status", "changed"}}), 3.0);
  EXPECT_EQ(e.value("gptagent_tasks", {{"playbook", canonical(kDemo)}, {"status", "failed"}}), 0.0);
  EXPECT_EQ(e.value("gptagent_tasks", {{"playbook", canonical(kDemo)}, {"status", "skipped"}}), 2.0);
  EXPECT_EQ(e.value("gptagent_last_run_exit_code", pb), 2.0);
  EXPECT_EQ(e.value("gptagent_waiting_for_reboot", pb), 0.0);
  auto stamp = e.value("gptagent_last_run_timestamp_seconds", pb);
  ASSERT_TRUE(stamp.has_value());
  EXPECT_GE(*stamp, static_cast<double>(before));
  EXPECT_LE(*stamp, static_cast<double>(after));
  EXPECT_GE(e.value("gptagent_last_run_duration_seconds", pb).value_or(-1), 0.0);
  EXPECT_EQ(e.samples.size(), 9u);
  for (const auto& [name, type] : e.type) EXPECT_EQ(type, "gauge") << name;

  struct stat st {};
  ASSERT_EQ(::stat(h.textfile().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_EQ(h.textfile_dir(), std::vector<std::string>{"gptagent.prom"}) << "a temporary file was left";
  // Nothing else of the host changed: the check changed nothing, it wrote its metrics and record.
  auto now = test::snapshot(h.host.root());
  now.erase(std::string(kTextfile).substr(1));
  now.erase(std::string(kLastRunPath).substr(1));
  now.erase("var/lib/gptagent/");
  EXPECT_EQ(test::differences(pristine, now), "");
}

TEST(Drift, ConvergedHostHasNoDrift) {
  DriftHost h;
  ASSERT_EQ(run_agent({"apply", kDemo, "--root", h.host.root()}).exit_code, 3);
  ASSERT_EQ(test::sandbox_reboot(h.host.root()).exit_code, 0);
  ASSERT_EQ(run_agent({"apply", kDemo, "--root", h.host.root()}).exit_code, 0);

  auto r = h.check();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "gptagent: drift check of " + canonical(kDemo) + ": no drift, exit 0\n");
  const auto e = parse_exposition(slurp(h.textfile()));
  EXPECT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  const std::map<std::string, std::string> pb{{"playbook", canonical(kDemo)}};
  EXPECT_EQ(e.value("gptagent_drift", pb), 0.0);
  EXPECT_EQ(e.value("gptagent_tasks", {{"playbook", canonical(kDemo)}, {"status", "changed"}}), 0.0);
  EXPECT_EQ(e.value("gptagent_tasks", {{"playbook", canonical(kDemo)}, {"status", "ok"}}), 3.0);
  EXPECT_EQ(e.value("gptagent_last_run_exit_code", pb), 0.0);
  EXPECT_EQ(e.value("gptagent_waiting_for_reboot", pb), 0.0);
}

TEST(Drift, AwaitedRebootIsDriftAndSaysSo) {
  DriftHost h;
  ASSERT_EQ(run_agent({"apply", kDemo, "--root", h.host.root()}).exit_code, 3);
  auto r = h.check();
  ASSERT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_EQ(r.err,
            "gptagent: drift check of " + canonical(kDemo) + ": waiting for a reboot, nothing was checked, exit 2\n");
  const auto e = parse_exposition(slurp(h.textfile()));
  const std::map<std::string, std::string> pb{{"playbook", canonical(kDemo)}};
  EXPECT_EQ(e.value("gptagent_waiting_for_reboot", pb), 1.0);
  EXPECT_EQ(e.value("gptagent_drift", pb), 1.0);
}

TEST(Drift, BadPlaybookIsAFailedRunInTheTextfile) {
  DriftHost h;
  test::TempDir d;
  test::write(d / "bad.yaml", "tasks:\n  - no_such_module: {}\n");
  auto r = h.check(d / "bad.yaml");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.err, "gptagent: drift check of " + canonical(d / "bad.yaml") + ": failed, exit 1\n")) << r.err;
  const auto e = parse_exposition(slurp(h.textfile()));
  EXPECT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.value("gptagent_last_run_exit_code"), 1.0);
  EXPECT_EQ(e.value("gptagent_drift"), 0.0);
}

TEST(Drift, LabelValuesAreEscapedAsTheFormatRequires) {
  EXPECT_EQ(prometheus_label_value("/etc/a\"b\\c\nd.yaml"), "/etc/a\\\"b\\\\c\\nd.yaml");
  EXPECT_EQ(prometheus_label_value("caf\xC3\xA9 \xFF\xC3"), "caf\xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(prometheus_label_value("tab\there"), "tab\there");

  DriftHost h;
  test::TempDir d;
  const std::string dir = d / "odd \"quoted\" back\\slash\nnewline";
  fs::create_directories(dir);
  const std::string playbook = dir + "/host.yaml";
  fs::copy_file(kDemo, playbook);
  auto r = h.check(playbook);
  ASSERT_EQ(r.exit_code, 2) << r.out << r.err;
  const std::string text = slurp(h.textfile());
  const auto e = parse_exposition(text);
  EXPECT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors) << "\n" << text;
  EXPECT_EQ(e.value("gptagent_drift", {{"playbook", canonical(playbook)}}), 1.0) << text;
  EXPECT_TRUE(has(text, "gptagent_drift{playbook=\"" + canonical(d.path()) +
                            "/odd \\\"quoted\\\" back\\\\slash\\nnewline/host.yaml\"} 1\n"))
      << text;
  EXPECT_TRUE(has(r.err, "back\\slash\\x0anewline/host.yaml: 3 tasks would change, exit 2\n")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "the journal's line is one line: " << r.err;
}

TEST(Drift, TextfileIsReplacedAtomicallyAndNeverThroughALink) {
  DriftHost h;
  ASSERT_EQ(h.check().exit_code, 2);
  struct stat first {};
  ASSERT_EQ(::stat(h.textfile().c_str(), &first), 0);
  ASSERT_EQ(h.check().exit_code, 2);
  struct stat second {};
  ASSERT_EQ(::stat(h.textfile().c_str(), &second), 0);
  EXPECT_NE(first.st_ino, second.st_ino) << "rewritten in place instead of renamed over";
  EXPECT_EQ(h.textfile_dir(), std::vector<std::string>{"gptagent.prom"});

  // A link planted at the textfile's name: refused, its target untouched, the link left.
  const std::string precious = h.host.file("/etc/precious");
  test::write(precious, "precious\n", 0600);
  fs::remove(h.textfile());
  fs::create_symlink("/etc/precious", h.textfile());
  auto r = h.check();
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(has(r.err, "cannot write " + std::string(kTextfile) + ": it is a symbolic link")) << r.err;
  EXPECT_EQ(slurp(precious), "precious\n");
  EXPECT_TRUE(fs::is_symlink(h.textfile()));
  EXPECT_EQ(h.textfile_dir(), std::vector<std::string>{"gptagent.prom"});

  // A directory others may write into, not sticky: refused; sticky (as /tmp): written.
  fs::remove(h.textfile());
  ASSERT_EQ(::chmod(h.host.file(kTextfileDir).c_str(), 0777), 0);
  r = h.check();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.err, "refusing to write " + std::string(kTextfile) + ": its directory")) << r.err;
  EXPECT_FALSE(test::exists(h.textfile()));
  ASSERT_EQ(::chmod(h.host.file(kTextfileDir).c_str(), 01777), 0);
  EXPECT_EQ(h.check().exit_code, 2);
  EXPECT_TRUE(test::exists(h.textfile()));

  // A missing directory is not made: node_exporter is not installed, or the path is wrong.
  fs::remove_all(h.host.file(kTextfileDir));
  r = h.check();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.err, "the directory " + std::string(kTextfileDir) + " does not exist")) << r.err;
  EXPECT_FALSE(test::exists(h.host.file(kTextfileDir)));

  auto relative = run_agent({"apply", kDemo, "--root", h.host.root(), "--check", "--textfile", "gptagent.prom"});
  EXPECT_EQ(relative.exit_code, 1);
  EXPECT_TRUE(has(relative.err, "give an absolute path")) << relative.err;
  auto fleet = run_agent({"apply", kDemo, "-i", "inventory.yaml", "--check", "--textfile", kTextfile});
  EXPECT_EQ(fleet.exit_code, 1);
  EXPECT_TRUE(has(fleet.err, "--textfile is for a run on this host")) << fleet.err;
}

// Check runs share the lock, so several may end at once: each writes under a temporary name of its
// own, and what is left is one whole textfile and one whole record.
TEST(Drift, ConcurrentChecksLeaveOneWholeTextfile) {
  DriftHost h;
  std::vector<std::thread> runs;
  std::vector<int> codes(6, -1);
  for (size_t i = 0; i < codes.size(); ++i) runs.emplace_back([&, i] { codes[i] = h.check().exit_code; });
  for (auto& t : runs) t.join();
  EXPECT_EQ(codes, std::vector<int>(6, 2));
  const auto e = parse_exposition(slurp(h.textfile()));
  EXPECT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.samples.size(), 9u);
  EXPECT_EQ(h.textfile_dir(), std::vector<std::string>{"gptagent.prom"});
  EXPECT_EQ(nlohmann::json::parse(slurp(h.host.file(kLastRunPath)))["exit_code"], 2);
  std::vector<std::string> state_dir;
  for (const auto& f : fs::directory_iterator(h.host.file("/var/lib/gptagent")))
    state_dir.push_back(f.path().filename());
  EXPECT_EQ(state_dir, std::vector<std::string>{"last-run.json"});
}

TEST(Drift, StatusSaysWhenTheLastCheckRanAndWhatItFound) {
  DriftHost h;
  auto none = run_agent({"status", "--root", h.host.root()});
  EXPECT_EQ(none.exit_code, 0);
  EXPECT_TRUE(has(none.out, "no drift check recorded")) << none.out;
  EXPECT_TRUE(
      nlohmann::json::parse(run_agent({"status", "--root", h.host.root(), "--json"}).out)["last_run"].is_null());

  const auto before = std::time(nullptr);
  ASSERT_EQ(h.check().exit_code, 2);
  auto status = run_agent({"status", "--root", h.host.root()});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  static const std::regex line(
      R"(last drift check: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(\d+ seconds ago\): drift check of (.*): 3 tasks would change, exit 2)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(status.out, m, line)) << status.out;
  EXPECT_EQ(m[1], canonical(kDemo));
  EXPECT_TRUE(has(status.out, "no run is waiting for a reboot\n")) << status.out;

  auto doc = nlohmann::json::parse(run_agent({"status", "--root", h.host.root(), "--json"}).out);
  const auto& last = doc["last_run"];
  EXPECT_EQ(last["check"], true);
  EXPECT_EQ(last["exit_code"], 2);
  EXPECT_EQ(last["drift"], true);
  EXPECT_EQ(last["playbook"], canonical(kDemo));
  EXPECT_EQ(last["stats"]["changed"], 3);
  EXPECT_GE(last["finished_at"].get<int64_t>(), before);
  EXPECT_EQ(doc["waiting_for_reboot"], false);
}

TEST(Drift, AnOlderStateFileWithoutARecordStillLoads) {
  DriftHost h;
  // A state file as releases before the drift check wrote it, and no record of a check.
  test::write(h.host.file(kStatePath),
              R"({"version": 1, "phase": "waiting_for_reboot", "playbook": "/etc/gptagent/host.yaml",
    "playbook_sha256": "00", "stage": "host", "boot_id": "old-boot", "recorded_at": "2026-01-01 00:00:00",
    "next_stage": 1, "expect": {"cmdline_present": ["intel_iommu=on"]}})");
  auto status = run_agent({"status", "--root", h.host.root()});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_TRUE(has(status.out, "stage host of /etc/gptagent/host.yaml asked for a reboot")) << status.out;
  EXPECT_TRUE(has(status.out, "no drift check recorded")) << status.out;
  auto doc = nlohmann::json::parse(run_agent({"status", "--root", h.host.root(), "--json"}).out);
  EXPECT_EQ(doc["waiting_for_reboot"], true);
  EXPECT_TRUE(doc["last_run"].is_null());

  // A broken record is said, and the rest of the status still shown.
  test::write(h.host.file(kLastRunPath), "{not json");
  auto broken = run_agent({"status", "--root", h.host.root()});
  EXPECT_EQ(broken.exit_code, 0);
  EXPECT_TRUE(has(broken.err, std::string(kLastRunPath) + " is not valid JSON")) << broken.err;
  EXPECT_TRUE(has(broken.out, "asked for a reboot")) << broken.out;
}

// The units as installed, with ExecStart naming the built binary (verify wants it to exist).
TEST(Drift, SystemdUnitsPassVerify) {
  if (::access("/usr/bin/systemd-analyze", X_OK) != 0) GTEST_SKIP() << "systemd-analyze is not installed";
  const std::string service = slurp(test::source_path("agent/systemd/gptagent-drift.service.in"));
  const std::string timer = slurp(test::source_path("agent/systemd/gptagent-drift.timer"));
  EXPECT_TRUE(has(service, "Type=oneshot\n"));
  EXPECT_TRUE(has(service, "SuccessExitStatus=2\n"));
  EXPECT_TRUE(has(service, "ExecStart=@GPTAGENT_BINDIR@/gptagent apply --check --json --textfile ")) << service;
  EXPECT_FALSE(has(service, "[Install]")) << "the service is started by its timer only";
  EXPECT_TRUE(has(timer, "OnCalendar=hourly\n"));
  EXPECT_TRUE(has(timer, "Persistent=true\n"));
  EXPECT_TRUE(has(timer, "[Install]\nWantedBy=timers.target\n"));

  test::TempDir d;
  std::string installed = service;
  const std::string bindir = fs::path(GPTAGENT_BIN).parent_path().string();
  installed.replace(installed.find("@GPTAGENT_BINDIR@"), 17, bindir);
  ASSERT_FALSE(has(installed, "@"));
  test::write(d / "gptagent-drift.service", installed);
  test::write(d / "gptagent-drift.timer", timer);
  // --man=no: Documentation=man:gptagent(1) exists where the package installed it, not here.
  auto r = test::run_program("/usr/bin/systemd-analyze",
                             {"verify", "--man=no", d / "gptagent-drift.service", d / "gptagent-drift.timer"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "") << "warnings (an unknown key is only a warning)";

  // And verify does fail on a unit whose command does not exist, so the pass above means something.
  std::string broken = installed;
  broken.replace(broken.find(bindir + "/gptagent"), bindir.size() + 9, "/nonexistent/gptagent");
  test::write(d / "gptagent-drift.service", broken);
  EXPECT_NE(
      test::run_program("/usr/bin/systemd-analyze", {"verify", "--man=no", d / "gptagent-drift.service"}).exit_code, 0);
}

}  // namespace
}  // namespace gpt
