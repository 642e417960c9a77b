#include "agent/host.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <memory>

#include "agent/text.hpp"

namespace gpt {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::vector<std::string> split_path(std::string_view p) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    if (j > i) out.emplace_back(p.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

std::string join_under(const std::string& dir, const std::vector<std::string>& parts) {
  std::string out = dir == "/" ? "" : dir;
  for (const auto& part : parts) out += "/" + part;
  return out.empty() ? "/" : out;
}

using Fd = UniqueFd;

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{errno_text(errno)};
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// mkdir -p of an already resolved real path; parents are created with mode 0755.
Status make_dirs(const std::string& real) {
  struct stat st {};
  if (::stat(real.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return {};
    return Error{"not a directory"};
  }
  auto slash = real.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    if (auto s = make_dirs(real.substr(0, slash)); !s) return s;
  }
  if (::mkdir(real.c_str(), 0755) != 0 && errno != EEXIST) return Error{errno_text(errno)};
  return {};
}

std::string parent_of(std::string_view p) {
  auto slash = p.find_last_of('/');
  if (slash == std::string_view::npos || slash == 0) return "/";
  return std::string(p.substr(0, slash));
}

std::string base_of(std::string_view p) {
  auto slash = p.find_last_of('/');
  return std::string(slash == std::string_view::npos ? p : p.substr(slash + 1));
}

}  // namespace

Status Root::check(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return Error{"--root " + dir + " is not a directory"};
  return {};
}

Root::Root(std::string dir) : dir_(std::move(dir)) {
  char buf[PATH_MAX];
  if (::realpath(dir_.c_str(), buf) != nullptr) dir_ = buf;
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

Expected<std::string> Root::resolve(std::string_view path) const {
  if (path.empty() || path.front() != '/') return Error{"not an absolute path: " + std::string(path)};
  // The kernel would read the path only up to a NUL: "/..\0x" would name the root's parent.
  if (path.find('\0') != std::string_view::npos)
    return Error{"a path with a NUL byte: " + std::string(path.substr(0, path.find('\0')))};
  std::vector<std::string> done;
  std::deque<std::string> todo;
  for (auto& c : split_path(path)) todo.push_back(std::move(c));
  int links = 0;
  bool missing = false;   // once a component is missing, the rest cannot be links...
  size_t missing_at = 0;  // ...until a ".." climbs back above it (done[missing_at] is the missing one)
  while (!todo.empty()) {
    std::string comp = std::move(todo.front());
    todo.pop_front();
    if (comp == ".") continue;
    if (comp == "..") {
      if (!done.empty()) done.pop_back();
      if (missing && done.size() <= missing_at) missing = false;
      continue;
    }
    if (!missing) {
      const std::string base = join_under(dir_, done);
      const std::string real = (base == "/" ? "" : base) + "/" + comp;
      struct stat st {};
      if (::lstat(real.c_str(), &st) != 0) {
        missing = true;
        missing_at = done.size();
      } else if (S_ISLNK(st.st_mode)) {
        if (++links > 40) return Error{"too many levels of symbolic links: " + std::string(path)};
        char target[PATH_MAX];
        ssize_t n = ::readlink(real.c_str(), target, sizeof target - 1);
        if (n < 0) return Error{"cannot read link " + std::string(path) + ": " + errno_text(errno)};
        std::string_view t(target, static_cast<size_t>(n));
        if (!t.empty() && t.front() == '/') done.clear();  // absolute targets start at the root
        auto parts = split_path(t);
        todo.insert(todo.begin(), parts.begin(), parts.end());
        continue;
      }
    }
    done.push_back(std::move(comp));
  }
  return join_under(dir_, done);
}

Expected<std::string> read_file(const Root& root, std::string_view path, size_t max_bytes) {
  auto real = root.resolve(path);
  if (!real) return Error{real.error()};
  const std::string where = std::string(path);
  Fd fd(::open(real->c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) return Error{"cannot read " + where + ": " + errno_text(errno)};
  return read_open_file(fd.get(), where, max_bytes);
}

Expected<std::string> read_open_file(int fd, std::string_view where_view, size_t max_bytes) {
  const std::string where(where_view);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Error{"cannot read " + where + ": " + errno_text(errno)};
  if (S_ISDIR(st.st_mode)) return Error{"cannot read " + where + ": it is a directory"};
  if (!S_ISREG(st.st_mode)) return Error{"cannot read " + where + ": not a regular file"};
  // No check of st_size up front: sysfs attributes claim 4096 bytes and /proc files 0. What is
  // read is what counts.
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{"cannot read " + where + ": " + errno_text(errno)};
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes)
      return Error{"cannot read " + where + ": larger than " + std::to_string(max_bytes) + " bytes"};
  }
  return out;
}

Expected<std::optional<std::string>> read_file_if_exists(const Root& root, std::string_view path, size_t max_bytes) {
  auto real = root.resolve(path);
  if (!real) return Error{real.error()};
  struct stat st {};
  if (::stat(real->c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR)) return std::optional<std::string>{};
  auto content = read_file(root, path, max_bytes);
  if (!content) return Error{content.error()};
  return std::optional<std::string>{std::move(*content)};
}

Expected<FileInfo> stat_file(const Root& root, std::string_view path) {
  auto real = root.resolve(path);
  if (!real) return Error{real.error()};
  struct stat st {};
  FileInfo info;
  if (::stat(real->c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return info;
    return Error{"cannot stat " + std::string(path) + ": " + errno_text(errno)};
  }
  info.exists = true;
  info.regular = S_ISREG(st.st_mode);
  info.mode = st.st_mode & 07777;
  info.uid = st.st_uid;
  info.gid = st.st_gid;
  return info;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<ParentDir> open_dir_of(const Root& root, std::string_view path) {
  ParentDir out;
  out.name = base_of(path);
  if (out.name.empty() || out.name == "." || out.name == "..")
    return Error{std::string(path) + " does not name a file"};
  auto real = root.resolve(parent_of(path));
  if (!real) return Error{real.error()};
  out.real = *real;
  out.fd = UniqueFd(::open(out.real.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (out.fd.get() < 0 && errno != ENOENT && errno != ENOTDIR)
    return Error{"cannot open the directory of " + std::string(path) + ": " + errno_text(errno)};
  return out;
}

Expected<UniqueFd> open_own_file(const Root& root, std::string_view path, int flags, mode_t create_mode) {
  const std::string where(path);
  if (flags & O_CREAT) {
    auto dir = root.resolve(parent_of(path));
    if (!dir) return Error{dir.error()};
    if (auto s = make_dirs(*dir); !s) return Error{"cannot create " + parent_of(path) + ": " + s.error()};
  }
  auto parent = open_dir_of(root, path);
  if (!parent) return Error{parent.error()};
  if (parent->fd.get() < 0) return UniqueFd();
  // O_NONBLOCK: a FIFO planted at the name must not hang the open before fstat refuses it.
  UniqueFd fd(::openat(parent->fd.get(), parent->name.c_str(), flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
                       create_mode));
  if (fd.get() < 0) {
    if (errno == ENOENT && !(flags & O_CREAT)) return UniqueFd();
    if (errno == ELOOP)
      return Error{"refusing " + where + ": it is a symbolic link, not a file of gptagent's (remove it)"};
    return Error{"cannot open " + where + ": " + errno_text(errno)};
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error{"cannot open " + where + ": " + errno_text(errno)};
  if (!S_ISREG(st.st_mode)) return Error{"refusing " + where + ": not a regular file (remove it)"};
  const int fl = ::fcntl(fd.get(), F_GETFL);
  if (fl >= 0) ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

Status remove_own_file(const Root& root, std::string_view path) {
  auto parent = open_dir_of(root, path);
  if (!parent) return Error{parent.error()};
  if (parent->fd.get() < 0) return {};
  if (::unlinkat(parent->fd.get(), parent->name.c_str(), 0) != 0 && errno != ENOENT)
    return Error{"cannot remove " + std::string(path) + ": " + errno_text(errno)};
  return {};
}

std::string ParentDir::real_path() const { return (real == "/" ? "" : real) + "/" + name; }

bool path_exists(const Root& root, std::string_view path) {
  auto info = stat_file(root, path);
  return info && info->exists;
}

std::string backup_name(std::string_view path) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
  return std::string(path) + ".gptagent-" + stamp;
}

namespace {

// A temp file of its own in dirfd, for `name`: ".NAME.gptagent-tmp-XXXXXXXX", made O_EXCL.
Fd create_unique_temp(int dirfd, const std::string& name, std::string& tmp) {
  static const char* digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  for (int attempt = 0; attempt < 100; ++attempt) {
    unsigned char bytes[8];
    if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) break;
    tmp = "." + name + ".gptagent-tmp-";
    for (unsigned char b : bytes) tmp += digits[b % 36];
    Fd fd(::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() >= 0 || errno != EEXIST) return fd;
  }
  return Fd();
}

bool on_fat(int fd) {
  struct statfs st {};
  const int saved = errno;
  const bool fat = ::fstatfs(fd, &st) == 0 && st.f_type == 0x4d44;  // MSDOS_SUPER_MAGIC
  errno = saved;
  return fat;
}

// Writes `content` to a fresh temp file in dirfd and renames it to `name`. The temp file has a
// fixed name per target (only one run holds the root lock, and a leftover from a killed run is
// replaced) unless `unique`.
Status replace_in_dir(int dirfd, const std::string& name, std::string_view content, mode_t mode,
                      std::optional<std::pair<uid_t, gid_t>> owner, bool unique = false) {
  std::string tmp = "." + name + ".gptagent-tmp";
  Fd fd;
  if (unique) {
    fd = create_unique_temp(dirfd, name, tmp);
  } else {
    ::unlinkat(dirfd, tmp.c_str(), 0);
    fd = Fd(::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  }
  if (fd.get() < 0) return Error{"cannot create a temporary file: " + errno_text(errno)};
  auto fail = [&](const std::string& what) -> Status {
    int err = errno;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return Error{what + ": " + errno_text(err)};
  };
  if (auto s = write_all(fd.get(), content); !s) {
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return Error{"cannot write: " + s.error()};
  }
  // FAT (an EFI system partition) keeps no owner or mode: its mount options decide them, and a
  // change it cannot hold is refused with EPERM.
  if (owner && ::fchown(fd.get(), owner->first, owner->second) != 0 && !(errno == EPERM && on_fat(fd.get())))
    return fail("cannot keep the owner");
  if (::fchmod(fd.get(), mode) != 0 && !(errno == EPERM && on_fat(fd.get()))) return fail("cannot set the mode");
  if (::fsync(fd.get()) != 0) return fail("cannot sync");
  if (::close(fd.release()) != 0) return fail("cannot close");
  if (::renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0) return fail("cannot rename");
  if (::fsync(dirfd) != 0) return Error{"cannot sync the directory: " + errno_text(errno)};
  return {};
}

}  // namespace

namespace {

// Makes a backup of dirfd/name beside it: a hard link (complete by construction) or, where the
// file system has none, an atomic copy. Returns the backup's file name.
Expected<std::string> backup_in_dir(const Root& root, int dirfd, const std::string& name, std::string_view host_path,
                                    mode_t mode) {
  // A backup that is a hard link to the file itself already holds exactly this content: a run
  // killed between its backup and its rename left it, and the next run keeps that one.
  struct stat cur {};
  if (::fstatat(dirfd, name.c_str(), &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_nlink > 1) {
    Fd scan(::openat(dirfd, ".", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
    if (DIR* d = scan.get() >= 0 ? ::fdopendir(scan.release()) : nullptr) {
      std::unique_ptr<DIR, int (*)(DIR*)> closer(d, ::closedir);
      const std::string prefix = name + ".gptagent-";
      while (dirent* e = ::readdir(d)) {
        struct stat bst {};
        if (std::string_view(e->d_name).starts_with(prefix) &&
            ::fstatat(dirfd, e->d_name, &bst, AT_SYMLINK_NOFOLLOW) == 0 && bst.st_ino == cur.st_ino &&
            bst.st_dev == cur.st_dev)
          return std::string(e->d_name);
      }
    }
  }
  const std::string backup = base_of(backup_name(host_path));
  std::string candidate = backup;
  for (int i = 2; ::linkat(dirfd, name.c_str(), dirfd, candidate.c_str(), 0) != 0; ++i) {
    // Every backup made in the same second gets a name of its own (linkat never replaces one).
    if (errno == EEXIST) {
      candidate = backup + "-" + std::to_string(i);
      continue;
    }
    auto old = read_file(root, host_path, SIZE_MAX);
    if (!old) return Error{old.error()};
    if (auto s = replace_in_dir(dirfd, candidate, *old, mode, std::nullopt); !s) return Error{s.error()};
    break;
  }
  return candidate;
}

}  // namespace

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

Expected<unsigned> lookup_id(const Root& root, const std::string& name, bool group) {
  const std::string what = group ? "group" : "user";
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
    if (name.size() > 10 || std::stoull(name) >= 0xffffffffull) return Error{what + " id " + name + " is out of range"};
    return static_cast<unsigned>(std::stoull(name));
  }
  if (!root.sandboxed()) {
    std::vector<char> buf(1 << 16);
    if (group) {
      struct group g {
      }, *found = nullptr;
      if (::getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found) == 0 && found) return found->gr_gid;
    } else {
      struct passwd p {
      }, *found = nullptr;
      if (::getpwnam_r(name.c_str(), &p, buf.data(), buf.size(), &found) == 0 && found) return found->pw_uid;
    }
    return Error{"no " + what + " named '" + name + "' on this host"};
  }
  const std::string file = group ? "/etc/group" : "/etc/passwd";
  auto text = read_file_if_exists(root, file);
  if (!text) return Error{text.error()};
  if (*text) {
    for (std::string_view line : lines(**text)) {
      std::vector<std::string> fields;
      size_t start = 0;
      for (size_t colon; (colon = line.find(':', start)) != std::string_view::npos; start = colon + 1)
        fields.emplace_back(line.substr(start, colon - start));
      fields.emplace_back(line.substr(start));
      if (fields.size() >= 3 && fields[0] == name && !fields[2].empty() && fields[2].size() <= 10 &&
          fields[2].find_first_not_of("0123456789") == std::string::npos)
        return static_cast<unsigned>(std::stoull(fields[2]));
    }
  }
  return Error{"no " + what + " named '" + name + "' in " + file + " under " + root.dir()};
}

std::vector<std::string> attr_changes(const FileInfo* now, const FileAttrs& want) {
  std::vector<std::string> out;
  if (want.uid && (!now || now->uid != *want.uid))
    out.push_back("owner " + (now ? std::to_string(now->uid) + " → " : "") + std::to_string(*want.uid));
  if (want.gid && (!now || now->gid != *want.gid))
    out.push_back("group " + (now ? std::to_string(now->gid) + " → " : "") + std::to_string(*want.gid));
  if (want.mode && (!now || (now->mode & 07777) != *want.mode))
    out.push_back("mode " + (now ? mode_text(now->mode) + " → " : "") + mode_text(*want.mode));
  return out;
}

Status set_attrs(int fd, const std::string& shown, const FileAttrs& want) {
  const uid_t uid = want.uid ? *want.uid : static_cast<uid_t>(-1);  // -1: left as it is
  const gid_t gid = want.gid ? *want.gid : static_cast<gid_t>(-1);
  if ((want.uid || want.gid) && ::fchownat(fd, "", uid, gid, AT_EMPTY_PATH) != 0)
    return Error{"cannot change the owner of " + shown + ": " + errno_text(errno)};
  // fchmod refuses an O_PATH descriptor; its /proc/self/fd link names the same inode, whatever
  // the directory holds by now.
  const std::string held = "/proc/self/fd/" + std::to_string(fd);
  if (want.mode && ::chmod(held.c_str(), *want.mode) != 0)
    return Error{"cannot change the mode of " + shown + ": " + errno_text(errno)};
  return {};
}

Status set_file_attrs(const Root& root, std::string_view path, const FileAttrs& want) {
  const std::string shown(path);
  // Resolved as write_file_atomic resolves what it writes; the last component is then opened
  // without following, so a symlink swapped in after the resolution gets nothing.
  auto real = root.resolve(path);
  if (!real) return Error{real.error()};
  Fd dirfd(::open(parent_of(*real).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dirfd.get() < 0) return Error{"cannot change " + shown + ": " + errno_text(errno)};
  UniqueFd fd(::openat(dirfd.get(), base_of(*real).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0) return Error{"cannot open " + shown + ": " + errno_text(errno)};
  if (S_ISLNK(st.st_mode)) return Error{"refusing to change " + shown + ": it became a symbolic link (not followed)"};
  if (!S_ISREG(st.st_mode)) return Error{"refusing to change " + shown + ": not a regular file"};
  return set_attrs(fd.get(), shown, want);
}

Expected<WriteOutcome> write_file_atomic(const Root& root, std::string_view path, std::string_view content,
                                         const WriteOptions& opts) {
  const std::string where(path);
  Expected<std::string> real = opts.no_follow ? root.resolve(parent_of(path)) : root.resolve(path);
  if (!real) return Error{real.error()};
  if (opts.no_follow) *real = (*real == "/" ? "" : *real) + "/" + base_of(path);
  const std::string dir = parent_of(*real);
  const std::string name = base_of(*real);
  if (opts.create_dirs) {
    if (auto s = make_dirs(dir); !s)
      return Error{"cannot write " + where + ": cannot create " + parent_of(where) + ": " + s.error()};
  }
  Fd dirfd(::open(dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC | (opts.guarded_dir ? O_NOFOLLOW : 0)));
  if (dirfd.get() < 0) {
    if (errno == ENOENT)
      return Error{"cannot write " + where + ": the directory " + parent_of(where) + " does not exist"};
    return Error{"cannot write " + where + ": " + errno_text(errno)};
  }
  if (opts.guarded_dir) {
    struct stat dst {};
    if (::fstat(dirfd.get(), &dst) != 0) return Error{"cannot write " + where + ": " + errno_text(errno)};
    if ((dst.st_mode & (S_IWGRP | S_IWOTH)) && !(dst.st_mode & S_ISVTX))
      return Error{"refusing to write " + where + ": its directory " + parent_of(where) +
                   " is writable by its group or others and not sticky (chmod go-w, or chmod +t)"};
  }

  struct stat st {};
  const bool existed = ::fstatat(dirfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (existed && !S_ISREG(st.st_mode))
    return Error{"cannot write " + where + (S_ISLNK(st.st_mode) ? ": it is a symbolic link" : ": not a regular file")};

  WriteOutcome outcome;
  if (existed && opts.backup) {
    auto backup = backup_in_dir(root, dirfd.get(), name, where, st.st_mode & 07777);
    if (!backup) return Error{"cannot back up " + where + ": " + backup.error()};
    outcome.backup_path = parent_of(where) + "/" + *backup;
  }

  const mode_t mode = opts.attrs.mode ? *opts.attrs.mode : existed ? (st.st_mode & 07777) : opts.create_mode;
  const uid_t uid = opts.attrs.uid ? *opts.attrs.uid : existed ? st.st_uid : ::geteuid();
  const gid_t gid = opts.attrs.gid ? *opts.attrs.gid : existed ? st.st_gid : ::getegid();
  std::optional<std::pair<uid_t, gid_t>> owner;
  if (uid != ::geteuid() || gid != ::getegid()) owner = std::make_pair(uid, gid);
  if (auto s = replace_in_dir(dirfd.get(), name, content, mode, owner, opts.unique_temp); !s)
    return Error{"cannot write " + where + ": " + s.error()};
  spdlog::info("wrote {} ({} bytes){}", *real, content.size(),
               outcome.backup_path ? ", backup " + *outcome.backup_path : std::string());
  return outcome;
}

Expected<std::vector<std::string>> list_dir(const Root& root, std::string_view dir) {
  auto real = root.resolve(dir);
  if (!real) return Error{real.error()};
  std::vector<std::string> out;
  DIR* d = ::opendir(real->c_str());
  if (!d) {
    if (errno == ENOENT || errno == ENOTDIR) return out;
    return Error{"cannot list " + std::string(dir) + ": " + errno_text(errno)};
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") out.emplace_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> read_link(const Root& root, std::string_view path) {
  // Resolve the parent only: the link itself is what we read.
  std::string p(path);
  auto slash = p.find_last_of('/');
  auto parent = root.resolve(slash == 0 ? "/" : p.substr(0, slash));
  if (!parent) return std::nullopt;
  const std::string real = (*parent == "/" ? "" : *parent) + p.substr(slash);
  char buf[PATH_MAX];
  ssize_t n = ::readlink(real.c_str(), buf, sizeof buf - 1);
  if (n < 0) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

std::optional<std::string> find_program(const Root& root, std::string_view name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string p = std::string(dir) + std::string(name);
    auto info = stat_file(root, p);
    if (info && info->exists && info->regular && (info->mode & 0111)) return p;
  }
  return std::nullopt;
}

namespace {

struct DirEntry {
  Fd dirfd;
  std::string name;
  std::string host_dir;
};

Expected<DirEntry> open_parent(const Root& root, std::string_view path) {
  auto real = root.resolve(path);
  if (!real) return Error{real.error()};
  DirEntry e{Fd(::open(parent_of(*real).c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC)), base_of(*real), parent_of(path)};
  if (e.dirfd.get() < 0) return Error{std::string(path) + ": " + errno_text(errno)};
  return e;
}

}  // namespace

Expected<std::string> remove_file(const Root& root, std::string_view path) {
  auto e = open_parent(root, path);
  if (!e) return Error{"cannot remove " + e.error()};
  struct stat st {};
  if (::fstatat(e->dirfd.get(), e->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return Error{"cannot remove " + std::string(path) + ": " + errno_text(errno)};
  auto backup = backup_in_dir(root, e->dirfd.get(), e->name, path, st.st_mode & 07777);
  if (!backup) return Error{"cannot back up " + std::string(path) + ": " + backup.error()};
  if (::unlinkat(e->dirfd.get(), e->name.c_str(), 0) != 0 || ::fsync(e->dirfd.get()) != 0)
    return Error{"cannot remove " + std::string(path) + ": " + errno_text(errno)};
  spdlog::info("removed {}, backup {}", path, *backup);
  return e->host_dir + "/" + *backup;
}

Expected<std::string> rename_file(const Root& root, std::string_view from, std::string_view to) {
  if (parent_of(from) != parent_of(to)) return Error{"cannot rename " + std::string(from) + " to another directory"};
  auto e = open_parent(root, from);
  if (!e) return Error{"cannot rename " + e.error()};
  struct stat st {};
  if (::fstatat(e->dirfd.get(), e->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return Error{"cannot rename " + std::string(from) + ": " + errno_text(errno)};
  const std::string target = base_of(to);
  struct stat tst {};
  if (::fstatat(e->dirfd.get(), target.c_str(), &tst, AT_SYMLINK_NOFOLLOW) == 0) {
    auto kept = backup_in_dir(root, e->dirfd.get(), target, to, tst.st_mode & 07777);
    if (!kept) return Error{"cannot back up " + std::string(to) + ": " + kept.error()};
  }
  auto backup = backup_in_dir(root, e->dirfd.get(), e->name, from, st.st_mode & 07777);
  if (!backup) return Error{"cannot back up " + std::string(from) + ": " + backup.error()};
  if (::renameat(e->dirfd.get(), e->name.c_str(), e->dirfd.get(), target.c_str()) != 0 || ::fsync(e->dirfd.get()) != 0)
    return Error{"cannot rename " + std::string(from) + ": " + errno_text(errno)};
  spdlog::info("renamed {} to {}, backup {}", from, to, *backup);
  return e->host_dir + "/" + *backup;
}

Status SysfsWriter::write(const Root& root, const std::string& path, const std::string& value) {
  auto real = root.resolve(path);
  if (!real) return Error{real.error()};
  Fd fd(::open(real->c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return Error{"cannot write " + path + ": " + errno_text(errno)};
  if (auto s = write_all(fd.get(), value); !s)
    return Error{"cannot write '" + value + "' to " + path + ": " + s.error()};
  spdlog::info("wrote '{}' to {}", value, path);
  return {};
}

RunLock::RunLock(RunLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
RunLock& RunLock::operator=(RunLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}
RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<RunLock> RunLock::acquire(const Root& root, Mode mode, bool wait, void (*on_wait)(long)) {
  const std::string host_path = "/run/gptagent.lock";
  auto opened = open_own_file(root, host_path, mode == Mode::exclusive ? O_RDWR | O_CREAT : O_RDONLY);
  if (!opened) return Error{opened.error()};
  if (opened->get() < 0) return RunLock{};  // shared_if_exists: no lock file, no run holds it
  const std::string real = root.dir() == "/" ? host_path : root.dir() + host_path;
  const int fd = opened->release();
  RunLock lock(fd);
  const int op = mode == Mode::exclusive ? LOCK_EX : LOCK_SH;
  if (::flock(fd, op | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return Error{"cannot lock " + real + ": " + errno_text(errno)};
    char buf[32] = {};
    long pid = 0;
    if (::pread(fd, buf, sizeof buf - 1, 0) > 0) pid = std::strtol(buf, nullptr, 10);
    const std::string holder = pid > 0 ? "pid " + std::to_string(pid) : "another process";
    if (!wait) return Error{"another gptagent run (" + holder + ") holds the lock " + real};
    if (on_wait) on_wait(pid);
    while (::flock(fd, op) != 0) {
      if (errno != EINTR) return Error{"cannot lock " + real + ": " + errno_text(errno)};
    }
  }
  if (mode == Mode::exclusive) {
    std::string pid = std::to_string(::getpid()) + "\n";
    // Written over the old pid, then cut to its length: a waiting run reading it meanwhile never
    // sees an empty file (it said "pid 0"). The pid is only for messages; the flock excludes.
    if (::pwrite(fd, pid.data(), pid.size(), 0) < 0 || ::ftruncate(fd, static_cast<off_t>(pid.size())) != 0) {
    }
  }
  return lock;
}

}  // namespace gpt
