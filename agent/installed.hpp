// The installed agent that root runs unattended (libvirt's hook, the boot-time resume unit): found
// where packages put it, and refused when another user could swap what root would run.
#pragma once

#include <array>
#include <optional>
#include <string>

#include "agent/expected.hpp"
#include "agent/host.hpp"

namespace gpt {

inline constexpr std::array kAgentPaths = {"/usr/bin/gptagent", "/usr/sbin/gptagent", "/usr/local/bin/gptagent",
                                           "/usr/local/sbin/gptagent"};

// Why root must not run `path` unattended: it, or a directory above it, belongs to another user or
// may be written by one (who could then swap what root runs). nullopt when it may run.
std::optional<std::string> untrusted(const Root& root, const std::string& path);

// `named` when given, else the first of kAgentPaths that exists; checked with untrusted(). The
// error names `what` runs it ("the hook").
Expected<std::string> installed_agent(const Root& root, const std::string& named, const std::string& what);

}  // namespace gpt
