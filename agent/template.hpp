// Variables: plain `{{ name }}` substitution (dotted paths into facts and mappings) and the small
// expression language of `when:` — not a template language.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "agent/expected.hpp"

namespace gpt {

class VarScope {
 public:
  // Precedence: extra vars (-e) over playbook vars; facts live under `facts.`.
  VarScope(nlohmann::json vars, nlohmann::json extra_vars, nlohmann::json facts);

  Expected<nlohmann::json> lookup(std::string_view dotted) const;
  bool defined(std::string_view dotted) const { return lookup(dotted).ok(); }
  // Substitutes every `{{ name }}` in the strings of `value`. A string that is exactly one
  // `{{ name }}` takes the variable's own type (a list stays a list).
  Expected<nlohmann::json> render(const nlohmann::json& value) const;
  // Evaluates a `when:` expression: names, 'strings', numbers, true/false, == != < <= > >=,
  // in, not in, is defined, is not defined, and, or, not, parentheses, [lists].
  Expected<bool> eval(std::string_view expr) const;

 private:
  Expected<nlohmann::json> render_at(const nlohmann::json& value, int depth) const;
  Expected<nlohmann::json> lookup_at(std::string_view dotted, int depth) const;
  nlohmann::json vars_, extra_, facts_;
  friend class ExprParser;
};

bool truthy(const nlohmann::json& v);

}  // namespace gpt
