// The playbook loader on any text. Properties: it returns (no crash, no exception, no sanitizer
// report); every error is "fuzz.yaml:LINE:COL: message" with LINE and COL from 1; the errors are
// in file order; a playbook that loads has a module for every task and handler; what --json prints
// of it serialises.
#include <cstdint>
#include <string>

#include "agent/facts.hpp"
#include "agent/module.hpp"
#include "agent/playbook.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using gpt::fuzz::check;

const gpt::LoadOptions& options() {
  static const gpt::LoadOptions opts = [] {
    gpt::LoadOptions o;
    gpt::Facts f;
    f.cpu.vendor = "intel";
    f.cpu.vendor_id = "GenuineIntel";
    f.os.id = "debian";
    f.os.version_id = "12";
    f.kernel_release = "6.1.0-18-amd64";
    f.cmdline = {"BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64", "ro", "quiet"};
    o.facts = f.to_json();
    o.extra_vars = {{"gpu", "0000:01:00.0"}, {"size", "20G"}};
    o.max_bytes = 64u << 10;
    return o;
  }();
  return opts;
}

// "fuzz.yaml:12:3: ..." -> {12, 3}; {0, 0} when the error has no such head.
std::pair<long, long> position(const std::string& err) {
  const std::string head = "fuzz.yaml:";
  if (err.compare(0, head.size(), head) != 0) return {0, 0};
  size_t p = head.size();
  auto number = [&](long& out) {
    size_t start = p;
    out = 0;
    while (p < err.size() && err[p] >= '0' && err[p] <= '9' && p - start < 9) out = out * 10 + (err[p++] - '0');
    return p > start;
  };
  long line = 0, col = 0;
  if (!number(line) || p >= err.size() || err[p++] != ':' || !number(col) || err.compare(p, 2, ": ") != 0)
    return {0, 0};
  return {line, col};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = gpt::fuzz::text_of(data, size);
  const gpt::LoadResult r = gpt::load_playbook_text(text, "fuzz.yaml", options());
  std::pair<long, long> last{0, 0};
  for (const auto& e : r.errors) {
    const auto pos = position(e);
    check(pos.first >= 1 && pos.second >= 1, "an error without file:line:col: " + e);
    check(pos >= last, "errors out of file order: " + e);
    last = pos;
  }
  // What `gptagent apply --json` prints for a playbook that does not load.
  gpt::fuzz::check_dumps(nlohmann::json{{"playbook", "fuzz.yaml"}, {"errors", r.errors}}, "the load errors");
  if (!r.ok()) return 0;
  for (const auto& s : r.playbook.stages) {
    for (const auto* list : {&s.tasks, &s.handlers})
      for (const auto& t : *list) {
        check(t.module != nullptr, "a loaded task without a module: " + t.name);
        check(t.mark.line >= 1 && t.mark.col >= 1, "a task without a position: " + t.name);
        gpt::fuzz::check_dumps(t.args, "the arguments of task " + t.name);
      }
  }
  for (const auto& t : r.playbook.handlers) check(t.module != nullptr, "a loaded handler without a module: " + t.name);
  gpt::fuzz::check_dumps(r.playbook.vars, "the playbook's vars");
  return 0;
}
