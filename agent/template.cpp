#include "agent/template.hpp"

#include <cctype>
#include <optional>

namespace gpt {

using json = nlohmann::json;

namespace {

constexpr int kMaxDepth = 16;

bool ident_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

bool is_dotted_name(std::string_view s) {
  if (s.empty() || !ident_start(s.front())) return false;
  bool after_dot = false;
  for (char c : s) {
    if (c == '.') {
      if (after_dot) return false;
      after_dot = true;
    } else if (!ident_char(c)) {
      return false;
    } else {
      after_dot = false;
    }
  }
  return !after_dot;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

bool truthy(const json& v) {
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) return v.get<double>() != 0;
  if (v.is_string()) {
    auto s = v.get<std::string>();
    return !s.empty() && s != "false" && s != "False" && s != "no" && s != "0";
  }
  return !v.empty();
}

VarScope::VarScope(json vars, json extra_vars, json facts)
    : vars_(std::move(vars)), extra_(std::move(extra_vars)), facts_(std::move(facts)) {
  if (!vars_.is_object()) vars_ = json::object();
  if (!extra_.is_object()) extra_ = json::object();
}

Expected<json> VarScope::lookup(std::string_view dotted) const { return lookup_at(dotted, 0); }

Expected<json> VarScope::lookup_at(std::string_view dotted, int depth) const {
  if (depth > kMaxDepth) return Error{"variables refer to each other too deeply (a loop?)"};
  std::string_view head = dotted.substr(0, dotted.find('.'));
  std::string_view rest = head.size() < dotted.size() ? dotted.substr(head.size() + 1) : "";
  const json* cur = nullptr;
  std::string key(head);
  if (extra_.contains(key))
    cur = &extra_[key];
  else if (vars_.contains(key))
    cur = &vars_[key];
  else if (key == "facts")
    cur = &facts_;
  if (!cur) return Error{"undefined variable '" + std::string(dotted) + "'"};
  json value = *cur;
  while (!rest.empty()) {
    std::string_view part = rest.substr(0, rest.find('.'));
    rest = part.size() < rest.size() ? rest.substr(part.size() + 1) : "";
    auto rendered = render_at(value, depth + 1);
    if (!rendered) return rendered;
    value = std::move(*rendered);
    std::string p(part);
    if (value.is_object() && value.contains(p)) {
      value = json(value[p]);
    } else if (value.is_array() && !p.empty() && p.find_first_not_of("0123456789") == std::string::npos &&
               std::stoul(p) < value.size()) {
      value = json(value[std::stoul(p)]);
    } else {
      return Error{"undefined variable '" + std::string(dotted) + "'"};
    }
  }
  return render_at(value, depth + 1);
}

Expected<json> VarScope::render(const json& value) const { return render_at(value, 0); }

Expected<json> VarScope::render_at(const json& value, int depth) const {
  if (depth > kMaxDepth) return Error{"variables refer to each other too deeply (a loop?)"};
  if (value.is_array()) {
    json out = json::array();
    for (const auto& v : value) {
      auto r = render_at(v, depth);
      if (!r) return r;
      out.push_back(std::move(*r));
    }
    return out;
  }
  if (value.is_object()) {
    json out = json::object();
    for (const auto& [k, v] : value.items()) {
      auto r = render_at(v, depth);
      if (!r) return r;
      out[k] = std::move(*r);
    }
    return out;
  }
  if (!value.is_string()) return value;
  const std::string& s = value.get_ref<const std::string&>();
  if (s.find("{{") == std::string::npos) return value;

  std::string out;
  size_t pos = 0;
  std::optional<json> whole;
  while (pos < s.size()) {
    size_t open = s.find("{{", pos);
    if (open == std::string::npos) {
      out.append(s, pos, std::string::npos);
      break;
    }
    size_t close = s.find("}}", open + 2);
    if (close == std::string::npos) return Error{"unclosed '{{' in \"" + s + "\""};
    out.append(s, pos, open - pos);
    std::string_view inner = trim(std::string_view(s).substr(open + 2, close - open - 2));
    if (!is_dotted_name(inner))
      return Error{"'{{ " + std::string(inner) +
                   " }}': only variable names are substituted (no filters or expressions)"};
    auto v = lookup_at(inner, depth + 1);
    if (!v) return v;
    if (open == 0 && close + 2 == s.size()) whole = *v;
    if (v->is_string())
      out += v->get<std::string>();
    else if (v->is_number() || v->is_boolean())
      out += v->dump();
    else if (!whole)
      return Error{"'" + std::string(inner) + "' is a list or mapping and cannot be part of a string"};
    pos = close + 2;
  }
  if (whole) return *whole;
  return json(out);
}

// Recursive descent over the `when:` grammar, evaluating as it parses.
class ExprParser {
 public:
  ExprParser(const VarScope& scope, std::string_view text) : scope_(scope), s_(text) {}

  Expected<bool> parse() {
    auto v = expr();
    if (!err_.empty()) return Error{err_};
    skip_ws();
    if (i_ < s_.size()) return Error{"unexpected '" + std::string(s_.substr(i_)) + "' in when: " + std::string(s_)};
    if (!v.undefined.empty()) return Error{v.undefined};
    return truthy(v.value);
  }

 private:
  struct Val {
    json value;
    std::string undefined;  // set when the value came from an undefined name
  };

  Val fail(std::string msg) {
    if (err_.empty()) err_ = std::move(msg);
    return {};
  }
  bool use(const Val& v) {
    if (!v.undefined.empty() && err_.empty()) err_ = v.undefined;
    return err_.empty();
  }

  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool keyword(std::string_view kw) {
    skip_ws();
    if (s_.substr(i_, kw.size()) != kw) return false;
    size_t end = i_ + kw.size();
    if (end < s_.size() && (ident_char(s_[end]) || s_[end] == '.')) return false;
    i_ = end;
    return true;
  }
  bool symbol(std::string_view sym) {
    skip_ws();
    if (s_.substr(i_, sym.size()) != sym) return false;
    i_ += sym.size();
    return true;
  }

  Val expr() {
    Val left = conj();
    while (err_.empty() && keyword("or")) {
      Val right = conj();
      if (!use(left) || !use(right)) return {};
      left = {truthy(left.value) || truthy(right.value), {}};
    }
    return left;
  }
  Val conj() {
    Val left = neg();
    while (err_.empty() && keyword("and")) {
      Val right = neg();
      if (!use(left) || !use(right)) return {};
      left = {truthy(left.value) && truthy(right.value), {}};
    }
    return left;
  }
  Val neg() {
    if (keyword("not")) {
      Val v = neg();
      if (!use(v)) return {};
      return {!truthy(v.value), {}};
    }
    return comparison();
  }
  Val comparison() {
    Val left = operand();
    if (!err_.empty()) return {};
    if (keyword("is")) {
      bool negate = keyword("not");
      if (!keyword("defined")) return fail("expected 'defined' after 'is'");
      bool def = left.undefined.empty();
      return {negate ? !def : def, {}};
    }
    static const char* ops[] = {"==", "!=", "<=", ">=", "<", ">"};
    for (const char* op : ops) {
      if (symbol(op)) {
        Val right = operand();
        if (!use(left) || !use(right)) return {};
        return {compare(op, left.value, right.value), {}};
      }
    }
    size_t save = i_;
    bool negate = keyword("not");
    if (keyword("in")) {
      Val right = operand();
      if (!use(left) || !use(right)) return {};
      bool found = false;
      if (right.value.is_array()) {
        for (const auto& e : right.value) found = found || e == left.value;
      } else if (right.value.is_string() && left.value.is_string()) {
        found = right.value.get<std::string>().find(left.value.get<std::string>()) != std::string::npos;
      } else if (right.value.is_object() && left.value.is_string()) {
        found = right.value.contains(left.value.get<std::string>());
      } else {
        return fail("'in' needs a list, a string or a mapping on its right");
      }
      return {negate ? !found : found, {}};
    }
    i_ = save;
    return left;
  }
  bool compare(std::string_view op, const json& a, const json& b) {
    if (op == "==") return a == b;
    if (op == "!=") return a != b;
    bool comparable = (a.is_number() && b.is_number()) || (a.is_string() && b.is_string());
    if (!comparable) {
      fail("cannot order " + a.dump() + " and " + b.dump());
      return false;
    }
    if (op == "<") return a < b;
    if (op == "<=") return a <= b;
    if (op == ">") return a > b;
    return a >= b;
  }
  Val operand() {
    skip_ws();
    if (i_ >= s_.size()) return fail("expression ends too early: " + std::string(s_));
    char c = s_[i_];
    if (c == '(') {
      ++i_;
      Val v = expr();
      if (!symbol(")")) return fail("missing ')' in: " + std::string(s_));
      return v;
    }
    if (c == '[') {
      ++i_;
      json list = json::array();
      if (symbol("]")) return {list, {}};
      do {
        Val v = expr();
        if (!use(v)) return {};
        list.push_back(v.value);
      } while (symbol(","));
      if (!symbol("]")) return fail("missing ']' in: " + std::string(s_));
      return {list, {}};
    }
    if (c == '\'' || c == '"') {
      size_t end = s_.find(c, i_ + 1);
      if (end == std::string_view::npos) return fail("unclosed string in: " + std::string(s_));
      std::string str(s_.substr(i_ + 1, end - i_ - 1));
      i_ = end + 1;
      return {str, {}};
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      size_t start = i_++;
      while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.')) ++i_;
      try {
        std::string num(s_.substr(start, i_ - start));
        if (num.find('.') != std::string::npos) return {std::stod(num), {}};
        return {std::stoll(num), {}};
      } catch (const std::exception&) {
        return fail("bad number in: " + std::string(s_));
      }
    }
    if (ident_start(c)) {
      size_t start = i_;
      while (i_ < s_.size() && (ident_char(s_[i_]) || s_[i_] == '.')) ++i_;
      std::string_view name = s_.substr(start, i_ - start);
      if (name == "true" || name == "True") return {true, {}};
      if (name == "false" || name == "False") return {false, {}};
      if (name == "none" || name == "None" || name == "null") return {nullptr, {}};
      if (!is_dotted_name(name)) return fail("bad name '" + std::string(name) + "'");
      auto v = scope_.lookup(name);
      if (!v) return {nullptr, v.error()};
      return {*v, {}};
    }
    if (s_.substr(i_, 2) == "{{") return fail("when: is already an expression; write the name without {{ }}");
    return fail("unexpected '" + std::string(s_.substr(i_)) + "' in when: " + std::string(s_));
  }

  const VarScope& scope_;
  std::string_view s_;
  size_t i_ = 0;
  std::string err_;
};

Expected<bool> VarScope::eval(std::string_view expr) const { return ExprParser(*this, expr).parse(); }

}  // namespace gpt
