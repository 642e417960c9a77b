// Root::resolve (agent/host.hpp), the boundary every read of /proc, /sys and /etc and every write
// goes through: "nothing a tree contains can lead a read or a write outside it". The input is cut
// at "\n%%\n": the first part lays out a tree in a directory of this process, one entry a line
// ("NAME -> TARGET" a symlink, "NAME/" a directory, "NAME" a file; 16 at most), beside a directory
// "outside" that must stay out of reach; each line of the second part is a path to resolve.
// Properties: the resolved path is the root or under it, and so is the real location of what it
// names (of its deepest existing ancestor when it does not exist yet: where a write would go).
#include <limits.h>
#include <stdlib.h>

#include <cstdint>
#include <string>

#include "agent/host.hpp"
#include "agent/text.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using gpt::fuzz::check;

const gpt::fuzz::ScratchDir& scratch() {
  static const gpt::fuzz::ScratchDir dir;
  return dir;
}

bool within(const std::string& path, const std::string& dir) {
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

// A relative path inside the tree: no NUL, no "..", not absolute, not empty.
bool tree_path(const std::string& p) {
  if (p.empty() || p.front() == '/' || p.find('\0') != std::string::npos || p.size() > 200) return false;
  for (size_t start = 0;;) {
    size_t slash = p.find('/', start);
    std::string_view c =
        std::string_view(p).substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (c == "..") return false;
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = gpt::fuzz::split_parts(gpt::fuzz::text_of(data, size), "\n%%\n", 2);
  const auto& t = scratch();
  t.clear();
  t.write("outside/secret", "outside the root\n");
  t.mkdir("root");
  int entries = 0;
  for (std::string_view line : gpt::lines(parts[0])) {
    if (++entries > 16) break;
    std::string entry(line);
    if (auto arrow = entry.find(" -> "); arrow != std::string::npos) {
      std::string name = entry.substr(0, arrow), target = entry.substr(arrow + 4);
      if (tree_path(name) && !target.empty() && target.find('\0') == std::string::npos)
        t.symlink(target, "root/" + name);
    } else if (!entry.empty() && entry.back() == '/') {
      entry.pop_back();
      if (tree_path(entry)) t.mkdir("root/" + entry);
    } else if (tree_path(entry)) {
      t.write("root/" + entry, "inside\n");
    }
  }

  const gpt::Root root(t.path() + "/root");
  for (std::string_view line : gpt::lines(parts[1])) {
    const std::string path(line);
    auto r = root.resolve(path);
    if (!r) continue;
    check(within(*r, root.dir()), "'" + path + "' resolves to " + *r + ", outside the root " + root.dir());
    // Where the kernel takes it: the deepest existing ancestor, links followed.
    std::string p = *r;
    char real[PATH_MAX];
    while (::realpath(p.c_str(), real) == nullptr && p.size() > root.dir().size()) p = p.substr(0, p.find_last_of('/'));
    check(within(real, root.dir()), "'" + path + "' resolves to " + *r + ", which the kernel takes to " + real +
                                        ", outside the root " + root.dir());
  }
  return 0;
}
