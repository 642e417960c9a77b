// Issue 20, item 3: `facts --capture DIR` makes DIR anew (0700) and writes only inside it: a name
// another user planted beforehand, as a link to a directory of root's or a dangling one, is refused
// and nothing is written through it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;

// --capture makes its directory anew: a name another user set up beforehand, as a symlink to a
// directory of root's or to one that does not exist yet, is refused and nothing is written there.
TEST(FactsCaptureLinks, APlantedSymlinkIsRefusedAndNothingIsWrittenThroughIt) {
  test::SampleHost host;
  test::TempDir place;
  const std::string victim = place / "root-only";
  ::mkdir(victim.c_str(), 0700);
  ASSERT_EQ(::symlink(victim.c_str(), (place / "c").c_str()), 0);
  auto r = test::run_agent({"facts", "--root", host.root(), "--capture", place / "c"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(r.err.find("--capture " + (place / "c") + " already exists: name a new directory") != std::string::npos)
      << r.err;
  EXPECT_TRUE(fs::is_empty(victim)) << "--capture wrote through the planted link";
  // Dangling: the link would have made the directory wherever it points.
  ASSERT_EQ(::symlink((place / "made-there").c_str(), (place / "d").c_str()), 0);
  auto dangling = test::run_agent({"facts", "--root", host.root(), "--capture", place / "d"});
  EXPECT_EQ(dangling.exit_code, 1) << dangling.out << dangling.err;
  EXPECT_FALSE(test::exists(place / "made-there")) << "--capture followed the dangling link";
  // A new name is made 0700 and filled.
  auto fresh = test::run_agent({"facts", "--root", host.root(), "--capture", place / "new"});
  EXPECT_EQ(fresh.exit_code, 0) << fresh.out << fresh.err;
  struct stat st {};
  ASSERT_EQ(::lstat((place / "new").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_TRUE(test::exists(place / "new/proc/cmdline"));
}

}  // namespace
}  // namespace gpt
