#include "agent/yaml.hpp"

#include <yaml-cpp/depthguard.h>

#include <algorithm>
#include <set>

#include "agent/argspec.hpp"

namespace gpt {

using json = nlohmann::json;

namespace {

// yaml-cpp 0.7 (Debian 12) names it depth(), 0.6.3 (Debian 11, where the agent to ship is built:
// scripts/build-portable) AtDepth().
template <class DeepRecursion>
int recursion_depth(const DeepRecursion& e) {
  if constexpr (requires { e.depth(); })
    return e.depth();
  else
    return e.AtDepth();
}

}  // namespace

std::string YamlReader::where(const YAML::Mark& m) const {
  return file_ + ":" + std::to_string(std::max(m.line, 0) + 1) + ":" + std::to_string(std::max(m.column, 0) + 1);
}

std::string YamlReader::kind(const YAML::Node& n) {
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  if (n.IsNull()) return "null";
  return "a scalar";
}

std::optional<YAML::Node> YamlReader::load(const std::string& text) const {
  try {
    return YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    sink_(where(e.mark), "the document is nested deeper than " + std::to_string(recursion_depth(e) - 1) + " levels");
  } catch (const YAML::Exception& e) {
    sink_(where(e.mark), "YAML syntax error: " + e.msg);
  }
  return std::nullopt;
}

std::vector<std::pair<YAML::Node, YAML::Node>> YamlReader::entries(const YAML::Node& map) const {
  std::vector<std::pair<YAML::Node, YAML::Node>> out;
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar()) {
      error(kv.first, "a mapping key must be a name, not " + kind(kv.first));
      continue;
    }
    if (!seen.insert(kv.first.Scalar()).second) {
      error(kv.first, "duplicate key '" + kv.first.Scalar() + "'");
      continue;
    }
    out.emplace_back(kv.first, kv.second);
  }
  return out;
}

bool YamlReader::to_json(const YAML::Node& node, json& out, const Seen& seen) {
  return convert(node, "", nullptr, out, seen);
}

bool YamlReader::convert(const YAML::Node& node, const std::string& ptr, const YAML::Node* key, json& out,
                         const Seen& seen) {
  if (++nodes_ > kMaxNodes) {
    if (nodes_ == kMaxNodes + 1)
      error(node, "the document expands to more than " + std::to_string(kMaxNodes) + " values (an alias bomb?)");
    return false;
  }
  // What this value costs to hold: its path, and its text (keys are counted below).
  bytes_ += ptr.size() + (node.Type() == YAML::NodeType::Scalar ? node.Scalar().size() : 0);
  if (bytes_ > kMaxExpandedBytes) {
    error(node, "the document expands to more than " + std::to_string(kMaxExpandedBytes) + " bytes (an alias bomb?)");
    nodes_ = kMaxNodes + 1;  // one message, and every caller stops
    return false;
  }
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      // Only plain, untagged scalars are resolved: quoted ones and !unsafe / !vault / !!str stay text.
      out = node.Tag() == "?" ? plain_(node.Scalar()) : json(node.Scalar());
      break;
    case YAML::NodeType::Sequence: {
      out = json::array();
      size_t i = 0;
      for (const auto& item : node) {
        json v;
        if (!convert(item, ptr + "/" + std::to_string(i++), nullptr, v, seen)) return false;
        out.push_back(std::move(v));
      }
      break;
    }
    case YAML::NodeType::Map: {
      out = json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) {
          error(kv.first, "a mapping key must be a name, not " + kind(kv.first));
          return false;
        }
        const std::string& k = kv.first.Scalar();
        bytes_ += k.size();
        if (out.contains(k)) {
          error(kv.first, "duplicate key '" + k + "'");
          continue;
        }
        json v;
        if (!convert(kv.second, child_ptr(ptr, k), &kv.first, v, seen)) return false;
        out[k] = std::move(v);
      }
      break;
    }
    default:
      out = nullptr;
  }
  if (seen) seen(ptr, node, key);
  return true;
}

}  // namespace gpt
