// Declared module arguments (ArgSpec) and the one validator that checks JSON against them, for a
// playbook, a handler request made in code and one read back from the state file alike.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/expected.hpp"

namespace gpt {

enum class ArgType { str, boolean, integer, list, dict, any };
std::string_view arg_type_name(ArgType t);

// One declared argument, in the spirit of Ansible's argument_spec.
struct ArgSpec {
  std::string name;
  ArgType type = ArgType::str;
  bool required = false;
  nlohmann::json default_value = {};      // null: no default
  std::vector<std::string> choices = {};  // for str
  ArgType elements = ArgType::str;        // for list
  std::vector<ArgSpec> fields = {};       // for dict (and list of dict); empty: any keys
  // A semantic check of the typed value: a message when it is wrong.
  std::function<std::optional<std::string>(const nlohmann::json&)> check = {};
  std::string doc = {};         // one line for `gptagent doc` and the schema's description
  nlohmann::json example = {};  // a value as a playbook writes it (null: none)
};

struct ModuleSchema {
  std::vector<ArgSpec> args = {};
  std::vector<std::vector<std::string>> mutually_exclusive = {};
  std::vector<std::vector<std::string>> required_one_of = {};
  // A check of the arguments together (after each one passed its own): a message when wrong.
  std::function<std::optional<std::string>(const nlohmann::json&)> check = {};
};

// The arguments with the schema's defaults filled in (no checks).
nlohmann::json with_defaults(const ModuleSchema& schema, nlohmann::json args);

// A YAML plain (unquoted) scalar typed as the loader types it: null, true/false, YAML 1.2 core
// integers and floats; anything else stays text. `-e key=value` types its value the same way.
nlohmann::json plain_scalar(const std::string& s);

// Levenshtein distance, for "did you mean" hints.
size_t edit_distance(std::string_view a, std::string_view b);
// " (did you mean 'X'?)" for the candidate nearest `word` (fewer than 3 edits away), or "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

// "a string", "a list"...: what a JSON value is, as messages name it.
std::string json_type_phrase(const nlohmann::json& v);

// A JSON pointer's child: `key` escaped (~0, ~1) and appended.
std::string child_ptr(const std::string& ptr, const std::string& key);

// Where the values being checked came from, for messages: a playbook maps a JSON pointer to its
// file:line:col; other callers name the whole input ("state.json", "-e").
class ArgSource {
 public:
  virtual ~ArgSource() = default;
  // Where the value at `ptr` (or, with `key`, its key) is: what a message starts with.
  virtual std::string locate(const std::string& ptr, bool key) const = 0;
  // The text an unquoted scalar at `ptr` was written as (`1.10` for the number 1.1), if it was one:
  // a string argument takes that text.
  virtual std::optional<std::string> plain_text(const std::string& /*ptr*/) const { return std::nullopt; }
  // The value with its variables substituted, before it is checked; by default the value itself.
  virtual Expected<nlohmann::json> render(const nlohmann::json& value) const { return value; }
};

// A source that names its input with one label.
class LabelSource final : public ArgSource {
 public:
  explicit LabelSource(std::string label) : label_(std::move(label)) {}
  std::string locate(const std::string& /*ptr*/, bool /*key*/) const override { return label_; }

 private:
  std::string label_;
};

struct ArgError {
  std::string where;  // from ArgSource::locate
  std::string msg;
  std::string str() const { return where + ": " + msg; }
};

// How values are typed: as a YAML author writes them (`yes` is a boolean, `8` a string where one
// is asked, one value a list of one), or strictly, as a program writes JSON (the state file, a
// module's handler request).
enum class Typing { yaml, strict };

// Checks JSON against declared arguments: types them, fills defaults, and collects every error.
class ArgChecker {
 public:
  explicit ArgChecker(const ArgSource& source, Typing typing = Typing::yaml) : src_(source), typing_(typing) {}

  // A module's arguments (`in` is a mapping at `ptr`): each declared one, the groups, the
  // module's own check. `name` starts the messages ("vfio has no argument 'x'").
  bool module_args(const ModuleSchema& schema, const nlohmann::json& in, const std::string& ptr,
                   const std::string& name, nlohmann::json& out);
  // The fields of a mapping; `prefix` starts the messages ("vfio ", or "vfio argument 'x' ").
  bool fields(const std::vector<ArgSpec>& fields, const std::vector<std::vector<std::string>>& exclusive,
              const std::vector<std::vector<std::string>>& one_of, const nlohmann::json& in, const std::string& ptr,
              const std::string& prefix, nlohmann::json& out);
  // One value typed as `type` (the spec's own type, or its elements'); `label` names it.
  bool coerce(const ArgSpec& spec, ArgType type, const nlohmann::json& in, const std::string& ptr,
              const std::string& label, nlohmann::json& out);

  const std::vector<ArgError>& errors() const { return errors_; }
  // The errors so far, which the checker forgets.
  std::vector<ArgError> take_errors() { return std::exchange(errors_, {}); }

 private:
  void error(const std::string& ptr, bool key, std::string msg);

  const ArgSource& src_;
  Typing typing_;
  std::vector<ArgError> errors_;
};

// Checks `args` strictly against a schema with `label` as the place: the typed arguments with
// defaults filled, or every message ("LABEL: msg"), one a line.
Expected<nlohmann::json> check_args_strictly(const ModuleSchema& schema, const nlohmann::json& args,
                                             const std::string& name, const std::string& label);

}  // namespace gpt
