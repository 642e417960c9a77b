// Fleet mode: `gptagent apply PLAYBOOK -i INVENTORY` provisions many hosts over SSH the way
// Ansible does, with the agent itself doing the work on each host.
//
// Per host, through the system OpenSSH client (one shared connection per host, batch mode, the
// user's host key checking honoured): the agent binary is copied to a cache directory only when
// its SHA-256 differs from the copy already there; the playbook goes to a private temporary
// directory (0700) removed after the run; `gptagent apply --json` runs there (through `sudo -n`
// with ansible_become) and its JSON is read back. A host that stops for a reboot is rebooted with
// --reboot, waited for (a new boot_id) and run again; the other hosts go on meanwhile.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "agent/expected.hpp"
#include "agent/inventory.hpp"

namespace gpt {

struct FleetOptions {
  std::string playbook;
  std::string inventory;
  std::string limit;  // Ansible host pattern
  int forks = 5;      // hosts at once
  int serial = 0;     // batches of this many hosts, one after the other (0: one batch)
  bool check = false, diff = false, json = false;
  std::vector<std::string> extra_vars;  // the -e arguments as given, passed on to every host
  std::vector<std::string> tags, skip_tags;
  bool reboot = false;
  bool no_trial = false;     // with reboot: the hosts commit boot changes directly (no trial boot first)
  int reboot_timeout = 600;  // seconds to wait for a rebooted host's new boot_id
  std::string color = "auto";
  std::string agent;  // the binary to copy ("" : this one)
  // Passed on to the agent on every host (--reset-state and --from-stage to its first run only: a
  // run after a reboot goes on from where the reboot was asked for).
  bool reset_state = false, no_wait = false;
  std::string from_stage, connect;
  // The hosts run `gptagent revert` (every file the agent changed put back, booted as a trial with
  // reboot) instead of applying `playbook`, which is then only the name the report shows.
  bool revert = false;
};

// Exit codes as Ansible's: 0 every host converged, 1 a host failed, 2 drift in --check,
// 3 a host waits for a reboot (without --reboot), 4 a host was unreachable.
int run_fleet(const FleetOptions& opts, std::ostream& out, std::ostream& err);

// The ssh command line for a host, up to the destination: ansible_ssh_executable (else "ssh", found
// in PATH) with the fleet's options (batch mode, the shared connection at `control_path`), then -p
// only when the inventory gives a port (else ~/.ssh/config decides, as with Ansible), -l, -i (a
// relative key is read from the inventory's directory) and ansible_ssh_common_args and
// ansible_ssh_extra_args split as Ansible splits them. An error when those do not split.
Expected<std::vector<std::string>> ssh_command(const InventoryHost& h, const std::string& inventory,
                                               const std::string& control_path);

// A command line for the remote POSIX shell, every word quoted.
std::string remote_command(const std::vector<std::string>& words);

}  // namespace gpt
