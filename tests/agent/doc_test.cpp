// gptagent doc: the generated parts of the manual pages and the completion words follow the code.
#include "agent/doc.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <regex>
#include <set>
#include <sstream>

#include "agent/module.hpp"
#include "agent/playbook.hpp"
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

TEST(Doc, JsonShowsAModuleWithEachArgumentsTypeDefaultChoicesAndFields) {
  auto r = test::run_agent({"doc", "--json", "vfio"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["name"], "vfio");
  EXPECT_EQ(doc["summary"], Registry::instance().find("vfio")->summary);
  const auto& args = doc["arguments"];
  ASSERT_EQ(args.size(), Registry::instance().find("vfio")->schema.args.size());
  EXPECT_EQ(args[0]["name"], "modules");  // in declaration order
  auto arg = [&](const std::string& name) {
    for (const auto& a : args)
      if (a["name"] == name) return a;
    return nlohmann::json();
  };
  EXPECT_EQ(arg("devices"),
            (nlohmann::json{{"name", "devices"},
                            {"type", "list"},
                            {"elements", "string"},
                            {"required", false},
                            {"default", nlohmann::json::array()},
                            {"doc", "PCI addresses whose slot's functions vfio-pci claims (their ids, or by address)"},
                            {"example", nlohmann::json::array({"0000:01:00.0"})}}));
  EXPECT_EQ(arg("force")["type"], "boolean");
  EXPECT_EQ(arg("force")["default"], false);
  EXPECT_FALSE(arg("force").contains("elements"));

  // Choices, and a mapping's fields, nested as arguments are.
  auto domain = nlohmann::json::parse(test::run_agent({"doc", "--json", "libvirt_domain"}).out);
  size_t with_choices = 0, with_fields = 0;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& list) {
    for (const auto& a : list) {
      with_choices += a.contains("choices");
      if (a.contains("fields")) {
        ++with_fields;
        walk(a["fields"]);
      }
    }
  };
  walk(domain["arguments"]);
  EXPECT_GT(with_choices, 0u) << domain.dump(2);
  EXPECT_GT(with_fields, 0u) << domain.dump(2);
}

TEST(Doc, JsonWithoutAModuleListsEveryModuleAndRefusesAnUnknownOne) {
  auto all = test::run_agent({"doc", "--json"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  const auto doc = nlohmann::json::parse(all.out);
  ASSERT_TRUE(doc.is_array());
  std::string names;
  for (const auto& m : doc) names += m["name"].get<std::string>() + "\n";
  EXPECT_EQ(names, test::run_agent({"doc", "--words", "modules"}).out);

  auto unknown = test::run_agent({"doc", "--json", "vfoi"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(unknown.out, "");
  EXPECT_TRUE(contains(unknown.err, "no module is named vfoi")) << unknown.err;
}

TEST(Doc, WordsAreTheSubcommandsModulesAndOptions) {
  auto commands = test::run_agent({"doc", "--words", "commands"});
  EXPECT_EQ(commands.out, "apply\ninventory\nstatus\nrevert\nresume\nvalidate\nfacts\ndoc\nschema\nhandoff\n");
  auto apply = test::run_agent({"doc", "--words", "apply"});
  for (const char* opt : {"--check\n", "-C\n", "--limit\n", "-l\n", "--inventory\n", "--root\n", "--help\n"})
    EXPECT_TRUE(contains(apply.out, opt)) << opt << " in " << apply.out;
  auto modules = test::run_agent({"doc", "--words", "modules"});
  EXPECT_TRUE(contains(modules.out, "grub_cmdline\n")) << modules.out;
  EXPECT_EQ(test::run_agent({"doc", "--words", "nosuch"}).exit_code, 1);
}


// Every `name:` the README's module tables show (a module's row, and the VM tuning keys' table of
// libvirt_domain) is an argument of that module, or a field of one: a renamed or removed argument
// cannot linger in the documentation.
TEST(Doc, TheReadmeNamesOnlyArgumentsThatExist) {
  std::istringstream readme(test::slurp(test::source_path("README.md")));
  const auto& reg = Registry::instance();
  std::string line, table_module;
  bool in_table = false;
  std::set<std::pair<std::string, std::string>> unverified;  // module, a name it does not declare
  size_t rows = 0, named = 0;
  const std::regex row(R"(^\| `([a-z_]+)` \|)"), key(R"(`([a-z_]+):( [^`]*)?`)");
  while (std::getline(readme, line)) {
    // The tuning table starts after the paragraph that names it and ends at its first non-row.
    if (line.starts_with("VM tuning keys of `libvirt_domain`")) table_module = "libvirt_domain", in_table = false;
    if (line.starts_with("|")) in_table = true;
    else if (in_table) table_module.clear(), in_table = false;
    std::string module;
    std::smatch m;
    if (std::regex_search(line, m, row) && reg.find(m[1].str()))
      module = m[1].str();
    else if (line.starts_with("| `") && !table_module.empty())
      module = table_module;
    if (module.empty()) continue;
    ++rows;
    std::set<std::string> names;
    std::function<void(const std::vector<ArgSpec>&)> collect = [&](const auto& specs) {
      for (const auto& a : specs) {
        names.insert(a.name);
        collect(a.fields);
      }
    };
    collect(reg.find(module)->schema.args);
    for (auto it = std::sregex_iterator(line.begin(), line.end(), key); it != std::sregex_iterator(); ++it) {
      ++named;
      if (!names.count((*it)[1].str())) unverified.insert({module, (*it)[1].str()});
    }
  }
  // Keys inside an argument declared as `any` (its check reads them): the declaration cannot list
  // them yet, so the loader shows each one is taken there, and that a misspelling is not.
  for (const auto& [right, wrong] : {std::pair{"reserve", "reserv"}}) {
    const std::string yaml = std::string("tasks:\n  - libvirt_domain: {name: vm, memory: 4G, vcpus: 1, hugepages: {size: 2M, ") +
                             "%s: true}}\n";
    auto with = [&](const std::string& k) { return std::regex_replace(yaml, std::regex("%s"), k); };
    EXPECT_TRUE(load_playbook_text(with(right), "t.yaml", {}).errors.empty()) << right;
    EXPECT_FALSE(load_playbook_text(with(wrong), "t.yaml", {}).errors.empty()) << wrong;
    unverified.erase({"libvirt_domain", right});
  }
  for (const auto& [module, name] : unverified)
    ADD_FAILURE() << module << " has no argument " << name << ", which the README names";
  EXPECT_GE(rows, 20u) << "the README's module tables were not found";
  EXPECT_GE(named, 40u);
}

}  // namespace
}  // namespace gpt
