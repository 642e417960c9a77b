// Shared by the libFuzzer targets: property checks that stop the run, and a temporary directory
// per process for the targets that read through a Root.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace gpt::fuzz {

// A property that does not hold: libFuzzer keeps the input as a crash.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "\nFUZZ PROPERTY VIOLATED: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}
inline void check(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

inline std::string text_of(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// What the agent prints with --json must serialise, as it prints it: invalid UTF-8 (from files,
// playbooks, inventories) replaced, since nlohmann throws on it otherwise.
inline void check_dumps(const nlohmann::json& j, const std::string& what) {
  try {
    (void)j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const nlohmann::json::exception& e) {
    fail(what + " does not serialise as JSON: " + e.what());
  }
}

// Splits `text` at `sep`: at most `n` parts, the last one taking the rest; missing parts are empty.
inline std::vector<std::string> split_parts(std::string_view text, std::string_view sep, size_t n) {
  std::vector<std::string> out;
  while (out.size() + 1 < n) {
    size_t at = text.find(sep);
    if (at == std::string_view::npos) break;
    out.emplace_back(text.substr(0, at));
    text.remove_prefix(at + sep.size());
  }
  out.emplace_back(text);
  out.resize(n);
  return out;
}

// A directory of this process, removed at exit; its contents are the target's to lay out.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/gptagent-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) fail("cannot create a scratch directory under " + tmpl);
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  // Empties the directory, keeping it.
  void clear() const {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(path_, ec)) std::filesystem::remove_all(e.path(), ec);
  }
  // Writes `content` at `rel` (parents made); false when that cannot be (a directory is there).
  bool write(const std::string& rel, std::string_view content) const {
    const std::filesystem::path p = std::filesystem::path(path_) / rel;
    std::error_code ec;
    std::filesystem::create_directories(p.parent_path(), ec);
    FILE* f = std::fopen(p.c_str(), "wb");
    if (!f) return false;
    if (!content.empty()) std::fwrite(content.data(), 1, content.size(), f);
    std::fclose(f);
    return true;
  }
  void mkdir(const std::string& rel) const {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path_) / rel, ec);
  }
  void symlink(const std::string& target, const std::string& rel) const {
    const std::filesystem::path p = std::filesystem::path(path_) / rel;
    std::error_code ec;
    std::filesystem::create_directories(p.parent_path(), ec);
    ::unlink(p.c_str());
    (void)::symlink(target.c_str(), p.c_str());
  }

 private:
  std::string path_;
};

}  // namespace gpt::fuzz
