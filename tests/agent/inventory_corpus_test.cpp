// Real inventories (tests/fixtures/inventories/, sources in SOURCES.md) read by gptagent and by
// Debian's ansible-core, side by side: the groups and hosts `ansible-inventory --list` prints, the
// connection variables of every host, the hosts each --limit pattern selects, and the ssh command
// line each host is reached with (a recording ssh bind-mounted over /usr/bin/ssh in a private mount
// namespace: no packet leaves, no ssh of the machine is touched).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "agent/text.hpp"
#include "tests/support/ansible.hpp"
#include "tests/support/sandbox.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
namespace test = gpt::test;

namespace {

struct InventoryCase {
  std::string name;  // the case directory
  fs::path inventory;
  std::vector<std::string> limits;
};

void PrintTo(const InventoryCase& c, std::ostream* os) { *os << c.name; }

std::vector<InventoryCase> inventory_cases() {
  std::vector<InventoryCase> cases;
  const fs::path dir = test::source_path("tests/fixtures/inventories");
  if (!fs::is_directory(dir)) return cases;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_directory()) continue;
    json spec = json::parse(test::slurp((e.path() / "case.json").string()));
    InventoryCase c{e.path().filename().string(), e.path() / spec.at("inventory").get<std::string>(), {}};
    for (const auto& l : spec.value("limits", json::array())) c.limits.push_back(l.get<std::string>());
    cases.push_back(std::move(c));
  }
  std::sort(cases.begin(), cases.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return cases;
}

using test::Ansible;

// "  hosts (2):\n    a\n    b\n" as both print it.
std::vector<std::string> listed_hosts(const std::string& out) {
  std::vector<std::string> hosts;
  for (auto line : gpt::lines(out))
    if (line.starts_with("    ")) hosts.emplace_back(gpt::trim(line));
  return hosts;
}

// The groups with their hosts and children, and every host (from the groups: a host without
// variables has no entry in _meta.hostvars).
struct Listing {
  std::map<std::string, std::vector<std::string>> hosts, children;
  std::set<std::string> all_hosts;
  json hostvars;
};

Listing listing(const json& doc) {
  Listing l;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() == "_meta") continue;
    for (const auto& h : it.value().value("hosts", json::array())) {
      l.hosts[it.key()].push_back(h.get<std::string>());
      l.all_hosts.insert(h.get<std::string>());
    }
    for (const auto& c : it.value().value("children", json::array()))
      l.children[it.key()].push_back(c.get<std::string>());
  }
  l.hostvars = doc.contains("_meta") ? doc["_meta"].value("hostvars", json::object()) : json::object();
  return l;
}

// Whether Ansible fixes the order of the hosts a run reaches. It walks the groups from "all" a
// level at a time, the first level in order, each next one by iterating over a Python set of the
// previous level's groups: where two groups of one level bring new children, their order (and that
// of their hosts) changes with the hash seed, and only the set of hosts can be compared.
bool run_order_is_fixed(const Listing& l) {
  auto children = [&](const std::string& g) {
    auto it = l.children.find(g);
    return it == l.children.end() ? std::vector<std::string>{} : it->second;
  };
  std::set<std::string> seen{"all"}, level{"all"};
  for (const auto& c : children("all")) seen.insert(c), level.insert(c);
  while (!level.empty()) {
    std::set<std::string> next;
    int bringing = 0;
    for (const auto& g : level) {
      bool brings = false;
      for (const auto& c : children(g))
        if (!seen.count(c)) brings = true, next.insert(c);
      bringing += brings;
    }
    if (bringing > 1) return false;
    seen.insert(next.begin(), next.end());
    level = std::move(next);
  }
  return true;
}

const std::vector<std::string> kConnectionVars{"ansible_host",
                                               "ansible_ssh_host",
                                               "ansible_port",
                                               "ansible_ssh_port",
                                               "ansible_user",
                                               "ansible_ssh_user",
                                               "ansible_connection",
                                               "ansible_become",
                                               "ansible_become_user",
                                               "ansible_become_method",
                                               "ansible_become_exe",
                                               "ansible_ssh_private_key_file",
                                               "ansible_private_key_file",
                                               "ansible_ssh_common_args",
                                               "ansible_ssh_extra_args",
                                               "ansible_ssh_executable"};

json connection_vars(const json& hostvars, const std::string& host) {
  json out = json::object();
  if (!hostvars.contains(host)) return out;
  for (const auto& k : kConnectionVars)
    if (hostvars[host].contains(k)) out[k] = hostvars[host][k];
  return out;
}

// What an ssh command line asks of ssh, whichever way it is spelled: -p 22 or -o Port=22, -l or
// -o User="u", -i or -o IdentityFile="k". Each tool's own settings (control sockets, timeouts,
// batch mode, authentication methods, compression, the master's -f -N -E) are left out; every
// other option, the user's ansible_ssh_common_args and _extra_args, is kept in order.
struct SshCall {
  std::string destination, port, user, identity;
  std::vector<std::string> options;
  bool operator==(const SshCall&) const = default;
};

std::string unquoted(std::string v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return v;
}

SshCall parse_ssh(const std::vector<std::string>& argv, const std::string& home) {
  static const std::set<std::string> with_value{"-B", "-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L",
                                                "-l", "-m", "-O", "-o", "-p", "-Q", "-R", "-S", "-W", "-w"};
  static const std::set<std::string> own{"controlmaster",
                                         "controlpersist",
                                         "controlpath",
                                         "connecttimeout",
                                         "batchmode",
                                         "serveraliveinterval",
                                         "identitiesonly",
                                         "kbdinteractiveauthentication",
                                         "preferredauthentications",
                                         "passwordauthentication"};
  static const std::set<std::string> own_flags{"-C", "-f", "-N", "-q", "-v", "-vvv", "-tt"};
  auto home_expanded = [&](std::string p) { return p.starts_with("~/") ? home + p.substr(1) : p; };
  SshCall c;
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--") {
      if (i + 1 < argv.size()) c.destination = argv[i + 1];
      break;
    }
    if (a.empty() || a[0] != '-') {
      c.destination = a;
      break;
    }
    std::string flag = a.substr(0, 2), value;
    if (with_value.count(flag)) {
      value = a.size() > 2 ? a.substr(2) : (i + 1 < argv.size() ? argv[++i] : "");
    } else {
      if (!own_flags.count(a)) c.options.push_back(a);
      continue;
    }
    if (flag == "-p") {
      c.port = value;
    } else if (flag == "-l") {
      c.user = value;
    } else if (flag == "-i") {
      c.identity = home_expanded(value);
    } else if (flag == "-o") {
      const auto eq = value.find_first_of("= ");
      std::string key = value.substr(0, eq), v = eq == std::string::npos ? "" : unquoted(value.substr(eq + 1));
      std::transform(key.begin(), key.end(), key.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (key == "port")
        c.port = v;
      else if (key == "user")
        c.user = v;
      else if (key == "identityfile")
        c.identity = home_expanded(v);
      else if (!own.count(key))
        c.options.push_back("-o " + key + "=" + v);
    } else if (flag != "-E" && flag != "-O") {
      c.options.push_back(flag + " " + value);
    }
  }
  return c;
}

std::ostream& operator<<(std::ostream& o, const SshCall& c) {
  o << "{destination " << c.destination << ", port " << c.port << ", user " << c.user << ", identity " << c.identity
    << ", options [";
  for (const auto& x : c.options) o << " " << x;
  return o << " ]}";
}

// The ssh calls a run made: a recording ssh over /usr/bin/ssh, only in this run's mount namespace.
// Each call leaves its argv (NUL-separated) in LOG/<pid> and fails as an unreachable host does.
struct RecordedSsh {
  test::TempDir dir;
  RecordedSsh() {
    fs::create_directories(dir / "log");
    test::write(dir / "ssh",
                "#!/bin/sh\nprintf '%s\\0' \"$0\" \"$@\" > \"$FAKE_SSH_LOG/$$\"\n"
                "echo 'ssh: connect to host: Connection refused' >&2\nexit 255\n",
                0755);
  }
  // Runs `program args` in a private mount namespace where /usr/bin/ssh is the recorder.
  test::ProcResult run(const std::vector<std::string>& command, const std::vector<std::string>& env = {}) {
    std::vector<std::string> a{
        "-m", "--propagation", "private", "sh", "-c", "mount --bind \"$0\" /usr/bin/ssh && exec \"$@\"", dir / "ssh"};
    a.insert(a.end(), command.begin(), command.end());
    std::vector<std::string> e{"FAKE_SSH_LOG=" + dir / "log"};
    e.insert(e.end(), env.begin(), env.end());
    return test::run_program("/usr/bin/unshare", a, e);
  }
  std::vector<std::vector<std::string>> calls() const {
    std::vector<std::vector<std::string>> out;
    for (const auto& f : fs::directory_iterator(dir / "log")) {
      std::vector<std::string> argv;
      const std::string text = test::slurp(f.path().string());
      size_t start = 0;
      for (size_t i = 0; i < text.size(); ++i)
        if (text[i] == '\0') {
          argv.push_back(text.substr(start, i - start));
          start = i + 1;
        }
      out.push_back(std::move(argv));
    }
    return out;
  }
  void clear() {
    fs::remove_all(dir / "log");
    fs::create_directories(dir / "log");
  }
};

class RealInventories : public ::testing::TestWithParam<InventoryCase> {
 protected:
  Ansible ansible;
  std::string cwd() const {
    return fs::is_directory(GetParam().inventory) ? GetParam().inventory.string()
                                                  : GetParam().inventory.parent_path().string();
  }
};

TEST_P(RealInventories, ListShowsTheGroupsHostsAndConnectionVariablesAnsibleInventoryShows) {
  const auto& c = GetParam();
  auto theirs = ansible.run("ansible-inventory", {"-i", c.inventory.string(), "--list"}, cwd());
  auto ours = test::run_agent({"inventory", "-i", c.inventory.string(), "--list"});
  if (theirs.exit_code != 0) {
    // A file Ansible cannot parse (it would skip it with a warning; here that is fatal, as gptagent
    // makes it): gptagent refuses the inventory, naming the same file and line when Ansible does.
    EXPECT_NE(ours.exit_code, 0) << ours.out;
    static const std::regex place(R"(([^\s:'"]+):([0-9]+):)");
    std::smatch m;
    if (std::regex_search(theirs.err, m, place)) {
      EXPECT_NE(ours.err.find(fs::path(m[1].str()).filename().string() + ":" + m[2].str()), std::string::npos)
          << "Ansible: " << theirs.err << "\ngptagent: " << ours.err;
    }
    return;
  }
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  const Listing a = listing(json::parse(theirs.out)), g = listing(json::parse(ours.out));
  EXPECT_EQ(g.all_hosts, a.all_hosts);
  EXPECT_EQ(g.hosts, a.hosts);
  EXPECT_EQ(g.children, a.children);
  for (const auto& h : a.all_hosts) EXPECT_EQ(connection_vars(g.hostvars, h), connection_vars(a.hostvars, h)) << h;
}

TEST_P(RealInventories, ListHostsSelectsWhatAnsibleSelectsForEachLimitInTheOrderARunReachesThem) {
  const auto& c = GetParam();
  std::vector<std::string> patterns{"all"};
  patterns.insert(patterns.end(), c.limits.begin(), c.limits.end());
  auto listed = ansible.run("ansible-inventory", {"-i", c.inventory.string(), "--list"}, cwd());
  const bool refused = listed.exit_code != 0;
  json answers;
  bool fixed = true, no_host = false;
  if (!refused) {
    EXPECT_GE(patterns.size(), 3u) << "each case tries several patterns";
    std::vector<std::string> args{test::source_path("tests/support/ansible_hosts.py"), c.inventory.string()};
    args.insert(args.end(), patterns.begin(), patterns.end());
    auto r = ansible.run("/usr/bin/python3", args, cwd());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    answers = json::parse(r.out);
    const Listing l = listing(json::parse(listed.out));
    fixed = run_order_is_fixed(l);
    no_host = l.all_hosts.empty();
  }
  const std::string playbook = test::source_path("playbooks/demo.yaml");
  for (const auto& p : patterns) {
    SCOPED_TRACE("pattern " + p);
    auto ours = test::run_agent({"apply", playbook, "-i", c.inventory.string(), "-l", p, "--list-hosts"});
    if (refused) {
      EXPECT_NE(ours.exit_code, 0) << ours.out;
      continue;
    }
    const json& a = answers[p];
    if (a.contains("error") || a["hosts"].empty()) {
      // ansible-playbook: an inventory without hosts plays nothing (exit 0); a limit that leaves
      // none of its hosts is an error.
      EXPECT_EQ(ours.exit_code, no_host && !a.contains("error") ? 0 : 1) << ours.out << ours.err << a.dump();
      EXPECT_EQ(listed_hosts(ours.out), std::vector<std::string>{});
      continue;
    }
    ASSERT_EQ(ours.exit_code, 0) << ours.err;
    const auto expected = a["hosts"].get<std::vector<std::string>>();
    auto got = listed_hosts(ours.out);
    if (fixed) {
      EXPECT_EQ(got, expected);
    } else {
      auto sorted = expected;
      std::sort(sorted.begin(), sorted.end());
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, sorted) << "(Ansible's own order is not fixed here: compared as sets)";
    }
  }
}

TEST_P(RealInventories, EachHostIsReachedWithTheSshSettingsAnsibleUses) {
  if (::geteuid() != 0) GTEST_SKIP() << "a private mount namespace needs root";
  const auto& c = GetParam();
  auto listed = ansible.run("ansible-inventory", {"-i", c.inventory.string(), "--list"}, cwd());
  if (listed.exit_code != 0)
    GTEST_SKIP() << "Ansible refuses this inventory (the listing test checks gptagent does too)";
  const Listing l = listing(json::parse(listed.out));
  // Hosts Ansible reaches with ssh: not the local ones (neither tool runs ssh for those), nor those
  // gptagent refuses before any host runs: with a password (Ansible would log in through sshpass)
  // or a connection variable that is a Jinja2 template (Ansible templates it, gptagent does not).
  std::vector<std::string> remote, refused_hosts;
  for (const auto& h : l.all_hosts) {
    const json v = connection_vars(l.hostvars, h);
    const std::string conn = v.value("ansible_connection", "ssh");
    const json& all_vars = l.hostvars.contains(h) ? l.hostvars[h] : json::object();
    bool refused = all_vars.contains("ansible_password") || all_vars.contains("ansible_ssh_pass");
    for (const auto& [k, value] : v.items())
      refused = refused || (value.is_string() && value.get<std::string>().find("{{") != std::string::npos);
    if (conn == "ssh" || conn == "smart") (refused ? refused_hosts : remote).push_back(h);
  }
  RecordedSsh ssh;  // whatever happens, no packet leaves
  for (const auto& h : refused_hosts) {
    auto refused = ssh.run({GPTAGENT_BIN, "apply", test::source_path("playbooks/demo.yaml"), "-i", c.inventory.string(),
                            "-l", h, "--check"});
    EXPECT_EQ(refused.exit_code, 1) << refused.out;
    EXPECT_NE(refused.err.find("host '" + h + "': "), std::string::npos) << refused.err;
    EXPECT_NE(refused.err.find("no host was touched"), std::string::npos) << refused.err;
    EXPECT_TRUE(ssh.calls().empty()) << "refused before any ssh";
  }
  if (remote.empty()) {
    if (refused_hosts.empty()) GTEST_SKIP() << "every host of this inventory is local";
    return;  // each was refused, as checked above
  }
  // Ansible takes a few seconds per ten unreachable hosts: of a large inventory, every n-th host
  // (40 of them, the ones with their own settings among them as much as any other).
  if (remote.size() > 40) {
    std::vector<std::string> sample;
    for (size_t i = 0; i < 40; ++i) sample.push_back(remote[i * remote.size() / 40]);
    remote = std::move(sample);
  }
  std::string limit;
  for (const auto& h : remote) limit += (limit.empty() ? "" : ",") + h;

  auto theirs =
      ssh.run({"env", "-C", cwd(), "HOME=" + ansible.home().path(), "ANSIBLE_CONFIG=" + ansible.home() / "none.cfg",
               "ANSIBLE_SSH_CONTROL_PATH_DIR=" + ansible.home() / "cp", "ANSIBLE_LOCAL_TEMP=" + ansible.home() / "tmp",
               "ANSIBLE_HOST_KEY_CHECKING=True", "ansible", "all", "-i", c.inventory.string(), "-l", limit, "-m", "raw",
               "-a", "true"});
  std::map<std::string, SshCall> by_ansible;
  for (const auto& argv : ssh.calls()) {
    auto call = parse_ssh(argv, ansible.home().path());
    if (!call.destination.empty()) by_ansible[call.destination] = call;  // not its probe "ssh -o ControlPersist"
  }
  ASSERT_FALSE(by_ansible.empty()) << theirs.out << theirs.err;

  ssh.clear();
  test::TempDir work;
  test::write(work / "pb.yaml", "tasks: []\n");
  auto ours = ssh.run({"env", "HOME=" + ansible.home().path(), GPTAGENT_BIN, "apply", work / "pb.yaml", "-i",
                       c.inventory.string(), "-l", limit, "--check", "--color", "never"});
  std::map<std::string, SshCall> by_gptagent;
  for (const auto& argv : ssh.calls()) {
    if (std::find(argv.begin(), argv.end(), "ControlMaster=yes") == argv.end()) continue;  // the connection itself
    auto call = parse_ssh(argv, ansible.home().path());
    by_gptagent[call.destination] = call;
  }
  EXPECT_NE(ours.exit_code, 0) << "every host was unreachable";
  // One host per destination in each: a destination two hosts share is reached the same way by both.
  ASSERT_EQ(by_gptagent.size(), by_ansible.size()) << ours.out << ours.err << "\nAnsible:\n"
                                                   << [&] {
                                                        std::ostringstream o;
                                                        for (const auto& [d, call] : by_ansible) o << call << "\n";
                                                        return o.str();
                                                      }();
  for (const auto& [dest, call] : by_ansible) {
    ASSERT_TRUE(by_gptagent.count(dest)) << dest << "\n" << ours.out;
    EXPECT_EQ(by_gptagent[dest], call) << dest;
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, RealInventories, ::testing::ValuesIn(inventory_cases()), [](const auto& info) {
  std::string n = info.param.name;
  std::replace_if(
      n.begin(), n.end(), [](unsigned char ch) { return !std::isalnum(ch); }, '_');
  return n;
});

TEST(RealInventoryCorpus, HoldsAtLeastFifteenInventoriesWithTheirSources) {
  const auto cases = inventory_cases();
  EXPECT_GE(cases.size(), 15u);
  const std::string sources = test::slurp(test::source_path("tests/fixtures/inventories/SOURCES.md"));
  for (const auto& c : cases) EXPECT_NE(sources.find(c.name), std::string::npos) << c.name << " has no source";
}

}  // namespace
