// libvirt for the libvirt module tests: the test:/// driver, a private libvirtd per suite, and a
// sample host with OVMF installed.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "agent/virt.hpp"
#include "tests/support/converge.hpp"
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

// Hand edits of what a playbook declares, made one at a time as `virsh edit` would (the first
// `from` in the domain's XML becomes `to`): each is drift that --check reports as a redefinition,
// apply repairs it exactly as --check said, and the next run is ok.
inline void expect_edits_repaired(TestDriver& lv, const std::string& root, const std::string& name,
                                  const std::string& playbook,
                                  const std::vector<std::pair<std::string, std::string>>& edits) {
  for (const auto& [from, to] : edits) {
    SCOPED_TRACE(from);
    std::string edited = lv.xml(name);
    const size_t at = edited.find(from);
    ASSERT_NE(at, std::string::npos) << edited;
    edited.replace(at, from.size(), to);
    auto defined = lv.conn.define(edited);
    ASSERT_TRUE(defined.ok()) << defined.error();
    auto drift = converge_root(root, playbook, true);
    EXPECT_EQ(drift.tasks.back().result.msg, "redefined domain " + name);
    auto fixed = converge_root(root, playbook, false);
    EXPECT_EQ(fixed.tasks.back().result.status, Outcome::changed);
    EXPECT_EQ(fixed.changes(), drift.changes());
    EXPECT_NE(lv.xml(name).find(from), std::string::npos) << lv.xml(name);
    EXPECT_EQ(converge_root(root, playbook, false).tasks.back().result.status, Outcome::ok);
  }
}

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
