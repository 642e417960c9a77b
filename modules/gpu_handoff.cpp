// gpu_handoff: hands a VM's GPU over from the host around each run of the VM. It writes the VM's
// plan (/etc/gptagent/handoff/VM.json: the GPU's functions, the units to stop in order, the
// bound) and owns libvirt's qemu hook /etc/libvirt/hooks/qemu.d/gptagent-handoff, which runs the
// installed agent's `gptagent handoff` (agent/handoff.hpp) at every step of every QEMU guest;
// that acts for the VMs with a plan only. libvirt reads its hooks when its daemon starts: a new
// hook restarts the daemon (a handler; running VMs keep running).
#include <sys/stat.h>

#include <algorithm>
#include <array>

#include "agent/changes.hpp"
#include "agent/declare.hpp"
#include "agent/gpu.hpp"
#include "agent/handoff.hpp"
#include "agent/installed.hpp"
#include "agent/text.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

std::string hook_text(const std::string& agent) {
  return "#!/bin/sh\n"
         "# gptagent gpu_handoff: hands GPUs over around the VMs planned in /etc/gptagent/handoff/.\n"
         "# libvirt runs it at each step of every QEMU guest's life, the domain XML on standard input;\n"
         "# it prints nothing, which libvirt takes for that XML unchanged. Written by gptagent: an edit\n"
         "# here is undone by its next run.\n"
         "exec " +
         agent + " handoff \"$1\" \"$2\" \"$3\" >/dev/null\n";
}

struct UserUnit {
  std::string name;
  std::string user = "*";
};

struct Args {
  std::string vm;
  json gpus;  // null: not given (state: absent needs none)
  bool force = false;
  std::vector<std::string> units;
  std::vector<UserUnit> user_units;
  bool known_units = true;
  std::optional<bool> display_manager;  // unset: when the VM takes the GPU the host boots on
  long long timeout = 30;
  std::optional<std::string> agent;
  std::string state = "present";
};

Expected<std::string> agent_path(const Context& ctx, const Args& args) {
  return installed_agent(ctx.root, args.agent.value_or(""), "the hook");
}

// libvirt's daemon for QEMU here: the modular virtqemud where it is enabled, else libvirtd;
// nullopt when libvirt is not installed (its daemon will read the hook when it first starts).
std::optional<std::string> libvirt_daemon(const Root& root) {
  for (const char* p : {"/etc/systemd/system/multi-user.target.wants/virtqemud.service",
                        "/etc/systemd/system/sockets.target.wants/virtqemud.socket"})
    if (path_exists(root, p)) return "virtqemud";
  for (const char* dir : {"/etc/systemd/system/", "/usr/lib/systemd/system/", "/lib/systemd/system/"})
    if (path_exists(root, std::string(dir) + "libvirtd.service")) return "libvirtd";
  return std::nullopt;
}

// display_manager: as declared; unset, whether the VM takes the GPU the host boots on (a single-GPU
// host's display manager holds it) and the host has a display manager.
bool stops_display_manager(const Context& ctx, const Args& args, const std::vector<Gpu>& gpus) {
  if (args.display_manager) return *args.display_manager;
  const bool boot_gpu = std::any_of(gpus.begin(), gpus.end(), [&](const Gpu& g) {
    return std::any_of(ctx.facts.pci.begin(), ctx.facts.pci.end(),
                       [&](const PciDevice& d) { return d.address == g.address && d.boot_vga; });
  });
  return boot_gpu && path_exists(ctx.root, "/etc/systemd/system/display-manager.service");
}

HandoffPlan plan_for(const Context& ctx, const Args& args, std::vector<std::string> functions, bool display_manager) {
  HandoffPlan plan;
  plan.vm = args.vm;
  plan.gpus = std::move(functions);
  plan.timeout = static_cast<int>(args.timeout);
  auto add = [&](HandoffUnit u) {
    if (u.name.find('.') == std::string::npos) u.name += ".service";
    if (std::find(plan.units.begin(), plan.units.end(), u) == plan.units.end()) plan.units.push_back(std::move(u));
  };
  for (const auto& u : args.units) add({u, ""});
  for (const auto& u : args.user_units) add({u.name, u.user});
  if (args.known_units)
    for (auto& u : known_gpu_units(ctx.root, display_manager)) add(std::move(u));
  else if (display_manager)
    add({"display-manager.service", ""});
  return plan;
}

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  const std::string& vm = args.vm;
  const std::string plan_path = std::string(kHandoffPlanDir) + "/" + vm + ".json";
  FileChanges files(ctx.root);
  Result r = Result::ok();

  if (args.state == "absent") {
    auto plan = read_file_if_exists(ctx.root, plan_path);
    if (!plan) return Result::failed(plan.error());
    if (*plan) files.remove(plan_path, **plan);
    // The hook goes with the last plan.
    auto others = list_dir(ctx.root, kHandoffPlanDir);
    if (!others) return Result::failed(others.error());
    const bool last = std::none_of(others->begin(), others->end(),
                                   [&](const std::string& n) { return n.ends_with(".json") && n != vm + ".json"; });
    auto hook = read_file_if_exists(ctx.root, kHandoffHook);
    if (!hook) return Result::failed(hook.error());
    if (last && *hook) files.remove(kHandoffHook, **hook);
    r.msg = "no hand-off for VM " + vm;
  } else {
    auto gpus = select_gpus(ctx.facts, args.gpus, true);
    if (!gpus) return Result::failed(gpus.error());
    std::vector<std::string> functions;
    for (const auto& g : *gpus)
      for (const auto& f : g.functions)
        if (std::find(functions.begin(), functions.end(), f) == functions.end()) functions.push_back(f);
    const bool display_manager = stops_display_manager(ctx, args, *gpus);
    const HandoffPlan plan = plan_for(ctx, args, functions, display_manager);
    if (display_manager && !path_exists(ctx.root, "/etc/systemd/system/display-manager.service"))
      return Result::failed("display_manager: this host has no display manager (no display-manager.service)");
    auto agent = agent_path(ctx, args);
    if (!agent) return Result::failed(agent.error());
    auto hook_before = read_file_if_exists(ctx.root, kHandoffHook);
    if (!hook_before) return Result::failed(hook_before.error());
    if (auto s = files.write(plan_path, to_json(plan).dump(2) + "\n", FileAttrs{.uid = 0, .gid = 0, .mode = 0644}); !s)
      return Result::failed(s.error());
    if (auto s = files.write(kHandoffHook, hook_text(*agent), FileAttrs{.uid = 0, .gid = 0, .mode = 0755}); !s)
      return Result::failed(s.error());
    std::vector<std::string> units;
    for (const auto& u : plan.units) units.push_back(describe(u));
    r.msg = "VM " + vm + " takes " + join(plan.gpus, ", ") + "; the hook stops " +
            (units.empty() ? std::string("no unit") : join(units, ", ")) + " and waits up to " +
            std::to_string(plan.timeout) + " s for the GPU to be free";
    r.data = {{"plan", to_json(plan)}, {"hook", kHandoffHook}, {"agent", *agent}};
    if (!*hook_before) {
      if (const auto daemon = libvirt_daemon(ctx.root))
        r.handlers.push_back(restart_service(*daemon, "it reads its hooks when it starts"));
      else
        r.msg += " (libvirt's daemon is not installed: it reads the hook when it first starts)";
    }
  }
  if (files.empty()) return r;
  r.status = Outcome::changed;
  r.diff = files.diff();
  r.data["files"] = files.paths();
  if (apply)
    if (auto s = files.apply(r.data); !s) return Result::failed(s.error());
  return r;
}

// The runtime's own rule (agent/handoff.hpp): a plan it would refuse is refused at load.
std::optional<std::string> name_check(const json& v, bool user) {
  const std::string s = v.get<std::string>();
  if (user ? handoff_user_name_ok(s) : handoff_unit_name_ok(s)) return std::nullopt;
  return "'" + s + "' is not a " + (user ? "user" : "unit") + " name";
}

// What `gptagent doc gpu_handoff` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Hands a VM's GPU over from the host around each run of the VM (the walkthrough's \"turn the RDP server "
          "off, start the VM, turn it back on\"; a single-GPU host's display manager). vm is the domain; gpus "
          "(every function of each slot goes); units, the system units to stop, in order; user_units: [{name, "
          "user}], a user's unit, or user: '*' for every user whose manager runs then; known_units: true, the units "
          "known to hold GPUs that the host has (GNOME's remote desktop as user units and, on Ubuntu 24.04, as a "
          "system unit and its headless variant; nvidia-persistenced); display_manager (also "
          "display-manager.service; unset, when the VM takes the GPU the host boots on: a single-GPU host); "
          "timeout (seconds, default 30); agent, the installed agent the hook runs (/usr/bin/gptagent and the like; "
          "refused when it or a directory above it belongs to another user or may be written by one); state: "
          "absent.\n\n"
          "It writes the VM's plan to /etc/gptagent/handoff/VM.json and owns libvirt's hook "
          "/etc/libvirt/hooks/qemu.d/gptagent-handoff (a new hook restarts libvirt's daemon, which reads hooks when "
          "it starts: a service handler; running VMs keep running).\n\n"
          "At prepare begin the hook's gptagent handoff stops the units that are active, in order, recording each "
          "(system or which user's) in /run/gptagent/handoff/, then waits until no process holds the GPU (its "
          "/dev/dri nodes, /dev/nvidia*, and its I2C adapters' /dev/i2c-N, which KDE's powerdevil and ddcutil "
          "open); past timeout it starts everything it stopped again, names who still holds the GPU and fails, so "
          "the VM does not start. At release end a GPU that libvirt left on vfio-pci (managed='no') is given back "
          "to its host driver, and exactly the recorded units start again, in reverse order; one that does not is "
          "logged as still down. The hook never calls libvirt, prints nothing on standard output (libvirt would "
          "read it as the domain's XML) and logs to the journal (journalctl -t gptagent-handoff).\n\n"
          "gptagent facts shows each VM's plan and what is stopped for it now.",
      .examples = {"# While the VM win11 runs, the RDP server and ollama are stopped and its GPU is free\n"
                   "- name: the GPU handed over to win11 around each of its runs\n"
                   "  gpu_handoff:\n"
                   "    vm: win11\n"
                   "    gpus: [\"0000:01:00.0\"]\n"
                   "    units: [xrdp, ollama]\n",
                   "# A single-GPU host: the display manager and every user's remote desktop go too\n"
                   "- gpu_handoff:\n"
                   "    vm: win11\n"
                   "    gpus: auto\n"
                   "    display_manager: true\n"
                   "    user_units:\n"
                   "      - {name: gnome-remote-desktop, user: \"*\"}\n"
                   "    timeout: 60\n"},
      .notifies = {"service"},
  };
}

const Registration registration{
    declare_module(
        "gpu_handoff", "a libvirt hook that stops what holds a VM's GPU before the VM starts and starts it again after",
        ArgsDecl<Args>()
            .arg("vm", &Args::vm, "the libvirt domain whose start takes the GPUs",
                 {.required = true,
                  .check = [](const json& v) -> std::optional<std::string> {
                    if (handoff_vm_name_ok(v.get<std::string>())) return std::nullopt;
                    return "'" + v.get<std::string>() +
                           "': a domain name of letters, digits, '.', '_', '+' and '-' (not led by '.')";
                  },
                  .example = "win11"})
            .arg(gpus_arg(), &Args::gpus)
            .arg("force", &Args::force,
                 "(accepted for symmetry with the other GPU modules; the hand-off takes any GPU named)")
            .arg("units", &Args::units,
                 "system units the hook stops while the VM runs (a name without a dot is a .service)",
                 {.check = [](const json& v) -> std::optional<std::string> {
                    for (const auto& u : v)
                      if (auto why = name_check(u, false)) return why;
                    return std::nullopt;
                  },
                  .example = json::array({"ollama", "sunshine"})})
            .arg("user_units", &Args::user_units, "user units the hook stops: name, and user (* for every user's)",
                 ArgsDecl<UserUnit>()
                     .arg("name", &UserUnit::name, "the user unit",
                          {.required = true, .check = [](const json& v) { return name_check(v, false); }})
                     .arg("user", &UserUnit::user, "whose (* for every logged-in user's)",
                          {.check = [](const json& v) { return name_check(v, true); }}))
            .arg("known_units", &Args::known_units,
                 "also stop the units known to hold a GPU that this host has (gnome-remote-desktop, "
                 "nvidia-persistenced)")
            .arg("display_manager", &Args::display_manager,
                 "stop the display manager too; unset, it is stopped when the VM takes the GPU the host boots on")
            .arg("timeout", &Args::timeout,
                 "seconds the hook waits for the GPU to be free before it fails the VM's start",
                 {.check = [](const json& v) -> std::optional<std::string> {
                   if (v.get<long>() < 1 || v.get<long>() > 600) return "must be 1 to 600 seconds";
                   return std::nullopt;
                 }})
            .arg("agent", &Args::agent,
                 "the installed agent the hook runs (found in the usual places when not given); refused when it or a "
                 "directory above it belongs to another user or may be written by one")
            .arg("state", &Args::state,
                 "present: the VM has a hand-off; absent: it has none (the hook goes with the last)",
                 {.choices = {"present", "absent"}})
            .check([](const Args& a) -> std::optional<std::string> {
              if (a.state == "present" && a.gpus.is_null())
                return "gpus: the VM's GPUs are required (unless state: absent)";
              return std::nullopt;
            }),
        converge),
    docs()};

}  // namespace
}  // namespace gpt
