// Ansible inventories for the fleet mode (`gptagent apply host.yaml -i INVENTORY`): YAML and INI
// files, group_vars/ and host_vars/ next to them, host ranges and --limit patterns, with Ansible's
// rules, so that an inventory written for Ansible selects the same hosts with the same variables.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/expected.hpp"

namespace gpt {

struct InventoryHost {
  std::string name;                 // inventory_hostname
  std::vector<std::string> groups;  // "all" first, then every group it is in (through children), sorted
  // Merged the way Ansible's variable manager does (later wins, top-level keys replaced, not merged):
  // inventory vars of "all" < inventory vars of its other groups < group_vars/all < group_vars/<group>
  // < inventory host vars < host_vars/<host>. Groups are taken by depth below "all" (parents before
  // children), then ansible_group_priority, then name.
  nlohmann::json vars = nlohmann::json::object();

  std::string address() const;  // ansible_host (or ansible_ssh_host), else name
  // ansible_port (or ansible_ssh_port), number or numeric string; none when unset, as Ansible then
  // passes no port to ssh and ~/.ssh/config (or ssh's 22) decides.
  std::optional<int> port() const;
  std::string user() const;      // ansible_user (or ansible_ssh_user), else ""
  bool become() const;           // ansible_become: true/yes/on/y/t/1 in any case, bool, string or number
  std::string key_file() const;  // ansible_ssh_private_key_file (or ansible_private_key_file), else ""
  // Why this host cannot be reached as written (a port that is no port, a connection variable that
  // is a Jinja2 template), or none. Checked for the hosts a run reaches, before any host runs:
  // Ansible too lists such an inventory and fails only when it connects.
  std::optional<std::string> connection_error() const;
};

struct Inventory {
  std::string source;                                      // the file (or host list) it came from, for messages
  std::vector<InventoryHost> hosts;                        // each host once, in first-appearance order
  std::map<std::string, std::vector<std::string>> groups;  // group -> its hosts (direct and through
                                                           // children) in host order; with "all", "ungrouped"
  // As written: each group's own hosts and child groups, in order ("all" has no hosts of its own
  // here, its children are "ungrouped" and every group that has no parent), as ansible-inventory lists them.
  std::map<std::string, std::vector<std::string>> own_hosts, child_groups;
  const InventoryHost* find(const std::string& name) const;  // nullptr when there is no such host
};

// The inventory as `ansible-inventory --list` prints it: "_meta": {"hostvars": {host: vars}}, then
// each group that has hosts or children: {"hosts": [...], "children": [...]}, "all" with children only.
nlohmann::json inventory_list(const Inventory& inv);

// Reads an inventory: a YAML file (.yml/.yaml/.json, or any other name whose content is a YAML
// mapping), an INI file (anything else), a directory (every file in it, sorted, as Ansible does:
// hidden files, group_vars/, host_vars/ and .ini/.cfg/.txt/.md/.bak/... skipped), or, when no such
// path exists, a comma-separated host list ("web01,web02," as with `ansible -i`). group_vars/ and
// host_vars/ next to the file (inside the directory) are read: <name>, <name>.yml, <name>.yaml,
// <name>.json, the first that exists; a directory of such files is read in sorted order.
Expected<Inventory> load_inventory(const std::string& path);
// The same from text; `file` names it in messages ("file:line:col: message" for YAML, "file:line:
// message" for INI). group_vars/ and host_vars/ are not read.
Expected<Inventory> parse_inventory_ini(const std::string& text, const std::string& file);
Expected<Inventory> parse_inventory_yaml(const std::string& text, const std::string& file);

// Ansible host patterns, as given to --limit: names, groups, "all" or "*", fnmatch globs over host
// and group names ("gpu0*"), "~regex" (anchored at the start, like Python's re.match), a subscript
// on a group ("gpus[0]", "gpus[1:3]", "gpus[-1]"), lists separated by ',' (or ':' when there is no
// ','), "&pattern" to intersect and "!pattern" to exclude (applied after the plain ones, whatever
// their place, as Ansible does; with none plain, from "all"). A pattern that matches a group takes
// its hosts; it is tried on host names when no group matches or it is a glob or a regex. An empty
// pattern selects every host. Returns the selected hosts in inventory order, or an error when none.
Expected<std::vector<const InventoryHost*>> select_hosts(const Inventory& inv, const std::string& pattern);

// Ansible host ranges: "gpu[01:20]" -> gpu01..gpu20 (a leading zero in the start pads to its
// width, and then the end must be as wide), "node[a:c]", "h[1:10:2]" (a step), "[:3]" (from 0),
// several ranges in one name. A name without '[' is itself. An error for a malformed range.
Expected<std::vector<std::string>> expand_host_range(const std::string& pattern);

}  // namespace gpt
