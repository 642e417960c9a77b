#include "tests/support/sshd.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace gpt::test {

namespace {

void keygen(const std::string& path) {
  auto r = run_program("/usr/bin/ssh-keygen", {"-q", "-t", "ed25519", "-N", "", "-C", "gptagent-test", "-f", path});
  if (r.exit_code != 0) throw std::runtime_error("ssh-keygen failed: " + r.err);
}

bool accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

SshClient::SshClient() {
  keygen(key());
  write(known_hosts(), "");
}

std::string SshClient::common_args() const {
  // The user's own ~/.ssh is never read: its config and known_hosts are not the test's.
  return "-F /dev/null -o UserKnownHostsFile=" + known_hosts() + " -o StrictHostKeyChecking=yes";
}

LoopbackSshd::LoopbackSshd(const SshClient& client, const std::string& extra_config) {
  // sshd needs its privilege separation directory, which the ssh service creates at boot.
  ::mkdir("/run/sshd", 0755);
  keygen(dir_ / "host_ed25519");
  write(dir_ / "authorized_keys", slurp(client.key() + ".pub"));
  port_ = unused_port();
  // SetEnv SHLVL=1: the session's bash is then not a top-level shell and does not read root's
  // ~/.bashrc, which Debian's bash reads for every ssh command; a machine whose .bashrc starts
  // pyenv or conda otherwise adds about a second to every command the tests send.
  write(dir_ / "sshd_config",
        "Port " + std::to_string(port_) + "\nListenAddress 127.0.0.1\nHostKey " + (dir_ / "host_ed25519") +
            "\nPidFile " + (dir_ / "sshd.pid") + "\nAuthorizedKeysFile " + (dir_ / "authorized_keys") +
            "\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPrintMotd no\nAcceptEnv none\nMaxSessions 50\nMaxStartups 100\nLogLevel ERROR\n"
            "SetEnv SHLVL=1\n" +
            extra_config);
  write(client.known_hosts(),
        slurp(client.known_hosts()) + "[127.0.0.1]:" + std::to_string(port_) + " " + slurp(dir_ / "host_ed25519.pub"));
  start();
}

void LoopbackSshd::start() {
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    const std::string cfg = dir_ / "sshd_config", log = dir_ / "sshd.log";
    const char* argv[] = {"/usr/sbin/sshd", "-D", "-f", cfg.c_str(), "-E", log.c_str(), nullptr};
    // Not the test's stdout and stderr (ctest's pipe): an sshd a crashed test leaves behind would
    // keep ctest waiting for that test's output. sshd logs to its -E file.
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, STDOUT_FILENO);
      ::dup2(null, STDERR_FILENO);
    }
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  for (int i = 0; i < 100; ++i) {
    if (accepts(port_)) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("sshd exited at start: " + slurp(dir_ / "sshd.log"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("sshd did not listen on port " + std::to_string(port_));
}

void LoopbackSshd::stop() {
  if (pid_ <= 0) return;
  // Its sessions are its children (sshd forks one per connection); they outlive it otherwise.
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = e.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = slurp_or_empty(e.path() / "stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    int ppid = 0;
    if (rest >> state >> ppid && ppid == pid_) ::kill(std::stoi(pid), SIGTERM);
  }
  ::kill(pid_, SIGTERM);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void LoopbackSshd::force_command(const std::string& program) {
  std::string key = slurp(dir_ / "authorized_keys");
  if (key.starts_with("command=")) key = key.substr(key.find("\" ") + 2);
  write(dir_ / "authorized_keys", "command=\"" + program + "\" " + key);
}

void LoopbackSshd::change_host_key() {
  stop();
  ::unlink((dir_ / "host_ed25519").c_str());
  ::unlink((dir_ / "host_ed25519.pub").c_str());
  keygen(dir_ / "host_ed25519");
  start();
}

LoopbackSshd::~LoopbackSshd() { stop(); }

void close_ssh_masters(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.is_socket(ec))
      run_program("/usr/bin/ssh", {"-o", "ControlPath=" + e.path().string(), "-O", "exit", "--", "gptagent-test"});
}

namespace {

// A fleet run a test starts without choosing (ANSIBLE_SSH_CONTROL_PATH_DIR) keeps its shared
// connections in a directory of the test process, never in the user's ~/.cache; they end with it.
struct TestControlDir {
  std::string dir;
  TestControlDir() {
    char tmpl[] = "/tmp/gptagent-test-cp.XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir = tmpl;
    ::setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", tmpl, 1);
  }
  ~TestControlDir() {
    close_ssh_masters(dir);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
} test_control_dir;

}  // namespace

}  // namespace gpt::test
