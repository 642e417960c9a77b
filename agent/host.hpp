// The host boundary for files: every absolute path maps under --root, never outside it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/expected.hpp"

namespace gpt {

// Maps absolute host paths into a root directory. Symlinks and ".." are resolved inside the root
// the way openat2(RESOLVE_IN_ROOT) does: an absolute link target or a ".." at the top stays in the
// root, so nothing a tree contains can lead a read or a write outside it.
class Root {
 public:
  explicit Root(std::string dir);
  // What --root may name: an existing directory (an error saying so otherwise).
  static Status check(const std::string& dir);

  // A root at a directory already open, named by its /proc/self/fd link and kept so (never resolved
  // to a path that whoever may write its parent could swap for a symlink). `fd` stays open meanwhile.
  static Root at_fd(int fd) { return Root("/proc/self/fd/" + std::to_string(fd), Verbatim{}); }

  const std::string& dir() const { return dir_; }
  // True when the root is not "/": commands that change the running system must not run.
  bool sandboxed() const { return dir_ != "/"; }

  // The real path of `path` (absolute, as seen on the managed host) under the root, with every
  // symlink resolved in the root. A missing final component (or missing parents) is allowed.
  Expected<std::string> resolve(std::string_view path) const;
  // For messages: the path as the managed host sees it.
  static std::string display(std::string_view path) { return std::string(path); }

 private:
  struct Verbatim {};
  Root(std::string dir, Verbatim) : dir_(std::move(dir)) {}
  std::string dir_;
};

struct FileInfo {
  bool exists = false;
  bool regular = false;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Reads a whole file (host path, under the root). Fails with the path and the reason; `max_bytes`
// bounds what a hostile or broken file can make us hold in memory.
Expected<std::string> read_file(const Root& root, std::string_view path, size_t max_bytes = 16u << 20);
// Reads a file if it exists; an absent file is an empty optional, other failures are errors.
Expected<std::optional<std::string>> read_file_if_exists(const Root& root, std::string_view path,
                                                         size_t max_bytes = 16u << 20);
// Reads the rest of an open regular file, `where` naming it in errors.
Expected<std::string> read_open_file(int fd, std::string_view where, size_t max_bytes = 16u << 20);
Expected<FileInfo> stat_file(const Root& root, std::string_view path);

// An open file descriptor, closed when the object goes.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) UniqueFd(other.release()).swap(*this);
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void swap(UniqueFd& other) noexcept { std::swap(fd_, other.fd_); }

 private:
  int fd_;
};

// The directory holding `path` (a host path), resolved in the root and opened O_PATH, and the
// path's last component. What is at that name is then looked at with openat(O_NOFOLLOW) from the
// descriptor, never by path again: a symlink another user swaps in there is seen, not followed.
// `fd` is -1 when the directory does not exist.
struct ParentDir {
  UniqueFd fd;
  std::string real;  // the directory's real path (under the root)
  std::string name;  // the last component
  std::string real_path() const;
};
Expected<ParentDir> open_dir_of(const Root& root, std::string_view path);

// Opens one of the agent's own files (the run lock, the state) with `flags` (O_CREAT: its
// directories are made too): the directory is resolved in the root, the last component never.
// A symlink there (another user's, to /etc/default/grub say) or anything but a regular file is
// refused with an error naming the path. Without O_CREAT a missing file is a descriptor of -1.
Expected<UniqueFd> open_own_file(const Root& root, std::string_view path, int flags, mode_t create_mode = 0644);
// Removes one of the agent's own files: a symlink at its name is removed itself, never its target.
Status remove_own_file(const Root& root, std::string_view path);

bool path_exists(const Root& root, std::string_view path);

// A file's owner, group and mode as a task declares them: each one given is managed (set on a new
// file, and an existing file that differs is changed), each one left out stays as the file has it.
struct FileAttrs {
  std::optional<uid_t> uid = std::nullopt;
  std::optional<gid_t> gid = std::nullopt;
  std::optional<mode_t> mode = std::nullopt;  // the permission bits, 07777
  bool empty() const { return !uid && !gid && !mode; }
};
// "0644"
std::string mode_text(mode_t mode);
// A user or group: a number, or a name in the managed host's /etc/passwd (/etc/group). Under
// --root those are the tree's own files; on the host itself NSS also knows directory users.
Expected<unsigned> lookup_id(const Root& root, const std::string& name, bool group);
// What differs between a file (nullptr: a new one) and the attributes asked for, one phrase each:
// "mode 0644 → 0755", "owner 1000 → 0", "group 0" (for a new file).
std::vector<std::string> attr_changes(const FileInfo* now, const FileAttrs& want);
// Sets the attributes asked for on the file `fd` holds (an O_PATH descriptor will do), never on
// what a path names by then; chown first, as it clears set-id bits a mode may ask for.
Status set_attrs(int fd, const std::string& shown, const FileAttrs& want);
// Sets them on the regular file at `path`, resolved in the root as write_file_atomic resolves it;
// what is at the resolved name is opened without following (a symlink swapped in there is
// refused, nothing changed).
Status set_file_attrs(const Root& root, std::string_view path, const FileAttrs& want);

struct WriteOptions {
  bool backup = true;         // keep the previous content as FILE.gptagent-YYYYmmddTHHMMSS
  mode_t create_mode = 0644;  // for a file that did not exist
  FileAttrs attrs = {};       // declared owner, group and mode: they win over the file's and create_mode
  // The last component is taken as it is, never followed: a symlink there is refused (for the
  // agent's own files, where no link is ours).
  bool no_follow = false;
  bool create_dirs = true;  // make missing parent directories (0755); else a missing one is an error
  // A temporary name of its own (random, O_EXCL) instead of the one fixed per target: for files that
  // runs holding the lock shared (--check) may write at the same time.
  bool unique_temp = false;
  // The directory is not the agent's (node_exporter's textfile directory): it is opened
  // O_NOFOLLOW and refused when its group or others may write into it without the sticky bit.
  bool guarded_dir = false;
};
struct WriteOutcome {
  std::optional<std::string> backup_path;  // host path of the backup, when one was made
};

// Replaces a file atomically: temp file in the same directory, write, fsync, rename, fsync of the
// directory. Mode and owner of an existing file are kept. An interrupted run leaves the old file or
// the new one, never half of one; the backup is a hard link to the old inode (complete by
// construction) or, where links are impossible, a copy written the same atomic way.
Expected<WriteOutcome> write_file_atomic(const Root& root, std::string_view path, std::string_view content,
                                         const WriteOptions& opts = {});

// Names in a directory (sorted; "." and ".." left out). A missing directory is an empty list.
Expected<std::vector<std::string>> list_dir(const Root& root, std::string_view dir);

// The target of a symlink as written in it (not resolved); nullopt when `path` is no symlink.
std::optional<std::string> read_link(const Root& root, std::string_view path);

// The path of an executable `name` in the root's /usr/sbin, /sbin, /usr/bin or /bin.
std::optional<std::string> find_program(const Root& root, std::string_view name);

// Removes a file, keeping it as FILE.gptagent-YYYYmmddTHHMMSS (a hard link, or a copy).
// Returns the backup's host path.
Expected<std::string> remove_file(const Root& root, std::string_view path);
// Renames a file within its directory (to an absolute host path), keeping a backup of the old
// content and of whatever `to` held. Returns the backup's host path.
Expected<std::string> rename_file(const Root& root, std::string_view from, std::string_view to);

// Name of a backup for `path` made now: FILE.gptagent-YYYYmmddTHHMMSS.
std::string backup_name(std::string_view path);

// Writes a kernel attribute (sysfs): a plain write to an existing file, no temp file, no backup —
// what the kernel reads is the write itself. Tests replace it at this boundary.
class SysfsWriter {
 public:
  virtual ~SysfsWriter() = default;
  virtual Status write(const Root& root, const std::string& path, const std::string& value);
};

// Exclusive per-root lock on /run/gptagent.lock (under the root). Holds the flock while alive.
class RunLock {
 public:
  RunLock() = default;
  RunLock(RunLock&& other) noexcept;
  RunLock& operator=(RunLock&& other) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  ~RunLock();

  enum class Mode { exclusive, shared_if_exists };
  // wait=false: fail at once when another run holds it, naming that run's pid. on_wait is called
  // once before blocking, with the holder's pid (0 when unknown).
  static Expected<RunLock> acquire(const Root& root, Mode mode, bool wait, void (*on_wait)(long pid) = nullptr);
  bool held() const { return fd_ >= 0; }

 private:
  explicit RunLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace gpt
