#include "agent/fleet.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "agent/exec.hpp"
#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "agent/inventory.hpp"
#include "agent/playbook.hpp"
#include "agent/report.hpp"
#include "agent/ship.hpp"
#include "agent/signals.hpp"
#include "agent/state.hpp"
#include "agent/text.hpp"

namespace gpt {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string remote_command(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + shell_quote(w);
  return out;
}

namespace {

std::string var_string(const json& vars, const char* key, const std::string& fallback = "") {
  if (!vars.contains(key) || vars[key].is_null()) return fallback;
  return vars[key].is_string() ? vars[key].get<std::string>() : vars[key].dump();
}

}  // namespace

Expected<std::vector<std::string>> ssh_command(const InventoryHost& h, const std::string& inventory,
                                               const std::string& control_path) {
  std::string exe = var_string(h.vars, "ansible_ssh_executable", "ssh");
  if (exe.empty()) exe = "ssh";
  std::vector<std::string> ssh{exe,
                               "-o",
                               "BatchMode=yes",
                               "-o",
                               "ConnectTimeout=10",
                               "-o",
                               "ControlPath=" + control_path,
                               "-o",
                               "ServerAliveInterval=15"};
  if (auto port = h.port()) ssh.insert(ssh.end(), {"-p", std::to_string(*port)});
  if (!h.user().empty()) ssh.insert(ssh.end(), {"-l", h.user()});
  if (!h.key_file().empty()) {
    std::string key = h.key_file();
    // A relative key path is read from the inventory's directory (where Vagrant writes them).
    if (key[0] != '/' && key[0] != '~') key = (fs::absolute(inventory).parent_path() / key).string();
    ssh.insert(ssh.end(), {"-i", key, "-o", "IdentitiesOnly=yes"});
  }
  // Split as Ansible's ssh connection splits them (shlex).
  for (const char* key : {"ansible_ssh_common_args", "ansible_ssh_extra_args"}) {
    auto words = shell_split(var_string(h.vars, key), /*comments=*/false);
    if (!words) return Error{"host " + h.name + ": " + key + ": " + words.error()};
    for (auto& w : *words) ssh.push_back(std::move(w.text));
  }
  return ssh;
}

namespace {

// Ctrl-C (SIGINT), SIGTERM or SIGHUP during a fleet run: no host is started any more, the running
// ones are stopped and cleaned up. A second Ctrl-C leaves at once (the handler resets itself).
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void on_interrupt(int) { g_interrupted.store(true); }

// A path in the remote shell: "~/x" becomes "$HOME"/'x' so that the shell expands the home.
std::string remote_path(const std::string& path) {
  if (path == "~") return "\"$HOME\"";
  if (path.starts_with("~/")) return "\"$HOME\"/" + shell_quote(path.substr(2));
  return shell_quote(path);
}

// Shell that makes the directory in $var physical (cd -P sets $PWD so) and refuses it (exit
// `code`, the reason on stderr after "gptagent-unsafe=") unless it and every directory above it
// belong to the ssh user or root and no one else may write them, as OpenSSH's StrictModes asks of
// ~/.ssh: root runs what is cached there, and the run's temporary directories hold its agent and
// its pid. A sticky directory of root's (/tmp) may be above it: no other user can rename or remove
// our entries in it. Each process costs a converged run on the host: the user's id is asked once
// per script (which starts with u=), and one stat answers for the whole path (the walk up from the
// directory lists its directories, stat gives owner and mode of each in that order, and the same
// walk reads them back).
std::string refuse_unsafe_dir(const std::string& var = "d", int code = 96) {
  const std::string v = "\"$" + var + "\"", exit = "exit " + std::to_string(code);
  const std::string walk = "p=$" + var + "; while :; do ",
                    up = "[ \"$p\" = / ] && break; p=${p%/*}; [ -n \"$p\" ] || p=/; done; ";
  return "w=$PWD; cd -P -- " + v + " || exit 90; " + var +
         "=$PWD; cd -- \"$w\" || exit 90; [ -n \"$u\" ] || u=$(id -u); set --; " + walk + "set -- \"$@\" \"$p\"; " +
         up + "s=$(stat -c '%u %a' -- \"$@\") || exit 90; set -- $s; " + walk +
         "o=$1; m=$((0$2)); shift 2; "
         "if [ \"$o\" != 0 ] && [ \"$o\" != \"$u\" ]; then echo \"gptagent-unsafe=$p belongs to uid $o\" >&2; " +
         exit +
         "; fi; "
         "if [ $((m & 022)) -ne 0 ] && { [ \"$p\" = " +
         v +
         " ] || [ \"$o\" != 0 ] || [ $((m & 01000)) -eq 0 ]; }; then "
         "echo \"gptagent-unsafe=$p is writable by group or others\" >&2; " +
         exit + "; fi; " + up;
}

// The text after "gptagent-NAME=" in a remote shell's stderr, to the end of its line ("" if none).
std::string remote_said(const std::string& err, const std::string& name) {
  const std::string key = "gptagent-" + name + "=";
  const auto at = err.find(key);
  if (at == std::string::npos) return "";
  const auto end = err.find('\n', at);
  return err.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
}

// The message for an exit 96 (the agent cache) or 97 (gptagent_remote_tmp) of refuse_unsafe_dir.
std::string unsafe_dir_message(const std::string& what, const std::string& dir, const std::string& err) {
  std::string why = remote_said(err, "unsafe");
  if (why.empty()) why = dir + " is not safe";
  return "refused " + what + " " + dir + ": " + why +
         " (it and every directory above it must belong to the ssh user or root and be writable by no one else, "
         "as OpenSSH's StrictModes asks): " +
         (what == "the agent cache" ? "nothing was copied or run" : "nothing was run");
}

// The directory of the shared connections' control sockets, kept between runs as Ansible keeps
// ~/.ansible/cp: ANSIBLE_SSH_CONTROL_PATH_DIR (Ansible's variable for it), else
// ~/.cache/gptagent/cp.
Expected<std::string> control_dir_path() {
  std::string dir, home;
  if (const char* e = std::getenv("ANSIBLE_SSH_CONTROL_PATH_DIR"); e && *e) dir = e;
  if (const char* h = std::getenv("HOME"); h && *h)
    home = h;
  else if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_dir)
    home = pw->pw_dir;
  if (dir.empty()) {
    if (home.empty())
      return Error{"no home directory to keep the ssh control sockets in: set ANSIBLE_SSH_CONTROL_PATH_DIR"};
    dir = home + "/.cache/gptagent/cp";
  } else if (dir == "~" || dir.starts_with("~/")) {
    dir = home + dir.substr(1);
  }
  std::error_code ec;
  fs::path path = fs::absolute(dir, ec).lexically_normal();
  if (ec) return Error{"the ssh control sockets' directory " + dir + ": " + ec.message()};
  if (!path.has_filename()) path = path.parent_path();  // "dir/" is "dir"
  return path.string();
}

// Makes the control sockets' directory (private, 0700) where it is missing. Whoever can connect
// to a socket there has a shell on that host as the ssh user: refused, with the reason, unless it
// is a directory of this user's (not a link) that no one else may enter, below directories of
// this user or root that no one else may write (or sticky ones, as /tmp), so that no one can swap
// a part of its path either.
Status secure_control_dir(const fs::path& path) {
  const std::string where = "the ssh control sockets' directory " + path.string();
  fs::path made;
  for (const auto& part : path) {
    made /= part;
    if (::mkdir(made.c_str(), 0700) != 0 && errno != EEXIST)
      return Error{"cannot create " + where + ": " + std::strerror(errno)};
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return Error{where + ": " + std::strerror(errno)};
  if (S_ISLNK(st.st_mode)) return Error{"refusing " + where + ": it is a symbolic link"};
  if (!S_ISDIR(st.st_mode)) return Error{"refusing " + where + ": not a directory"};
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  if (st.st_uid != ::geteuid() || (st.st_mode & 077))
    return Error{"refusing " + where + ": a socket there opens a shell on a host, so it must belong to uid " +
                 std::to_string(::geteuid()) + " alone (it belongs to uid " + std::to_string(st.st_uid) + ", mode " +
                 mode + "; chmod 700)"};
  for (fs::path up = path.parent_path();; up = up.parent_path()) {
    if (::stat(up.c_str(), &st) != 0) return Error{where + ": " + up.string() + ": " + std::strerror(errno)};
    if ((st.st_uid != 0 && st.st_uid != ::geteuid()) || ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)))
      return Error{"refusing " + where + ": " + up.string() +
                   " above it belongs to another user or may be written by others (it and every directory above it "
                   "must belong to this user or root and be writable by no one else, or be sticky as /tmp is)"};
    if (up == up.root_path()) break;
  }
  return {};
}

// Whether a master listens on the control socket `path` (connecting is all it takes; a socket
// whose master has gone refuses the connection).
bool master_listens(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  return s.get() >= 0 && ::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
}

// Held while a host's shared connection is looked for and started: two runs (or two inventory
// names of one host) never start two masters on one socket (the second finds the name taken, gives
// up sharing and stays connected in the background for no one). The lock file is removed before it
// is unlocked; whoever locked it meanwhile sees that and locks the new one. Nothing is left.
class ControlLock {
 public:
  static Expected<ControlLock> acquire(const std::string& path) {
    for (;;) {
      UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
      if (fd.get() < 0) return Error{"cannot lock " + path + ": " + std::strerror(errno)};
      if (::flock(fd.get(), LOCK_EX) != 0) return Error{"cannot lock " + path + ": " + std::strerror(errno)};
      struct stat held {
      }, named{};
      if (::fstat(fd.get(), &held) == 0 && ::lstat(path.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
          held.st_dev == named.st_dev)
        return ControlLock(path, std::move(fd));
    }
  }
  ControlLock(ControlLock&&) = default;
  ~ControlLock() {
    if (fd_.get() >= 0) ::unlink(path_.c_str());
  }

 private:
  ControlLock(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

// The most a host may send back (its report, its stderr): past it the ssh is killed and that host fails.
constexpr size_t kMaxReport = size_t{16} << 20;

// A short excerpt of what a host sent, escaped (JSON string rules, ASCII only) for one line.
std::string excerpt(const std::string& text) {
  constexpr size_t kMax = 160;
  const std::string head = json(text.substr(0, kMax)).dump(-1, ' ', true, json::error_handler_t::replace);
  return text.size() > kMax ? head + "..." : head;
}

// What is wrong with a host's report, or nullopt when it has every field the controller reads,
// with its type, and says what the exit status of its run says. A hostile or broken host makes
// its own run fail, never the controller.
std::optional<std::string> malformed_report(const json& doc, int exit_status, bool check) {
  constexpr int64_t kMaxCount = int64_t{1} << 24;
  auto count = [&](const json& j) {
    return j.is_number_integer() && j.get<int64_t>() >= 0 && j.get<int64_t>() <= kMaxCount;
  };
  auto strings = [](const json& obj, std::initializer_list<const char*> keys) -> std::optional<std::string> {
    for (const char* k : keys)
      if (!obj.contains(k) || !obj[k].is_string()) return std::string(k) + " is not a string";
    return std::nullopt;
  };
  if (!doc.is_object()) return "not a JSON object";
  if (!doc.contains("exit_code") || !doc["exit_code"].is_number_integer()) return "exit_code is not an integer";
  const int64_t code = doc["exit_code"].get<int64_t>();
  if (code != exit_status)
    return "its exit_code " + std::to_string(code) + " is not the exit status of its run, " +
           std::to_string(exit_status);
  if (doc.contains("waiting_for_reboot") && !doc["waiting_for_reboot"].is_boolean())
    return "waiting_for_reboot is not true or false";
  if (doc.contains("errors")) {  // the playbook was refused there
    if (!doc["errors"].is_array() ||
        std::any_of(doc["errors"].begin(), doc["errors"].end(), [](const json& e) { return !e.is_string(); }))
      return "errors is not a list of strings";
    return code == 1 ? std::nullopt : std::optional<std::string>("errors with an exit_code other than 1");
  }
  if (doc.value("waiting_for_reboot", false))  // the host still waits for the reboot it asked for
    return code == (check ? 2 : 3)
               ? std::nullopt
               : std::optional<std::string>("waiting_for_reboot with exit_code " + std::to_string(code));
  if (!doc.contains("stats") || !doc["stats"].is_object()) return "stats is not an object";
  for (const char* k : {"ok", "changed", "failed", "skipped", "ignored"})
    if (!doc["stats"].contains(k) || !count(doc["stats"][k]))
      return std::string("stats.") + k + " is not an integer from 0 to " + std::to_string(kMaxCount);
  if ((doc["stats"]["failed"].get<int64_t>() > 0) != (code == 1))
    return "stats.failed is " + doc["stats"]["failed"].dump() + " with exit_code " + std::to_string(code);
  if (!doc.contains("stages") || !doc["stages"].is_array()) return "stages is not a list";
  for (const auto& stage : doc["stages"]) {
    if (!stage.is_object()) return "a stage is not an object";
    if (auto bad = strings(stage, {"name"})) return "a stage's " + *bad;
    if (!stage.contains("tasks") || !stage["tasks"].is_array()) return "a stage's tasks is not a list";
    for (const auto& task : stage["tasks"]) {
      if (!task.is_object()) return "a task is not an object";
      if (auto bad = strings(task, {"status", "name", "msg", "diff"})) return "a task's " + *bad;
    }
  }
  return std::nullopt;
}

struct HostOutcome {
  enum Kind {
    ok,
    changed_,
    failed_,
    unreachable,
    drift,
    waiting,
    interrupted
  } kind = ok;  // trailing _: not the counters
  std::string message;
  std::vector<json> runs;  // the agent's JSON document of each run on this host
  int reboots = 0;
  size_t bytes_sent = 0;  // commands and their input, over ssh
  int ok_count = 0, changed = 0, failed_count = 0, skipped = 0, ignored = 0;
};

class Fleet {
 public:
  Fleet(const FleetOptions& o, std::ostream& out, std::ostream& err) : o_(o), out_(out), err_(err) {}

  int run(const std::vector<const InventoryHost*>& hosts);

 private:
  struct Host {
    const InventoryHost* inv;
    std::string control;           // ControlPath of its shared connection
    std::vector<std::string> ssh;  // ssh and its options, without the destination
    std::string destination;
    bool local = false;  // ansible_connection=local: the agent runs on the controller, no ssh
    int persist = 60;  // seconds its shared connection stays after the run (gptagent_ssh_persist; 0: closed at its end)
    mutable bool reused = false;  // its shared connection was there before this run
    std::string remote_dir, remote_tmp, root, boot_path, reboot_command;
    bool become = false;
    std::string become_exe;  // ansible_become_exe, default sudo (always run with -n: never a password prompt)
    std::vector<std::string> become_flags;  // ansible_become_flags, split as Ansible splits them
    json vars = json::object();             // what the host's vars.json gives the playbook: host vars, -e over them
    mutable size_t bytes_sent = 0;          // what ssh() sent it: commands and their input
  };

  Expected<Host> prepare(const InventoryHost& h) const;
  // One host's run: connect, run the agent (copied first where the host lacks it), reboot it and
  // run again while a stage stops for a reboot, each part checked in turn.
  HostOutcome converge(Host& h);
  // The agent's command line for a run of `h` (`first`: the host's first run of this invocation).
  std::vector<std::string> apply_args(const Host& h, bool first) const;
  // The one round trip of a run on a host that has this agent (see converge).
  std::string run_script(const Host& h, const std::string& become, const std::string& verify,
                         const std::vector<std::string>& args) const;
  // Copies the agent into the host's cache; the failure (or interruption) when it cannot.
  std::optional<HostOutcome> copy_agent(Host& h, const std::string& verify);
  // Why the agent did not run, from the exit codes of the run's script (and ssh's 255), when it did not.
  std::optional<HostOutcome> not_run(const Host& h, const ExecResult& run) const;
  // The agent's answer to a run, checked and added to `r`; the failure when it is not a report.
  std::optional<HostOutcome> take_report(const Host& h, const ExecResult& run, HostOutcome& r) const;
  // What a run's exit code makes of the host, once no reboot follows.
  void settle(HostOutcome& r, const ExecResult& run) const;
  // Reboots the host and waits for a new boot id; the failure (or interruption) when it is not back.
  std::optional<HostOutcome> reboot_and_wait(Host& h, const std::string& become, const std::string& boot_before) const;
  ExecResult ssh(const Host& h, const std::string& command, std::string input = {}, int timeout_s = 600,
                 bool interruptible = true) const;
  // After an interruption: the run's temporary directory `tmp` (as the host said it) stopped and
  // removed; what was done, in words.
  std::string stop_and_clean(const Host& h, const std::string& tmp) const;
  std::optional<std::string> connect(const Host& h) const;  // an error when the host cannot be reached
  void disconnect(const Host& h) const;
  void report(const Host& h, const HostOutcome& r);

  const FleetOptions& o_;
  std::ostream& out_;
  std::ostream& err_;
  std::mutex print_;
  std::string control_dir_;
  // The agent's loadable image (ship::read_loadable_image), its SHA-256, the cache's name for it; gzip
  // of it made once, when a host first needs a copy.
  std::string agent_bytes_, agent_sha_, agent_name_, playbook_bytes_;
  const std::string& agent_gzip();
  std::once_flag gzip_once_;
  std::string agent_gzip_;
  std::string run_id_;  // in the names of this run's temporary directories on the hosts
  std::map<std::string, HostOutcome> results_;
};

Expected<Fleet::Host> Fleet::prepare(const InventoryHost& h) const {
  Host host;
  host.inv = &h;
  host.destination = h.address();
  // Ansible's default ("smart") is ssh; any connection plugin other than ssh and local would be
  // run as ssh to the wrong place: refused before any host runs.
  if (auto e = h.connection_error()) return Error{*e};
  const std::string connection = var_string(h.vars, "ansible_connection", "ssh");
  host.local = connection == "local";
  if (!host.local && connection != "ssh" && connection != "smart")
    return Error{"host " + h.name + ": ansible_connection=" + connection +
                 " is not supported (gptagent reaches a host with ssh, or runs on the controller with local)"};
  // The shared connection is found again by what it connects to and how: its socket is named
  // after the ssh command line (options, key, user, port) and the destination.
  auto ssh = ssh_command(h, o_.inventory, "");
  if (!ssh) return Error{ssh.error()};
  host.control = control_dir_ + "/gptagent-" +
                 sha256_hex(join(*ssh, std::string(1, '\0')) + '\0' + host.destination).substr(0, 16);
  if (host.control.size() >= sizeof(sockaddr_un{}.sun_path))
    return Error{"host " + h.name + ": the ssh control socket " + host.control + " would be longer than " +
                 std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                 " bytes: set ANSIBLE_SSH_CONTROL_PATH_DIR to a shorter directory"};
  // ssh_command's own ControlPath (before any of the inventory's ssh arguments) is given its value.
  *std::find(ssh->begin(), ssh->end(), "ControlPath=") += host.control;
  host.ssh = std::move(*ssh);
  // Privileges as on a host reached by ssh: sudo -n when become is asked, unless already root.
  host.become = h.become() && !(host.local && ::geteuid() == 0);
  host.become_exe = var_string(h.vars, "ansible_become_exe", "sudo");
  if (h.become()) {
    // Only sudo is run the way the agent needs (-n, never a prompt; the agent's own argv after --).
    const std::string method = var_string(h.vars, "ansible_become_method", "sudo");
    if (method != "sudo")
      return Error{"host " + h.name + ": ansible_become_method=" + method +
                   " is not supported (gptagent becomes root with sudo -n, or ansible_become_exe run as sudo)"};
    const std::string user = var_string(h.vars, "ansible_become_user", "root");
    if (user != "root")
      return Error{"host " + h.name + ": ansible_become_user=" + user +
                   " is refused: the agent must run as root (it writes the boot configuration and binds devices)"};
    auto flags = shell_split(var_string(h.vars, "ansible_become_flags"), /*comments=*/false);
    if (!flags) return Error{"host " + h.name + ": ansible_become_flags: " + flags.error()};
    for (auto& w : *flags) host.become_flags.push_back(std::move(w.text));
  }
  host.root = var_string(h.vars, "gptagent_root", "/");
  host.remote_dir = var_string(h.vars, "gptagent_remote_dir", "~/.cache/gptagent");
  host.remote_tmp = var_string(h.vars, "gptagent_remote_tmp");  // "": tmp in the agent cache
  host.boot_path = (host.root == "/" ? std::string() : host.root) + "/proc/sys/kernel/random/boot_id";
  host.reboot_command = var_string(h.vars, "gptagent_reboot_command", "systemctl reboot || /sbin/reboot");
  const std::string persist = var_string(h.vars, "gptagent_ssh_persist", "60");
  if (persist.empty() || persist.size() > 6 || persist.find_first_not_of("0123456789") != std::string::npos)
    return Error{
        "host " + h.name + ": gptagent_ssh_persist=" + persist +
        " is not a number of seconds (how long its shared connection stays open after the run; 0: closed at its end)"};
  host.persist = std::stoi(persist);
  for (auto it = h.vars.begin(); it != h.vars.end(); ++it)
    if (!it.key().starts_with("ansible_") && !it.key().starts_with("gptagent_")) host.vars[it.key()] = it.value();
  host.vars["inventory_hostname"] = h.name;
  return host;
}

ExecResult Fleet::ssh(const Host& h, const std::string& command, std::string input, int timeout_s,
                      bool interruptible) const {
  Command c;
  if (interruptible) c.cancel = &g_interrupted;
  if (h.local) {
    c.argv = {"/bin/sh", "-c", command};
  } else {
    c.argv = h.ssh;
    c.argv.insert(c.argv.end(), {"-o", "ControlMaster=no", "--", h.destination, command});
  }
  h.bytes_sent += command.size() + input.size();
  c.input = std::move(input);
  c.timeout = std::chrono::seconds(timeout_s);
  c.max_output = kMaxReport;
  ProcessExec exec;
  return exec.run(c);
}

// The host's shared connection: the one a run before left (ControlPersist), or a new one. The
// master runs in the background with its output on /dev/null and a log (a master holding our pipes
// would keep every later read waiting); the log is read back when it fails, and removed.
std::optional<std::string> Fleet::connect(const Host& h) const {
  if (h.local) return std::nullopt;
  auto lock = ControlLock::acquire(h.control + ".lock");
  if (!lock) return lock.error();
  h.reused = master_listens(h.control);
  if (h.reused) return std::nullopt;
  // A socket whose master has gone would make the new master give up sharing: removed.
  ::unlink(h.control.c_str());
  const std::string log = h.control + ".log";
  struct RemoveLog {
    const std::string& path;
    ~RemoveLog() { ::unlink(path.c_str()); }
  } remove_log{log};
  std::vector<std::string> args = h.ssh;  // the same ssh as every other call (ansible_ssh_executable)
  args.insert(args.end(),
              {"-o", "ControlMaster=yes", "-o", "ControlPersist=" + std::to_string(h.persist > 0 ? h.persist : 120),
               "-E", log, "-f", "-N", "--", h.destination});
  ::unlink(log.c_str());
  // posix_spawn and waitpid on this one child: Boost.Process's wait_for spins when several
  // threads wait for children at once.
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // Its stderr goes to the log too: what ssh says before -E applies (a bad option, a config it
  // cannot read) is the reason it failed.
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return std::string("cannot run ssh: ") + std::strerror(rc);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (g_interrupted) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return std::string("interrupted while connecting");
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return std::string("ssh did not connect within 40 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return std::nullopt;
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), {}), last;
  for (auto line : lines(text))
    if (!trim(line).empty()) last = std::string(trim(line));
  if (text.find("REMOTE HOST IDENTIFICATION HAS CHANGED") != std::string::npos)
    return "the host key does not match known_hosts (REMOTE HOST IDENTIFICATION HAS CHANGED): refused; fix known_hosts "
           "if the host was reinstalled";
  if (last.empty()) last = "ssh failed";
  return last;
}

void Fleet::disconnect(const Host& h) const {
  if (h.local) return;
  Command c;
  c.argv = h.ssh;
  c.argv.insert(c.argv.end(), {"-O", "exit", "--", h.destination});
  c.timeout = std::chrono::seconds(10);
  ProcessExec exec;
  exec.run(c);
}

std::vector<std::string> Fleet::apply_args(const Host& h, bool first) const {
  std::vector<std::string> args{"--json", "--root", h.root};
  if (o_.check) args.push_back("--check");
  if (o_.diff) args.push_back("--diff");
  if (o_.no_wait) args.push_back("--no-wait");
  // The controller reboots the host for a stage: its agent boots the change once as a trial.
  if (o_.reboot && !o_.check && !o_.no_trial && !h.local) args.push_back("--trial");
  if (o_.revert) return args;  // what the agent recorded is reverted: no tags, stages or hypervisor
  args.insert(args.begin() + 1, {"--color", "never"});
  for (const auto& t : o_.tags) args.insert(args.end(), {"--tags", t});
  for (const auto& t : o_.skip_tags) args.insert(args.end(), {"--skip-tags", t});
  if (!o_.connect.empty()) args.insert(args.end(), {"--connect", o_.connect});
  if (first && o_.reset_state) args.push_back("--reset-state");
  if (first && !o_.from_stage.empty()) args.insert(args.end(), {"--from-stage", o_.from_stage});
  return args;
}

std::string Fleet::run_script(const Host& h, const std::string& become, const std::string& verify,
                              const std::vector<std::string>& args) const {
  const std::string D = remote_path(h.remote_dir);
  // The variables (the host's, and -e read here over them) travel in a file of the private
  // directory, never on a command line that every user of the host can read in ps.
  const std::string command = o_.revert
                                  ? "revert " + remote_command(args)
                                  : "apply \"$t/playbook.yaml\" " + remote_command(args) + " -e @\"$t/vars.json\"";
  // What runs is a copy in the run's private directory, hashed there: nobody can swap it
  // between the check and the exec.
  // The temporary directories' parent is private: tmp in the checked cache (as Ansible's
  // ~/.ansible/tmp), or gptagent_remote_tmp checked as the cache is. The host says which
  // directory it made, so that an interruption cleans that one alone.
  const std::string tmp_parent =
      h.remote_tmp.empty()
          ? "r=\"$d/tmp\"; { [ -d \"$r\" ] && [ ! -L \"$r\" ]; } || mkdir -- \"$r\" || exit 91; "
          : "r=" + remote_path(h.remote_tmp) + "; [ -d \"$r\" ] || exit 91; " + refuse_unsafe_dir("r", 97);
  return "umask 077; u=; d=" + D + "; [ -d \"$d\" ] || exit 93; " + refuse_unsafe_dir() + "a=\"$d/" + agent_name_ +
         "\"; [ -x \"$a\" ] || exit 93; command -v sha256sum >/dev/null || exit 94; " + tmp_parent +
         "t=$(mktemp -d \"$r/gptagent." + run_id_ +
         ".XXXXXXXX\") || exit 91; echo \"gptagent-tmp=$t\" >&2; { cp -- \"$a\" \"$t/" + agent_name_ +
         "\" && [ -x \"$t/" + agent_name_ + "\" ]; } || { rm -rf \"$t\"; exit 91; }; a=\"$t/" + agent_name_ + "\"; " +
         verify + " || { rm -rf \"$t\"; exit 95; }; b=; read -r b < " + shell_quote(h.boot_path) +
         " 2>/dev/null; echo \"gptagent-boot=$b\" >&2; { head -c " + std::to_string(playbook_bytes_.size()) +
         " > \"$t/playbook.yaml\" && cat > \"$t/vars.json\"; } || { rm -rf \"$t\"; exit 92; }; " + become + "\"$a\" " +
         command + " </dev/null & echo $! > \"$t/pid\"; wait $!; rc=$?; rm -rf \"$t\"; exit $rc";
}

std::optional<HostOutcome> Fleet::copy_agent(Host& h, const std::string& verify) {
  const std::string D = remote_path(h.remote_dir);
  auto fail = [](HostOutcome::Kind kind, std::string message) {
    HostOutcome f;
    f.kind = kind;
    f.message = std::move(message);
    return std::optional<HostOutcome>(std::move(f));
  };
  // Written whole under a new name mktemp makes (O_EXCL: never through a planted file or
  // link), decompressed there, its hash checked, then renamed: the cached name always holds
  // that content. Other versions are removed once this one is in place. gzip is on every
  // target; a host without it is sent the image as it is.
  auto copy_with = [&](bool compressed) {
    const std::string& payload = compressed ? agent_gzip() : agent_bytes_;
    spdlog::info("{}: copying the agent ({} bytes{})", h.inv->name, payload.size(),
                 compressed ? ", gzip-compressed from " + std::to_string(agent_bytes_.size()) : std::string());
    return ssh(h,
               "umask 077; u=; d=" + D + "; mkdir -p -- \"$d\" || exit 90; " + refuse_unsafe_dir() +
                   (compressed ? "command -v gzip >/dev/null || exit 89; " : "") +
                   "a=$(mktemp \"$d/.gptagent.new.XXXXXXXX\") || exit 90; " + (compressed ? "gzip -dc" : "cat") +
                   " > \"$a\" || { rm -f \"$a\"; exit 90; }; " + verify +
                   " || { rm -f \"$a\"; exit 95; }; chmod 700 \"$a\" && mv -f \"$a\" \"$d/" + agent_name_ +
                   "\" && for f in \"$d\"/gptagent-*; do [ \"$f\" = \"$d/" + agent_name_ + "\" ] || rm -f \"$f\"; done",
               payload, 600);
  };
  auto copy = copy_with(true);
  if (copy.exit_code == 89) copy = copy_with(false);
  if (copy.overflowed)
    return fail(HostOutcome::failed_,
                "MODULE FAILURE: the host sent more than " + size_text(kMaxReport) + " while the agent was copied");
  if (copy.cancelled) return fail(HostOutcome::interrupted, "interrupted while copying the agent");
  if (copy.exit_code == 96)
    return fail(HostOutcome::failed_, unsafe_dir_message("the agent cache", h.remote_dir, copy.err));
  if (!copy.ok())
    return fail(copy.exit_code == 255 ? HostOutcome::unreachable : HostOutcome::failed_,
                copy.exit_code == 95 ? "the agent copied to " + h.remote_dir + " does not have its SHA-256 " +
                                           agent_sha_ + " on the host: the copy was corrupted, nothing was run"
                                     : "cannot copy the agent to " + h.remote_dir + ": " + copy.failure());
  return std::nullopt;
}

std::optional<HostOutcome> Fleet::reboot_and_wait(Host& h, const std::string& become,
                                                  const std::string& boot_before) const {
  ssh(h, become + "sh -c " + shell_quote(h.reboot_command), {}, 60);
  disconnect(h);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o_.reboot_timeout);
  while (std::chrono::steady_clock::now() < deadline && !g_interrupted) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (connect(h)) continue;
    auto b = ssh(h, "cat " + shell_quote(h.boot_path), {}, 30);
    if (b.ok() && std::string(trim(b.out)) != boot_before && !trim(b.out).empty()) return std::nullopt;
    disconnect(h);
  }
  HostOutcome f;
  if (g_interrupted) {
    f.kind = HostOutcome::interrupted;
    f.message = "interrupted while waiting for the host to come back from its reboot";
  } else {
    f.kind = HostOutcome::unreachable;
    f.message = "did not come back with a new boot id within " + std::to_string(o_.reboot_timeout) + " s of the reboot";
  }
  return f;
}

HostOutcome Fleet::converge(Host& h) {
  HostOutcome r;
  if (g_interrupted) {
    r.kind = HostOutcome::interrupted;
    r.message = "not started: the run was interrupted";
    return r;
  }
  if (auto e = connect(h)) {
    r.kind = g_interrupted ? HostOutcome::interrupted : HostOutcome::unreachable;
    r.message = *e;
    return r;
  }
  // The shared connection stays for the next run (gptagent_ssh_persist seconds, as Ansible's
  // ControlPersist), unless it is asked to end with the run, or the run was interrupted and had
  // started it (one an earlier run left may serve another run now).
  struct Disconnect {
    const Fleet& fleet;
    const Host& host;
    ~Disconnect() {
      if (host.persist == 0 || (g_interrupted && !host.reused)) fleet.disconnect(host);
    }
  } disconnect_at_end{*this, h};
  bool reconnected = false;
  std::string become;
  if (h.become) {
    std::vector<std::string> words{h.become_exe, "-n"};
    words.insert(words.end(), h.become_flags.begin(), h.become_flags.end());
    become = remote_command(words) + " -- ";
  }
  // The agent is checked against its SHA-256 on the host before every run: the name of the
  // cached copy says what it should be, sha256sum says what it is.
  const std::string verify = "set -- $(sha256sum -- \"$a\") && [ \"$1\" = " + agent_sha_ + " ]";
  std::string boot_before;
  bool copied = false;
  for (int attempt = 0;; ++attempt) {
    // One round trip on a host that has this agent: the hash check, a private temporary directory
    // (mktemp -d, 0700) named after this run, the boot id (on stderr, for the reboot), the playbook
    // from stdin, the run (its pid recorded, for an interruption), the cleanup.
    const std::vector<std::string> args = apply_args(h, r.runs.empty());
    const std::string vars =
        o_.revert ? std::string() : h.vars.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    auto run = ssh(h, run_script(h, become, verify, args), playbook_bytes_ + vars, 3600);
    if (run.cancelled) {
      r.kind = HostOutcome::interrupted;
      r.message = stop_and_clean(h, remote_said(run.err, "tmp"));
      break;
    }
    if (run.overflowed) {
      r.kind = HostOutcome::failed_;
      r.message =
          "MODULE FAILURE: the host sent more than " + size_text(kMaxReport) + ": refused, nothing more was read";
      return r;
    }
    if ((run.exit_code == 93 || run.exit_code == 95) && !copied) {
      copied = true;
      if (auto failed = copy_agent(h, verify)) {
        r.kind = failed->kind;
        r.message = failed->message;
        return r;
      }
      continue;
    }
    if (run.exit_code == 255 && run.out.empty() && h.reused && !reconnected) {
      // A shared connection left by an earlier run, whose host has since gone away (rebooted,
      // its sshd restarted): once more on a new one.
      reconnected = true;
      disconnect(h);
      if (auto e = connect(h)) {
        r.kind = g_interrupted ? HostOutcome::interrupted : HostOutcome::unreachable;
        r.message = *e;
        return r;
      }
      continue;
    }
    if (auto failed = not_run(h, run)) {
      r.kind = failed->kind;
      r.message = failed->message;
      return r;
    }
    if (run.err.find("gptagent-boot=") != std::string::npos) boot_before = remote_said(run.err, "boot");
    if (auto failed = take_report(h, run, r)) return *failed;
    if (run.exit_code == 3 && o_.reboot && !o_.check && h.local) {
      // As Ansible's reboot module: a local connection would reboot the controller itself.
      r.kind = HostOutcome::waiting;
      r.message = "stopped for a reboot: not rebooted, it is the controller (ansible_connection=local)";
      break;
    }
    if (run.exit_code == 3 && o_.reboot && !o_.check && attempt < 5) {
      // Reboot it and wait for a new boot id; the other hosts go on meanwhile.
      ++r.reboots;
      if (auto failed = reboot_and_wait(h, become, boot_before)) {
        r.kind = failed->kind;
        r.message = failed->message;
        return r;
      }
      continue;
    }
    settle(r, run);
    break;
  }
  return r;
}

std::optional<HostOutcome> Fleet::not_run(const Host& h, const ExecResult& run) const {
  auto outcome = [](HostOutcome::Kind kind, std::string message) {
    HostOutcome f;
    f.kind = kind;
    f.message = std::move(message);
    return std::optional<HostOutcome>(std::move(f));
  };
  if (run.exit_code == 96)
    return outcome(HostOutcome::failed_, unsafe_dir_message("the agent cache", h.remote_dir, run.err));
  if (run.exit_code == 97)
    return outcome(HostOutcome::failed_, unsafe_dir_message("gptagent_remote_tmp", h.remote_tmp, run.err));
  if (run.exit_code == 94)
    return outcome(HostOutcome::failed_,
                   "sha256sum was not found on the host: the copied agent cannot be checked, nothing was run");
  if (run.exit_code == 95)
    return outcome(HostOutcome::failed_, "the agent in " + h.remote_dir + " does not have its SHA-256 " + agent_sha_ +
                                             " even after a new copy: nothing was run");
  if (run.exit_code == 255 && run.out.empty()) return outcome(HostOutcome::unreachable, run.failure());
  if (run.exit_code >= 90 && run.exit_code <= 93)
    return outcome(HostOutcome::failed_,
                   "cannot prepare " + h.remote_dir + " and a private temporary directory: " + run.failure());
  return std::nullopt;
}

std::optional<HostOutcome> Fleet::take_report(const Host& h, const ExecResult& run, HostOutcome& r) const {
  auto fail = [&](std::string message) {
    HostOutcome f = r;
    f.kind = HostOutcome::failed_;
    f.message = std::move(message);
    return std::optional<HostOutcome>(std::move(f));
  };
  json doc = json::parse(run.out, nullptr, false);
  if (doc.is_discarded()) {
    if (h.become && run.err.find("password") != std::string::npos)
      return fail(h.become_exe + " needs a password on this host (ansible_become runs " + h.become_exe +
                  " -n): " + run.failure());
    return fail("MODULE FAILURE: the agent did not answer with JSON (" + run.failure() + "): " + excerpt(run.out));
  }
  if (auto bad = malformed_report(doc, run.exit_code, o_.check))
    return fail("MODULE FAILURE: the agent's report is malformed (" + *bad + "): " + excerpt(run.out));
  r.runs.push_back(doc);
  if (doc.contains("stats")) {  // checked above: integers from 0 to 2^24
    const auto& s = doc["stats"];
    r.ok_count += s["ok"].get<int>();
    r.changed += s["changed"].get<int>();
    r.failed_count += s["failed"].get<int>();
    r.skipped += s["skipped"].get<int>();
    r.ignored += s["ignored"].get<int>();
  }
  return std::nullopt;
}

void Fleet::settle(HostOutcome& r, const ExecResult& run) const {
  switch (run.exit_code) {
    case 0:
      r.kind = r.changed > 0 ? HostOutcome::changed_ : HostOutcome::ok;
      break;
    case 2:
      r.kind = HostOutcome::drift;
      break;
    case 3:
      r.kind = HostOutcome::waiting;
      r.message = o_.check ? "waiting for a reboot"
                           : "stopped for a reboot (run with --reboot to let the controller reboot it)";
      break;
    default:
      r.kind = HostOutcome::failed_;
      r.message = "the agent failed (" + run.failure() + ")";
  }
}

// The run on this host was interrupted: its agent is stopped (SIGTERM: a run killed at any point
// leaves every file whole, and the next run finishes its work) and its temporary directory removed.
// The remote shell would do both when the agent ends; this does it now, on a connection of its own.
// Only the directory the host said this run made is touched, and only while it is a directory
// (no link) of the ssh user's: never a pid file someone else left under a name like it.
std::string Fleet::stop_and_clean(const Host& h, const std::string& tmp) const {
  if (tmp.empty()) return "interrupted; the host had not made the run's temporary directory yet";
  const std::string script =
      "t=" + shell_quote(tmp) +
      "; [ -d \"$t\" ] && [ ! -L \"$t\" ] && [ -O \"$t\" ] || exit 0; p=$(cat \"$t/pid\" 2>/dev/null); "
      "if [ -n \"$p\" ] && kill -TERM \"$p\" 2>/dev/null; then i=0; "
      "while kill -0 \"$p\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; "
      "echo \"stopped $p\"; fi; rm -rf \"$t\" && echo \"removed $t\"";
  std::vector<std::string> ssh_argv = h.ssh;
  Host fresh = h;  // the shared connection may be going away with the interrupted client
  fresh.ssh.clear();
  for (size_t i = 0; i < ssh_argv.size(); ++i) {
    if (ssh_argv[i] == "-o" && i + 1 < ssh_argv.size() && ssh_argv[i + 1].starts_with("ControlPath=")) {
      ++i;
      continue;
    }
    fresh.ssh.push_back(ssh_argv[i]);
  }
  fresh.ssh.insert(fresh.ssh.end(), {"-o", "ControlPath=none"});
  auto res = ssh(fresh, script, {}, 30, /*interruptible=*/false);
  std::vector<std::string> done;
  for (auto line : lines(res.out))
    if (!trim(line).empty()) done.emplace_back(trim(line));
  if (!res.ok())
    return "interrupted; cleaning up failed (" + res.failure() + "): the run's temporary directory " + tmp +
           " may be left";
  if (done.empty()) return "interrupted; no temporary directory of this run was left";
  return "interrupted; " + join(done, ", ");
}

const std::string& Fleet::agent_gzip() {
  std::call_once(gzip_once_, [&] { agent_gzip_ = ship::gzip(agent_bytes_); });
  return agent_gzip_;
}

void Fleet::report(const Host& h, const HostOutcome& r_in) {
  std::lock_guard<std::mutex> lock(print_);
  HostOutcome& r = results_[h.inv->name] = r_in;
  r.bytes_sent = h.bytes_sent;
  spdlog::info("{}: {} bytes sent", h.inv->name, h.bytes_sent);
  if (o_.json) return;
  const std::string& name = h.inv->name;
  out_ << "\n" << banner("HOST [" + name + "]") << "\n";
  for (const auto& doc : r.runs) {
    if (doc.value("waiting_for_reboot", false)) out_ << "waiting: [" << name << "] waiting for a reboot\n";
    for (const auto& stage : doc.value("stages", json::array())) {
      // A host's report is the remote agent's: a line break in its names or messages is escaped
      // with the rest (out_ escapes every other control character), never a line of ours.
      if (!stage.value("tasks", json::array()).empty())
        out_ << terminal_safe(banner("STAGE [" + stage.value("name", "") + "]"), false) << "\n";
      for (const auto& t : stage["tasks"]) {
        std::string text = t.value("name", "");
        if (!t.value("msg", "").empty()) text += " " + t.value("msg", "");
        std::string line = task_line(t.value("status", ""), name, text);
        if (t.contains("ignored") && t["ignored"].is_boolean() && t["ignored"].get<bool>()) line += " ...ignoring";
        out_ << terminal_safe(line, false) << "\n";
        if (o_.diff && !t.value("diff", "").empty()) out_ << t.value("diff", "");
      }
    }
  }
  if (r.reboots > 0)
    out_ << "rebooted: [" << name << "] " << r.reboots << (r.reboots == 1 ? " time" : " times") << "\n";
  if (r.kind == HostOutcome::unreachable)
    out_ << "fatal: [" << name << "]: UNREACHABLE! " << r.message << "\n";
  else if (r.kind == HostOutcome::failed_)
    out_ << "fatal: [" << name << "]: FAILED! " << r.message << "\n";
  else if (r.kind == HostOutcome::waiting)
    out_ << "reboot: [" << name << "] " << r.message << "\n";
  else if (r.kind == HostOutcome::interrupted)
    out_ << "fatal: [" << name << "]: INTERRUPTED! " << r.message << "\n";
  out_.flush();
}

int Fleet::run(const std::vector<const InventoryHost*>& hosts) {
  g_interrupted = false;
  ScopedSignalHandlers interrupts({SIGINT, SIGTERM, SIGHUP}, on_interrupt, SA_RESETHAND);
  const bool any_ssh = std::any_of(hosts.begin(), hosts.end(), [](const InventoryHost* h) {
    return var_string(h->vars, "ansible_connection") != "local";
  });
  if (any_ssh) {
    auto dir = control_dir_path();
    if (!dir) {
      err_ << "gptagent: " << dir.error() << ", no host was touched\n";
      return 1;
    }
    control_dir_ = *dir;
  }
  std::vector<Host> all;
  for (size_t i = 0; i < hosts.size(); ++i) {
    auto host = prepare(*hosts[i]);
    if (!host) {
      err_ << "gptagent: " << o_.inventory << ": " << host.error() << ", no host was touched\n";
      return 1;
    }
    all.push_back(std::move(*host));
  }

  // Each host is given one vars.json: its variables with -e over them (as in Ansible, extra vars
  // win), -e @FILE read here, on the controller. What a host will be given is checked here, as
  // the agent there checks it, and the playbook with it, before any host is touched: one error,
  // not one per host after half of them changed.
  json extra = json::object();
  for (const auto& e : o_.extra_vars) extra.update(*parse_extra_var(e));  // main.cpp checked them
  LoadOptions lo;
  lo.facts = gather_facts(Root("/")).to_json();
  for (auto& h : all) {
    if (o_.revert) break;  // no playbook: each host's agent reverts what it recorded
    h.vars.update(extra);
    auto given =
        parse_extra_vars_text(h.vars.dump(-1, ' ', false, json::error_handler_t::replace), "vars.json does not hold");
    if (!given) {
      err_ << "gptagent: " << o_.inventory << ": host " << h.inv->name << ": " << given.error()
           << " (a variable of this host, from the inventory or -e), no host was touched\n";
      return 1;
    }
    lo.extra_vars = *given;
    auto loaded = load_playbook(o_.playbook, lo);
    if (!loaded.ok()) {
      for (const auto& e : loaded.errors) err_ << e << "\n";
      err_ << "gptagent: " << o_.playbook << " (with the variables of " << h.inv->name << "): " << loaded.errors.size()
           << (loaded.errors.size() == 1 ? " error" : " errors") << ", no host was touched\n";
      return 1;
    }
    const auto& stages = loaded.playbook.stages;
    if (!o_.from_stage.empty() &&
        std::none_of(stages.begin(), stages.end(), [&](const Stage& st) { return st.name == o_.from_stage; })) {
      err_ << "gptagent: --from-stage: " << o_.playbook << " has no stage '" << o_.from_stage
           << "', no host was touched\n";
      return 1;
    }
  }

  // /proc/self/exe itself, never the path it names: that path may since have been replaced, or
  // deleted (it then reads "... (deleted)"), while /proc/self/exe still opens what runs.
  const std::string self = o_.agent.empty() ? "/proc/self/exe" : o_.agent;
  if (!o_.revert) {
    std::ifstream p(o_.playbook, std::ios::binary);
    playbook_bytes_.assign(std::istreambuf_iterator<char>(p), {});
  }
  // What is shipped is the loadable image alone: the debug information and symbol tables stay here
  // (and are never read).
  auto image = ship::read_loadable_image(self);
  if (!image) {
    err_ << "gptagent: the agent to copy (" << self << ") cannot be shipped: " << image.error()
         << ": nothing is shipped, no host was touched\n";
    return 1;
  }
  agent_bytes_ = std::move(*image);
  agent_sha_ = sha256_hex(agent_bytes_);
  agent_name_ = "gptagent-" + agent_sha_;
  {
    std::random_device random;
    char id[17];
    std::snprintf(id, sizeof id, "%08x%08x", random(), random());
    run_id_ = id;
  }

  if (any_ssh) {
    if (auto s = secure_control_dir(control_dir_); !s) {
      err_ << "gptagent: " << s.error() << ", no host was touched\n";
      return 1;
    }
  }

  const size_t batch = o_.serial > 0 ? static_cast<size_t>(o_.serial) : all.size();
  for (size_t start = 0; start < all.size(); start += batch) {
    const size_t end = std::min(all.size(), start + batch);
    std::atomic<size_t> next{start};
    std::vector<std::thread> workers;
    const size_t n = std::min<size_t>(std::max(1, o_.forks), end - start);
    for (size_t w = 0; w < n; ++w)
      workers.emplace_back([&] {
        for (size_t i = next++; i < end; i = next++) report(all[i], converge(all[i]));
      });
    for (auto& w : workers) w.join();
  }

  int failed = 0, unreachable = 0, drift = 0, waiting = 0, interrupted = 0;
  json doc = {{"playbook", o_.playbook}, {"inventory", o_.inventory}, {"check", o_.check}, {"hosts", json::object()}};
  if (!o_.json) out_ << "\n" << banner("PLAY RECAP") << "\n";
  for (const auto& h : all) {
    const HostOutcome& r = results_[h.inv->name];
    failed += r.kind == HostOutcome::failed_;
    unreachable += r.kind == HostOutcome::unreachable;
    drift += r.kind == HostOutcome::drift;
    waiting += r.kind == HostOutcome::waiting;
    interrupted += r.kind == HostOutcome::interrupted;
    const bool failed_host = r.kind == HostOutcome::failed_ || r.kind == HostOutcome::interrupted;
    const int failed_tasks = r.failed_count + (failed_host && r.failed_count == 0 ? 1 : 0);
    static const char* kinds[] = {"ok",         "changed", "failed", "unreachable", "drift", "waiting_for_reboot",
                                  "interrupted"};
    doc["hosts"][h.inv->name] = {{"status", kinds[r.kind]},
                                 {"message", r.message},
                                 {"reboots", r.reboots},
                                 {"bytes_sent", r.bytes_sent},
                                 {"runs", r.runs},
                                 {"stats",
                                  {{"ok", r.ok_count},
                                   {"changed", r.changed},
                                   {"unreachable", r.kind == HostOutcome::unreachable ? 1 : 0},
                                   {"failed", failed_tasks},
                                   {"skipped", r.skipped},
                                   {"ignored", r.ignored}}}};
    if (!o_.json)
      out_ << recap_line(h.inv->name, r.ok_count, r.changed, r.kind == HostOutcome::unreachable ? 1 : 0, failed_tasks,
                         r.skipped, r.ignored)
           << "\n";
  }
  const int code = interrupted ? 130 : failed ? 1 : unreachable ? 4 : waiting ? 3 : drift ? 2 : 0;
  doc["exit_code"] = code;
  size_t sent = 0;
  for (const auto& [name, r] : results_) sent += r.bytes_sent;
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  spdlog::info("{} bytes sent to {} hosts; the controller's peak memory: {} KiB", sent, all.size(), usage.ru_maxrss);
  if (interrupted)
    err_ << "gptagent: interrupted: " << interrupted << " of " << all.size() << " hosts did not finish\n";
  if (o_.json)
    out_ << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  else if (o_.check) {
    // A host that failed or could not be reached was not checked: its drift is unknown, not none.
    const int unchecked = failed + unreachable + interrupted;
    const std::string of_all = " of " + std::to_string(all.size()) + " hosts";
    if (drift) out_ << drift << of_all << " differ from the playbook (check mode, nothing changed)";
    if (unchecked)
      out_ << (drift ? "; " : "") << unchecked << of_all << " could not be checked (failed or unreachable)";
    if (!drift && !unchecked) out_ << "no drift on any host";
    out_ << "\n";
  }
  return code;
}

}  // namespace

int run_fleet(const FleetOptions& o, std::ostream& out, std::ostream& err) {
  auto inv = load_inventory(o.inventory);
  if (!inv) {
    err << "gptagent: " << inv.error() << "\n";
    return 1;
  }
  auto hosts = select_hosts(*inv, o.limit.empty() ? "all" : o.limit);
  if (!hosts) {
    err << "gptagent: " << hosts.error() << "\n";
    return 1;
  }
  std::ifstream probe(o.playbook);
  if (!o.revert && !probe) {
    err << "gptagent: cannot read the playbook " << o.playbook << "\n";
    return 1;
  }
  if (hosts->empty()) {  // as ansible-playbook: a warning, nothing to do
    err << "gptagent: warning: the inventory " << o.inventory << " has no host: nothing to do\n";
    return 0;
  }
  Fleet fleet(o, out, err);
  return fleet.run(*hosts);
}

}  // namespace gpt
