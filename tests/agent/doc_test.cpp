// gptagent doc: the generated parts of the manual pages and the completion words follow the code.
#include "agent/doc.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "agent/module.hpp"
#include "agent/playbook.hpp"
#include "agent/text.hpp"
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

// The agent's own modules (the test binary registers test modules of its own too).
std::vector<const ModuleDef*> agent_modules() {
  std::vector<const ModuleDef*> out;
  std::istringstream names(test::run_agent({"doc", "--words", "modules"}).out);
  for (std::string name; std::getline(names, name);)
    if (const ModuleDef* def = Registry::instance().find(name)) out.push_back(def);
  return out;
}

// Runs of blanks and newlines as one space: text as `gptagent doc` wraps it, compared word for word.
std::string one_line(const std::string& text) { return std::regex_replace(text, std::regex(R"([ \n]+)"), " "); }

TEST(Doc, EveryModuleHasADescriptionAndExamplesThatLoadAsItsTasks) {
  const auto modules = agent_modules();
  ASSERT_GE(modules.size(), 16u);
  for (const ModuleDef* def : modules) {
    EXPECT_FALSE(def->description.empty()) << def->name;
    EXPECT_FALSE(def->examples.empty()) << def->name;
    for (const auto& example : def->examples) {
      // A one-line comment saying what it does, then the task as it goes in a `tasks:` list.
      const auto first_nl = example.find('\n');
      EXPECT_TRUE(example.starts_with("# ") && example.substr(first_nl + 1).starts_with("- ")) << example;
      EXPECT_TRUE(example.ends_with("\n")) << example;
      const auto loaded = load_playbook_text("tasks:\n" + example, def->name + ".yaml", {});
      EXPECT_TRUE(loaded.errors.empty()) << example << (loaded.errors.empty() ? "" : loaded.errors.front());
      if (!loaded.errors.empty()) continue;
      // One task of this module (after the automatic preflight when it takes GPUs).
      ASSERT_EQ(loaded.playbook.stages.size(), 1u);
      const auto& tasks = loaded.playbook.stages[0].tasks;
      ASSERT_FALSE(tasks.empty());
      EXPECT_EQ(tasks.back().module, def) << example;
      EXPECT_LE(tasks.size(), def->name == "preflight" ? 1u : 2u) << example;
    }
  }
}

// The handlers a module's code requests, read from its source without running it: every
// request made through the handler's declaration (handler_request(NAME, "MODULE", ...)), its own
// and those of the functions
// it calls that return HandlerRequests (grub_handlers). Each is declared in `notifies`, and each
// declared one is requested; a module asks for a reboot exactly when it declares `reboot`.
TEST(Doc, TheHandlersAModuleDeclaresAreThoseItsCodeRequests) {
  namespace fs = std::filesystem;
  // A request made through the handler's declaration: handler_request(NAME, "MODULE", ...).
  const std::regex request(R"re(handler_request(?:<[A-Za-z]+>)?\([^;]*?,\s*"([a-z_]+)"\s*,)re");
  // A function that returns requests, or adds them to a Result it is given (guard_new_kernels).
  const std::regex returns_requests(R"(\n(?:std::vector<HandlerRequest>|HandlerRequest|void)\s+([a-z_]+)\()");
  auto requested = [&](const std::string& code) {
    std::set<std::string> out;
    for (auto it = std::sregex_iterator(code.begin(), code.end(), request); it != std::sregex_iterator(); ++it)
      if (Registry::instance().find((*it)[1].str())) out.insert((*it)[1].str());
    return out;
  };
  std::map<std::string, std::set<std::string>> helpers;  // a function returning requests: what it requests
  std::map<std::string, std::string> bodies;             // each such function's text
  for (const auto& e : fs::recursive_directory_iterator(test::source_path("modules"))) {
    if (e.path().extension() != ".cpp") continue;
    const std::string code = test::slurp(e.path().string());
    for (auto it = std::sregex_iterator(code.begin(), code.end(), returns_requests); it != std::sregex_iterator();
         ++it) {
      const size_t start = static_cast<size_t>(it->position()) + 1, line_end = code.find('\n', start);
      // A function on one line ends there; a longer one at its closing brace.
      const size_t end = code[line_end - 1] == '}' ? line_end : code.find("\n}\n", start);
      bodies[(*it)[1].str()] = code.substr(start, end - start);
    }
  }
  // What each requests, itself or through the others it calls.
  for (const auto& [fn, body] : bodies) helpers[fn] = requested(body);
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [fn, body] : bodies)
      for (const auto& [other, asks] : helpers)
        if (other != fn && body.find(other + "(") != std::string::npos)
          for (const auto& a : asks) grew = helpers[fn].insert(a).second || grew;
  }
  EXPECT_EQ(helpers["grub_handlers"], (std::set<std::string>{"grub_config", "grubby"})) << "the scan finds no requests";
  EXPECT_EQ(helpers["guard_new_kernels"], (std::set<std::string>{"grub_config"})) << "the scan finds no requests";
  size_t found = 0;
  for (const ModuleDef* def : agent_modules()) {
    const std::string path = test::source_path("modules/" + def->name + ".cpp");
    ASSERT_TRUE(fs::exists(path)) << def->name << ": its source is not modules/" << def->name << ".cpp";
    const std::string code = test::slurp(path);
    std::set<std::string> asks = requested(code);
    for (const auto& [fn, names] : helpers)
      if (code.find(fn + "(") != std::string::npos) asks.insert(names.begin(), names.end());
    const std::set<std::string> declared(def->notifies.begin(), def->notifies.end());
    EXPECT_EQ(asks, declared) << def->name << ": its code requests these handlers; notifies declares those";
    EXPECT_EQ(declared.size(), def->notifies.size()) << def->name << " declares a handler twice";
    for (const auto& h : def->notifies) {
      const ModuleDef* handler = Registry::instance().find(h);
      EXPECT_TRUE(handler && handler->handler_args) << def->name << ": " << h << " is no module run as a handler";
    }
    EXPECT_EQ(code.find("reboot_required = ") != std::string::npos, def->reboot)
        << def->name << ": asking for a reboot in code and declaring `reboot` go together";
    found += asks.size();
  }
  EXPECT_GE(found, 10u);
}

TEST(Doc, TextAndJsonShowTheDescriptionWhatAChangeSetsInMotionAndTheExamples) {
  for (const ModuleDef* def : agent_modules()) {
    auto r = test::run_agent({"doc", def->name});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string text = one_line(r.out);
    for (size_t start = 0, end; start < def->description.size(); start = end + 2) {
      end = std::min(def->description.find("\n\n", start), def->description.size());
      EXPECT_TRUE(contains(text, one_line(def->description.substr(start, end - start)))) << def->name << "\n" << r.out;
    }
    for (const auto& example : def->examples)
      EXPECT_TRUE(contains(r.out, "\n  " + std::regex_replace(example, std::regex("\n(.)"), "\n  $1")))
          << def->name << "\n"
          << r.out;
    for (const auto& h : def->notifies)
      EXPECT_TRUE(contains(r.out, "\n  the handler " + h + ": ")) << def->name << "\n" << r.out;
    EXPECT_EQ(contains(r.out, "\n  a reboot: "), def->reboot) << def->name << "\n" << r.out;
    // The description is wrapped as a terminal shows it.
    const std::string head = r.out.substr(0, r.out.find("\nArguments:\n"));
    for (const auto& line : lines(head.substr(head.find('\n') + 1)))  // the summary line aside
      EXPECT_LE(line.size(), 100u) << def->name << ": " << line;
    // The lines that look like an argument's are the arguments, as scripts/prove-package reads them
    // (sed 's/^  \([^ ]*\) (.*/\1/p') to find each in the manual page.
    std::vector<std::string> shown, declared;
    const std::regex arg_line(R"(^  ([^ ]*) \(.*)");
    for (const auto& line : lines(r.out)) {
      std::smatch m;
      const std::string l(line);
      if (std::regex_match(l, m, arg_line)) shown.push_back(m[1].str());
    }
    std::function<void(const std::vector<ArgSpec>&, const std::string&)> walk = [&](const auto& specs,
                                                                                    const std::string& prefix) {
      for (const auto& a : specs) {
        declared.push_back(prefix + a.name);
        walk(a.fields, prefix + a.name + ".");
      }
    };
    walk(def->schema.args, "");
    EXPECT_EQ(shown, declared) << def->name << "\n" << r.out;
  }
  auto vfio = test::run_agent({"doc", "vfio"}).out;
  EXPECT_TRUE(contains(vfio, "\nA change sets in motion:\n  the handler initramfs: rebuild the initramfs")) << vfio;
  EXPECT_TRUE(contains(test::run_agent({"doc", "qemu_img"}).out, "\n  nothing more: no handler, no reboot\n"));

  auto all = test::run_agent({"doc", "--json"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  for (const auto& m : nlohmann::json::parse(all.out)) {
    const ModuleDef* def = Registry::instance().find(m["name"].get<std::string>());
    ASSERT_TRUE(def);
    EXPECT_EQ(m["description"], def->description);
    EXPECT_EQ(m["examples"], def->examples);
    EXPECT_EQ(m["notifies"], def->notifies);
    EXPECT_EQ(m["reboot"], def->reboot);
  }
}

// Every `name:` the README's module tables show (a module's row, and the VM tuning keys' table of
// libvirt_domain) is an argument of that module, or a field of one: a renamed or removed argument
// cannot linger in the documentation. Every module has its row.
TEST(Doc, TheReadmeNamesOnlyArgumentsThatExist) {
  std::istringstream readme(test::slurp(test::source_path("README.md")));
  const auto& reg = Registry::instance();
  std::string line, table_module;
  bool in_table = false;
  std::set<std::pair<std::string, std::string>> unverified;  // module, a name it does not declare
  std::set<std::string> module_rows;
  size_t rows = 0, named = 0;
  const std::regex row(R"(^\| `([a-z_]+)` \|)"), key(R"(`([a-z_]+):( [^`]*)?`)");
  while (std::getline(readme, line)) {
    // The tuning table starts after the paragraph that names it and ends at its first non-row.
    if (line.starts_with("VM tuning keys of `libvirt_domain`")) table_module = "libvirt_domain", in_table = false;
    if (line.starts_with("|"))
      in_table = true;
    else if (in_table)
      table_module.clear(), in_table = false;
    std::string module;
    std::smatch m;
    if (std::regex_search(line, m, row) && reg.find(m[1].str())) {
      module = m[1].str();
      module_rows.insert(module);
    } else if (line.starts_with("| `") && !table_module.empty()) {
      module = table_module;
    }
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
    const std::string yaml =
        std::string("tasks:\n  - libvirt_domain: {name: vm, memory: 4G, vcpus: 1, hugepages: {size: 2M, ") +
        "%s: true}}\n";
    auto with = [&](const std::string& k) { return std::regex_replace(yaml, std::regex("%s"), k); };
    EXPECT_TRUE(load_playbook_text(with(right), "t.yaml", {}).errors.empty()) << right;
    EXPECT_FALSE(load_playbook_text(with(wrong), "t.yaml", {}).errors.empty()) << wrong;
    unverified.erase({"libvirt_domain", right});
  }
  for (const auto& [module, name] : unverified)
    ADD_FAILURE() << module << " has no argument " << name << ", which the README names";
  // Each module's one-line row (16) and the tuning table's 10 rows; some 30 keys among them.
  EXPECT_GE(rows, 26u) << "the README's module tables were not found";
  EXPECT_GE(named, 25u);
  for (const ModuleDef* def : agent_modules())
    EXPECT_TRUE(module_rows.count(def->name)) << "the README's module table has no row for " << def->name;
}

}  // namespace
}  // namespace gpt
