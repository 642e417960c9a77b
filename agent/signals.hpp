// Signal handlers for the life of an object (a fleet run, an apply), the previous ones put back.
#pragma once

#include <signal.h>

#include <initializer_list>
#include <utility>
#include <vector>

namespace gpt {

class ScopedSignalHandlers {
 public:
  ScopedSignalHandlers(std::initializer_list<int> signals, void (*handler)(int), int flags = 0) {
    struct sigaction sa {};
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    ::sigemptyset(&sa.sa_mask);
    for (int sig : signals) {
      old_.emplace_back(sig, sigaction_t{});
      ::sigaction(sig, &sa, &old_.back().second);
    }
  }
  ~ScopedSignalHandlers() {
    for (auto& [sig, old] : old_) ::sigaction(sig, &old, nullptr);
  }
  ScopedSignalHandlers(const ScopedSignalHandlers&) = delete;
  ScopedSignalHandlers& operator=(const ScopedSignalHandlers&) = delete;

 private:
  using sigaction_t = struct sigaction;
  std::vector<std::pair<int, sigaction_t>> old_;
};

}  // namespace gpt
