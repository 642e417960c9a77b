#include <gtest/gtest.h>

#include "agent/diff.hpp"
#include "agent/facts.hpp"
#include "agent/template.hpp"

namespace gpt {
namespace {

using json = nlohmann::json;

TEST(Facts, ParsesCpuinfoVendorsAndFlags) {
  auto intel = parse_cpuinfo(
      "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu vmx "
      "sse\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: other\n");
  EXPECT_EQ(intel.vendor, "intel");
  EXPECT_EQ(intel.model_name, "Intel(R) Xeon(R)");
  EXPECT_TRUE(intel.has_flag("vmx"));
  EXPECT_FALSE(intel.has_flag("other"));  // flags of the first processor
  EXPECT_EQ(parse_cpuinfo("vendor_id : AuthenticAMD\nflags : svm\n").vendor, "amd");
  EXPECT_EQ(parse_cpuinfo("vendor_id : HygonGenuine\n").vendor, "amd");
  EXPECT_EQ(parse_cpuinfo("processor : 0\nBogoMIPS : 48.00\nCPU implementer : 0x41\n").vendor, "unknown");
  EXPECT_EQ(parse_cpuinfo("").vendor, "unknown");
  EXPECT_EQ(parse_cpuinfo(std::string("\0\xff garbage :::\n", 15)).vendor, "unknown");
}

TEST(Facts, ParsesOsRelease) {
  auto os = parse_os_release(
      "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\nPRETTY_NAME=\"Fedora Linux 40 (Server Edition)\"\n# c\n");
  EXPECT_EQ(os.id, "fedora");
  EXPECT_EQ(os.version_id, "40");
  EXPECT_EQ(os.pretty_name, "Fedora Linux 40 (Server Edition)");
  auto ub = parse_os_release("ID=ubuntu\nID_LIKE=debian\n");
  EXPECT_EQ(ub.id_like, (std::vector<std::string>{"debian"}));
  EXPECT_EQ(parse_os_release("ID_LIKE='rhel centos fedora'\n").id_like.size(), 3u);
}

TEST(Facts, SplitsTheCommandLineLikeTheKernel) {
  EXPECT_EQ(parse_cmdline("BOOT_IMAGE=/vmlinuz ro  quiet dyndbg=\"file x.c +p\"\n"),
            (std::vector<std::string>{"BOOT_IMAGE=/vmlinuz", "ro", "quiet", "dyndbg=\"file x.c +p\""}));
  EXPECT_EQ(param_name("vfio-pci.ids=10de:1b80"), "vfio_pci.ids");
  EXPECT_EQ(param_name("quiet"), "quiet");
}

TEST(Template, RendersNamesAndKeepsTypes) {
  VarScope s({{"vm", "win10"}, {"n", 8}, {"list", {1, 2}}, {"nested", {{"a", {{"b", "deep"}}}}}}, {{"n", 9}},
             {{"cpu_vendor", "amd"}});
  EXPECT_EQ(*s.render("{{ vm }}.qcow2"), "win10.qcow2");
  EXPECT_EQ(*s.render("{{n}}"), 9);
  EXPECT_EQ(*s.render("x{{ n }}"), "x9");
  EXPECT_EQ(*s.render("{{ list }}"), json({1, 2}));
  EXPECT_EQ(*s.render("{{ nested.a.b }}/{{ facts.cpu_vendor }}/{{ list.1 }}"), "deep/amd/2");
  EXPECT_EQ(*s.render(json{{"k", {"{{ vm }}"}}}), (json{{"k", {"win10"}}}));
  EXPECT_FALSE(s.render("{{ vm ").ok());
  EXPECT_FALSE(s.render("a {{ list }} b").ok());
  EXPECT_EQ(s.render("{{ facts.nope }}").error(), "undefined variable 'facts.nope'");
}

TEST(Template, EvaluatesWhenExpressions) {
  VarScope s({{"n", 3}, {"name", "win10"}, {"gpus", {"0000:01:00.0"}}, {"off", false}}, json::object(),
             {{"cpu_vendor", "intel"}});
  auto t = [&](const char* e) {
    auto v = s.eval(e);
    EXPECT_TRUE(v.ok()) << e << ": " << v.error();
    return v.ok() && *v;
  };
  EXPECT_TRUE(t("facts.cpu_vendor == 'intel'"));
  EXPECT_TRUE(t("n >= 3 and n < 4"));
  EXPECT_TRUE(t("not off"));
  EXPECT_TRUE(t("'0000:01:00.0' in gpus"));
  EXPECT_TRUE(t("name not in ['linux', \"bsd\"]"));
  EXPECT_TRUE(t("(n == 1 or n == 3) and name != 'x'"));
  EXPECT_TRUE(t("undefined_thing is not defined"));
  EXPECT_FALSE(t("n is not defined"));
  EXPECT_TRUE(t("'win' in name"));
  EXPECT_FALSE(s.eval("n > 'a'").ok());
  EXPECT_FALSE(s.eval("n ==").ok());
  EXPECT_FALSE(s.eval("nope").ok());
  EXPECT_FALSE(s.eval("n == 3 extra").ok());
  EXPECT_FALSE(s.eval("{{ n }} == 3").ok());
}

TEST(Diff, UnifiedDiffWithContext) {
  EXPECT_EQ(unified_diff("a\nb\n", "a\nb\n", "/f"), "");
  EXPECT_EQ(unified_diff("1\n2\n3\n4\n5\n", "1\n2\nthree\n4\n5\n", "/etc/f"),
            "--- /etc/f (before)\n+++ /etc/f (after)\n@@ -1,5 +1,5 @@\n 1\n 2\n-3\n+three\n 4\n 5\n");
  std::string d = unified_diff("x", "x\n", "/f");
  EXPECT_NE(d.find("No newline at end of file"), std::string::npos);
}

}  // namespace
}  // namespace gpt
