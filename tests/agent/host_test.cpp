#include "agent/host.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using test::TempDir;

TEST(Root, ResolvesPathsUnderTheRoot) {
  TempDir d;
  Root root(d.path());
  EXPECT_EQ(*root.resolve("/etc/default/grub"), d.path() + "/etc/default/grub");
  EXPECT_EQ(*root.resolve("/"), d.path());
  EXPECT_FALSE(root.resolve("etc/relative").ok());
  Root real("/");
  EXPECT_EQ(*real.resolve("/etc/../etc/hostname"), "/etc/hostname");
  EXPECT_FALSE(real.sandboxed());
  EXPECT_TRUE(root.sandboxed());
}

TEST(Root, DotDotCannotLeaveTheRoot) {
  TempDir d;
  Root root(d.path());
  EXPECT_EQ(*root.resolve("/../../etc/passwd"), d.path() + "/etc/passwd");
  EXPECT_EQ(*root.resolve("/a/../../../b"), d.path() + "/b");
}

TEST(Root, SymlinksResolveInsideTheRoot) {
  TempDir d;
  test::write(d / "etc/default/grub.real", "x");
  ::symlink("/etc/default/grub.real", (d / "etc/default/grub").c_str());  // absolute: means the root's /etc
  ::symlink("../../../../../../etc/passwd", (d / "etc/escape").c_str());  // relative, climbing out
  ::symlink("/etc", (d / "etclink").c_str());
  ::symlink("loop2", (d / "loop1").c_str());
  ::symlink("loop1", (d / "loop2").c_str());
  Root root(d.path());
  EXPECT_EQ(*root.resolve("/etc/default/grub"), d.path() + "/etc/default/grub.real");
  EXPECT_EQ(*root.resolve("/etc/escape"), d.path() + "/etc/passwd");
  EXPECT_EQ(*root.resolve("/etclink/default/grub"), d.path() + "/etc/default/grub.real");
  EXPECT_FALSE(root.resolve("/loop1").ok());
  // Reading through the escaping link reads the root's file, never the host's /etc/passwd.
  auto r = read_file(root, "/etc/escape");
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error().find("/etc/escape"), std::string::npos);
}

TEST(Files, ReadFailuresSayWhatAndWhere) {
  TempDir d;
  Root root(d.path());
  auto missing = read_file(root, "/etc/default/grub");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error(), "cannot read /etc/default/grub: No such file or directory");
  ::mkdir((d / "etc").c_str(), 0755);
  ::mkdir((d / "etc/dir").c_str(), 0755);
  EXPECT_EQ(read_file(root, "/etc/dir").error(), "cannot read /etc/dir: it is a directory");
  test::write(d / "etc/big", std::string(100, 'x'));
  EXPECT_NE(read_file(root, "/etc/big", 10).error().find("larger than 10 bytes"), std::string::npos);
  auto absent = read_file_if_exists(root, "/etc/none");
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->has_value());
}

TEST(Files, AtomicWriteKeepsModeOwnerAndABackup) {
  TempDir d;
  const std::string f = d / "etc/default/grub";
  test::write(f, "old\n", 0640);
  ASSERT_EQ(::chown(f.c_str(), 1234, 4321), 0);
  Root root(d.path());
  auto w = write_file_atomic(root, "/etc/default/grub", "new\n");
  ASSERT_TRUE(w.ok()) << w.error();
  EXPECT_EQ(test::slurp(f), "new\n");
  struct stat st {};
  ASSERT_EQ(::stat(f.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 4321u);
  ASSERT_TRUE(w->backup_path.has_value());
  EXPECT_EQ(w->backup_path->rfind("/etc/default/grub.gptagent-", 0), 0u) << *w->backup_path;
  EXPECT_EQ(test::slurp(d.path() + *w->backup_path), "old\n");
  // Nothing else is left in the directory: the temp file was renamed into place.
  auto snap = test::snapshot(d / "etc/default");
  EXPECT_EQ(snap.size(), 2u);
}

TEST(Files, SecondBackupInTheSameSecondGetsItsOwnName) {
  TempDir d;
  test::write(d / "f", "1");
  Root root(d.path());
  auto a = write_file_atomic(root, "/f", "2");
  auto b = write_file_atomic(root, "/f", "3");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a->backup_path, *b->backup_path);
  EXPECT_EQ(test::slurp(d.path() + *a->backup_path), "1");
  EXPECT_EQ(test::slurp(d.path() + *b->backup_path), "2");
}

TEST(Files, NewFilesGetParentsAndTheCreateMode) {
  TempDir d;
  Root root(d.path());
  auto w = write_file_atomic(root, "/etc/modprobe.d/vfio.conf", "x\n");
  ASSERT_TRUE(w.ok()) << w.error();
  EXPECT_FALSE(w->backup_path.has_value());
  struct stat st {};
  ASSERT_EQ(::stat((d / "etc/modprobe.d/vfio.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
}

TEST(Files, WriteThroughASymlinkStaysInTheRoot) {
  TempDir d;
  TempDir outside;
  test::write(outside / "target", "outside\n");
  ::mkdir((d / "etc").c_str(), 0755);
  ::symlink((outside / "target").c_str(), (d / "etc/link").c_str());  // absolute: read as under the root
  Root root(d.path());
  auto w = write_file_atomic(root, "/etc/link", "inside\n");
  ASSERT_TRUE(w.ok()) << w.error();
  EXPECT_EQ(test::slurp(outside / "target"), "outside\n");
  EXPECT_EQ(test::slurp(d.path() + outside.path() + "/target"), "inside\n");
}

TEST(Files, StaleTempFileFromAKilledRunIsReplaced) {
  TempDir d;
  test::write(d / "etc/.grub.gptagent-tmp", "half");
  test::write(d / "etc/grub", "old");
  Root root(d.path());
  ASSERT_TRUE(write_file_atomic(root, "/etc/grub", "new", {.backup = false}).ok());
  EXPECT_FALSE(test::exists(d / "etc/.grub.gptagent-tmp"));
  EXPECT_EQ(test::slurp(d / "etc/grub"), "new");
}

TEST(Lock, SecondRunFailsAtOnceNamingTheHolder) {
  TempDir d;
  Root root(d.path());
  auto first = RunLock::acquire(root, RunLock::Mode::exclusive, false);
  ASSERT_TRUE(first.ok()) << first.error();
  auto second = RunLock::acquire(root, RunLock::Mode::exclusive, false);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().find("pid " + std::to_string(::getpid())), std::string::npos) << second.error();
  auto check = RunLock::acquire(root, RunLock::Mode::shared_if_exists, false);
  EXPECT_FALSE(check.ok());  // a check waits for a writer too
  first = RunLock{};
  EXPECT_TRUE(RunLock::acquire(root, RunLock::Mode::exclusive, false).ok());
}

TEST(Lock, CheckModeCreatesNoLockFile) {
  TempDir d;
  Root root(d.path());
  auto lock = RunLock::acquire(root, RunLock::Mode::shared_if_exists, false);
  ASSERT_TRUE(lock.ok());
  EXPECT_FALSE(lock->held());
  EXPECT_FALSE(test::exists(d / "run/gptagent.lock"));
}

}  // namespace
}  // namespace gpt
