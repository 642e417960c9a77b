// libvirt's test:/// driver for the libvirt module tests, and a sample host with OVMF installed.
#pragma once

#include <string>

#include "agent/virt.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt::test {

// The test driver keeps its domains while a connection to it is open: a test holds one.
struct TestDriver {
  virt::Connection conn = std::move(*virt::Connection::open("test:///default"));
  // The domain's inactive XML, or "" when there is none.
  std::string xml(const std::string& name) const {
    auto d = conn.lookup(name);
    return d.ok() && d->has_value() ? *(*d)->xml(true) : "";
  }
};

// A sample host with OVMF installed where Debian puts it.
struct VmHost : SampleHost {
  explicit VmHost(const std::string& name = "ubuntu-22.04") : SampleHost(name) {
    write(file("/usr/share/OVMF/OVMF_CODE_4M.fd"), "OVMF code\n");
    write(file("/usr/share/OVMF/OVMF_VARS_4M.fd"), "OVMF variables template\n");
  }
};

}  // namespace gpt::test
