// Reporting: Ansible-like lines and RECAP for people, one JSON document for other tools.
#pragma once

#include <memory>
#include <ostream>
#include <streambuf>
#include <string>
#include <string_view>

#include "agent/runner.hpp"

namespace gpt {

struct ReportOptions {
  bool color = false;  // only on a terminal, never with NO_COLOR
  bool diff = false;   // print unified diffs of changes
  bool check = false;
  std::string playbook;
  std::string root;
  std::string host = "localhost";
};

std::unique_ptr<Reporter> make_human_reporter(std::ostream& out, const ReportOptions& opts);
std::unique_ptr<Reporter> make_json_reporter(std::ostream& out, const ReportOptions& opts);

// Colour is on when stdout is a terminal and NO_COLOR is unset or empty; `mode` is auto, always
// or never.
bool use_color(const std::string& mode);

// `text` with every control character written as \xHH, as ps(1) and systemd show them: C0 (a line
// break kept with `keep_line_breaks`, a tab always), DEL, and C1 whether a UTF-8 code point
// (U+0080..U+009F) or a stray byte; any byte that is no part of valid UTF-8 too. A name, message or
// file line another user chose then cannot move the cursor, erase a line, retitle the window or
// write the clipboard of whoever reads it.
std::string terminal_safe(std::string_view text, bool keep_line_breaks);

// The stream buffer under std::cout and std::cerr for people (main installs it): everything written
// passes terminal_safe on its way to `sink`, line breaks kept. JSON passes unchanged (it escapes
// its own). Our own escape sequences (colour) go past it with write_raw.
class TerminalSafeBuf final : public std::streambuf {
 public:
  explicit TerminalSafeBuf(std::streambuf* sink) : sink_(sink) {}
  ~TerminalSafeBuf() override { flush(true); }
  void raw(std::string_view bytes);

 protected:
  int_type overflow(int_type c) override;
  std::streamsize xsputn(const char* s, std::streamsize n) override;
  int sync() override;

 private:
  void flush(bool all);  // all: also an unfinished UTF-8 sequence at the end
  std::streambuf* sink_;
  std::string pending_;
};
// Writes bytes of ours (an SGR colour) to `out` unescaped, in order with what went before.
void write_raw(std::ostream& out, std::string_view bytes);

// "TEXT ****..." to 79 columns, as Ansible's banners.
std::string banner(const std::string& text);
// One task's line, for a local run and for each host of a fleet alike: "WORD: [WHERE] TEXT", the
// word as Ansible prints it (ok, changed, skipping, failed) for a status named as in the JSON
// report (ok, changed, skipped, failed; any other status as it is). WHERE is the task for a local
// run, the host for a fleet's.
std::string task_line(std::string_view status, const std::string& where, const std::string& text);
// One RECAP line, Ansible's columns.
std::string recap_line(const std::string& host, int ok, int changed, int unreachable, int failed, int skipped,
                       int ignored);

}  // namespace gpt
