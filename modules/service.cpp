// service: a systemd unit enabled or not, started or stopped (restarted in handlers), for the
// system manager or a user's (through the user's own manager, agent/systemctl.hpp).
//
// The state is read with `systemctl is-enabled` and `is-active`; only what differs is changed. A
// service with a socket of its own that is listening counts as started (libvirtd.socket,
// virtqemud.socket): the daemon starts on the first connection, and starting it by hand would
// only defeat the socket's idle exit. Under --root there is no running manager to ask: enabling is
// done offline (`systemctl --root=DIR`), starting and stopping are reported as what would run.
#include <algorithm>
#include <array>

#include "agent/declare.hpp"
#include "agent/preimage.hpp"
#include "agent/systemctl.hpp"
#include "agent/text.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

// `systemctl is-enabled` answers that exit 0: the unit starts at boot or needs no enabling.
constexpr std::array kEnabledStates = {"enabled",  "enabled-runtime", "alias",    "static",
                                       "indirect", "generated",       "transient"};
// Units that have no [Install] section to enable or disable.
constexpr std::array kFixedStates = {"static", "generated", "transient", "alias"};

bool one_of(std::string_view s, const auto& set) { return std::find(set.begin(), set.end(), s) != set.end(); }

using Args = ServiceArgs;

std::string unit_name(const Args& args) {
  std::string name = args.name;
  // A bare name is a service, as systemctl itself takes it.
  if (name.find('.') == std::string::npos) name += ".service";
  return name;
}

struct Systemctl {
  Context& ctx;
  std::vector<std::string> base;  // systemctl (--root=DIR), or a user's (agent/systemctl.hpp)
  std::vector<std::string>* ran;  // every command asked, for the result

  Command command(std::initializer_list<std::string> words) const {
    Command cmd;
    cmd.argv = base;
    cmd.argv.insert(cmd.argv.end(), words);
    cmd.timeout = std::chrono::seconds(120);
    return cmd;
  }
  // A query: its first line of output, its exit code.
  std::pair<std::string, ExecResult> ask(std::initializer_list<std::string> words) const {
    Command cmd = command(words);
    ran->push_back(cmd.display());
    ExecResult res = ctx.exec.run(cmd);
    std::string answer(trim(res.out.substr(0, res.out.find('\n'))));
    return {answer, res};
  }
};

// What systemctl said when it did not answer with a state: its exit code and its own words.
std::string said(const ExecResult& res) { return res.failure(true); }

std::optional<std::string> check_args(const Args& args) {
  const bool user_scope = args.scope == "user";
  if (user_scope != args.user.has_value())
    return user_scope ? "scope: user needs user: (whose manager runs the unit)" : "user: is only for scope: user";
  return std::nullopt;
}

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  const std::string unit = unit_name(args);
  const bool user_scope = args.scope == "user";
  const std::string who = user_scope ? " (user " + args.user.value_or("") + ")" : "";
  const bool offline = ctx.manager ? !*ctx.manager : ctx.root.sandboxed();
  // Two bools, not an optional: GCC 12 takes an optional<bool> here for maybe uninitialised.
  const bool declares_enabled = args.enabled.has_value();
  const bool want_enabled = args.enabled.value_or(false);
  const std::string state = args.state.value_or("");

  if (offline && user_scope)
    return Result::skipped("user units are not managed under --root " + ctx.root.dir() + ": " + unit + who);

  Result r = Result::ok();
  std::vector<std::string> done, notes;
  Systemctl sc{ctx, {"systemctl"}, &r.commands};
  if (user_scope) {
    auto user = user_systemctl(ctx.root, args.user.value_or(""));
    if (!user) return Result::failed("unit " + unit + who + ": " + user.error());
    sc.base = std::move(*user);
  }
  if (offline) sc.base = {"systemctl", "--root=" + ctx.root.dir()};

  // Enabling: read always, for an unknown or masked unit fails whatever is asked.
  auto [enablement, res] = sc.ask({"is-enabled", unit});
  if (enablement.empty() || enablement == "not-found") {
    // Packages an earlier task would install (check mode) or did not install (--root) may bring the
    // unit: what would be done once they are there, rather than a failure the run would not have.
    if (ctx.packages_pending() && (!apply || offline)) {
      std::vector<std::string> would;
      if (declares_enabled) would.push_back(want_enabled ? "enabled" : "disabled");
      if (!state.empty()) would.push_back(state);
      // Where the package manager may not run (--root), the apply will not have them either.
      const bool installed_later = !apply && ctx.system_commands_allowed;
      const std::string why =
          unit + who + " is not known to systemd yet; an earlier task " +
          (installed_later ? "would install packages"
                           : "has packages to install that are not installed under --root " + ctx.root.dir()) +
          ", which may bring it";
      if (!installed_later) {
        Result skipped = Result::skipped(why);
        skipped.commands = r.commands;
        return skipped;
      }
      Result predicted = Result::changed("would be " + join(would, ", ") + ": " + why);
      predicted.commands = r.commands;
      predicted.data["unit"] = unit;
      if (want_enabled || state == "started" || state == "restarted") ctx.provided.insert("service:" + unit);
      return predicted;
    }
    return Result::failed("unit " + unit + who + " is not known to systemd: " + said(res));
  }
  if (enablement == "masked" || enablement == "masked-runtime") {
    if (want_enabled || state == "started" || state == "restarted")
      return Result::failed("unit " + unit + who + " is masked (" + enablement + "): it cannot be " +
                            (want_enabled ? "enabled" : "started") + " until it is unmasked (systemctl " +
                            (user_scope ? "--user " : "") + "unmask " + unit + "); the agent does not unmask units");
  }
  const bool is_enabled = one_of(enablement, kEnabledStates);
  // Before the agent's first change of the unit: its state, for gptagent revert. (A copy: clang
  // before 16 cannot capture a structured binding.)
  const std::string enabled_before = enablement;
  bool remembered = false;
  auto remember = [&]() -> std::optional<Result> {
    if (remembered || !apply) return std::nullopt;
    remembered = true;
    UnitPreimage before{unit, args.scope, args.user.value_or(""), enabled_before, ""};
    std::vector<std::string> unreported;  // a query for the record, not part of the task's commands
    if (!offline) before.active = Systemctl{ctx, sc.base, &unreported}.ask({"is-active", unit}).first;
    if (auto kept = keep_unit_preimage(ctx.root, before); !kept) return Result::failed(kept.error());
    return std::nullopt;
  };
  // A restart (a handler's) leaves the unit as it was: nothing to put back, nothing recorded.
  auto change = [&](const Command& cmd, const std::string& what, bool restart = false) -> std::optional<Result> {
    if (auto failed = restart ? std::nullopt : remember()) return failed;
    if (offline) {  // files under the root only: allowed wherever the root is
      r.commands.push_back(cmd.display());
      if (!apply) return std::nullopt;
      ExecResult ran = ctx.exec.run(cmd);
      if (!ran.ok()) return Result::failed(cmd.display() + " failed: " + said(ran));
      return std::nullopt;
    }
    Result ran = ctx.run_system(cmd, apply, what);
    r.commands.insert(r.commands.end(), ran.commands.begin(), ran.commands.end());
    if (ran.status == Outcome::failed || ran.status == Outcome::skipped) return ran;
    return std::nullopt;
  };
  if (declares_enabled && want_enabled != is_enabled && !(enablement == "masked" || enablement == "masked-runtime")) {
    if (one_of(enablement, kFixedStates)) {
      notes.push_back(enablement + ": nothing to " + (want_enabled ? "enable" : "disable"));
    } else {
      const std::string verb = want_enabled ? "enable" : "disable";
      if (auto failed = change(sc.command({verb, unit}), verb + "d " + unit)) return *failed;
      done.push_back(verb + "d");
    }
  }

  if (!state.empty()) {
    if (offline) {
      // No manager to ask under --root: what would run, as run_system says it.
      const std::string verb = state == "started" ? "start" : state == "stopped" ? "stop" : "restart";
      Command cmd;
      cmd.argv = {"systemctl", verb, unit};
      r.commands.push_back(cmd.display());
      notes.push_back("not run under --root " + ctx.root.dir() + ": " + cmd.display());
      if (done.empty()) {
        Result skipped = Result::skipped(unit + " " + join(notes, "; "));
        skipped.commands = r.commands;
        return skipped;
      }
    } else if (state == "restarted") {
      if (auto failed = change(sc.command({"restart", unit}), "restarted " + unit, true)) return *failed;
      done.push_back("restarted");
    } else {
      auto [activity, act_res] = sc.ask({"is-active", unit});
      if (activity.empty()) return Result::failed("cannot read whether " + unit + who + " is active: " + said(act_res));
      // activating: on its way up (Ansible counts it as running too); reloading: running.
      bool running = activity == "active" || activity == "reloading" || activity == "activating";
      if (activity == "activating") notes.push_back("activating");
      const std::string socket = unit.ends_with(".service") ? unit.substr(0, unit.size() - 8) + ".socket" : "";
      if (state == "started" && !running && !socket.empty()) {
        auto [listening, sock_res] = sc.ask({"is-active", socket});
        if (listening == "active") {
          running = true;
          notes.push_back("socket-activated: " + socket + " is active, the service starts on the first connection");
        }
      }
      if (state == "started" && !running) {
        if (auto failed = change(sc.command({"start", unit}), "started " + unit)) return *failed;
        done.push_back(activity == "failed" ? "started (it had failed)" : "started");
      } else if (state == "stopped" && running) {
        if (auto failed = change(sc.command({"stop", unit}), "stopped " + unit)) return *failed;
        done.push_back("stopped");
      } else if (state == "stopped" && activity == "failed") {
        notes.push_back("failed, not running");
      }
      r.data["active"] = activity;
    }
  }

  r.data["unit"] = unit;
  r.data["enabled"] = enablement;
  if (user_scope) r.data["user"] = args.user.value_or("");
  const std::string tail = notes.empty() ? "" : " (" + join(notes, "; ") + ")";
  if (done.empty()) {
    r.msg = unit + who + " is as wanted: " + enablement +
            (r.data.contains("active") ? ", " + r.data["active"].get<std::string>() : "") + tail;
    return r;
  }
  r.status = Outcome::changed;
  r.msg = (apply ? "" : "would be ") + join(done, ", ") + ": " + unit + who + tail;
  // A later task that needs the service running (a libvirt daemon) knows it would be.
  if (!apply && (want_enabled || state == "started" || state == "restarted")) ctx.provided.insert("service:" + unit);
  return r;
}

// What `gptagent doc service` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "A systemd unit enabled: true or false and state: started or stopped (restarted only in a handler: a "
          "restart on every run never converges), checked with systemctl is-enabled and is-active and changed only "
          "where it differs. A service whose own socket is active counts as started (libvirtd.service with "
          "libvirtd.socket listening): it is not started beside it.\n\n"
          "scope: user with user: NAME manages a user's unit through their own manager, as they reach it (runuser "
          "-u NAME -- env XDG_RUNTIME_DIR=/run/user/UID systemctl --user: its private socket, so no user D-Bus is "
          "needed, which servers lack; --machine=NAME@ needs one).\n\n"
          "A masked unit fails and says how to unmask it (the agent never unmasks); an unknown unit fails with "
          "systemctl's message. Under --root, enabling is done offline (systemctl --root=DIR enable); starting and "
          "stopping are reported as what would run, and user units are skipped.",
      .examples = {"# libvirt's daemon running now and started at boot\n"
                   "- name: libvirt's daemon running, and at boot\n"
                   "  service:\n"
                   "    name: libvirtd\n"
                   "    enabled: true\n"
                   "    state: started\n",
                   "# A user's unit stopped, through that user's own manager\n"
                   "- service:\n"
                   "    name: gnome-remote-desktop\n"
                   "    scope: user\n"
                   "    user: alice\n"
                   "    state: stopped\n"},
  };
}

}  // namespace

const ArgsDecl<ServiceArgs>& service_args() {
  static const auto decl =
      ArgsDecl<ServiceArgs>()
          .arg("name", &ServiceArgs::name, "the unit (a name without a dot is a .service)",
               {.required = true,
                .check = [](const json& v) -> std::optional<std::string> {
                  const std::string s = v.get<std::string>();
                  if (s.empty() || s[0] == '-' || s.find_first_of("/ \t\n") != std::string::npos)
                    return "'" + s + "' is not a unit name";
                  return std::nullopt;
                },
                .example = "libvirtd"})
          .arg("state", &ServiceArgs::state, "whether it runs now; restarted only in a handler",
               {.choices = {"started", "stopped", "restarted"}})
          .arg("enabled", &ServiceArgs::enabled,
               "whether it starts at boot (a unit without [Install] is left as it is, with a note)")
          .arg("scope", &ServiceArgs::scope, "the system's manager, or a user's (user: says whose)",
               {.choices = {"system", "user"}})
          .arg("user", &ServiceArgs::user, "whose manager runs the unit, for scope: user",
               {.check = [](const json& v) -> std::optional<std::string> {
                 const std::string s = v.get<std::string>();
                 if (s.empty() || s[0] == '-' || s.find_first_of("@/: \t\n") != std::string::npos)
                   return "'" + s + "' is not a user name";
                 return std::nullopt;
               }})
          .required_one_of({"state", "enabled"})
          .check(check_args);
  return decl;
}

namespace {

ModuleDef definition() {
  auto def = declare_module(
      "service", "a systemd unit enabled, started, stopped or (in a handler) restarted; system or user scope",
      service_args(), converge);
  // gpu_handoff restarts libvirt's daemon so that it reads a new hook.
  def.handler_args = std::vector<std::string>{"name", "state"};
  def.handler_only = [](const json& args) -> std::optional<std::string> {
    if (args.value("state", "") == "restarted")
      return "state: restarted restarts on every run: use it in a handler that a task notifies";
    return std::nullopt;
  };
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt
