#include "agent/report.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "agent/text.hpp"

namespace gpt {
namespace {

const char* kGreen = "\033[0;32m";
const char* kYellow = "\033[0;33m";
const char* kRed = "\033[0;31m";
const char* kCyan = "\033[0;36m";
const char* kReset = "\033[0m";

// The length of the valid UTF-8 sequence at the start of `s` (1 to 4), 0 when there is none; -1
// when `s` ends inside what could still become one.
int utf8_length(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = b(0);
  if (lead < 0xc2 || lead > 0xf4) return 0;
  const int n = lead <= 0xdf ? 2 : lead <= 0xef ? 3 : 4;
  // The second byte's range: no overlong form (E0, F0), no surrogate (ED), nothing past U+10FFFF (F4).
  const unsigned char lo = lead == 0xe0 ? 0xa0 : lead == 0xf0 ? 0x90 : 0x80;
  const unsigned char hi = lead == 0xed ? 0x9f : lead == 0xf4 ? 0x8f : 0xbf;
  for (int i = 1; i < n; ++i) {
    if (static_cast<size_t>(i) >= s.size()) return -1;
    if (b(i) < (i == 1 ? lo : 0x80) || b(i) > (i == 1 ? hi : 0xbf)) return 0;
  }
  return n;
}

void escape_byte(std::string& out, unsigned char c) {
  static const char* hex = "0123456789abcdef";
  out += "\\x";
  out += hex[c >> 4];
  out += hex[c & 15];
}

// The escaped text of `s`, up to an unfinished UTF-8 sequence at its end unless `all`; `used`
// says how many bytes that was.
std::string escape(std::string_view s, bool keep_line_breaks, bool all, size_t& used) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if ((c < 0x20 && c != '\t' && !(c == '\n' && keep_line_breaks)) || c == 0x7f)
        escape_byte(out, c);
      else
        out += static_cast<char>(c);
      ++i;
      continue;
    }
    const int n = utf8_length(s.substr(i));
    if (n < 0 && !all) break;
    // U+0080..U+009F is C2 80..C2 9F: C1 controls, escaped like the stray bytes.
    if (n <= 0 || (n == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) <= 0x9f)) {
      const size_t k = n == 2 ? 2 : 1;
      for (size_t j = 0; j < k; ++j) escape_byte(out, static_cast<unsigned char>(s[i + j]));
      i += k;
      continue;
    }
    out.append(s.substr(i, static_cast<size_t>(n)));
    i += static_cast<size_t>(n);
  }
  used = i;
  return out;
}

}  // namespace

std::string terminal_safe(std::string_view text, bool keep_line_breaks) {
  size_t used = 0;
  return escape(text, keep_line_breaks, true, used);
}

void TerminalSafeBuf::flush(bool all) {
  if (pending_.empty()) return;
  size_t used = 0;
  const std::string out = escape(pending_, true, all, used);
  sink_->sputn(out.data(), static_cast<std::streamsize>(out.size()));
  pending_.erase(0, used);
}

TerminalSafeBuf::int_type TerminalSafeBuf::overflow(int_type c) {
  if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
  pending_ += traits_type::to_char_type(c);
  if (c == '\n') flush(false);
  return c;
}

std::streamsize TerminalSafeBuf::xsputn(const char* s, std::streamsize n) {
  pending_.append(s, static_cast<size_t>(n));
  if (pending_.find('\n') != std::string::npos) flush(false);
  return n;
}

int TerminalSafeBuf::sync() {
  flush(false);
  return sink_->pubsync();
}

void TerminalSafeBuf::raw(std::string_view bytes) {
  flush(true);
  sink_->sputn(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void write_raw(std::ostream& out, std::string_view bytes) {
  if (auto* safe = dynamic_cast<TerminalSafeBuf*>(out.rdbuf())) {
    out.flush();
    safe->raw(bytes);
  } else {
    out << bytes;
  }
}

std::string banner(const std::string& text) {
  std::string line = text + " ";
  if (line.size() < 79) line.append(79 - line.size(), '*');
  return line;
}

std::string task_line(std::string_view status, const std::string& where, const std::string& text) {
  const std::string word = status == "skipped" ? "skipping" : std::string(status);
  return word + ": [" + where + "]" + (text.empty() ? "" : " " + text);
}

std::string recap_line(const std::string& host, int ok, int changed, int unreachable, int failed, int skipped,
                       int ignored) {
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
    out_ << "\n";
    line(banner("STAGE [" + stage.name + "]"));
  }
  void handlers(const Stage& stage) override { line(banner("RUNNING HANDLERS [" + stage.name + "]")); }
  void task(const TaskReport& r) override {
    const char* color = kGreen;
    switch (r.result.status) {
      case Outcome::ok:
        break;
      case Outcome::changed:
        color = kYellow;
        break;
      case Outcome::skipped:
        color = kCyan;
        break;
      case Outcome::failed:
        color = kRed;
        break;
    }
    std::string line = task_line(outcome_name(r.result.status), r.name, r.result.msg);
    if (r.ignored) line += " ...ignoring";
    paint(color, line);
    if (opts_.diff && !r.result.diff.empty()) out_ << terminal_safe(r.result.diff, true);
  }
  void done(const RunStats& s, int exit_code) override {
    out_ << "\n";
    line(banner("RECAP"));
    paint(s.failed    ? kRed
          : s.changed ? kYellow
                      : kGreen,
          recap_line(opts_.host, s.ok, s.changed, 0, s.failed, s.skipped, s.ignored));
    if (s.stopped_for_reboot && !opts_.check) {
      paint(kYellow, "stopped for a reboot after stage " + s.stop_stage +
                         ": reboot the host (or run with --reboot), then run gptagent apply again; it checks that the "
                         "changes took effect and goes on");
    } else if (s.stopped_for_reboot) {
      paint(kYellow, "a run would stop for a reboot after stage " + s.stop_stage);
    } else if (s.reboot_required) {
      paint(kYellow, std::string(opts_.check ? "a reboot would be needed" : "a reboot is needed") +
                         " for the changes of stage " + join(s.reboot_stages, ", ") + " to take effect");
    }
    if (opts_.check) {
      out_ << (exit_code == 2   ? "drift: the host differs from the playbook (check mode, nothing changed)"
               : exit_code == 0 ? "no drift: the host matches the playbook"
                                : "check failed")
           << "\n";
    }
    out_.flush();
  }

 private:
  // Every line of the report is written here: escaped whole (a line break in a name or message
  // would fake a line of ours), with our colour around it.
  void paint(const char* color, const std::string& text) {
    if (opts_.color) write_raw(out_, color);
    out_ << terminal_safe(text, false);
    if (opts_.color) write_raw(out_, kReset);
    out_ << "\n";
  }
  void line(const std::string& text) { out_ << terminal_safe(text, false) << "\n"; }
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
    doc_["stats"] = {{"ok", s.ok},           {"changed", s.changed}, {"unreachable", 0},    {"failed", s.failed},
                     {"skipped", s.skipped}, {"rescued", 0},         {"ignored", s.ignored}};
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
