#include "agent/playbook.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "agent/argspec.hpp"
#include "agent/module.hpp"
#include "agent/text.hpp"
#include "agent/yaml.hpp"

namespace gpt {

using json = nlohmann::json;

std::string SourceMark::str() const { return file + ":" + std::to_string(line) + ":" + std::to_string(col); }

namespace {

// The offset of the first byte that is not part of well-formed UTF-8, or npos.
size_t invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t len = b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 0;
    if (len == 0 || i + len > s.size() || (len == 2 && b < 0xc2) || (len == 4 && b > 0xf4)) return i;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return i;
    const auto b1 = static_cast<unsigned char>(s[i + 1 < s.size() ? i + 1 : i]);
    if ((len == 3 && b == 0xe0 && b1 < 0xa0) || (len == 3 && b == 0xed && b1 > 0x9f) ||  // overlong, surrogates
        (len == 4 && b == 0xf0 && b1 < 0x90) || (len == 4 && b == 0xf4 && b1 > 0x8f))    // overlong, > U+10FFFF
      return i;
    i += len;
  }
  return std::string_view::npos;
}

// Where each value came from: JSON pointer -> the marks of its key and value, and the scalar text.
struct Origin {
  SourceMark value;
  SourceMark key;
  std::string raw;
  bool plain = false;  // an unquoted scalar
};

class Loader final : public ArgSource {
 public:
  Loader(std::string file, const LoadOptions& opts) : file_(std::move(file)), opts_(opts) {}

  LoadResult run(const std::string& text) {
    LoadResult result;
    YamlReader reader(file_, plain_scalar,
                      [this](const std::string& where, const std::string& msg) { error(where, msg); });
    auto loaded = reader.load(text);
    if (!loaded) {
      result.errors = std::move(errors_);
      return result;
    }
    const YAML::Node& doc = *loaded;
    SourceMark top = mark_at(0, 0);
    if (!doc.IsDefined() || doc.IsNull()) {
      result.errors.push_back(top.str() + ": the playbook is empty");
      return result;
    }
    json tree;
    const auto seen = [this](const std::string& ptr, const YAML::Node& node, const YAML::Node* key) {
      Origin o{mark_of(node), key ? mark_of(*key) : SourceMark{}, {}, false};
      if (node.IsScalar()) {
        o.raw = node.Scalar();
        o.plain = node.Tag() == "?";
      }
      origins_[ptr] = std::move(o);
    };
    if (!reader.to_json(doc, tree, seen)) {
      result.errors = std::move(errors_);
      return result;
    }
    interpret(tree, result.playbook);
    result.playbook.path = file_;
    std::stable_sort(errors_.begin(), errors_.end(),
                     [](const auto& a, const auto& b) { return sort_key(a) < sort_key(b); });
    result.errors = std::move(errors_);
    return result;
  }

 private:
  static std::pair<long, long> sort_key(const std::string& err) {
    // "file:line:col: message" -> (line, col)
    long line = 0, col = 0;
    size_t msg = err.find(": ");
    std::string head = err.substr(0, msg);
    size_t c2 = head.find_last_of(':');
    size_t c1 = c2 == std::string::npos ? std::string::npos : head.find_last_of(':', c2 - 1);
    if (c1 != std::string::npos) {
      line = std::atol(head.c_str() + c1 + 1);
      col = std::atol(head.c_str() + c2 + 1);
    }
    return {line, col};
  }

  SourceMark mark_at(int line0, int col0) const {
    return SourceMark{file_, std::max(line0, 0) + 1, std::max(col0, 0) + 1};
  }
  SourceMark mark_of(const YAML::Node& n) const { return mark_at(n.Mark().line, n.Mark().column); }

  void error(const SourceMark& m, const std::string& msg) { error(m.str(), msg); }
  void error(const std::string& where, const std::string& msg) {
    // A message quotes what it is about: a 7 MiB value is shown by its ends.
    constexpr size_t kHead = 400, kTail = 200;
    if (msg.size() <= kHead + kTail + 100) {
      errors_.push_back(where + ": " + msg);
      return;
    }
    errors_.push_back(where + ": " + msg.substr(0, kHead) + "[... " + std::to_string(msg.size() - kHead - kTail) +
                      " bytes ...]" + msg.substr(msg.size() - kTail));
  }

  // The mark for a pointer: its own, or the nearest parent's.
  SourceMark where(std::string ptr, bool key = false) const {
    for (;;) {
      auto it = origins_.find(ptr);
      if (it != origins_.end()) return key && it->second.key.line ? it->second.key : it->second.value;
      if (ptr.empty()) return mark_at(0, 0);
      ptr = ptr.substr(0, ptr.find_last_of('/'));
      key = false;
    }
  }

  // ArgSource: the checker's messages carry the playbook's file:line:col.
  std::string locate(const std::string& ptr, bool key) const override { return where(ptr, key).str(); }
  std::optional<std::string> plain_text(const std::string& ptr) const override {
    auto it = origins_.find(ptr);
    if (it == origins_.end() || !it->second.plain) return std::nullopt;
    return it->second.raw;
  }
  Expected<json> render(const json& value) const override { return scope_->render(value); }

  // The checker's errors, in the order it found them, as the loader's own.
  bool drain(ArgChecker& checker, bool good) {
    for (auto& e : checker.take_errors()) error(e.where, e.msg);
    return good;
  }

  // ---- playbook structure ----

  std::vector<std::string> string_list(const json& v, const std::string& ptr, const std::string& what) {
    std::vector<std::string> out;
    auto one = [&](const json& item, const std::string& p) {
      if (item.is_string())
        out.push_back(item.get<std::string>());
      else
        error(where(p), what + " must be a name or a list of names");
    };
    if (v.is_array()) {
      for (size_t i = 0; i < v.size(); ++i) one(v[i], ptr + "/" + std::to_string(i));
    } else if (!v.is_null()) {
      one(v, ptr);
    }
    return out;
  }

  std::optional<Task> task(const json& t, const std::string& ptr, bool handler) {
    static const std::vector<std::string> keywords = {"name", "when", "notify", "tags", "ignore_errors"};
    if (!t.is_object()) {
      error(where(ptr), std::string(handler ? "a handler" : "a task") +
                            " must be a mapping with a module, e.g. `- grub_cmdline: {...}`");
      return std::nullopt;
    }
    Task out;
    out.mark = where(ptr);
    bool good = true;
    std::vector<std::string> modules;
    for (const auto& [key, value] : t.items()) {
      if (std::find(keywords.begin(), keywords.end(), key) != keywords.end()) continue;
      if (Registry::instance().find(key)) {
        modules.push_back(key);
        continue;
      }
      std::vector<std::string> candidates = Registry::instance().names();
      candidates.insert(candidates.end(), keywords.begin(), keywords.end());
      error(where(child_ptr(ptr, key), true),
            "unknown module or task keyword '" + key + "'" + did_you_mean(key, candidates));
      good = false;
    }
    if (modules.size() > 1) {
      error(where(ptr), "a task runs one module, this one names " + join(modules, ", "));
      return std::nullopt;
    }
    if (modules.empty()) {
      if (good)
        error(where(ptr), "the task names no module; known modules: " + join(Registry::instance().names(), ", "));
      return std::nullopt;
    }
    const std::string& mod = modules.front();
    out.module = Registry::instance().find(mod);
    if (t.contains("name")) {
      auto name = scope_->render(t["name"]);
      if (!name || !name->is_string()) {
        error(where(child_ptr(ptr, "name")), name ? "name must be a string" : name.error());
        good = false;
      } else {
        out.name = name->get<std::string>();
      }
    }
    if (out.name.empty()) {
      if (handler) {
        error(where(ptr), "a handler needs a name: tasks notify it by name");
        good = false;
      }
      out.name = mod;
    }
    const std::string mp = child_ptr(ptr, mod);
    const json& raw_args = t[mod];
    if (!raw_args.is_null() && !raw_args.is_object()) {
      error(where(mp),
            "the arguments of " + mod + " must be a mapping (key: value), not " + json_type_phrase(raw_args));
      good = false;
    } else {
      json in = raw_args.is_null() ? json::object() : raw_args;
      json args;
      ArgChecker checker(*this);
      if (!drain(checker, checker.module_args(out.module->schema, in, mp, mod, args))) good = false;
      if (good && !handler && out.module->handler_only)
        if (auto msg = out.module->handler_only(args)) {
          error(where(mp, true), mod + ": " + *msg);
          good = false;
        }
      out.args = std::move(args);
    }
    if (t.contains("when")) {
      const json& w = t["when"];
      std::vector<std::string> conds;
      if (w.is_boolean())
        conds.push_back(w.get<bool>() ? "true" : "false");
      else
        conds = string_list(w, child_ptr(ptr, "when"), "when");
      for (const auto& c : conds) {
        if (!out.when_text.empty()) out.when_text += " and ";
        out.when_text += conds.size() > 1 ? "(" + c + ")" : c;
        auto v = scope_->eval(c);
        if (!v) {
          error(where(child_ptr(ptr, "when")), "when: " + v.error());
          good = false;
        } else {
          out.when = out.when && *v;
        }
      }
    }
    if (t.contains("notify")) {
      out.notify = string_list(t["notify"], child_ptr(ptr, "notify"), "notify");
      out.notify_mark = where(child_ptr(ptr, "notify"));
      if (handler && !out.notify.empty()) {
        error(where(child_ptr(ptr, "notify")), "a handler cannot notify other handlers");
        good = false;
      }
    }
    if (t.contains("tags")) out.tags = string_list(t["tags"], child_ptr(ptr, "tags"), "tags");
    if (t.contains("ignore_errors")) {
      ArgSpec spec{.name = "ignore_errors", .type = ArgType::boolean};
      json v;
      ArgChecker checker(*this);
      if (drain(checker, checker.coerce(spec, ArgType::boolean, t["ignore_errors"], child_ptr(ptr, "ignore_errors"),
                                        "ignore_errors", v)))
        out.ignore_errors = v.get<bool>();
      else
        good = false;
    }
    if (!good) return std::nullopt;
    return out;
  }

  std::vector<Task> task_list(const json& list, const std::string& ptr, bool handlers) {
    std::vector<Task> out;
    if (list.is_null()) return out;
    if (!list.is_array()) {
      error(where(ptr), std::string(handlers ? "handlers" : "tasks") + " must be a list");
      return out;
    }
    for (size_t i = 0; i < list.size(); ++i)
      if (auto t = task(list[i], ptr + "/" + std::to_string(i), handlers)) out.push_back(std::move(*t));
    return out;
  }

  void check_keys(const json& obj, const std::string& ptr, const std::vector<std::string>& allowed,
                  const std::string& what) {
    for (const auto& [key, value] : obj.items()) {
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        error(where(child_ptr(ptr, key), true), "unknown " + what + " key '" + key + "'" + did_you_mean(key, allowed) +
                                                    "; allowed: " + join(allowed, ", "));
    }
  }

  // A playbook whose tasks take GPUs starts with a preflight over them, unless it has its own:
  // a host that cannot pass a GPU through is told so before anything changes.
  void add_automatic_preflight(Playbook& pb) {
    if (pb.stages.empty()) return;
    json spec = json::array();
    bool uses = false, force = false;
    for (const auto& s : pb.stages)
      for (const auto& t : s.tasks) {
        if (t.module->name == "preflight") return;
        if (!t.args.contains("gpus")) continue;
        uses = true;
        force = force || t.args.value("force", false);
        const json& g = t.args["gpus"];
        if (g.is_string() || spec.is_string())
          spec = "auto";
        else
          for (const auto& a : g)
            if (std::find(spec.begin(), spec.end(), a) == spec.end()) spec.push_back(a);
      }
    const ModuleDef* preflight = Registry::instance().find("preflight");
    if (!uses || !preflight) return;
    Task t;
    t.name = "preflight (automatic: the playbook takes GPUs)";
    t.module = preflight;
    t.args = {{"gpus", spec}, {"force", force}};
    t.mark = pb.stages.front().mark;
    pb.stages.front().tasks.insert(pb.stages.front().tasks.begin(), std::move(t));
  }

  void interpret(const json& tree, Playbook& pb) {
    if (!tree.is_object()) {
      error(where(""), "a playbook is a mapping with `stages:` or `tasks:`");
      return;
    }
    check_keys(tree, "", {"name", "vars", "stages", "tasks", "handlers"}, "playbook");
    if (tree.contains("vars")) {
      if (!tree["vars"].is_object() && !tree["vars"].is_null())
        error(where("/vars"), "vars must be a mapping");
      else if (tree["vars"].is_object())
        pb.vars = tree["vars"];
      if (pb.vars.contains("facts")) error(where("/vars/facts", true), "'facts' is reserved for the host's facts");
    }
    scope_.emplace(pb.vars, opts_.extra_vars, opts_.facts);

    pb.handlers = task_list(tree.value("handlers", json()), "/handlers", true);
    const bool has_stages = tree.contains("stages"), has_tasks = tree.contains("tasks");
    if (has_stages && has_tasks) {
      error(where("/tasks", true), "use either `stages:` or `tasks:` (one implicit stage), not both");
      return;
    }
    if (!has_stages && !has_tasks) {
      error(where(""), "the playbook has no `stages:` and no `tasks:`");
      return;
    }
    if (has_tasks) {
      Stage s;
      s.name = tree.contains("name") && tree["name"].is_string() ? tree["name"].get<std::string>() : "main";
      s.mark = where("/tasks", true);
      s.tasks = task_list(tree["tasks"], "/tasks", false);
      pb.stages.push_back(std::move(s));
    } else {
      const json& stages = tree["stages"];
      if (!stages.is_array()) {
        error(where("/stages"), "stages must be a list");
        return;
      }
      std::set<std::string> names;
      for (size_t i = 0; i < stages.size(); ++i) {
        const std::string sp = "/stages/" + std::to_string(i);
        const json& st = stages[i];
        if (!st.is_object()) {
          error(where(sp), "a stage must be a mapping with `name:` and `tasks:`");
          continue;
        }
        check_keys(st, sp, {"name", "reboot", "tasks", "handlers"}, "stage");
        Stage s;
        s.mark = where(sp);
        s.name = st.contains("name") && st["name"].is_string() ? st["name"].get<std::string>()
                                                               : "stage " + std::to_string(i + 1);
        if (!names.insert(s.name).second) error(where(child_ptr(sp, "name")), "two stages are named '" + s.name + "'");
        if (st.contains("reboot")) {
          std::string r = st["reboot"].is_string() ? st["reboot"].get<std::string>() : "";
          if (r == "never")
            s.reboot = RebootPolicy::never;
          else if (r == "when_needed")
            s.reboot = RebootPolicy::when_needed;
          else if (r == "always")
            s.reboot = RebootPolicy::always;
          else
            error(where(child_ptr(sp, "reboot")), "reboot must be never, when_needed or always");
        }
        if (!st.contains("tasks")) error(where(sp), "the stage '" + s.name + "' has no tasks");
        s.tasks = task_list(st.value("tasks", json()), child_ptr(sp, "tasks"), false);
        s.handlers = task_list(st.value("handlers", json()), child_ptr(sp, "handlers"), true);
        pb.stages.push_back(std::move(s));
      }
    }
    add_automatic_preflight(pb);
    // Every notify names a handler of its stage or of the playbook.
    for (const auto& s : pb.stages) {
      std::set<std::string> handler_names;
      for (const auto& h : s.handlers) handler_names.insert(h.name);
      for (const auto& h : pb.handlers) handler_names.insert(h.name);
      for (const auto& t : s.tasks)
        for (const auto& n : t.notify)
          if (!handler_names.count(n))
            error(t.notify_mark, "task '" + t.name + "' notifies '" + n + "', but no handler has that name");
    }
  }

  std::string file_;
  const LoadOptions& opts_;
  std::vector<std::string> errors_;
  std::map<std::string, Origin> origins_;
  std::optional<VarScope> scope_;
};

}  // namespace

LoadResult load_playbook_text(const std::string& text, const std::string& path, const LoadOptions& opts) {
  if (text.size() > opts.max_bytes) {
    LoadResult r;
    r.errors.push_back(path + ":1:1: the playbook is larger than " + std::to_string(opts.max_bytes) + " bytes");
    return r;
  }
  if (text.find('\0') != std::string::npos) {
    LoadResult r;
    r.errors.push_back(path + ":1:1: the playbook contains NUL bytes: not a text file");
    return r;
  }
  if (size_t bad = invalid_utf8(text); bad != std::string::npos) {
    // Every name and value ends up in reports, JSON and the state file: they must be text.
    LoadResult r;
    const size_t line_start = text.rfind('\n', bad == 0 ? 0 : bad - 1);
    const size_t col = line_start == std::string::npos || bad == 0 ? bad + 1 : bad - line_start;
    r.errors.push_back(path + ":" +
                       std::to_string(1 + std::count(text.begin(), text.begin() + static_cast<long>(bad), '\n')) + ":" +
                       std::to_string(col) + ": the playbook is not UTF-8 text (byte " +
                       [&] {
                         char hex[8];
                         std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[bad]));
                         return std::string(hex);
                       }() +
                       ")");
    return r;
  }
  return Loader(path, opts).run(text);
}

LoadResult load_playbook(const std::string& path, const LoadOptions& opts) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult r;
    r.errors.push_back(path + ": cannot read the playbook: " + std::strerror(errno));
    return r;
  }
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > opts.max_bytes) break;
  }
  return load_playbook_text(text, path, opts);
}

Expected<json> parse_extra_vars_text(const std::string& text, const std::string& what) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Error{what + " a JSON object"};
  if (j.contains("facts")) return Error{"'facts' is reserved for the host's facts"};
  return j;
}

Expected<json> parse_extra_var(const std::string& arg) {
  if (!arg.empty() && (arg.front() == '{' || arg.front() == '@')) {
    // -e '{"key": value, ...}' or -e @vars.json, as ansible-playbook takes them (JSON only).
    std::string text = arg;
    if (arg.front() == '@') {
      std::ifstream in(arg.substr(1), std::ios::binary);
      if (!in) return Error{"-e: cannot read " + arg.substr(1)};
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    auto j =
        parse_extra_vars_text(text, arg.front() == '@' ? arg.substr(1) + " does not hold" : "'" + arg + "' is not");
    if (!j) return Error{"-e: " + j.error()};
    return j;
  }
  auto eq = arg.find('=');
  if (eq == std::string::npos || eq == 0) return Error{"-e expects key=value, got '" + arg + "'"};
  std::string key = arg.substr(0, eq), value = arg.substr(eq + 1);
  if (key == "facts") return Error{"-e: 'facts' is reserved for the host's facts"};
  return json{{key, plain_scalar(value)}};
}

}  // namespace gpt
