// Sizes as playbooks write them ("16G", "512MiB") and as messages show them.
#include <gtest/gtest.h>

#include "agent/text.hpp"

namespace gpt {
namespace {

TEST(Sizes, ParseAsQemuAndLibvirtUsersWriteThem) {
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("16G"), 16ull << 30);
  EXPECT_EQ(*parse_size("16GiB"), 16ull << 30);
  EXPECT_EQ(*parse_size("512mb"), 512ull << 20);
  EXPECT_EQ(*parse_size("1T"), 1ull << 40);
  EXPECT_EQ(*parse_size("100 G"), 100ull << 30);
  EXPECT_EQ(*parse_size("4096B"), 4096u);
  EXPECT_EQ(parse_size("12X").error(), "must be a size such as 20G, 512M, 1T or 4096 (bytes), not '12X'");
  EXPECT_FALSE(parse_size("-5G").ok());
  EXPECT_FALSE(parse_size("G").ok());
  EXPECT_FALSE(parse_size("4096iB").ok());
  EXPECT_FALSE(parse_size("1.5G").ok());
  EXPECT_EQ(parse_size("0G").error(), "must be larger than 0, not '0G'");
  EXPECT_EQ(parse_size("9999999P").error(), "'9999999P' is too large");
  EXPECT_EQ(parse_size("99999999999999999999").error(), "'99999999999999999999' is too large");
}

TEST(Sizes, ShowWholeUnitsOrTheExactBytes) {
  EXPECT_EQ(size_text(16ull << 30), "16 GiB");
  EXPECT_EQ(size_text(512), "512 bytes");
  EXPECT_EQ(size_text(1536ull << 20), "1.5 GiB (1610612736 bytes)");
  EXPECT_EQ(size_text(1ull << 40), "1 TiB");
}

}  // namespace
}  // namespace gpt
