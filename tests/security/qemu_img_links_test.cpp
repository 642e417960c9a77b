// Issue 20, item 2: qemu_img sets an image's owner and mode on the file it made, never through a
// symlink another user swaps in. The attacker is a real process of uid 12345 that owns the image
// directory and watches it with inotify; the real qemu-img runs.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "agent/exec.hpp"
#include "tests/support/qemu_img_run.hpp"

namespace gpt {
namespace {

using test::Images;
using test::make_image;
using test::Ran;
using test::refused;
using test::run;
using test::task;

// Another user (uid 12345) who owns the image's directory and watches it with inotify. When qemu-img
// has written the image (IN_CLOSE_WRITE) and exited, it renames a symlink to `target` over it: the
// window between the tool and the agent's chown/chmod. The exit is the gate the test opens from
// the Exec boundary, so the attacker wins that race every time instead of now and then.
class DirOwner {
 public:
  static constexpr uid_t kUid = 12345;

  DirOwner(const std::string& dir, const std::string& name, const std::string& target) {
    const std::string image = dir + "/" + name, staged = dir + "/.swap";
    int ready[2], gate[2], done[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(gate, O_CLOEXEC) != 0 || ::pipe2(done, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only system calls from here: the test process has threads.
      if (::setgroups(0, nullptr) != 0 || ::setresgid(kUid, kUid, kUid) != 0 || ::setresuid(kUid, kUid, kUid) != 0)
        ::_exit(2);
      const int in = ::inotify_init1(IN_CLOEXEC);
      if (in < 0 || ::inotify_add_watch(in, dir.c_str(), IN_CLOSE_WRITE) < 0) ::_exit(3);
      if (::write(ready[1], "r", 1) != 1) ::_exit(4);
      alignas(struct inotify_event) char buf[4096];
      for (bool written = false; !written;) {
        struct pollfd p {
          in, POLLIN, 0
        };
        if (::poll(&p, 1, 60000) != 1) ::_exit(5);
        const ssize_t n = ::read(in, buf, sizeof buf);
        for (ssize_t off = 0; n > 0 && off < n;) {
          const auto* ev = reinterpret_cast<const struct inotify_event*>(buf + off);
          if (ev->len > 0 && std::strcmp(ev->name, name.c_str()) == 0) written = true;
          off += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
        }
      }
      char go;
      if (::read(gate[0], &go, 1) != 1) ::_exit(6);
      if (::symlink(target.c_str(), staged.c_str()) != 0 || ::rename(staged.c_str(), image.c_str()) != 0) ::_exit(7);
      if (::write(done[1], "s", 1) != 1) ::_exit(8);
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(gate[0]);
    ::close(done[1]);
    gate_ = gate[1];
    done_ = done[0];
    char c;
    ready_ = ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
  }
  ~DirOwner() {
    if (gate_ >= 0) ::close(gate_);
    if (done_ >= 0) ::close(done_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  DirOwner(const DirOwner&) = delete;
  DirOwner& operator=(const DirOwner&) = delete;

  bool ready() const { return ready_; }
  // Lets the swap happen and waits for it; false when the attacker could not make it.
  bool swap_now() {
    char c = 'g';
    if (gate_ < 0 || ::write(gate_, &c, 1) != 1) return false;
    swapped_ = ::read(done_, &c, 1) == 1;
    return swapped_;
  }
  bool swapped() const { return swapped_; }

 private:
  pid_t pid_ = -1;
  int gate_ = -1, done_ = -1;
  bool ready_ = false, swapped_ = false;
};

// The real qemu-img, and the attacker's swap the moment `qemu-img create` or `resize` has exited.
class SwapAfterTool final : public Exec {
 public:
  explicit SwapAfterTool(DirOwner& owner) : owner_(owner) {}
  ExecResult run(const Command& cmd) override {
    ExecResult res = real_.run(cmd);
    if (cmd.argv.size() > 1 && (cmd.argv[1] == "create" || cmd.argv[1] == "resize")) owner_.swap_now();
    return res;
  }

 private:
  ProcessExec real_;
  DirOwner& owner_;
};

// A root-only file, and an image directory that belongs to another user.
struct SharedImages {
  Images h;
  std::string secret = h.file("/secret");
  SharedImages() {
    EXPECT_EQ(::chmod(h.root.path().c_str(), 0755), 0);
    EXPECT_EQ(::chown(h.file("/images").c_str(), DirOwner::kUid, DirOwner::kUid), 0);
    test::write(secret, "root only\n", 0600);
  }
  void expect_secret_untouched() const {
    struct stat st {};
    ASSERT_EQ(::stat(secret.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(st.st_gid, 0u);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(test::slurp(secret), "root only\n");
  }
};

TEST(QemuImgLinks, ASymlinkSwappedInAfterCreateGetsNoOwnerOrMode) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user and to chown";
  SharedImages s;
  // qemu-img creates the image under a name of the agent's, renamed to vm.qcow2 once it exited 0:
  // that name is the one swapped, and the symlink is what the rename then moves into place.
  DirOwner attacker(s.h.file("/images"), ".vm.qcow2.gptagent-part", s.secret);
  ASSERT_TRUE(attacker.ready()) << "could not start a process as uid " << DirOwner::kUid;
  SwapAfterTool exec(attacker);
  Ran r = run(s.h.root, task("path: /images/vm.qcow2, size: 1G, owner: \"12345\", mode: \"0660\""), false, &exec);
  ASSERT_TRUE(attacker.swapped()) << "the attack did not happen";
  EXPECT_EQ(r.result().status, Outcome::failed) << r.result().msg;
  EXPECT_EQ(r.result().msg,
            "created /images/vm.qcow2, but /images/vm.qcow2 was replaced by a symlink meanwhile: its owner and mode "
            "were not set (nothing followed it)");
  s.expect_secret_untouched();
}

TEST(QemuImgLinks, ASymlinkSwappedInAfterResizeGetsNoOwnerOrMode) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user and to chown";
  SharedImages s;
  make_image(s.h.file("/images/vm.qcow2"), "qcow2", "1G");
  DirOwner attacker(s.h.file("/images"), "vm.qcow2", s.secret);
  ASSERT_TRUE(attacker.ready()) << "could not start a process as uid " << DirOwner::kUid;
  SwapAfterTool exec(attacker);
  Ran r = run(s.h.root, task("path: /images/vm.qcow2, size: 2G, allow_grow: true, owner: \"12345\", mode: \"0660\""),
              false, &exec);
  ASSERT_TRUE(attacker.swapped()) << "the attack did not happen";
  EXPECT_EQ(r.result().status, Outcome::failed) << r.result().msg;
  EXPECT_EQ(
      r.result().msg,
      "/images/vm.qcow2 was replaced by a symlink meanwhile: its owner and mode were not set (nothing followed it)");
  s.expect_secret_untouched();
}

TEST(QemuImgLinks, AnImagePathThatIsASymlinkIsRefused) {
  Images h;
  test::write(h.file("/secret"), "root only\n", 0600);
  ASSERT_EQ(::symlink("/secret", h.file("/images/vm.qcow2").c_str()), 0);
  auto r = refused(h.root, task("path: /images/vm.qcow2, size: 1G, mode: \"0666\""));
  EXPECT_EQ(r.msg,
            "/images/vm.qcow2 is a symlink: not touched (an image is managed at its own path, never through a link)");
  // Dangling: qemu-img would have created the image wherever the link points.
  ASSERT_EQ(::symlink("/images/elsewhere.qcow2", h.file("/images/new.qcow2").c_str()), 0);
  auto dangling = refused(h.root, task("path: /images/new.qcow2, size: 1G"));
  EXPECT_EQ(dangling.msg,
            "/images/new.qcow2 is a symlink: not touched (an image is managed at its own path, never through a link)");
  EXPECT_FALSE(test::exists(h.file("/images/elsewhere.qcow2")));
}

}  // namespace
}  // namespace gpt
