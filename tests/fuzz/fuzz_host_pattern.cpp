// --limit patterns and host ranges (agent/inventory.hpp). The input is a pattern: select_hosts on
// a fixed inventory returns hosts of it, in inventory order, or an error naming the pattern;
// expand_host_range returns at most 100000 names (its limit) or an error.
// A "~regex" pattern is the operator's own regular expression: std::regex (like Python's re, with
// which Ansible reads it) takes exponential time on some, e.g. "~L" and 27 '*' (Python refuses
// that one: "multiple repeat"), and libstdc++ 12 overflows a signed int (UBSan) reading a long
// number in one (a back-reference "\6666666666666", a count "{6666666666666}"). Inputs with a '~'
// and more than 4 repeat operators, or a run of 7 digits, are skipped, so that the target looks
// for bugs in the pattern code, not in std::regex.
#include <algorithm>
#include <cstdint>
#include <string>

#include "agent/inventory.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using gpt::fuzz::check;

const gpt::Inventory& inventory() {
  static const gpt::Inventory inv = [] {
    auto i = gpt::parse_inventory_ini(R"(bastion ansible_host=203.0.113.1
[gpus]
gpu[01:12] ansible_user=admin
gpu-b:2222
[web]
web[a:f].example.org
gpu01
[gpus:vars]
vfio=true
[lab:children]
gpus
web
)",
                                      "fuzz.ini");
    if (!i) gpt::fuzz::fail("the fixed inventory does not load: " + i.error());
    return *i;
  }();
  return inv;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string pattern = gpt::fuzz::text_of(data, size);
  if (pattern.find('~') != std::string::npos) {
    if (std::count_if(pattern.begin(), pattern.end(),
                      [](char c) { return c == '*' || c == '+' || c == '?' || c == '{'; }) > 4)
      return 0;
    size_t run = 0;
    for (char c : pattern)
      if ((run = (c >= '0' && c <= '9') ? run + 1 : 0) >= 7) return 0;
  }
  const gpt::Inventory& inv = inventory();
  auto sel = gpt::select_hosts(inv, pattern);
  if (sel) {
    const gpt::InventoryHost* last = nullptr;
    for (const gpt::InventoryHost* h : *sel) {
      check(h >= inv.hosts.data() && h < inv.hosts.data() + inv.hosts.size(), "selected a host outside the inventory");
      check(last == nullptr || h > last, "the selection is not in inventory order, or has a host twice");
      last = h;
    }
  } else {
    check(sel.error().rfind("--limit ", 0) == 0, "a --limit error that does not say so: " + sel.error());
  }
  auto names = gpt::expand_host_range(pattern);
  if (names) check(names->size() <= 100000, "a host range made " + std::to_string(names->size()) + " names");
  return 0;
}
