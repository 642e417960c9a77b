// Backups made in the same second each get a name of their own: the 100th never replaces the 99th
// (issue 20, nits).
#include <gtest/gtest.h>

#include <filesystem>

#include "agent/host.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

TEST(BackupNames, TheHundredthBackupInOneSecondReplacesNoOther) {
  test::TempDir root;
  test::write(root / "etc/app.conf", "current\n");
  // Retried if the second turns while the 99 backups of this second are laid out.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const std::string stamp = backup_name("/etc/app.conf");
    std::vector<std::string> taken{stamp};
    for (int i = 2; i < 100; ++i) taken.push_back(stamp + "-" + std::to_string(i));
    for (size_t i = 0; i < taken.size(); ++i) test::write(root.path() + taken[i], "backup " + std::to_string(i) + "\n");
    auto w = write_file_atomic(Root(root.path()), "/etc/app.conf", "next\n");
    ASSERT_TRUE(w.ok()) << w.error();
    if (backup_name("/etc/app.conf") != stamp || !w->backup_path->starts_with(stamp)) {
      for (const auto& t : taken) std::filesystem::remove(root.path() + t);
      test::write(root / "etc/app.conf", "current\n");
      continue;
    }
    EXPECT_EQ(*w->backup_path, stamp + "-100");
    EXPECT_EQ(test::slurp(root.path() + *w->backup_path), "current\n");
    for (size_t i = 0; i < taken.size(); ++i)
      EXPECT_EQ(test::slurp(root.path() + taken[i]), "backup " + std::to_string(i) + "\n")
          << taken[i] << " was replaced";
    return;
  }
  FAIL() << "the second turned in every attempt";
}

}  // namespace
}  // namespace gpt
