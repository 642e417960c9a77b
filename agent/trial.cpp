#include "agent/trial.hpp"

#include <fcntl.h>
#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <random>

#include "agent/changes.hpp"
#include "agent/installed.hpp"
#include "agent/kernel_guard.hpp"
#include "agent/text.hpp"
#include "modules/lib/grub_default.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

const char* const kTrialSuffix = ".gptagent-trial";
const char* const kBlockBegin = "### BEGIN gptagent trial boot: removed when the trial is committed or undone ###";
const char* const kBlockEnd = "### END gptagent trial boot ###";
const char* const kGeneratedCfg = "/var/lib/gptagent/trial-grub.cfg";

// GRUB's files and programs on this host: grub-* under /boot/grub, or grub2-* under /boot/grub2.
struct GrubLayout {
  std::string dir, mkconfig, reboot, editenv, probe;
};

Expected<GrubLayout> grub_layout(const Context& ctx) {
  const std::string& tool = ctx.facts.boot.grub;
  const bool two = tool == "grub2-mkconfig";
  if (tool.empty()) return Error{"no update-grub, grub-mkconfig or grub2-mkconfig on this host"};
  GrubLayout g{two ? "/boot/grub2" : "/boot/grub", two ? "grub2-mkconfig" : "grub-mkconfig",
               two ? "grub2-reboot" : "grub-reboot", two ? "grub2-editenv" : "grub-editenv",
               two ? "grub2-probe" : "grub-probe"};
  std::vector<std::string> missing;
  for (const auto* p : {&g.mkconfig, &g.reboot, &g.editenv, &g.probe})
    if (!find_program(ctx.root, *p)) missing.push_back(*p);
  if (!missing.empty()) return Error{"GRUB's " + join(missing, ", ") + " not found on this host"};
  return g;
}

// A command whose output is read (grub-probe): run where system commands are allowed.
Expected<std::string> ask(Context& ctx, const Command& cmd) {
  if (!ctx.system_commands_allowed) return Error{"not run under --root " + ctx.root.dir() + ": " + cmd.display()};
  ExecResult r = ctx.exec.run(cmd);
  if (!r.ok()) return Error{cmd.display() + " failed: " + r.failure()};
  return std::string(trim(r.out));
}

Status run(Context& ctx, const Command& cmd, std::string_view what) {
  Result r = ctx.run_system(cmd, true, what);
  if (r.status != Outcome::changed) return Error{r.msg};
  return {};
}

const std::string kChoices =
    ": the trial boot cannot be armed, nothing was changed. Run with --no-trial to commit the change "
    "directly (the previous behaviour: no automatic fallback)";

// GRUB_DEFAULT as grub-mkconfig sources it: /etc/default/grub, then the drop-ins.
Expected<std::string> grub_default_entry(const Root& root) {
  std::vector<std::string> files = {"/etc/default/grub"};
  auto names = list_dir(root, "/etc/default/grub.d");
  if (!names) return Error{names.error()};
  for (const auto& n : *names)
    if (n.size() > 4 && n.substr(n.size() - 4) == ".cfg") files.push_back("/etc/default/grub.d/" + n);
  std::string value;
  for (const auto& f : files) {
    auto text = read_file_if_exists(root, f);
    if (!text) return Error{text.error()};
    if (!*text) continue;
    auto kv = grub_key_value(**text, "GRUB_DEFAULT");
    if (!kv) return Error{f + ": " + kv.error()};
    if (kv->assigned) value = join(kv->params, " ");
  }
  return value;
}

std::string random_id() {
  std::random_device rd;
  std::uniform_int_distribution<int> hex(0, 15);
  std::string id;
  for (int i = 0; i < 12; ++i) id += "0123456789abcdef"[hex(rd)];
  return id;
}

std::string base_name(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// custom.cfg without the trial's block (the user's own lines byte for byte).
std::string without_block(const std::string& text) {
  auto b = text.find(kBlockBegin);
  if (b == std::string::npos) return text;
  auto e = text.find(kBlockEnd, b);
  if (e == std::string::npos) return text.substr(0, b);
  e += std::string_view(kBlockEnd).size();
  if (e < text.size() && text[e] == '\n') ++e;
  return text.substr(0, b) + text.substr(e);
}

bool safe_text(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == ' ' || c == '-' || c == '_' || c == '.';
  });
}

// A trial initramfs the agent builds: /boot/NAME beside the kernel's (GRUB, BootLoaderSpec with
// GRUB) or, on systemd-boot, in the kernel's own directory under the boot partition
// (/efi/MACHINE-ID/VERSION/initrd.gptagent-trial).
bool own_trial_initrd(const std::string& p, bool sdboot) {
  if (p.find("..") != std::string::npos || p.find("//") != std::string::npos ||
      base_name(p).find(kTrialSuffix) == std::string::npos)
    return false;
  if (!std::all_of(p.begin(), p.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '.' || c == '-' || c == '_' ||
               c == '+' || c == '~';
      }))
    return false;
  if (!sdboot) return p.rfind("/boot/", 0) == 0 && p.find('/', 6) == std::string::npos;
  return p.rfind("/boot/", 0) == 0 || p.rfind("/efi/", 0) == 0;
}

// systemd-boot's EFI variables (vendor GUID 4a67b082-...) as the strings they hold: UTF-16LE after
// the four bytes of attributes. nullopt when the variable is not set.
Expected<std::optional<std::string>> loader_variable(const Root& root, const std::string& name) {
  auto raw = read_file_if_exists(root, "/sys/firmware/efi/efivars/" + name + "-" + kLoaderVendorGuid, 1u << 12);
  if (!raw) return Error{raw.error()};
  if (!*raw) return std::optional<std::string>();
  const std::string& b = **raw;
  std::string out;
  for (size_t i = 4; i + 1 < b.size(); i += 2) {
    const unsigned c = static_cast<unsigned char>(b[i]) | static_cast<unsigned char>(b[i + 1]) << 8;
    if (c == 0) break;
    out += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
  }
  return std::optional<std::string>(out);
}

// A trial entry's file name on systemd-boot: the one the agent writes (+1: one try) and the names
// systemd-boot renames it to as it counts (gptagent-trial+0-1.conf), or blesses it to.
bool trial_entry_name(std::string_view n) {
  const std::string_view stem = "gptagent-trial";
  if (n.substr(0, stem.size()) != stem || n.size() < stem.size() + 5 || n.substr(n.size() - 5) != ".conf") return false;
  const std::string_view counter = n.substr(stem.size(), n.size() - stem.size() - 5);
  if (counter.empty()) return true;
  if (counter[0] != '+' || counter.size() < 2) return false;
  bool dash = false;
  for (size_t i = 1; i < counter.size(); ++i) {
    if (counter[i] == '-' && !dash && i > 1 && i + 1 < counter.size()) {
      dash = true;
      continue;
    }
    if (!std::isdigit(static_cast<unsigned char>(counter[i]))) return false;
  }
  return true;
}

}  // namespace

json TrialRecord::to_json() const {
  json hs = json::array();
  for (const auto& h : deferred) hs.push_back({{"name", h.name}, {"module", h.module}, {"args", h.args}});
  json w = json::array();
  for (const auto& [path, backup] : written) w.push_back({{"path", path}, {"backup", backup}});
  json j = {{"id", id},         {"grub_dir", grub_dir},
            {"initrd", initrd}, {"custom_cfg_created", custom_cfg_created},
            {"deferred", hs},   {"deferred_notified", deferred_notified},
            {"written", w}};
  if (!entry.empty()) j["entry"] = entry;
  if (!loader.empty()) j["loader"] = loader;
  return j;
}

Expected<TrialRecord> TrialRecord::from_json(const json& j) {
  try {
    TrialRecord t;
    t.id = j.at("id").get<std::string>();
    if (t.id.size() != 12 ||
        !std::all_of(t.id.begin(), t.id.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }))
      return Error{"id '" + t.id + "' is not one the agent makes"};
    t.loader = j.value("loader", "");
    if (!t.loader.empty() && t.loader != kSystemdBoot)
      return Error{"loader '" + t.loader + "' is not one the agent arms"};
    const bool sdboot = t.loader == kSystemdBoot;
    t.grub_dir = j.at("grub_dir").get<std::string>();
    if (sdboot ? !t.grub_dir.empty() : t.grub_dir != "/boot/grub" && t.grub_dir != "/boot/grub2")
      return Error{"grub_dir '" + t.grub_dir + "' is not GRUB's"};
    t.initrd = j.at("initrd").get<std::string>();
    if (!t.initrd.empty() && !own_trial_initrd(t.initrd, sdboot))
      return Error{"initrd '" + t.initrd + "' is not a trial initramfs where the agent builds them"};
    t.custom_cfg_created = j.at("custom_cfg_created").get<bool>();
    t.entry = j.value("entry", "");
    const bool own_entry =
        sdboot ? std::any_of(kLoaderEntryDirs.begin(), kLoaderEntryDirs.end(),
                             [&](const std::string& d) { return t.entry == d + "/" + kTrialCountedEntry; })
               : t.entry.empty() || t.entry == kTrialBlsEntry;
    if (!own_entry) return Error{"entry '" + t.entry + "' is not the trial's"};
    for (const auto& h : j.at("deferred")) {
      HandlerRequest req{h.at("name").get<std::string>(), h.at("module").get<std::string>(),
                         h.value("args", json::object())};
      if (auto why = unsafe_handler_request(req)) return Error{"deferred handler '" + req.name + "': " + *why};
      t.deferred.push_back(std::move(req));
    }
    t.deferred_notified = j.at("deferred_notified").get<std::vector<std::string>>();
    for (const auto& w : j.at("written")) {
      std::string path = w.at("path").get<std::string>(), backup = w.at("backup").get<std::string>();
      if (path.empty() || path[0] != '/' || path.find("/../") != std::string::npos ||
          path.find("/./") != std::string::npos)
        return Error{"written '" + path + "' is not an absolute path"};
      // A backup is the file's own: FILE.gptagent-TIME beside it, as the agent names them.
      if (!backup.empty() &&
          (backup.rfind(path + ".gptagent-", 0) != 0 || backup.find('/', path.size()) != std::string::npos))
        return Error{"the backup '" + backup + "' of " + path + " is not one the agent makes"};
      t.written.emplace_back(std::move(path), std::move(backup));
    }
    return t;
  } catch (const json::exception& e) {
    return Error{std::string("lacks what a trial records (") + e.what() + ")"};
  }
}

Expected<std::vector<std::string>> first_grub_entry(std::string_view grub_cfg) {
  std::vector<std::string> out;
  for (std::string_view line : lines(grub_cfg)) {
    if (out.empty()) {
      if (line.rfind("menuentry ", 0) == 0) out.emplace_back(line);
      continue;
    }
    out.emplace_back(line);
    if (line == "}") return out;
  }
  if (out.empty()) return Error{"no menu entry"};
  return Error{"its first menu entry has no closing brace"};
}

namespace {

// grub.cfg exists, honours next_entry (grub-reboot's one-shot) and holds `needs` (where the trial
// entry comes from).
Status grub_cfg_honours_one_shot(const Context& ctx, const GrubLayout& g, const std::string& needs,
                                 const std::string& why) {
  const std::string cfg_path = g.dir + "/grub.cfg";
  auto cfg = read_file_if_exists(ctx.root, cfg_path);
  if (!cfg) return Error{cfg.error()};
  if (!*cfg) return Error{cfg_path + " does not exist"};
  if ((*cfg)->find(needs) == std::string::npos) return Error{cfg_path + why};
  if ((*cfg)->find("next_entry") == std::string::npos)
    return Error{cfg_path + " does not honour next_entry (grub-reboot's one-shot)"};
  return {};
}

// GRUB clears next_entry with save_env before it boots the entry: where it cannot write its
// environment block the trial would be booted on every reset, never falling back.
Status env_block_writable(Context& ctx, const GrubLayout& g) {
  auto fs = ask(ctx, Command{{g.probe, "--target=fs", g.dir}});
  if (!fs) return Error{fs.error()};
  static const std::vector<std::string> no_write_fs = {"btrfs", "zfs",   "cpiofs",  "newc",
                                                       "odc",   "romfs", "squash4", "tarfs"};
  if (std::find(no_write_fs.begin(), no_write_fs.end(), *fs) != no_write_fs.end())
    return Error{g.dir + " is on " + *fs +
                 ", where GRUB cannot write its environment block: the one-shot entry would never be "
                 "cleared and the host would boot the trial on every reset" +
                 kChoices + ", or move /boot to a plain file system"};
  auto abstraction = ask(ctx, Command{{g.probe, "--target=abstraction", g.dir}});
  if (!abstraction) return Error{abstraction.error()};
  for (const auto& a : words(*abstraction))
    if (a == "lvm" || a == "diskfilter" || a.rfind("mdraid", 0) == 0 || a.rfind("raid", 0) == 0 || a == "cryptodisk" ||
        a.rfind("luks", 0) == 0 || a == "geli" || a == "ldm")
      return Error{g.dir + " is on " + a +
                   ", where GRUB cannot write its environment block: the one-shot entry would never "
                   "be cleared and the host would boot the trial on every reset" +
                   kChoices + ", or move /boot to a plain partition"};
  return {};
}

// The BootLoaderSpec entry the host boots: GRUB_DEFAULT=saved, and saved_entry in grubenv names
// an entry of /boot/loader/entries. Its path and text.
Expected<std::pair<std::string, std::string>> saved_bls_entry(const Context& ctx, const GrubLayout& g) {
  auto def = grub_default_entry(ctx.root);
  if (!def) return Error{def.error()};
  if (*def != "saved")
    return Error{"GRUB_DEFAULT=" + (def->empty() ? std::string("(unset)") : *def) +
                 ": on a BootLoaderSpec host the trial needs GRUB_DEFAULT=saved, so that the entry it adds "
                 "cannot become the default by sorting first"};
  const std::string env_path = g.dir + "/grubenv";
  auto env = read_file_if_exists(ctx.root, env_path);
  if (!env) return Error{env.error()};
  std::string saved;
  if (*env)
    for (std::string_view line : lines(**env))
      if (line.rfind("saved_entry=", 0) == 0) saved = std::string(trim(line.substr(12)));
  if (saved.empty())
    return Error{env_path +
                 " names no saved_entry: the host boots whichever entry sorts first (grubby --set-default "
                 "names one)"};
  if (saved.find('/') != std::string::npos || saved == "." || saved == ".." || !safe_text(saved))
    return Error{env_path + ": saved_entry '" + saved + "' is not an entry's name"};
  const std::string path = "/boot/loader/entries/" + saved + ".conf";
  auto text = read_file_if_exists(ctx.root, path);
  if (!text) return Error{text.error()};
  if (!*text) return Error{env_path + ": saved_entry names " + path + ", which does not exist"};
  return std::make_pair(path, **text);
}

Status bls_trial_possible(Context& ctx, const GrubLayout& g) {
  if (auto s = grub_cfg_honours_one_shot(ctx, g, "blscfg", " does not load the BootLoaderSpec entries (no blscfg)"); !s)
    return s;
  if (auto e = saved_bls_entry(ctx, g); !e) return Error{e.error()};
  return env_block_writable(ctx, g);
}

Status grub_trial_possible(Context& ctx, const GrubLayout& g) {
  if (auto s = grub_cfg_honours_one_shot(
          ctx, g, "custom.cfg",
          " does not source custom.cfg (no /etc/grub.d/41_custom when it was made), where the trial entry goes");
      !s)
    return s;
  auto def = grub_default_entry(ctx.root);
  if (!def) return Error{def.error()};
  if (!def->empty() && *def != "0")
    return Error{"GRUB_DEFAULT=" + *def +
                 ": the trial copies the first menu entry, which is the one this host boots only with GRUB_DEFAULT=0"};
  return env_block_writable(ctx, g);
}

// What grubby --update-kernel=ALL --args=A --remove-args=R makes of an entry's options: a removal
// given as a name takes every value of it, one given as name=value only that one; an addition
// replaces the parameter of its name, or goes last.
std::vector<std::string> grubby_options(std::vector<std::string> opts, const GrubbyArgs& a) {
  const auto key = [](const std::string& p) { return p.substr(0, p.find('=')); };
  for (const auto& r : a.remove)
    std::erase_if(opts,
                  [&](const std::string& o) { return o == r || (r.find('=') == std::string::npos && key(o) == r); });
  for (const auto& p : a.add) {
    std::erase_if(opts, [&](const std::string& o) { return key(o) == key(p); });
    opts.push_back(p);
  }
  return opts;
}

// An initrd line with the kernel's own initramfs (of `release`) replaced by the trial's, which
// is built here: microcode images before it stay. Sets t.initrd: /boot/NAME on GRUB's boot paths;
// with `boot_root` (systemd-boot: the partition the entry's paths are relative to) beside the
// kernel's own, whose name may also be kernel-install's `initrd`.
Expected<std::string> trial_initrd_line(Context& ctx, TrialRecord& t, const std::string& line,
                                        const std::string& release, const std::string& boot_root = "") {
  if (release.empty())
    return Error{"the entry's kernel is not named vmlinuz-RELEASE: cannot build its trial initramfs"};
  const auto w = words(line);
  const std::string& tool = ctx.facts.boot.initramfs;
  const std::string original = tool == "update-initramfs" ? "initrd.img-" + release : "initramfs-" + release + ".img";
  std::string rewritten = line;
  bool replaced = false;
  for (size_t k = 1; k < w.size() && !replaced; ++k) {
    const std::string base = base_name(w[k]);
    if (base != original && (boot_root.empty() || base != "initrd")) continue;
    const std::string trial_name =
        base == "initramfs-" + release + ".img" ? "initramfs-" + release + kTrialSuffix + ".img" : base + kTrialSuffix;
    const std::string dir = w[k].substr(0, w[k].size() - base.size());
    const size_t at = rewritten.find(w[k], rewritten.find(w[0]) + w[0].size());
    rewritten.replace(at, w[k].size(), dir + trial_name);
    t.initrd =
        boot_root.empty() ? "/boot/" + trial_name : boot_root + (dir.rfind('/', 0) == 0 ? "" : "/") + dir + trial_name;
    replaced = true;
  }
  if (!replaced)
    return Error{"the entry's initrd line names no " + original + (boot_root.empty() ? "" : " or initrd") +
                 ": cannot boot a trial initramfs"};
  if (!own_trial_initrd(t.initrd, !boot_root.empty()))
    return Error{"the trial initramfs would be " + t.initrd + ", not a path the agent builds them at"};
  Command build;
  if (tool == "update-initramfs")
    build.argv = {"mkinitramfs", "-o", t.initrd, release};
  else if (tool == "dracut")
    build.argv = {"dracut", "-f", t.initrd, release};
  else if (tool == "mkinitcpio")
    build.argv = {"mkinitcpio", "-k", "/boot/vmlinuz-" + release, "-g", t.initrd};
  else
    return Error{"no update-initramfs, dracut or mkinitcpio on this host: cannot build the trial initramfs"};
  build.timeout = std::chrono::minutes(15);
  if (auto s = run(ctx, build, "built the trial initramfs"); !s) return Error{s.error()};
  return rewritten;
}

std::string safe_stage_name(const std::string& stage) {
  std::string out;
  for (char c : stage) out += safe_text(std::string(1, c)) ? c : '_';
  return out;
}

// GRUB's own configuration: the first entry of what grub-mkconfig writes now, as custom.cfg's
// gptagent-trial.
Status write_grub_trial(Context& ctx, const GrubLayout& g, TrialRecord& t, const std::string& stage,
                        bool new_initramfs) {
  // The distribution's own generator, with the stage's /etc/default/grub, writes to a file of the
  // agent's: its first entry is what the default entry becomes at the commit.
  if (auto s = run(ctx, Command{{g.mkconfig, "-o", kGeneratedCfg}, std::chrono::minutes(10)},
                   "wrote the trial's grub configuration");
      !s)
    return s;
  auto generated = read_file(ctx.root, kGeneratedCfg);
  (void)remove_own_file(ctx.root, kGeneratedCfg);
  (void)remove_own_file(ctx.root, std::string(kGeneratedCfg) + ".new");
  if (!generated) return Error{generated.error()};
  auto entry = first_grub_entry(*generated);
  if (!entry) return Error{g.mkconfig + "'s configuration: " + entry.error()};

  std::vector<std::string> body;
  body.push_back("menuentry 'gptagent trial boot (stage " + safe_stage_name(stage) + ")' --id " + kTrialEntry + " {");
  bool saw_linux = false;
  std::string release;
  for (size_t i = 1; i + 1 < entry->size(); ++i) {
    std::string line = (*entry)[i];
    const std::string t_line(trim(line));
    // Ubuntu's recordfail would hold the menu forever after a trial that did not come up.
    if (t_line == "recordfail") continue;
    auto w = words(t_line);
    if (!w.empty() && (w[0] == "linux" || w[0] == "linuxefi" || w[0] == "linux16") && w.size() >= 2) {
      saw_linux = true;
      const std::string image = base_name(w[1]);
      if (image.rfind("vmlinuz-", 0) == 0) release = image.substr(8);
      line += " panic=10 gptagent.trial=" + t.id;
    } else if (!w.empty() && (w[0] == "initrd" || w[0] == "initrdefi" || w[0] == "initrd16") && new_initramfs) {
      auto rewritten = trial_initrd_line(ctx, t, line, release);
      if (!rewritten) return Error{"the first entry: " + rewritten.error()};
      line = *rewritten;
    }
    body.push_back(line);
  }
  body.push_back("}");
  if (!saw_linux) return Error{g.mkconfig + "'s first entry has no linux line"};

  const std::string custom = g.dir + "/custom.cfg";
  auto before = read_file_if_exists(ctx.root, custom);
  if (!before) return Error{before.error()};
  t.custom_cfg_created = !*before;
  std::string text = *before ? without_block(**before) : std::string();
  if (!text.empty() && text.back() != '\n') text += "\n";
  text += std::string(kBlockBegin) + "\n" + join(body, "\n") + "\n" + kBlockEnd + "\n";
  WriteOptions wo;
  wo.create_mode = 0600;
  if (auto w = write_file_atomic(ctx.root, custom, text, wo); !w) return Error{w.error()};
  return {};
}

// BootLoaderSpec: the saved entry copied to kTrialBlsEntry with the options the deferred grubby
// requests would give it.
Status write_bls_trial(Context& ctx, const GrubLayout& g, TrialRecord& t, const std::string& stage,
                       const std::vector<HandlerRequest>& deferred, bool new_initramfs) {
  auto saved = saved_bls_entry(ctx, g);
  if (!saved) return Error{saved.error()};
  const auto& [path, text] = *saved;
  std::string release;
  for (std::string_view line : lines(text)) {
    auto w = words(line);
    if (w.size() >= 2 && w[0] == "linux" && base_name(w[1]).rfind("vmlinuz-", 0) == 0)
      release = base_name(w[1]).substr(8);
  }
  std::vector<std::string> body;
  bool saw_linux = false, saw_options = false;
  for (std::string_view raw : lines(text)) {
    std::string line(raw);
    auto w = words(line);
    if (!w.empty() && w[0] == "title") {
      line = "title gptagent trial boot (stage " + safe_stage_name(stage) + ")";
    } else if (!w.empty() && w[0] == "linux") {
      saw_linux = true;
    } else if (!w.empty() && w[0] == "options") {
      saw_options = true;
      std::vector<std::string> opts(w.begin() + 1, w.end());
      for (const auto& o : opts)
        if (o.find('$') != std::string::npos)
          return Error{path + ": its options use GRUB's variables (" + o +
                       ", as RHEL 8's $kernelopts): the trial cannot tell what they hold"};
      for (const auto& h : deferred)
        if (h.module == "grubby") opts = grubby_options(opts, grubby_args().bind(h.args));
      line = "options " + join(opts, " ") + " panic=10 gptagent.trial=" + t.id;
    } else if (!w.empty() && w[0] == "initrd" && new_initramfs) {
      auto rewritten = trial_initrd_line(ctx, t, line, release);
      if (!rewritten) return Error{path + ": " + rewritten.error()};
      line = *rewritten;
    }
    body.push_back(line);
  }
  if (!saw_linux) return Error{path + " has no linux line"};
  if (!saw_options) return Error{path + " has no options line: the trial's marker would have nowhere to go"};
  WriteOptions wo;
  wo.create_mode = 0600;
  wo.backup = false;
  wo.no_follow = true;  // the agent's own file: a link there is not followed
  if (auto w = write_file_atomic(ctx.root, kTrialBlsEntry, join(body, "\n") + "\n", wo); !w) return Error{w.error()};
  t.entry = kTrialBlsEntry;
  return {};
}

// ---- systemd-boot ----

// The running kernel's entry: the one `kernel-install add` writes again at the commit.
struct KernelEntry {
  std::string dir, path, text;
};

Expected<KernelEntry> running_kernel_entry(const Context& ctx) {
  const std::string& release = ctx.facts.kernel_release;
  if (release.empty()) return Error{"the running kernel's release is not known"};
  std::vector<KernelEntry> found;
  for (const auto& dir : kLoaderEntryDirs) {
    auto names = list_dir(ctx.root, dir);
    if (!names) continue;
    for (const auto& n : *names) {
      if (trial_entry_name(n) || !entry_of_kernel(n, release)) continue;
      auto text = read_file(ctx.root, dir + "/" + n, 1u << 16);
      if (!text) return Error{text.error()};
      found.push_back({dir, dir + "/" + n, *text});
    }
  }
  if (found.empty())
    return Error{"no boot entry of the running kernel " + release + " in " +
                 join(std::vector<std::string>(kLoaderEntryDirs.begin(), kLoaderEntryDirs.end()), ", ") +
                 " (kernel-install names them ENTRY-TOKEN-" + release +
                 ".conf): the trial copies the entry the commit writes again"};
  if (found.size() > 1) {
    std::vector<std::string> paths;
    for (const auto& e : found) paths.push_back(e.path);
    return Error{"several boot entries of the running kernel " + release + " (" + join(paths, ", ") +
                 "): cannot tell which one the trial should copy"};
  }
  return found.front();
}

Status sdboot_trial_possible(Context& ctx) {
  auto info = loader_variable(ctx.root, "LoaderInfo");
  if (!info) return Error{info.error()};
  if (!*info || (*info)->rfind("systemd-boot", 0) != 0)
    return Error{"this boot did not come through systemd-boot (its LoaderInfo EFI variable " +
                 (*info ? "says '" + **info + "'" : std::string("is not set")) +
                 "): on kernel-install hosts the trial's one-shot is systemd-boot's (bootctl set-oneshot)"};
  // LoaderFeatures, a 64-bit mask after the attributes: bit 3 is the one-shot entry.
  auto features =
      read_file_if_exists(ctx.root, std::string("/sys/firmware/efi/efivars/LoaderFeatures-") + kLoaderVendorGuid, 64);
  if (!features) return Error{features.error()};
  if (*features && (*features)->size() >= 5 && !((*features)->at(4) & 0x08))
    return Error{"this systemd-boot does not take a one-shot entry (LoaderFeatures lacks it)"};
  for (const char* tool : {"bootctl", "kernel-install"})
    if (!find_program(ctx.root, tool)) return Error{std::string(tool) + " not found on this host"};
  // The default entry, where a pattern names it (LoaderEntryDefault, else loader.conf's default),
  // must not be the trial's: a reset would boot the trial again.
  auto var = loader_variable(ctx.root, "LoaderEntryDefault");
  if (!var) return Error{var.error()};
  std::string pattern = *var ? **var : "", from = "the LoaderEntryDefault EFI variable";
  for (const char* root : {"/efi", "/boot", "/boot/efi"}) {
    if (!pattern.empty()) break;
    const std::string conf = std::string(root) + "/loader/loader.conf";
    auto text = read_file_if_exists(ctx.root, conf, 1u << 16);
    if (!text) return Error{text.error()};
    if (*text)
      for (std::string_view line : lines(**text))
        if (auto w = words(line); w.size() >= 2 && w[0] == "default") {
          pattern = w[1];
          from = conf;
        }
  }
  std::string lower = pattern;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!lower.empty() && lower[0] != '@' && ::fnmatch(lower.c_str(), kTrialCountedEntry, 0) == 0)
    return Error{from + " names the default entry as '" + pattern + "', which takes the trial's " + kTrialCountedEntry +
                 " too: the trial would stay the default"};
  auto e = running_kernel_entry(ctx);
  if (!e) return Error{e.error()};
  bool linux = false;
  for (std::string_view line : lines(e->text)) {
    auto w = words(line);
    if (!w.empty() && (w[0] == "efi" || w[0] == "uki"))
      return Error{e->path + " boots " + w[0] + " " + (w.size() > 1 ? w[1] : "") +
                   ", not a kernel with a command line of its own: the trial cannot carry its options"};
    linux = linux || (!w.empty() && w[0] == "linux");
  }
  if (!linux) return Error{e->path + " has no linux line: it boots no kernel the trial could copy"};
  return {};
}

// The options `kernel-install add` writes for the running kernel (90-loaderentry.install):
// /etc/kernel/cmdline, else /usr/lib/kernel/cmdline, else /proc/cmdline without the loader's own;
// with systemd.machine_id= kept where the entry has it and the file does not (kernel-install adds
// it when entries are named after the machine ID).
Expected<std::vector<std::string>> kernel_install_options(const Context& ctx, const std::vector<std::string>& now) {
  std::vector<std::string> opts;
  bool from_file = false;
  for (const char* f : {"/etc/kernel/cmdline", "/usr/lib/kernel/cmdline"}) {
    auto text = read_file_if_exists(ctx.root, f);
    if (!text) return Error{text.error()};
    if (*text) {
      opts = parse_cmdline(**text);
      from_file = true;
      break;
    }
  }
  if (!from_file)
    for (const auto& p : ctx.facts.cmdline)
      if (p.rfind("BOOT_IMAGE=", 0) != 0 && p.rfind("initrd=", 0) != 0) opts.push_back(p);
  const auto machine_id = [](const std::string& p) { return p.rfind("systemd.machine_id=", 0) == 0; };
  if (std::none_of(opts.begin(), opts.end(), machine_id))
    for (const auto& p : now)
      if (machine_id(p)) opts.push_back(p);
  return opts;
}

// The running kernel's entry copied beside it as kTrialCountedEntry.
Status write_sdboot_trial(Context& ctx, TrialRecord& t, const std::string& stage,
                          const std::vector<HandlerRequest>& deferred, bool new_initramfs) {
  auto e = running_kernel_entry(ctx);
  if (!e) return Error{e.error()};
  const std::string boot_root = e->dir.substr(0, e->dir.size() - std::string_view("/loader/entries").size());
  std::vector<std::string> opts = entry_options(e->text);
  if (std::any_of(deferred.begin(), deferred.end(),
                  [](const HandlerRequest& h) { return h.module == "kernel_install"; })) {
    auto o = kernel_install_options(ctx, opts);
    if (!o) return Error{o.error()};
    opts = std::move(*o);
  }
  const std::string options =
      "options " + join(opts, " ") + (opts.empty() ? "" : " ") + "panic=10 gptagent.trial=" + t.id;
  std::vector<std::string> body;
  bool saw_linux = false, wrote_options = false;
  for (std::string_view raw : lines(e->text)) {
    std::string line(raw);
    auto w = words(line);
    if (!w.empty() && w[0] == "title") {
      line = "title gptagent trial boot (stage " + safe_stage_name(stage) + ")";
    } else if (!w.empty() && w[0] == "sort-key") {
      continue;  // without one it sorts after every entry that has one: never the default by its place
    } else if (!w.empty() && w[0] == "linux") {
      saw_linux = true;
    } else if (!w.empty() && w[0] == "options") {
      if (wrote_options) continue;  // systemd-boot joins every options line: the one line has them all
      line = options;
      wrote_options = true;
    } else if (!w.empty() && w[0] == "initrd" && new_initramfs && t.initrd.empty()) {
      auto rewritten = trial_initrd_line(ctx, t, line, ctx.facts.kernel_release, boot_root);
      // A microcode image goes first: the kernel's own initramfs is a later line.
      if (!rewritten && w.size() >= 2 && base_name(w[1]).find("ucode") != std::string::npos) {
        body.push_back(line);
        continue;
      }
      if (!rewritten) return Error{e->path + ": " + rewritten.error()};
      line = *rewritten;
    }
    body.push_back(line);
  }
  if (!saw_linux) return Error{e->path + " has no linux line"};
  if (!wrote_options) body.push_back(options);
  if (new_initramfs && t.initrd.empty()) return Error{e->path + " has no initrd line: cannot boot a trial initramfs"};
  t.loader = kSystemdBoot;
  t.grub_dir.clear();
  t.entry = e->dir + "/" + kTrialCountedEntry;
  WriteOptions wo;
  wo.backup = false;
  wo.no_follow = true;
  if (auto w = write_file_atomic(ctx.root, t.entry, join(body, "\n") + "\n", wo); !w) return Error{w.error()};
  return {};
}

// The unit that gates systemd-bless-boot on the stage's checks (kTrialCheckUnit).
Status install_trial_check(Context& ctx, TrialRecord& t) {
  auto agent = installed_agent(ctx.root, "", "the trial's check before systemd-boot marks it good");
  if (!agent) {
    t.note = "; no check gates systemd-bless-boot (" + agent.error() +
             "): where it runs, the trial entry is marked good once the boot completes, before the agent's checks";
    return {};
  }
  const std::string unit =
      "# Written by gptagent: in a trial boot only, the stage's checks before boot-complete.target, so\n"
      "# that systemd-bless-boot marks the trial entry good only when they pass. Removed with the trial.\n"
      "[Unit]\n"
      "Description=gptagent: check the trial boot before it is marked good\n"
      "ConditionKernelCommandLine=gptagent.trial=" +
      t.id +
      "\n"
      "Before=boot-complete.target\n\n"
      "[Service]\n"
      "Type=oneshot\n"
      "ExecStart=" +
      *agent +
      " resume --check\n"
      "SuccessExitStatus=2\n\n"
      "[Install]\n"
      "RequiredBy=boot-complete.target\n";
  WriteOptions wo;
  wo.backup = false;
  wo.no_follow = true;
  if (auto w = write_file_atomic(ctx.root, kTrialCheckUnit, unit, wo); !w) return Error{w.error()};
  if (auto s = run(ctx, Command{{"systemctl", "enable", "gptagent-trial-check.service"}},
                   "enabled the trial's check before boot-complete.target");
      !s)
    return s;
  t.note = "; " + std::string(kTrialCheckUnit) +
           " runs the stage's checks before boot-complete.target, so that systemd-boot marks the trial entry good "
           "only when they pass";
  return {};
}

}  // namespace

Status trial_possible(Context& ctx) {
  auto path = detect_boot_path(ctx);
  if (!path) return Error{path.error() + kChoices};
  if (*path == "kernel-install") {
    auto s = sdboot_trial_possible(ctx);
    if (!s) return Error{s.error() + kChoices};
    return s;
  }
  if (*path != "grub" && *path != "grubby")
    return Error{"this host boots through " + *path +
                 ", and trial boots are built for GRUB's own configuration (Debian, Ubuntu, Arch), for "
                 "BootLoaderSpec entries with GRUB (grubby: Fedora, RHEL) and for systemd-boot with kernel-install" +
                 kChoices};
  auto g = grub_layout(ctx);
  if (!g) return Error{g.error() + kChoices};
  auto s = *path == "grubby" ? bls_trial_possible(ctx, *g) : grub_trial_possible(ctx, *g);
  if (!s && s.error().find(kChoices) == std::string::npos) return Error{s.error() + kChoices};
  return s;
}

Expected<TrialRecord> prepare_trial(Context& ctx, const std::string& stage,
                                    const std::vector<HandlerRequest>& deferred) {
  auto path = detect_boot_path(ctx);
  if (!path) return Error{path.error()};
  TrialRecord t;
  t.id = random_id();
  for (const auto& h : deferred) t.deferred.push_back(h);
  const bool new_initramfs =
      std::any_of(deferred.begin(), deferred.end(), [](const HandlerRequest& h) { return h.module == "initramfs"; });
  if (*path == "kernel-install") {
    Status written = write_sdboot_trial(ctx, t, stage, deferred, new_initramfs);
    if (written) written = install_trial_check(ctx, t);
    if (written)
      written =
          run(ctx, Command{{"bootctl", "set-oneshot", kTrialCountedEntry}}, "armed the trial entry for the next boot");
    if (!written) {
      (void)remove_trial(ctx, t);
      return Error{written.error()};
    }
    return t;
  }
  auto g = grub_layout(ctx);
  if (!g) return Error{g.error()};
  t.grub_dir = g->dir;
  Status written = *path == "grubby" ? write_bls_trial(ctx, *g, t, stage, deferred, new_initramfs)
                                     : write_grub_trial(ctx, *g, t, stage, new_initramfs);
  if (!written) {
    (void)remove_trial(ctx, t);
    return Error{written.error()};
  }
  if (auto s = run(ctx, Command{{g->reboot, kTrialEntry}}, "armed the trial entry for the next boot"); !s) {
    (void)remove_trial(ctx, t);
    return Error{s.error()};
  }
  return t;
}

bool booted_trial(const TrialRecord& trial, const Facts& facts) {
  const std::string marker = "gptagent.trial=" + trial.id;
  return std::find(facts.cmdline.begin(), facts.cmdline.end(), marker) != facts.cmdline.end();
}

namespace {

// systemd-boot: the trial's entry under any name its counting gave it, and a one-shot still armed.
void remove_sdboot_trial(Context& ctx, const TrialRecord& trial, std::vector<std::string>& errors) {
  if (!trial.entry.empty()) {
    const std::string dir = trial.entry.substr(0, trial.entry.rfind('/'));
    auto names = list_dir(ctx.root, dir);
    if (!names) errors.push_back(names.error());
    if (names)
      for (const auto& n : *names)
        if (trial_entry_name(n))
          if (auto s = remove_own_file(ctx.root, dir + "/" + n); !s) errors.push_back(s.error());
  }
  auto oneshot = loader_variable(ctx.root, "LoaderEntryOneShot");
  if (!oneshot) errors.push_back(oneshot.error());
  if (oneshot && *oneshot && trial_entry_name(**oneshot))
    if (auto s = run(ctx, Command{{"bootctl", "set-oneshot", ""}}, "disarmed the trial entry"); !s)
      errors.push_back(s.error());
}

}  // namespace

Status remove_trial(Context& ctx, const TrialRecord& trial) {
  std::vector<std::string> errors;
  if (trial.loader == kSystemdBoot) {
    remove_sdboot_trial(ctx, trial, errors);
    for (const char* own : {kTrialCheckLink, kTrialCheckUnit})
      if (path_exists(ctx.root, own))
        if (auto s = remove_own_file(ctx.root, own); !s) errors.push_back(s.error());
    if (!trial.initrd.empty() && path_exists(ctx.root, trial.initrd))
      if (auto s = remove_own_file(ctx.root, trial.initrd); !s) errors.push_back(s.error());
    if (!errors.empty()) return Error{"removing the trial boot: " + join(errors, "; ")};
    return {};
  }
  const std::string custom = trial.grub_dir + "/custom.cfg";
  auto text = read_file_if_exists(ctx.root, custom);
  if (!text)
    errors.push_back(text.error());
  else if (*text) {
    const std::string rest = without_block(**text);
    if (rest != **text) {
      if (rest.empty() && trial.custom_cfg_created) {
        if (auto s = remove_own_file(ctx.root, custom); !s) errors.push_back(s.error());
      } else if (auto w = write_file_atomic(ctx.root, custom, rest); !w) {
        errors.push_back(w.error());
      }
    }
  }
  for (const std::string* own : {&trial.initrd, &trial.entry})
    if (!own->empty() && path_exists(ctx.root, *own))
      if (auto s = remove_own_file(ctx.root, *own); !s) errors.push_back(s.error());
  // A one-shot still armed (the host was not rebooted) must not boot an entry that is gone.
  auto env = read_file_if_exists(ctx.root, trial.grub_dir + "/grubenv");
  if (env && *env && (*env)->find(std::string("next_entry=") + kTrialEntry) != std::string::npos) {
    const std::string editenv = trial.grub_dir == "/boot/grub2" ? "grub2-editenv" : "grub-editenv";
    if (auto s = run(ctx, Command{{editenv, trial.grub_dir + "/grubenv", "unset", "next_entry"}},
                     "disarmed the trial entry");
        !s)
      errors.push_back(s.error());
  }
  if (!errors.empty()) return Error{"removing the trial boot: " + join(errors, "; ")};
  return {};
}

Expected<std::vector<std::string>> restore_stage_files(Context& ctx, const TrialRecord& trial) {
  std::vector<std::string> done, errors;
  for (const auto& [path, backup] : trial.written) {
    if (backup.empty()) {
      if (!path_exists(ctx.root, path)) continue;
      if (auto s = remove_own_file(ctx.root, path); !s)
        errors.push_back(s.error());
      else
        done.push_back(path + " (removed: the stage created it)");
      continue;
    }
    auto old = read_file(ctx.root, backup);
    if (!old) {
      errors.push_back(old.error());
      continue;
    }
    auto now = read_file_if_exists(ctx.root, path);
    if (now && *now && **now == *old) continue;
    WriteOptions wo;
    wo.backup = false;
    if (auto w = write_file_atomic(ctx.root, path, *old, wo); !w)
      errors.push_back(w.error());
    else
      done.push_back(path + " (from " + backup + ")");
  }
  if (!errors.empty()) return Error{"putting the stage's files back: " + join(errors, "; ")};
  return done;
}

Result undo_trial(Context& ctx, const TrialRecord& trial) {
  std::vector<std::string> errors;
  if (auto s = remove_trial(ctx, trial); !s) errors.push_back(s.error());
  auto restored = restore_stage_files(ctx, trial);
  if (!restored) errors.push_back(restored.error());
  if (!errors.empty()) return Result::failed(join(errors, "; "));
  return Result::changed(
      "removed the trial entry" + (trial.initrd.empty() ? std::string() : " and " + trial.initrd) +
      "; the stage's files put back: " + (restored->empty() ? std::string("none had changed") : join(*restored, ", ")));
}

Result install_resume_unit(Context& ctx) {
  auto agent = installed_agent(ctx.root, "", "the boot-time unit");
  if (!agent)
    return Result::ok("not installed: " + agent.error() +
                      "; run gptagent apply again after the reboot to commit the trial");
  const std::string unit =
      "# Written by gptagent: finishes a run that stopped for a reboot (its checks, a trial boot's\n"
      "# commit, the stages after it) on the boot after it. Idle when no run is recorded.\n"
      "[Unit]\n"
      "Description=gptagent: finish the run that stopped for this reboot\n"
      "ConditionPathExists=" +
      std::string(kStatePath) +
      "\n"
      "Wants=network-online.target\n"
      "After=network-online.target\n\n"
      "[Service]\n"
      "Type=oneshot\n"
      "ExecStart=" +
      *agent +
      " resume\n\n"
      "[Install]\n"
      "WantedBy=multi-user.target\n";
  FileChanges files(ctx.root);
  if (auto s = files.write(kResumeUnit, unit, FileAttrs{.uid = 0, .gid = 0, .mode = 0644}); !s)
    return Result::failed(s.error());
  Result r = files.empty() ? Result::ok(std::string(kResumeUnit) + " runs " + *agent + " resume at boot")
                           : Result::changed("wrote " + std::string(kResumeUnit) + ": " + *agent + " resume at boot");
  r.diff = files.diff();
  if (auto s = files.apply(r.data); !s) return Result::failed(s.error());
  if (!path_exists(ctx.root, kResumeWantsLink)) {
    Result en = ctx.run_system(Command{{"systemctl", "enable", "gptagent-resume.service"}}, true, "enabled it");
    r.commands = en.commands;
    if (en.status == Outcome::failed) return Result::failed(en.msg);
    r.status = Outcome::changed;
    r.msg += "; " + en.msg;
  }
  return r;
}

Expected<std::optional<std::string>> retire_resume_unit(const Root& root) {
  auto state = load_state(root);
  if (!state) return Error{state.error()};
  if (*state || !path_exists(root, kResumeUnit)) return std::optional<std::string>();
  for (const char* path : {kResumeWantsLink, kResumeUnit})
    if (auto s = remove_own_file(root, path); !s) return Error{s.error()};
  return std::optional<std::string>("removed " + std::string(kResumeUnit) + ": no run is left to finish");
}

json TrialResult::to_json() const {
  return {{"version", 1}, {"stage", stage}, {"outcome", outcome}, {"at", at}, {"diagnosis", diagnosis}};
}

Status save_trial_result(const Root& root, const TrialResult& r) {
  WriteOptions wo;
  wo.create_mode = 0644;
  wo.backup = false;
  auto w = write_file_atomic(root, kTrialResultPath, r.to_json().dump(2) + "\n", wo);
  if (!w) return Error{w.error()};
  return {};
}

Expected<std::optional<TrialResult>> load_trial_result(const Root& root) {
  auto text = read_file_if_exists(root, kTrialResultPath, 1u << 16);
  if (!text) return Error{text.error()};
  if (!*text) return std::optional<TrialResult>{};
  json j = json::parse(**text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Error{std::string(kTrialResultPath) + " is not JSON"};
  TrialResult r;
  r.stage = j.value("stage", "");
  r.outcome = j.value("outcome", "");
  r.at = j.value("at", "");
  if (j.contains("diagnosis") && j["diagnosis"].is_array())
    for (const auto& d : j["diagnosis"])
      if (d.is_string()) r.diagnosis.push_back(d.get<std::string>());
  return std::optional<TrialResult>{std::move(r)};
}

}  // namespace gpt
