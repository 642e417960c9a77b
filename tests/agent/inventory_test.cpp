#include "agent/inventory.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <stdexcept>

#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using json = nlohmann::json;
using test::TempDir;
using Names = std::vector<std::string>;

Names names(const Inventory& inv) {
  Names out;
  for (const auto& h : inv.hosts) out.push_back(h.name);
  return out;
}

const InventoryHost& host(const Inventory& inv, const std::string& name) {
  const InventoryHost* h = inv.find(name);
  if (!h) throw std::runtime_error("no host " + name);
  return *h;
}

// The names --limit selects, or "error: ..." for an error, so that a failure shows what came out.
Names limit(const Inventory& inv, const std::string& pattern) {
  auto sel = select_hosts(inv, pattern);
  if (!sel) return {"error: " + sel.error()};
  Names out;
  for (const auto* h : *sel) out.push_back(h->name);
  return out;
}

::testing::AssertionResult HasError(const std::string& errors, const std::string& expected) {
  if (errors.find(expected) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "no error containing '" << expected << "'; errors:\n" << errors;
}

// One inventory in both formats: groups with children, a range, host:port, an ungrouped host,
// typed vars, a host under two groups.
const char* kYaml = R"(all:
  vars:
    ntp: pool.ntp.org
    level: all
  hosts:
    bastion:
      ansible_host: 203.0.113.1
  children:
    gpus:
      vars:
        level: gpus
        vfio: true
      hosts:
        gpu[01:03]:
        gpu04:2222:
          ansible_user: admin
    web:
      hosts:
        web01:
          http_port: 8080
          tls: false
        gpu01:
    datacenter:
      children:
        gpus:
        web:
      vars:
        level: datacenter
        dc: fra1
)";

const char* kIni = R"(# the same fleet as kYaml
bastion ansible_host=203.0.113.1

[all:vars]
ntp=pool.ntp.org
level=all

[gpus]
gpu[01:03]
gpu04:2222 ansible_user=admin

[gpus:vars]
level=gpus
vfio=True

[web]
web01 http_port=8080 tls=False
gpu01

; children after their groups, as usual in INI
[datacenter:children]
gpus
web

[datacenter:vars]
level=datacenter
dc=fra1
)";

TEST(InventoryFormats, YamlAndIniGiveTheSameInventory) {
  auto y = parse_inventory_yaml(kYaml, "fleet.yml");
  auto i = parse_inventory_ini(kIni, "fleet.ini");
  ASSERT_TRUE(y.ok()) << y.error();
  ASSERT_TRUE(i.ok()) << i.error();

  EXPECT_EQ(names(*y), (Names{"bastion", "gpu01", "gpu02", "gpu03", "gpu04", "web01"}));
  EXPECT_EQ(names(*i), names(*y));
  EXPECT_EQ(i->groups, y->groups);
  EXPECT_EQ(y->groups.at("all"), names(*y));
  EXPECT_EQ(y->groups.at("ungrouped"), (Names{"bastion"}));
  EXPECT_EQ(y->groups.at("gpus"), (Names{"gpu01", "gpu02", "gpu03", "gpu04"}));
  EXPECT_EQ(y->groups.at("web"), (Names{"web01", "gpu01"}));  // a group's own order, as Ansible's Group.get_hosts
  EXPECT_EQ(y->groups.at("datacenter"), (Names{"gpu01", "gpu02", "gpu03", "gpu04", "web01"}));
  for (const auto& h : y->hosts) {
    SCOPED_TRACE(h.name);
    EXPECT_EQ(host(*i, h.name).groups, h.groups);
    EXPECT_EQ(host(*i, h.name).vars, h.vars);
  }

  const auto& gpu01 = host(*y, "gpu01");
  EXPECT_EQ(gpu01.groups, (Names{"all", "datacenter", "gpus", "web"}));
  // gpus and web are below datacenter, so their vars win over its; among them gpus only sets level.
  EXPECT_EQ(gpu01.vars, json({{"ntp", "pool.ntp.org"}, {"level", "gpus"}, {"vfio", true}, {"dc", "fra1"}}));
  EXPECT_EQ(
      host(*y, "web01").vars,
      json({{"ntp", "pool.ntp.org"}, {"level", "datacenter"}, {"dc", "fra1"}, {"http_port", 8080}, {"tls", false}}));
  EXPECT_EQ(host(*y, "gpu04").vars["ansible_port"], 2222);
  EXPECT_EQ(host(*y, "gpu04").vars["ansible_user"], "admin");
  EXPECT_EQ(host(*y, "bastion").groups, (Names{"all", "ungrouped"}));
  EXPECT_EQ(host(*y, "bastion").vars["level"], "all");
  EXPECT_EQ(y->source, "fleet.yml");
}

TEST(InventoryFormats, YamlVarsKeepTheirTypesAsAnsibleReadsThem) {
  auto inv = parse_inventory_yaml(R"(all:
  hosts:
    h:
  vars:
    flag: yes
    off_flag: off
    count: 3
    mode: 0755
    ratio: 1.5
    version: "1.10"
    quoted_yes: "yes"
    items: [a, 2, true]
    nested: {k: v}
    nothing:
)",
                                  "t.yml");
  ASSERT_TRUE(inv.ok()) << inv.error();
  const json& v = inv->hosts.at(0).vars;
  EXPECT_EQ(v["flag"], true);  // YAML 1.1, as PyYAML: yes/on are booleans
  EXPECT_EQ(v["off_flag"], false);
  EXPECT_EQ(v["count"], 3);
  EXPECT_EQ(v["mode"], 493);  // 0755 is octal in YAML 1.1
  EXPECT_EQ(v["ratio"], 1.5);
  EXPECT_EQ(v["version"], "1.10");
  EXPECT_EQ(v["quoted_yes"], "yes");
  EXPECT_EQ(v["items"], json::array({"a", 2, true}));
  EXPECT_EQ(v["nested"], json({{"k", "v"}}));
  EXPECT_TRUE(v.contains("nothing") && v["nothing"].is_null());
}

// What ansible-inventory 2.14 --list shows for each value: Python's ast.literal_eval, else the text.
TEST(InventoryFormats, IniValuesArePythonLiteralsOrText) {
  auto inv = parse_inventory_ini(R"([g]
h n=5 s="5" z=007 t=TRUE f=false T=True F=False N=None x=1.5 e=1e3 hx=0x10 u=1_000 neg=-3 words='a b c' path=/x#comment
[g:vars]
motd="hello world"
count=22
quoted="22"
yes=True
raw=a b c
)",
                                 "t.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  const json& v = inv->hosts.at(0).vars;
  EXPECT_EQ(v["n"], 5);
  EXPECT_EQ(v["s"], 5);       // on a host line shlex takes the quotes away before Ansible evaluates it
  EXPECT_EQ(v["z"], "007");   // not a Python integer
  EXPECT_EQ(v["t"], "TRUE");  // not Python's True
  EXPECT_EQ(v["f"], "false");
  EXPECT_EQ(v["T"], true);
  EXPECT_EQ(v["F"], false);
  EXPECT_EQ(v["N"], nullptr);
  EXPECT_EQ(v["x"], 1.5);
  EXPECT_EQ(v["e"], 1000.0);
  EXPECT_EQ(v["hx"], 16);
  EXPECT_EQ(v["u"], 1000);
  EXPECT_EQ(v["neg"], -3);
  EXPECT_EQ(v["words"], "a b c");
  EXPECT_EQ(v["path"], "/x");  // '#' starts a comment on a host line, as in shlex
  EXPECT_EQ(v["motd"], "hello world");
  EXPECT_EQ(v["count"], 22);
  EXPECT_EQ(v["quoted"], "22");  // in a [g:vars] section the quotes make a Python string
  EXPECT_EQ(v["yes"], true);
  EXPECT_EQ(v["raw"], "a b c");
}

TEST(InventoryFormats, UngroupedIsHostsInNoOtherGroup) {
  auto inv = parse_inventory_ini("lonely\ngpu01\n[gpus]\ngpu01\n", "u.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(inv->groups.at("ungrouped"), (Names{"lonely"}));
  EXPECT_EQ(host(*inv, "gpu01").groups, (Names{"all", "gpus"}));
  EXPECT_EQ(host(*inv, "lonely").groups, (Names{"all", "ungrouped"}));

  auto y = parse_inventory_yaml("all:\n  hosts:\n    solo:\n  children:\n    empty:\n", "u.yml");
  ASSERT_TRUE(y.ok()) << y.error();
  EXPECT_EQ(y->groups.at("ungrouped"), (Names{"solo"}));
  EXPECT_TRUE(y->groups.at("empty").empty());  // a group with no hosts is still a group
}

TEST(InventoryRanges, ExpandsNumbersLettersStepsAndSeveralRanges) {
  EXPECT_EQ(*expand_host_range("gpu[01:03]"), (Names{"gpu01", "gpu02", "gpu03"}));
  EXPECT_EQ(*expand_host_range("gpu[08:10]"), (Names{"gpu08", "gpu09", "gpu10"}));
  EXPECT_EQ(*expand_host_range("n[8:10]"), (Names{"n8", "n9", "n10"}));
  EXPECT_EQ(*expand_host_range("node[a:c]"), (Names{"nodea", "nodeb", "nodec"}));
  EXPECT_EQ(*expand_host_range("h[1:10:3]"), (Names{"h1", "h4", "h7", "h10"}));
  EXPECT_EQ(*expand_host_range("h[:2]"), (Names{"h0", "h1", "h2"}));
  EXPECT_EQ(*expand_host_range("rack[1:2]-n[01:02].lan"),
            (Names{"rack1-n01.lan", "rack1-n02.lan", "rack2-n01.lan", "rack2-n02.lan"}));
  EXPECT_EQ(*expand_host_range("plain.example.com"), (Names{"plain.example.com"}));
}

TEST(InventoryRanges, MalformedRangesAreErrors) {
  struct Case {
    const char* pattern;
    const char* message;
  };
  for (const Case& c : {
           Case{"gpu[1:]", "the range has no end"},
           Case{"gpu[01:100]", "same width"},
           Case{"gpu[5:1]", "the begin comes after the end"},
           Case{"gpu[1:3:0]", "the step must be a positive integer"},
           Case{"gpu[1:3", "a '[' with no ']'"},
           Case{"gpu1:3]", "a ']' with no '['"},
           Case{"gpu[1-3]", "a range is [begin:end] or [begin:end:step]"},
           Case{"gpu[a:3]", "both be numbers or both be single letters"},
           Case{"gpu[x:y:z:w]", "a range is [begin:end]"},
           Case{"h[0:999999]", "more than 100000 hosts"},
       }) {
    auto r = expand_host_range(c.pattern);
    ASSERT_FALSE(r.ok()) << c.pattern;
    EXPECT_TRUE(HasError(r.error(), c.message)) << c.pattern;
  }
  // In a file, at the line (INI) or the key (YAML).
  auto ini = parse_inventory_ini("[g]\nok01\ngpu[1:x]\n", "r.ini");
  ASSERT_FALSE(ini.ok());
  EXPECT_TRUE(HasError(ini.error(), "r.ini:3: host range '[1:x]' in 'gpu[1:x]'"));
  auto yaml = parse_inventory_yaml("all:\n  hosts:\n    gpu[05:1]:\n", "r.yml");
  ASSERT_FALSE(yaml.ok());
  EXPECT_TRUE(HasError(yaml.error(), "r.yml:3:5: host range '[05:1]'"));
}

TEST(InventoryVars, ParentsLoseToChildrenAndChildrenToHosts) {
  auto inv = parse_inventory_yaml(R"(all:
  vars: {a: all, b: all, c: all, d: all}
  children:
    parent:
      vars: {b: parent, c: parent, d: parent}
      children:
        child:
          vars: {c: child, d: child}
          hosts:
            h1: {d: host}
)",
                                  "p.yml");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(host(*inv, "h1").vars, json({{"a", "all"}, {"b", "parent"}, {"c", "child"}, {"d", "host"}}));
  EXPECT_EQ(host(*inv, "h1").groups, (Names{"all", "child", "parent"}));
}

TEST(InventoryVars, GroupsOfEqualDepthMergeByNameUnlessGivenAPriority) {
  // beta sorts after alpha, so its value wins; a deeper group wins whatever its name.
  auto inv = parse_inventory_ini(R"([beta]
h1
h2
[alpha]
h1
h2
[aaa_deep]
h2
[alpha:children]
aaa_deep
[alpha:vars]
x=alpha
[beta:vars]
x=beta
[aaa_deep:vars]
x=deep
)",
                                 "eq.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(host(*inv, "h1").vars["x"], "beta");
  EXPECT_EQ(host(*inv, "h2").vars["x"], "deep");

  auto prio = parse_inventory_yaml(R"(alpha:
  vars: {x: alpha, ansible_group_priority: 10}
  hosts: {h1: }
beta:
  vars: {x: beta}
  hosts: {h1: }
)",
                                   "prio.yml");
  ASSERT_TRUE(prio.ok()) << prio.error();
  EXPECT_EQ(host(*prio, "h1").vars["x"], "alpha");
}

TEST(InventoryVars, GroupVarsAndHostVarsFilesAsAnsibleLayersThem) {
  TempDir d;
  test::write(d / "inv/hosts.yml", R"(all:
  vars: {from_all: inventory, site: inventory}
  children:
    gpus:
      vars: {role: inventory-gpus, tier: inventory}
      hosts:
        gpu01: {role: inventory-host, pin: inventory}
        gpu02:
)");
  test::write(d / "inv/group_vars/all.yml", "site: group_vars_all\ntier: group_vars_all\n");
  // A directory of files, read in sorted order; hidden files and other extensions skipped.
  test::write(d / "inv/group_vars/gpus/10-base.yml", "role: files-gpus\nvfio_ids: ['10de:1b80']\n");
  test::write(d / "inv/group_vars/gpus/20-more.yaml", "vfio_ids: ['10de:1b81']\n");
  test::write(d / "inv/group_vars/gpus/.hidden.yml", "role: hidden\n");
  test::write(d / "inv/group_vars/gpus/notes.txt", "role: txt\n");
  test::write(d / "inv/host_vars/gpu01", "pin: host_vars\n");  // no extension
  test::write(d / "inv/host_vars/gpu02.yml", "pin: yml\n");
  test::write(d / "inv/host_vars/gpu02.yaml", "pin: yaml\n");  // .yml found first: this one is not read

  auto inv = load_inventory(d / "inv/hosts.yml");
  ASSERT_TRUE(inv.ok()) << inv.error();
  const json& g1 = host(*inv, "gpu01").vars;
  const json& g2 = host(*inv, "gpu02").vars;
  EXPECT_EQ(g1["from_all"], "inventory");
  EXPECT_EQ(g1["site"], "group_vars_all");  // group_vars/all over the inventory's all vars
  EXPECT_EQ(g1["tier"], "group_vars_all");  // and, as in Ansible, over every inventory group var
  EXPECT_EQ(g2["role"], "files-gpus");      // group_vars/gpus over the inventory's gpus vars
  EXPECT_EQ(g1["role"], "inventory-host");  // inventory host vars over group_vars files
  EXPECT_EQ(g1["pin"], "host_vars");        // host_vars over inventory host vars
  EXPECT_EQ(g2["pin"], "yml");
  EXPECT_EQ(g1["vfio_ids"], json::array({"10de:1b81"}));  // later file of the directory wins
}

TEST(InventoryVars, BadVarsFileIsAnErrorWithItsPosition) {
  TempDir d;
  test::write(d / "hosts", "[gpus]\ngpu01\n");
  test::write(d / "group_vars/gpus.yml", "- a\n- b\n");
  auto inv = load_inventory(d / "hosts");
  ASSERT_FALSE(inv.ok());
  EXPECT_TRUE(HasError(inv.error(), d / "group_vars/gpus.yml:1:1: a vars file is a mapping of variables, not a list"));
}

TEST(InventoryHost, ConnectionSettings) {
  auto inv = parse_inventory_ini(R"([fleet]
a ansible_host=10.0.0.1 ansible_port="2200" ansible_user=root ansible_become=yes ansible_ssh_private_key_file=~/.ssh/a
b:2222 ansible_become=True ansible_private_key_file=/k/b
c ansible_become=no
d ansible_become=1
)",
                                 "c.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  const auto& a = host(*inv, "a");
  EXPECT_EQ(a.address(), "10.0.0.1");
  EXPECT_EQ(a.port(), 2200);  // a string port
  EXPECT_EQ(a.user(), "root");
  EXPECT_TRUE(a.become());  // "yes"
  EXPECT_EQ(a.key_file(), "~/.ssh/a");
  const auto& b = host(*inv, "b");
  EXPECT_EQ(b.address(), "b");
  EXPECT_EQ(b.port(), 2222);
  EXPECT_EQ(b.user(), "");
  EXPECT_TRUE(b.become());
  EXPECT_EQ(b.key_file(), "/k/b");
  EXPECT_FALSE(host(*inv, "c").become());
  EXPECT_EQ(host(*inv, "c").port(), std::nullopt);  // none: ssh and ~/.ssh/config decide
  EXPECT_TRUE(host(*inv, "d").become());

  auto y = parse_inventory_yaml(R"(all:
  hosts:
    e: {ansible_port: "2201", ansible_become: "YES", ansible_host: e.lan}
    f: {ansible_port: 2202, ansible_become: on}
    g: {ansible_become: "maybe"}
)",
                                "c.yml");
  ASSERT_TRUE(y.ok()) << y.error();
  EXPECT_EQ(host(*y, "e").port(), 2201);
  EXPECT_TRUE(host(*y, "e").become());
  EXPECT_EQ(host(*y, "e").address(), "e.lan");
  EXPECT_EQ(host(*y, "f").port(), 2202);
  EXPECT_TRUE(host(*y, "f").become());
  EXPECT_FALSE(host(*y, "g").become());
}

// Ansible lists such hosts and fails when it connects to one: the inventory loads, and the host
// cannot be reached (the fleet refuses it before any host runs).
TEST(InventoryHost, APortThatIsNoPortOrATemplateCannotBeReached) {
  auto inv = parse_inventory_ini("[g]\nh ansible_port=ssh\nok ansible_port=2222\nt ansible_port=\"{{ 22 | int }}\"\n",
                                 "p.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(host(*inv, "h").connection_error().value_or(""),
            "host 'h': ansible_port must be a port number (1-65535), not \"ssh\"");
  EXPECT_EQ(host(*inv, "ok").connection_error(), std::nullopt);
  EXPECT_EQ(
      host(*inv, "t").connection_error().value_or(""),
      "host 't': ansible_port is a Jinja2 template ('{{ 22 | int }}'), which gptagent does not evaluate: give the "
      "value itself");
  auto big = parse_inventory_yaml("all:\n  hosts:\n    h: {ansible_port: 70000}\n", "p.yml");
  ASSERT_TRUE(big.ok()) << big.error();
  EXPECT_NE(host(*big, "h").connection_error().value_or("").find("ansible_port must be a port number"),
            std::string::npos);
}

class InventoryLimit : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = parse_inventory_ini(R"([gpus]
gpu01
gpu02
gpu10
[web]
web01
web02
[db]
db01
[prod:children]
gpus
db
[staging]
web02
)",
                                 "limit.ini");
    ASSERT_TRUE(r.ok()) << r.error();
    inv = *r;
  }
  Inventory inv;
};

TEST_F(InventoryLimit, NamesGroupsAndGlobs) {
  EXPECT_EQ(limit(inv, "web01"), (Names{"web01"}));
  EXPECT_EQ(limit(inv, "gpus"), (Names{"gpu01", "gpu02", "gpu10"}));
  // In the order a run of Ansible reaches them: "all" walked a level at a time (web and staging
  // sit right under "all", gpus and db under prod).
  const Names all{"web01", "web02", "gpu01", "gpu02", "gpu10", "db01"};
  EXPECT_EQ(limit(inv, "all"), all);
  EXPECT_EQ(limit(inv, "*"), all);
  EXPECT_EQ(limit(inv, ""), all);  // no --limit
  EXPECT_EQ(limit(inv, "gpu0*"), (Names{"gpu01", "gpu02"}));
  EXPECT_EQ(limit(inv, "gpu?0"), (Names{"gpu10"}));
  EXPECT_EQ(limit(inv, "p*d"), (Names{"gpu01", "gpu02", "gpu10", "db01"}));  // a glob over group names
  EXPECT_EQ(limit(inv, "~gpu(01|10)"), (Names{"gpu01", "gpu10"}));
}

TEST_F(InventoryLimit, ListsInInventoryOrder) {
  EXPECT_EQ(limit(inv, "db01,web01"), (Names{"web01", "db01"}));
  EXPECT_EQ(limit(inv, "web:db"), (Names{"web01", "web02", "db01"}));
  EXPECT_EQ(limit(inv, " gpu01 , gpu01 "), (Names{"gpu01"}));
}

TEST_F(InventoryLimit, ExclusionAndIntersection) {
  EXPECT_EQ(limit(inv, "all,!gpus"), (Names{"web01", "web02", "db01"}));
  EXPECT_EQ(limit(inv, "!gpus"), (Names{"web01", "web02", "db01"}));  // from all
  EXPECT_EQ(limit(inv, "!web02,web"), (Names{"web01"}));              // exclusions come last
  EXPECT_EQ(limit(inv, "prod:&gpus"), (Names{"gpu01", "gpu02", "gpu10"}));
  EXPECT_EQ(limit(inv, "web:&staging"), (Names{"web02"}));
  EXPECT_EQ(limit(inv, "prod:!gpu1*:&gpu*"), (Names{"gpu01", "gpu02"}));
}

TEST_F(InventoryLimit, Subscripts) {
  EXPECT_EQ(limit(inv, "gpus[0]"), (Names{"gpu01"}));
  EXPECT_EQ(limit(inv, "gpus[-1]"), (Names{"gpu10"}));
  EXPECT_EQ(limit(inv, "gpus[1:]"), (Names{"gpu02", "gpu10"}));
  EXPECT_EQ(limit(inv, "gpus[0:1]"), (Names{"gpu01", "gpu02"}));
}

TEST_F(InventoryLimit, NoMatchIsAnError) {
  EXPECT_EQ(limit(inv, "nosuch"), (Names{"error: --limit 'nosuch' matches no host in limit.ini"}));
  EXPECT_EQ(limit(inv, "gpus:&web"), (Names{"error: --limit 'gpus:&web' matches no host in limit.ini"}));
  EXPECT_EQ(limit(inv, "gpus[7]"), (Names{"error: --limit 'gpus[7]' matches no host in limit.ini"}));
  EXPECT_TRUE(HasError(limit(inv, "~(").front(), "invalid regular expression in host pattern '~('"));
  EXPECT_TRUE(HasError(limit(inv, "web,!").front(), "'!' names no pattern"));
}

TEST(InventoryErrors, YamlErrorsHaveLineAndColumn) {
  auto unknown = parse_inventory_yaml(R"(all:
  children:
    gpus:
      hosts:
        gpu01:
      host_vars:
        x: 1
    web:
      hosts:
        - web01
        - web02
)",
                                      "bad.yml");
  ASSERT_FALSE(unknown.ok());
  // Every error at once, each where it is.
  EXPECT_TRUE(HasError(unknown.error(), "bad.yml:6:7: unknown key 'host_vars' in group 'gpus'"));
  EXPECT_TRUE(
      HasError(unknown.error(), "bad.yml:10:9: hosts of group 'web' must be a mapping (name: ...), not a list"));

  auto syntax = parse_inventory_yaml("all:\n  hosts: [a\n", "syntax.yml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_TRUE(std::regex_search(syntax.error(), std::regex(R"(^syntax\.yml:\d+:\d+: YAML syntax error)")))
      << syntax.error();

  auto host_vars = parse_inventory_yaml("all:\n  hosts:\n    a: 5\n", "hv.yml");
  ASSERT_FALSE(host_vars.ok());
  EXPECT_TRUE(HasError(host_vars.error(), "hv.yml:3:8: the vars of host 'a' must be a mapping"));

  auto dup = parse_inventory_yaml("all:\n  hosts:\n    a:\n    a:\n", "dup.yml");
  ASSERT_FALSE(dup.ok());
  EXPECT_TRUE(HasError(dup.error(), "dup.yml:4:5: duplicate key 'a'"));

  auto list = parse_inventory_yaml("- all\n", "list.yml");
  ASSERT_FALSE(list.ok());
  EXPECT_TRUE(HasError(list.error(), "list.yml:1:1: a YAML inventory is a mapping of groups"));
}

TEST(InventoryErrors, IniErrorsHaveTheLine) {
  auto inv = parse_inventory_ini(R"([gpus]
gpu01
[gpus:vars]
novalue
[web:child]
web01
[bad group]
[gpus]
gpu02 key
gpu03 x="open
[ghost:vars]
a=1
)",
                                 "bad.ini");
  ASSERT_FALSE(inv.ok());
  const std::string& e = inv.error();
  EXPECT_TRUE(HasError(e, "bad.ini:4: expected key=value in [gpus:vars], got 'novalue'"));
  EXPECT_TRUE(HasError(e, "bad.ini:5: section [web:child] has unknown type 'child'"));
  EXPECT_TRUE(HasError(e, "bad.ini:7: invalid section header '[bad group]'"));
  EXPECT_TRUE(HasError(e, "bad.ini:9: expected key=value after the host name, got 'key'"));
  EXPECT_TRUE(HasError(e, "bad.ini:10: cannot parse the host line 'gpu03 x=\"open': no closing quotation"));
  EXPECT_TRUE(HasError(e, "bad.ini:11: section [ghost:vars] is for a group that is never defined"));
  EXPECT_EQ(e.find("bad.ini:6:"), std::string::npos);  // the lines of a bad section are not reported again
}

// Ansible's ini plugin: "FILE:LINE: Section [OSEv3:children] includes undefined group: nfs".
TEST(InventoryErrors, AnIniChildThatIsNeverDefinedIsAnErrorWithTheLine) {
  auto inv = parse_inventory_ini("[OSEv3:children]\nmasters\nnfs\n[masters]\nm1\n[nfs:vars]\nx=1\n", "osev3.ini");
  ASSERT_FALSE(inv.ok());
  EXPECT_TRUE(HasError(inv.error(), "osev3.ini:3: Section [OSEv3:children] includes undefined group: nfs"))
      << inv.error();
  EXPECT_EQ(inv.error().find("masters"), std::string::npos) << "masters is defined further down: " << inv.error();
  EXPECT_EQ(inv.error().find("osev3.ini:6:"), std::string::npos) << "one error for nfs: " << inv.error();

  // Defined after the reference, by a section of its own (even an empty one), it is fine.
  auto later = parse_inventory_ini("[parent:children]\nkid\n[kid]\n", "later.ini");
  ASSERT_TRUE(later.ok()) << later.error();
  EXPECT_TRUE(later->groups.at("kid").empty());

  // In YAML, naming a group under children defines it (ansible-core 2.14 does the same).
  auto yaml = parse_inventory_yaml("all:\n  children:\n    OSEv3:\n      children:\n        nfs:\n", "osev3.yml");
  ASSERT_TRUE(yaml.ok()) << yaml.error();
  EXPECT_TRUE(yaml->groups.at("nfs").empty());
}

TEST(InventoryLoad, AChildDefinedInAnEarlierFileOfTheDirectoryIsDefined) {
  TempDir d;
  test::write(d / "inv/01-gpus.yml", "gpus:\n  hosts:\n    gpu01:\n");
  test::write(d / "inv/02-fleet", "[fleet:children]\ngpus\nnfs\n");
  auto inv = load_inventory(d / "inv");
  ASSERT_FALSE(inv.ok());
  EXPECT_TRUE(HasError(inv.error(), d / "inv/02-fleet:3: Section [fleet:children] includes undefined group: nfs"))
      << inv.error();
  EXPECT_EQ(inv.error().find("gpus"), std::string::npos) << inv.error();
}

TEST(InventoryErrors, ChildrenCyclesAreErrors) {
  auto yaml = parse_inventory_yaml(R"(all:
  children:
    a:
      children:
        b:
          children:
            c:
              children:
                a:
)",
                                   "cycle.yml");
  ASSERT_FALSE(yaml.ok());
  EXPECT_TRUE(HasError(yaml.error(), "cycle.yml:9:17: children form a cycle: c -> a -> b -> c"));

  auto ini = parse_inventory_ini("[a:children]\nb\n[b:children]\na\n", "cycle.ini");
  ASSERT_FALSE(ini.ok());
  EXPECT_TRUE(HasError(ini.error(), "cycle.ini:4: children form a cycle: b -> a -> b"));

  auto self = parse_inventory_ini("[a:children]\na\n", "self.ini");
  ASSERT_FALSE(self.ok());
  EXPECT_TRUE(HasError(self.error(), "self.ini:2: group 'a' cannot be a child of itself"));

  auto all = parse_inventory_yaml("web:\n  children:\n    all:\n", "all.yml");
  ASSERT_FALSE(all.ok());
  EXPECT_TRUE(HasError(all.error(), "all.yml:3:5: group 'all' cannot be a child of 'web'"));
}

TEST(InventoryLoad, FormatFromTheExtensionOrTheContent) {
  TempDir d;
  test::write(d / "yaml_hosts", "all:\n  hosts:\n    h1: {n: 1}\n");  // no extension, YAML content
  test::write(d / "ini_hosts", "h1 n=1\n");
  test::write(d / "hosts.yml", "all:\n  hosts:\n    h1: {n: 1}\n");
  for (const char* file : {"yaml_hosts", "ini_hosts", "hosts.yml"}) {
    auto inv = load_inventory(d / file);
    ASSERT_TRUE(inv.ok()) << file << ": " << inv.error();
    EXPECT_EQ(names(*inv), (Names{"h1"})) << file;
    EXPECT_EQ(inv->hosts[0].vars["n"], 1) << file;
    EXPECT_EQ(inv->source, d / file);
  }
  test::write(d / "broken.yaml", "all: [\n");
  auto broken = load_inventory(d / "broken.yaml");
  ASSERT_FALSE(broken.ok());
  EXPECT_TRUE(HasError(broken.error(), d / "broken.yaml:"));
  EXPECT_TRUE(HasError(broken.error(), "YAML syntax error"));
}

TEST(InventoryLoad, MissingFilesScriptsAndPlugins) {
  TempDir d;
  auto missing = load_inventory(d / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(HasError(missing.error(), d / "nope: cannot read the inventory"));

  test::write(d / "dynamic.py", "#!/usr/bin/env python3\nprint('{}')\n", 0755);
  auto script = load_inventory(d / "dynamic.py");
  ASSERT_FALSE(script.ok());
  EXPECT_TRUE(HasError(script.error(), "inventory scripts are not supported"));

  test::write(d / "aws_ec2.yml", "plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n");
  auto plugin = load_inventory(d / "aws_ec2.yml");
  ASSERT_FALSE(plugin.ok());
  EXPECT_TRUE(HasError(plugin.error(), "inventory plugins (plugin: amazon.aws.aws_ec2) are not supported"));
}

TEST(InventoryLoad, ADirectoryIsEveryInventoryInIt) {
  TempDir d;
  test::write(d / "inv/01-gpus.yml", "gpus:\n  hosts:\n    gpu[01:02]:\n");
  test::write(d / "inv/02-web", "[web]\nweb01\n[fleet:children]\ngpus\nweb\n");
  test::write(d / "inv/README.md", "# not an inventory: [skipped\n");
  test::write(d / "inv/old.ini", "[[[ skipped as Ansible skips .ini files in a directory\n");
  test::write(d / "inv/group_vars/fleet.yml", "managed: true\n");
  auto inv = load_inventory(d / "inv");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(names(*inv), (Names{"gpu01", "gpu02", "web01"}));
  EXPECT_EQ(inv->groups.at("fleet"), (Names{"gpu01", "gpu02", "web01"}));
  EXPECT_EQ(host(*inv, "gpu02").vars["managed"], true);
}

TEST(InventoryLoad, ACommaSeparatedHostList) {
  auto inv = load_inventory("web01,web02:2222,gpu[1:2],");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(names(*inv), (Names{"web01", "web02", "gpu1", "gpu2"}));
  EXPECT_EQ(inv->groups.at("ungrouped"), names(*inv));
  EXPECT_EQ(host(*inv, "web02").port(), 2222);
}

// What ansible-inventory 2.14 --list printed for this inventory, byte for byte.
TEST(InventoryList, IsWhatAnsibleInventoryListPrints) {
  auto inv = parse_inventory_yaml(R"(all:
  vars: {v: 1}
  hosts:
    lone:
  children:
    gpus:
      hosts:
        gpu01: {ansible_port: 2222}
      children:
        big:
          hosts:
            gpu02:
    empty:
      children:
        nfs:
)",
                                  "l.yml");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(inventory_list(*inv).dump(4), R"({
    "_meta": {
        "hostvars": {
            "gpu01": {
                "ansible_port": 2222,
                "v": 1
            },
            "gpu02": {
                "v": 1
            },
            "lone": {
                "v": 1
            }
        }
    },
    "all": {
        "children": [
            "ungrouped",
            "gpus",
            "empty"
        ]
    },
    "big": {
        "hosts": [
            "gpu02"
        ]
    },
    "empty": {
        "children": [
            "nfs"
        ]
    },
    "gpus": {
        "children": [
            "big"
        ],
        "hosts": [
            "gpu01"
        ]
    },
    "ungrouped": {
        "hosts": [
            "lone"
        ]
    }
})");

  // INI: groups that no section names as a child are children of "all", after "ungrouped"
  // (ansible-inventory 2.14 printed these too).
  auto ini = parse_inventory_ini("solo\n[web]\nweb01\n[gpus]\ngpu01\n[fleet:children]\ngpus\n", "l.ini");
  ASSERT_TRUE(ini.ok()) << ini.error();
  const auto list = inventory_list(*ini);
  EXPECT_EQ(list["all"]["children"],
            (nlohmann::json{"ungrouped", "web", "fleet"}));  // in the order first named, as ansible-inventory
  EXPECT_EQ(list["fleet"], (nlohmann::json{{"children", {"gpus"}}}));
  EXPECT_EQ(list["ungrouped"]["hosts"], (nlohmann::json{"solo"}));
}

// Orders and refusals as ansible-core 2.14 shows them (ansible-inventory --list, and the hosts a
// play reaches under --limit).
TEST(InventoryOrder, SubscriptsCountInTheGroupsOwnOrderAndARunFollowsAll) {
  auto inv = parse_inventory_ini(
      "[mongo_servers]\nmongo1\nmongo2\nmongo3\nmongo4\n[replication_servers]\nmongo4\nmongo3\nmongo1\nmongo2\n",
      "m.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(inv->groups.at("replication_servers"), (Names{"mongo4", "mongo3", "mongo1", "mongo2"}));
  EXPECT_EQ(limit(*inv, "replication_servers[0]"), (Names{"mongo4"}));
  EXPECT_EQ(limit(*inv, "replication_servers[0:1]"), (Names{"mongo3", "mongo4"}));  // picked in its order, run in all's
}

TEST(InventoryOrder, IniChildrenComeInTheOrderTheyComeToExist) {
  auto inv = parse_inventory_ini(
      "[top:children]\nlater\nearly\n[early]\ne1\n[later]\nl1\n[other]\no1\n[top2:children]\nother\n", "c.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_EQ(inv->child_groups.at("top"), (Names{"early", "later"}));  // named before either existed
  EXPECT_EQ(inv->child_groups.at("top2"), (Names{"other"}));
  EXPECT_EQ(inventory_list(*inv)["top"]["children"], json({"early", "later"}));
}

TEST(InventoryErrors, AYamlHostNameThatIsANumberIsRefusedAsAnsibleDoes) {
  auto inv = parse_inventory_yaml("all:\n  hosts:\n    1234: {}\n    '5678': {}\n", "int.yml");
  ASSERT_FALSE(inv.ok());
  EXPECT_TRUE(HasError(inv.error(),
                       "int.yml:3:5: Host pattern 1234 must be a string. Enclose integers/floats in quotation marks."));
  EXPECT_EQ(inv.error().find("5678"), std::string::npos) << "quoted, it is a name";
}

TEST(InventoryLoad, AnInventoryWithoutHostsSelectsNoneWithoutAnError) {
  auto inv = parse_inventory_ini("[etcd]\n# node1\n[k8s:children]\netcd\n", "empty.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  auto all = select_hosts(*inv, "all");
  ASSERT_TRUE(all.ok()) << all.error();
  EXPECT_TRUE(all->empty());
  auto some = parse_inventory_ini("[g]\nh1\n", "some.ini");
  ASSERT_TRUE(some.ok());
  auto none = select_hosts(*some, "nothere*");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error(), "--limit 'nothere*' matches no host in some.ini");
}

}  // namespace
}  // namespace gpt
