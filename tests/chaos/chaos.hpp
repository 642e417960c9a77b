// Header-only support for the chaos tests (tests/chaos/*_test.cpp): the agent binary run as a
// process with a wall-clock limit, an address-space limit and its peak memory measured; strace's
// syscall counting and fault injection; the tree a run leaves, normalised where two runs must
// differ; a small pool that runs independent cases on two workers.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "agent/state.hpp"
#include "tests/support/sandbox.hpp"

extern char** environ;

namespace gpt::chaos {

namespace fs = std::filesystem;

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kAsan = true;
#else
inline constexpr bool kAsan = false;
#endif
#else
inline constexpr bool kAsan = false;
#endif

inline const std::string kStrace = "/usr/bin/strace";
inline std::string demo_playbook() { return test::source_path("playbooks/demo.yaml"); }
inline bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

struct Limits {
  std::chrono::milliseconds wall{std::chrono::seconds(60)};  // killed (with its process group) after this
  size_t address_space = 0;                                  // RLIMIT_AS; 0: none (always none under ASan)
  // Kill what is left of its process group once it has exited. Off where the test must see
  // whether the program itself left processes behind.
  bool kill_leftovers = true;
};

struct Run {
  int exit_code = -1;  // the exit status, or 128 + the signal that ended it
  int signal = 0;      // the signal that ended it, 0 when it exited
  bool timed_out = false;
  std::string out, err;
  double seconds = 0;
  long max_rss_kb = 0;  // peak resident memory of the process (ru_maxrss)
  std::string all() const { return out + err; }
};

inline std::string read_fd(int fd) {
  std::string out;
  ::lseek(fd, 0, SEEK_SET);
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

// Runs argv[0] (a path) with these arguments, never through a shell. `env` entries (NAME=VALUE)
// are added to, or replace, this process's environment; NO_COLOR is dropped. Output goes to
// memory files (no pipe to fill); the child leads its own process group, which is killed whole
// when the wall-clock limit passes.
inline Run spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}, Limits limits = {}) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    const std::string name = kv.substr(0, kv.find('='));
    bool replaced = name == "NO_COLOR";
    for (const auto& add : env) replaced = replaced || add.substr(0, add.find('=')) == name;
    if (!replaced) envs.push_back(kv);
  }
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  const int out = ::memfd_create("chaos-out", MFD_CLOEXEC), err = ::memfd_create("chaos-err", MFD_CLOEXEC);
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const size_t as = kAsan ? 0 : limits.address_space;
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls from here on
    ::setpgid(0, 0);
    ::dup2(devnull, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    if (as) {
      struct rlimit rl {
        as, as
      };
      ::setrlimit(RLIMIT_AS, &rl);
    }
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  Run r;
  if (pid < 0) {
    r.err = std::string("fork: ") + std::strerror(errno);
    return r;
  }
  ::setpgid(pid, pid);  // either side may win the race; both set the same group
  int status = 0;
  struct rusage ru {};
  for (;;) {
    const pid_t got = ::wait4(pid, &status, WNOHANG, &ru);
    if (got == pid) break;
    if (got < 0 && errno != EINTR) break;
    if (std::chrono::steady_clock::now() - start > limits.wall) {
      r.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::wait4(pid, &status, 0, &ru);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (limits.kill_leftovers) ::kill(-pid, SIGKILL);  // whatever the run left behind in its group
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.max_rss_kb = ru.ru_maxrss;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
    r.exit_code = 128 + r.signal;
  }
  r.out = read_fd(out);
  r.err = read_fd(err);
  ::close(out);
  ::close(err);
  ::close(devnull);
  return r;
}

inline Run agent(std::vector<std::string> args, const std::vector<std::string>& env = {}, Limits limits = {}) {
  args.insert(args.begin(), GPTAGENT_BIN);
  return spawn(args, env, limits);
}

// gptagent under strace -f with these strace options (-e trace=..., -e inject=...). LeakSanitizer
// cannot run under ptrace: traced runs leave the leak check to the other tests.
inline Run traced(const std::vector<std::string>& strace_opts, const std::vector<std::string>& agent_args,
                  Limits limits = {}) {
  std::vector<std::string> argv{kStrace, "-f"};
  argv.insert(argv.end(), strace_opts.begin(), strace_opts.end());
  argv.push_back(GPTAGENT_BIN);
  argv.insert(argv.end(), agent_args.begin(), agent_args.end());
  return spawn(argv, {"ASAN_OPTIONS=detect_leaks=0"}, limits);
}

// How many times an uninterrupted run calls each syscall: `strace -f -c`, parsed.
inline std::map<std::string, int> count_syscalls(const std::vector<std::string>& agent_args, int* exit_code = nullptr) {
  test::TempDir d;
  const std::string table = d / "counts";
  Run r = traced({"-c", "-o", table}, agent_args);
  if (exit_code) *exit_code = r.exit_code;
  std::map<std::string, int> counts;
  std::ifstream in(table);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    // % time, seconds, usecs/call, calls, [errors], syscall
    if (w.size() < 5 || !std::isdigit(static_cast<unsigned char>(w[0][0])) || w.back() == "total") continue;
    counts[w.back()] = std::stoi(w[3]);
  }
  return counts;
}

// ---- trees ----

// Every file, link and directory under `dir` (relative path -> mode and content or link target),
// like test::snapshot, except that a file larger than 64 MiB (a sparse test file) is kept as its
// size and a hash of its first and last MiB rather than read whole.
inline std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (ec) break;
    const auto rel = fs::relative(it->path(), dir).string();
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    const std::string mode = std::to_string(st.st_mode & 07777) + " ";
    if (S_ISLNK(st.st_mode)) {
      out[rel] = "link " + fs::read_symlink(it->path()).string();
    } else if (S_ISREG(st.st_mode) && st.st_size > (64 << 20)) {
      std::ifstream in(it->path(), std::ios::binary);
      std::string head(1 << 20, '\0'), tail(1 << 20, '\0');
      in.read(head.data(), static_cast<std::streamsize>(head.size()));
      in.seekg(-static_cast<std::streamoff>(tail.size()), std::ios::end);
      in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
      out[rel] =
          mode + "large " + std::to_string(st.st_size) + " " + std::to_string(std::hash<std::string>{}(head + tail));
    } else if (S_ISREG(st.st_mode)) {
      out[rel] = mode + test::slurp(it->path().string());
    } else if (S_ISDIR(st.st_mode)) {
      out[rel + "/"] = mode;
    }
  }
  return out;
}

// The tree without the run lock (the lock file and /run, which a run creates to hold it).
inline std::map<std::string, std::string> without_lock(std::map<std::string, std::string> tree) {
  tree.erase("run/");
  tree.erase("run/gptagent.lock");
  return tree;
}

inline const std::regex& backup_stamp() {
  static const std::regex stamp(R"(\.gptagent-\d{8}T\d{6})");
  return stamp;
}
inline bool is_backup(const std::string& path) { return std::regex_search(path, backup_stamp()); }
inline bool is_temp(const std::string& path) { return has(path, ".gptagent-tmp"); }
// The file a backup keeps: the path without its .gptagent-YYYYmmddTHHMMSS suffix.
inline std::string backed_up(const std::string& path) { return std::regex_replace(path, backup_stamp(), ""); }

// What two runs on two copies of a tree may differ in, normalised: the time stamp in backup names
// (.gptagent-YYYYmmddTHHMMSS -> .gptagent-STAMP), the time a state was recorded (state.json's
// recorded_at), and the lock holder's pid (run/gptagent.lock). Everything else (every other byte,
// every mode, every name) must be equal.
inline std::map<std::string, std::string> normalised(const std::string& root) {
  static const std::regex recorded(R"re("recorded_at": "[^"]*")re");
  std::map<std::string, std::string> out;
  for (auto [path, content] : snapshot(root)) {
    if (path == "var/lib/gptagent/state.json") content = std::regex_replace(content, recorded, R"("recorded_at": "")");
    if (path == "run/gptagent.lock") content = content.substr(0, content.find(' ') + 1) + "(pid)";
    out[std::regex_replace(path, backup_stamp(), ".gptagent-STAMP")] = content;
  }
  return out;
}

using test::differences;

// Whether another process holds the run lock of this root (a free or absent lock: false).
inline bool lock_held(const std::string& root) {
  const int fd = ::open((root + "/run/gptagent.lock").c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_EX | LOCK_NB) != 0;
  ::close(fd);
  return held;
}

// The pre-images `gptagent revert` keeps (var/lib/gptagent/pre-images) are the run's journal, as
// state.json is: they grow during a run, so any moment may show an index that names fewer files
// than the finished one. What must hold: the index parses, every file it names as existing has its
// pristine content kept under its name, every file it names as absent was absent, and every kept
// content is a pristine file's, under that file's name (it is written before the index names it).
inline const std::string kPreimages = "var/lib/gptagent/pre-images/";
inline std::string preimage_invariants(const std::string& path, const std::string& content,
                                       const std::map<std::string, std::string>& original) {
  // A snapshot's content is "MODE BYTES"; a kept pre-image has the agent's own mode (0600).
  auto bytes = [](const std::string& s) { return s.substr(s.find(' ') + 1); };
  const std::string name = path.substr(kPreimages.size());
  if (name == "index.json") {
    const auto j = nlohmann::json::parse(bytes(content), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("files") || !j["files"].is_object())
      return "  the pre-images' index does not parse\n";
    std::string bad;
    for (const auto& [file, entry] : j["files"].items()) {
      const auto o = original.find(file.substr(1));
      if (o == original.end() && entry.value("existed", true))
        bad += "  a pre-image of a file that did not exist: " + file + "\n";
      if (o != original.end() && !entry.value("existed", false))
        bad += "  a file that existed is kept as absent: " + file + "\n";
    }
    return bad;
  }
  for (const auto& [file, text] : original)
    if (gpt::sha256_hex("/" + file) == name)
      return bytes(text) == bytes(content) ? "" : "  a wrong pre-image of /" + file + "\n";
  return "  a pre-image of no pristine file: " + path + "\n";
}

// What must hold of a tree at any moment, whatever happened to the run: the state file parses;
// the lock is free; every backup is complete (the original file's mode and content); every other
// file is the original or the finished one, never a part of either (temporary files aside, which
// the caller judges). `original` is the pristine tree, `finished` the normalised tree of an
// uninterrupted run. Returns what is wrong, or "".
inline std::string tree_invariants(const std::string& root, const std::map<std::string, std::string>& original,
                                   const std::map<std::string, std::string>& finished) {
  std::string bad;
  const auto now = snapshot(root);
  const auto norm = normalised(root);
  for (const auto& [path, content] : now) {
    if (path.ends_with("/") || is_temp(path) || path == "run/gptagent.lock") continue;
    if (path == "var/lib/gptagent/state.json") {
      const auto j = nlohmann::json::parse(content.substr(content.find(' ') + 1), nullptr, false);
      if (j.is_discarded() || !j.is_object()) bad += "  the state file does not parse\n";
      continue;
    }
    if (path.starts_with(kPreimages)) {
      bad += preimage_invariants(path, content, original);
      continue;
    }
    if (is_backup(path)) {
      auto it = original.find(backed_up(path));
      if (it == original.end())
        bad += "  a backup of a file that did not exist: " + path + "\n";
      else if (it->second != content)
        bad += "  an incomplete or wrong backup: " + path + "\n";
      continue;
    }
    auto o = original.find(path);
    auto f = finished.find(std::regex_replace(path, backup_stamp(), ".gptagent-STAMP"));
    const bool is_original = o != original.end() && o->second == content;
    const bool is_finished = f != finished.end() && f->second == norm.at(f->first);
    if (!is_original && !is_finished) bad += "  neither the original nor the finished file: " + path + "\n";
  }
  if (lock_held(root)) bad += "  the lock is still held\n";
  return bad;
}

inline std::vector<std::string> temp_files(const std::string& root) {
  std::vector<std::string> out;
  for (const auto& [path, content] : snapshot(root))
    if (is_temp(path)) out.push_back(path);
  return out;
}

// Runs job(0..n-1) on `workers` threads; returns each job's verdict (empty: it passed).
inline std::vector<std::string> parallel(size_t n, const std::function<std::string(size_t)>& job,
                                         unsigned workers = 2) {
  std::vector<std::string> verdicts(n);
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < std::max(1u, workers); ++w)
    pool.emplace_back([&] {
      for (size_t i; (i = next++) < n;) {
        try {
          verdicts[i] = job(i);
        } catch (const std::exception& e) {
          verdicts[i] = std::string("exception: ") + e.what();
        }
      }
    });
  for (auto& t : pool) t.join();
  return verdicts;
}

// A copy of a sample host tree (playbooks/sandbox/ or tests/fixtures/hosts/), made on a tmpfs
// when there is one (/dev/shm): the sweeps run the agent hundreds of times, and an fsync on a
// disk costs milliseconds that prove nothing here (a killed process loses nothing that was
// written; durability across power loss is not what these tests can see).
struct Host {
  explicit Host(const std::string& name = "ubuntu-22.04") {
    std::string tmpl =
        (::access("/dev/shm", W_OK) == 0 ? std::string("/dev/shm") : fs::temp_directory_path().string()) +
        "/gptagent-chaos-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir = tmpl;
    const std::string demo = test::source_path("playbooks/sandbox/" + name);
    test::copy_tree(test::exists(demo) ? demo : test::source_path("tests/fixtures/hosts/" + name), dir);
  }
  ~Host() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;
  const std::string& root() const { return dir; }
  std::string file(const std::string& host_path) const { return dir + host_path; }
  std::string dir;
};

// A directory of stand-in programs put first on PATH.
struct Stubs {
  test::TempDir dir;
  void add(const std::string& name, const std::string& script) const { test::write(dir / name, script, 0755); }
  std::string path_env() const {
    const char* path = std::getenv("PATH");
    return "PATH=" + dir.path() + ":" + (path ? path : "/usr/bin:/bin");
  }
};

// Sets an environment variable for the life of the object (the tests run one at a time).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Whether a process is gone (exited and reaped, or a zombie waiting for its parent).
inline bool process_gone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return true;
  const auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && (text[paren + 2] == 'Z' || text[paren + 2] == 'X');
}

}  // namespace gpt::chaos
