#include "modules/lib/grub_guard.hpp"

#include <algorithm>
#include <functional>

#include "agent/changes.hpp"
#include "agent/facts.hpp"
#include "agent/kernel_guard.hpp"
#include "agent/text.hpp"
#include "modules/lib/grub_default.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

// What `hook` checks now: the words of its `for p in ...; do` line (as quoted_words wrote them).
std::vector<std::string> hook_params(const Root& root, const char* hook) {
  auto text = read_file_if_exists(root, hook);
  if (!text || !*text) return {};
  for (std::string_view line : lines(**text)) {
    if (line.rfind("for p in ", 0) != 0 || line.size() < 13 || line.substr(line.size() - 4) != "; do") continue;
    std::vector<std::string> out;
    for (auto w : words(line.substr(9, line.size() - 13))) {
      if (w.size() >= 2 && w.front() == '\'' && w.back() == '\'') w = w.substr(1, w.size() - 2);
      if (valid_kernel_param(w)) out.push_back(w);
    }
    return out;
  }
  return {};
}

// The hook's parameters after this task: its own, but the absent ones, then the present ones.
std::vector<std::string> guarded_params(const Root& root, const char* hook, const std::vector<std::string>& present,
                                        const std::vector<std::string>& absent) {
  std::vector<std::string> out;
  const auto add = [&](const std::string& p) {
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  };
  for (const auto& p : hook_params(root, hook)) {
    // `name` in absent takes every value; `name=value` in present replaces the other values.
    const bool dropped =
        std::any_of(absent.begin(), absent.end(),
                    [&](const std::string& a) {
                      return a == p || (a.find('=') == std::string::npos && param_name(a) == param_name(p));
                    }) ||
        std::any_of(present.begin(), present.end(), [&](const std::string& q) {
          return q.find('=') != std::string::npos && param_name(q) == param_name(p) && q != p;
        });
    if (!dropped) add(p);
  }
  for (const auto& p : present) add(p);
  return out;
}

// What a boot path gives the guard's shared course (guard_cmdline).
struct CmdlineGuard {
  const char* hook;
  std::string script;
  std::string checks;  // what the hook checks, for the message
  // A kernel's entry as it is now: its words (the linux line's, or the options).
  std::function<std::vector<std::string>(const std::string& kernel)> entry;
  // Repairs the gap of a kernel's entry, or says in `gap` why it cannot; false after a failure
  // it put in `r`.
  std::function<bool(const std::string& kernel, std::string& gap, Result& r)> repair;
  std::string repaired;  // how, for the message
};

// The hook written; each recorded gap checked again against the kernel's entry as it is now (no
// hook runs when the entries are regenerated): one that is gone is recorded so, one that stays is
// drift, repaired.
void guard_cmdline(Context& ctx, const CmdlineGuard& g, bool apply, Result& r) {
  FileChanges guard(ctx.root);
  if (auto s = guard.write(g.hook, g.script, FileAttrs{.uid = 0, .gid = 0, .mode = 0755}); !s) {
    r = Result::failed(s.error());
    return;
  }
  auto records = read_guard_records(ctx.root);
  if (!records) {
    r = Result::failed(records.error());
    return;
  }
  std::vector<std::string> gaps;
  for (const auto& rec : *records) {
    if (rec.kind != "cmdline" || rec.missing.empty()) continue;
    const std::vector<std::string> entry = g.entry(rec.kernel);
    std::vector<std::string> still;
    for (const auto& p : rec.missing)
      if (std::find(entry.begin(), entry.end(), p) == entry.end()) still.push_back(p);
    if (still.empty()) {
      if (apply)
        (void)write_file_atomic(ctx.root, std::string(kGuardDir) + "/" + rec.kernel + ".cmdline",
                                "kernel=" + rec.kernel + "\nkind=cmdline\nwhat=" + join(entry, " ") + "\nmissing=\n",
                                WriteOptions{.backup = false, .create_mode = 0600});
      continue;
    }
    gaps.push_back("kernel " + rec.kernel + "'s entry lacks " + join(still, " "));
    if (!g.repair(rec.kernel, gaps.back(), r)) return;
  }
  if (!gaps.empty()) {
    r.status = Outcome::changed;
    r.msg += "; the kernel guard recorded: " + join(gaps, "; ") + ": " + g.repaired;
    r.data["kernel_guard"] = gaps;
  }
  if (guard.empty()) return;
  r.status = Outcome::changed;
  r.msg += "; wrote " + std::string(g.hook) + " (checks " + g.checks + " of each kernel installed from now on)";
  r.diff += guard.diff();
  if (apply)
    if (auto s = guard.apply(r.data); !s) r = Result::failed(s.error());
}

}  // namespace

void guard_new_kernels(Context& ctx, const std::vector<std::string>& present, const std::vector<std::string>& absent,
                       bool apply, Result& r) {
  if (ctx.facts.boot.grub != "update-grub" || !path_exists(ctx.root, "/etc/kernel/postinst.d") || present.empty())
    return;
  auto cfg = read_file_if_exists(ctx.root, "/boot/grub/grub.cfg");
  const std::string text = cfg && *cfg ? **cfg : std::string();
  guard_cmdline(
      ctx,
      {.hook = kCmdlineGuard,
       .script = cmdline_guard_script(guarded_params(ctx.root, kCmdlineGuard, present, absent), "/boot/grub/grub.cfg"),
       .checks = "the GRUB entry",
       .entry =
           [&](const std::string& kernel) {
             for (std::string_view line : lines(text)) {
               auto w = words(trim(line));
               if (w.size() >= 2 && w[0] == "linux" && w[1].size() > kernel.size() + 8 &&
                   w[1].substr(w[1].size() - kernel.size() - 8) == "vmlinuz-" + kernel)
                 return w;
             }
             return std::vector<std::string>{};
           },
       .repair =
           [](const std::string&, std::string&, Result& res) {
             if (std::none_of(res.handlers.begin(), res.handlers.end(),
                              [](const HandlerRequest& h) { return h.module == "grub_config"; }))
               res.handlers.push_back(regenerate_grub_config());
             return true;
           },
       .repaired = "grub.cfg is regenerated"},
      apply, r);
}

void guard_new_entries(Context& ctx, const std::vector<std::string>& present, const std::vector<std::string>& absent,
                       bool grubby, bool apply, Result& r) {
  if (!find_program(ctx.root, "kernel-install") || present.empty()) return;
  guard_cmdline(
      ctx,
      {.hook = kInstallCmdlineGuard,
       .script = install_cmdline_guard_script(guarded_params(ctx.root, kInstallCmdlineGuard, present, absent)),
       .checks = "the boot entry",
       .entry =
           [&](const std::string& kernel) {
             return loader_entry_options(ctx.root, kernel).value_or(std::vector<std::string>{});
           },
       .repair =
           [&](const std::string& kernel, std::string& gap, Result& res) {
             // grubby --update-kernel=ALL takes every entry: the module's own request where it made
             // one (kernel_cmdline finds such an entry itself), else one for what the guard checks.
             if (grubby) {
               if (std::none_of(res.handlers.begin(), res.handlers.end(),
                                [](const HandlerRequest& h) { return h.module == "grubby"; }))
                 res.handlers.push_back(
                     update_boot_entries(present, absent, "kernel " + kernel + "'s entry lacks them"));
               return true;
             }
             const std::string image = "/usr/lib/modules/" + kernel + "/vmlinuz";
             if (!path_exists(ctx.root, image)) {
               gap += " (no " + image + ": run kernel-install add " + kernel + " IMAGE by hand)";
               return true;
             }
             Result ran = ctx.run_system(Command{{"kernel-install", "add", kernel, image}}, apply,
                                         "wrote kernel " + kernel + "'s entry again");
             res.commands.insert(res.commands.end(), ran.commands.begin(), ran.commands.end());
             if (ran.status != Outcome::failed) return true;
             res = Result::failed(ran.msg);
             return false;
           },
       .repaired = "the entries are written again"},
      apply, r);
}

}  // namespace gpt
