// libvirt for the libvirt module tests: the test:/// driver, a private libvirtd per suite, and a
// sample host with OVMF installed.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "agent/virt.hpp"
#include "tests/support/libvirtd.hpp"
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

// A private libvirtd (QEMU driver) started once for a suite: `class X : public WithPrivateLibvirtd<X> {};`.
template <class Suite>
class WithPrivateLibvirtd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { daemon = new PrivateLibvirtd(); }
  static void TearDownTestSuite() {
    delete daemon;
    daemon = nullptr;
  }
  static inline PrivateLibvirtd* daemon = nullptr;
};

}  // namespace gpt::test
