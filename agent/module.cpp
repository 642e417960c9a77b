#include "agent/module.hpp"

#include <algorithm>
#include <stdexcept>

#include "agent/declare.hpp"

namespace gpt {

std::string_view outcome_name(Outcome o) {
  switch (o) {
    case Outcome::ok:
      return "ok";
    case Outcome::changed:
      return "changed";
    case Outcome::failed:
      return "failed";
    case Outcome::skipped:
      return "skipped";
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
  Result r =
      res.ok() ? Result::changed(std::string(what) + ": " + line) : Result::failed(line + " failed: " + res.failure());
  r.commands.push_back(line);
  r.data["stdout"] = res.out;
  r.data["stderr"] = res.err;
  return r;
}

ArgsDecl<CommandArgs> command_args(long long default_timeout_seconds) {
  return ArgsDecl<CommandArgs>(CommandArgs{.command = std::nullopt, .timeout = default_timeout_seconds})
      .arg("command", &CommandArgs::command,
           "the command line that does it instead of the one the agent detects (a program and its arguments)",
           {.check = [](const json& v) -> std::optional<std::string> {
              if (v.empty()) return "must name a program";
              return std::nullopt;
            },
            .example = json::array({"/usr/local/sbin/site-boot-update", "--all"})})
      .arg("timeout", &CommandArgs::timeout, "seconds the command may take before it is stopped and the task fails");
}

Result run_command_module(Context& ctx, const CommandArgs& args, bool apply, std::vector<std::string> argv,
                          std::string_view what) {
  Command cmd;
  cmd.argv = args.command ? *args.command : std::move(argv);
  cmd.timeout = std::chrono::seconds(args.timeout);
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
  if (!modules_.emplace(name, std::move(def)).second) throw std::logic_error("module registered twice: " + name);
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

Registration::Registration(ModuleDef def, ModuleDocs docs) {
  def.description = std::move(docs.description);
  def.examples = std::move(docs.examples);
  def.notifies = std::move(docs.notifies);
  def.reboot = docs.reboot;
  Registry::instance().add(std::move(def));
}

std::optional<std::string> unsafe_handler_request(const HandlerRequest& h) {
  const ModuleDef* def = Registry::instance().find(h.module);
  if (!def || !def->handler_args) return "module '" + h.module + "' is not one modules request as a handler";
  if (!h.args.is_object()) return "its arguments are not a mapping";
  const LabelSource state("state.json");
  ArgChecker checker(state, Typing::strict);  // what the agent wrote: JSON of the declared types
  for (const auto& item : h.args.items()) {
    const std::string& key = item.key();  // a named variable: clang 14 cannot capture a structured binding
    if (std::find(def->handler_args->begin(), def->handler_args->end(), key) == def->handler_args->end())
      return "module " + h.module + " is never requested with argument '" + key + "'";
    auto spec =
        std::find_if(def->schema.args.begin(), def->schema.args.end(), [&](const ArgSpec& a) { return a.name == key; });
    if (spec == def->schema.args.end())
      return "argument '" + key + "' is not " + std::string(arg_type_name(ArgType::any));
    json typed;
    if (!checker.coerce(*spec, spec->type, item.value(), "", key, typed))
      return "argument '" + key + "' is not " + std::string(arg_type_name(spec->type));
    if (spec->check)
      if (auto msg = spec->check(typed)) return "argument '" + key + "': " + *msg;
  }
  return std::nullopt;
}

Expected<json> handler_request_args(const ModuleDef& def, const HandlerRequest& h) {
  return check_args_strictly(def.schema, h.args, def.name, "handler '" + h.name + "'");
}

Result converge_module(const ModuleDef& def, Context& ctx, const json& args, bool apply) {
  try {
    return def.converge(ctx, args, apply);
  } catch (const std::exception& e) {
    return Result::failed(def.name + ": internal error: " + e.what());
  }
}

}  // namespace gpt
