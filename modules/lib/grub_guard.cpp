#include "modules/lib/grub_guard.hpp"

#include <algorithm>

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

}  // namespace

void guard_new_kernels(Context& ctx, const std::vector<std::string>& present, const std::vector<std::string>& absent,
                       bool apply, Result& r) {
  if (ctx.facts.boot.grub != "update-grub" || !path_exists(ctx.root, "/etc/kernel/postinst.d") || present.empty())
    return;
  FileChanges guard(ctx.root);
  if (auto s = guard.write(
          kCmdlineGuard,
          cmdline_guard_script(guarded_params(ctx.root, kCmdlineGuard, present, absent), "/boot/grub/grub.cfg"),
          FileAttrs{.uid = 0, .gid = 0, .mode = 0755});
      !s) {
    r = Result::failed(s.error());
    return;
  }
  auto records = read_guard_records(ctx.root);
  if (!records) {
    r = Result::failed(records.error());
    return;
  }
  // A recorded gap is checked again against grub.cfg as it is now (no hook runs when update-grub
  // regenerates it): one that is gone is recorded so.
  std::vector<std::string> gaps;
  auto cfg = read_file_if_exists(ctx.root, "/boot/grub/grub.cfg");
  for (const auto& g : *records) {
    if (g.kind != "cmdline" || g.missing.empty()) continue;
    std::vector<std::string> entry;
    if (cfg && *cfg)
      for (std::string_view line : lines(**cfg)) {
        auto w = words(trim(line));
        if (w.size() >= 2 && w[0] == "linux" && w[1].size() > g.kernel.size() + 8 &&
            w[1].substr(w[1].size() - g.kernel.size() - 8) == "vmlinuz-" + g.kernel) {
          entry = w;
          break;
        }
      }
    std::vector<std::string> still;
    for (const auto& p : g.missing)
      if (std::find(entry.begin(), entry.end(), p) == entry.end()) still.push_back(p);
    if (!still.empty())
      gaps.push_back("kernel " + g.kernel + "'s entry lacks " + join(still, " "));
    else if (apply)
      (void)write_file_atomic(ctx.root, std::string(kGuardDir) + "/" + g.kernel + ".cmdline",
                              "kernel=" + g.kernel + "\nkind=cmdline\nwhat=" + join(entry, " ") + "\nmissing=\n",
                              WriteOptions{.backup = false, .create_mode = 0600});
  }
  if (!gaps.empty()) {
    r.status = Outcome::changed;
    r.msg += "; the kernel guard recorded: " + join(gaps, "; ") + ": grub.cfg is regenerated";
    if (std::none_of(r.handlers.begin(), r.handlers.end(),
                     [](const HandlerRequest& h) { return h.module == "grub_config"; }))
      r.handlers.push_back(regenerate_grub_config());
    r.data["kernel_guard"] = gaps;
  }
  if (guard.empty()) return;
  r.status = Outcome::changed;
  r.msg += "; wrote " + std::string(kCmdlineGuard) + " (checks the GRUB entry of each kernel installed from now on)";
  r.diff += guard.diff();
  if (apply)
    if (auto s = guard.apply(r.data); !s) r = Result::failed(s.error());
}

void guard_new_entries(Context& ctx, const std::vector<std::string>& present, const std::vector<std::string>& absent,
                       bool grubby, bool apply, Result& r) {
  if (!find_program(ctx.root, "kernel-install") || present.empty()) return;
  FileChanges guard(ctx.root);
  if (auto s =
          guard.write(kInstallCmdlineGuard,
                      install_cmdline_guard_script(guarded_params(ctx.root, kInstallCmdlineGuard, present, absent)),
                      FileAttrs{.uid = 0, .gid = 0, .mode = 0755});
      !s) {
    r = Result::failed(s.error());
    return;
  }
  auto records = read_guard_records(ctx.root);
  if (!records) {
    r = Result::failed(records.error());
    return;
  }
  // A recorded gap is checked again against the kernel's entry as it is now: one that is gone is
  // recorded so.
  std::vector<std::string> gaps;
  for (const auto& g : *records) {
    if (g.kind != "cmdline" || g.missing.empty()) continue;
    const auto options = loader_entry_options(ctx.root, g.kernel).value_or(std::vector<std::string>{});
    std::vector<std::string> still;
    for (const auto& p : g.missing)
      if (std::find(options.begin(), options.end(), p) == options.end()) still.push_back(p);
    if (still.empty()) {
      if (apply)
        (void)write_file_atomic(ctx.root, std::string(kGuardDir) + "/" + g.kernel + ".cmdline",
                                "kernel=" + g.kernel + "\nkind=cmdline\nwhat=" + join(options, " ") + "\nmissing=\n",
                                WriteOptions{.backup = false, .create_mode = 0600});
      continue;
    }
    gaps.push_back("kernel " + g.kernel + "'s entry lacks " + join(still, " "));
    if (grubby) continue;  // the module's grubby --update-kernel=ALL takes every entry
    const std::string image = "/usr/lib/modules/" + g.kernel + "/vmlinuz";
    if (!path_exists(ctx.root, image)) {
      gaps.back() += " (no " + image + ": run kernel-install add " + g.kernel + " IMAGE by hand)";
      continue;
    }
    Result ran = ctx.run_system(Command{{"kernel-install", "add", g.kernel, image}}, apply,
                                "wrote kernel " + g.kernel + "'s entry again");
    r.commands.insert(r.commands.end(), ran.commands.begin(), ran.commands.end());
    if (ran.status == Outcome::failed) {
      r = Result::failed(ran.msg);
      return;
    }
  }
  if (!gaps.empty()) {
    r.status = Outcome::changed;
    r.msg += "; the kernel guard recorded: " + join(gaps, "; ") + ": the entries are written again";
    r.data["kernel_guard"] = gaps;
  }
  if (guard.empty()) return;
  r.status = Outcome::changed;
  r.msg +=
      "; wrote " + std::string(kInstallCmdlineGuard) + " (checks the boot entry of each kernel installed from now on)";
  r.diff += guard.diff();
  if (apply)
    if (auto s = guard.apply(r.data); !s) r = Result::failed(s.error());
}

}  // namespace gpt
