// Fleet mode gives each host's agent what the command line and the inventory ask for, or refuses
// before any host is touched (issue 20, item 9): nothing is accepted and then dropped.
#include <gtest/gtest.h>

#include <boost/process.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "agent/text.hpp"
#include "tests/support/fleet_lab.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
namespace bp = boost::process;
using test::has;

// Issue 20, item 9: --reset-state, --from-stage, --connect and --no-wait reach the agent on every
// host; ansible_become_flags reach its sudo, split as Ansible splits them; -e @FILE is read on the
// controller (a relative path from its working directory, which no host has) and its values win
// over the host's variables. Each host's sudo is a wrapper recording what it was given.
TEST(FleetForwardedOptions, EveryApplyOptionReachesTheAgentOnEachHost) {
  test::Lab lab(2);
  // One file per call (named by the wrapper's pid): the two hosts' calls run at once, and lines
  // appended to one file by several writes each could interleave.
  const std::string calls_dir = lab.files / "sudo-calls", sudo = lab.files / "recording-sudo";
  fs::create_directories(calls_dir);
  test::write(sudo,
              "#!/bin/sh\n{ printf argv; for a in \"$@\"; do printf '|%s' \"$a\"; done; echo; } >> " + calls_dir +
                  "/$$\nwhile [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"\n",
              0755);
  lab.write_inventory("          ansible_become: yes\n          ansible_become_exe: " + sudo +
                      "\n          ansible_become_flags: \"-H --preserve-env='A B'\"\n");
  test::write(lab.files / "extra.json", R"({"extra_param": "iommu=soft"})");
  const std::string out = lab.files / "out", err = lab.files / "err";
  lab.export_control_dir();
  bp::child controller(GPTAGENT_BIN,
                       bp::args({"apply", lab.playbook, "-i", lab.inventory, "--color", "never", "-e", "@extra.json",
                                 "--reset-state", "--from-stage", "host", "--connect", "test:///default", "--no-wait"}),
                       bp::start_dir(lab.files.path()), bp::std_in.close(), bp::std_out > out, bp::std_err > err);
  controller.wait();
  ASSERT_EQ(controller.exit_code(), 0) << test::slurp(out) << test::slurp(err);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(has(lab.grub(i), "iommu=soft")) << lab.grub(i);  // -e over the inventory's extra_param
    EXPECT_FALSE(has(lab.grub(i), "iommu=pt")) << lab.grub(i);
  }
  std::string calls;
  for (const auto& e : fs::directory_iterator(calls_dir)) calls += test::slurp(e.path().string());
  std::vector<std::string> runs;
  for (auto line : lines(calls))
    if (!line.empty()) runs.emplace_back(line);
  ASSERT_EQ(runs.size(), 2u) << calls;  // one run on each host
  for (const auto& run : runs) {
    EXPECT_TRUE(run.starts_with("argv|-n|-H|--preserve-env=A B|--|")) << run;
    for (const char* words : {"|--reset-state", "|--from-stage|host", "|--connect|test:///default", "|--no-wait"})
      EXPECT_TRUE(has(run, words)) << words << " did not reach the agent: " << run;
    EXPECT_FALSE(has(run, "extra.json")) << "-e @FILE was passed on to be read on the host: " << run;
  }
}

// Issue 20, item 9: what the agent cannot honour is refused, naming host and value, before any
// host is touched: a stage the playbook does not have, become by anything but sudo, or to a user
// other than root (the agent must run as root).
TEST(FleetForwardedOptions, WhatCannotBeHonouredIsRefusedBeforeAnyHostIsTouched) {
  test::Lab lab(2);
  auto expect_refused = [&](const test::ProcResult& r, const std::string& why) {
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(has(r.err, why)) << r.err;
    EXPECT_TRUE(has(r.err, "no host was touched")) << r.err;
    EXPECT_EQ(r.out, "");
    for (const auto& n : lab.nodes) EXPECT_FALSE(fs::exists(n.remote_dir)) << n.name;
  };
  expect_refused(lab.apply({"--from-stage", "nosuch"}), "--from-stage: " + lab.playbook + " has no stage 'nosuch'");
  for (const char* method : {"su", "doas", "pbrun"}) {
    lab.write_inventory();
    lab.add_host_vars(1,
                      "          ansible_become: yes\n          ansible_become_method: " + std::string(method) + "\n");
    expect_refused(lab.apply(), "host gpu02: ansible_become_method=" + std::string(method) + " is not supported");
  }
  lab.write_inventory();
  lab.add_host_vars(1, "          ansible_become: yes\n          ansible_become_user: postgres\n");
  expect_refused(lab.apply(), "host gpu02: ansible_become_user=postgres is refused: the agent must run as root");
  lab.write_inventory();
  lab.add_host_vars(1, "          ansible_become: yes\n          ansible_become_flags: \"-H 'unclosed\"\n");
  expect_refused(lab.apply(), "host gpu02: ansible_become_flags: no closing quotation");
  for (int i = 0; i < 2; ++i) EXPECT_FALSE(has(lab.grub(i), "intel_iommu=on"));
}

}  // namespace
}  // namespace gpt
