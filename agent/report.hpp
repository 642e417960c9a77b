// Reporting: Ansible-like lines and RECAP for people, one JSON document for other tools.
#pragma once

#include <memory>
#include <ostream>
#include <string>

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

// "TEXT ****..." to 79 columns, as Ansible's banners.
std::string banner(const std::string& text);
// One RECAP line, Ansible's columns.
std::string recap_line(const std::string& host, int ok, int changed, int unreachable, int failed, int skipped, int ignored);

}  // namespace gpt
