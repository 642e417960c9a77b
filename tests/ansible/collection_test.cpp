// The Ansible collection (ansible/): built with ansible-galaxy, installed offline into a temporary
// directory, and run by Debian's ansible-core against loopback sshd hosts, each a sample tree the
// agent gets as its --root: changed then ok, check mode, diff, a failing host, a reboot play.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "agent/state.hpp"
#include "agent/text.hpp"
#include "tests/support/ansible.hpp"
#include "tests/support/fleet_lab.hpp"

namespace gpt {
namespace {

using test::entries;
using test::has;
using test::Lab;
using test::slurp;
namespace fs = std::filesystem;

// The collection built and installed once for every test here: the ANSIBLE_COLLECTIONS_PATH to
// give ansible-playbook, or the error of the build or install.
struct Installed {
  std::unique_ptr<test::TempDir> dir;
  std::string path, error;
};

const Installed& installed_collection() {
  static const Installed installed = [] {
    Installed i;
    i.dir = std::make_unique<test::TempDir>();
    test::Ansible ansible;
    auto built = ansible.run("/usr/bin/ansible-galaxy", {"collection", "build", "--output-path", i.dir->path()},
                             test::source_path("ansible"));
    if (built.exit_code != 0) {
      i.error = "ansible-galaxy collection build: " + built.out + built.err;
      return i;
    }
    i.path = *i.dir / "collections";
    auto put =
        ansible.run("/usr/bin/ansible-galaxy",
                    {"collection", "install", "--offline", "-p", i.path, *i.dir / "gptagent-passthrough-0.1.0.tar.gz"},
                    i.dir->path());
    if (put.exit_code != 0) i.error = "ansible-galaxy collection install: " + put.out + put.err;
    return i;
  }();
  return installed;
}

// Lab hosts with sftp (Ansible's file transfers), the variables Ansible needs (its reboot module
// runs Python modules) and the agent to copy.
struct AnsibleLab : Lab {
  explicit AnsibleLab(int n, const std::string& playbook_text = test::kFleetPlaybook)
      : Lab(n, playbook_text, "Subsystem sftp internal-sftp\n") {
    write_inventory("          ansible_python_interpreter: /usr/bin/python3\n          gptagent_agent: " GPTAGENT_BIN
                    "\n");
  }
  // ansible-playbook on this inventory with `play` (YAML) and these options.
  test::ProcResult play(const std::string& yaml, const std::vector<std::string>& options = {},
                        std::vector<std::string> env = {}) const {
    test::write(files / "play.yml", yaml);
    std::vector<std::string> args{"-i", inventory, files / "play.yml"};
    args.insert(args.end(), options.begin(), options.end());
    // The reboot module's Python modules run through pipelining; anything Ansible would put on a
    // host goes to the test's directory, not root's ~/.ansible of this machine.
    env.insert(env.end(), {"ANSIBLE_COLLECTIONS_PATH=" + installed_collection().path, "ANSIBLE_PIPELINING=True",
                           "ANSIBLE_REMOTE_TMP=" + files / "ansible-remote-tmp"});
    return ansible.run("/usr/bin/ansible-playbook", args, files.path(), env);
  }
  // The host's line of the PLAY RECAP, from its " : ok=".
  static std::string recap(const std::string& out, const std::string& host) {
    const auto at = out.find("PLAY RECAP");
    const std::string tail = at == std::string::npos ? "" : out.substr(at);
    for (auto line : lines(tail))
      if (line.starts_with(host + " ") && line.find(" : ") != line.npos)
        return std::string(line.substr(line.find(" : ")));
    return "no recap line for " + host;
  }
  // Ansible's shared ssh connections (ControlPersist) would outlive the test by a minute, holding
  // its output open: each is told to exit, by its socket.
  ~AnsibleLab() {
    for (const auto& socket : entries(ansible.home() / "cp"))
      test::run_program("/usr/bin/ssh",
                        {"-o", "ControlPath=" + ansible.home() / ("cp/" + socket), "-O", "exit", "gptagent-test"});
  }
  test::Ansible ansible;
};

// One task: the lab's playbook, its variable from the inventory through extra_vars.
std::string converge_play(const std::string& playbook) {
  return "- hosts: gpus\n  gather_facts: false\n  tasks:\n    - name: converge\n      gptagent.passthrough.apply:\n"
         "        playbook: " +
         playbook + "\n        extra_vars: {extra_param: \"{{ extra_param }}\"}\n";
}

class AnsibleCollection : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(installed_collection().error, "") << "the collection could not be installed"; }
};

TEST_F(AnsibleCollection, CheckPredictsWithDiffThenChangedThenOkAndTheFleetSharesTheCachedAgent) {
  AnsibleLab lab(3);
  const std::string play = converge_play(lab.playbook);
  const std::string before = lab.grub(0);

  auto check = lab.play(play, {"--check", "--diff"});
  ASSERT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_TRUE(has(check.out, "+GRUB_CMDLINE_LINUX=\"intel_iommu=on iommu=pt\"")) << check.out;  // the file's diff
  EXPECT_TRUE(has(check.out, "--- /etc/default/grub (before)")) << check.out;
  for (const auto& n : lab.nodes) EXPECT_TRUE(has(AnsibleLab::recap(check.out, n.name), "changed=1 ")) << check.out;
  EXPECT_EQ(lab.grub(0), before) << "check mode changed the host";

  auto first = lab.play(play);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  for (size_t i = 0; i < lab.nodes.size(); ++i) {
    EXPECT_TRUE(
        has(AnsibleLab::recap(first.out, lab.nodes[i].name), ": ok=1    changed=1    unreachable=0    failed=0"))
        << first.out;
    EXPECT_TRUE(has(lab.grub(static_cast<int>(i)), "GRUB_CMDLINE_LINUX=\"intel_iommu=on iommu=pt\""))
        << lab.grub(static_cast<int>(i));
  }
  EXPECT_FALSE(has(first.out, "--- /etc/default/grub")) << "a diff without --diff";
  // Cached under the name gptagent -i gives it (the SHA-256 of the agent's loadable image), 0700;
  // the runs' private directories are gone.
  const std::string name = "gptagent-" + sha256_hex(test::shipped(GPTAGENT_BIN));
  const std::string& cache = lab.nodes[0].remote_dir;
  ASSERT_EQ(entries(cache), std::vector<std::string>{name});
  struct stat copy {};
  ASSERT_EQ(::stat((cache + "/" + name).c_str(), &copy), 0);
  EXPECT_EQ(copy.st_mode & 0777, 0700u);
  EXPECT_TRUE(entries(lab.nodes[0].remote_tmp).empty());  // gptagent_remote_tmp

  auto second = lab.play(play, {"--diff"});
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  for (const auto& n : lab.nodes)
    EXPECT_TRUE(has(AnsibleLab::recap(second.out, n.name), ": ok=1    changed=0    unreachable=0    failed=0"))
        << second.out;
  EXPECT_FALSE(has(second.out, "--- /etc/default/grub")) << second.out;
  auto converged = lab.play(play, {"--check"});
  for (const auto& n : lab.nodes)
    EXPECT_TRUE(has(AnsibleLab::recap(converged.out, n.name), "changed=0 ")) << converged.out;

  // gptagent -i finds the same agent in the same cache: nothing copied, nothing changed.
  struct stat again {};
  auto fleet = lab.apply();
  EXPECT_EQ(fleet.exit_code, 0) << fleet.out << fleet.err;
  EXPECT_FALSE(has(fleet.out, "changed: ")) << fleet.out;
  ASSERT_EQ(::stat((cache + "/" + name).c_str(), &again), 0);
  EXPECT_EQ(again.st_ino, copy.st_ino) << "the fleet copied the agent again";
}

TEST_F(AnsibleCollection, AFailingHostFailsAloneWithItsTaskAndAnUnsafeCacheIsRefused) {
  AnsibleLab lab(3);
  fs::remove(lab.nodes[0].tree->file("/etc/default/grub"));  // this host's task fails
  fs::create_directories(lab.nodes[1].remote_dir);
  fs::permissions(lab.nodes[1].remote_dir, fs::perms::all);  // anyone may write this host's cache
  auto r = lab.play(converge_play(lab.playbook));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;  // ansible-playbook: a host failed
  EXPECT_TRUE(has(r.out, "fatal: [gpu01]: FAILED!")) << r.out;
  EXPECT_TRUE(has(r.out, "task 'IOMMU on the kernel command line' of stage 'host' failed: ")) << r.out;
  EXPECT_TRUE(has(AnsibleLab::recap(r.out, "gpu01"), "failed=1")) << r.out;
  EXPECT_TRUE(has(r.out, "fatal: [gpu02]: FAILED!")) << r.out;
  EXPECT_TRUE(has(r.out, "is writable by group or others")) << r.out;
  EXPECT_TRUE(entries(lab.nodes[1].remote_dir).empty()) << "something was copied into an unsafe cache";
  EXPECT_TRUE(has(AnsibleLab::recap(r.out, "gpu03"), ": ok=1    changed=1    unreachable=0    failed=0")) << r.out;
  EXPECT_TRUE(has(lab.grub(2), "intel_iommu=on")) << lab.grub(2);
}

TEST_F(AnsibleCollection, ARebootPlayStopsRebootsVerifiesAndThenStaysOk) {
  AnsibleLab lab(2, slurp(test::source_path("playbooks/demo.yaml")));
  // ansible.builtin.reboot with the sandbox's boot (a new boot_id, /proc/cmdline from grub) as the
  // reboot command and the sandbox's boot_id as the boot time it watches.
  const std::string play =
      "- hosts: gpus\n  gather_facts: false\n  tasks:\n"
      "    - name: converge\n      gptagent.passthrough.apply:\n        playbook: " +
      lab.playbook +
      "\n      register: first\n"
      "    - name: reboot\n      ansible.builtin.reboot:\n"
      "        reboot_command: " +
      test::source_path("scripts/sandbox-reboot") +
      " {{ gptagent_root }}\n"
      "        boot_time_command: cat {{ gptagent_root }}/proc/sys/kernel/random/boot_id\n"
      "        reboot_timeout: 60\n      when: first.reboot_required\n"
      "    - name: after the reboot\n      gptagent.passthrough.apply:\n        playbook: " +
      lab.playbook +
      "\n      register: after\n      when: first.reboot_required\n"
      "    - name: what the runs said\n      ansible.builtin.debug:\n"
      "        msg: \"first={{ first.reboot_required }} {{ first.msg }} | after={{ after.reboot_required | "
      "default('-') }} "
      "{{ after.msg | default('-') }} checks={{ after.tasks | default([]) | selectattr('stage', 'equalto', "
      "'after the reboot (stage host)') | map(attribute='status') | unique | join(',') }}\"\n";
  auto r = lab.play(play);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(
      has(r.out,
          "\"first=True stopped for a reboot after stage 'host': reboot the host, then run this task again for the "
          "checks after it | after=False 12 tasks ok checks=ok\""))
      << r.out;
  for (const auto& n : lab.nodes) {
    EXPECT_TRUE(has(AnsibleLab::recap(r.out, n.name), ": ok=4    changed=2    unreachable=0    failed=0")) << r.out;
    EXPECT_TRUE(has(slurp(n.tree->file("/proc/cmdline")), "intel_iommu=on")) << n.name;
    EXPECT_FALSE(fs::exists(n.tree->file("/var/lib/gptagent/state.json"))) << n.name;
  }

  auto again = lab.play(play);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_TRUE(has(again.out, "\"first=False 3 tasks ok | after=- - checks=\"")) << again.out;
  for (const auto& n : lab.nodes)
    EXPECT_TRUE(
        has(AnsibleLab::recap(again.out, n.name), ": ok=2    changed=0    unreachable=0    failed=0    skipped=2"))
        << again.out;
}

// A host that answers for the agent what it likes (authorized_keys command=: every other command
// runs as asked): its report is data, checked, and what a person reads of it is escaped.
TEST_F(AnsibleCollection, AHostileReportFailsThatHostWithItsControlCharactersEscaped) {
  AnsibleLab lab(2);
  const char* answers[] = {
      R"({"exit_code": 1, "errors": ["\u001b]0;owned\u0007 retitled \u001b[2J"]})",
      R"({"exit_code": 0, "stats": {"ok": 1, "changed": 0, "failed": 0, "skipped": 0, "ignored": 0}, "stages": []})"};
  for (size_t i = 0; i < 2; ++i) {
    const std::string script = lab.files / ("host" + std::to_string(i) + ".sh");
    test::write(
        script,
        std::string("#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  *'apply \"$t/playbook.yaml\"'*) printf '%s' '") +
            answers[i] + "'; exit 1;;\nesac\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
        0755);
    lab.nodes[i].sshd->force_command(script);
    lab.add_host_vars(i, "          ansible_ssh_transfer_method: piped\n");  // no sftp subsystem behind command=
  }
  auto r = lab.play(converge_play(lab.playbook));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "the playbook was refused on the host, nothing was changed: \\\\x1b]0;owned\\\\x07 retitled"))
      << r.out;
  EXPECT_FALSE(has(r.out + r.err, "\x1b")) << "a control character of the host's reached the terminal";
  EXPECT_TRUE(has(
      r.out, "MODULE FAILURE: the agent's report is malformed (its exit_code 0 is not the exit status of its run, 1)"))
      << r.out;
  for (const auto& n : lab.nodes) EXPECT_TRUE(has(AnsibleLab::recap(r.out, n.name), "failed=1")) << r.out;
}

// With become, the agent alone runs through it (the cache and the private directory are the remote
// user's, as with gptagent -i), and a become_user other than root is refused. The "sudo" here logs
// its arguments and runs the command it was given (ansible-core's sudo plugin: FLAGS -u USER CMD...).
TEST_F(AnsibleCollection, BecomeRunsTheAgentAloneAndOnlyAsRoot) {
  AnsibleLab lab(2);
  const std::string sudo = lab.files / "sudo", log = lab.files / "sudo.log";
  test::write(
      sudo,
      "#!/bin/sh\nprintf '%s\\n' \"$*\" >> " + log + "\nwhile [ \"$1\" != -u ]; do shift; done\nshift 2\nexec \"$@\"\n",
      0755);
  lab.add_host_vars(0, "          ansible_become: true\n          ansible_become_exe: " + sudo + "\n");
  lab.add_host_vars(1, "          ansible_become: true\n          ansible_become_exe: " + sudo +
                           "\n          ansible_become_user: nobody\n");
  // ansible-core otherwise skips become when the remote user is already the become user.
  auto r = lab.play(converge_play(lab.playbook), {}, {"ANSIBLE_BECOME_ALLOW_SAME_USER=True"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(has(AnsibleLab::recap(r.out, "gpu01"), ": ok=1    changed=1    unreachable=0    failed=0")) << r.out;
  const std::string logged = slurp(log);
  const auto calls = lines(logged);
  ASSERT_EQ(calls.size(), 1u) << slurp(log);
  EXPECT_TRUE(has(std::string(calls[0]), "-u root ")) << calls[0];
  EXPECT_TRUE(has(std::string(calls[0]), " apply ")) << calls[0];
  EXPECT_TRUE(has(r.out, "become_user nobody is refused: the agent must run as root")) << r.out;
  EXPECT_FALSE(fs::exists(lab.nodes[1].remote_dir)) << "a refused host was touched";
}

TEST_F(AnsibleCollection, OneModuleRunsAloneChangedThenOkAndAnUnknownOneIsRefused) {
  AnsibleLab lab(1);
  const std::string play =
      "- hosts: gpus\n  gather_facts: false\n  tasks:\n    - gptagent.passthrough.apply:\n"
      "        module: xorg_cleanup\n        args: {mode: disable}\n      register: r\n"
      "    - ansible.builtin.debug: {msg: \"{{ r.msg }} / {{ r.tasks | map(attribute='status') | join(',') }}\"}\n";
  auto first = lab.play(play);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_TRUE(has(first.out, "\"1 task changed, 1 ok / changed\"")) << first.out;
  EXPECT_TRUE(fs::exists(lab.nodes[0].tree->file("/usr/share/X11/xorg.conf.d/10-nvidia.conf.disabled")));
  auto second = lab.play(play);
  EXPECT_TRUE(has(second.out, "\"1 task ok / ok\"")) << second.out;
  EXPECT_TRUE(has(AnsibleLab::recap(second.out, "gpu01"), "changed=0 ")) << second.out;

  // What the agent refuses (on stderr too, which ssh's terminal mixes into the report's stream) is
  // the task's message, with the place in what the user wrote.
  auto unknown =
      lab.play("- hosts: gpus\n  gather_facts: false\n  tasks:\n    - gptagent.passthrough.apply: {module: nosuch}\n");
  EXPECT_EQ(unknown.exit_code, 2) << unknown.out;
  EXPECT_TRUE(has(unknown.out, "the playbook was refused on the host, nothing was changed: (module nosuch):1:"))
      << unknown.out;
  EXPECT_TRUE(has(unknown.out, "unknown module or task keyword 'nosuch'")) << unknown.out;
}

}  // namespace
}  // namespace gpt
