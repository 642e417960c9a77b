#include "agent/installed.hpp"

#include <sys/stat.h>

#include <vector>

#include "agent/text.hpp"

namespace gpt {

std::optional<std::string> untrusted(const Root& root, const std::string& path) {
  auto real = root.resolve(path);
  if (!real) return real.error();
  struct stat st {};
  if (::stat(real->c_str(), &st) != 0 || !S_ISREG(st.st_mode) || !(st.st_mode & S_IXUSR))
    return path + " is not an executable file";
  // From the file up to the root's top, every step as it is (resolve() took the links).
  const std::string& top = root.dir();
  for (std::string at = *real;;) {
    if (::lstat(at.c_str(), &st) != 0) return "cannot look at " + at;
    const bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
    if (st.st_uid != 0 || ((st.st_mode & (S_IWGRP | S_IWOTH)) && !sticky_dir))
      return (at == *real ? path : at) + " belongs to uid " + std::to_string(st.st_uid) + " with mode " +
             mode_text(st.st_mode & 07777) +
             ": root would run what another user can swap (it and each directory above must be root's, "
             "writable by root alone)";
    if (at == top || at == "/") break;
    const size_t slash = at.find_last_of('/');
    at = slash == 0 ? "/" : at.substr(0, slash);
  }
  return std::nullopt;
}

Expected<std::string> installed_agent(const Root& root, const std::string& named, const std::string& what) {
  std::string path = named;
  if (path.empty()) {
    for (const char* p : kAgentPaths)
      if (path_exists(root, p)) {
        path = p;
        break;
      }
    if (path.empty())
      return Error{"no installed agent for " + what + " to run (" +
                   join(std::vector<std::string>(kAgentPaths.begin(), kAgentPaths.end()), ", ") +
                   "): install gptagent's package, or name a root-owned copy with agent:"};
  }
  if (auto why = untrusted(root, path)) return Error{"agent " + path + ": " + *why};
  return path;
}

}  // namespace gpt
