// qemu_img tests' runs: a playbook of qemu_img tasks run on a temporary root with the real
// qemu-img (tests/modules/qemu_img_test.cpp, tests/security/qemu_img_links_test.cpp).
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "agent/facts.hpp"
#include "agent/playbook.hpp"
#include "agent/runner.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt::test {

inline  // A program's full path from PATH: the tests run the real tools.
    std::string
    tool(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (size_t start = 0;;) {
    const size_t colon = dirs.find(':', start);
    const std::string candidate = dirs.substr(start, colon - start) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return "/usr/bin/" + name;
}

struct Ran {
  std::vector<std::string> load_errors;  // "play.yaml:line:col: message"
  std::vector<TaskReport> tasks;
  RunStats stats;
  const Result& result() const { return tasks.at(0).result; }
};

// Loads a playbook from a file, as `gptagent apply --root` does, and runs it on `root` with real
// processes. System commands are not allowed, as under --root: qemu-img must run all the same.
inline Ran run(const TempDir& root, const std::string& yaml, bool check, Exec* through = nullptr) {
  Ran out;
  TempDir dir;
  test::write(dir / "play.yaml", yaml);
  auto loaded = load_playbook(dir / "play.yaml", {});
  for (auto e : loaded.errors)
    out.load_errors.push_back(e.rfind(dir.path() + "/", 0) == 0 ? e.substr(dir.path().size() + 1) : e);
  if (!loaded.ok()) return out;
  Root r(root.path());
  ProcessExec exec;
  Facts facts;
  Context ctx{r, through ? *through : exec, facts, false};
  Collect rep(out.tasks);
  RunOptions ro;
  ro.check = check;
  out.stats = run_playbook(loaded.playbook, ctx, ro, rep);
  return out;
}

inline std::string task(const std::string& args) { return "tasks:\n  - qemu_img: {" + args + "}\n"; }

// A run that must fail in check mode and in apply mode alike, leaving the tree as it was.
inline Result refused(const TempDir& root, const std::string& yaml) {
  const auto before = test::snapshot(root.path());
  Ran check = run(root, yaml, true);
  EXPECT_TRUE(check.load_errors.empty()) << check.load_errors.front();
  if (check.tasks.empty()) return {};
  EXPECT_EQ(check.result().status, Outcome::failed) << check.result().msg;
  Ran apply = run(root, yaml, false);
  EXPECT_EQ(apply.result().status, Outcome::failed) << apply.result().msg;
  EXPECT_EQ(apply.result().msg, check.result().msg);
  EXPECT_TRUE(apply.result().commands.empty());
  EXPECT_EQ(test::snapshot(root.path()), before) << "a refused image was touched";
  return apply.result();
}

inline test::ProcResult qemu_img(const std::vector<std::string>& args) {
  return test::run_program(tool("qemu-img"), args);
}

inline void make_image(const std::string& image, const std::string& format, const std::string& size,
                       const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {"create", "-q", "-f", format};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(image);
  if (!size.empty()) args.push_back(size);
  auto r = qemu_img(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

struct Images {
  TempDir root;
  Images() { ::mkdir((root / "images").c_str(), 0755); }
  std::string file(const std::string& host_path) const { return root.path() + host_path; }
};

}  // namespace gpt::test
