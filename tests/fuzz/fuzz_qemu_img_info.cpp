// `qemu-img info --output=json` as the qemu_img module reads it (modules/qemu_img.cpp): the module
// runs in check mode on a root of this process holding the image and its backing file, with an
// Exec that answers `qemu-img info` with the input. The first byte picks the task (format, size,
// backing file, allow_grow) and whether qemu-img first refuses with a lock error (a running VM);
// the rest is cut at the first NUL into the image's JSON and the backing file's (the same when
// there is no NUL). The module's converge is called directly, not through converge_module, so an
// exception is a crash here. Properties: the result is ok, changed or failed, with a message; a
// failed one changes nothing (no command); its data serialises as JSON.
#include <cstdint>
#include <string>

#include "agent/exec.hpp"
#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "agent/module.hpp"
#include "tests/fuzz/fuzz_common.hpp"

namespace {

using gpt::fuzz::check;

const gpt::fuzz::ScratchDir& scratch() {
  static const gpt::fuzz::ScratchDir dir = [] {
    gpt::fuzz::ScratchDir d;
    d.write("var/lib/libvirt/images/vm.qcow2", "QFI\xfb");
    d.write("var/lib/libvirt/images/base.qcow2", "QFI\xfb");
    d.write("var/lib/libvirt/images/vm.img", "");
    return d;
  }();
  return dir;
}

class InfoExec final : public gpt::Exec {
 public:
  std::string image, backing;
  bool locked = false;
  std::vector<std::string> ran;
  gpt::ExecResult run(const gpt::Command& cmd) override {
    ran.push_back(cmd.display());
    if (cmd.argv.size() < 2 || cmd.argv[1] != "info") return {0, false, "", ""};
    const bool force_share = cmd.argv.size() > 2 && cmd.argv[2] == "-U";
    if (locked && !force_share)
      return {1, false, "",
              "qemu-img: Could not open 'x': Failed to get shared \"write\" lock\nIs another process using the image "
              "[x]?\n"};
    const bool is_backing = cmd.argv.back().find("base.qcow2") != std::string::npos;
    return {0, false, is_backing ? backing : image, ""};
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t sel = data[0];
  const std::string rest = gpt::fuzz::text_of(data + 1, size - 1);
  InfoExec exec;
  const size_t nul = rest.find('\0');
  exec.image = rest.substr(0, nul);
  exec.backing = nul == std::string::npos ? rest : rest.substr(nul + 1);
  exec.locked = sel & 0x80;

  static const gpt::ModuleDef* def = gpt::Registry::instance().find("qemu_img");
  check(def != nullptr, "no qemu_img module");
  nlohmann::json args;
  switch (sel & 3) {
    case 0:
      args = {{"path", "/var/lib/libvirt/images/vm.qcow2"}, {"size", "20G"}};
      break;
    case 1:
      args = {
          {"path", "/var/lib/libvirt/images/vm.img"}, {"format", "raw"}, {"size", "1T"}, {"preallocation", "falloc"}};
      break;
    case 2:
      args = {{"path", "/var/lib/libvirt/images/vm.qcow2"},
              {"backing", "/var/lib/libvirt/images/base.qcow2"},
              {"backing_format", "qcow2"}};
      break;
    case 3:
      args = {{"path", "/var/lib/libvirt/images/vm.qcow2"},
              {"size", "512"},
              {"backing", "/var/lib/libvirt/images/base.qcow2"},
              {"backing_format", "raw"},
              {"mode", "0640"},
              {"owner", "0"}};
      break;
  }
  if (sel & 4) args["allow_grow"] = true;
  args = gpt::with_defaults(def->schema, args);

  const gpt::Root root(scratch().path());
  static const gpt::Facts facts;
  gpt::Context ctx{root, exec, facts, false};
  const gpt::Result r = def->converge(ctx, args, /*apply=*/false);
  check(r.status == gpt::Outcome::ok || r.status == gpt::Outcome::changed || r.status == gpt::Outcome::failed,
        "qemu_img skipped: " + r.msg);
  check(!r.msg.empty(), "a result without a message");
  if (r.status == gpt::Outcome::failed) check(r.commands.empty(), "a failed check names commands: " + r.msg);
  for (const auto& c : exec.ran)
    check(c.rfind("qemu-img info ", 0) == 0, "check mode ran more than qemu-img info: " + c);
  gpt::fuzz::check_dumps(r.data, "the result's data");
  gpt::fuzz::check_dumps(nlohmann::json{{"msg", r.msg}, {"diff", r.diff}}, "the result's message and diff");
  return 0;
}
