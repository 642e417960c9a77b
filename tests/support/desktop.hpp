// What a running desktop adds to a sample host tree: processes with the files they hold open, and
// the DRM nodes a GPU's driver made.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tests/support/sandbox.hpp"

namespace gpt::test {

// A process as /proc shows it: comm (15 characters at most), argv, fds linking to what it opened.
inline void add_process(const SampleHost& h, long pid, const std::string& comm, const std::map<int, std::string>& fds,
                        const std::string& argv0 = "") {
  const std::string dir = h.file("/proc/" + std::to_string(pid));
  write(dir + "/comm", comm + "\n");
  write(dir + "/cmdline", (argv0.empty() ? comm : argv0) + std::string("\0--flag\0", 8));
  std::filesystem::create_directories(dir + "/fd");
  for (const auto& [fd, target] : fds) std::filesystem::create_symlink(target, dir + "/fd/" + std::to_string(fd));
}

// The DRM nodes a driver made for a device: sysfs directories named after /dev/dri's nodes.
inline void add_drm(const SampleHost& h, const std::string& address, const std::vector<std::string>& nodes) {
  for (const auto& n : nodes) write(h.file("/sys/bus/pci/devices/" + address + "/drm/" + n + "/dev"), "226:0\n");
}

}  // namespace gpt::test
