#include "agent/metrics.hpp"

#include <cstdio>

#include "agent/host.hpp"
#include "agent/state.hpp"

namespace gpt {
namespace {

// The length of the valid UTF-8 sequence at the start of `s`, 0 when there is none.
size_t utf8_sequence(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto cont = [&](size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) > 0x9F)) return 0;  // overlong, surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if ((c == 0xF0 && b(1) < 0x90) || (c == 0xF4 && b(1) > 0x8F)) return 0;  // overlong, past U+10FFFF
    return 4;
  }
  return 0;
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

}  // namespace

std::string prometheus_label_value(std::string_view text) {
  std::string out;
  while (!text.empty()) {
    const size_t n = utf8_sequence(text);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      text.remove_prefix(1);
      continue;
    }
    if (text[0] == '\\')
      out += "\\\\";
    else if (text[0] == '"')
      out += "\\\"";
    else if (text[0] == '\n')
      out += "\\n";
    else
      out += text.substr(0, n);
    text.remove_prefix(n);
  }
  return out;
}

std::string run_metrics(const LastRun& run) {
  const std::string pb = "playbook=\"" + prometheus_label_value(run.playbook) + "\"";
  std::string out;
  auto metric = [&](const char* name, const char* help, const std::string& sample) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + sample;
  };
  auto sample = [&](const char* name, const std::string& labels, const std::string& value) {
    return std::string(name) + "{" + labels + "} " + value + "\n";
  };
  metric("gptagent_drift",
         "1 when the host differed from the playbook: tasks changed, or would change under --check, or a reboot is "
         "awaited.",
         sample("gptagent_drift", pb, run.drift() ? "1" : "0"));
  metric("gptagent_tasks", "Tasks of the last run by status (changed under --check: would change).",
         sample("gptagent_tasks", pb + ",status=\"ok\"", std::to_string(run.ok)) +
             sample("gptagent_tasks", pb + ",status=\"changed\"", std::to_string(run.changed)) +
             sample("gptagent_tasks", pb + ",status=\"failed\"", std::to_string(run.failed)) +
             sample("gptagent_tasks", pb + ",status=\"skipped\"", std::to_string(run.skipped)));
  metric("gptagent_last_run_timestamp_seconds", "When the last run ended, in seconds since the epoch.",
         sample("gptagent_last_run_timestamp_seconds", pb, std::to_string(run.finished_at)));
  metric("gptagent_last_run_duration_seconds", "How long the last run took.",
         sample("gptagent_last_run_duration_seconds", pb, number(run.duration_seconds)));
  metric("gptagent_last_run_exit_code",
         "Exit code of the last run: 0 converged or no drift, 1 failure, 2 drift found (--check), 3 stopped for a "
         "reboot.",
         sample("gptagent_last_run_exit_code", pb, std::to_string(run.exit_code)));
  metric("gptagent_waiting_for_reboot", "1 when a stage asked for a reboot that has not happened yet.",
         sample("gptagent_waiting_for_reboot", pb, run.waiting_for_reboot ? "1" : "0"));
  return out;
}

Status write_textfile(const Root& root, std::string_view path, const LastRun& run) {
  WriteOptions wo;
  wo.backup = false;  // the collector would read a backup ending in .prom as metrics too
  wo.no_follow = true;
  wo.create_dirs = false;  // node_exporter's package makes its directory; a missing one is a mistake
  wo.unique_temp = true;
  wo.guarded_dir = true;
  wo.create_mode = 0644;
  auto w = write_file_atomic(root, path, run_metrics(run), wo);
  if (!w) return Error{w.error()};
  return {};
}

}  // namespace gpt
