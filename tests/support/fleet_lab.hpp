// Fleet tests' lab: n "hosts", each a sample tree given to its agent as gptagent_root and reached
// through its own real sshd on loopback, with an inventory naming them and a playbook.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/ship.hpp"
#include "tests/support/sandbox.hpp"
#include "tests/support/sshd.hpp"

namespace gpt::test {

namespace fs = std::filesystem;

inline bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// A host's line of the PLAY RECAP, up to the counts given ("ok=2    changed=0").
inline std::string recap(const std::string& host, const std::string& counts) {
  return host + std::string(26 - host.size(), ' ') + " : " + counts;
}

// What the fleet ships of the agent at `path`, as a host must have it: its loadable image.
inline std::string shipped(const std::string& path) {
  auto image = ship::loadable_image(slurp(path));
  return image ? *image : "not an agent: " + image.error();
}

struct Lab {
  SshClient client;
  TempDir files;
  struct Node {
    std::string name;
    std::unique_ptr<LoopbackSshd> sshd;
    std::unique_ptr<SampleHost> tree;
    std::string remote_dir, remote_tmp;
    int port = 0;
  };
  std::vector<Node> nodes;
  std::string playbook = files / "host.yaml";
  std::string inventory = files / "inventory.yml";

  // The shared connections its runs left (gptagent_ssh_persist) end with it.
  ~Lab() { close_ssh_masters(control_dir); }
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;
  // `sshd_config`: more lines for every host's sshd (Ansible's file transfers want sftp).
  explicit Lab(int n, const std::string& playbook_text = kFleetPlaybook, const std::string& sshd_config = "") {
    write(playbook, playbook_text);
    for (int i = 1; i <= n; ++i) {
      Node node;
      node.name = "gpu0" + std::to_string(i);
      node.sshd = std::make_unique<LoopbackSshd>(client, sshd_config);
      node.port = node.sshd->port();
      node.tree = std::make_unique<SampleHost>();
      node.remote_dir = node.sshd->dir() + "/agent-cache";
      node.remote_tmp = node.sshd->dir() + "/tmp";
      fs::create_directories(node.remote_tmp);
      nodes.push_back(std::move(node));
    }
    write_inventory();
  }
  void write_inventory(const std::string& extra_host_vars = "") {
    std::string inv =
        "all:\n  vars:\n    ansible_host: 127.0.0.1\n    ansible_user: root\n    ansible_ssh_private_key_file: " +
        client.key() + "\n    ansible_ssh_common_args: \"" + client.common_args() +
        "\"\n    extra_param: iommu=pt\n  children:\n    gpus:\n      hosts:\n";
    for (const auto& n : nodes)
      inv += "        " + n.name + ":\n          ansible_port: " + std::to_string(n.port) +
             "\n          gptagent_root: " + n.tree->root() + "\n          gptagent_remote_dir: " + n.remote_dir +
             "\n          gptagent_remote_tmp: " + n.remote_tmp + "\n" + extra_host_vars;
    write(inventory, inv);
  }
  // Adds YAML lines ("          key: value\n") to the variables of host i alone.
  void add_host_vars(size_t i, const std::string& lines) const {
    std::string inv = slurp(inventory);
    const std::string line = "          gptagent_root: " + nodes[i].tree->root() + "\n";
    inv.replace(inv.find(line), line.size(), line + lines);
    write(inventory, inv);
  }
  // Each host's reboot is its sandbox's simulated boot (a new boot_id, /proc/cmdline from grub).
  void reboot_through_sandbox() const {
    for (size_t i = 0; i < nodes.size(); ++i)
      add_host_vars(i, "          gptagent_reboot_command: " + source_path("scripts/sandbox-reboot") + " " +
                           nodes[i].tree->root() + "\n");
  }
  ProcResult revert(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args{"revert", "-i", inventory};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_agent(args, {control_env()});
  }
  ProcResult apply(std::vector<std::string> extra = {}) const {
    std::vector<std::string> args{"apply", playbook, "-i", inventory, "--color", "never"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_agent(args, {control_env()});
  }
  // Where the controller keeps its ssh control sockets (made by the run, private).
  std::string control_dir = files / "controller-cp";
  std::string control_env() const { return "ANSIBLE_SSH_CONTROL_PATH_DIR=" + control_dir; }
  // For a controller a test starts with Boost.Process itself: this process's own environment names
  // the lab's control directory, and the controller inherits it (bp::env["ANSIBLE_SSH_CONTROL_PATH_DIR"]
  // reads past shorter entries in Boost 1.74: ASan's heap-buffer-overflow; see run_program).
  void export_control_dir() const { ::setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", control_dir.c_str(), 1); }
  std::string grub(int i) const { return slurp(nodes[i].tree->file("/etc/default/grub")); }
};

inline std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

// What a fleet run leaves in its control sockets' directory: the shared connections it keeps for
// the next run, one socket (gptagent-<16 hex digits>) per host, no lock or log; "" when so.
inline std::string unexpected_control_entries(const std::string& dir, size_t sockets) {
  std::string bad;
  size_t found = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename();
    const bool named = name.size() == 25 && name.starts_with("gptagent-") &&
                       name.find_first_not_of("0123456789abcdef", 9) == std::string::npos;
    if (named && e.is_socket())
      ++found;
    else
      bad += name + " ";
  }
  if (found != sockets) bad += std::to_string(found) + " sockets, not " + std::to_string(sockets);
  return bad;
}

// The agent of a run, mid-run: its directory under `parent` (named gptagent.<run id>.XXXXXXXX) and
// the pid its pid file gives, once that process runs `apply` (within a minute), else nullopt.
struct RunningAgent {
  std::string dir;
  long pid = 0;
};
inline std::optional<RunningAgent> wait_for_running_agent(const std::string& parent) {
  RunningAgent found;
  const bool running = wait_until([&] {
    if (!fs::exists(parent)) return false;
    for (const auto& d : entries(parent)) {
      const std::string pid_file = parent + "/" + d + "/pid";
      if (!fs::exists(pid_file)) continue;
      found = {d, std::atol(slurp(pid_file).c_str())};
      return found.pid > 0 && has(slurp_or_empty("/proc/" + std::to_string(found.pid) + "/cmdline"), "apply");
    }
    return false;
  });
  return running ? std::optional<RunningAgent>(found) : std::nullopt;
}

}  // namespace gpt::test
