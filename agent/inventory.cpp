#include "agent/inventory.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <tuple>

#include "agent/text.hpp"
#include "agent/yaml.hpp"

namespace gpt {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxBytes = 8u << 20;  // an inventory file larger than this is refused
constexpr size_t kMaxHosts = 100000;    // a range like h[0:99999999] is a typo, not a fleet
constexpr size_t kMaxErrors = 20;

// Every error of a load, so that one run shows all the lines to fix, not the first only.
class Errors {
 public:
  void add(std::string message) {
    if (list_.size() < kMaxErrors)
      list_.push_back(std::move(message));
    else
      ++dropped_;
  }
  bool empty() const { return list_.empty(); }
  Error error() const {
    std::string all = join(list_, "\n");
    if (dropped_) all += "\n(and " + std::to_string(dropped_) + " more errors)";
    return Error{all};
  }

 private:
  std::vector<std::string> list_;
  size_t dropped_ = 0;
};

std::string quote(std::string_view s) { return "'" + std::string(s) + "'"; }

// ---- values ----

// PyYAML's YAML 1.1 resolver, which Ansible reads inventories and vars files with: `yes` and `on`
// are booleans, `0755` is octal, `1e5` (no dot) is text. Sexagesimal numbers (1:30) are left out.
std::optional<long long> yaml11_int(const std::string& s) {
  static const std::regex re(R"([-+]?(0b[01_]+|0x[0-9a-fA-F_]+|0[0-7_]+|0|[1-9][0-9_]*))");
  if (!std::regex_match(s, re)) return std::nullopt;
  bool negative = s[0] == '-';
  std::string digits = s.substr(s[0] == '-' || s[0] == '+' ? 1 : 0);
  digits.erase(std::remove(digits.begin(), digits.end(), '_'), digits.end());
  int base = 10;
  if (digits.rfind("0b", 0) == 0)
    base = 2, digits = digits.substr(2);
  else if (digits.rfind("0x", 0) == 0)
    base = 16, digits = digits.substr(2);
  else if (digits.size() > 1 && digits[0] == '0')
    base = 8;
  if (digits.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(digits.c_str(), &end, base);
  if (errno == ERANGE || *end) return std::nullopt;  // too large for a number: kept as text
  return negative ? -v : v;
}

std::optional<double> yaml11_float(const std::string& s) {
  static const std::regex re(R"([-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?)");
  if (!std::regex_match(s, re) || s.find_first_of("0123456789") == std::string::npos) return std::nullopt;
  std::string t = s;
  t.erase(std::remove(t.begin(), t.end(), '_'), t.end());
  try {
    return std::stod(t);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

json yaml11_scalar(const std::string& s) {
  static const std::set<std::string> nulls{"", "~", "null", "Null", "NULL"};
  static const std::set<std::string> trues{"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"};
  static const std::set<std::string> falses{"no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"};
  if (nulls.count(s)) return nullptr;
  if (trues.count(s)) return true;
  if (falses.count(s)) return false;
  if (auto i = yaml11_int(s)) return *i;
  if (auto d = yaml11_float(s)) return *d;
  return s;
}

// INI values: Ansible's ini plugin gives each to Python's ast.literal_eval and keeps the text when
// that fails. Of the literals, these are what inventories hold: True/False/None (capitalised:
// `true` stays text), integers (a sign, `_` between digits, 0x/0o/0b), floats, a quoted string
// (the way to say "this is text" in a [group:vars] section: on a host line shlex has already taken
// the quotes away, so `s="5"` there is the integer 5, as in Ansible), and lists or dicts written
// as JSON.
json ini_scalar(const std::string& v) {
  if (v == "True") return true;
  if (v == "False") return false;
  if (v == "None") return nullptr;
  if (v.size() >= 2 && (v[0] == '"' || v[0] == '\'') && v.back() == v[0] && v.find(v[0], 1) == v.size() - 1)
    return v.substr(1, v.size() - 2);
  const size_t sign = !v.empty() && (v[0] == '-' || v[0] == '+') ? 1 : 0;
  std::string digits;  // the digits without their `_` separators, which must sit between two digits
  int base = 10;
  std::string_view body = std::string_view(v).substr(sign);
  if (body.size() > 2 && body[0] == '0' && std::string_view("xXoObB").find(body[1]) != std::string_view::npos) {
    base = body[1] == 'x' || body[1] == 'X' ? 16 : body[1] == 'o' || body[1] == 'O' ? 8 : 2;
    body.remove_prefix(2);
  }
  bool integer = !body.empty();
  for (size_t i = 0; i < body.size() && integer; ++i) {
    const char c = body[i];
    if (c == '_' && i > 0 && i + 1 < body.size() && body[i - 1] != '_') continue;
    integer = base == 16 ? std::isxdigit(static_cast<unsigned char>(c)) != 0 : c >= '0' && c < '0' + std::min(base, 10);
    digits += c;
  }
  // Python 3 refuses a leading zero in a decimal ("010"): such a value stays text, as in Ansible.
  if (integer && (base != 10 || digits.size() == 1 || digits[0] != '0') && digits.size() <= 15) {
    const long long n = std::stoll(digits, nullptr, base);
    return v[0] == '-' ? -n : n;
  }
  static const std::regex float_re(R"([-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))(?:[eE][-+]?[0-9]+)?)");
  if (std::regex_match(v, float_re)) return std::stod(v);
  if (!v.empty() && (v[0] == '[' || v[0] == '{')) {
    json parsed = json::parse(v, nullptr, false);
    if (!parsed.is_discarded()) return parsed;
  }
  return v;
}

std::optional<int> port_number(const json& v) {
  long long p = -1;
  if (v.is_number_integer()) {
    p = v.get<long long>();
  } else if (v.is_string()) {
    const std::string s = std::string(trim(v.get<std::string>()));
    if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    p = std::stoll(s);
  }
  if (p < 1 || p > 65535) return std::nullopt;
  return static_cast<int>(p);
}

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number() || v.is_boolean()) return v.dump();
  return "";
}

// The first of these variables that is set (not null), or nullptr.
const json* first_var(const json& vars, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    auto it = vars.find(n);
    if (it != vars.end() && !it->is_null()) return &*it;
  }
  return nullptr;
}

// ---- host names ----

// "host:2222" -> ("host", 2222). A colon inside a range ("h[1:3]") is not a port, and a name with
// several colons is an IPv6 address, not a name and a port.
std::pair<std::string, std::optional<long long>> split_port(const std::string& pattern) {
  size_t colon = std::string::npos, colons = 0;
  int depth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '[')
      ++depth;
    else if (pattern[i] == ']')
      --depth;
    else if (pattern[i] == ':' && depth == 0)
      colon = i, ++colons;
  }
  if (colons != 1) return {pattern, std::nullopt};
  const std::string port = pattern.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return {pattern, std::nullopt};
  return {pattern.substr(0, colon), std::stoll(port)};
}

// ---- the inventory as written, before Ansible's rules are applied ----

struct RawGroup {
  json vars = json::object();
  std::vector<std::string> children;  // in order, each once
  std::vector<std::string> hosts;     // direct members, in order, each once
  std::set<std::string> host_set;
};

struct Raw {
  std::map<std::string, RawGroup> groups{{"all", {}}, {"ungrouped", {}}};
  std::vector<std::string> group_order{"all", "ungrouped"};  // as first named: Ansible lists them so

  RawGroup& group_named(const std::string& name) {
    auto [it, added] = groups.try_emplace(name);
    if (added) group_order.push_back(name);
    return it->second;
  }
  std::vector<std::string> host_order;
  std::map<std::string, json> host_vars;

  void add_host(const std::string& group, const std::string& host, const json& vars) {
    if (host_vars.emplace(host, json::object()).second) host_order.push_back(host);
    RawGroup& g = group_named(group);
    if (g.host_set.insert(host).second) g.hosts.push_back(host);
    // A host listed under several groups is one host; its vars from every place merge, later wins.
    host_vars[host].update(vars);
  }

  // The groups from `from` down to `to` through children, both included; empty when there is no way.
  std::vector<std::string> path(const std::string& from, const std::string& to) const {
    std::vector<std::string> trail;
    std::set<std::string> seen;
    std::function<bool(const std::string&)> walk = [&](const std::string& g) {
      trail.push_back(g);
      if (g == to) return true;
      if (seen.insert(g).second) {
        auto it = groups.find(g);
        if (it != groups.end())
          for (const auto& c : it->second.children)
            if (walk(c)) return true;
      }
      trail.pop_back();
      return false;
    };
    return walk(from) ? trail : std::vector<std::string>{};
  }

  // Ansible refuses an edge that makes a group its own ancestor; so do we, naming the loop.
  std::optional<std::string> add_child(const std::string& parent, const std::string& child) {
    if (child == "all") return "group 'all' cannot be a child of " + quote(parent) + ": every group is in it already";
    if (child == parent) return "group " + quote(child) + " cannot be a child of itself";
    auto loop = path(child, parent);
    if (!loop.empty()) return "children form a cycle: " + parent + " -> " + join(loop, " -> ");
    group_named(child);
    auto& kids = group_named(parent).children;
    if (std::find(kids.begin(), kids.end(), child) == kids.end()) kids.push_back(child);
    return std::nullopt;
  }
};

// group_vars/ and host_vars/ files, merged per name.
struct VarsFiles {
  std::map<std::string, json> groups, hosts;
};

// Applies Ansible's rules: implicit "all" and "ungrouped", membership through children, and the
// variable precedence of its VariableManager.
Expected<Inventory> finish(const Raw& raw, const std::string& source, const VarsFiles& files, Errors& errors) {
  // A group nobody names as a child is a child of "all".
  std::map<std::string, std::vector<std::string>> parents;
  for (const auto& [name, g] : raw.groups)
    for (const auto& c : g.children) parents[c].push_back(name);
  for (const auto& [name, g] : raw.groups)
    if (name != "all" && parents[name].empty()) parents[name].push_back("all");

  // Depth: the longest way down from "all", as Ansible's Group.depth (children are acyclic here).
  std::map<std::string, int> depth{{"all", 0}};
  std::function<int(const std::string&)> depth_of = [&](const std::string& g) {
    auto it = depth.find(g);
    if (it != depth.end()) return it->second;
    int d = 0;
    for (const auto& p : parents[g]) d = std::max(d, depth_of(p) + 1);
    return depth[g] = d;
  };
  std::map<std::string, std::set<std::string>> ancestors;  // a group and every group above it
  std::function<const std::set<std::string>&(const std::string&)> ancestors_of =
      [&](const std::string& g) -> const std::set<std::string>& {
    auto it = ancestors.find(g);
    if (it != ancestors.end()) return it->second;
    std::set<std::string> up{g};
    for (const auto& p : parents[g]) {
      const auto& pa = ancestors_of(p);
      up.insert(pa.begin(), pa.end());
    }
    return ancestors[g] = std::move(up);
  };
  std::map<std::string, long long> priority;
  for (const auto& [name, g] : raw.groups) {
    priority[name] = 1;
    auto it = g.vars.find("ansible_group_priority");
    if (it == g.vars.end()) continue;
    if (it->is_number_integer())
      priority[name] = it->get<long long>();
    else if (const json v = it->is_string() ? ini_scalar(it->get<std::string>()) : json(); v.is_number_integer())
      priority[name] = v.get<long long>();
    else
      errors.add(source + ": group " + quote(name) + ": ansible_group_priority must be an integer, not " +
                 it->dump(-1, ' ', false, json::error_handler_t::replace));
  }
  // Ansible's sort_groups: parents before children, then priority, then name.
  auto before = [&](const std::string& a, const std::string& b) {
    return std::make_tuple(depth_of(a), priority[a], a) < std::make_tuple(depth_of(b), priority[b], b);
  };

  std::map<std::string, std::vector<std::string>> direct;  // host -> groups listing it
  for (const auto& [name, g] : raw.groups)
    for (const auto& h : g.hosts) direct[h].push_back(name);

  Inventory inv;
  inv.source = source;
  for (const auto& [name, g] : raw.groups) inv.groups[name];
  for (const auto& name : raw.host_order) {
    std::set<std::string> member;
    for (const auto& g : direct[name]) {
      if (g == "all" || g == "ungrouped") continue;  // neither makes a host grouped
      const auto& up = ancestors_of(g);
      member.insert(up.begin(), up.end());
    }
    member.erase("all");
    // In no group but "all": "ungrouped", even when the file listed it there along with others.
    if (member.empty()) member = ancestors_of("ungrouped");
    member.erase("all");
    std::vector<std::string> sorted(member.begin(), member.end());
    std::sort(sorted.begin(), sorted.end(), before);

    InventoryHost host;
    host.name = name;
    host.groups.push_back("all");
    host.groups.insert(host.groups.end(), member.begin(), member.end());  // std::set: alphabetical
    // VariableManager's order: inventory group vars (all, then the others) < group_vars files
    // (all, then the others) < inventory host vars < host_vars files. Top-level keys replace.
    host.vars = raw.groups.at("all").vars;
    for (const auto& g : sorted) host.vars.update(raw.groups.at(g).vars);
    if (auto it = files.groups.find("all"); it != files.groups.end()) host.vars.update(it->second);
    for (const auto& g : sorted)
      if (auto it = files.groups.find(g); it != files.groups.end()) host.vars.update(it->second);
    host.vars.update(raw.host_vars.at(name));
    if (auto it = files.hosts.find(name); it != files.hosts.end()) host.vars.update(it->second);

    inv.groups["all"].push_back(name);
    for (const auto& g : member) inv.groups[g].push_back(name);
    inv.hosts.push_back(std::move(host));
  }
  for (const auto& [name, g] : raw.groups) {
    if (name == "all") continue;
    if (name == "ungrouped")
      inv.own_hosts[name] = inv.groups["ungrouped"];  // hosts in no other group, whatever the file said
    else
      inv.own_hosts[name] = g.hosts;
    inv.child_groups[name] = g.children;
  }
  // "all": "ungrouped", its children as written, then the other groups that have no parent.
  auto& top = inv.child_groups["all"];
  top.push_back("ungrouped");
  for (const auto& c : raw.groups.at("all").children)
    if (c != "ungrouped") top.push_back(c);
  for (const auto& name : raw.group_order)
    if (name != "all" && name != "ungrouped" && parents[name] == std::vector<std::string>{"all"} &&
        std::find(top.begin(), top.end(), name) == top.end())
      top.push_back(name);
  // Each group's hosts in Ansible's order (Group.get_hosts): its own, then its children's, then
  // theirs, a level at a time (Ansible takes a level's groups in set order, so below the first
  // level its order is not fixed; this takes them in the order of their parents). For "all" that
  // is the order a run reaches its hosts, and a subscript such as gpus[0:1] counts in it.
  for (auto& [name, hosts] : inv.groups) {
    std::vector<std::string> walk{name};
    std::set<std::string> seen_groups{name}, seen_hosts;
    hosts.clear();
    for (size_t i = 0; i < walk.size(); ++i) {
      const std::string& g = walk[i];
      for (const auto& h : g == "all" ? raw.groups.at("all").hosts : inv.own_hosts[g])
        if (seen_hosts.insert(h).second) hosts.push_back(h);
      for (const auto& c : inv.child_groups[g])
        if (seen_groups.insert(c).second) walk.push_back(c);
    }
    if (name == "all")  // every host is under "all" one way or another; should one not be reached, it still counts
      for (const auto& h : inv.hosts)
        if (seen_hosts.insert(h.name).second) hosts.push_back(h.name);
  }
  if (!errors.empty()) return errors.error();
  return inv;
}

// ---- reading files ----

Expected<std::string> read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{path + ": cannot read the " + what + ": " + std::strerror(errno)};
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxBytes) return Error{path + ": the " + what + " is larger than " + size_text(kMaxBytes)};
  }
  if (text.find('\0') != std::string::npos)
    return Error{path + ": the " + what + " contains NUL bytes: not a text file"};
  return text;
}

// The inventory's YAML reader: YAML 1.1's scalars, as Ansible reads them; its messages go to `errors`.
YamlReader yaml_reader(const std::string& file, Errors& errors) {
  return YamlReader(file, yaml11_scalar,
                    [&errors](const std::string& where, const std::string& msg) { errors.add(where + ": " + msg); });
}

// A vars file of group_vars/ or host_vars/: a mapping of variables, or nothing.
void read_vars_file(const std::string& path, json& into, Errors& errors) {
  auto text = read_text(path, "vars file");
  if (!text) return errors.add(text.error());
  YamlReader reader = yaml_reader(path, errors);
  auto doc = reader.load(*text);
  if (!doc || !doc->IsDefined() || doc->IsNull()) return;
  if (!doc->IsMap()) return reader.error(*doc, "a vars file is a mapping of variables, not " + YamlReader::kind(*doc));
  json vars;
  if (reader.to_json(*doc, vars)) into.update(vars);
}

// Ansible's DataLoader._get_dir_vars_files: sorted, hidden files and backups~ skipped, directories
// without an extension walked into, files with no extension or .yml/.yaml/.json taken.
void dir_vars_files(const fs::path& dir, std::vector<fs::path>& out) {
  std::vector<fs::directory_entry> entries;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) entries.push_back(e);
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.path() < b.path(); });
  for (const auto& e : entries) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.' || name.back() == '~') continue;
    const std::string ext = e.path().extension().string();
    if (e.is_directory(ec) && ext.empty())
      dir_vars_files(e.path(), out);
    else if (e.is_regular_file(ec) && (ext.empty() || ext == ".yml" || ext == ".yaml" || ext == ".json"))
      out.push_back(e.path());
  }
}

// The files Ansible's host_group_vars plugin reads for `name` in `dir`: the first of name,
// name.yml, name.yaml, name.json that exists (a directory is read whole).
std::vector<fs::path> vars_files(const fs::path& dir, const std::string& name) {
  std::vector<fs::path> out;
  // Names come from the inventory: never let one reach outside the directory.
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) return out;
  for (const char* ext : {"", ".yml", ".yaml", ".json"}) {
    const fs::path p = dir / (name + ext);
    std::error_code ec;
    auto st = fs::status(p, ec);
    if (!fs::exists(st)) continue;
    if (fs::is_directory(st))
      dir_vars_files(p, out);
    else
      out.push_back(p);
    break;
  }
  return out;
}

VarsFiles read_vars_dirs(const Raw& raw, const fs::path& base, Errors& errors) {
  VarsFiles files;
  std::error_code ec;
  if (fs::is_directory(base / "group_vars", ec))
    for (const auto& [name, g] : raw.groups)
      for (const auto& p : vars_files(base / "group_vars", name)) {
        json& into = files.groups.emplace(name, json::object()).first->second;
        read_vars_file(p.string(), into, errors);
      }
  if (fs::is_directory(base / "host_vars", ec))
    for (const auto& name : raw.host_order)
      for (const auto& p : vars_files(base / "host_vars", name)) {
        json& into = files.hosts.emplace(name, json::object()).first->second;
        read_vars_file(p.string(), into, errors);
      }
  return files;
}

// ---- INI ----

void add_host_pattern(Raw& raw, const std::string& group, const std::string& pattern, json vars,
                      const std::function<void(const std::string&)>& fail) {
  auto [name, port] = split_port(pattern);
  auto names = expand_host_range(name);
  if (!names) return fail(names.error());
  if (port) vars.emplace("ansible_port", *port);  // `host:2222`, unless the line sets ansible_port itself
  for (const auto& n : *names) raw.add_host(group, n, vars);
}

void parse_ini(Raw& raw, const std::string& text, const std::string& file, Errors& errors) {
  // Ansible's own expressions for section headers and :children lines.
  static const std::regex section_re(R"(^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$)");
  static const std::regex group_re(R"(^([^:\]\s]+)\s*(?:#.*)?$)");
  enum class State { hosts, children, vars, skip };
  State state = State::hosts;
  std::string group = "ungrouped";  // hosts before any section
  std::set<std::string> defined;
  for (const auto& [name, g] : raw.groups) defined.insert(name);
  std::set<std::string> exists = defined;  // Ansible's inventory.groups: a [group:vars] header makes one too
  std::map<std::string, std::vector<std::pair<std::string, size_t>>> pending;  // child -> (parent, line)
  std::vector<std::pair<std::string, size_t>> vars_sections;  // checked at the end: the group must exist
  struct ChildReference {
    std::string parent, child;
    size_t line;
  };
  std::vector<ChildReference> undefined_children;  // named before any section defines them; checked at the end
  size_t lineno = 0;
  for (std::string_view raw_line : lines(text)) {
    ++lineno;
    const std::string line(trim(raw_line));
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    auto fail = [&](const std::string& msg) { errors.add(file + ":" + std::to_string(lineno) + ": " + msg); };
    std::smatch m;
    if (line[0] == '[' && std::regex_match(line, m, section_re)) {
      group = m[1].str();
      const std::string kind = m[2].matched ? m[2].str() : "hosts";
      exists.insert(group);
      if (kind == "hosts" || kind == "children") {
        state = kind == "hosts" ? State::hosts : State::children;
        raw.group_named(group);
        defined.insert(group);
        // Parents that named this group before it existed get it now, as Ansible adds them: a
        // group's children are in the order they came to exist.
        if (auto it = pending.find(group); it != pending.end()) {
          for (const auto& [parent, line] : it->second)
            if (auto err = raw.add_child(parent, group)) errors.add(file + ":" + std::to_string(line) + ": " + *err);
          pending.erase(it);
        }
      } else if (kind == "vars") {
        state = State::vars;
        vars_sections.emplace_back(group, lineno);
      } else {
        fail("section [" + group + ":" + kind + "] has unknown type " + quote(kind) +
             ": a section is [group], [group:vars] or [group:children]");
        state = State::skip;
      }
      continue;
    }
    if (line[0] == '[' && line.back() == ']') {
      fail("invalid section header " + quote(line) +
           ": a section is [group], [group:vars] or [group:children], with no blanks in it");
      state = State::skip;
      continue;
    }
    switch (state) {
      case State::skip:
        break;
      case State::hosts: {
        auto words = shell_split(line, /*comments=*/true);
        if (!words) {
          fail("cannot parse the host line " + quote(line) + ": " + words.error());
          break;
        }
        json vars = json::object();
        bool good = true;
        for (size_t i = 1; i < words->size(); ++i) {
          const ShellWord& t = (*words)[i];
          size_t eq = t.text.find('=');
          if (eq == std::string::npos || eq == 0) {
            fail("expected key=value after the host name, got " + quote(t.text));
            good = false;
            continue;
          }
          vars[t.text.substr(0, eq)] = ini_scalar(t.text.substr(eq + 1));
        }
        if (words->empty() || words->front().text.empty())
          fail("a host line has no host name: " + quote(line));
        else if (good)
          add_host_pattern(raw, group, words->front().text, std::move(vars), fail);
        break;
      }
      case State::children: {
        std::smatch g;
        if (!std::regex_match(line, g, group_re)) {
          fail("expected a group name in [" + group + ":children], got " + quote(line));
          break;
        }
        // A child may be defined further down; one never defined is an error at the end, as in
        // Ansible's ini plugin (a [child:vars] section does not define it).
        if (!defined.count(g[1].str())) undefined_children.push_back({group, g[1].str(), lineno});
        if (!exists.count(g[1].str()))
          pending[g[1].str()].emplace_back(group, lineno);
        else if (auto err = raw.add_child(group, g[1].str()))
          fail(*err);
        break;
      }
      case State::vars: {
        size_t eq = line.find('=');
        const std::string key = eq == std::string::npos ? "" : std::string(trim(line.substr(0, eq)));
        if (key.empty()) {
          fail("expected key=value in [" + group + ":vars], got " + quote(line));
          break;
        }
        raw.group_named(group).vars[key] = ini_scalar(std::string(trim(std::string_view(line).substr(eq + 1))));
        break;
      }
    }
  }
  std::set<std::string> reported;
  for (const auto& ref : undefined_children)
    if (!defined.count(ref.child) && reported.insert(ref.child).second)
      errors.add(file + ":" + std::to_string(ref.line) + ": Section [" + ref.parent +
                 ":children] includes undefined group: " + ref.child);
  // Vars for a group that is nowhere else would apply to no host: a typo, as Ansible says too.
  for (const auto& [name, line] : vars_sections)
    if (!defined.count(name) && !reported.count(name))
      errors.add(file + ":" + std::to_string(line) + ": section [" + name + ":vars] is for a group that is never " +
                 "defined: add [" + name + "] with its hosts, or [" + name + ":children]");
}

// ---- YAML ----

class YamlInventory {
 public:
  YamlInventory(Raw& raw, const std::string& file, Errors& errors) : raw_(raw), reader_(yaml_reader(file, errors)) {}

  void run(const std::string& text) {
    auto loaded = reader_.load(text);
    if (!loaded) return;
    const YAML::Node& doc = *loaded;  // const: operator[] on a mutable node would add the key
    if (!doc.IsDefined() || doc.IsNull()) return reader_.error(doc, "the inventory is empty");
    if (!doc.IsMap())
      return reader_.error(doc,
                           "a YAML inventory is a mapping of groups (usually `all:`), not " + YamlReader::kind(doc));
    if (doc["plugin"] && doc["plugin"].IsScalar())
      return reader_.error(doc, "inventory plugins (plugin: " + doc["plugin"].Scalar() +
                                    ") are not supported: give the hosts in a YAML or INI inventory");
    for (const auto& [k, v] : reader_.entries(doc)) group(k.Scalar(), v);
  }

 private:
  // A section of a group as (name node, value node) pairs. Ansible takes a bare name for a mapping
  // of one: `hosts: web01` is `hosts: {web01: }`.
  std::vector<std::pair<YAML::Node, YAML::Node>> section(const YAML::Node& n, const std::string& what,
                                                         const std::string& group) {
    if (n.IsNull()) return {};
    if (n.IsScalar()) return {{n, YAML::Node()}};
    if (!n.IsMap()) {
      reader_.error(n,
                    what + " of group " + quote(group) + " must be a mapping (name: ...), not " + YamlReader::kind(n));
      return {};
    }
    return reader_.entries(n);
  }

  void group(const std::string& name, const YAML::Node& node) {
    raw_.group_named(name);
    if (!node.IsDefined() || node.IsNull()) return;
    if (!node.IsMap()) {
      reader_.error(node, "group " + quote(name) + " must be a mapping with hosts, vars or children, not " +
                              YamlReader::kind(node));
      return;
    }
    for (const auto& [k, v] : reader_.entries(node)) {
      const std::string key = k.Scalar();
      if (key == "hosts") {
        for (const auto& [hk, hv] : section(v, "hosts", name)) host(name, hk, hv);
      } else if (key == "vars") {
        for (const auto& [vk, vv] : section(v, "vars", name)) {
          json value;
          if (reader_.to_json(vv, value)) raw_.group_named(name).vars[vk.Scalar()] = std::move(value);
        }
      } else if (key == "children") {
        for (const auto& [ck, cv] : section(v, "children", name)) {
          const std::string child = ck.Scalar();
          if (auto err = raw_.add_child(name, child)) {
            reader_.error(ck, *err);
            continue;
          }
          group(child, cv);
        }
      } else {
        // The singulars are the usual slip; anything else (host_vars, group_vars) belongs in files.
        static const std::map<std::string, std::string> plural{
            {"host", "hosts"}, {"var", "vars"}, {"child", "children"}};
        auto hint = plural.find(key);
        reader_.error(k, "unknown key " + quote(key) + " in group " + quote(name) +
                             ": a group has hosts, vars and children" +
                             (hint != plural.end() ? " (did you mean '" + hint->second + "'?)" : ""));
      }
    }
  }

  void host(const std::string& group, const YAML::Node& k, const YAML::Node& v) {
    const std::string pattern = k.Scalar();
    json vars = json::object();
    if (v.IsDefined() && !v.IsNull()) {
      if (!v.IsMap())
        return reader_.error(
            v, "the vars of host " + quote(pattern) + " must be a mapping (name: value), not " + YamlReader::kind(v));
      if (!reader_.to_json(v, vars)) return;
    }
    if (pattern.empty()) return reader_.error(k, "a host name is empty");
    // PyYAML makes a plain 1234 or 1.5 a number, which Ansible refuses as a host name.
    if (k.Tag() == "?" && yaml11_scalar(pattern).is_number())
      return reader_.error(
          k, "Host pattern " + pattern + " must be a string. Enclose integers/floats in quotation marks.");
    add_host_pattern(raw_, group, pattern, std::move(vars), [&](const std::string& msg) { reader_.error(k, msg); });
  }

  Raw& raw_;
  YamlReader reader_;
};

// ---- files, directories and host lists ----

bool yaml_name(const std::string& path) {
  const std::string ext = lower(fs::path(path).extension().string());
  return ext == ".yml" || ext == ".yaml" || ext == ".json";
}

void parse_file(Raw& raw, const std::string& path, Errors& errors) {
  auto text = read_text(path, "inventory");
  if (!text) return errors.add(text.error());
  if (text->rfind("#!", 0) == 0)
    return errors.add(path + ": inventory scripts are not supported: save the hosts as a YAML or INI inventory");
  bool yaml = yaml_name(path);
  const std::string ext = lower(fs::path(path).extension().string());
  if (!yaml && ext != ".ini") {
    // No telling extension: YAML when it reads as a mapping, as Ansible tries its yaml plugin first.
    auto doc = YamlReader(path, yaml11_scalar, [](const std::string&, const std::string&) {}).load(*text);
    yaml = doc && doc->IsMap();
  }
  if (yaml)
    YamlInventory(raw, path, errors).run(*text);
  else
    parse_ini(raw, *text, path, errors);
}

// Ansible's INVENTORY_IGNORE_EXTS and IGNORED_ALWAYS for the files of an inventory directory.
bool ignored_in_directory(const std::string& name) {
  static const char* exts[] = {".pyc", ".pyo", ".swp",  ".bak", "~",    ".rpm",  ".md",
                               ".txt", ".rst", ".orig", ".ini", ".cfg", ".retry"};
  if (name.empty() || name[0] == '.' || name == "host_vars" || name == "group_vars" || name == "vars_plugins")
    return true;
  return std::any_of(std::begin(exts), std::end(exts), [&](const char* e) { return ends_with(name, e); });
}

void parse_directory(Raw& raw, const fs::path& dir, Errors& errors) {
  std::vector<fs::directory_entry> entries;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) entries.push_back(e);
  if (ec) return errors.add(dir.string() + ": cannot read the inventory directory: " + ec.message());
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.path() < b.path(); });
  for (const auto& e : entries) {
    if (ignored_in_directory(e.path().filename().string())) continue;
    if (e.is_directory(ec))
      parse_directory(raw, e.path(), errors);
    else
      parse_file(raw, e.path().string(), errors);
  }
}

Expected<Inventory> from_text(const std::string& text, const std::string& file, bool yaml) {
  Raw raw;
  Errors errors;
  if (text.size() > kMaxBytes) return Error{file + ": the inventory is larger than " + size_text(kMaxBytes)};
  if (text.find('\0') != std::string::npos) return Error{file + ": the inventory contains NUL bytes: not a text file"};
  if (yaml)
    YamlInventory(raw, file, errors).run(text);
  else
    parse_ini(raw, text, file, errors);
  if (!errors.empty()) return errors.error();
  return finish(raw, file, {}, errors);
}

// ---- host patterns ----

// One element of a glob at p[i] against c: '?', a [class] (with ranges and '!'), or a literal, as
// Python's fnmatch.translate reads them. Returns where the next element starts.
size_t glob_element(std::string_view p, size_t i, char c, bool& match) {
  if (p[i] == '?') {
    match = true;
    return i + 1;
  }
  if (p[i] == '[') {
    size_t j = i + 1;
    if (j < p.size() && p[j] == '!') ++j;
    if (j < p.size() && p[j] == ']') ++j;  // a ']' first is a member
    while (j < p.size() && p[j] != ']') ++j;
    if (j < p.size()) {
      size_t k = i + 1;
      bool negate = p[k] == '!';
      if (negate) ++k;
      bool in = false;
      while (k < j) {
        if (k + 2 < j && p[k + 1] == '-') {
          in = in || (p[k] <= c && c <= p[k + 2]);
          k += 3;
        } else {
          in = in || p[k] == c;
          ++k;
        }
      }
      match = in != negate;
      return j + 1;
    }
    // An unclosed '[' is itself.
  }
  match = p[i] == c;
  return i + 1;
}

bool glob_match(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star_p = std::string_view::npos, star_s = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star_p = ++pi;
      star_s = si;
      continue;
    }
    if (pi < p.size()) {
      bool m = false;
      size_t next = glob_element(p, pi, s[si], m);
      if (m) {
        pi = next;
        ++si;
        continue;
      }
    }
    if (star_p == std::string_view::npos) return false;
    pi = star_p;  // let the last '*' take one more character
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

// Ansible's split_host_pattern: on ',' when there is one, else on ':' outside brackets.
std::vector<std::string> split_pattern(const std::string& pattern) {
  std::vector<std::string> parts;
  std::string cur;
  const bool commas = pattern.find(',') != std::string::npos;
  int depth = 0;
  for (char c : pattern) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (commas ? c == ',' : (c == ':' && depth <= 0)) {
      parts.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(std::move(cur));
  std::vector<std::string> out;
  for (const auto& p : parts)
    if (!trim(p).empty()) out.emplace_back(trim(p));
  return out;
}

// Python's hosts[start:end] on n hosts: negative indexes count from the end, both clamped.
std::pair<long long, long long> slice_bounds(long long start, long long end, long long n) {
  auto norm = [n](long long i) { return std::clamp(i < 0 ? i + n : i, 0LL, n); };
  return {norm(start), norm(end)};
}

// The hosts (indexes into inv.hosts) one pattern names, as Ansible's _match_one_pattern.
Expected<std::vector<size_t>> match_term(const Inventory& inv, const std::map<std::string, size_t>& index,
                                         std::string term) {
  // A pattern that is a host's name is that host, before any group of the same name.
  if (auto it = index.find(term); it != index.end()) return std::vector<size_t>{it->second};
  std::optional<std::pair<long long, std::optional<long long>>> subscript;
  if (term[0] != '~') {
    static const std::regex sub_re(R"(^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$)");
    std::smatch m;
    // An index with more digits than a long long holds is past any inventory all the same.
    auto number = [](const std::string& s) {
      return s.size() > 15 ? (s[0] == '-' ? -1 : 1) * (1LL << 50) : std::stoll(s);
    };
    if (std::regex_match(term, m, sub_re)) {
      if (m[2].matched)
        subscript = {{number(m[2].str()), std::nullopt}};
      else
        subscript = {{number(m[3].str()), m[5].length() ? number(m[5].str()) : -1}};
      term = m[1].str();
    }
  }
  std::function<bool(const std::string&)> matches;
  if (term[0] == '~') {
    std::shared_ptr<std::regex> re;
    try {
      re = std::make_shared<std::regex>(term.substr(1));
    } catch (const std::regex_error& e) {
      return Error{"invalid regular expression in host pattern " + quote(term) + ": " + e.what()};
    }
    // Python's re.match: anchored at the start only.
    matches = [re](const std::string& s) { return std::regex_search(s, *re, std::regex_constants::match_continuous); };
  } else {
    matches = [term](const std::string& s) { return glob_match(term, s); };
  }
  std::vector<size_t> out;
  std::set<size_t> seen;
  auto add = [&](size_t i) {
    if (seen.insert(i).second) out.push_back(i);
  };
  bool any_group = false;
  for (const auto& [group, hosts] : inv.groups)
    if (matches(group)) {
      any_group = true;
      for (const auto& h : hosts) add(index.at(h));
    }
  if (!any_group || term[0] == '~' || term.find_first_of(".?*[") != std::string::npos)
    for (size_t i = 0; i < inv.hosts.size(); ++i)
      if (matches(inv.hosts[i].name)) add(i);
  if (!subscript) return out;
  const long long n = static_cast<long long>(out.size());
  auto [start, end] = *subscript;
  if (!end) {
    long long i = start < 0 ? start + n : start;
    if (i < 0 || i >= n) return std::vector<size_t>{};
    return std::vector<size_t>{out[static_cast<size_t>(i)]};
  }
  auto [from, to] = slice_bounds(start, *end == -1 ? n : *end + 1, n);
  if (from >= to) return std::vector<size_t>{};
  return std::vector<size_t>(out.begin() + from, out.begin() + to);
}

}  // namespace

// ---- public ----

std::string InventoryHost::address() const {
  // Ansible's ssh plugin takes the last variable set of its list, so the older name wins.
  const json* v = first_var(vars, {"ansible_ssh_host", "ansible_host"});
  std::string a = v ? text_of(*v) : "";
  return a.empty() ? name : a;
}

std::optional<int> InventoryHost::port() const {
  const json* v = first_var(vars, {"ansible_ssh_port", "ansible_port"});
  if (!v) return std::nullopt;
  return port_number(*v);  // connection_error() refuses a port that is no port
}

std::optional<std::string> InventoryHost::connection_error() const {
  // Ansible reads a variable as it is written and templates it when it connects ("{{ 22 | int }}"
  // is text in ansible-inventory's listing); gptagent does not evaluate Jinja2. Such a variable is
  // refused for the hosts a run reaches, never guessed at.
  for (const char* key :
       {"ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user", "ansible_ssh_user",
        "ansible_connection", "ansible_become", "ansible_become_exe", "ansible_become_method", "ansible_become_user",
        "ansible_become_flags", "ansible_ssh_private_key_file", "ansible_private_key_file", "ansible_ssh_common_args",
        "ansible_ssh_extra_args", "ansible_ssh_executable"}) {
    auto it = vars.find(key);
    if (it == vars.end() || !it->is_string()) continue;
    const std::string& v = it->get_ref<const std::string&>();
    if (v.find("{{") != std::string::npos || v.find("{%") != std::string::npos)
      return "host " + quote(name) + ": " + key + " is a Jinja2 template (" + quote(v) +
             "), which gptagent does not evaluate: give the value itself";
  }
  // Ansible logs in with it through sshpass; gptagent runs ssh in batch mode, keys only.
  for (const char* key : {"ansible_password", "ansible_ssh_pass", "ansible_ssh_password"}) {
    auto it = vars.find(key);
    if (it != vars.end() && !it->is_null())
      return "host " + quote(name) + ": " + key +
             " is set, but gptagent logs in with ssh keys only (batch mode, never a password): give the host a key "
             "and remove " +
             key;
  }
  // A port that is not one would have ssh connect to 22 instead.
  for (const char* key : {"ansible_port", "ansible_ssh_port"}) {
    auto it = vars.find(key);
    if (it != vars.end() && !it->is_null() && !port_number(*it))
      return "host " + quote(name) + ": " + key + " must be a port number (1-65535), not " +
             it->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return std::nullopt;
}

std::string InventoryHost::user() const {
  const json* v = first_var(vars, {"ansible_ssh_user", "ansible_user"});
  return v ? text_of(*v) : "";
}

bool InventoryHost::become() const {
  const json* v = first_var(vars, {"ansible_become"});
  if (!v) return false;
  if (v->is_boolean()) return v->get<bool>();
  if (v->is_number()) return v->get<double>() == 1;
  if (!v->is_string()) return false;
  // Ansible's boolean(): anything outside its true words is false.
  static const std::set<std::string> yes{"true", "yes", "on", "y", "t", "1"};
  return yes.count(lower(trim(v->get<std::string>()))) > 0;
}

std::string InventoryHost::key_file() const {
  const json* v = first_var(vars, {"ansible_ssh_private_key_file", "ansible_private_key_file"});
  return v ? text_of(*v) : "";
}

json inventory_list(const Inventory& inv) {
  json out = json::object();
  out["_meta"]["hostvars"] = json::object();
  for (const auto& h : inv.hosts) out["_meta"]["hostvars"][h.name] = h.vars;
  std::set<std::string> seen{"all"};
  std::function<void(const std::string&)> add = [&](const std::string& group) {
    json entry = json::object();
    if (auto it = inv.own_hosts.find(group); it != inv.own_hosts.end() && !it->second.empty())
      entry["hosts"] = it->second;
    if (auto it = inv.child_groups.find(group); it != inv.child_groups.end() && !it->second.empty()) {
      entry["children"] = it->second;
      for (const auto& c : it->second)
        if (seen.insert(c).second) add(c);
    }
    if (!entry.empty()) out[group] = std::move(entry);
  };
  add("all");
  return out;
}

const InventoryHost* Inventory::find(const std::string& name) const {
  for (const auto& h : hosts)
    if (h.name == name) return &h;
  return nullptr;
}

Expected<std::vector<std::string>> expand_host_range(const std::string& pattern) {
  const size_t open = pattern.find('[');
  if (open == std::string::npos) {
    if (pattern.find(']') != std::string::npos) return Error{"host range " + quote(pattern) + " has a ']' with no '['"};
    return std::vector<std::string>{pattern};
  }
  const size_t close = pattern.find(']', open);
  if (close == std::string::npos) return Error{"host range " + quote(pattern) + " has a '[' with no ']'"};
  if (pattern.find(']') < open) return Error{"host range " + quote(pattern) + " has a ']' before its '['"};
  const std::string head = pattern.substr(0, open), tail = pattern.substr(close + 1);
  auto bad = [&](const std::string& why) {
    return Error{"host range " + quote(pattern.substr(open, close - open + 1)) + " in " + quote(pattern) + ": " + why};
  };
  std::vector<std::string> bounds;
  for (std::string_view rest = std::string_view(pattern).substr(open + 1, close - open - 1);;) {
    size_t c = rest.find(':');
    bounds.emplace_back(rest.substr(0, c));
    if (c == std::string_view::npos) break;
    rest.remove_prefix(c + 1);
  }
  if (bounds.size() != 2 && bounds.size() != 3) return bad("a range is [begin:end] or [begin:end:step]");
  std::string beg = bounds[0].empty() ? "0" : bounds[0];
  const std::string& end = bounds[1];
  if (end.empty()) return bad("the range has no end");
  long long step = 1;
  if (bounds.size() == 3) {
    const std::string& s = bounds[2];
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos || std::stoll(s) == 0)
      return bad("the step must be a positive integer");
    step = std::stoll(s);
  }
  auto digits = [](const std::string& s) {
    return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
  };
  auto letter = [](const std::string& s) { return s.size() == 1 && std::isalpha(static_cast<unsigned char>(s[0])); };
  std::vector<std::string> items;
  if (letter(beg) && letter(end)) {
    // Python's string.ascii_letters order: a..z then A..Z, so [x:B] runs through the capitals.
    static const std::string letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    size_t b = letters.find(beg[0]), e = letters.find(end[0]);
    if (b > e) return bad("the begin comes after the end");
    for (size_t i = b; i <= e; i += static_cast<size_t>(step)) items.emplace_back(1, letters[i]);
  } else if (digits(beg) && digits(end)) {
    // A leading zero asks for zero padding to its width, which the end must share ([01:20], not [01:100]).
    const size_t width = beg.size() > 1 && beg[0] == '0' ? beg.size() : 0;
    if (width && end.size() != width) return bad("a zero-padded range needs a begin and an end of the same width");
    long long b = std::stoll(beg), e = std::stoll(end);
    if (b > e) return bad("the begin comes after the end");
    if ((e - b) / step + 1 > static_cast<long long>(kMaxHosts))
      return bad("it makes more than " + std::to_string(kMaxHosts) + " hosts");
    for (long long i = b; i <= e; i += step) {
      std::string n = std::to_string(i);
      if (n.size() < width) n.insert(0, width - n.size(), '0');
      items.push_back(std::move(n));
    }
  } else {
    return bad("begin and end must both be numbers or both be single letters");
  }
  auto rest = expand_host_range(tail);  // the next range of the name, if any
  if (!rest) return rest;
  if (items.size() * rest->size() > kMaxHosts)
    return Error{"host range " + quote(pattern) + " makes more than " + std::to_string(kMaxHosts) + " hosts"};
  std::vector<std::string> out;
  for (const auto& i : items)
    for (const auto& r : *rest) out.push_back(head + i + r);
  return out;
}

Expected<Inventory> parse_inventory_ini(const std::string& text, const std::string& file) {
  return from_text(text, file, false);
}

Expected<Inventory> parse_inventory_yaml(const std::string& text, const std::string& file) {
  return from_text(text, file, true);
}

Expected<Inventory> load_inventory(const std::string& path) {
  Raw raw;
  Errors errors;
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (!fs::exists(st)) {
    // `-i web01,web02,`: Ansible's host_list, for a run against a few hosts without a file.
    if (path.find(',') != std::string::npos) {
      for (const auto& part : split_pattern(path))
        add_host_pattern(raw, "ungrouped", part, json::object(),
                         [&](const std::string& msg) { errors.add("host list " + quote(path) + ": " + msg); });
      if (!errors.empty()) return errors.error();
      return finish(raw, path, {}, errors);
    }
    return Error{path + ": cannot read the inventory: " + std::strerror(ENOENT)};
  }
  fs::path base;
  if (fs::is_directory(st)) {
    base = path;
    parse_directory(raw, base, errors);
  } else {
    base = fs::path(path).parent_path();
    if (base.empty()) base = ".";
    parse_file(raw, path, errors);
  }
  if (!errors.empty()) return errors.error();
  VarsFiles files = read_vars_dirs(raw, base, errors);
  if (!errors.empty()) return errors.error();
  return finish(raw, path, files, errors);
}

Expected<std::vector<const InventoryHost*>> select_hosts(const Inventory& inv, const std::string& pattern) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < inv.hosts.size(); ++i) index.emplace(inv.hosts[i].name, i);
  std::vector<std::string> plain, intersect, exclude;
  for (const auto& t : split_pattern(pattern)) {
    if (t[0] == '!' || t[0] == '&') {
      std::string rest(trim(std::string_view(t).substr(1)));
      if (rest.empty()) return Error{"--limit " + quote(pattern) + ": " + quote(t) + " names no pattern"};
      (t[0] == '!' ? exclude : intersect).push_back(rest);
    } else {
      plain.push_back(t);
    }
  }
  // Ansible's order_patterns: the plain ones first, whatever their place; with none, "all".
  if (plain.empty()) plain.push_back("all");
  std::vector<bool> chosen(inv.hosts.size(), false);
  for (const auto& t : plain) {
    auto m = match_term(inv, index, t);
    if (!m) return Error{"--limit " + quote(pattern) + ": " + m.error()};
    for (size_t i : *m) chosen[i] = true;
  }
  for (const auto& t : intersect) {
    auto m = match_term(inv, index, t);
    if (!m) return Error{"--limit " + quote(pattern) + ": " + m.error()};
    std::vector<bool> in(inv.hosts.size(), false);
    for (size_t i : *m) in[i] = true;
    for (size_t i = 0; i < chosen.size(); ++i) chosen[i] = chosen[i] && in[i];
  }
  for (const auto& t : exclude) {
    auto m = match_term(inv, index, t);
    if (!m) return Error{"--limit " + quote(pattern) + ": " + m.error()};
    for (size_t i : *m) chosen[i] = false;
  }
  // In the order a run of Ansible reaches them: that of "all".
  std::vector<const InventoryHost*> out;
  for (const auto& name : inv.groups.at("all"))
    if (size_t i = index.at(name); chosen[i]) out.push_back(&inv.hosts[i]);
  // An inventory without hosts selects none, without an error (Ansible warns and plays nothing);
  // a pattern that leaves none of its hosts is an error, as ansible-playbook's.
  if (out.empty() && !inv.hosts.empty())
    return Error{(pattern == "all" ? std::string("no host") : "--limit " + quote(pattern) + " matches no host") +
                 " in " + (inv.source.empty() ? std::string("the inventory") : inv.source)};
  return out;
}

}  // namespace gpt
