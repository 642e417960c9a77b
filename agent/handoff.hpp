// The GPU hand-off around a VM's life, run by libvirt's qemu hook that the gpu_handoff module
// installs. At `prepare begin` (before libvirt detaches the VM's devices from their drivers) the
// units that hold the VM's GPU are stopped in order, each recorded as it was, and the GPU is
// checked free of every process within a bound; when it is not, everything stopped is started
// again and the hook fails, so the VM does not start. At `release end` (after libvirt gave the
// devices back) the GPU is checked on its host driver and exactly the recorded units are started
// again, in reverse order. The hook never calls libvirt: libvirt waits for it.
#pragma once

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "agent/exec.hpp"
#include "agent/expected.hpp"

namespace gpt {

class Root;
class SysfsWriter;

// A systemd unit of the plan: the system manager's (user empty), one user's, or every user
// manager that runs when the hook does ("*").
struct HandoffUnit {
  std::string name;
  std::string user;
  bool operator==(const HandoffUnit&) const = default;
};
// "nvidia-persistenced.service", "gnome-remote-desktop.service (user alice)", "(every user)".
std::string describe(const HandoffUnit& u);
// What a plan may name: a unit (no '/', blank or backslash, not led by '-'), a user (nor '@' or
// ':'; or "*").
bool handoff_unit_name_ok(std::string_view s);
bool handoff_user_name_ok(std::string_view s);
// [{"name": ..., "user": ...}]: the form of a plan's units and of the hook's record.
nlohmann::json units_to_json(const std::vector<HandoffUnit>& units);

struct HandoffPlan {
  std::string vm;
  std::vector<std::string> gpus;   // every PCI function that goes to the VM
  std::vector<HandoffUnit> units;  // in the order they are stopped
  int timeout = 30;                // seconds for the GPU to be let go, and for each unit to stop
};
nlohmann::json to_json(const HandoffPlan& p);
Expected<HandoffPlan> handoff_plan_from_json(const nlohmann::json& j, const std::string& where);

constexpr const char* kHandoffPlanDir = "/etc/gptagent/handoff";
constexpr const char* kHandoffRecordDir = "/run/gptagent/handoff";
constexpr const char* kHandoffHook = "/etc/libvirt/hooks/qemu.d/gptagent-handoff";
// A domain name that can name the plan's file: letters, digits, '.', '_', '+', '-', not led by '.'.
bool handoff_vm_name_ok(std::string_view vm);

// The units known to hold GPUs that this host has (their unit files under the root), in the
// order they are stopped: GNOME's remote desktop (each user's, the system one of Ubuntu 24.04
// and its headless variant), with `display_manager` the display manager (display-manager.service,
// on a host whose only GPU goes to the VM), and last nvidia-persistenced.
std::vector<HandoffUnit> known_gpu_units(const Root& root, bool display_manager);

// What holds the GPUs (every function's DRM nodes, the nvidia nodes, its I2C adapters): a line
// per process, "gnome-shell (pid 2211) has /dev/dri/card1 open".
std::vector<std::string> gpu_holders(const Root& root, const std::vector<std::string>& gpus);

struct HandoffIo {
  Exec& exec;                                   // systemctl
  std::function<void(const std::string&)> log;  // the journal, a line per event
  SysfsWriter* sysfs = nullptr;                 // nullptr: the kernel's files
  std::chrono::milliseconds poll{200};
};

// The units the hook stopped for `vm` and has not started again.
std::vector<HandoffUnit> handoff_stopped(const Root& root, const std::string& vm);

// libvirt's hook call for `vm` (operation, sub-operation): the hand-off at prepare/begin and
// release/end when the VM has a plan, nothing otherwise. 0, or 1 with the reason logged.
int run_handoff(const Root& root, HandoffIo& io, const std::string& vm, const std::string& op, const std::string& sub);

}  // namespace gpt
