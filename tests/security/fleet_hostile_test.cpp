// Fleet mode against hosts that may be compromised, and against a controller binary replaced while
// it runs (issue 20): each test performs the attack through the binary and real sshd instances
// on loopback, and shows that it fails and that nothing else changed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/process.hpp>
#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "agent/fleet.hpp"
#include "tests/support/fleet_lab.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
namespace bp = boost::process;
using test::entries;
using test::has;
using test::Lab;
using test::recap;
using test::shipped;
using test::slurp;

// Issue 20, item 4: one host answering a malformed report (wrong types, {}, no JSON, without end,
// or what its exit status contradicts) fails alone, as Ansible's MODULE FAILURE; the controller
// never aborts, every host is in the RECAP, the others converge, the control sockets go.
TEST(FleetHostileHost, AMalformedReportFailsThatHostAloneAndTheOthersConverge) {
  Lab lab(3);
  struct Case {
    std::string what, answer;  // `answer`: shell that writes the hostile report to stdout
    int status;                // the exit status the hostile run ends with
    std::string message;       // what gpu02's FAILED! line must say
  };
  const std::string counts = R"("ok": 1, "changed": 0, "skipped": 0, "ignored": 0)";
  const std::vector<Case> cases = {
      {"the issue's report", R"(echo '{"stats": {"ok": "many"}}')", 0,
       R"(MODULE FAILURE: the agent's report is malformed (exit_code is not an integer): "{\"stats\": {\"ok\": \"many\"}}\n")"},
      {"a count that is a string",
       R"(echo '{"exit_code": 0, "stages": [], "stats": {"ok": "many", "changed": 0, "failed": 0, "skipped": 0, "ignored": 0}}')",
       0, "(stats.ok is not an integer from 0 to 16777216)"},
      {"a negative count",
       R"(echo '{"exit_code": 0, "stages": [], "stats": {"ok": -1, "changed": 0, "failed": 0, "skipped": 0, "ignored": 0}}')",
       0, "(stats.ok is not an integer from 0 to 16777216)"},
      {"a task whose msg is a number",
       "echo '{\"exit_code\": 0, \"stats\": {\"failed\": 0, " + counts +
           R"(}, "stages": [{"name": "s", "tasks": [{"status": "ok", "name": "t", "msg": 5, "diff": ""}]}]}')",
       0, "(a task's msg is not a string)"},
      {"a stage that is a string",
       "echo '{\"exit_code\": 0, \"stats\": {\"failed\": 0, " + counts + R"(}, "stages": ["s"]}')", 0,
       "(a stage is not an object)"},
      {"{}", "echo '{}'", 0, "(exit_code is not an integer)"},
      {"no JSON", R"(printf 'Traceback \033[31m(most recent call last)\n')", 0,
       R"(MODULE FAILURE: the agent did not answer with JSON (exit code 0): "Traceback \u001b[31m(most recent call last)\n")"},
      {"a report without end", "exec yes '{}'", 0,
       "MODULE FAILURE: the host sent more than 16 MiB: refused, nothing more was read"},
      {"exit 0 with failed tasks",
       "echo '{\"exit_code\": 0, \"stages\": [], \"stats\": {\"failed\": 3, " + counts + "}}'", 0,
       "(stats.failed is 3 with exit_code 0)"},
      {"a report of success from a run that failed",
       "echo '{\"exit_code\": 0, \"stages\": [], \"stats\": {\"failed\": 0, " + counts + "}}'", 1,
       "(its exit_code 0 is not the exit status of its run, 1)"},
  };
  // gpu02 answers every run of the agent with the hostile report; anything else runs as asked.
  const std::string hostile = lab.files / "hostile", answer = lab.files / "answer";
  test::write(hostile,
              "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in *' apply '*) exec /bin/sh " + answer +
                  ";; esac\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
              0755);
  lab.nodes[1].sshd->force_command(hostile);
  const std::string untouched = lab.grub(1);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    test::write(answer, c.answer + "\nexit " + std::to_string(c.status) + "\n");
    const auto start = std::chrono::steady_clock::now();
    auto r = lab.apply();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;  // as for one failed host (an abort was 134)
    EXPECT_FALSE(has(r.err, "terminate called")) << r.err;
    EXPECT_TRUE(has(r.out, "fatal: [gpu02]: FAILED! ")) << r.out;
    EXPECT_TRUE(has(r.out, c.message)) << r.out;
    EXPECT_TRUE(has(r.out, recap("gpu02", "ok=0    changed=0    unreachable=0    failed=1"))) << r.out;
    for (const char* other : {"gpu01", "gpu03"}) {
      EXPECT_TRUE(has(r.out, recap(other, "ok=2"))) << r.out;
      EXPECT_FALSE(has(r.out, "fatal: [" + std::string(other) + "]")) << r.out;
    }
    EXPECT_TRUE(has(lab.grub(0), "intel_iommu=on iommu=pt"));
    EXPECT_TRUE(has(lab.grub(2), "intel_iommu=on iommu=pt"));
    EXPECT_EQ(lab.grub(1), untouched);
    EXPECT_FALSE(fs::exists(lab.nodes[1].remote_dir)) << "the hostile host was given the agent";
    EXPECT_EQ(test::unexpected_control_entries(lab.control_dir, lab.nodes.size()), "");
  }
}

// Issue 20, item 12: a variable the agent on a host would refuse (a host var named facts) is
// refused by the controller, naming host and variable, before any host is touched.
TEST(FleetHostileHost, AHostVariableTheAgentWouldRefuseIsRefusedBeforeAnyHostIsTouched) {
  Lab lab(2);
  lab.add_host_vars(1, "          facts: {cpu_vendor: amd}\n");
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(
      has(r.err,
          "host gpu02: 'facts' is reserved for the host's facts (a variable of this host, from the inventory or "
          "-e), no host was touched"))
      << r.err;
  EXPECT_EQ(r.out, "");
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(has(lab.grub(i), "intel_iommu=on")) << lab.nodes[i].name;
    EXPECT_FALSE(fs::exists(lab.nodes[i].remote_dir)) << lab.nodes[i].name;
  }
  EXPECT_FALSE(fs::exists(lab.control_dir)) << "no ssh was to be started";
}

// Issue 20, item 11: the controller's own binary deleted while it runs (a rebuild), with a file
// planted at "<its path> (deleted)": the hosts receive the agent that runs, whole, never an empty
// file nor the planted one. The controller reads its inventory from a FIFO, so that the binary is
// deleted at a known point: after it started, before it reads itself to ship it.
TEST(FleetHostileHost, AControllerWhoseBinaryWasDeletedShipsTheAgentThatRuns) {
  Lab lab(1);
  const std::string copy = lab.files / "gptagent", planted = copy + " (deleted)", ran = lab.files / "planted-ran";
  fs::copy_file(GPTAGENT_BIN, copy);
  fs::permissions(copy, fs::perms::owner_all, fs::perm_options::replace);
  test::write(planted, "#!/bin/sh\necho ran > " + ran + "\n", 0755);
  const std::string fifo = lab.files / "fifo-inventory.yml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string out = lab.files / "out", err = lab.files / "err";
  lab.export_control_dir();
  bp::child controller(copy, bp::args({"apply", lab.playbook, "-i", fifo, "--color", "never"}), bp::std_in.close(),
                       bp::std_out > out, bp::std_err > err);
  int w = -1;  // opens once the controller opened it to read
  ASSERT_TRUE(test::wait_until([&] {
    return (w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK)) >= 0 || !controller.running();
  })) << "the controller never read its inventory";
  ASSERT_GE(w, 0) << slurp(out) << slurp(err);
  ASSERT_EQ(::fcntl(w, F_SETFL, 0), 0);
  ASSERT_EQ(::unlink(copy.c_str()), 0);
  test::write(copy, "", 0755);  // and replaced by an empty file, as a build may leave it
  const std::string inventory = slurp(lab.inventory);
  ASSERT_EQ(::write(w, inventory.data(), inventory.size()), static_cast<ssize_t>(inventory.size()));
  ::close(w);
  controller.wait();
  EXPECT_EQ(controller.exit_code(), 0) << slurp(out) << slurp(err);
  EXPECT_TRUE(has(lab.grub(0), "intel_iommu=on iommu=pt")) << slurp(out);
  EXPECT_FALSE(fs::exists(ran)) << "root ran the planted file";
  const auto cached = entries(lab.nodes[0].remote_dir);
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_TRUE(slurp(lab.nodes[0].remote_dir + "/" + cached[0]) == shipped(GPTAGENT_BIN))
      << "the host did not receive the whole running agent ("
      << fs::file_size(lab.nodes[0].remote_dir + "/" + cached[0]) << " bytes)";
}

// Issue 20, item 11: an agent to ship that is empty or no ELF executable is refused before any
// host is touched (and no good cached copy is replaced by it).
TEST(FleetHostileHost, AnEmptyOrNonElfAgentIsNeverShipped) {
  Lab lab(1);
  ASSERT_EQ(lab.apply().exit_code, 0);
  const auto cached = entries(lab.nodes[0].remote_dir);
  FleetOptions o;  // the agent to ship given, as a broken build or read would leave it
  o.playbook = lab.playbook;
  o.inventory = lab.inventory;
  for (const std::string& content : {std::string(), std::string("#!/bin/sh\necho '{}'\n")}) {
    const std::string fake = lab.files / "not-an-agent";
    test::write(fake, content, 0755);
    o.agent = fake;
    std::ostringstream out, err;
    EXPECT_EQ(run_fleet(o, out, err), 1);
    EXPECT_TRUE(has(err.str(), "the agent to copy (" + fake +
                                   ") cannot be shipped: not an ELF file: nothing is shipped, no host was touched"))
        << err.str();
    EXPECT_EQ(out.str(), "");
    EXPECT_EQ(entries(lab.nodes[0].remote_dir), cached) << "the good cached copy was replaced";
  }
}

// Issue 20, item 6: Ctrl-C cleans only the temporary directory the run made (the host said which),
// never a pid file another user planted under a name like it: their process survives, the run's
// agent is stopped. The default parent of those directories is tmp in the agent cache (private),
// not a world-writable /tmp; a gptagent_remote_tmp that others may write is refused.
TEST(FleetHostileHost, CtrlCStopsOnlyWhatTheRunMadeNeverAProcessAPlantedPidFileNames) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to plant as another user";
  constexpr uid_t kOther = 12345;
  Lab lab(1);
  std::string inv = slurp(lab.inventory);
  const std::string tmp_line = "          gptagent_remote_tmp: " + lab.nodes[0].remote_tmp + "\n";
  inv.erase(inv.find(tmp_line), tmp_line.size());  // the default
  test::write(lab.inventory, inv);
  const std::string parent = lab.nodes[0].remote_dir + "/tmp";
  // The agent waits for its run lock, held here: it is mid-run when Ctrl-C comes.
  const std::string lock = lab.nodes[0].tree->file("/run/gptagent.lock");
  fs::create_directories(fs::path(lock).parent_path());
  bp::child holder(bp::search_path("flock"), bp::args({"--no-fork", "-x", lock, "sleep", "300"}), bp::std_in.close());
  bp::child theirs(bp::search_path("setpriv"),
                   bp::args({"--reuid", std::to_string(kOther), "--regid", std::to_string(kOther), "--clear-groups",
                             "sleep", "300"}),
                   bp::std_in.close());
  const std::string out = lab.files / "out", err = lab.files / "err";
  lab.export_control_dir();
  bp::child controller(GPTAGENT_BIN, bp::args({"apply", lab.playbook, "-i", lab.inventory, "--color", "never"}),
                       bp::std_in.close(), bp::std_out > out, bp::std_err > err);
  const auto agent = test::wait_for_running_agent(parent);
  ASSERT_TRUE(agent) << slurp(out) << slurp(err);
  const std::string run_dir = agent->dir;
  const long agent_pid = agent->pid;
  struct stat st {};
  ASSERT_EQ(::stat(parent.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "the default parent of the run's directories is private";
  // The other user plants, beside the run's directory, one with the run's id naming their process.
  ASSERT_TRUE(run_dir.starts_with("gptagent.") && run_dir.size() > 25) << run_dir;
  const std::string planted = parent + "/" + run_dir.substr(0, 25) + ".x";  // gptagent.<run id>.x
  fs::create_directories(planted);
  test::write(planted + "/pid", std::to_string(theirs.id()) + "\n");
  ASSERT_EQ(::chown(planted.c_str(), kOther, kOther), 0);
  ASSERT_EQ(::chown((planted + "/pid").c_str(), kOther, kOther), 0);

  ASSERT_EQ(::kill(controller.id(), SIGINT), 0);  // what Ctrl-C sends it
  controller.wait();
  const std::string text = slurp(out);
  EXPECT_EQ(controller.exit_code(), 130) << text << slurp(err);
  EXPECT_TRUE(has(text, "fatal: [gpu01]: INTERRUPTED! interrupted; stopped " + std::to_string(agent_pid) +
                            ", removed " + parent + "/" + run_dir))
      << text;
  EXPECT_TRUE(theirs.running()) << "the other user's process was killed";
  EXPECT_EQ(slurp(planted + "/pid"), std::to_string(theirs.id()) + "\n");
  EXPECT_TRUE(test::wait_until([&] { return ::kill(static_cast<pid_t>(agent_pid), 0) != 0; }, std::chrono::seconds(10)))
      << "the run's agent still runs";
  EXPECT_FALSE(fs::exists(parent + "/" + run_dir));
  EXPECT_FALSE(has(lab.grub(0), "intel_iommu=on"));
  theirs.terminate();
  holder.terminate();
  theirs.wait();
  holder.wait();
}

// Issue 20, item 6: a gptagent_remote_tmp others may write (as /tmp) is refused on that host, and
// no agent runs from it.
TEST(FleetHostileHost, ARemoteTmpOthersMayWriteIsRefused) {
  Lab lab(1);
  fs::permissions(lab.nodes[0].remote_tmp, fs::perms::all | fs::perms::sticky_bit, fs::perm_options::replace);
  auto r = lab.apply();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "fatal: [gpu01]: FAILED! refused gptagent_remote_tmp " + lab.nodes[0].remote_tmp + ": " +
                             lab.nodes[0].remote_tmp + " is writable by group or others"))
      << r.out;
  EXPECT_TRUE(has(r.out, "nothing was run")) << r.out;
  EXPECT_EQ(entries(lab.nodes[0].remote_tmp), std::vector<std::string>{});
  EXPECT_FALSE(has(lab.grub(0), "intel_iommu=on"));
}

}  // namespace
}  // namespace gpt
