// The file layer manages a declared owner, group and mode as properties of the file (issue 22,
// item 5): right content and another mode is a change of its own, shown in the diff and made
// through a descriptor, and nothing else of the file is touched.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/changes.hpp"
#include "agent/host.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using test::TempDir;
using json = nlohmann::json;

struct stat stat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

ino_t inode_of(const std::string& path) { return stat_of(path).st_ino; }

const FileAttrs kHook{.uid = 0, .gid = 0, .mode = 0755};

TEST(FileAttrs, RightContentWrongModeIsAChangeOfItsOwnMadeInPlace) {
  TempDir d;
  Root root(d.path());
  test::write(d / "etc/libvirt/hooks/qemu", "#!/bin/sh\nexit 0\n");
  ::chmod((d / "etc/libvirt/hooks/qemu").c_str(), 0644);
  const ino_t before = inode_of(d / "etc/libvirt/hooks/qemu");

  FileChanges plan(root);
  ASSERT_TRUE(plan.write("/etc/libvirt/hooks/qemu", "#!/bin/sh\nexit 0\n", kHook).ok());
  ASSERT_FALSE(plan.empty());
  EXPECT_EQ(plan.diff(), "/etc/libvirt/hooks/qemu: mode 0644 → 0755\n");
  json data;
  ASSERT_TRUE(plan.apply(data).ok());
  EXPECT_EQ(stat_of(d / "etc/libvirt/hooks/qemu").st_mode & 07777, 0755u);
  EXPECT_EQ(inode_of(d / "etc/libvirt/hooks/qemu"), before) << "the content was right: the file is not rewritten";
  EXPECT_FALSE(data.contains("backups")) << "nothing of its content changed: no backup";
  EXPECT_EQ(test::slurp(d / "etc/libvirt/hooks/qemu"), "#!/bin/sh\nexit 0\n");

  FileChanges again(root);
  ASSERT_TRUE(again.write("/etc/libvirt/hooks/qemu", "#!/bin/sh\nexit 0\n", kHook).ok());
  EXPECT_TRUE(again.empty()) << again.diff();
}

TEST(FileAttrs, AnotherOwnerIsTakenBackAndAnUndeclaredOneIsLeft) {
  TempDir d;
  Root root(d.path());
  test::write(d / "etc/unit.conf", "a\n");
  ASSERT_EQ(::chown((d / "etc/unit.conf").c_str(), 12345, 12345), 0);
  ::chmod((d / "etc/unit.conf").c_str(), 0600);

  FileChanges owner_only(root);
  ASSERT_TRUE(owner_only.write("/etc/unit.conf", "a\n", FileAttrs{.uid = 0}).ok());
  EXPECT_EQ(owner_only.diff(), "/etc/unit.conf: owner 12345 → 0\n");
  json data;
  ASSERT_TRUE(owner_only.apply(data).ok());
  auto st = stat_of(d / "etc/unit.conf");
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 12345u) << "the group was not declared: it stays";
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "the mode was not declared: it stays";
}

TEST(FileAttrs, NewContentAndAnotherModeAreOneWriteWithBothInTheDiff) {
  TempDir d;
  Root root(d.path());
  test::write(d / "etc/libvirt/hooks/qemu", "old\n");
  ::chmod((d / "etc/libvirt/hooks/qemu").c_str(), 0600);
  FileChanges plan(root);
  ASSERT_TRUE(plan.write("/etc/libvirt/hooks/qemu", "new\n", kHook).ok());
  const std::string diff = plan.diff();
  EXPECT_NE(diff.find("-old\n+new\n"), std::string::npos) << diff;
  EXPECT_NE(diff.find("/etc/libvirt/hooks/qemu: mode 0600 → 0755\n"), std::string::npos) << diff;
  json data;
  ASSERT_TRUE(plan.apply(data).ok());
  EXPECT_EQ(test::slurp(d / "etc/libvirt/hooks/qemu"), "new\n");
  EXPECT_EQ(stat_of(d / "etc/libvirt/hooks/qemu").st_mode & 07777, 0755u);
  ASSERT_TRUE(data["backups"].contains("/etc/libvirt/hooks/qemu"));
  const std::string backup = d.path() + data["backups"]["/etc/libvirt/hooks/qemu"].get<std::string>();
  EXPECT_EQ(test::slurp(backup), "old\n");
}

TEST(FileAttrs, ANewFileIsCreatedWithTheDeclaredAttributes) {
  TempDir d;
  Root root(d.path());
  FileChanges plan(root);
  ASSERT_TRUE(
      plan.write("/etc/libvirt/hooks/qemu", "#!/bin/sh\n", FileAttrs{.uid = 0, .gid = 12345, .mode = 0750}).ok());
  EXPECT_NE(plan.diff().find("/etc/libvirt/hooks/qemu: group 12345\n"), std::string::npos) << plan.diff();
  EXPECT_NE(plan.diff().find("/etc/libvirt/hooks/qemu: mode 0750\n"), std::string::npos) << plan.diff();
  json data;
  ASSERT_TRUE(plan.apply(data).ok());
  auto st = stat_of(d / "etc/libvirt/hooks/qemu");
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_gid, 12345u);
  EXPECT_EQ(st.st_uid, 0u);
}

// A symlink swapped in at the name between the plan and its application (to a root-only file of
// this machine) is resolved inside the root, as a write through it would be: the file outside
// keeps its mode, and the task fails naming the path.
TEST(FileAttrs, ASymlinkSwappedInBeforeTheChangeNeverReachesOutsideTheRoot) {
  TempDir d, outside;
  Root root(d.path());
  test::write(d / "etc/libvirt/hooks/qemu", "x\n");
  ::chmod((d / "etc/libvirt/hooks/qemu").c_str(), 0644);
  test::write(outside / "secret", "root only\n");
  ::chmod((outside / "secret").c_str(), 0600);
  FileChanges plan(root);
  ASSERT_TRUE(plan.write("/etc/libvirt/hooks/qemu", "x\n", kHook).ok());
  ASSERT_EQ(::unlink((d / "etc/libvirt/hooks/qemu").c_str()), 0);
  ASSERT_EQ(::symlink((outside / "secret").c_str(), (d / "etc/libvirt/hooks/qemu").c_str()), 0);
  json data;
  auto s = plan.apply(data);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().find("/etc/libvirt/hooks/qemu"), std::string::npos) << s.error();
  EXPECT_EQ(stat_of(outside / "secret").st_mode & 07777, 0600u);
  EXPECT_EQ(test::slurp(outside / "secret"), "root only\n");
}

// What is at the resolved name is never followed: a symlink there (a FIFO, a directory) gets no
// owner or mode.
TEST(FileAttrs, OnlyARegularFileAtTheResolvedNameIsChanged) {
  TempDir d;
  Root root(d.path());
  ASSERT_EQ(::mkdir((d / "etc").c_str(), 0755), 0);
  ASSERT_EQ(::mkfifo((d / "etc/fifo").c_str(), 0600), 0);
  auto s = set_file_attrs(root, "/etc/fifo", kHook);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().find("not a regular file"), std::string::npos) << s.error();
  EXPECT_EQ(stat_of(d / "etc/fifo").st_mode & 07777, 0600u);
  test::write(d / "etc/hook", "x\n");
  ::chmod((d / "etc/hook").c_str(), 0600);
  ASSERT_TRUE(set_file_attrs(root, "/etc/hook", kHook).ok());
  EXPECT_EQ(stat_of(d / "etc/hook").st_mode & 07777, 0755u);
}

TEST(FileAttrs, UsersAndGroupsAreReadFromTheRootsOwnFiles) {
  TempDir d;
  Root root(d.path());
  test::write(
      d / "etc/passwd",
      "root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:108:Libvirt Qemu:/nonexistent:/usr/sbin/nologin\n");
  test::write(d / "etc/group", "root:x:0:\nkvm:x:104:libvirt-qemu\n");
  EXPECT_EQ(*lookup_id(root, "libvirt-qemu", false), 64055u);
  EXPECT_EQ(*lookup_id(root, "kvm", true), 104u);
  EXPECT_EQ(*lookup_id(root, "4242", true), 4242u);
  auto missing = lookup_id(root, "qemu", false);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("no user named 'qemu' in /etc/passwd"), std::string::npos) << missing.error();
  EXPECT_FALSE(lookup_id(root, "99999999999", false).ok());
}

}  // namespace
}  // namespace gpt
