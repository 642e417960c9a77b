// One declaration per module (agent/declare.hpp): the struct's initialisers are the defaults, the
// declaration is what the validator checks and what the module reads, and the struct goes back to
// JSON through the same binding.
#include "agent/declare.hpp"

#include <gtest/gtest.h>

#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using json = nlohmann::json;

struct Sample {
  std::string state = "started";
  bool enabled = true;
  long long timeout = 30;
  std::vector<std::string> ports = {"80"};
  std::optional<std::string> label;
  std::string name;
  json gpus = "auto";
};

ArgsDecl<Sample> sample_decl() {
  return ArgsDecl<Sample>()
      .arg("name", &Sample::name, "what it is called", {.required = true, .example = "web"})
      .arg("state", &Sample::state, "whether it runs", {.choices = {"started", "stopped"}})
      .arg("enabled", &Sample::enabled, "whether it starts at boot")
      .arg("timeout", &Sample::timeout, "seconds to wait")
      .arg("ports", &Sample::ports, "where it listens")
      .arg("label", &Sample::label, "a one-word label", {.check = [](const json& v) -> std::optional<std::string> {
             if (v.get<std::string>().find(' ') != std::string::npos) return "must be one word";
             return std::nullopt;
           }})
      .arg(ArgSpec{.name = "gpus", .type = ArgType::any, .default_value = "ignored"}, &Sample::gpus)
      .mutually_exclusive({"label", "ports"})
      .check([](const Sample& s) -> std::optional<std::string> {
        if (s.state == "stopped" && s.enabled) return "a stopped service that starts at boot is not stopped";
        return std::nullopt;
      });
}

Expected<json> checked(const ArgsDecl<Sample>& decl, const json& in) {
  return check_args_strictly(decl.schema(), in, "sample", "test");
}

TEST(Declare, TheInitialisersAreTheDefaultsAndTheMembersTheTypes) {
  const auto decl = sample_decl();
  const auto& args = decl.schema().args;
  ASSERT_EQ(args.size(), 7u);
  EXPECT_EQ(args[0].name, "name");
  EXPECT_TRUE(args[0].required);
  EXPECT_TRUE(args[0].default_value.is_null()) << "a required argument has no default";
  EXPECT_EQ(args[0].example, "web");
  EXPECT_EQ(args[1].type, ArgType::str);
  EXPECT_EQ(args[1].default_value, "started");
  EXPECT_EQ(args[1].choices, (std::vector<std::string>{"started", "stopped"}));
  EXPECT_EQ(args[1].doc, "whether it runs");
  EXPECT_EQ(args[2].type, ArgType::boolean);
  EXPECT_EQ(args[2].default_value, true);
  EXPECT_EQ(args[3].type, ArgType::integer);
  EXPECT_EQ(args[3].default_value, 30);
  EXPECT_EQ(args[4].type, ArgType::list);
  EXPECT_EQ(args[4].elements, ArgType::str);
  EXPECT_EQ(args[4].default_value, json::array({"80"}));
  EXPECT_EQ(args[5].type, ArgType::str);
  EXPECT_TRUE(args[5].default_value.is_null()) << "an optional member left empty has no default";
  // A shared spec keeps its type and rules; the struct's initialiser is its default all the same.
  EXPECT_EQ(args[6].type, ArgType::any);
  EXPECT_EQ(args[6].default_value, "auto");
  EXPECT_EQ(decl.schema().mutually_exclusive, (std::vector<std::vector<std::string>>{{"label", "ports"}}));
}

TEST(Declare, CheckedArgumentsBindToTheStructAndBackThroughTheSameDeclaration) {
  const auto decl = sample_decl();
  auto in = checked(
      decl, {{"name", "web"}, {"state", "stopped"}, {"enabled", false}, {"label", "front"}, {"ports", nullptr}});
  ASSERT_TRUE(in) << in.error();
  const Sample s = decl.bind(*in);
  EXPECT_EQ(s.name, "web");
  EXPECT_EQ(s.state, "stopped");
  EXPECT_FALSE(s.enabled);
  EXPECT_EQ(s.timeout, 30);
  EXPECT_EQ(s.ports, std::vector<std::string>{"80"});
  EXPECT_EQ(s.label, "front");
  EXPECT_EQ(s.gpus, "auto");
  // Back to JSON as a playbook says it: what differs from the defaults; it checks as it was.
  const json out = decl.dump(s);
  EXPECT_EQ(out, (json{{"name", "web"}, {"state", "stopped"}, {"enabled", false}, {"label", "front"}}));
  auto again = checked(decl, out);
  ASSERT_TRUE(again) << again.error();
  EXPECT_EQ(decl.dump(decl.bind(*again)), out);
  Sample t = s;
  t.timeout = 5;
  t.gpus = json::array({"0000:01:00.0"});
  EXPECT_EQ(decl.dump(t)["timeout"], 5);
  EXPECT_EQ(decl.dump(t)["gpus"], json::array({"0000:01:00.0"}));
  // Left out, or null, a member keeps its initialiser.
  const Sample d = decl.bind({{"name", "db"}, {"label", nullptr}});
  EXPECT_EQ(d.state, "started");
  EXPECT_FALSE(d.label.has_value());
  EXPECT_FALSE(decl.dump(d).contains("label"));
}

TEST(Declare, TheValidatorChecksWhatTheDeclarationSays) {
  const auto decl = sample_decl();
  auto missing = checked(decl, json::object());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), "test: sample is missing the required argument 'name'");
  auto choice = checked(decl, {{"name", "x"}, {"state", "stoped"}});
  ASSERT_FALSE(choice);
  EXPECT_EQ(choice.error(), "test: sample argument 'state' must be one of started, stopped, not 'stoped'");
  auto own = checked(decl, {{"name", "x"}, {"label", "two words"}, {"ports", nullptr}});
  ASSERT_FALSE(own);
  EXPECT_NE(own.error().find("must be one word"), std::string::npos) << own.error();
  auto both = checked(decl, {{"name", "x"}, {"label", "a"}, {"ports", json::array({"1"})}});
  ASSERT_FALSE(both);
  EXPECT_EQ(both.error(), "test: sample takes only one of label, ports");
  // The check of the whole reads the struct.
  auto whole = checked(decl, {{"name", "x"}, {"state", "stopped"}});
  ASSERT_FALSE(whole);
  EXPECT_NE(whole.error().find("a stopped service that starts at boot is not stopped"), std::string::npos)
      << whole.error();
  EXPECT_TRUE(checked(decl, {{"name", "x"}, {"state", "stopped"}, {"enabled", false}}));
}

TEST(Declare, ASharedSpecOfAnotherTypeThanItsMemberIsRefused) {
  struct Wrong {
    bool gpus = false;
  };
  EXPECT_THROW(ArgsDecl<Wrong>().arg(ArgSpec{.name = "gpus", .type = ArgType::any}, &Wrong::gpus), std::logic_error);
}

// A declared module's converge gets the struct; an error it returns is the task's failure.
Expected<Result> sample_converge(Context&, const Sample& s, bool) {
  if (s.state == "stopped") return Error{"cannot stop " + s.name};
  Result r = Result::changed("started " + s.name + " on " + s.ports.front());
  return r;
}

TEST(Declare, TheModuleReadsTheStructAndItsErrorIsTheTaskFailure) {
  const ModuleDef def = declare_module("sample", "a test module", sample_decl(), sample_converge);
  EXPECT_EQ(def.name, "sample");
  EXPECT_EQ(def.summary, "a test module");
  EXPECT_EQ(def.schema.args.size(), 7u);
  test::TempDir d;
  test::RecordingExec exec;
  Root root(d.path());
  Facts facts;
  Context ctx{root, exec, facts, false};
  auto ok = converge_module(def, ctx, *checked(sample_decl(), {{"name", "web"}}), true);
  EXPECT_EQ(ok.status, Outcome::changed);
  EXPECT_EQ(ok.msg, "started web on 80");
  auto bad = converge_module(
      def, ctx, *checked(sample_decl(), {{"name", "web"}, {"state", "stopped"}, {"enabled", false}}), true);
  EXPECT_EQ(bad.status, Outcome::failed);
  EXPECT_EQ(bad.msg, "cannot stop web");
}

// Lists of mappings: each item binds to the element's struct. A list that may be left out tells
// "not given" (the user's own items stay) from an empty list given (none wanted).
struct Nic {
  std::optional<std::string> bridge;
  std::string state = "present";
};
struct Vm {
  std::vector<Nic> always;
  std::optional<std::vector<Nic>> nics;
};

ArgsDecl<Nic> nic_decl() {
  return ArgsDecl<Nic>()
      .arg("bridge", &Nic::bridge, "a host bridge")
      .arg("state", &Nic::state, "absent removes it", {.choices = {"present", "absent"}});
}

TEST(Declare, ListsOfMappingsBindItemByItemAndAnEmptyListIsNotALeftOutOne) {
  const auto decl =
      ArgsDecl<Vm>().arg("always", &Vm::always, "a list", nic_decl()).arg("nics", &Vm::nics, "NICs", nic_decl());
  ASSERT_EQ(decl.schema().args.size(), 2u);
  EXPECT_EQ(decl.schema().args[0].default_value, json::array()) << "a plain list defaults to empty";
  EXPECT_TRUE(decl.schema().args[1].default_value.is_null()) << "an optional list has no default";
  EXPECT_EQ(decl.schema().args[1].elements, ArgType::dict);
  ASSERT_EQ(decl.schema().args[1].fields.size(), 2u);
  auto in = check_args_strictly(decl.schema(), {{"nics", json::array({{{"bridge", "br0"}}, {{"state", "absent"}}})}},
                                "vm", "test");
  ASSERT_TRUE(in) << in.error();
  const Vm v = decl.bind(*in);
  ASSERT_TRUE(v.nics.has_value());
  ASSERT_EQ(v.nics->size(), 2u);
  EXPECT_EQ((*v.nics)[0].bridge, "br0");
  EXPECT_EQ((*v.nics)[0].state, "present");
  EXPECT_FALSE((*v.nics)[1].bridge.has_value());
  EXPECT_EQ((*v.nics)[1].state, "absent");
  EXPECT_EQ(decl.dump(v), (json{{"nics", json::array({{{"bridge", "br0"}}, {{"state", "absent"}}})}}));
  EXPECT_FALSE(decl.bind(json::object()).nics.has_value());
  const Vm none = decl.bind({{"nics", json::array()}});
  ASSERT_TRUE(none.nics.has_value());
  EXPECT_TRUE(none.nics->empty());
  EXPECT_EQ(decl.dump(none), (json{{"nics", json::array()}})) << "an empty list given is declared";
  auto bad = check_args_strictly(decl.schema(), {{"nics", json::array({{{"state", "gone"}}})}}, "vm", "test");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("must be one of present, absent"), std::string::npos) << bad.error();
}

}  // namespace
}  // namespace gpt
