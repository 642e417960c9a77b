// Sizes as playbooks write them ("16G", "512MiB") and as messages show them.
#include "agent/text.hpp"

#include <gtest/gtest.h>

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

TEST(ShellSplit, WordsAsShlexSplitsThem) {
  auto w = shell_split("-o 'ProxyJump a b' -o\tUser=\"x y\" a\\ b #c", false);
  ASSERT_TRUE(w.ok());
  std::vector<std::string> texts;
  for (const auto& x : *w) texts.push_back(x.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"-o", "ProxyJump a b", "-o", "User=x y", "a b", "#c"}));
  EXPECT_TRUE((*w)[1].quoted);
  EXPECT_FALSE((*w)[0].quoted);
  auto commented = shell_split("host a=1 # note", true);
  ASSERT_TRUE(commented.ok());
  EXPECT_EQ(commented->size(), 2u);
  EXPECT_EQ(shell_split("-o 'open", false).error(), "no closing quotation");
  EXPECT_EQ(shell_split("trailing\\", false).error(), "no escaped character after '\\'");
}

}  // namespace
}  // namespace gpt
