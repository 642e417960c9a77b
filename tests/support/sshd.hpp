// Real sshd instances on loopback ports for fleet tests: each with its own host key and config
// in a temporary directory, accepting one client key, listening on 127.0.0.1 only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tests/support/sandbox.hpp"

namespace gpt::test {

// The client side shared by every sshd of a test: a user key and a known_hosts file.
struct SshClient {
  SshClient();
  TempDir dir;
  std::string key() const { return dir / "id_ed25519"; }
  std::string known_hosts() const { return dir / "known_hosts"; }
  // The ssh options a fleet test gives hosts through ansible_ssh_common_args.
  std::string common_args() const;
};

class LoopbackSshd {
 public:
  // Starts sshd on a free port of 127.0.0.1, trusting `client`'s key; adds its host key to the
  // client's known_hosts. `extra_config`: more sshd_config lines (e.g. ChrootDirectory).
  explicit LoopbackSshd(const SshClient& client, const std::string& extra_config = "");
  ~LoopbackSshd();
  LoopbackSshd(const LoopbackSshd&) = delete;
  LoopbackSshd& operator=(const LoopbackSshd&) = delete;
  int port() const { return port_; }
  const std::string& dir() const { return dir_.path(); }
  // The port then refuses connections, and the sessions it served end (as when the host goes
  // down): a shared connection to it is gone too.
  void stop();
  // Every session of the client runs `program` instead (authorized_keys command=, as a host that
  // answers what it likes); the command asked for is in its $SSH_ORIGINAL_COMMAND.
  void force_command(const std::string& program);
  // Replaces its host key (the known_hosts entry then no longer matches) and restarts it.
  void change_host_key();

 private:
  void start();
  TempDir dir_;
  int port_ = 0;
  int pid_ = -1;
};

// What fleet tests converge their hosts with, without a reboot: the kernel command line (with the
// host variable extra_param) and the X11 configs.
inline constexpr const char* kFleetPlaybook = R"(stages:
  - name: host
    reboot: never
    tasks:
      - name: IOMMU on the kernel command line
        grub_cmdline:
          iommu: auto
          present: ["{{ extra_param }}"]
      - name: No X11 config may take the GPU
        xorg_cleanup: {}
)";

// A port of 127.0.0.1 where nothing listens.
int unused_port();

// Ends every ssh master whose control socket is in `dir` (the shared connections a fleet run left
// for the next, gptagent_ssh_persist): what a test started ends with it.
void close_ssh_masters(const std::string& dir);

}  // namespace gpt::test
