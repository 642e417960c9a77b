// Test-only modules: `probe` (records calls, returns the outcome it is told) and `typed`.
#pragma once

#include <string>
#include <vector>

namespace gpt::test {

struct ProbeCall {
  std::string id;
  bool apply;
};
std::vector<ProbeCall>& probe_calls();

}  // namespace gpt::test
