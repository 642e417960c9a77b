// Ansible YAML inventories (agent/inventory.hpp), properties in fuzz_inventory.hpp.
#include <cstdint>

#include "tests/fuzz/fuzz_inventory.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gpt::fuzz::check_inventory(gpt::parse_inventory_yaml(gpt::fuzz::text_of(data, size), "fuzz.yaml"), "fuzz.yaml");
  return 0;
}
