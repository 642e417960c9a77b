// The checks of fuzz_inventory_ini and fuzz_inventory_yaml. Properties of an inventory that loads:
// each host once; "all" holds every host and every host is in "all" (first in its groups); every
// group's hosts exist and are in the group's order of hosts; the connection variables read without
// an exception; its vars serialise (fleet mode prints and sends them as JSON); selecting hosts with
// a few patterns returns hosts of the inventory or an error. An inventory that does not load says
// where: "fuzz.ini:LINE: ..." or "fuzz.yaml:LINE:COL: ...".
#pragma once

#include <map>
#include <set>
#include <string>

#include "agent/inventory.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace gpt::fuzz {

inline void check_inventory(const Expected<Inventory>& inv, const std::string& file) {
  if (!inv) {
    check(inv.error().compare(0, file.size() + 1, file + ":") == 0,
          "an inventory error without its file: " + inv.error());
    return;
  }
  std::map<std::string, size_t> index;  // Inventory::find is linear: a range can make 100000 hosts
  for (const auto& h : inv->hosts) {
    const size_t i = static_cast<size_t>(&h - inv->hosts.data());
    check(index.emplace(h.name, i).second, "host listed twice: " + h.name);
    check(!h.groups.empty() && h.groups.front() == "all", "host " + h.name + " is not in 'all' first");
    if (i < 16) check(inv->find(h.name) == &h, "find() does not find host " + h.name);
    (void)h.address();
    (void)h.port();
    (void)h.user();
    (void)h.become();
    (void)h.key_file();
    check_dumps(h.vars, "the vars of host " + h.name);
  }
  auto all = inv->groups.find("all");
  check(all != inv->groups.end(), "no group 'all'");
  check(all->second.size() == inv->hosts.size(), "'all' does not hold every host");
  // A group's hosts come in Ansible's order (its own, then its children's level by level), not the
  // inventory's: each is a host, and none twice.
  for (const auto& [group, hosts] : inv->groups) {
    std::set<std::string> seen;
    for (const auto& h : hosts) {
      check(index.count(h) == 1, "group " + group + " holds " + h + ", which is no host");
      check(seen.insert(h).second, "group " + group + " holds " + h + " twice");
    }
  }
  for (const char* pattern : {"", "all", "*", "gpu*", "~g.*[0-9]", "all[0]", "all[-1]", "all[1:3]", "gpus:&web",
                              "!ungrouped", "all,!gpu01"}) {
    auto sel = select_hosts(*inv, pattern);
    if (!sel) continue;
    for (const InventoryHost* h : *sel)
      check(h >= inv->hosts.data() && h < inv->hosts.data() + inv->hosts.size(),
            std::string("--limit ") + pattern + " selected a host outside the inventory");
  }
}

}  // namespace gpt::fuzz
