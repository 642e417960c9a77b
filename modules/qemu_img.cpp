// qemu_img: a disk image with the format, size and backing file asked for. qemu-img creates it and
// grows it when allow_grow says so; it is never shrunk, converted or recreated (each loses the
// guest's data), and an image a running VM holds is never touched. The image lives in the managed
// root and qemu-img writes nothing else, so it runs under --root too; check mode runs only the
// read-only `qemu-img info`.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>

#include "agent/declare.hpp"
#include "agent/diff.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

// `qemu-img info` reads a header: a minute means the storage under it is stuck.
constexpr std::chrono::seconds kInfoTimeout{60};

// "20G", "512MiB", "1t", "4096": bytes (gpt::parse_size), with what qemu-img adds to it.
Expected<uint64_t> image_size(const std::string& text) {
  auto n = parse_size(text);
  if (!n) return Error{n.error() + (ends_with(n.error(), "too large") ? " for a disk image" : "")};
  // qemu rounds sizes up to whole 512-byte sectors: the image could never match what was asked.
  if (*n % 512 != 0) return Error{"'" + text + "' is not a multiple of 512 bytes (qemu sizes images in sectors)"};
  return *n;
}

// The size as qemu-img's argument: "20G" where that is exact, else bytes.
std::string qemu_size(uint64_t v) {
  for (int shift = 50; shift >= 10; shift -= 10)
    if (v % (uint64_t{1} << shift) == 0) return std::to_string(v >> shift) + "PTGMK"[(50 - shift) / 10];
  return std::to_string(v);
}

// A running QEMU holds the image's "write" lock; qemu-img refuses to open it and says so.
bool lock_refused(const std::string& err) {
  return err.find("Is another process using the image") != std::string::npos ||
         (err.find("Failed to get") != std::string::npos && err.find("lock") != std::string::npos);
}

// A path qemu-img reported (real, under the root) as the managed host sees it.
std::string host_view(const Root& root, const std::string& real) {
  if (!root.sandboxed()) return real;
  const std::string& dir = root.dir();
  if (real.size() > dir.size() && real.compare(0, dir.size(), dir) == 0 && real[dir.size()] == '/')
    return real.substr(dir.size());
  return real;
}

struct ImageInfo {
  std::string format;
  uint64_t virtual_size = 0;
  std::string backing;         // the backing file as qemu resolved it (a real path); empty: none
  std::string backing_format;  // empty: not recorded in the image
  bool in_use = false;         // a running process holds its write lock
};

// A qemu-img command line, bounded in time (never a shell).
Command qemu_img(std::vector<std::string> args, std::chrono::seconds timeout) {
  Command cmd;
  cmd.argv = {"qemu-img"};
  cmd.argv.insert(cmd.argv.end(), args.begin(), args.end());
  cmd.timeout = timeout;
  return cmd;
}

// The image read as `format`, the one the playbook declares: a raw disk's first bytes are its
// guest's, and a qcow2 header a guest wrote there must not make it a qcow2 image (with a backing
// file of the guest's choosing) to qemu-img's probe. Only when the image is not that format at all
// is it probed, to say what it is instead (the task then refuses it).
Expected<ImageInfo> read_info(Exec& exec, const std::string& real, const std::string& shown,
                              const std::string& format) {
  const auto info_of = [&](std::vector<std::string> opts) {
    std::vector<std::string> args{"info"};
    args.insert(args.end(), opts.begin(), opts.end());
    args.insert(args.end(), {"--output=json", real});
    return exec.run(qemu_img(std::move(args), kInfoTimeout));
  };
  ExecResult res = info_of({"-f", format});
  ImageInfo info;
  if (!res.ok() && lock_refused(res.err)) {
    // -U (force share) reads the header of an image a VM is running on. What it says is reported
    // and compared, never acted on: the image stays the VM's until it stops.
    info.in_use = true;
    res = info_of({"-U", "-f", format});
  }
  if (!res.ok()) {
    ExecResult probed = info_of(info.in_use ? std::vector<std::string>{"-U"} : std::vector<std::string>{});
    const json j = probed.ok() ? json::parse(probed.out, nullptr, false) : json();
    if (j.is_object() && j.contains("format") && j["format"].is_string() && j["format"] != format) res = probed;
  }
  if (!res.ok()) return Error{"qemu-img info " + shown + " failed: " + res.failure(/*all_of_stderr=*/true)};
  try {
    const json j = json::parse(res.out);
    info.format = j.at("format").get<std::string>();
    // A float past 2^64 converted to uint64_t is undefined, a negative number wraps (fuzz_qemu_img_info).
    if (!j.at("virtual-size").is_number_unsigned())
      return Error{"cannot read the output of qemu-img info " + shown + ": virtual-size is not a number of bytes"};
    info.virtual_size = j.at("virtual-size").get<uint64_t>();
    if (j.contains("full-backing-filename")) {
      info.backing = j["full-backing-filename"].get<std::string>();
    } else if (j.contains("backing-filename")) {
      info.backing = j["backing-filename"].get<std::string>();
      // A relative backing file name is relative to the image's directory.
      if (!info.backing.empty() && info.backing[0] != '/')
        info.backing = real.substr(0, real.find_last_of('/') + 1) + info.backing;
    }
    info.backing_format = j.value("backing-filename-format", "");
  } catch (const json::exception& e) {
    return Error{"cannot read the output of qemu-img info " + shown + ": " + e.what()};
  }
  return info;
}

struct Args {
  std::string path;
  std::string format = "qcow2";
  std::optional<std::string> size;
  std::optional<std::string> backing;
  std::optional<std::string> backing_format;
  std::optional<std::string> preallocation;
  std::optional<std::string> owner;
  std::optional<std::string> group;
  std::optional<std::string> mode;
  bool allow_grow = false;
  long long timeout = 3600;  // full preallocation of a large raw image writes every byte: it can take long
};

Expected<FileAttrs> wanted_attrs(const Root& root, const Args& args) {
  FileAttrs a;
  if (args.owner) {
    auto id = lookup_id(root, *args.owner, false);
    if (!id) return Error{id.error()};
    a.uid = static_cast<uid_t>(*id);
  }
  if (args.group) {
    auto id = lookup_id(root, *args.group, true);
    if (!id) return Error{id.error()};
    a.gid = static_cast<gid_t>(*id);
  }
  if (args.mode) a.mode = static_cast<mode_t>(std::stoul(*args.mode, nullptr, 8));
  return a;
}

// What is at the image's name now, not followed if it is a symlink.
struct Entry {
  bool exists = false;
  struct stat st {};
};

Expected<Entry> look_at(const ParentDir& dir, const std::string& shown) {
  Entry e;
  if (dir.fd.get() < 0) return e;
  if (::fstatat(dir.fd.get(), dir.name.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) == 0) {
    e.exists = true;
    return e;
  }
  if (errno == ENOENT) return e;
  return Error{"cannot stat " + shown + ": " + std::strerror(errno)};
}

// Opens the image qemu-img just made or resized (O_PATH, never through a symlink) and checks it is
// that file: a regular file, the inode seen before (`before`) or, for a new one, ours with a single
// link. Anything else was put there by someone else meanwhile and gets no owner or mode from us.
Expected<UniqueFd> open_made(const ParentDir& dir, const std::string& shown, const struct stat* before) {
  UniqueFd fd(::openat(dir.fd.get(), dir.name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0)
    return Error{"cannot open " + shown + " again: " + std::strerror(errno)};
  if (S_ISLNK(st.st_mode))
    return Error{shown + " was replaced by a symlink meanwhile: its owner and mode were not set (nothing followed it)"};
  if (!S_ISREG(st.st_mode))
    return Error{shown +
                 " was replaced by something else than a regular file meanwhile: its owner and mode were not set"};
  const bool same = before ? st.st_dev == before->st_dev && st.st_ino == before->st_ino
                           : st.st_uid == ::geteuid() && st.st_nlink == 1;
  if (!same) return Error{shown + " was replaced by another file meanwhile: its owner and mode were not set"};
  return fd;
}

Status set_attrs_on_made(const ParentDir& dir, const std::string& shown, const FileAttrs& want,
                         const struct stat* before) {
  if (!want.uid && !want.gid && !want.mode) return {};
  auto fd = open_made(dir, shown, before);
  if (!fd) return Error{fd.error()};
  return set_attrs(fd->get(), shown, want);
}

// The image in one line, for messages.
std::string describe(const std::string& format, uint64_t size, const std::string& backing, const std::string& bfmt) {
  std::string out = format + ", " + size_text(size);
  if (!backing.empty()) out += ", backing " + backing + (bfmt.empty() ? "" : " (" + bfmt + ")");
  return out;
}

// What --diff shows of an image: its format, size and backing file, and the attributes the task names.
std::string state_text(const std::string& format, uint64_t size, const std::string& backing, const std::string& bfmt,
                       const std::optional<FileInfo>& file, const FileAttrs& want) {
  std::string out = "format: " + format + "\nvirtual size: " + size_text(size) + "\n";
  if (!backing.empty()) out += "backing: " + backing + (bfmt.empty() ? "" : " (" + bfmt + ")") + "\n";
  if (want.uid) out += "owner: " + std::to_string(file ? file->uid : *want.uid) + "\n";
  if (want.gid) out += "group: " + std::to_string(file ? file->gid : *want.gid) + "\n";
  if (want.mode) out += "mode: " + mode_text(file ? file->mode : *want.mode) + "\n";
  return out;
}

struct Wanted {
  std::string path, real;
  const ParentDir* dir = nullptr;  // the image's directory, opened; dir->fd is -1 when it is missing
  std::string format;
  std::optional<uint64_t> size;
  std::string backing, backing_real, backing_format;
  uint64_t backing_size = 0;
  std::string preallocation;
  bool allow_grow = false;
  std::chrono::seconds timeout{3600};
  FileAttrs attrs;
};

Result create(Context& ctx, const Wanted& w, bool apply) {
  if (w.dir->fd.get() < 0) {
    const std::string host_parent = w.path.substr(0, w.path.find_last_of('/'));
    return Result::failed("cannot create " + w.path + ": the directory " + (host_parent.empty() ? "/" : host_parent) +
                          " does not exist");
  }
  Command cmd = qemu_img({"create", "-f", w.format}, w.timeout);
  if (!w.backing.empty()) cmd.argv.insert(cmd.argv.end(), {"-b", w.backing_real, "-F", w.backing_format});
  if (!w.preallocation.empty()) cmd.argv.insert(cmd.argv.end(), {"-o", "preallocation=" + w.preallocation});
  cmd.argv.push_back(w.real);
  // Without a size qemu-img gives the overlay its backing file's.
  if (w.size) cmd.argv.push_back(qemu_size(*w.size));
  const uint64_t size = w.size ? *w.size : w.backing_size;

  std::string what = w.path + " (" + describe(w.format, size, w.backing, w.backing_format) +
                     (w.preallocation.empty() ? "" : ", preallocation " + w.preallocation) + ")";
  const auto attrs = attr_changes(nullptr, w.attrs);
  if (!attrs.empty()) what += " with " + join(attrs, ", ");
  Result r = Result::changed((apply ? "created " : "would create ") + what);
  r.commands.push_back(cmd.display());
  r.diff = unified_diff("", state_text(w.format, size, w.backing, w.backing_format, std::nullopt, w.attrs), "/dev/null",
                        w.path);
  r.data = {{"path", w.path},
            {"format", w.format},
            {"virtual_size", size},
            {"backing", w.backing.empty() ? json() : json(w.backing)},
            {"in_use", false}};
  if (!apply) return r;

  // qemu-img makes a name of its own beside the image, renamed to the image only once it exited 0:
  // a run interrupted or killed in a long full preallocation (or a full disk) never leaves half an
  // image that the next run would take for a finished one. A leftover of a killed run is replaced.
  const std::string part = "." + w.dir->name + ".gptagent-part";
  ::unlinkat(w.dir->fd.get(), part.c_str(), 0);
  Command making = cmd;
  const std::string part_real = (w.dir->real == "/" ? "" : w.dir->real) + "/" + part;
  *std::find(making.argv.begin(), making.argv.end(), w.real) = part_real;
  const ExecResult res = ctx.exec.run(making);
  if (!res.ok() || ::renameat(w.dir->fd.get(), part.c_str(), w.dir->fd.get(), w.dir->name.c_str()) != 0) {
    std::string why = res.ok() ? std::string("cannot rename it into place: ") + std::strerror(errno)
                               : res.failure(/*all_of_stderr=*/true);
    // qemu-img's words name the image the user asked for, not the name it was made under.
    for (size_t at; (at = why.find(part_real)) != std::string::npos;) why.replace(at, part_real.size(), w.real);
    struct stat st {};
    const bool partial = ::fstatat(w.dir->fd.get(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                         ::unlinkat(w.dir->fd.get(), part.c_str(), 0) == 0;
    Result f = Result::failed(cmd.display() + " failed: " + why +
                              (partial && !res.ok() ? "; the partial " + w.path + " was removed" : ""));
    f.commands = r.commands;
    return f;
  }
  if (auto s = set_attrs_on_made(*w.dir, w.path, w.attrs, nullptr); !s) {
    Result f = Result::failed("created " + w.path + ", but " + s.error());
    f.commands = r.commands;
    return f;
  }
  // What qemu-img made, for the report.
  auto made = read_info(ctx.exec, w.real, w.path, w.format);
  if (!made) {
    Result f = Result::failed("created " + w.path + ", but " + made.error());
    f.commands = r.commands;
    return f;
  }
  r.data["virtual_size"] = made->virtual_size;
  return r;
}

// Whether the backing file qemu recorded is the one asked for: the same file under the root,
// whether the image names it by its real path or by its path on the managed host.
bool same_backing(const Root& root, const std::string& recorded, const std::string& wanted_real) {
  if (recorded == wanted_real) return true;
  auto real = root.resolve(host_view(root, recorded));
  return real && *real == wanted_real;
}

Result update(Context& ctx, const Wanted& w, const FileInfo& file, const struct stat& seen, bool apply) {
  auto found = read_info(ctx.exec, w.real, w.path, w.format);
  if (!found) return Result::failed(found.error());
  const ImageInfo& info = *found;
  const std::string backing = info.backing.empty() ? "" : host_view(ctx.root, info.backing);
  const json data = {{"path", w.path},
                     {"format", info.format},
                     {"virtual_size", info.virtual_size},
                     {"backing", backing.empty() ? json() : json(backing)},
                     {"in_use", info.in_use}};
  auto refuse = [&](const std::string& why) {
    Result f = Result::failed(why);
    f.data = data;
    return f;
  };

  if (info.format != w.format)
    return refuse(w.path + " is a " + info.format + " image, not " + w.format +
                  ": it is not converted or recreated (qemu-img convert makes a copy in another format)");
  if (!w.backing.empty()) {
    if (info.backing.empty())
      return refuse(w.path + " has no backing file, not " + w.backing +
                    ": not changed (a backing file is chosen at creation)");
    if (!same_backing(ctx.root, info.backing, w.backing_real))
      return refuse(w.path + " is backed by " + backing + ", not " + w.backing + ": not changed");
    if (!info.backing_format.empty() && info.backing_format != w.backing_format)
      return refuse(w.path + " records its backing file's format as " + info.backing_format + ", not " +
                    w.backing_format + ": not changed");
  }
  // Without a size (an overlay made with its backing file's), the image keeps the size it has.
  std::optional<uint64_t> grow_to;
  if (w.size && *w.size < info.virtual_size)
    return refuse(w.path + " is " + size_text(info.virtual_size) + ", larger than the " + size_text(*w.size) +
                  " asked for: images are never shrunk (the guest's data at the end would be lost)");
  if (w.size && *w.size > info.virtual_size) grow_to = *w.size;
  const auto attrs = attr_changes(&file, w.attrs);

  const std::string now = describe(info.format, info.virtual_size, backing, info.backing_format);
  if (!grow_to && attrs.empty()) {
    Result r = Result::ok(w.path + ": " + now + (info.in_use ? "; in use by a running VM" : ""));
    r.data = data;
    return r;
  }
  std::vector<std::string> changes;
  if (grow_to) changes.push_back("grow from " + size_text(info.virtual_size) + " to " + size_text(*grow_to));
  changes.insert(changes.end(), attrs.begin(), attrs.end());
  if (grow_to && !w.allow_grow)
    return refuse(w.path + " would grow from " + size_text(info.virtual_size) + " to " + size_text(*grow_to) +
                  ": set allow_grow: true to let it grow (not changed)");
  if (info.in_use)
    return refuse(w.path + " is in use by a running VM: not touched (needed: " + join(changes, ", ") + ")");

  Command cmd = qemu_img({"resize"}, w.timeout);
  // A grown raw image keeps the allocation it was created with.
  if (w.format == "raw" && (w.preallocation == "falloc" || w.preallocation == "full"))
    cmd.argv.push_back("--preallocation=" + w.preallocation);
  cmd.argv.insert(cmd.argv.end(), {"-f", w.format, w.real});
  if (grow_to) cmd.argv.push_back(qemu_size(*grow_to));

  std::string msg;
  if (grow_to) {
    msg = (apply ? "grew " : "would grow ") + w.path + " from " + size_text(info.virtual_size) + " to " +
          size_text(*grow_to) + " (the guest's partitions are not resized)";
    if (!attrs.empty()) msg += ", and set " + join(attrs, ", ");
  } else {
    msg = (apply ? "set " : "would set ") + join(attrs, ", ") + " on " + w.path;
  }
  Result r = Result::changed(msg);
  r.data = data;
  if (grow_to) r.commands.push_back(cmd.display());
  r.diff = unified_diff(state_text(info.format, info.virtual_size, backing, info.backing_format, file, w.attrs),
                        state_text(info.format, grow_to ? *grow_to : info.virtual_size, backing, info.backing_format,
                                   std::nullopt, w.attrs),
                        w.path);
  if (!apply) return r;

  if (grow_to) {
    const ExecResult res = ctx.exec.run(cmd);
    if (!res.ok()) {
      Result f = Result::failed(cmd.display() + " failed: " + res.failure(/*all_of_stderr=*/true));
      f.data = data;
      f.commands = r.commands;
      return f;
    }
    r.data["virtual_size"] = *grow_to;
  }
  if (auto s = set_attrs_on_made(*w.dir, w.path, w.attrs, &seen); !s) {
    Result f = Result::failed(s.error());
    f.data = r.data;
    f.commands = r.commands;
    return f;
  }
  return r;
}

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  Wanted w;
  w.path = args.path;
  w.format = args.format;
  if (args.size) {
    auto size = image_size(*args.size);
    if (!size) return Result::failed("size " + size.error());
    w.size = *size;
  }
  w.backing = args.backing.value_or("");
  w.backing_format = args.backing_format.value_or("");
  w.preallocation = args.preallocation.value_or("");
  w.allow_grow = args.allow_grow;
  w.timeout = std::chrono::seconds(args.timeout);
  // The directory is resolved in the root; the image's own name never through a symlink.
  auto dir = open_dir_of(ctx.root, w.path);
  if (!dir) return Result::failed(dir.error());
  w.dir = &*dir;
  w.real = dir->real_path();
  auto attrs = wanted_attrs(ctx.root, args);
  if (!attrs) return Result::failed(attrs.error());
  w.attrs = *attrs;

  auto entry = look_at(*dir, w.path);
  if (!entry) return Result::failed(entry.error());
  if (entry->exists && S_ISLNK(entry->st.st_mode))
    return Result::failed(w.path +
                          " is a symlink: not touched (an image is managed at its own path, never through a link)");
  if (entry->exists && !S_ISREG(entry->st.st_mode))
    return Result::failed(w.path + " exists and is not a regular file: not touched");
  FileInfo file_info;
  file_info.exists = entry->exists;
  file_info.regular = entry->exists;
  file_info.mode = entry->st.st_mode & 07777;
  file_info.uid = entry->st.st_uid;
  file_info.gid = entry->st.st_gid;
  const FileInfo* file = &file_info;

  // The backing file first: a missing or different one fails before anything is created.
  if (!w.backing.empty()) {
    auto breal = ctx.root.resolve(w.backing);
    if (!breal) return Result::failed(breal.error());
    w.backing_real = *breal;
    auto bfile = stat_file(ctx.root, w.backing);
    if (!bfile) return Result::failed(bfile.error());
    if (!bfile->exists)
      return Result::failed("the backing file " + w.backing + " does not exist" +
                            (file->exists ? "" : ": " + w.path + " was not created"));
    auto binfo = read_info(ctx.exec, w.backing_real, w.backing, w.backing_format);
    if (!binfo) return Result::failed(binfo.error());
    if (binfo->format != w.backing_format)
      return Result::failed("the backing file " + w.backing + " is a " + binfo->format + " image, not " +
                            w.backing_format + " as backing_format says");
    w.backing_size = binfo->virtual_size;
  }
  return file->exists ? update(ctx, w, *file, entry->st, apply) : create(ctx, w, apply);
}

std::optional<std::string> absolute_file(const json& v) {
  const std::string p = v.get<std::string>();
  if (p.empty() || p[0] != '/') return "must be an absolute path, not '" + p + "'";
  if (p.back() == '/') return "must name a file, not a directory: '" + p + "'";
  return std::nullopt;
}

std::optional<std::string> id_name(const json& v) {
  const std::string s = v.get<std::string>();
  if (s.empty() || s.find_first_of(": \t\n") != std::string::npos) return "must be a name or a number, not '" + s + "'";
  return std::nullopt;
}

// What `gptagent doc qemu_img` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "A disk image made with the real qemu-img: path, format (qcow2, raw), size (100G, 512M...), backing with "
          "backing_format (qemu-img's -F, required), preallocation for raw (off, falloc, full), owner, group and "
          "mode.\n\n"
          "Decided from qemu-img info --output=json: a matching image is ok; a larger size grows it only with "
          "allow_grow: true; another format, another backing file or a smaller size fail and never recreate, "
          "convert or truncate; an image a running VM holds locked is reported and never touched.",
      .examples = {"# A 64 GiB qcow2 disk for a VM, owned by libvirt's QEMU user\n"
                   "- name: the VM's disk\n"
                   "  qemu_img:\n"
                   "    path: /var/lib/libvirt/images/win11.qcow2\n"
                   "    format: qcow2\n"
                   "    size: 64G\n"
                   "    owner: libvirt-qemu\n"
                   "    mode: \"0640\"\n",
                   "# An overlay on a base image, grown to 100 GiB if it is smaller\n"
                   "- qemu_img:\n"
                   "    path: /var/lib/libvirt/images/cuda.qcow2\n"
                   "    backing: /var/lib/libvirt/images/debian-12.qcow2\n"
                   "    backing_format: qcow2\n"
                   "    size: 100G\n"
                   "    allow_grow: true\n"},
  };
}

const Registration registration{
    declare_module(
        "qemu_img", "a disk image with this format, size and backing file (qemu-img; grown on request, never shrunk)",
        ArgsDecl<Args>()
            .arg("path", &Args::path, "the image file (absolute; never followed if it is a symlink)",
                 {.required = true, .check = absolute_file, .example = "/var/lib/libvirt/images/win11.qcow2"})
            .arg("format", &Args::format, "the image format", {.choices = {"qcow2", "raw"}})
            .arg("size", &Args::size,
                 "the virtual size, as qemu-img takes it (20G, 512MiB, 4096 for bytes); required unless backing is "
                 "given",
                 {.check = [](const json& v) -> std::optional<std::string> {
                    auto size = image_size(v.get<std::string>());
                    if (!size) return size.error();
                    return std::nullopt;
                  },
                  .example = "64G"})
            .arg("backing", &Args::backing, "a backing file the qcow2 image is an overlay of (absolute)",
                 {.check = absolute_file})
            .arg("backing_format", &Args::backing_format,
                 "the backing file's format (qemu-img -F), required with backing",
                 {.check = [](const json& v) -> std::optional<std::string> {
                   const std::string s = v.get<std::string>();
                   if (s.empty() || s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos)
                     return "must be a qemu image format such as qcow2 or raw, not '" + s + "'";
                   return std::nullopt;
                 }})
            .arg("preallocation", &Args::preallocation, "how a new raw image's space is allocated",
                 {.choices = {"off", "falloc", "full"}})
            .arg("owner", &Args::owner, "the image's owner (a user name or number)", {.check = id_name})
            .arg("group", &Args::group, "the image's group (a group name or number)", {.check = id_name})
            .arg("mode", &Args::mode, "the image's mode, in octal",
                 {.check = [](const json& v) -> std::optional<std::string> {
                    const std::string s = v.get<std::string>();
                    if (s.size() < 3 || s.size() > 4 || s.find_first_not_of("01234567") != std::string::npos)
                      return "must be an octal mode such as \"0640\", not '" + s + "'";
                    return std::nullopt;
                  },
                  .example = "0640"})
            .arg("allow_grow", &Args::allow_grow,
                 "grow an existing image that is smaller than size (it is never shrunk)")
            .arg("timeout", &Args::timeout,
                 "seconds qemu-img may take (full preallocation of a large raw image writes every byte)",
                 {.check = [](const json& v) -> std::optional<std::string> {
                   if (v.get<long long>() <= 0) return "must be a number of seconds above 0";
                   return std::nullopt;
                 }})
            .check([](const Args& a) -> std::optional<std::string> {
              const bool backing = a.backing.has_value();
              if (backing && a.format != "qcow2") return "backing is for qcow2 images only, not " + a.format;
              if (backing && !a.backing_format)
                return "backing_format is required with backing: qemu-img needs -F to know the backing file's format";
              if (!backing && a.backing_format) return "backing_format is only for an image with a backing file";
              if (a.preallocation && a.format != "raw") return "preallocation is for raw images only, not " + a.format;
              if (!a.size && !backing) return "size is required unless backing is given";
              return std::nullopt;
            }),
        converge),
    docs()};

}  // namespace
}  // namespace gpt
