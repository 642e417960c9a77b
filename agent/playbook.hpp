// Playbook loading: YAML -> typed, validated stages and tasks, every error with file:line:col.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/template.hpp"

namespace gpt {

struct ModuleDef;

struct SourceMark {
  std::string file;
  int line = 0;  // 1-based
  int col = 0;   // 1-based
  std::string str() const;
};

struct Task {
  std::string name;  // as written, or the module's name
  const ModuleDef* module = nullptr;
  nlohmann::json args;  // validated, defaults filled, variables substituted
  SourceMark mark;
  std::string when_text;  // empty: no condition
  bool when = true;       // the condition's value for this run
  std::vector<std::string> notify;
  SourceMark notify_mark;
  std::vector<std::string> tags;
  bool ignore_errors = false;
};

enum class RebootPolicy { never, when_needed, always };

struct Stage {
  std::string name;
  RebootPolicy reboot = RebootPolicy::never;
  std::vector<Task> tasks;
  std::vector<Task> handlers;  // the stage's own; the playbook's are looked up after them
  SourceMark mark;
};

struct Playbook {
  std::string path;
  nlohmann::json vars = nlohmann::json::object();
  std::vector<Stage> stages;
  std::vector<Task> handlers;
};

struct LoadOptions {
  nlohmann::json extra_vars = nlohmann::json::object();
  nlohmann::json facts = nlohmann::json::object();
  size_t max_bytes = 8u << 20;  // a playbook larger than this is refused
};

struct LoadResult {
  Playbook playbook;
  std::vector<std::string> errors;  // "file:line:col: message", all of them, in file order
  bool ok() const { return errors.empty(); }
};

// Reads and validates a playbook from the controller's file system (not under --root).
LoadResult load_playbook(const std::string& path, const LoadOptions& opts);
// The same from text; `path` names it in messages.
LoadResult load_playbook_text(const std::string& text, const std::string& path, const LoadOptions& opts);

// Parses `-e key=value` (value as YAML scalar: numbers and booleans typed) or `-e @file.yaml`.
Expected<nlohmann::json> parse_extra_var(const std::string& arg);
// The variables a JSON object text gives, as `-e @file` takes them (a fleet's controller checks
// with it each host's vars.json before any host runs); `what` starts the message for a text that
// is no JSON object ("vars.json does not hold").
Expected<nlohmann::json> parse_extra_vars_text(const std::string& text, const std::string& what);

}  // namespace gpt
