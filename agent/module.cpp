#include "agent/module.hpp"

#include <algorithm>
#include <stdexcept>

namespace gpt {

std::string_view outcome_name(Outcome o) {
  switch (o) {
    case Outcome::ok: return "ok";
    case Outcome::changed: return "changed";
    case Outcome::failed: return "failed";
    case Outcome::skipped: return "skipped";
  }
  return "?";
}

std::string_view arg_type_name(ArgType t) {
  switch (t) {
    case ArgType::str: return "a string";
    case ArgType::boolean: return "a boolean";
    case ArgType::integer: return "an integer";
    case ArgType::list: return "a list";
    case ArgType::dict: return "a mapping";
    case ArgType::any: return "a value";
  }
  return "?";
}

bool Context::provided_any(std::string_view kind) const {
  const auto it = provided.lower_bound(std::string(kind));
  return it != provided.end() && it->starts_with(kind);
}

Result Context::run_system(const Command& cmd, bool apply, std::string_view what) {
  const std::string line = cmd.display();
  if (!system_commands_allowed) {
    Result r = Result::skipped("not run under --root " + root.dir() + ": " + line);
    r.commands.push_back(line);
    return r;
  }
  if (!apply) {
    Result r = Result::changed("would run: " + line);
    r.commands.push_back(line);
    return r;
  }
  ExecResult res = exec.run(cmd);
  Result r = res.ok() ? Result::changed(std::string(what) + ": " + line)
                      : Result::failed(line + " failed: " + res.failure());
  r.commands.push_back(line);
  r.data["stdout"] = res.out;
  r.data["stderr"] = res.err;
  return r;
}

std::vector<ArgSpec> command_args(int default_timeout_seconds) {
  return {{.name = "command",
           .type = ArgType::list,
           .check = [](const json& v) -> std::optional<std::string> {
             if (v.empty()) return "must name a program";
             return std::nullopt;
           }},
          {.name = "timeout", .type = ArgType::integer, .default_value = default_timeout_seconds}};
}

Result run_command_module(Context& ctx, const json& args, bool apply, std::vector<std::string> argv,
                          std::string_view what) {
  Command cmd;
  cmd.argv = args.contains("command") ? args["command"].get<std::vector<std::string>>() : std::move(argv);
  cmd.timeout = std::chrono::seconds(args.value("timeout", 600));
  return ctx.run_system(cmd, apply, what);
}

Status Context::write_sysfs(const std::string& path, const std::string& value) {
  static SysfsWriter kernel;
  return (sysfs ? *sysfs : kernel).write(root, path, value);
}

Registry& Registry::instance() {
  static Registry registry;
  return registry;
}

void Registry::add(ModuleDef def) {
  std::string name = def.name;
  if (!modules_.emplace(name, std::move(def)).second)
    throw std::logic_error("module registered twice: " + name);
}

const ModuleDef* Registry::find(std::string_view name) const {
  auto it = modules_.find(name);
  return it == modules_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, def] : modules_) out.push_back(name);
  return out;
}

json with_defaults(const ModuleSchema& schema, json args) {
  if (!args.is_object()) args = json::object();
  for (const auto& spec : schema.args)
    if (!args.contains(spec.name) && !spec.default_value.is_null()) args[spec.name] = spec.default_value;
  return args;
}

namespace {

bool fits(const ArgSpec& spec, ArgType type, const json& v) {
  switch (type) {
    case ArgType::any: return true;
    case ArgType::str:
      return v.is_string() &&
             (spec.choices.empty() || std::find(spec.choices.begin(), spec.choices.end(), v.get<std::string>()) != spec.choices.end());
    case ArgType::boolean: return v.is_boolean();
    case ArgType::integer: return v.is_number_integer();
    case ArgType::list:
      return v.is_array() && std::all_of(v.begin(), v.end(), [&](const json& e) { return fits(spec, spec.elements, e); });
    case ArgType::dict: return v.is_object() && spec.fields.empty();
  }
  return false;
}

}  // namespace

std::optional<std::string> unsafe_handler_request(const HandlerRequest& h) {
  const ModuleDef* def = Registry::instance().find(h.module);
  if (!def || !def->handler_args) return "module '" + h.module + "' is not one modules request as a handler";
  if (!h.args.is_object()) return "its arguments are not a mapping";
  for (const auto& item : h.args.items()) {
    const std::string& key = item.key();  // a named variable: clang 14 cannot capture a structured binding
    const json& value = item.value();
    if (std::find(def->handler_args->begin(), def->handler_args->end(), key) == def->handler_args->end())
      return "module " + h.module + " is never requested with argument '" + key + "'";
    auto spec = std::find_if(def->schema.args.begin(), def->schema.args.end(), [&](const ArgSpec& a) { return a.name == key; });
    if (spec == def->schema.args.end() || !fits(*spec, spec->type, value)) return "argument '" + key + "' is not " + std::string(arg_type_name(spec == def->schema.args.end() ? ArgType::any : spec->type));
    if (spec->check)
      if (auto msg = spec->check(value)) return "argument '" + key + "': " + *msg;
  }
  return std::nullopt;
}

Result converge_module(const ModuleDef& def, Context& ctx, const json& args, bool apply) {
  try {
    return def.converge(ctx, args, apply);
  } catch (const std::exception& e) {
    return Result::failed(def.name + ": internal error: " + e.what());
  }
}

}  // namespace gpt
