// Fleet mode through the binary, against real sshd instances on loopback ports: each "host" is a
// sample tree given to its agent as gptagent_root, reached through its own sshd.
#include "agent/fleet.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/process.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "agent/inventory.hpp"
#include "agent/ship.hpp"
#include "agent/text.hpp"
#include "tests/support/fleet_lab.hpp"
#include "tests/support/sshd.hpp"

namespace gpt {
namespace {

using test::entries;
using test::has;
using test::kFleetPlaybook;
using test::Lab;
using test::recap;
using test::run_agent;
using test::shipped;
using test::slurp;
using test::wait_until;
namespace fs = std::filesystem;

TEST(Fleet, ThreeHostsConvergeInParallelThenStayConvergedAndTheAgentIsCopiedOnce) {
  Lab lab(3);
  auto first = lab.apply();
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  for (const auto& n : lab.nodes) {
    EXPECT_TRUE(has(first.out, "HOST [" + n.name + "]")) << first.out;
    EXPECT_TRUE(
        has(first.out, "changed: [" + n.name +
                           "] IOMMU on the kernel command line GRUB_CMDLINE_LINUX: added intel_iommu=on, iommu=pt"))
        << first.out;
    EXPECT_TRUE(has(first.out, n.name + std::string(26 - n.name.size(), ' ') +
                                   " : ok=2    changed=2    unreachable=0    failed=0    skipped=1"))
        << first.out;
  }
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(has(lab.grub(i), "GRUB_CMDLINE_LINUX=\"intel_iommu=on iommu=pt\"")) << lab.grub(i);

  // The agent was copied into each host's cache; the second run finds it and copies nothing.
  const auto cached = entries(lab.nodes[0].remote_dir);
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_TRUE(cached[0].starts_with("gptagent-")) << cached[0];  // named by its SHA-256
  struct stat first_copy {};
  ASSERT_EQ(::stat((lab.nodes[0].remote_dir + "/" + cached[0]).c_str(), &first_copy), 0);
  EXPECT_EQ(first_copy.st_mode & 0777, 0700u);
  auto second = lab.apply({"-v"});
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_FALSE(has(second.err, "copying the agent")) << second.err;
  for (const auto& n : lab.nodes) EXPECT_TRUE(has(second.out, recap(n.name, "ok=2    changed=0"))) << second.out;
  struct stat second_copy {};
  ASSERT_EQ(::stat((lab.nodes[0].remote_dir + "/" + cached[0]).c_str(), &second_copy), 0);
  EXPECT_EQ(second_copy.st_ino, first_copy.st_ino);
  EXPECT_EQ(second_copy.st_mtime, first_copy.st_mtime);

  // Nothing left behind: no temporary directory on the hosts, only the cached agent in each cache,
  // and on the controller only the shared connections kept for the next run.
  EXPECT_EQ(test::unexpected_control_entries(lab.control_dir, lab.nodes.size()), "");
  for (const auto& n : lab.nodes) {
    EXPECT_EQ(entries(n.remote_tmp), std::vector<std::string>{}) << n.name;
    EXPECT_EQ(entries(n.remote_dir), cached) << n.name;
  }
}

TEST(Fleet, AnUnreachableHostIsReportedAndTheOthersConverge) {
  Lab lab(3);
  lab.nodes[1].sshd->stop();
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 4) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "fatal: [gpu02]: UNREACHABLE! ")) << r.out;
  EXPECT_TRUE(has(r.out, "Connection refused")) << r.out;
  EXPECT_TRUE(has(r.out, "gpu02                      : ok=0    changed=0    unreachable=1    failed=0")) << r.out;
  EXPECT_TRUE(has(lab.grub(0), "intel_iommu=on"));
  EXPECT_FALSE(has(lab.grub(1), "intel_iommu=on"));
  EXPECT_TRUE(has(lab.grub(2), "intel_iommu=on"));
  // Checked again: the two converged hosts have no drift, the unreachable one is unknown, not "no drift".
  auto check = lab.apply({"--check"});
  EXPECT_EQ(check.exit_code, 4) << check.out << check.err;
  EXPECT_TRUE(has(check.out, "1 of 3 hosts could not be checked (failed or unreachable)\n")) << check.out;
  EXPECT_FALSE(has(check.out, "no drift on any host")) << check.out;
}

TEST(Fleet, AFailingHostDoesNotStopTheOthers) {
  Lab lab(3);
  fs::remove(lab.nodes[0].tree->file("/etc/default/grub"));  // this host's grub file is gone
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "failed: [gpu01] IOMMU on the kernel command line")) << r.out;
  EXPECT_TRUE(has(r.out, "fatal: [gpu01]: FAILED! ")) << r.out;
  EXPECT_TRUE(has(r.out, "gpu01                      : ok=0    changed=0    unreachable=0    failed=1")) << r.out;
  EXPECT_TRUE(has(lab.grub(1), "intel_iommu=on"));
  EXPECT_TRUE(has(lab.grub(2), "intel_iommu=on"));
}

TEST(Fleet, CheckReportsDriftOnEveryHostAndChangesNothing) {
  Lab lab(3);
  std::vector<std::map<std::string, std::string>> trees;
  for (const auto& n : lab.nodes) trees.push_back(test::snapshot(n.tree->root()));
  auto check = lab.apply({"--check", "--diff"});
  EXPECT_EQ(check.exit_code, 2) << check.out << check.err;
  EXPECT_TRUE(has(check.out, "3 of 3 hosts differ from the playbook")) << check.out;
  EXPECT_TRUE(has(check.out, "+GRUB_CMDLINE_LINUX=\"intel_iommu=on iommu=pt\"")) << check.out;
  for (size_t i = 0; i < lab.nodes.size(); ++i) {
    auto now = test::snapshot(lab.nodes[i].tree->root());
    now.erase("run/gptagent.lock");
    trees[i].erase("run/gptagent.lock");
    EXPECT_EQ(now, trees[i]) << lab.nodes[i].name;
  }
  ASSERT_EQ(lab.apply().exit_code, 0);
  auto clean = lab.apply({"--check", "--json"});
  EXPECT_EQ(clean.exit_code, 0) << clean.out;
  auto doc = nlohmann::json::parse(clean.out);
  EXPECT_EQ(doc["exit_code"], 0);
  EXPECT_EQ(doc["hosts"].size(), 3u);
  EXPECT_EQ(doc["hosts"]["gpu03"]["status"], "ok");
  EXPECT_EQ(doc["hosts"]["gpu03"]["stats"]["changed"], 0);
}

TEST(Fleet, LimitAndSerialChooseAndOrderTheHosts) {
  Lab lab(3);
  auto limited = lab.apply({"--limit", "gpu02"});
  EXPECT_EQ(limited.exit_code, 0) << limited.out << limited.err;
  EXPECT_FALSE(has(limited.out, "HOST [gpu01]"));
  EXPECT_FALSE(has(lab.grub(0), "intel_iommu=on"));
  EXPECT_TRUE(has(lab.grub(1), "intel_iommu=on"));
  EXPECT_FALSE(has(lab.grub(2), "intel_iommu=on"));
  auto none = lab.apply({"--limit", "nosuch"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_TRUE(has(none.err, "nosuch")) << none.err;

  auto serial = lab.apply({"--serial", "1", "--forks", "5"});
  EXPECT_EQ(serial.exit_code, 0) << serial.out;
  const auto a = serial.out.find("HOST [gpu01]"), b = serial.out.find("HOST [gpu02]"),
             c = serial.out.find("HOST [gpu03]");
  ASSERT_NE(c, std::string::npos) << serial.out;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_TRUE(has(serial.out, "ok: [gpu02] IOMMU on the kernel command line")) << serial.out;
}

TEST(Fleet, AChangedHostKeyIsRefused) {
  Lab lab(2);
  lab.nodes[0].sshd->change_host_key();
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 4) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "fatal: [gpu01]: UNREACHABLE! the host key does not match known_hosts")) << r.out;
  EXPECT_FALSE(has(lab.grub(0), "intel_iommu=on"));
  EXPECT_FALSE(fs::exists(lab.nodes[0].remote_dir)) << "nothing may reach a host that failed its key check";
  EXPECT_TRUE(has(lab.grub(1), "intel_iommu=on"));
}

TEST(Fleet, ABadPlaybookTouchesNoHost) {
  Lab lab(2, "tasks:\n  - grub_cmdline: {presnt: [x]}\n");
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.err, "host.yaml:2:")) << r.err;
  EXPECT_TRUE(has(r.err, "no host was touched")) << r.err;
  for (const auto& n : lab.nodes) EXPECT_FALSE(fs::exists(n.remote_dir)) << n.name;
}

TEST(Fleet, SshArgumentsAreSplitAsAnsibleSplitsThemAndAnUnclosedQuoteTouchesNoHost) {
  Lab lab(2);
  lab.write_inventory("          ansible_ssh_extra_args: \"-o 'ServerAliveCountMax 3'\"\n");
  auto quoted = lab.apply();
  EXPECT_EQ(quoted.exit_code, 0) << quoted.out << quoted.err;
  lab.write_inventory("          ansible_ssh_extra_args: \"-o 'ServerAliveCountMax 3\"\n");
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(has(r.err, "host gpu01: ansible_ssh_extra_args: no closing quotation, no host was touched")) << r.err;
}

TEST(Fleet, HostsThatNeedARebootAreRebootedWaitedForAndFinished) {
  Lab lab(2, slurp(test::source_path("playbooks/demo.yaml")));
  lab.reboot_through_sandbox();

  auto without = lab.apply({"--limit", "gpu01"});
  EXPECT_EQ(without.exit_code, 3) << without.out << without.err;
  EXPECT_TRUE(has(without.out, "reboot: [gpu01] stopped for a reboot (run with --reboot")) << without.out;

  auto r = lab.apply({"--reboot", "--reboot-timeout", "60"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const auto& n : lab.nodes) {
    EXPECT_TRUE(has(r.out, "rebooted: [" + n.name + "] 1 time")) << r.out;
    EXPECT_TRUE(has(r.out, "STAGE [after the reboot (stage host)]")) << r.out;  // the checks say when they ran
    EXPECT_TRUE(has(r.out, "ok: [" + n.name + "] the kernel command line has intel_iommu=on")) << r.out;
    EXPECT_TRUE(has(r.out, "ok: [" + n.name + "] 0000:01:00.0 is bound to vfio-pci")) << r.out;
    EXPECT_FALSE(fs::exists(n.tree->file("/var/lib/gptagent/state.json"))) << n.name;
  }
  auto again = lab.apply();
  EXPECT_EQ(again.exit_code, 0) << again.out;
  EXPECT_FALSE(has(again.out, "changed: ")) << again.out;
}

// gptagent revert -i: every host's files back as before the first run, through the reboot the
// revert needs (the controller reboots each host and runs the revert again to finish it); a second
// revert changes nothing, and --check says so.
TEST(Fleet, RevertPutsEveryHostBackThroughItsRebootAndASecondRevertIsOk) {
  Lab lab(2, slurp(test::source_path("playbooks/demo.yaml")));
  lab.reboot_through_sandbox();
  std::vector<std::map<std::string, std::string>> before;
  std::vector<std::string> cmdline_before;  // as the host boots before the first run
  for (const auto& n : lab.nodes) {
    ASSERT_EQ(test::sandbox_reboot(n.tree->root()).exit_code, 0);
    before.push_back(test::host_files(n.tree->root()));
    cmdline_before.push_back(slurp(n.tree->file("/proc/cmdline")));
  }
  auto applied = lab.apply({"--reboot", "--reboot-timeout", "60"});
  ASSERT_EQ(applied.exit_code, 0) << applied.out << applied.err;

  auto check = lab.revert({"--check"});
  EXPECT_EQ(check.exit_code, 2) << check.out << check.err;
  auto r = lab.revert({"--reboot", "--reboot-timeout", "60"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  for (size_t i = 0; i < lab.nodes.size(); ++i) {
    const auto& n = lab.nodes[i];
    EXPECT_TRUE(has(r.out, "HOST [" + n.name + "]")) << r.out;
    EXPECT_TRUE(has(r.out, "rebooted: [" + n.name + "] 1 time")) << r.out;
    EXPECT_TRUE(has(r.out, "changed: [" + n.name + "] ")) << r.out;
    EXPECT_EQ(test::differences(before[i], test::host_files(n.tree->root())), "") << n.name;
    EXPECT_EQ(slurp(n.tree->file("/proc/cmdline")), cmdline_before[i]) << n.name;
    EXPECT_FALSE(fs::exists(n.tree->file("/var/lib/gptagent/state.json"))) << n.name;
  }
  auto again = lab.revert();
  EXPECT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_FALSE(has(again.out, "changed: ")) << again.out;
  EXPECT_EQ(lab.revert({"--check"}).exit_code, 0);
}

}  // namespace
}  // namespace gpt

namespace gpt {
namespace {

TEST(Fleet, TheCachedAgentIsCheckedAgainstItsHashBeforeEveryRunAndReplacedWhenItDiffers) {
  Lab lab(1);
  ASSERT_EQ(lab.apply().exit_code, 0);
  const auto cached = entries(lab.nodes[0].remote_dir);
  ASSERT_EQ(cached.size(), 1u);
  const std::string agent = lab.nodes[0].remote_dir + "/" + cached[0];
  // Someone replaced the cached agent, keeping its name and mode: it must never run.
  const std::string ran = lab.files / "tampered-agent-ran";
  test::write(agent, "#!/bin/sh\necho ran > " + ran + "\necho '{}'\n");
  fs::permissions(agent, fs::perms::owner_all, fs::perm_options::replace);
  auto r = lab.apply({"-v"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "gpu01: copying the agent")) << r.err;
  EXPECT_FALSE(fs::exists(ran)) << "the tampered agent ran";
  EXPECT_EQ(entries(lab.nodes[0].remote_dir), cached);
  EXPECT_TRUE(slurp(agent) == shipped(GPTAGENT_BIN)) << "the cached agent was not replaced by the real one";
  EXPECT_TRUE(has(r.out, "gpu01                      : ok=2    changed=0")) << r.out;
  // What went over the wire: the image gzip-compressed (-v says both sizes), and in all.
  const std::string image = shipped(GPTAGENT_BIN), compressed = ship::gzip(image);
  EXPECT_TRUE(has(r.err, "gpu01: copying the agent (" + std::to_string(compressed.size()) +
                             " bytes, gzip-compressed from " + std::to_string(image.size()) + ")"))
      << r.err;
  std::smatch sent;
  ASSERT_TRUE(std::regex_search(r.err, sent, std::regex("gpu01: ([0-9]+) bytes sent"))) << r.err;
  EXPECT_GT(std::stoul(sent[1]), compressed.size());
  EXPECT_LT(std::stoul(sent[1]), compressed.size() + 64 * 1024);
  auto json = lab.apply({"--json"});
  ASSERT_EQ(json.exit_code, 0) << json.out << json.err;
  const auto doc = nlohmann::json::parse(json.out);
  const size_t converged = doc["hosts"]["gpu01"]["bytes_sent"].get<size_t>();
  EXPECT_GT(converged, slurp(lab.playbook).size());
  EXPECT_LT(converged, 16u * 1024) << "a converged run sends the playbook, its variables and the commands";
}

// A host without gzip is sent the image as it is, and runs it.
TEST(Fleet, AHostWithoutGzipIsSentTheAgentUncompressed) {
  Lab lab(1);
  // The host's commands run with a PATH that has every program of /usr/bin and /bin but gzip.
  const std::string bin = lab.files / "bin-without-gzip", wrapper = lab.files / "no-gzip";
  fs::create_directories(bin);
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"})
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename();
      if (name != "gzip" && !fs::exists(fs::symlink_status(bin + "/" + name)))
        fs::create_symlink(e.path(), bin + "/" + name);
    }
  test::write(wrapper, "#!/bin/sh\nPATH=" + bin + " exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n", 0755);
  lab.nodes[0].sshd->force_command(wrapper);
  auto r = lab.apply({"-v"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string image = shipped(GPTAGENT_BIN);
  EXPECT_TRUE(has(r.err, "gpu01: copying the agent (" + std::to_string(image.size()) + " bytes)")) << r.err;
  const auto cached = entries(lab.nodes[0].remote_dir);
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_TRUE(slurp(lab.nodes[0].remote_dir + "/" + cached[0]) == image);
  EXPECT_TRUE(has(lab.grub(0), "intel_iommu=on iommu=pt"));
}

TEST(Fleet, CtrlCStopsTheRunningAgentsRemovesTheirTemporaryDirectoriesAndStartsNoOtherHost) {
  Lab lab(2);
  // gpu01's run waits for its run lock, held here by another process: it is in the middle of its
  // run when Ctrl-C comes. With one fork, gpu02 has not started then.
  const std::string lock = lab.nodes[0].tree->file("/run/gptagent.lock");
  fs::create_directories(fs::path(lock).parent_path());
  namespace bp = boost::process;
  bp::child holder(bp::search_path("flock"), bp::args({"--no-fork", "-x", lock, "sleep", "300"}), bp::std_in.close());
  const std::string out = lab.files / "out", err = lab.files / "err";
  lab.export_control_dir();
  bp::child controller(GPTAGENT_BIN,
                       bp::args({"apply", lab.playbook, "-i", lab.inventory, "--color", "never", "--forks", "1"}),
                       bp::std_in.close(), bp::std_out > out, bp::std_err > err);
  // The agent runs and waits for the lock.
  const auto agent = test::wait_for_running_agent(lab.nodes[0].remote_tmp);
  ASSERT_TRUE(agent) << slurp(out) << slurp(err);
  const std::string run_dir = agent->dir;
  const long agent_pid = agent->pid;
  EXPECT_TRUE(run_dir.starts_with("gptagent.")) << run_dir;
  struct stat st {};
  ASSERT_EQ(::stat((lab.nodes[0].remote_tmp + "/" + run_dir).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "mktemp -d makes it private";

  ASSERT_EQ(::kill(controller.id(), SIGINT), 0);  // what Ctrl-C sends it
  ASSERT_TRUE(wait_until([&] { return !controller.running(); })) << "the controller did not stop";
  controller.wait();
  const std::string text = slurp(out), errors = slurp(err);
  EXPECT_EQ(controller.exit_code(), 130) << text << errors;
  EXPECT_TRUE(has(text, "fatal: [gpu01]: INTERRUPTED! interrupted; stopped " + std::to_string(agent_pid) +
                            ", removed " + lab.nodes[0].remote_tmp + "/" + run_dir))
      << text;
  EXPECT_TRUE(has(text, "fatal: [gpu02]: INTERRUPTED! not started: the run was interrupted")) << text;
  EXPECT_TRUE(has(errors, "gptagent: interrupted: 2 of 2 hosts did not finish")) << errors;
  // The agent is gone, nothing is left behind, nothing was changed, gpu02 was never touched.
  EXPECT_TRUE(wait_until([&] { return ::kill(static_cast<pid_t>(agent_pid), 0) != 0; }, std::chrono::seconds(10)))
      << "the agent still runs";
  EXPECT_EQ(entries(lab.nodes[0].remote_tmp), std::vector<std::string>{});
  EXPECT_EQ(entries(lab.control_dir), std::vector<std::string>{}) << "the shared connection this run started was left";
  EXPECT_FALSE(has(lab.grub(0), "intel_iommu=on"));
  EXPECT_FALSE(fs::exists(lab.nodes[1].remote_dir));
  EXPECT_TRUE(holder.running()) << "the lock's holder was disturbed";

  // The next run finishes the work.
  holder.terminate();
  holder.wait();
  auto again = lab.apply();
  EXPECT_EQ(again.exit_code, 0) << again.out << again.err;
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(has(lab.grub(i), "intel_iommu=on iommu=pt")) << lab.grub(i);
}

}  // namespace
}  // namespace gpt

namespace gpt {
namespace {

// ansible_become runs the agent through sudo -n: a host whose sudo wants a password fails at once
// with that said, never waiting at a prompt. The hosts' sudo is played by ansible_become_exe.
TEST(Fleet, BecomeNeverWaitsForAPasswordPrompt) {
  Lab lab(2);
  const std::string prompted = lab.files / "prompted", log = lab.files / "sudo.log";
  const std::string wants_password = lab.files / "sudo-wants-password", passwordless = lab.files / "sudo-nopasswd";
  test::write(wants_password,
              "#!/bin/sh\nif [ \"$1\" = -n ]; then echo 'sudo: a password is required' >&2; exit 1; fi\n"
              "echo prompted > " +
                  prompted + "; sleep 5; exit 1\n");
  test::write(passwordless, "#!/bin/sh\n[ \"$1\" = -n ] || { echo prompted > " + prompted +
                                "; exit 1; }\nshift\n"
                                "[ \"$1\" = -- ] && shift\necho \"$1 $2\" >> " +
                                log + "\nexec \"$@\"\n");
  for (const auto& f : {wants_password, passwordless})
    fs::permissions(f, fs::perms::owner_all, fs::perm_options::replace);
  std::string inv = slurp(lab.inventory);
  for (size_t i = 0; i < lab.nodes.size(); ++i) {
    const std::string line = "          gptagent_root: " + lab.nodes[i].tree->root() + "\n";
    inv.replace(inv.find(line), line.size(),
                line + "          ansible_become: yes\n          ansible_become_exe: " +
                    (i == 0 ? wants_password : passwordless) + "\n");
  }
  test::write(lab.inventory, inv);

  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "fatal: [gpu01]: FAILED! " + wants_password +
                             " needs a password on this host (ansible_become runs " + wants_password + " -n): "))
      << r.out;
  EXPECT_TRUE(has(r.out, "sudo: a password is required")) << r.out;
  EXPECT_FALSE(fs::exists(prompted)) << "sudo was run without -n";
  EXPECT_FALSE(has(lab.grub(0), "intel_iommu=on"));
  EXPECT_EQ(entries(lab.nodes[0].remote_tmp), std::vector<std::string>{});
  // The other host's agent ran through its sudo and converged.
  EXPECT_TRUE(has(lab.grub(1), "intel_iommu=on iommu=pt")) << lab.grub(1);
  EXPECT_TRUE(has(slurp(log), "gptagent-")) << slurp(log);
  EXPECT_TRUE(has(slurp(log), " apply")) << slurp(log);
}

Inventory parsed_inventory(const std::string& ini) {
  auto inv = parse_inventory_ini(ini, "ssh.ini");
  EXPECT_TRUE(inv.ok()) << inv.error();
  return inv.ok() ? *inv : Inventory{};
}

bool has_words(const std::vector<std::string>& argv, const std::vector<std::string>& words) {
  return std::search(argv.begin(), argv.end(), words.begin(), words.end()) != argv.end();
}

// Ansible passes no port when the inventory sets none, so that ~/.ssh/config (Port) decides.
TEST(FleetSsh, APortIsPassedOnlyWhenTheInventoryGivesOne) {
  const auto inv = parsed_inventory("plain\nported:2222\nbyvar ansible_port=2200\n");
  auto plain = ssh_command(*inv.find("plain"), "ssh.ini", "/tmp/c/0");
  ASSERT_TRUE(plain.ok()) << plain.error();
  EXPECT_EQ(plain->front(), "ssh");
  EXPECT_EQ(std::find(plain->begin(), plain->end(), "-p"), plain->end()) << join(*plain, " ");
  for (const auto& w : *plain) EXPECT_FALSE(w.starts_with("Port=")) << w;
  EXPECT_TRUE(has_words(*plain, {"-o", "ControlPath=/tmp/c/0"}));
  auto ported = ssh_command(*inv.find("ported"), "ssh.ini", "/tmp/c/1");
  ASSERT_TRUE(ported.ok());
  EXPECT_TRUE(has_words(*ported, {"-p", "2222"})) << join(*ported, " ");
  auto byvar = ssh_command(*inv.find("byvar"), "ssh.ini", "/tmp/c/2");
  ASSERT_TRUE(byvar.ok());
  EXPECT_TRUE(has_words(*byvar, {"-p", "2200"})) << join(*byvar, " ");
}

// What ssh says before its -E log applies (here: an option it does not know) is the reason shown.
TEST(FleetSsh, SshsOwnMessageIsShownWhenItFailsBeforeItLogs) {
  Lab lab(1);
  lab.write_inventory("          ansible_ssh_extra_args: \"-o NoSuchOption=1\"\n");
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 4) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "fatal: [gpu01]: UNREACHABLE! command-line: line 0: Bad configuration option: nosuchoption"))
      << r.out;
}

// The lab's hosts reached through an ansible_ssh_executable that logs each call's arguments to
// the file returned, a line each, and runs ssh.
std::string log_ssh_calls(Lab& lab) {
  const std::string log = lab.files / "ssh.log", wrapper = lab.files / "my-ssh";
  test::write(wrapper, "#!/bin/sh\necho \"$*\" >> " + log + "\nexec ssh \"$@\"\n", 0755);
  lab.write_inventory("          ansible_ssh_executable: " + wrapper + "\n");
  return log;
}

TEST(FleetSsh, AnsibleSshExecutableIsTheSshOfEveryCall) {
  const auto inv = parsed_inventory("h ansible_ssh_executable=/opt/openssh/bin/ssh\n");
  auto argv = ssh_command(*inv.find("h"), "ssh.ini", "/tmp/c/0");
  ASSERT_TRUE(argv.ok());
  EXPECT_EQ(argv->front(), "/opt/openssh/bin/ssh");

  // Through the binary: the shared connection, the runs and its end all go through that one ssh.
  Lab lab(1);
  const std::string log = log_ssh_calls(lab);
  auto r = lab.apply();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string calls = slurp(log);
  EXPECT_TRUE(has(calls, "ControlMaster=yes")) << calls;  // the shared connection
  EXPECT_TRUE(has(calls, "ControlMaster=no")) << calls;   // a run on it
  lab.add_host_vars(0, "          gptagent_ssh_persist: 0\n");
  test::write(log, "");
  r = lab.apply();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(has(slurp(log), "-O exit")) << slurp(log);  // its end
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Issue 24 item 2: as Ansible's ControlPersist, a run leaves each host's shared connection for the
// next (60 s by default, gptagent_ssh_persist), which then costs no ssh handshake. 0 ends it with
// the run.
TEST(FleetSsh, ASecondRunReusesTheSharedConnectionTheFirstLeft) {
  Lab lab(2);
  const std::string log = log_ssh_calls(lab);
  auto first = lab.apply();
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_EQ(count(slurp(log), "ControlMaster=yes"), 2u) << slurp(log);
  EXPECT_FALSE(has(slurp(log), "-O exit")) << slurp(log);
  EXPECT_EQ(test::unexpected_control_entries(lab.control_dir, 2), "");
  struct stat st {};
  ASSERT_EQ(::stat(lab.control_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "made private";

  test::write(log, "");
  auto second = lab.apply();
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_TRUE(has(second.out, recap("gpu01", "ok=2    changed=0"))) << second.out;
  EXPECT_TRUE(has(second.out, recap("gpu02", "ok=2    changed=0"))) << second.out;
  EXPECT_EQ(count(slurp(log), "ControlMaster=yes"), 0u) << "a new connection where one was left: " << slurp(log);
  EXPECT_EQ(count(slurp(log), "ControlMaster=no"), 2u) << slurp(log);  // one command per converged host

  // A master that died without removing its socket (killed): a new one replaces it.
  const std::string socket = lab.control_dir + "/" + entries(lab.control_dir)[0];
  auto check = test::run_program("/usr/bin/ssh", {"-o", "ControlPath=" + socket, "-O", "check", "--", "x"});
  const auto at = check.err.find("pid=");
  ASSERT_NE(at, std::string::npos) << check.err;
  const pid_t master = std::stoi(check.err.substr(at + 4));
  ASSERT_EQ(::kill(master, SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] { return ::kill(master, 0) != 0; }));
  ASSERT_TRUE(fs::is_socket(socket)) << "the killed master's socket is left";
  test::write(log, "");
  auto third = lab.apply();
  ASSERT_EQ(third.exit_code, 0) << third.out << third.err;
  EXPECT_EQ(count(slurp(log), "ControlMaster=yes"), 1u) << slurp(log);
  EXPECT_EQ(test::unexpected_control_entries(lab.control_dir, 2), "");

  // gptagent_ssh_persist: 0 ends the connection with the run, here the one left by the run before.
  lab.write_inventory("          ansible_ssh_executable: " + lab.files / "my-ssh" +
                      "\n          gptagent_ssh_persist: 0\n");
  auto last = lab.apply();
  ASSERT_EQ(last.exit_code, 0) << last.out << last.err;
  EXPECT_EQ(entries(lab.control_dir), std::vector<std::string>{});
}

// A shared connection left by a run before, whose host has since gone away (rebooted, its sshd
// restarted with the connection): the command on it fails as ssh fails (255, nothing on stdout);
// the run then connects anew, once, and converges.
TEST(FleetSsh, ASharedConnectionThatNoLongerReachesItsHostIsReplaced) {
  Lab lab(1);
  const std::string log = lab.files / "ssh.log", wrapper = lab.files / "my-ssh", broken = lab.files / "broken";
  test::write(wrapper,
              "#!/bin/sh\necho \"$*\" >> " + log + "\ncase \"$*\" in *ControlMaster=no*) if [ -e " + broken +
                  " ]; then rm " + broken +
                  "; echo 'mux_client_request_session: read from master failed: Broken pipe' >&2; exit 255; fi;; esac\n"
                  "exec ssh \"$@\"\n",
              0755);
  lab.write_inventory("          ansible_ssh_executable: " + wrapper + "\n");
  ASSERT_EQ(lab.apply().exit_code, 0);
  test::write(broken, "");
  test::write(log, "");
  auto r = lab.apply();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, recap("gpu01", "ok=2    changed=0"))) << r.out;
  const std::string calls = slurp(log);
  EXPECT_EQ(count(calls, "-O exit"), 1u) << calls;
  EXPECT_EQ(count(calls, "ControlMaster=yes"), 1u) << calls;
  EXPECT_EQ(count(calls, "ControlMaster=no"), 2u) << calls;

  // Once only: a host that fails that way again is unreachable.
  test::write(wrapper, "#!/bin/sh\ncase \"$*\" in *ControlMaster=no*) exit 255;; esac\nexec ssh \"$@\"\n", 0755);
  auto down = lab.apply();
  EXPECT_EQ(down.exit_code, 4) << down.out << down.err;
  EXPECT_TRUE(has(down.out, "fatal: [gpu01]: UNREACHABLE!")) << down.out;
}

}  // namespace
}  // namespace gpt

namespace gpt {
namespace {

// A controller whose PATH has an ssh that only records that it ran.
struct NoSsh {
  test::TempDir dir;
  std::string bin = dir / "bin", marker = dir / "ssh-ran";
  NoSsh() {
    fs::create_directories(bin);
    test::write(bin + "/ssh", "#!/bin/sh\necho \"$*\" >> " + marker + "\nexit 255\n", 0755);
  }
  std::string path() const { return "PATH=" + bin + ":" + std::getenv("PATH"); }
};

TEST(FleetLocal, ALocalHostConvergesOnTheControllerWithoutSsh) {
  test::TempDir files;
  test::SampleHost tree;
  NoSsh no_ssh;
  const std::string playbook = files / "host.yaml", inventory = files / "inventory.yml", cache = files / "cache",
                    tmp = files / "tmp", control_dir = files / "controller-cp";
  fs::create_directories(tmp);
  test::write(playbook, kFleetPlaybook);
  test::write(inventory,
              "all:\n  hosts:\n    controller:\n      ansible_connection: local\n      extra_param: iommu=pt\n"
              "      gptagent_root: " +
                  tree.root() + "\n      gptagent_remote_dir: " + cache + "\n      gptagent_remote_tmp: " + tmp + "\n");
  auto apply = [&] {
    return run_agent({"apply", playbook, "-i", inventory, "--color", "never"},
                     {"ANSIBLE_SSH_CONTROL_PATH_DIR=" + control_dir, no_ssh.path()});
  };
  auto first = apply();
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_TRUE(has(first.out, "changed: [controller] IOMMU on the kernel command line")) << first.out;
  // The same task line as a local run's (report.cpp's task_line): Ansible's `skipping:`.
  EXPECT_TRUE(has(first.out, "\nskipping: [controller] regenerate the grub config not run under --root")) << first.out;
  EXPECT_FALSE(has(first.out, "skipped: [")) << first.out;
  EXPECT_TRUE(has(slurp(tree.file("/etc/default/grub")), "intel_iommu=on iommu=pt"));
  auto second = apply();
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  EXPECT_TRUE(has(second.out, "controller" + std::string(16, ' ') + " : ok=2    changed=0")) << second.out;
  EXPECT_FALSE(fs::exists(no_ssh.marker)) << "ssh was run";
  EXPECT_EQ(entries(tmp), std::vector<std::string>{});
  EXPECT_FALSE(fs::exists(control_dir)) << "a run without ssh made a directory for ssh control sockets";
}

TEST(FleetLocal, AConnectionTypeThatIsNotSupportedIsRefusedBeforeAnyHostRuns) {
  test::TempDir files;
  test::SampleHost tree;
  NoSsh no_ssh;
  const std::string playbook = files / "host.yaml", inventory = files / "hosts.ini";
  test::write(playbook, kFleetPlaybook);
  test::write(inventory, "[gpus]\nhere ansible_connection=local gptagent_root=" + tree.root() +
                             " gptagent_remote_dir=" + (files / "cache") +
                             "\nbox ansible_connection=docker\n[all:vars]\nextra_param=x\n");
  auto r = run_agent({"apply", playbook, "-i", inventory, "--color", "never"}, {no_ssh.path()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "host box: ansible_connection=docker is not supported")) << r.err;
  EXPECT_TRUE(has(r.err, "no host was touched")) << r.err;
  EXPECT_FALSE(has(slurp(tree.file("/etc/default/grub")), "intel_iommu=on"));
  EXPECT_FALSE(fs::exists(files / "cache"));
  EXPECT_FALSE(fs::exists(no_ssh.marker));
}

}  // namespace
}  // namespace gpt

namespace gpt {
namespace {

TEST(FleetCli, InventoryListAndListHostsTouchNoHost) {
  test::TempDir files;
  NoSsh no_ssh;
  const std::string inventory = files / "hosts.ini", playbook = files / "host.yaml";
  test::write(playbook, kFleetPlaybook);
  test::write(inventory, "[gpus]\ngpu[01:03] ansible_port=2222\n[web]\nweb01\n");
  auto list = run_agent({"inventory", "-i", inventory, "--list"}, {no_ssh.path()});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto doc = nlohmann::json::parse(list.out);
  EXPECT_EQ(doc["gpus"]["hosts"], (nlohmann::json{"gpu01", "gpu02", "gpu03"}));
  EXPECT_EQ(doc["all"]["children"], (nlohmann::json{"ungrouped", "gpus", "web"}));
  EXPECT_EQ(doc["_meta"]["hostvars"]["gpu02"]["ansible_port"], 2222);

  auto hosts =
      run_agent({"apply", playbook, "-i", inventory, "--limit", "gpus:!gpu02", "--list-hosts"}, {no_ssh.path()});
  EXPECT_EQ(hosts.exit_code, 0) << hosts.err;
  EXPECT_EQ(hosts.out, "  hosts (2):\n    gpu01\n    gpu03\n");
  auto none = run_agent({"apply", playbook, "-i", inventory, "--limit", "nosuch", "--list-hosts"}, {no_ssh.path()});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_TRUE(has(none.err, "nosuch")) << none.err;
  EXPECT_FALSE(fs::exists(no_ssh.marker)) << "ssh was run";

  test::write(inventory, "[fleet:children]\nnfs\n");
  auto bad = run_agent({"inventory", "-i", inventory, "--list"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(has(bad.err, inventory + ":2: Section [fleet:children] includes undefined group: nfs")) << bad.err;
}

}  // namespace
}  // namespace gpt
