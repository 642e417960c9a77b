// A private libvirtd for tests: a session daemon of its own in a temporary directory (as the
// unprivileged user `nobody` when the tests run as root), reached through its own socket. It
// never touches the machine's libvirt (/etc/libvirt, /var/lib/libvirt, /run/libvirt).
#pragma once

#include <string>

#include "tests/support/sandbox.hpp"

namespace gpt::test {

class PrivateLibvirtd {
 public:
  PrivateLibvirtd();  // starts it and waits for its socket; throws when it does not come up
  ~PrivateLibvirtd();
  PrivateLibvirtd(const PrivateLibvirtd&) = delete;
  PrivateLibvirtd& operator=(const PrivateLibvirtd&) = delete;
  const std::string& uri() const { return uri_; }
  const std::string& dir() const { return dir_.path(); }  // the daemon's HOME
  std::string virsh(const std::string& command) const;    // runs `virsh -c URI command...` (words)

 private:
  TempDir dir_;
  std::string uri_;
  int pid_ = -1;
};

}  // namespace gpt::test
