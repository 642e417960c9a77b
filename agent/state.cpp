#include "agent/state.hpp"

#include <fcntl.h>
#include <nettle/sha2.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "agent/facts.hpp"
#include "agent/host.hpp"

namespace gpt {

using json = nlohmann::json;

namespace {

void add_unique(std::vector<std::string>& to, const json& items) {
  if (!items.is_array()) return;
  for (const auto& i : items)
    if (i.is_string() && std::find(to.begin(), to.end(), i.get<std::string>()) == to.end())
      to.push_back(i.get<std::string>());
}

std::vector<std::string> strings(const json& j, const char* key) {
  std::vector<std::string> out;
  if (j.contains(key)) add_unique(out, j[key]);
  return out;
}

// One of the agent's own JSON files (an object): nullopt when there is none.
Expected<std::optional<json>> read_own_json(const Root& root, const char* path, size_t max_bytes) {
  auto fd = open_own_file(root, path, O_RDONLY);
  if (!fd) return Error{fd.error()};
  if (fd->get() < 0) return std::optional<json>{};
  auto text = read_open_file(fd->get(), path, max_bytes);
  if (!text) return Error{text.error()};
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Error{std::string(path) + " is not valid JSON"};
  return std::optional<json>{std::move(j)};
}

// An interrupted write leaves the old file whole; the files are the agent's own, so no backup and
// no link followed.
Status write_own_json(const Root& root, const char* path, const json& j, bool unique_temp) {
  WriteOptions wo;
  wo.backup = false;
  wo.no_follow = true;
  wo.unique_temp = unique_temp;
  auto w = write_file_atomic(root, path, j.dump(2, ' ', false, json::error_handler_t::replace) + "\n", wo);
  if (!w) return Error{w.error()};
  return {};
}

}  // namespace

void RebootExpectations::merge(const json& e) {
  if (!e.is_object()) return;
  add_unique(cmdline_present, e.value("cmdline_present", json::array()));
  add_unique(cmdline_absent, e.value("cmdline_absent", json::array()));
  add_unique(modules, e.value("modules", json::array()));
  add_unique(vfio_devices, e.value("vfio_devices", json::array()));
}

json RebootExpectations::to_json() const {
  return {{"cmdline_present", cmdline_present},
          {"cmdline_absent", cmdline_absent},
          {"modules", modules},
          {"vfio_devices", vfio_devices}};
}

RebootExpectations RebootExpectations::from_json(const json& j) {
  RebootExpectations e;
  e.cmdline_present = strings(j, "cmdline_present");
  e.cmdline_absent = strings(j, "cmdline_absent");
  e.modules = strings(j, "modules");
  e.vfio_devices = strings(j, "vfio_devices");
  return e;
}

bool StageIntent::add(const std::vector<HandlerRequest>& more, const std::vector<std::string>& names,
                      bool needs_reboot) {
  bool added = false;
  for (const auto& h : more)
    if (std::none_of(handlers.begin(), handlers.end(), [&](const HandlerRequest& x) { return x.name == h.name; })) {
      handlers.push_back(h);
      added = true;
    }
  for (const auto& n : names)
    if (std::find(notified.begin(), notified.end(), n) == notified.end()) {
      notified.push_back(n);
      added = true;
    }
  if (needs_reboot && !reboot) reboot = added = true;
  return added;
}

json RunState::to_json() const {
  json j = {{"version", 1},
            {"phase", waiting ? "waiting_for_reboot" : "running"},
            {"playbook", playbook},
            {"playbook_sha256", playbook_sha256},
            {"stage", stage},
            {"boot_id", boot_id},
            {"recorded_at", recorded_at}};
  if (waiting) {
    j["next_stage"] = next_stage;
    j["expect"] = expect.to_json();
    if (trial) j["trial"] = trial->to_json();
  } else {
    json hs = json::array();
    for (const auto& h : intent.handlers) hs.push_back({{"name", h.name}, {"module", h.module}, {"args", h.args}});
    j["pending"] = {{"handlers", hs}, {"notified", intent.notified}, {"reboot", intent.reboot}};
  }
  return j;
}

Expected<std::optional<RunState>> load_state(const Root& root) {
  const std::string fix = ": run with --reset-state to start over";
  auto file = read_own_json(root, kStatePath, 1u << 20);
  if (!file) return Error{file.error() + fix};
  if (!*file) return std::optional<RunState>{};
  const json& j = **file;
  try {
    RunState s;
    const std::string phase = j.value("phase", "waiting_for_reboot");
    if (phase != "waiting_for_reboot" && phase != "running")
      return Error{std::string(kStatePath) + ": unknown phase '" + phase + "'" + fix};
    s.waiting = phase == "waiting_for_reboot";
    s.playbook = j.at("playbook").get<std::string>();
    s.playbook_sha256 = j.at("playbook_sha256").get<std::string>();
    s.stage = j.at("stage").get<std::string>();
    s.boot_id = j.at("boot_id").get<std::string>();
    s.recorded_at = j.value("recorded_at", "");
    if (s.waiting) {
      s.next_stage = j.at("next_stage").get<size_t>();
      s.expect = RebootExpectations::from_json(j.value("expect", json::object()));
      if (j.contains("trial")) {
        auto t = TrialRecord::from_json(j.at("trial"));
        if (!t) return Error{std::string(kStatePath) + ": trial: " + t.error() + fix};
        s.trial = std::move(*t);
      }
    } else {
      const json& p = j.at("pending");
      s.intent.stage = s.stage;
      for (const auto& h : p.at("handlers")) {
        HandlerRequest req{h.at("name").get<std::string>(), h.at("module").get<std::string>(),
                           h.value("args", json::object())};
        if (auto why = unsafe_handler_request(req))
          s.dropped.push_back("pending handler '" + req.name + "': " + *why);
        else
          s.intent.handlers.push_back(std::move(req));
      }
      s.intent.notified = p.value("notified", std::vector<std::string>{});
      s.intent.reboot = p.value("reboot", false);
    }
    return std::optional<RunState>{std::move(s)};
  } catch (const json::exception& e) {
    return Error{std::string(kStatePath) + " lacks what a run records (" + e.what() + ")" + fix};
  }
}

Status save_state(const Root& root, const RunState& state) {
  return write_own_json(root, kStatePath, state.to_json(), false);
}

Status clear_state(const Root& root) { return remove_own_file(root, kStatePath); }

json LastRun::to_json() const {
  return {{"version", 1},
          {"playbook", playbook},
          {"check", check},
          {"finished_at", finished_at},
          {"duration_seconds", duration_seconds},
          {"exit_code", exit_code},
          {"drift", drift()},
          {"stats", {{"ok", ok}, {"changed", changed}, {"failed", failed}, {"skipped", skipped}}},
          {"waiting_for_reboot", waiting_for_reboot}};
}

Expected<std::optional<LastRun>> load_last_run(const Root& root) {
  auto file = read_own_json(root, kLastRunPath, 1u << 16);
  if (!file) return Error{file.error()};
  if (!*file) return std::optional<LastRun>{};
  const json& j = **file;
  try {
    LastRun r;
    r.playbook = j.at("playbook").get<std::string>();
    r.check = j.at("check").get<bool>();
    r.finished_at = j.at("finished_at").get<int64_t>();
    r.duration_seconds = j.value("duration_seconds", 0.0);
    r.exit_code = j.at("exit_code").get<int>();
    const json& st = j.at("stats");
    r.ok = st.value("ok", 0);
    r.changed = st.value("changed", 0);
    r.failed = st.value("failed", 0);
    r.skipped = st.value("skipped", 0);
    r.waiting_for_reboot = j.value("waiting_for_reboot", false);
    return std::optional<LastRun>{std::move(r)};
  } catch (const json::exception& e) {
    return Error{std::string(kLastRunPath) + " lacks what a run records (" + e.what() + ")"};
  }
}

Status save_last_run(const Root& root, const LastRun& run) {
  return write_own_json(root, kLastRunPath, run.to_json(), true);  // check runs share the lock
}

std::vector<Check> verify_after_reboot(const RebootExpectations& e, const Facts& f) {
  std::vector<Check> out;
  auto on_cmdline = [&](const std::string& p, bool by_name) {
    return std::any_of(f.cmdline.begin(), f.cmdline.end(), [&](const std::string& c) {
      if (param_name(c) != param_name(p)) return false;
      return by_name || c.substr(std::min(c.find('='), c.size())) == p.substr(std::min(p.find('='), p.size()));
    });
  };
  for (const auto& p : e.cmdline_present) {
    bool ok = on_cmdline(p, false);
    out.push_back({ok, "the kernel command line has " + p,
                   p + " is not on the running kernel's command line (/proc/cmdline): the boot configuration was "
                       "not regenerated, or another boot entry was booted"});
  }
  for (const auto& p : e.cmdline_absent) {
    bool ok = !on_cmdline(p, p.find('=') == std::string::npos);
    out.push_back({ok, "the kernel command line has no " + p,
                   p + " is still on the running kernel's command line: the boot configuration was not regenerated, "
                       "or another boot entry was booted"});
  }
  const bool wants_iommu = std::any_of(e.cmdline_present.begin(), e.cmdline_present.end(),
                                       [](const std::string& p) { return param_name(p) == "intel_iommu"; }) ||
                           !e.vfio_devices.empty();
  if (wants_iommu) {
    out.push_back(
        {f.iommu.on(), "the IOMMU is on (" + std::to_string(f.iommu.groups) + " groups)",
         "the IOMMU is enabled on the command line but the kernel made no IOMMU groups: enable VT-d / AMD-Vi in "
         "the firmware setup"});
  }
  for (const auto& m : e.modules) {
    bool ok = f.module_available(m);
    out.push_back(
        {ok, m + " is loaded",
         m + " is not loaded: /etc/modules-load.d was not read at boot, or the module is missing from this kernel"});
  }
  for (const auto& d : e.vfio_devices) {
    auto dev = std::find_if(f.pci.begin(), f.pci.end(), [&](const PciDevice& p) { return p.address == d; });
    std::string driver = dev == f.pci.end() ? "" : dev->driver;
    bool ok = driver == "vfio-pci";
    std::string why =
        dev == f.pci.end()
            ? d + " is gone from the PCI bus after the reboot"
            : d + " is on " + (driver.empty() ? std::string("no driver") : driver) +
                  ", not vfio-pci: the initramfs was not rebuilt, or vfio-pci's ids did not reach it before the "
                  "display driver (softdep, or vfio-pci.ids on the command line for a built-in vfio-pci)";
    out.push_back({ok, d + " is bound to vfio-pci", why});
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  sha256_ctx ctx;
  sha256_init(&ctx);
  sha256_update(&ctx, data.size(), reinterpret_cast<const uint8_t*>(data.data()));
  uint8_t md[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx, sizeof md, md);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (uint8_t b : md) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

}  // namespace gpt
