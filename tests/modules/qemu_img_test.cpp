// qemu_img against the real qemu-img, on images in a temporary root: what it creates, grows and
// refuses is read back with `qemu-img info` and stat(2).
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/facts.hpp"
#include "agent/playbook.hpp"
#include "agent/runner.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/qemu_img_run.hpp"
#include "tests/support/sandbox.hpp"

extern char** environ;

namespace gpt {
namespace {

using test::Collect;
using test::Images;
using test::make_image;
using test::qemu_img;
using test::Ran;
using test::refused;
using test::run;
using test::task;
using test::TempDir;
using test::tool;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

// Check mode predicts the change and touches nothing; apply makes it, the same way; a second
// apply finds nothing to do.
Ran twice(const TempDir& root, const std::string& yaml) {
  const auto before = test::snapshot(root.path());
  Ran check = run(root, yaml, true);
  EXPECT_TRUE(check.load_errors.empty()) << check.load_errors.front();
  if (check.tasks.empty()) return check;
  EXPECT_EQ(check.result().status, Outcome::changed) << check.result().msg;
  EXPECT_EQ(check.result().msg.rfind("would ", 0), 0u) << check.result().msg;
  EXPECT_EQ(test::snapshot(root.path()), before) << "check mode changed the tree";
  Ran first = run(root, yaml, false);
  EXPECT_EQ(first.result().status, Outcome::changed) << first.result().msg;
  EXPECT_EQ(first.stats.changed, 1);
  EXPECT_EQ(first.result().commands, check.result().commands);
  EXPECT_EQ(first.result().diff, check.result().diff);
  Ran second = run(root, yaml, false);
  EXPECT_EQ(second.result().status, Outcome::ok) << second.result().msg;
  EXPECT_TRUE(second.result().commands.empty());
  Ran again = run(root, yaml, true);
  EXPECT_EQ(again.result().status, Outcome::ok) << again.result().msg;
  return first;
}

nlohmann::json info(const std::string& image) {
  auto r = qemu_img({"info", "-U", "--output=json", image});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
}

uint64_t allocated_bytes(const std::string& file) {
  struct stat st {};
  EXPECT_EQ(::stat(file.c_str(), &st), 0) << file;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(QemuImg, CreatesAQcow2ImageThenIsOk) {
  Images h;
  auto r = twice(h.root, task("path: /images/vm.qcow2, size: 20G"));
  EXPECT_EQ(r.result().commands,
            std::vector<std::string>{"qemu-img create -f qcow2 " + h.file("/images/vm.qcow2") + " 20G"});
  EXPECT_EQ(r.result().msg, "created /images/vm.qcow2 (qcow2, 20 GiB)");
  EXPECT_EQ(r.result().data["path"], "/images/vm.qcow2");
  EXPECT_EQ(r.result().data["format"], "qcow2");
  EXPECT_EQ(r.result().data["virtual_size"], 20 * kGiB);
  EXPECT_TRUE(r.result().data["backing"].is_null());
  auto i = info(h.file("/images/vm.qcow2"));
  EXPECT_EQ(i["format"], "qcow2");
  EXPECT_EQ(i["virtual-size"], 20 * kGiB);
  EXPECT_EQ(run(h.root, task("path: /images/vm.qcow2, size: 20GiB"), false).result().msg,
            "/images/vm.qcow2: qcow2, 20 GiB");
}

TEST(QemuImg, SizesTakeEverySuffixAndCase) {
  Images h;
  twice(h.root, task("path: /images/a.qcow2, size: 512m"));
  EXPECT_EQ(info(h.file("/images/a.qcow2"))["virtual-size"], 512 * kMiB);
  twice(h.root, task("path: /images/b.qcow2, size: 1t"));
  EXPECT_EQ(info(h.file("/images/b.qcow2"))["virtual-size"], uint64_t{1} << 40);
  twice(h.root, task("path: /images/c.qcow2, size: 4096"));
  EXPECT_EQ(info(h.file("/images/c.qcow2"))["virtual-size"], 4096u);
  twice(h.root, task("path: /images/d.raw, format: raw, size: 1536KiB"));
  EXPECT_EQ(info(h.file("/images/d.raw"))["virtual-size"], 1536u * 1024);
  EXPECT_EQ(run(h.root, task("path: /images/d.raw, format: raw, size: 1536kb"), false).result().msg,
            "/images/d.raw: raw, 1.5 MiB (1572864 bytes)");
}

TEST(QemuImg, CreatesAnOverlayWithItsBackingFilesSize) {
  Images h;
  make_image(h.file("/images/base.qcow2"), "qcow2", "30G");
  auto r = twice(h.root, task("path: /images/overlay.qcow2, backing: /images/base.qcow2, backing_format: qcow2"));
  EXPECT_EQ(r.result().commands[0], "qemu-img create -f qcow2 -b " + h.file("/images/base.qcow2") + " -F qcow2 " +
                                        h.file("/images/overlay.qcow2"));
  EXPECT_EQ(r.result().data["backing"], "/images/base.qcow2");
  auto i = info(h.file("/images/overlay.qcow2"));
  EXPECT_EQ(i["format"], "qcow2");
  EXPECT_EQ(i["virtual-size"], 30 * kGiB);
  EXPECT_EQ(i["backing-filename"], h.file("/images/base.qcow2"));
  EXPECT_EQ(i["backing-filename-format"], "qcow2");
  auto ok = run(h.root, task("path: /images/overlay.qcow2, backing: /images/base.qcow2, backing_format: qcow2"), false);
  EXPECT_EQ(ok.result().msg, "/images/overlay.qcow2: qcow2, 30 GiB, backing /images/base.qcow2 (qcow2)");
}

TEST(QemuImg, HonoursTheBackingFormatOfARawBackingFile) {
  Images h;
  make_image(h.file("/images/base.raw"), "raw", "16M");
  twice(h.root, task("path: /images/overlay.qcow2, size: 64G, backing: /images/base.raw, backing_format: raw"));
  auto i = info(h.file("/images/overlay.qcow2"));
  EXPECT_EQ(i["virtual-size"], 64 * kGiB);
  EXPECT_EQ(i["backing-filename"], h.file("/images/base.raw"));
  EXPECT_EQ(i["backing-filename-format"], "raw");
  // The backing file is not of the format the task says: nothing is created.
  auto r =
      refused(h.root, task("path: /images/other.qcow2, size: 64G, backing: /images/base.raw, backing_format: qcow2"));
  EXPECT_EQ(r.msg, "the backing file /images/base.raw is a raw image, not qcow2 as backing_format says");
  EXPECT_FALSE(test::exists(h.file("/images/other.qcow2")));
}

TEST(QemuImg, AMissingBackingFileFailsAndCreatesNothing) {
  Images h;
  auto r = refused(h.root, task("path: /images/overlay.qcow2, backing: /images/missing.qcow2, backing_format: qcow2"));
  EXPECT_EQ(r.msg, "the backing file /images/missing.qcow2 does not exist: /images/overlay.qcow2 was not created");
  EXPECT_FALSE(test::exists(h.file("/images/overlay.qcow2")));
}

TEST(QemuImg, RefusesAnotherBackingFile) {
  Images h;
  make_image(h.file("/images/a.qcow2"), "qcow2", "10G");
  make_image(h.file("/images/b.qcow2"), "qcow2", "10G");
  make_image(h.file("/images/overlay.qcow2"), "qcow2", "", {"-b", h.file("/images/a.qcow2"), "-F", "qcow2"});
  auto r = refused(h.root, task("path: /images/overlay.qcow2, backing: /images/b.qcow2, backing_format: qcow2"));
  EXPECT_EQ(r.msg, "/images/overlay.qcow2 is backed by /images/a.qcow2, not /images/b.qcow2: not changed");
  EXPECT_EQ(r.data["backing"], "/images/a.qcow2");
  auto standalone = refused(h.root, task("path: /images/a.qcow2, backing: /images/b.qcow2, backing_format: qcow2"));
  EXPECT_TRUE(has(standalone.msg, "/images/a.qcow2 has no backing file, not /images/b.qcow2")) << standalone.msg;
  EXPECT_EQ(info(h.file("/images/overlay.qcow2"))["backing-filename"], h.file("/images/a.qcow2"));
}

TEST(QemuImg, RawWithFullPreallocationAllocatesEveryBlock) {
  Images h;
  auto r = twice(h.root, task("path: /images/disk.raw, format: raw, size: 8M, preallocation: full"));
  EXPECT_EQ(r.result().commands[0],
            "qemu-img create -f raw -o preallocation=full " + h.file("/images/disk.raw") + " 8M");
  EXPECT_EQ(info(h.file("/images/disk.raw"))["format"], "raw");
  EXPECT_GE(allocated_bytes(h.file("/images/disk.raw")), 8 * kMiB);
  // Without preallocation the same image is sparse: the measure above means something.
  twice(h.root, task("path: /images/sparse.raw, format: raw, size: 8M"));
  EXPECT_LT(allocated_bytes(h.file("/images/sparse.raw")), 8 * kMiB);
}

TEST(QemuImg, RawWithFallocPreallocationAllocatesEveryBlock) {
  Images h;
  auto r = twice(h.root, task("path: /images/disk.raw, format: raw, size: 8M, preallocation: falloc"));
  EXPECT_EQ(r.result().commands[0],
            "qemu-img create -f raw -o preallocation=falloc " + h.file("/images/disk.raw") + " 8M");
  EXPECT_GE(allocated_bytes(h.file("/images/disk.raw")), 8 * kMiB);
}

TEST(QemuImg, GrowsWithAllowGrowThenIsOk) {
  Images h;
  make_image(h.file("/images/vm.qcow2"), "qcow2", "10G");
  auto r = twice(h.root, task("path: /images/vm.qcow2, size: 20G, allow_grow: true"));
  EXPECT_EQ(r.result().commands,
            std::vector<std::string>{"qemu-img resize -f qcow2 " + h.file("/images/vm.qcow2") + " 20G"});
  EXPECT_EQ(r.result().msg, "grew /images/vm.qcow2 from 10 GiB to 20 GiB (the guest's partitions are not resized)");
  EXPECT_EQ(r.result().data["virtual_size"], 20 * kGiB);
  EXPECT_EQ(info(h.file("/images/vm.qcow2"))["virtual-size"], 20 * kGiB);
}

TEST(QemuImg, GrowsARawImageWithItsPreallocation) {
  Images h;
  twice(h.root, task("path: /images/disk.raw, format: raw, size: 8M, preallocation: full"));
  auto r = twice(h.root, task("path: /images/disk.raw, format: raw, size: 16M, preallocation: full, allow_grow: true"));
  EXPECT_EQ(r.result().commands[0],
            "qemu-img resize --preallocation=full -f raw " + h.file("/images/disk.raw") + " 16M");
  EXPECT_EQ(info(h.file("/images/disk.raw"))["virtual-size"], 16 * kMiB);
  EXPECT_GE(allocated_bytes(h.file("/images/disk.raw")), 16 * kMiB);
}

TEST(QemuImg, GrowingWithoutAllowGrowFailsAndLeavesTheImage) {
  Images h;
  make_image(h.file("/images/vm.qcow2"), "qcow2", "10G");
  auto r = refused(h.root, task("path: /images/vm.qcow2, size: 20G"));
  EXPECT_EQ(r.msg,
            "/images/vm.qcow2 would grow from 10 GiB to 20 GiB: set allow_grow: true to let it grow (not changed)");
  EXPECT_EQ(r.data["virtual_size"], 10 * kGiB);
  EXPECT_EQ(info(h.file("/images/vm.qcow2"))["virtual-size"], 10 * kGiB);
}

TEST(QemuImg, NeverShrinks) {
  Images h;
  make_image(h.file("/images/vm.qcow2"), "qcow2", "20G");
  auto r = refused(h.root, task("path: /images/vm.qcow2, size: 10G, allow_grow: true"));
  EXPECT_EQ(r.msg,
            "/images/vm.qcow2 is 20 GiB, larger than the 10 GiB asked for: images are never shrunk "
            "(the guest's data at the end would be lost)");
  EXPECT_EQ(info(h.file("/images/vm.qcow2"))["virtual-size"], 20 * kGiB);
}

TEST(QemuImg, NeverConvertsAnotherFormat) {
  Images h;
  make_image(h.file("/images/vm.img"), "raw", "8M");
  auto r = refused(h.root, task("path: /images/vm.img, size: 8M"));
  EXPECT_EQ(r.msg,
            "/images/vm.img is a raw image, not qcow2: it is not converted or recreated "
            "(qemu-img convert makes a copy in another format)");
  EXPECT_EQ(r.data["format"], "raw");
  EXPECT_EQ(info(h.file("/images/vm.img"))["format"], "raw");
}

TEST(QemuImg, AMissingDirectoryFailsInCheckModeToo) {
  Images h;
  auto r = refused(h.root, task("path: /var/lib/libvirt/images/vm.qcow2, size: 20G"));
  EXPECT_EQ(r.msg,
            "cannot create /var/lib/libvirt/images/vm.qcow2: the directory /var/lib/libvirt/images does not exist");
}

TEST(QemuImg, AFailedCreateReportsQemuImgsErrorAndLeavesNothing) {
  Images h;
  // Valid for the schema, too large for qcow2 with its default cluster size: only qemu-img knows.
  const std::string yaml = task("path: /images/huge.qcow2, size: 8000P");
  EXPECT_EQ(run(h.root, yaml, true).result().status, Outcome::changed);
  auto r = run(h.root, yaml, false);
  EXPECT_EQ(r.result().status, Outcome::failed);
  EXPECT_EQ(r.result().msg,
            "qemu-img create -f qcow2 " + h.file("/images/huge.qcow2") +
                " 8000P failed: exit code 1: qemu-img: " + h.file("/images/huge.qcow2") +
                ": The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  EXPECT_EQ(r.result().commands.size(), 1u);
  EXPECT_FALSE(test::exists(h.file("/images/huge.qcow2")));
}

TEST(QemuImg, MalformedSizesAreSchemaErrors) {
  Images h;
  const std::string where = "play.yaml:2:45: qemu_img argument 'size': ";
  EXPECT_EQ(run(h.root, task("path: /images/a.qcow2, size: 12X"), false).load_errors,
            std::vector<std::string>{where + "must be a size such as 20G, 512M, 1T or 4096 (bytes), not '12X'"});
  EXPECT_EQ(run(h.root, task("path: /images/a.qcow2, size: -5G"), false).load_errors,
            std::vector<std::string>{where + "must be a size such as 20G, 512M, 1T or 4096 (bytes), not '-5G'"});
  EXPECT_EQ(run(h.root, task("path: /images/a.qcow2, size: abc"), false).load_errors,
            std::vector<std::string>{where + "must be a size such as 20G, 512M, 1T or 4096 (bytes), not 'abc'"});
  EXPECT_EQ(run(h.root, task("path: /images/a.qcow2, size: 1000"), false).load_errors,
            std::vector<std::string>{where + "'1000' is not a multiple of 512 bytes (qemu sizes images in sectors)"});
  EXPECT_EQ(run(h.root, task("path: /images/a.qcow2, size: 0G"), false).load_errors,
            std::vector<std::string>{where + "must be larger than 0, not '0G'"});
  EXPECT_EQ(run(h.root, task("path: /images/a.qcow2, size: 9999999P"), false).load_errors,
            std::vector<std::string>{where + "'9999999P' is too large for a disk image"});
  EXPECT_EQ(run(h.root, task("path: /images/a.qcow2, size: 20GiBs"), false).load_errors.size(), 1u);
  EXPECT_EQ(run(h.root, task("path: /images/a.qcow2, size: 4096iB"), false).load_errors.size(), 1u);
  EXPECT_EQ(test::snapshot(h.root.path()).size(), 1u);  // the images directory alone
}

TEST(QemuImg, ArgumentCombinationsAreCheckedByTheSchema) {
  Images h;
  auto error = [&](const std::string& args) {
    auto r = run(h.root, task(args), false);
    EXPECT_TRUE(r.tasks.empty());
    return r.load_errors.size() == 1 ? r.load_errors[0] : "errors: " + std::to_string(r.load_errors.size());
  };
  EXPECT_EQ(error("path: /images/o.qcow2, backing: /images/base.qcow2"),
            "play.yaml:2:5: qemu_img: backing_format is required with backing: qemu-img needs -F to know the backing "
            "file's format");
  EXPECT_EQ(error("path: /images/o.qcow2, size: 1G, preallocation: full"),
            "play.yaml:2:5: qemu_img: preallocation is for raw images only, not qcow2");
  EXPECT_EQ(error("path: /images/o.raw, format: raw, backing: /images/b.raw, backing_format: raw"),
            "play.yaml:2:5: qemu_img: backing is for qcow2 images only, not raw");
  EXPECT_EQ(error("path: /images/o.qcow2"), "play.yaml:2:5: qemu_img: size is required unless backing is given");
  EXPECT_EQ(error("path: /images/o.qcow2, size: 1G, backing_format: qcow2"),
            "play.yaml:2:5: qemu_img: backing_format is only for an image with a backing file");
  EXPECT_EQ(error("path: images/o.qcow2, size: 1G"),
            "play.yaml:2:22: qemu_img argument 'path': must be an absolute path, not 'images/o.qcow2'");
  EXPECT_EQ(error("path: /images/o.qcow2, size: 1G, mode: rw"),
            "play.yaml:2:55: qemu_img argument 'mode': must be an octal mode such as \"0640\", not 'rw'");
  EXPECT_EQ(error("path: /images/o.raw, format: vmdk, size: 1G"),
            "play.yaml:2:45: qemu_img argument 'format' must be one of qcow2, raw, not 'vmdk'");
}

TEST(QemuImg, ModeIsAppliedAndCorrected) {
  Images h;
  const std::string img = h.file("/images/vm.qcow2");
  auto r = twice(h.root, task("path: /images/vm.qcow2, size: 1G, mode: \"0640\""));
  EXPECT_EQ(r.result().msg, "created /images/vm.qcow2 (qcow2, 1 GiB) with mode 0640");
  struct stat st {};
  ASSERT_EQ(::stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  // Someone loosened it: corrected, with nothing run.
  ::chmod(img.c_str(), 0666);
  auto fix = twice(h.root, task("path: /images/vm.qcow2, size: 1G, mode: 0640"));
  EXPECT_EQ(fix.result().msg, "set mode 0666 → 0640 on /images/vm.qcow2");
  EXPECT_TRUE(fix.result().commands.empty());
  ASSERT_EQ(::stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST(QemuImg, OwnerAndGroupByNameFromTheRootsFiles) {
  if (::geteuid() != 0) GTEST_SKIP() << "changing a file's owner needs root";
  Images h;
  test::write(h.root / "etc/passwd",
              "root:x:0:0:root:/root:/bin/bash\n"
              "libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n");
  test::write(h.root / "etc/group", "root:x:0:\nkvm:x:108:\nlibvirt-qemu:x:64055:libvirt-qemu\n");
  const std::string img = h.file("/images/vm.qcow2");
  const std::string yaml = task("path: /images/vm.qcow2, size: 1G, owner: libvirt-qemu, group: kvm, mode: \"0600\"");
  auto r = twice(h.root, yaml);
  EXPECT_EQ(r.result().msg, "created /images/vm.qcow2 (qcow2, 1 GiB) with owner 64055, group 108, mode 0600");
  struct stat st {};
  ASSERT_EQ(::stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 64055u);
  EXPECT_EQ(st.st_gid, 108u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::chown(img.c_str(), 0, 0), 0);
  auto fix = twice(h.root, yaml);
  EXPECT_EQ(fix.result().msg, "set owner 0 → 64055, group 0 → 108 on /images/vm.qcow2");
  ASSERT_EQ(::stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 64055u);
  EXPECT_EQ(st.st_gid, 108u);
  // Numbers need no passwd entry.
  twice(h.root, task("path: /images/vm.qcow2, size: 1G, owner: \"1234\""));
  ASSERT_EQ(::stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
}

TEST(QemuImg, AnUnknownOwnerFailsBeforeAnythingIsCreated) {
  Images h;
  test::write(h.root / "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
  auto r = refused(h.root, task("path: /images/vm.qcow2, size: 1G, owner: libvirt-qemu"));
  EXPECT_EQ(r.msg, "no user named 'libvirt-qemu' in /etc/passwd under " + Root(h.root.path()).dir());
}

// A paused QEMU with the image open, as libvirt runs a VM: it holds the image's write lock.
class RunningVm {
 public:
  explicit RunningVm(const std::string& image) {
    const std::string qemu = tool("qemu-system-x86_64");
    std::vector<std::string> args = {qemu,          "-machine", "none",
                                     "-nodefaults", "-display", "none",
                                     "-S",          "-drive",   "file=" + image + ",if=none,id=d0,format=qcow2"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    for (int fd = 0; fd <= 2; ++fd)
      posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
    if (posix_spawn(&pid_, qemu.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~RunningVm() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  RunningVm(const RunningVm&) = delete;
  RunningVm& operator=(const RunningVm&) = delete;

  // Waits until qemu-img (without -U) is refused the image, as a VM's lock makes it.
  bool holds_lock(const std::string& image) {
    for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
         std::chrono::steady_clock::now() < until;) {
      if (pid_ <= 0 || ::waitpid(pid_, nullptr, WNOHANG) != 0) return false;
      auto r = qemu_img({"info", "--output=json", image});
      if (r.exit_code != 0 && has(r.err, "lock")) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  pid_t pid_ = -1;
};

TEST(QemuImg, AnImageInUseIsReportedAndNeverTouched) {
  Images h;
  const std::string img = h.file("/images/vm.qcow2");
  make_image(img, "qcow2", "10G");
  ::chmod(img.c_str(), 0644);
  RunningVm vm(img);
  ASSERT_TRUE(vm.holds_lock(img)) << "qemu-system-x86_64 did not lock " << img;

  Ran ok = run(h.root, task("path: /images/vm.qcow2, size: 10G"), false);
  EXPECT_EQ(ok.result().status, Outcome::ok) << ok.result().msg;
  EXPECT_EQ(ok.result().msg, "/images/vm.qcow2: qcow2, 10 GiB; in use by a running VM");
  EXPECT_EQ(ok.result().data["in_use"], true);

  auto grow = refused(h.root, task("path: /images/vm.qcow2, size: 20G, allow_grow: true"));
  EXPECT_EQ(grow.msg, "/images/vm.qcow2 is in use by a running VM: not touched (needed: grow from 10 GiB to 20 GiB)");
  auto mode = refused(h.root, task("path: /images/vm.qcow2, size: 10G, mode: \"0600\""));
  EXPECT_EQ(mode.msg, "/images/vm.qcow2 is in use by a running VM: not touched (needed: mode 0644 → 0600)");
  // What is refused for any image is refused for one in use too, with its own reason.
  auto shrink = refused(h.root, task("path: /images/vm.qcow2, size: 5G"));
  EXPECT_TRUE(has(shrink.msg, "never shrunk")) << shrink.msg;
  EXPECT_EQ(info(img)["virtual-size"], 10 * kGiB);
}

TEST(QemuImg, AFailedQemuImgReportsItsExitCodeAndStderr) {
  Images h;
  // A directory where the image should be: qemu-img is never asked to touch it.
  ::mkdir(h.file("/images/vm.qcow2").c_str(), 0755);
  auto dir = refused(h.root, task("path: /images/vm.qcow2, size: 1G"));
  EXPECT_EQ(dir.msg, "/images/vm.qcow2 exists and is not a regular file: not touched");
  // A qcow2 header qemu-img cannot open (version 3, cluster size 2^0).
  test::write(h.file("/images/broken.qcow2"), std::string("QFI\xfb\0\0\0\3", 8) + std::string(120, '\0'));
  auto broken = refused(h.root, task("path: /images/broken.qcow2, size: 1G"));
  EXPECT_TRUE(has(broken.msg, "qemu-img info /images/broken.qcow2 failed: exit code 1: qemu-img: Could not open "))
      << broken.msg;
}

}  // namespace
}  // namespace gpt
