// Ansible INI inventories (agent/inventory.hpp), properties in fuzz_inventory.hpp.
#include <cstdint>

#include "tests/fuzz/fuzz_inventory.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gpt::fuzz::check_inventory(gpt::parse_inventory_ini(gpt::fuzz::text_of(data, size), "fuzz.ini"), "fuzz.ini");
  return 0;
}
