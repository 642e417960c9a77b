#include "agent/report.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace gpt {
namespace {

const char* kGreen = "\033[0;32m";
const char* kYellow = "\033[0;33m";
const char* kRed = "\033[0;31m";
const char* kCyan = "\033[0;36m";
const char* kReset = "\033[0m";

}  // namespace

std::string banner(const std::string& text) {
  std::string line = text + " ";
  if (line.size() < 79) line.append(79 - line.size(), '*');
  return line;
}

std::string recap_line(const std::string& host, int ok, int changed, int unreachable, int failed, int skipped, int ignored) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%-26s : ok=%-4d changed=%-4d unreachable=%-4d failed=%-4d skipped=%-4d rescued=%-4d ignored=%-4d",
                host.c_str(), ok, changed, unreachable, failed, skipped, 0, ignored);
  std::string recap = buf;
  while (!recap.empty() && recap.back() == ' ') recap.pop_back();
  return recap;
}

namespace {

class HumanReporter final : public Reporter {
 public:
  HumanReporter(std::ostream& out, ReportOptions opts) : out_(out), opts_(std::move(opts)) {}

  void stage(const Stage& stage) override {
    out_ << "\n" << banner("STAGE [" + stage.name + "]") << "\n";
  }
  void handlers(const Stage& stage) override {
    out_ << banner("RUNNING HANDLERS [" + stage.name + "]") << "\n";
  }
  void task(const TaskReport& r) override {
    const char* color = kGreen;
    std::string word;
    switch (r.result.status) {
      case Outcome::ok: word = "ok"; break;
      case Outcome::changed: word = "changed"; color = kYellow; break;
      case Outcome::skipped: word = "skipping"; color = kCyan; break;
      case Outcome::failed: word = "failed"; color = kRed; break;
    }
    std::string line = word + ": [" + r.name + "]";
    if (!r.result.msg.empty()) line += " " + r.result.msg;
    if (r.ignored) line += " ...ignoring";
    paint(color, line);
    if (opts_.diff && !r.result.diff.empty()) out_ << r.result.diff;
  }
  void done(const RunStats& s, int exit_code) override {
    out_ << "\n" << banner("RECAP") << "\n";
    paint(s.failed ? kRed : s.changed ? kYellow : kGreen, recap_line(opts_.host, s.ok, s.changed, 0, s.failed, s.skipped, s.ignored));
    if (s.stopped_for_reboot && !opts_.check) {
      paint(kYellow, "stopped for a reboot after stage " + s.stop_stage +
                         ": reboot the host (or run with --reboot), then run gptagent apply again; it checks that the "
                         "changes took effect and goes on");
    } else if (s.stopped_for_reboot) {
      paint(kYellow, "a run would stop for a reboot after stage " + s.stop_stage);
    } else if (s.reboot_required) {
      std::string stages;
      for (const auto& st : s.reboot_stages) stages += (stages.empty() ? "" : ", ") + st;
      paint(kYellow, std::string(opts_.check ? "a reboot would be needed" : "a reboot is needed") +
                         " for the changes of stage " + stages + " to take effect");
    }
    if (opts_.check) {
      out_ << (exit_code == 2 ? "drift: the host differs from the playbook (check mode, nothing changed)"
               : exit_code == 0 ? "no drift: the host matches the playbook"
                                : "check failed")
           << "\n";
    }
    out_.flush();
  }

 private:
  void paint(const char* color, const std::string& text) {
    if (opts_.color) out_ << color << text << kReset << "\n";
    else out_ << text << "\n";
  }
  std::ostream& out_;
  ReportOptions opts_;
};

class JsonReporter final : public Reporter {
 public:
  JsonReporter(std::ostream& out, ReportOptions opts) : out_(out), opts_(std::move(opts)) {}

  void stage(const Stage& stage) override {
    doc_["stages"].push_back({{"name", stage.name}, {"tasks", nlohmann::json::array()}});
  }
  void handlers(const Stage&) override {}
  void task(const TaskReport& r) override {
    nlohmann::json t = {
        {"name", r.name},
        {"module", r.module},
        {"status", outcome_name(r.result.status)},
        {"changed", r.result.status == Outcome::changed},
        {"failed", r.result.status == Outcome::failed},
        {"ignored", r.ignored},
        {"handler", r.handler},
        {"msg", r.result.msg},
        {"diff", r.result.diff},
        {"reboot_required", r.result.reboot_required},
        {"commands", r.result.commands},
        {"data", r.result.data},
        {"seconds", r.seconds},
    };
    doc_["stages"].back()["tasks"].push_back(std::move(t));
  }
  void done(const RunStats& s, int exit_code) override {
    doc_["playbook"] = opts_.playbook;
    doc_["root"] = opts_.root;
    doc_["check"] = opts_.check;
    doc_["host"] = opts_.host;
    doc_["stats"] = {{"ok", s.ok},           {"changed", s.changed}, {"unreachable", 0},
                     {"failed", s.failed},   {"skipped", s.skipped}, {"rescued", 0},
                     {"ignored", s.ignored}};
    doc_["reboot_required"] = s.reboot_required;
    doc_["reboot_stages"] = s.reboot_stages;
    doc_["stopped_for_reboot"] = s.stopped_for_reboot;
    if (s.stopped_for_reboot) {
      doc_["stop_stage"] = s.stop_stage;
      doc_["expect_after_reboot"] = s.expect.to_json();
    }
    doc_["exit_code"] = exit_code;
    out_ << doc_.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    out_.flush();
  }

 private:
  std::ostream& out_;
  ReportOptions opts_;
  nlohmann::json doc_ = {{"stages", nlohmann::json::array()}};
};

}  // namespace

std::unique_ptr<Reporter> make_human_reporter(std::ostream& out, const ReportOptions& opts) {
  return std::make_unique<HumanReporter>(out, opts);
}
std::unique_ptr<Reporter> make_json_reporter(std::ostream& out, const ReportOptions& opts) {
  return std::make_unique<JsonReporter>(out, opts);
}

bool use_color(const std::string& mode) {
  if (mode == "always") return true;
  if (mode == "never") return false;
  const char* no_color = std::getenv("NO_COLOR");
  if (no_color && *no_color) return false;
  return ::isatty(STDOUT_FILENO) == 1;
}

}  // namespace gpt
