// The argument validator on its own: JSON in, typed arguments or messages placed by an ArgSource.
#include "agent/argspec.hpp"

#include <gtest/gtest.h>

#include "agent/module.hpp"

namespace gpt {
namespace {

using json = nlohmann::json;

ModuleSchema sample_schema() {
  ModuleSchema s;
  s.args = {{.name = "name", .type = ArgType::str, .required = true},
            {.name = "state", .type = ArgType::str, .default_value = "started", .choices = {"started", "stopped"}},
            {.name = "enabled", .type = ArgType::boolean},
            {.name = "timeout", .type = ArgType::integer, .default_value = 30},
            {.name = "ports", .type = ArgType::list, .elements = ArgType::integer},
            {.name = "limits",
             .type = ArgType::dict,
             .fields = {{.name = "cpu", .type = ArgType::integer, .default_value = 1}}},
            {.name = "label", .type = ArgType::str, .check = [](const json& v) -> std::optional<std::string> {
               if (v.get<std::string>().find(' ') != std::string::npos) return "must be one word";
               return std::nullopt;
             }}};
  s.mutually_exclusive = {{"enabled", "ports"}};
  return s;
}

std::vector<std::string> messages(const ArgChecker& c) {
  std::vector<std::string> out;
  for (const auto& e : c.errors()) out.push_back(e.str());
  return out;
}

// Marks each pointer with itself, so a test sees where an error points.
class PointerSource final : public ArgSource {
 public:
  std::string locate(const std::string& ptr, bool key) const override { return (key ? "key " : "") + ptr; }
};

TEST(Argspec, TypesYamlScalarsAndFillsDefaults) {
  LabelSource src("-e");
  ArgChecker c(src);
  json out;
  ASSERT_TRUE(c.module_args(
      sample_schema(), {{"name", 8}, {"enabled", "yes"}, {"timeout", "12"}, {"limits", json::object()}, {"label", "x"}},
      "", "svc", out))
      << ::testing::PrintToString(messages(c));
  EXPECT_EQ(out, (json{{"name", "8"},
                       {"state", "started"},
                       {"enabled", true},
                       {"timeout", 12},
                       {"limits", {{"cpu", 1}}},
                       {"label", "x"}}));
}

TEST(Argspec, ANullArgumentIsOneLeftOut) {
  LabelSource src("-e");
  ArgChecker c(src);
  json out;
  ASSERT_TRUE(c.module_args(sample_schema(), {{"name", "a"}, {"limits", nullptr}, {"state", nullptr}}, "", "svc", out));
  EXPECT_EQ(out, (json{{"name", "a"}, {"state", "started"}, {"timeout", 30}}));
}

TEST(Argspec, OneValueIsAListOfOne) {
  LabelSource src("-e");
  ArgChecker c(src);
  json out;
  ASSERT_TRUE(c.module_args(sample_schema(), {{"name", "a"}, {"ports", "22"}}, "", "svc", out));
  EXPECT_EQ(out["ports"], (json{22}));
}

TEST(Argspec, RejectsUnknownKeyWithDidYouMeanAndTheLabel) {
  LabelSource src("state.json");
  ArgChecker c(src);
  json out;
  EXPECT_FALSE(c.module_args(sample_schema(), {{"name", "a"}, {"stat", "started"}}, "", "svc", out));
  EXPECT_EQ(messages(c), (std::vector<std::string>{
                             "state.json: svc has no argument 'stat' (did you mean 'state'?); it takes: name, state, "
                             "enabled, timeout, ports, limits, label"}));
}

TEST(Argspec, PointsEachErrorAtItsValueOrKey) {
  PointerSource src;
  ArgChecker c(src);
  json out;
  EXPECT_FALSE(c.module_args(
      sample_schema(),
      {{"state", "gone"}, {"ports", {1, "x"}}, {"limits", {{"cpu", true}}}, {"label", "two words"}, {"enabled", false}},
      "/tasks/0/svc", "svc", out));
  EXPECT_EQ(messages(c), (std::vector<std::string>{
                             "key /tasks/0/svc: svc is missing the required argument 'name'",
                             "/tasks/0/svc/state: svc argument 'state' must be one of started, stopped, not 'gone'",
                             "/tasks/0/svc/ports/1: svc argument 'ports' item 2 must be an integer, not a string",
                             "/tasks/0/svc/limits/cpu: svc argument 'limits' argument 'cpu' must be an integer, not a "
                             "boolean",
                             "/tasks/0/svc/label: svc argument 'label': must be one word",
                             "key /tasks/0/svc: svc takes only one of enabled, ports"}));
}

TEST(Argspec, StrictTypingTakesOnlyTheDeclaredJsonTypes) {
  LabelSource src("handler 'restart'");
  ArgChecker c(src, Typing::strict);
  json out;
  EXPECT_FALSE(c.module_args(sample_schema(), {{"name", 8}, {"enabled", "yes"}, {"timeout", "12"}, {"ports", 22}}, "",
                             "svc", out));
  EXPECT_EQ(messages(c),
            (std::vector<std::string>{
                "handler 'restart': svc argument 'name' must be a string, not a number",
                "handler 'restart': svc argument 'enabled' must be a boolean (true or false), not a string",
                "handler 'restart': svc argument 'timeout' must be an integer, not a string",
                "handler 'restart': svc argument 'ports' must be a list, not a number",
                "handler 'restart': svc takes only one of enabled, ports"}));
}

TEST(Argspec, ModuleCheckRunsAfterEachArgumentPassed) {
  ModuleSchema s = sample_schema();
  s.check = [](const json& args) -> std::optional<std::string> {
    if (args.value("state", "") == "stopped" && args.value("enabled", false)) return "a stopped unit is not enabled";
    return std::nullopt;
  };
  LabelSource src("-e");
  ArgChecker c(src);
  json out;
  EXPECT_FALSE(c.module_args(s, {{"name", "a"}, {"state", "stopped"}, {"enabled", true}}, "", "svc", out));
  EXPECT_EQ(messages(c), (std::vector<std::string>{"-e: svc: a stopped unit is not enabled"}));
}

TEST(Argspec, CheckArgsStrictlyJoinsTheMessages) {
  auto bad = check_args_strictly(sample_schema(), {{"timeout", true}}, "svc", "handler 'h'");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(),
            "handler 'h': svc is missing the required argument 'name'\n"
            "handler 'h': svc argument 'timeout' must be an integer, not a boolean");
  auto not_mapping = check_args_strictly(sample_schema(), json::array(), "svc", "handler 'h'");
  ASSERT_FALSE(not_mapping);
  EXPECT_EQ(not_mapping.error(), "handler 'h': the arguments of svc must be a mapping, not a list");
  auto good = check_args_strictly(sample_schema(), {{"name", "a"}}, "svc", "handler 'h'");
  ASSERT_TRUE(good) << good.error();
  EXPECT_EQ(*good, (json{{"name", "a"}, {"state", "started"}, {"timeout", 30}}));
}

TEST(Argspec, PlainScalarsTypeAsTheYamlCoreSchema) {
  EXPECT_EQ(plain_scalar(""), json(nullptr));
  EXPECT_EQ(plain_scalar("~"), json(nullptr));
  EXPECT_EQ(plain_scalar("True"), json(true));
  EXPECT_EQ(plain_scalar("FALSE"), json(false));
  EXPECT_EQ(plain_scalar("-12"), json(-12));
  EXPECT_EQ(plain_scalar("1.5"), json(1.5));
  EXPECT_EQ(plain_scalar("yes"), json("yes"));  // YAML 1.1 words stay text; a boolean argument takes them
  EXPECT_EQ(plain_scalar("1.10.2"), json("1.10.2"));
  EXPECT_EQ(plain_scalar("1234567890123456789"), json("1234567890123456789"));
}

TEST(Argspec, DidYouMeanNamesTheNearestCandidateWithinTwoEdits) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(did_you_mean("vfoi", {"vfio", "grub_cmdline"}), " (did you mean 'vfio'?)");
  EXPECT_EQ(did_you_mean("zzzz", {"vfio"}), "");
}

TEST(Argspec, ModuleHandlerRequestsPassTheirOwnDeclaration) {
  // Every request a module makes in code is one its declaration takes.
  const ModuleDef* grub_config = Registry::instance().find("grub_config");
  ASSERT_NE(grub_config, nullptr);
  auto ok = handler_request_args(*grub_config, {"regenerate the grub config", "grub_config", json::object()});
  ASSERT_TRUE(ok) << ok.error();
  auto bad = handler_request_args(*grub_config, {"regenerate the grub config", "grub_config", {{"timeout", "x"}}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error(),
            "handler 'regenerate the grub config': grub_config argument 'timeout' must be an integer, not a string");
}

TEST(Argspec, AStateFilesHandlerRequestKeepsItsMessages) {
  // What `unsafe_handler_request` said before it typed values with the checker, word for word.
  auto why = [](std::string module, json args) {
    return unsafe_handler_request({"h", std::move(module), std::move(args)});
  };
  EXPECT_EQ(why("nosuch", json::object()), "module 'nosuch' is not one modules request as a handler");
  EXPECT_EQ(why("grub_config", json::array()), "its arguments are not a mapping");
  EXPECT_EQ(why("grub_config", {{"command", {"rm", "-rf", "/"}}}),
            "module grub_config is never requested with argument 'command'");
  EXPECT_EQ(why("service", {{"name", 5}}), "argument 'name' is not a string");
  EXPECT_EQ(why("service", {{"state", "enabled"}}), "argument 'state' is not a string");  // not one of its choices
  EXPECT_EQ(why("grubby", {{"add", "quiet"}}), "argument 'add' is not a list");           // strictly: no list of one
  EXPECT_EQ(why("grubby", {{"add", {"quiet", 1}}}), "argument 'add' is not a list");
  EXPECT_EQ(why("grubby", {{"add", {"a b"}}}), "argument 'add': 'a b' is not a kernel parameter");
  EXPECT_EQ(why("grubby", {{"add", {"quiet"}}, {"remove", json::array()}}), std::nullopt);
  EXPECT_EQ(why("service", {{"name", "libvirtd.service"}, {"state", "restarted"}}), std::nullopt);
}

}  // namespace
}  // namespace gpt
