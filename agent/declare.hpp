// One declaration per module: a module's arguments are a struct (`Args`, its defaults the member
// initialisers), and each argument is declared once, with its member, a one-line doc, choices, a
// check and an example. From that one declaration come the ArgSpec list that checks a playbook, a
// handler request, the state file and `-e` alike (agent/argspec.hpp), the documentation
// (`gptagent doc`, `gptagent schema`), and the binding of the checked JSON to the struct at the
// module's edge: the module reads members, never `args["..."]`.
//
//   struct Args { std::string mode = "empty"; std::vector<std::string> paths; };
//   const auto decl = ArgsDecl<Args>()
//       .arg("mode", &Args::mode, "what becomes of a config", {.choices = {"empty", "remove"}})
//       .arg("paths", &Args::paths, "more configs to neutralise");
//   Expected<Result> converge(Context&, const Args&, bool apply);
//   const Registration reg{declare_module("NAME", "what it manages", decl, converge)};
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "agent/argspec.hpp"
#include "agent/module.hpp"

namespace gpt {

// How a member's C++ type is declared, read from checked JSON, and written back.
template <typename T>
struct ArgTraits;
template <>
struct ArgTraits<std::string> {
  static constexpr ArgType type = ArgType::str, elements = ArgType::str;
  static std::string from(const nlohmann::json& v) { return v.get<std::string>(); }
  static nlohmann::json to(const std::string& v) { return v; }
};
template <>
struct ArgTraits<bool> {
  static constexpr ArgType type = ArgType::boolean, elements = ArgType::str;
  static bool from(const nlohmann::json& v) { return v.get<bool>(); }
  static nlohmann::json to(bool v) { return v; }
};
template <>
struct ArgTraits<long long> {
  static constexpr ArgType type = ArgType::integer, elements = ArgType::str;
  static long long from(const nlohmann::json& v) { return v.get<long long>(); }
  static nlohmann::json to(long long v) { return v; }
};
template <>
struct ArgTraits<std::vector<std::string>> {
  static constexpr ArgType type = ArgType::list, elements = ArgType::str;
  static std::vector<std::string> from(const nlohmann::json& v) { return v.get<std::vector<std::string>>(); }
  static nlohmann::json to(const std::vector<std::string>& v) { return v; }
};
// A list whose items the argument's own check reads (a path, or a mapping).
template <>
struct ArgTraits<std::vector<nlohmann::json>> {
  static constexpr ArgType type = ArgType::list, elements = ArgType::any;
  static std::vector<nlohmann::json> from(const nlohmann::json& v) { return v.get<std::vector<nlohmann::json>>(); }
  static nlohmann::json to(const std::vector<nlohmann::json>& v) { return v; }
};
// Any JSON the argument's own check accepts (`gpus`: auto, or a list of PCI addresses).
template <>
struct ArgTraits<nlohmann::json> {
  static constexpr ArgType type = ArgType::any, elements = ArgType::str;
  static nlohmann::json from(const nlohmann::json& v) { return v; }
  static nlohmann::json to(const nlohmann::json& v) { return v; }
};
// An argument without a default: nullopt when the playbook leaves it out.
template <typename T>
struct ArgTraits<std::optional<T>> {
  static constexpr ArgType type = ArgTraits<T>::type, elements = ArgTraits<T>::elements;
  static std::optional<T> from(const nlohmann::json& v) { return ArgTraits<T>::from(v); }
  static nlohmann::json to(const std::optional<T>& v) { return v ? ArgTraits<T>::to(*v) : nlohmann::json(); }
};

// What a declaration may say besides the name, the member and the doc.
struct ArgMore {
  std::vector<std::string> choices = {};
  bool required = false;
  std::function<std::optional<std::string>(const nlohmann::json&)> check = {};
  nlohmann::json example = {};
};

template <typename A>
class ArgsDecl {
 public:
  // The defaults are the struct's initialisers, or those of the instance given (one struct that
  // several modules share with other defaults: CommandArgs).
  explicit ArgsDecl(A defaults = A{}) : defaults_(std::make_shared<const A>(std::move(defaults))) {}

  // An argument of a member's type (a member of A, or of a base several modules' Args share); its
  // default is the member's initialiser (none for a required one, or for an optional member left
  // empty, or a JSON one left null).
  template <typename T, typename B>
  requires std::is_base_of_v<B, A> ArgsDecl& arg(std::string name, T B::*member, std::string doc, ArgMore more = {}) {
    using Tr = ArgTraits<T>;
    ArgSpec s{.name = std::move(name),
              .type = Tr::type,
              .required = more.required,
              .default_value = more.required ? nlohmann::json() : Tr::to(*defaults_.*member),
              .choices = std::move(more.choices),
              .elements = Tr::elements,
              .check = std::move(more.check),
              .doc = std::move(doc),
              .example = std::move(more.example)};
    return add(std::move(s), member);
  }
  // An argument several modules share, declared as an ArgSpec once (gpus_arg, command_args): its
  // type must be the member's; its default is the member's initialiser all the same.
  template <typename T, typename B>
  requires std::is_base_of_v<B, A> ArgsDecl& arg(ArgSpec spec, T B::*member) {
    using Tr = ArgTraits<T>;
    if (spec.type != Tr::type) throw std::logic_error("argument '" + spec.name + "' is declared with another type");
    if (!spec.required) spec.default_value = Tr::to(*defaults_.*member);
    return add(std::move(spec), member);
  }
  // A list of mappings whose fields another declaration declares (its struct is the element).
  template <typename F, typename B>
  requires std::is_base_of_v<B, A> ArgsDecl& arg(std::string name, std::vector<F> B::*member, std::string doc,
                                                 const ArgsDecl<F>& fields, ArgMore more = {}) {
    auto decl = std::make_shared<const ArgsDecl<F>>(fields);
    auto to = [decl, member](const A& a) { return decl->dump_all(a.*member); };
    auto from = [decl, member](A& a, const nlohmann::json& v) { a.*member = decl->bind_all(v); };
    return add_list(std::move(name), std::move(doc), fields, std::move(more), to(*defaults_), from, to);
  }
  // The same, left out (nullopt) told apart from an empty list (which, given, means none).
  template <typename F, typename B>
  requires std::is_base_of_v<B, A> ArgsDecl& arg(std::string name, std::optional<std::vector<F>> B::*member,
                                                 std::string doc, const ArgsDecl<F>& fields, ArgMore more = {}) {
    auto decl = std::make_shared<const ArgsDecl<F>>(fields);
    auto to = [decl, member](const A& a) { return a.*member ? decl->dump_all(*(a.*member)) : nlohmann::json(); };
    auto from = [decl, member](A& a, const nlohmann::json& v) { a.*member = decl->bind_all(v); };
    return add_list(std::move(name), std::move(doc), fields, std::move(more), nlohmann::json(), from, to);
  }
  // A mapping whose fields another declaration declares; nullopt when the playbook leaves it out.
  template <typename F, typename B>
  requires std::is_base_of_v<B, A> ArgsDecl& arg(std::string name, std::optional<F> B::*member, std::string doc,
                                                 const ArgsDecl<F>& fields, ArgMore more = {}) {
    auto decl = std::make_shared<const ArgsDecl<F>>(fields);
    ArgSpec s{.name = std::move(name),
              .type = ArgType::dict,
              .required = more.required,
              .default_value = {},
              .choices = {},
              .elements = ArgType::str,
              .fields = fields.schema().args,
              .check = std::move(more.check),
              .doc = std::move(doc),
              .example = std::move(more.example)};
    binds_.push_back({s.name, [decl, member](A& a, const nlohmann::json& v) { a.*member = decl->bind(v); },
                      [decl, member](const A& a) { return a.*member ? decl->dump(*(a.*member)) : nlohmann::json(); }});
    schema_.args.push_back(std::move(s));
    return *this;
  }
  ArgsDecl& mutually_exclusive(std::vector<std::string> group) {
    schema_.mutually_exclusive.push_back(std::move(group));
    return *this;
  }
  ArgsDecl& required_one_of(std::vector<std::string> group) {
    schema_.required_one_of.push_back(std::move(group));
    return *this;
  }
  // A check of the arguments together, after each passed its own: a message when they are wrong.
  // Declared after the arguments (it binds those declared so far).
  ArgsDecl& check(std::function<std::optional<std::string>(const A&)> fn) {
    auto bound = std::make_shared<std::vector<Bind>>(binds_);
    schema_.check = [bound, defaults = defaults_, fn = std::move(fn)](const nlohmann::json& args) {
      return fn(bind_with(*defaults, *bound, args));
    };
    return *this;
  }

  const ModuleSchema& schema() const { return schema_; }
  // What a key left out is: the struct's initialisers, or the instance the declaration was given.
  const A& defaults() const { return *defaults_; }
  // The struct from arguments the declaration checked (defaults filled in): what a module reads.
  A bind(const nlohmann::json& args) const { return bind_with(*defaults_, binds_, args); }
  // The struct as JSON, as a playbook would say it: the arguments that differ from their defaults
  // (a handler request's or a record's arguments); checked, it binds to the same struct.
  std::vector<A> bind_all(const nlohmann::json& list) const {
    std::vector<A> out;
    for (const auto& v : list) out.push_back(bind(v));
    return out;
  }
  nlohmann::json dump_all(const std::vector<A>& list) const {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& a : list) out.push_back(dump(a));
    return out;
  }
  nlohmann::json dump(const A& a) const {
    nlohmann::json out = nlohmann::json::object();
    for (size_t i = 0; i < binds_.size(); ++i) {
      nlohmann::json v = binds_[i].to(a);
      if (!v.is_null() && v != schema_.args[i].default_value) out[binds_[i].name] = std::move(v);
    }
    return out;
  }

 private:
  struct Bind {
    std::string name;
    std::function<void(A&, const nlohmann::json&)> from;
    std::function<nlohmann::json(const A&)> to;
  };

  template <typename F>
  ArgsDecl& add_list(std::string name, std::string doc, const ArgsDecl<F>& fields, ArgMore more,
                     nlohmann::json default_value, std::function<void(A&, const nlohmann::json&)> from,
                     std::function<nlohmann::json(const A&)> to) {
    ArgSpec s{.name = std::move(name),
              .type = ArgType::list,
              .required = more.required,
              .default_value = more.required ? nlohmann::json() : std::move(default_value),
              .choices = {},
              .elements = ArgType::dict,
              .fields = fields.schema().args,
              .check = std::move(more.check),
              .doc = std::move(doc),
              .example = std::move(more.example)};
    binds_.push_back({s.name, std::move(from), std::move(to)});
    schema_.args.push_back(std::move(s));
    return *this;
  }

  template <typename T, typename B>
  ArgsDecl& add(ArgSpec spec, T B::*member) {
    using Tr = ArgTraits<T>;
    binds_.push_back({spec.name, [member](A& a, const nlohmann::json& v) { a.*member = Tr::from(v); },
                      [member](const A& a) { return Tr::to(a.*member); }});
    schema_.args.push_back(std::move(spec));
    return *this;
  }

  // A key left out, or null, keeps the member's initialiser.
  static A bind_with(const A& defaults, const std::vector<Bind>& binds, const nlohmann::json& args) {
    A a = defaults;
    for (const auto& b : binds)
      if (auto it = args.find(b.name); it != args.end() && !it->is_null()) b.from(a, *it);
    return a;
  }

  std::shared_ptr<const A> defaults_;
  ModuleSchema schema_;
  std::vector<Bind> binds_;
};

// A module whose converge reads its declared struct: the declaration gives its schema; an error
// converge returns is the task's failure. What a change sets in motion (notifies, reboot) its
// ModuleDocs declare; regenerates_boot and handler_args the caller sets on the ModuleDef returned.
template <typename A>
ModuleDef declare_module(std::string name, std::string summary, const ArgsDecl<A>& decl,
                         Expected<Result> (*fn)(Context&, const A&, bool)) {
  ModuleDef def;
  def.name = std::move(name);
  def.summary = std::move(summary);
  def.schema = decl.schema();
  def.converge = [decl, fn](Context& ctx, const json& args, bool apply) -> Result {
    auto r = fn(ctx, decl.bind(args), apply);
    return r ? std::move(*r) : Result::failed(r.error());
  };
  return def;
}

// For modules that run one command of the host's distribution (grub_config, initramfs): `command`
// replaces the detected command line, `timeout` bounds it (seconds).
struct CommandArgs {
  std::optional<std::vector<std::string>> command;
  long long timeout = 600;
};
ArgsDecl<CommandArgs> command_args(long long default_timeout_seconds);
// Runs args.command if given, else `argv`, as a command that changes the running system.
Result run_command_module(Context& ctx, const CommandArgs& args, bool apply, std::vector<std::string> argv,
                          std::string_view what);

}  // namespace gpt
