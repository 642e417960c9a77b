// The one reader of YAML in the agent (playbooks, inventories, vars files): it parses with
// yaml-cpp, places every message at file:line:col, and converts nodes to JSON within bounds that
// an alias bomb cannot pass.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gpt {

class YamlReader {
 public:
  // Where a message goes: its place (file:line:col) and its text.
  using Sink = std::function<void(const std::string& where, const std::string& msg)>;
  // What a plain scalar (untagged and unquoted) means: YAML 1.2's core schema for playbooks
  // (plain_scalar), YAML 1.1's for inventories as Ansible reads them. Every other scalar is text.
  using Plain = nlohmann::json (*)(const std::string&);
  // Told of every value converted: its JSON pointer, its node and its key's node (none for a list
  // item or the document).
  using Seen = std::function<void(const std::string& ptr, const YAML::Node& value, const YAML::Node* key)>;

  YamlReader(std::string file, Plain plain, Sink sink)
      : file_(std::move(file)), plain_(plain), sink_(std::move(sink)) {}

  std::string where(const YAML::Mark& m) const;
  std::string where(const YAML::Node& n) const { return where(n.Mark()); }
  void error(const YAML::Node& n, const std::string& msg) const { sink_(where(n), msg); }
  // "a list", "a mapping", "null" or "a scalar".
  static std::string kind(const YAML::Node& n);

  // The document; nullopt after a syntax error or nesting deeper than yaml-cpp follows.
  std::optional<YAML::Node> load(const std::string& text) const;
  // A mapping's entries in document order. A key that is not a scalar, or one given twice, is an
  // error and its entry is left out (PyYAML would keep the last of two silently).
  std::vector<std::pair<YAML::Node, YAML::Node>> entries(const YAML::Node& map) const;
  // The node as JSON. False when it cannot be read whole: it expands past kMaxNodes values or
  // kMaxExpandedBytes bytes (one message for the document), or a key is not a scalar.
  bool to_json(const YAML::Node& node, nlohmann::json& out, const Seen& seen = {});

  static constexpr size_t kMaxNodes = 200000;  // an alias bomb expands past this long before it hurts
  // The same for bytes: a few aliases of a long string (or of a mapping with a long key) are few
  // values but many bytes. An 8 MiB playbook without aliases holds far less than this.
  static constexpr size_t kMaxExpandedBytes = 32u << 20;

 private:
  bool convert(const YAML::Node& node, const std::string& ptr, const YAML::Node* key, nlohmann::json& out,
               const Seen& seen);

  std::string file_;
  Plain plain_;
  Sink sink_;
  size_t nodes_ = 0, bytes_ = 0;
};

}  // namespace gpt
