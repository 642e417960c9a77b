#include "tests/support/libvirtd.hpp"

#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace gpt::test {

namespace {
constexpr uid_t kNobody = 65534;
}

PrivateLibvirtd::PrivateLibvirtd() {
  const std::string home = dir_.path();
  const bool root = ::geteuid() == 0;
  if (root && (::chmod(home.c_str(), 0755) != 0 || ::chown(home.c_str(), kNobody, kNobody) != 0))
    throw std::runtime_error("cannot hand " + home + " to nobody");
  const std::string log = home + "/libvirtd.log";
  std::vector<std::string> env = {"HOME=" + home, "XDG_RUNTIME_DIR=" + home + "/run",
                                  "XDG_CONFIG_HOME=" + home + "/config", "XDG_CACHE_HOME=" + home + "/cache",
                                  "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::setpgid(0, 0);
    if (root && (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0)) ::_exit(126);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    FILE* f = std::freopen(log.c_str(), "w", stderr);
    (void)f;
    // --timeout: should a test die without stopping it, the idle daemon goes away by itself.
    const char* argv[] = {"/usr/sbin/libvirtd", "--timeout", "300", nullptr};
    ::execve(argv[0], const_cast<char* const*>(argv), envp.data());
    ::_exit(127);
  }
  const std::string socket = home + "/run/libvirt/libvirt-sock";
  uri_ = "qemu:///session?socket=" + socket;
  for (int i = 0; i < 300; ++i) {  // up to 30 s: the first start probes QEMU's capabilities
    struct stat st {};
    if (::stat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      if (run_program("/usr/bin/virsh", {"-c", uri_, "uri"}).exit_code == 0) return;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("libvirtd exited at start (status " + std::to_string(status) + "): " + slurp(log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw std::runtime_error("libvirtd did not come up within 30 s: " + slurp(log));
}

PrivateLibvirtd::~PrivateLibvirtd() {
  if (pid_ <= 0) return;
  // Domains it started: their QEMU processes live apart from the daemon's process group.
  auto running = run_program("/usr/bin/virsh", {"-c", uri_, "list", "--name"});
  std::istringstream names(running.out);
  for (std::string name; names >> name;) run_program("/usr/bin/virsh", {"-c", uri_, "destroy", name});
  ::kill(-pid_, SIGTERM);
  for (int i = 0; i < 50; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (i == 49) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ::kill(-pid_, SIGKILL);  // any QEMU left behind
}

std::string PrivateLibvirtd::virsh(const std::string& command) const {
  std::vector<std::string> args{"-c", uri_};
  std::istringstream words(command);
  for (std::string w; words >> w;) args.push_back(w);
  auto r = run_program("/usr/bin/virsh", args);
  return r.out + r.err;
}

}  // namespace gpt::test
