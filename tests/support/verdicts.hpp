// Looking things up in gathered facts, for tests that read verdicts.
#pragma once

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/facts.hpp"

namespace gpt::test {

inline const Gpu& gpu(const Facts& f, const std::string& address) {
  for (const auto& g : f.gpus)
    if (g.address == address) return g;
  throw std::runtime_error("no GPU " + address);
}

// A verdict of this level whose reason holds `text`.
inline bool says(const std::vector<Verdict>& verdicts, Verdict::Level level, const std::string& text) {
  return std::any_of(verdicts.begin(), verdicts.end(),
                     [&](const Verdict& v) { return v.level == level && v.reason.find(text) != std::string::npos; });
}

}  // namespace gpt::test
