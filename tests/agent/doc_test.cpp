// gptagent doc: the generated parts of the manual pages and the completion words follow the code.
#include "agent/doc.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <sstream>

#include "agent/module.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Doc, RoffEscapesBackslashesHyphensAndALeadingControlCharacter) {
  EXPECT_EQ(roff_escape("--check"), "\\-\\-check");
  EXPECT_EQ(roff_escape("a\\b"), "a\\eb");
  EXPECT_EQ(roff_escape(".TH"), "\\&.TH");
  EXPECT_EQ(roff_escape("'quoted'"), "\\&'quoted'");
}

TEST(Doc, RoffModulesNamesEveryModuleAndEveryArgument) {
  std::ostringstream out;
  write_roff_modules(out);
  const std::string roff = out.str();
  size_t args = 0;
  for (const auto& name : Registry::instance().names()) {
    EXPECT_TRUE(contains(roff, ".SS " + roff_escape(name) + "\n")) << name;
    std::function<void(const std::vector<ArgSpec>&, const std::string&)> walk = [&](const auto& specs,
                                                                                    const std::string& prefix) {
      for (const auto& a : specs) {
        EXPECT_TRUE(contains(roff, ".TP\n\\fB" + roff_escape(prefix + a.name) + "\\fR\n"))
            << name << " " << prefix + a.name;
        ++args;
        walk(a.fields, prefix + a.name + ".");
      }
    };
    walk(Registry::instance().find(name)->schema.args, "");
  }
  EXPECT_GT(args, 40u);
}

TEST(Doc, ShowsAModuleAndRefusesAnUnknownOne) {
  auto vfio = test::run_agent({"doc", "vfio"});
  EXPECT_EQ(vfio.exit_code, 0) << vfio.err;
  EXPECT_TRUE(contains(vfio.out, "vfio: ")) << vfio.out;
  EXPECT_TRUE(contains(vfio.out, "\n  devices (list of string")) << vfio.out;

  auto unknown = test::run_agent({"doc", "vfoi"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_TRUE(contains(unknown.err, "no module is named vfoi")) << unknown.err;
}

TEST(Doc, WordsAreTheSubcommandsModulesAndOptions) {
  auto commands = test::run_agent({"doc", "--words", "commands"});
  EXPECT_EQ(commands.out, "apply\ninventory\nstatus\nvalidate\nfacts\ndoc\nschema\n");
  auto apply = test::run_agent({"doc", "--words", "apply"});
  for (const char* opt : {"--check\n", "-C\n", "--limit\n", "-l\n", "--inventory\n", "--root\n", "--help\n"})
    EXPECT_TRUE(contains(apply.out, opt)) << opt << " in " << apply.out;
  auto modules = test::run_agent({"doc", "--words", "modules"});
  EXPECT_TRUE(contains(modules.out, "grub_cmdline\n")) << modules.out;
  EXPECT_EQ(test::run_agent({"doc", "--words", "nosuch"}).exit_code, 1);
}

}  // namespace
}  // namespace gpt
