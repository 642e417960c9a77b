// Issue 24 item 2, and the principles of issue 20: the ssh control sockets a fleet run keeps for
// the next run (as Ansible's ~/.ansible/cp) open a shell on each host to whoever can connect to
// them. Their directory is made private, and one that another user could enter, write above, or
// swap for a link is refused before any host is touched.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tests/support/fleet_lab.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::has;
using test::Lab;

constexpr uid_t kOther = 12345;  // a user of this machine who is not the one running the fleet

struct Refusal {
  const char* what;
  std::string dir;      // ANSIBLE_SSH_CONTROL_PATH_DIR
  std::string message;  // in what the run says
};

TEST(ControlDir, MissingDirectoriesAreMadePrivate) {
  Lab lab(1);
  const std::string dir = lab.files / "a/b/cp";
  auto r = test::run_agent({"apply", lab.playbook, "-i", lab.inventory, "--color", "never"},
                           {"ANSIBLE_SSH_CONTROL_PATH_DIR=" + dir});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const std::string& d : {lab.files / "a", lab.files / "a/b", dir}) {
    struct stat st {};
    ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << d;
  }
  EXPECT_EQ(test::unexpected_control_entries(dir, 1), "");
  test::close_ssh_masters(dir);
}

TEST(ControlDir, ADirectoryAnotherUserCouldUseIsRefusedBeforeAnyHostIsTouched) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  Lab lab(1);
  const std::string open = lab.files / "open", theirs = lab.files / "theirs", shared = lab.files / "shared",
                    link = lab.files / "link", target = lab.files / "target";
  fs::create_directories(open);
  ::chmod(open.c_str(), 0755);
  fs::create_directories(theirs);
  ::chmod(theirs.c_str(), 0700);
  ASSERT_EQ(::chown(theirs.c_str(), kOther, kOther), 0);
  fs::create_directories(shared + "/cp");
  ::chmod(shared.c_str(), 0777);  // anyone may rename cp away and put their own in its place
  ::chmod((shared + "/cp").c_str(), 0700);
  fs::create_directories(target);
  ::chmod(target.c_str(), 0700);
  fs::create_symlink(target, link);
  const std::vector<Refusal> cases = {
      {"others may enter it", open, "must belong to uid 0 alone (it belongs to uid 0, mode 0755; chmod 700)"},
      {"another user's", theirs, "must belong to uid 0 alone (it belongs to uid 12345, mode 0700; chmod 700)"},
      {"below a directory others may write", shared + "/cp",
       shared + " above it belongs to another user or may be written by others"},
      {"a symbolic link", link, "it is a symbolic link"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto r = test::run_agent({"apply", lab.playbook, "-i", lab.inventory, "--color", "never"},
                             {"ANSIBLE_SSH_CONTROL_PATH_DIR=" + c.dir});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_TRUE(has(r.err, "gptagent: refusing the ssh control sockets' directory " + c.dir + ": ")) << r.err;
    EXPECT_TRUE(has(r.err, c.message)) << r.err;
    EXPECT_TRUE(has(r.err, ", no host was touched")) << r.err;
    EXPECT_FALSE(fs::exists(lab.nodes[0].remote_dir)) << "the host was reached";
    EXPECT_FALSE(has(lab.grub(0), "intel_iommu=on"));
  }
  // Nothing was made or changed in the refused directories, nor through the link.
  EXPECT_TRUE(fs::is_empty(open));
  EXPECT_TRUE(fs::is_empty(target));
  EXPECT_TRUE(fs::is_empty(shared + "/cp"));
}

TEST(ControlDir, ASocketPathTooLongForSshIsRefusedWithTheWayOut) {
  Lab lab(1);
  const std::string dir = lab.files / std::string(100, 'd');
  auto r = test::run_agent({"apply", lab.playbook, "-i", lab.inventory, "--color", "never"},
                           {"ANSIBLE_SSH_CONTROL_PATH_DIR=" + dir});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "host gpu01: the ssh control socket " + dir + "/gptagent-")) << r.err;
  EXPECT_TRUE(has(r.err, "set ANSIBLE_SSH_CONTROL_PATH_DIR to a shorter directory")) << r.err;
  EXPECT_FALSE(fs::exists(lab.nodes[0].remote_dir));
}

}  // namespace
}  // namespace gpt
