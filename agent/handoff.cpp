#include "agent/handoff.hpp"

#include <pwd.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <thread>

#include "agent/gpu_hold.hpp"
#include "agent/host.hpp"
#include "agent/pci.hpp"
#include "agent/systemctl.hpp"
#include "agent/text.hpp"

namespace gpt {

using json = nlohmann::json;

std::string describe(const HandoffUnit& u) {
  if (u.user.empty()) return u.name;
  return u.name + (u.user == "*" ? " (every user)" : " (user " + u.user + ")");
}

json units_to_json(const std::vector<HandoffUnit>& units) {
  json out = json::array();
  for (const auto& u : units) {
    json one = {{"name", u.name}};
    if (!u.user.empty()) one["user"] = u.user;
    out.push_back(std::move(one));
  }
  return out;
}

json to_json(const HandoffPlan& p) {
  return {{"vm", p.vm}, {"gpus", p.gpus}, {"units", units_to_json(p.units)}, {"timeout", p.timeout}};
}

bool handoff_unit_name_ok(std::string_view s) {
  return !s.empty() && s.size() <= 256 && s[0] != '-' && s.find_first_of("/ \t\n\\") == std::string_view::npos;
}
bool handoff_user_name_ok(std::string_view s) {
  return s == "*" ||
         (!s.empty() && s.size() <= 64 && s[0] != '-' && s.find_first_of("@/: \t\n\\") == std::string_view::npos);
}

namespace {

Expected<std::vector<HandoffUnit>> units_from_json(const json& j, const std::string& where) {
  std::vector<HandoffUnit> out;
  if (!j.is_array()) return Error{where + ": units is not a list"};
  for (const auto& u : j) {
    if (!u.is_object() || !u.contains("name") || !u["name"].is_string())
      return Error{where + ": a unit without a name"};
    HandoffUnit unit{u["name"].get<std::string>(), u.value("user", std::string())};
    if (!handoff_unit_name_ok(unit.name) || (!unit.user.empty() && !handoff_user_name_ok(unit.user)))
      return Error{where + ": '" + describe(unit) + "' is not a unit"};
    out.push_back(std::move(unit));
  }
  return out;
}

}  // namespace

Expected<HandoffPlan> handoff_plan_from_json(const json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("vm") || !j["vm"].is_string() || !j.contains("gpus") || !j["gpus"].is_array())
    return Error{where + ": not a hand-off plan (vm, gpus, units, timeout)"};
  HandoffPlan p;
  p.vm = j["vm"].get<std::string>();
  for (const auto& g : j["gpus"]) {
    auto address = g.is_string() ? parse_pci_address(g.get<std::string>()) : std::nullopt;
    if (!address) return Error{where + ": " + g.dump() + " is not a PCI address"};
    p.gpus.push_back(*address);
  }
  auto units = units_from_json(j.value("units", json::array()), where);
  if (!units) return Error{units.error()};
  p.units = std::move(*units);
  const json timeout = j.value("timeout", json(30));
  if (!timeout.is_number_integer() || timeout.get<long>() < 1 || timeout.get<long>() > 600)
    return Error{where + ": timeout must be 1 to 600 seconds"};
  p.timeout = timeout.get<int>();
  return p;
}

bool handoff_vm_name_ok(std::string_view vm) {
  if (vm.empty() || vm.size() > 200 || vm[0] == '.') return false;
  return std::all_of(vm.begin(), vm.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' || c == '-';
  });
}

namespace {

bool has_unit_file(const Root& root, const std::string& scope_dir, const std::string& name) {
  for (const char* base : {"/etc/systemd/", "/usr/lib/systemd/", "/lib/systemd/"})
    if (path_exists(root, std::string(base) + scope_dir + "/" + name)) return true;
  return false;
}

}  // namespace

std::vector<HandoffUnit> known_gpu_units(const Root& root, bool display_manager) {
  std::vector<HandoffUnit> out;
  // GNOME's remote desktop renders with the GPU: a user unit on Ubuntu 22.04 and 24.04, and on
  // 24.04 also a system unit (remote login) and the headless variant.
  if (has_unit_file(root, "user", "gnome-remote-desktop.service")) out.push_back({"gnome-remote-desktop.service", "*"});
  if (has_unit_file(root, "user", "gnome-remote-desktop-headless.service"))
    out.push_back({"gnome-remote-desktop-headless.service", "*"});
  if (has_unit_file(root, "system", "gnome-remote-desktop.service"))
    out.push_back({"gnome-remote-desktop.service", ""});
  if (display_manager) out.push_back({"display-manager.service", ""});
  if (has_unit_file(root, "system", "nvidia-persistenced.service")) out.push_back({"nvidia-persistenced.service", ""});
  return out;
}

std::vector<std::string> gpu_holders(const Root& root, const std::vector<std::string>& gpus) {
  std::vector<std::string> out;
  const auto devices = read_pci_devices(root);
  const ProcScan scan = scan_gpu_nodes(root);
  std::map<long, std::vector<std::string>> held;  // pid -> nodes
  std::map<long, std::string> names;
  for (const auto& address : gpus) {
    auto dev = std::find_if(devices.begin(), devices.end(), [&](const PciDevice& d) { return d.address == address; });
    if (dev == devices.end()) continue;
    const GpuNodes nodes = gpu_nodes(root, *dev);
    for (const auto& o : scan.open) {
      if (!nodes.match(o.node)) continue;
      auto& list = held[o.pid];
      if (std::find(list.begin(), list.end(), o.node) == list.end()) list.push_back(o.node);
      names[o.pid] = o.comm;
    }
  }
  for (const auto& [pid, nodes] : held)
    out.push_back(names[pid] + " (pid " + std::to_string(pid) + ") has " + join(nodes, ", ") + " open");
  return out;
}

namespace {

// The users whose manager runs now (/run/user/UID), by name: from the root's /etc/passwd, and on
// the host itself from NSS too (users of a directory, LDAP or sssd).
std::vector<std::string> running_user_managers(const Root& root) {
  std::vector<std::string> out;
  auto uids = list_dir(root, "/run/user");
  if (!uids) return out;
  auto passwd = read_file_if_exists(root, "/etc/passwd", 4u << 20);
  std::map<std::string, std::string> name_of;
  if (!root.sandboxed())
    for (const auto& uid : *uids) {
      if (uid.empty() || uid.size() > 9 || uid.find_first_not_of("0123456789") != std::string::npos) continue;
      struct passwd pw {
      }, *found = nullptr;
      char buf[4096];
      if (::getpwuid_r(static_cast<uid_t>(std::stoul(uid)), &pw, buf, sizeof buf, &found) == 0 && found &&
          handoff_user_name_ok(found->pw_name))
        name_of.emplace(uid, found->pw_name);
    }
  for (std::string_view line : lines(passwd && *passwd ? std::string_view(**passwd) : std::string_view())) {
    std::vector<std::string> f;
    size_t start = 0;
    for (size_t i = 0; i <= line.size(); ++i)
      if (i == line.size() || line[i] == ':') {
        f.emplace_back(line.substr(start, i - start));
        start = i + 1;
      }
    if (f.size() >= 3 && handoff_user_name_ok(f[0]) && f[0] != "*") name_of.emplace(f[2], f[0]);
  }
  for (const auto& uid : *uids)
    if (auto n = name_of.find(uid); n != name_of.end() && uid != "0") out.push_back(n->second);
  return out;
}

struct Systemctl {
  const Root& root;
  HandoffIo& io;
  std::chrono::seconds timeout;
  Expected<Command> command(const HandoffUnit& u, const std::string& verb) const {
    Command cmd;
    cmd.argv = {"systemctl"};
    if (!u.user.empty()) {
      auto user = user_systemctl(root, u.user);
      if (!user) return Error{user.error()};
      cmd.argv = std::move(*user);
    }
    cmd.argv.insert(cmd.argv.end(), {verb, u.name});
    cmd.timeout = timeout;
    return cmd;
  }
  bool active(const HandoffUnit& u) const {
    auto cmd = command(u, "is-active");
    if (!cmd) return false;  // no such user: nothing of theirs runs
    ExecResult r = io.exec.run(*cmd);
    const std::string state(trim(r.out.substr(0, r.out.find('\n'))));
    return state == "active" || state == "activating" || state == "reloading";
  }
  // "" when done, else why not.
  std::string change(const HandoffUnit& u, const std::string& verb) const {
    auto cmd = command(u, verb);
    if (!cmd) return verb + " " + describe(u) + ": " + cmd.error();
    ExecResult r = io.exec.run(*cmd);
    return r.ok() ? "" : cmd->display() + " failed: " + r.failure(true);
  }
};

std::string record_path(const std::string& vm) { return std::string(kHandoffRecordDir) + "/" + vm + ".json"; }

}  // namespace

std::vector<HandoffUnit> handoff_stopped(const Root& root, const std::string& vm) {
  auto text = read_file_if_exists(root, record_path(vm), 1u << 20);
  if (!text || !*text) return {};
  json j = json::parse(**text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return {};
  auto units = units_from_json(j.value("stopped", json::array()), record_path(vm));
  return units ? *units : std::vector<HandoffUnit>{};
}

namespace {

Status write_record(const Root& root, const std::string& vm, const std::vector<HandoffUnit>& stopped) {
  json j = {{"vm", vm}, {"stopped", units_to_json(stopped)}};
  WriteOptions opts;
  opts.backup = false;
  opts.no_follow = true;
  opts.create_mode = 0600;
  auto w = write_file_atomic(root, record_path(vm), j.dump(2) + "\n", opts);
  if (!w) return Error{w.error()};
  return {};
}

// Starts what was stopped, last first; what did not come back, in words.
std::vector<std::string> start_again(const Systemctl& sc, const std::string& vm,
                                     const std::vector<HandoffUnit>& stopped) {
  std::vector<std::string> down;
  for (auto it = stopped.rbegin(); it != stopped.rend(); ++it) {
    const std::string why = sc.change(*it, "start");
    if (why.empty())
      sc.io.log(vm + ": started " + describe(*it) + " again");
    else {
      sc.io.log(vm + ": " + why);
      down.push_back(describe(*it));
    }
  }
  return down;
}

std::string driver_of(const Root& root, const std::string& address) {
  auto link = read_link(root, "/sys/bus/pci/devices/" + address + "/driver");
  if (!link) return "";
  return link->substr(link->find_last_of('/') + 1);
}

int prepare(const Root& root, HandoffIo& io, const HandoffPlan& plan) {
  const Systemctl sc{root, io, std::chrono::seconds(plan.timeout)};
  // A prepare whose release never came (libvirt died in between) left its record: those units
  // stay recorded, to be started at this VM's next release.
  std::vector<HandoffUnit> stopped = handoff_stopped(root, plan.vm);
  std::vector<HandoffUnit> targets;
  for (const auto& u : plan.units) {
    if (u.user != "*") {
      targets.push_back(u);
      continue;
    }
    for (const auto& user : running_user_managers(root)) targets.push_back({u.name, user});
  }
  auto give_up = [&](const std::string& why) {
    io.log(plan.vm + ": " + why);
    const auto down = start_again(sc, plan.vm, stopped);
    if (!down.empty()) io.log(plan.vm + ": still down after the failed hand-off: " + join(down, ", "));
    (void)remove_own_file(root, record_path(plan.vm));
    return 1;
  };
  for (const auto& t : targets) {
    if (std::find(stopped.begin(), stopped.end(), t) != stopped.end() || !sc.active(t)) continue;
    if (const std::string why = sc.change(t, "stop"); !why.empty()) return give_up(why);
    stopped.push_back(t);
    io.log(plan.vm + ": stopped " + describe(t));
    if (auto s = write_record(root, plan.vm, stopped); !s)
      return give_up("cannot record what was stopped: " + s.error());
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::seconds(plan.timeout);
  for (;;) {
    const auto holders = gpu_holders(root, plan.gpus);
    if (holders.empty()) break;
    if (std::chrono::steady_clock::now() >= deadline)
      return give_up("the GPU " + join(plan.gpus, ", ") + " is still held after " + std::to_string(plan.timeout) +
                     " s: " + join(holders, "; ") + "; the VM does not start");
    std::this_thread::sleep_for(io.poll);
  }
  const auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  std::vector<std::string> names;
  for (const auto& u : stopped) names.push_back(describe(u));
  io.log(plan.vm + ": GPU " + join(plan.gpus, ", ") + " free after " + std::to_string(waited) + " ms" +
         (names.empty() ? ", nothing to stop" : "; stopped " + join(names, ", ")));
  return 0;
}

int release(const Root& root, HandoffIo& io, const HandoffPlan& plan) {
  const Systemctl sc{root, io, std::chrono::seconds(plan.timeout)};
  int rc = 0;
  // libvirt gives managed devices back to their host drivers before this call; one it left on
  // vfio-pci (managed='no') is given back here, so the units find their GPU.
  for (const auto& address : plan.gpus) {
    if (driver_of(root, address) != "vfio-pci") continue;
    SysfsWriter kernel;
    SysfsWriter& sysfs = io.sysfs ? *io.sysfs : kernel;
    const std::string dev = "/sys/bus/pci/devices/" + address;
    Status s = sysfs.write(root, dev + "/driver_override", "\n");
    if (s) s = sysfs.write(root, "/sys/bus/pci/drivers/vfio-pci/unbind", address);
    if (s) s = sysfs.write(root, "/sys/bus/pci/drivers_probe", address);
    const std::string now = driver_of(root, address);
    if (!s || now.empty() || now == "vfio-pci") {
      io.log(plan.vm + ": " + address + " is not back on a host driver (" +
             (s ? "now: " + (now.empty() ? "none" : now) : s.error()) + ")");
      rc = 1;
    } else {
      io.log(plan.vm + ": " + address + " given back from vfio-pci to " + now);
    }
  }
  const std::vector<HandoffUnit> stopped = handoff_stopped(root, plan.vm);
  const auto down = start_again(sc, plan.vm, stopped);
  (void)remove_own_file(root, record_path(plan.vm));
  if (!down.empty()) {
    io.log(plan.vm + ": still down: " + join(down, ", "));
    rc = 1;
  } else {
    io.log(plan.vm + ": " + (stopped.empty() ? "nothing had been stopped" : "every unit stopped for it runs again"));
  }
  return rc;
}

}  // namespace

int run_handoff(const Root& root, HandoffIo& io, const std::string& vm, const std::string& op, const std::string& sub) {
  const bool is_prepare = op == "prepare" && sub == "begin", is_release = op == "release" && sub == "end";
  if ((!is_prepare && !is_release) || !handoff_vm_name_ok(vm)) return 0;
  const std::string where = std::string(kHandoffPlanDir) + "/" + vm + ".json";
  auto text = read_file_if_exists(root, where, 1u << 20);
  if (!text) {
    io.log(vm + ": " + text.error());
    return 1;
  }
  if (!*text) return 0;  // no plan: a VM the hand-off is not for
  json j = json::parse(**text, nullptr, false);
  auto plan = j.is_discarded() ? Expected<HandoffPlan>(Error{where + ": not JSON"}) : handoff_plan_from_json(j, where);
  if (!plan) {
    io.log(vm + ": " + plan.error());
    return 1;
  }
  return is_prepare ? prepare(root, io, *plan) : release(root, io, *plan);
}

}  // namespace gpt
