#include "agent/argspec.hpp"

#include <algorithm>
#include <cctype>

#include "agent/text.hpp"

namespace gpt {

using json = nlohmann::json;

std::string_view arg_type_name(ArgType t) {
  switch (t) {
    case ArgType::str:
      return "a string";
    case ArgType::boolean:
      return "a boolean";
    case ArgType::integer:
      return "an integer";
    case ArgType::list:
      return "a list";
    case ArgType::dict:
      return "a mapping";
    case ArgType::any:
      return "a value";
  }
  return "?";
}

json with_defaults(const ModuleSchema& schema, json args) {
  if (!args.is_object()) args = json::object();
  for (const auto& spec : schema.args)
    if (!args.contains(spec.name) && !spec.default_value.is_null()) args[spec.name] = spec.default_value;
  return args;
}

json plain_scalar(const std::string& s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  // YAML 1.2 core integers and floats; anything else stays text.
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i < s.size() && s.find_first_not_of("0123456789", i) == std::string::npos && s.size() < 19) return std::stoll(s);
  if (s.find_first_not_of("0123456789.eE+-") == std::string::npos && std::count(s.begin(), s.end(), '.') == 1 &&
      std::isdigit(static_cast<unsigned char>(s.back()))) {
    try {
      size_t used = 0;
      double d = std::stod(s, &used);
      if (used == s.size()) return d;
    } catch (const std::exception&) {
    }
  }
  return s;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = 3;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

std::string json_type_phrase(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  return "a mapping";
}

std::string child_ptr(const std::string& ptr, const std::string& key) {
  std::string esc;
  for (char c : key) {
    if (c == '~')
      esc += "~0";
    else if (c == '/')
      esc += "~1";
    else
      esc += c;
  }
  return ptr + "/" + esc;
}

void ArgChecker::error(const std::string& ptr, bool key, std::string msg) {
  errors_.push_back({src_.locate(ptr, key), std::move(msg)});
}

bool ArgChecker::coerce(const ArgSpec& spec, ArgType type, const json& in, const std::string& ptr,
                        const std::string& label, json& out) {
  const bool strict = typing_ == Typing::strict;
  auto raw = [&]() -> std::string {
    if (!in.is_string())
      if (auto text = src_.plain_text(ptr)) return *text;
    return in.is_string() ? in.get<std::string>() : in.dump();
  };
  auto wrong = [&](std::string_view want) {
    error(ptr, false, label + " must be " + std::string(want) + ", not " + json_type_phrase(in));
    return false;
  };
  switch (type) {
    case ArgType::any:
      out = in;
      return true;
    case ArgType::str:
      if (in.is_array() || in.is_object() || in.is_null() || (strict && !in.is_string())) return wrong("a string");
      out = raw();
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), out.get<std::string>()) == spec.choices.end()) {
        error(ptr, false,
              label + " must be one of " + join(spec.choices, ", ") + ", not '" + out.get<std::string>() + "'");
        return false;
      }
      return true;
    case ArgType::boolean: {
      if (in.is_boolean()) {
        out = in;
        return true;
      }
      if (in.is_string() && !strict) {
        const std::string s = lower(in.get<std::string>());
        if (s == "yes" || s == "on" || s == "true" || s == "1") return out = true, true;
        if (s == "no" || s == "off" || s == "false" || s == "0") return out = false, true;
      }
      return wrong("a boolean (true or false)");
    }
    case ArgType::integer:
      if (in.is_number_integer()) {
        out = in;
        return true;
      }
      if (in.is_string() && !strict) {
        const std::string s = in.get<std::string>();
        if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos && s.size() < 19) {
          out = std::stoll(s);
          return true;
        }
      }
      return wrong("an integer");
    case ArgType::list: {
      if (strict && !in.is_array()) return wrong("a list");
      json items = in.is_array() ? in : json::array({in});  // one value is a list of one
      if (in.is_null()) items = json::array();
      out = json::array();
      bool good = true;
      for (size_t i = 0; i < items.size(); ++i) {
        const std::string ip = in.is_array() ? ptr + "/" + std::to_string(i) : ptr;
        json v;
        if (coerce(spec, spec.elements, items[i], ip, label + " item " + std::to_string(i + 1), v))
          out.push_back(std::move(v));
        else
          good = false;
      }
      return good;
    }
    case ArgType::dict:
      if (in.is_null() && !strict) {
        out = json::object();
      } else if (!in.is_object()) {
        return wrong("a mapping");
      } else {
        out = in;
      }
      if (spec.fields.empty()) return true;
      return fields(spec.fields, {}, {}, out, ptr, label + " ", out);
  }
  return false;
}

bool ArgChecker::fields(const std::vector<ArgSpec>& fields, const std::vector<std::vector<std::string>>& exclusive,
                        const std::vector<std::vector<std::string>>& one_of, const json& in, const std::string& ptr,
                        const std::string& prefix, json& out) {
  bool good = true;
  json result = json::object();
  std::vector<std::string> known;
  for (const auto& f : fields) known.push_back(f.name);
  for (const auto& [key, value] : in.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      error(child_ptr(ptr, key), true,
            prefix + "has no argument '" + key + "'" + did_you_mean(key, known) + "; it takes: " + join(known, ", "));
      good = false;
    }
  }
  for (const auto& f : fields) {
    const std::string fp = child_ptr(ptr, f.name);
    const std::string label = prefix + "argument '" + f.name + "'";
    if (!in.contains(f.name) || in[f.name].is_null()) {
      if (f.required) {
        error(ptr, true, prefix + "is missing the required argument '" + f.name + "'");
        good = false;
      } else if (!f.default_value.is_null()) {
        result[f.name] = f.default_value;
      }
      continue;
    }
    auto rendered = src_.render(in[f.name]);
    if (!rendered) {
      error(fp, false, rendered.error());
      good = false;
      continue;
    }
    json v;
    if (!coerce(f, f.type, *rendered, fp, label, v)) {
      good = false;
      continue;
    }
    if (f.check) {
      if (auto msg = f.check(v)) {
        error(fp, false, label + ": " + *msg);
        good = false;
        continue;
      }
    }
    result[f.name] = std::move(v);
  }
  for (const auto& group : exclusive) {
    std::vector<std::string> given;
    for (const auto& n : group)
      if (in.contains(n) && !in[n].is_null()) given.push_back(n);
    if (given.size() > 1) {
      error(ptr, true, prefix + "takes only one of " + join(given, ", "));
      good = false;
    }
  }
  for (const auto& group : one_of) {
    bool any = std::any_of(group.begin(), group.end(), [&](const auto& n) { return result.contains(n); });
    if (!any) {
      error(ptr, true, prefix + "needs one of " + join(group, ", "));
      good = false;
    }
  }
  out = std::move(result);
  return good;
}

bool ArgChecker::module_args(const ModuleSchema& schema, const json& in, const std::string& ptr,
                             const std::string& name, json& out) {
  if (!fields(schema.args, schema.mutually_exclusive, schema.required_one_of, in, ptr, name + " ", out)) return false;
  if (schema.check) {
    if (auto msg = schema.check(out)) {
      error(ptr, true, name + ": " + *msg);
      return false;
    }
  }
  return true;
}

Expected<json> check_args_strictly(const ModuleSchema& schema, const json& args, const std::string& name,
                                   const std::string& label) {
  LabelSource source(label);
  ArgChecker checker(source, Typing::strict);
  json out;
  if (!args.is_object())
    return Error{label + ": the arguments of " + name + " must be a mapping, not " + json_type_phrase(args)};
  if (checker.module_args(schema, args, "", name, out)) return out;
  std::string msg;
  for (const auto& e : checker.errors()) msg += (msg.empty() ? "" : "\n") + e.str();
  return Error{msg};
}

}  // namespace gpt
