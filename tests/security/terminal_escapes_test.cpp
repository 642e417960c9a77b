// What another local user chooses (a process name, a playbook's task names, a file's name) reaches
// the admin's terminal escaped: no ESC, BEL or CR of theirs moves the cursor, erases a line,
// retitles the window or writes the clipboard (OSC 52). The agent runs in a real pty (script(1)),
// as an admin runs it, and every byte it writes there is looked at (issue 20).
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <sstream>

#include "agent/exec.hpp"
#include "agent/report.hpp"
#include "tests/chaos/chaos.hpp"

namespace gpt {
namespace {

using chaos::has;
namespace fs = std::filesystem;

constexpr uid_t kOther = 12345;
// An OSC 52 clipboard write (BEL-terminated), an erase of the line, a carriage return, a C1 CSI.
const std::string kHostile =
    "\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2K\r\xc2\x9b"
    "31mXorg";

// The bytes the agent writes to a terminal, run as `script -qec` runs it (the pty's \n -> \r\n
// turned off, so that any CR seen is the agent's).
chaos::Run in_terminal(const std::vector<std::string>& agent_args) {
  std::string line = "stty -onlcr; exec " + shell_quote(GPTAGENT_BIN);
  for (const auto& a : agent_args) line += " " + shell_quote(a);
  return chaos::spawn({"/usr/bin/script", "-qec", line, "/dev/null"});
}

// The control bytes left once our own colours are taken out: what must be none.
std::string stray_controls(std::string bytes) {
  for (const char* ours : {"\x1b[0;32m", "\x1b[0;33m", "\x1b[0;31m", "\x1b[0;36m", "\x1b[0m"})
    for (size_t at; (at = bytes.find(ours)) != std::string::npos;) bytes.erase(at, std::string_view(ours).size());
  std::string out;
  for (size_t i = 0; i < bytes.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    const bool c1 = c == 0xc2 && i + 1 < bytes.size() && static_cast<unsigned char>(bytes[i + 1]) <= 0x9f &&
                    static_cast<unsigned char>(bytes[i + 1]) >= 0x80;
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f || c1)
      out += "byte " + std::to_string(c) + " at " + std::to_string(i) + "\n";
  }
  return out;
}

// Another user's process named kHostile: it runs as uid 12345, exec'd through a link of that name
// (so its comm, the first 15 bytes of the name, is the start of its argv[0]).
class HostileProcess {
 public:
  HostileProcess() {
    ::chmod(bin_.path().c_str(), 0755);
    const std::string link = bin_ / kHostile;
    fs::create_symlink("/bin/sleep", link);
    const std::string argv0 = kHostile, seconds = "120";
    char* argv[] = {const_cast<char*>(argv0.c_str()), const_cast<char*>(seconds.c_str()), nullptr};
    pid_ = ::fork();
    if (pid_ == 0) {  // async-signal-safe calls only
      ::setgroups(0, nullptr);
      if (::setresgid(kOther, kOther, kOther) != 0 || ::setresuid(kOther, kOther, kOther) != 0) ::_exit(126);
      ::execv(link.c_str(), argv);
      ::_exit(127);
    }
  }
  ~HostileProcess() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

 private:
  test::TempDir bin_;
  pid_t pid_ = -1;
};

// Item 5: the process name (facts, preflight, vfio_bind), task names and a path in main's error
// messages, in a terminal.
TEST(TerminalEscapes, AnotherUsersProcessNameAndTaskNamesReachTheTerminalEscaped) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a process of another user)";
  HostileProcess holder;
  const std::string proc = "/proc/" + std::to_string(holder.pid());
  ASSERT_TRUE(test::wait_until(
      [&] { return test::exists(proc + "/cmdline") && test::slurp(proc + "/cmdline").starts_with(kHostile); },
      std::chrono::seconds(10)));
  ASSERT_EQ(test::slurp(proc + "/status").find("Uid:\t12345"), test::slurp(proc + "/status").find("Uid:"));

  // Fedora's RTX 2070 on nouveau, its card node held by that process: its /proc entry as the
  // kernel shows it, copied under --root, with the fd link the agent reads.
  test::SampleHost h("fedora-40");
  for (const char* node : {"card1", "renderD129"})
    test::write(h.file(std::string("/sys/bus/pci/devices/0000:01:00.0/drm/") + node + "/dev"), "226:0\n");
  const std::string fake = h.file(proc);
  test::write(fake + "/comm", test::slurp(proc + "/comm"));
  test::write(fake + "/cmdline", test::slurp(proc + "/cmdline"));
  fs::create_directories(fake + "/fd");
  fs::create_symlink("/dev/dri/card1", fake + "/fd/14");
  test::write(h.file("/sys/bus/pci/drivers_probe"), "");

  test::TempDir plays;
  const std::string playbook = plays / "play.yaml";
  test::write(playbook,
              "tasks:\n"
              "  - name: \"look \\e]0;owned\\a\\e[2K\\rok: [fake]\"\n"
              "    preflight: {gpus: ['0000:01:00.0']}\n"
              "    ignore_errors: true\n"
              "  - name: \"bind \\x9b2K\\e]52;c;aGk=\\a it\"\n"
              "    vfio_bind: {gpus: ['0000:01:00.0']}\n");

  const std::string escaped_name = "\\x1b]52;c;cm0gLXJmIH4K\\x07\\x1b[2K\\x0d\\xc2\\x9b31mXorg";
  for (const std::string color : {"never", "always"}) {
    auto apply = in_terminal({"apply", playbook, "--root", h.root(), "--color", color});
    EXPECT_EQ(apply.exit_code, 1) << apply.out;  // vfio_bind refuses a GPU in use
    EXPECT_EQ(stray_controls(apply.out), "") << apply.out;
    EXPECT_TRUE(has(apply.out, "look \\x1b]0;owned\\x07\\x1b[2K\\x0dok: [fake]")) << apply.out;
    EXPECT_TRUE(has(apply.out, escaped_name)) << apply.out;
    if (color == "never") {
      EXPECT_FALSE(has(apply.out, "\x1b")) << apply.out;
    }
  }
  auto facts = in_terminal({"facts", "--root", h.root()});
  EXPECT_EQ(facts.exit_code, 0) << facts.out;
  EXPECT_EQ(stray_controls(facts.out), "") << facts.out;
  EXPECT_TRUE(has(facts.out, escaped_name)) << facts.out;

  // main's own errors quote what they were given.
  auto missing = in_terminal({"validate", plays / ("gone\x1b[2K\r.yaml"), "--root", h.root()});
  EXPECT_EQ(missing.exit_code, 1) << missing.out;
  EXPECT_EQ(stray_controls(missing.out), "") << missing.out;
  EXPECT_TRUE(has(missing.out, "gone\\x1b[2K\\x0d.yaml")) << missing.out;
}

// Item 5: what is escaped and what is kept, byte for byte; through the stream buffer too, fed a
// byte at a time (a UTF-8 character split across writes is kept whole).
TEST(TerminalEscapes, ControlCharactersAreEscapedAndUtf8TextKept) {
  const std::string text =
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x96\xa5\t|\x1b[2K|\r|\x07|\x7f|\xc2\x9b|\x9b|\xc3|\xed\xa0\x80|\n";
  EXPECT_EQ(terminal_safe(text, true),
            "caf\xc3\xa9 \xe2\x82\xac "
            "\xf0\x9f\x96\xa5\t|\\x1b[2K|\\x0d|\\x07|\\x7f|\\xc2\\x9b|\\x9b|\\xc3|\\xed\\xa0\\x80|\n");
  EXPECT_EQ(terminal_safe("two\nlines", false), "two\\x0alines");

  std::ostringstream sink;
  TerminalSafeBuf buf(sink.rdbuf());
  std::ostream out(&buf);
  for (char c : text) out << c << std::flush;
  write_raw(out, "\x1b[0m");
  out << "\xe2" << std::flush;
  EXPECT_EQ(sink.str(), terminal_safe(text, true) + "\x1b[0m");  // the euro sign waits for its end...
  out << "\x82\xac\n" << std::flush;
  EXPECT_EQ(sink.str(), terminal_safe(text, true) + "\x1b[0m\xe2\x82\xac\n");  // ...and comes whole
}

}  // namespace
}  // namespace gpt
