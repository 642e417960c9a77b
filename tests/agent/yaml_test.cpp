// The one YAML reader (agent/yaml): its marks, limits and scalar rules, and that playbooks and
// inventories both read through it.
#include "agent/yaml.hpp"

#include <gtest/gtest.h>

#include "agent/argspec.hpp"
#include "agent/inventory.hpp"
#include "agent/playbook.hpp"

namespace gpt {
namespace {

using json = nlohmann::json;

struct Read {
  std::vector<std::string> errors;
  YamlReader reader{"f.yml", plain_scalar,
                    [this](const std::string& where, const std::string& msg) { errors.push_back(where + ": " + msg); }};
};

TEST(Yaml, SyntaxErrorsAndDeepNestingArePlacedAtFileLineCol) {
  Read r;
  EXPECT_FALSE(r.reader.load("a: [1,\nb: }\n"));
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].rfind("f.yml:2:", 0), 0u) << r.errors[0];
  EXPECT_NE(r.errors[0].find("YAML syntax error"), std::string::npos) << r.errors[0];

  Read deep;
  EXPECT_FALSE(deep.reader.load(std::string(5000, '[')));
  ASSERT_EQ(deep.errors.size(), 1u);
  EXPECT_NE(deep.errors[0].find("nested deeper than"), std::string::npos) << deep.errors[0];
}

TEST(Yaml, OnlyPlainUntaggedScalarsAreResolved) {
  Read r;
  auto doc = r.reader.load("a: 5\nb: '5'\nc: !!str 5\nd: true\ne: \"true\"\nf: ~\ng: 1.5\n");
  ASSERT_TRUE(doc);
  json out;
  ASSERT_TRUE(r.reader.to_json(*doc, out));
  EXPECT_EQ(out, json::parse(R"({"a":5,"b":"5","c":"5","d":true,"e":"true","f":null,"g":1.5})"));
  EXPECT_TRUE(r.errors.empty());
}

TEST(Yaml, EveryValueIsSeenWithItsPointerAndItsKey) {
  Read r;
  auto doc = r.reader.load("a/b:\n  - x\n  - {k: v}\n");
  ASSERT_TRUE(doc);
  std::map<std::string, std::pair<int, int>> seen;  // pointer -> (value line, key line or 0)
  json out;
  ASSERT_TRUE(r.reader.to_json(*doc, out, [&](const std::string& ptr, const YAML::Node& v, const YAML::Node* k) {
    seen[ptr] = {v.Mark().line + 1, k ? k->Mark().line + 1 : 0};
  }));
  EXPECT_EQ(seen,
            (std::map<std::string, std::pair<int, int>>{
                {"", {1, 0}}, {"/a~1b", {2, 1}}, {"/a~1b/0", {2, 0}}, {"/a~1b/1", {3, 0}}, {"/a~1b/1/k", {3, 3}}}));
}

TEST(Yaml, DuplicateAndNonScalarKeysAreErrors) {
  Read r;
  auto doc = r.reader.load("a: 1\nb: 2\na: 3\n");
  ASSERT_TRUE(doc);
  json out;
  EXPECT_TRUE(r.reader.to_json(*doc, out));
  EXPECT_EQ(r.errors, (std::vector<std::string>{"f.yml:3:1: duplicate key 'a'"}));
  EXPECT_EQ(out["a"], 1);
  EXPECT_EQ(r.reader.entries(*doc).size(), 2u);

  Read bad;
  auto list_key = bad.reader.load("? [x]\n: 1\nb: 2\n");
  ASSERT_TRUE(list_key);
  EXPECT_FALSE(bad.reader.to_json(*list_key, out));
  ASSERT_FALSE(bad.errors.empty());
  EXPECT_EQ(bad.errors[0], "f.yml:1:3: a mapping key must be a name, not a list");
}

// A billion laughs: nine levels of ten aliases each.
std::string alias_bomb(const std::string& indent) {
  std::string y = indent + "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 9; ++i) {
    const std::string prev = "*l" + std::to_string(i - 1);
    y += indent + "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) y += prev + (k < 9 ? ", " : "]\n");
  }
  return y;
}

TEST(Yaml, AnAliasBombStopsWithOneMessage) {
  Read r;
  auto doc = r.reader.load(alias_bomb(""));
  ASSERT_TRUE(doc);
  json out;
  EXPECT_FALSE(r.reader.to_json(*doc, out));
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("values (an alias bomb?)"), std::string::npos) << r.errors[0];

  // Few values, many bytes: aliases of one long string.
  Read bytes;
  std::string y = "s: &s " + std::string(1 << 20, 'x') + "\nl: [";
  for (int i = 0; i < 40; ++i) y += std::string(i ? ", " : "") + "*s";
  auto big = bytes.reader.load(y + "]\n");
  ASSERT_TRUE(big);
  EXPECT_FALSE(bytes.reader.to_json(*big, out));
  ASSERT_EQ(bytes.errors.size(), 1u);
  EXPECT_NE(bytes.errors[0].find("bytes (an alias bomb?)"), std::string::npos) << bytes.errors[0];
}

// An inventory reads its YAML through the same reader: an alias bomb in a host's vars is refused
// at its place, and YAML 1.1's `yes` is a boolean there, as Ansible reads it.
TEST(Yaml, InventoriesReadThroughTheSameReader) {
  auto bomb = parse_inventory_yaml("all:\n  hosts:\n    h1:\n" + alias_bomb("      "), "inv.yml");
  ASSERT_FALSE(bomb);
  EXPECT_NE(bomb.error().find("inv.yml:"), std::string::npos) << bomb.error();
  EXPECT_NE(bomb.error().find("(an alias bomb?)"), std::string::npos) << bomb.error();

  auto inv = parse_inventory_yaml("all:\n  hosts:\n    h1:\n      a: yes\n      b: !!str 5\n", "inv.yml");
  ASSERT_TRUE(inv) << inv.error();
  ASSERT_EQ(inv->hosts.size(), 1u);
  EXPECT_EQ(inv->hosts[0].vars["a"], true);
  EXPECT_EQ(inv->hosts[0].vars["b"], "5");
}

// A playbook's explicitly tagged scalar stays text, as YAML says: `!!str 5` is no number.
TEST(Yaml, PlaybooksReadThroughTheSameReader) {
  LoadOptions opts;
  auto r = load_playbook_text("vars: {a: !!str 5, b: 5, c: '5'}\ntasks: []\n", "p.yml", opts);
  ASSERT_TRUE(r.errors.empty()) << r.errors[0];
  EXPECT_EQ(r.playbook.vars, json::parse(R"({"a":"5","b":5,"c":"5"})"));

  auto bomb = load_playbook_text(alias_bomb(""), "p.yml", opts);
  ASSERT_EQ(bomb.errors.size(), 1u);
  EXPECT_NE(bomb.errors[0].find("(an alias bomb?)"), std::string::npos) << bomb.errors[0];
}

}  // namespace
}  // namespace gpt
