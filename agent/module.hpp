// The module contract: one converge(ctx, args, apply) per module, registered by name.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "agent/argspec.hpp"
#include "agent/exec.hpp"
#include "agent/facts.hpp"
#include "agent/host.hpp"

namespace gpt {

using json = nlohmann::json;

enum class Outcome { ok, changed, failed, skipped };
std::string_view outcome_name(Outcome o);

// A handler a module asks for when it changed something, e.g. regenerating the grub config.
// Handlers with the same name run once, at the end of the stage.
struct HandlerRequest {
  std::string name;    // shown in the report, and what makes two requests the same
  std::string module;  // a registered module run as the handler
  json args = json::object();
};

struct Result {
  Outcome status = Outcome::ok;
  std::string msg;
  std::string diff;  // unified diff of what changed (or would change)
  bool reboot_required = false;
  std::vector<HandlerRequest> handlers;
  std::vector<std::string> commands;  // commands run, or that would have run
  json data = json::object();         // module-specific details for --json
  // What must hold after a reboot for this task's work to have taken effect: cmdline_present,
  // cmdline_absent, modules, vfio_devices (see agent/state.hpp).
  json expect = json::object();

  static Result ok(std::string msg = {}) { return make(Outcome::ok, std::move(msg)); }
  static Result changed(std::string msg = {}) { return make(Outcome::changed, std::move(msg)); }
  static Result failed(std::string msg) { return make(Outcome::failed, std::move(msg)); }
  static Result skipped(std::string msg) { return make(Outcome::skipped, std::move(msg)); }

 private:
  static Result make(Outcome o, std::string msg) {
    Result r;
    r.status = o;
    r.msg = std::move(msg);
    return r;
  }
};

// What a module may touch: the root's files, processes through Exec, the gathered facts.
struct Context {
  const Root& root;
  Exec& exec;
  const Facts& facts;
  // Commands that change the running system (update-grub, modprobe, reboot...) run only when the
  // root is "/" — or in tests, where Exec is a recorder.
  bool system_commands_allowed = false;
  SysfsWriter* sysfs = nullptr;  // nullptr: the kernel's files themselves
  std::string libvirt_uri = {};  // --connect: the hypervisor for libvirt modules without connect:
  // What earlier tasks of this run made, or in check mode would have made, as "kind:name" (e.g.
  // "libvirt_network:URI#default"): a later task that needs it finds it here before it exists.
  std::set<std::string> provided = {};
  // Whether a systemd manager answers systemctl: unset, one does where the root is "/" (under
  // --root units are enabled offline). Tests set it where their Exec plays the manager on a tree,
  // so that what the agent records of the units goes to the tree, not to this machine.
  std::optional<bool> manager = std::nullopt;
  // An earlier task of this run installs packages ("package:NAME" above) that it has not installed
  // (check mode, or not run under --root): a unit, or libvirt itself, may come with them, so a later
  // task predicts what it would do instead of failing on what is not there yet.
  bool packages_pending() const { return provided_any("package:"); }
  // Some entry of `provided` starts with `kind` ("package:", "service:").
  bool provided_any(std::string_view kind) const;

  // Runs a command that changes the running system when apply is set and that is allowed;
  // otherwise says what would run. Returns changed, skipped (not allowed here) or failed.
  Result run_system(const Command& cmd, bool apply, std::string_view what);
  // Writes a sysfs attribute (allowed only where system commands are).
  Status write_sysfs(const std::string& path, const std::string& value);
};

using ConvergeFn = std::function<Result(Context& ctx, const json& args, bool apply)>;

struct ModuleDef {
  std::string name;
  std::string summary;
  ModuleSchema schema;
  ConvergeFn converge = {};
  // A change needs a reboot to take effect (declared in ModuleDocs::reboot): with `notifies`, what
  // a change sets in motion. The runner records a stage's intent before a change that sets
  // anything in motion, and boots a stage's reboot changes as a trial.
  bool reboot = false;
  bool sets_in_motion() const { return reboot || !notifies.empty(); }
  // Regenerates what the host boots (grub.cfg, the initramfs, BootLoaderSpec entries): in a stage whose change is
  // booted as a trial (agent/trial.hpp), the handler is deferred to the trial's commit.
  bool regenerates_boot = false;
  // Modules request this one as a handler (HandlerRequest) with at most these arguments. A pending
  // request read back from the state file may name only such a module, with only these arguments
  // and of their declared types: never `command`, which only a playbook's author may give.
  std::optional<std::vector<std::string>> handler_args = std::nullopt;
  // Arguments that make sense only in a handler (a restart on every run is never converged): a
  // message when these ones are given to a task.
  std::function<std::optional<std::string>(const json&)> handler_only = {};
  // What `gptagent doc` says beyond the summary and the arguments: a description (paragraphs of
  // plain text, separated by a blank line); examples, each a task as it goes in a playbook's
  // `tasks:` list, led by a one-line `# comment` saying what it does; and the handler modules a
  // change may request (HandlerRequest::module) — with `reboot`, what a change sets in motion.
  std::string description = {};
  std::vector<std::string> examples = {};
  std::vector<std::string> notifies = {};
};

// A module's documentation (ModuleDef::description, examples, notifies), declared beside its
// registration: `const Registration registration{definition(), docs()};`.
struct ModuleDocs {
  std::string description;
  std::vector<std::string> examples;
  std::vector<std::string> notifies = {};
  bool reboot = false;
};

class Registry {
 public:
  static Registry& instance();
  void add(ModuleDef def);
  const ModuleDef* find(std::string_view name) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, ModuleDef, std::less<>> modules_;
};

// Modules register themselves from a static initialiser: `static const Registration reg{...};`
struct Registration {
  explicit Registration(ModuleDef def) { Registry::instance().add(std::move(def)); }
  Registration(ModuleDef def, ModuleDocs docs);
};

// Why a handler request read back from the state file must not run (see ModuleDef::handler_args);
// nullopt when it is one a module would make.
std::optional<std::string> unsafe_handler_request(const HandlerRequest& h);

// A handler request's arguments checked against its module's declaration as the agent writes them
// (strictly typed JSON), with the defaults filled in; messages start "handler 'NAME': ".
Expected<json> handler_request_args(const ModuleDef& def, const HandlerRequest& h);

// Runs one module with exceptions caught at the module edge.
Result converge_module(const ModuleDef& def, Context& ctx, const json& args, bool apply);

}  // namespace gpt
