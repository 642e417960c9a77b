// kernel_cmdline: kernel parameters wherever this host's boot path keeps them — GRUB's
// /etc/default/grub and its /etc/default/grub.d/*.cfg drop-ins, BootLoaderSpec entries through
// grubby, /etc/kernel/cmdline for kernel-install and proxmox-boot-tool, Pop!_OS's kernelstub.
// grub_cmdline stays the primitive for one GRUB file; this module finds the right place.
#include <algorithm>
#include <array>
#include <cctype>
#include <functional>
#include <map>
#include <set>

#include "agent/changes.hpp"
#include "agent/gpu.hpp"
#include "agent/kernel_guard.hpp"
#include "agent/module.hpp"
#include "agent/shell_syntax.hpp"
#include "agent/text.hpp"
#include "modules/lib/grub_default.hpp"
#include "modules/lib/grub_guard.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

struct Args : CmdlineArgs {
  std::string boot_path = "auto";
  bool regenerate = true;
  std::string framebuffer = "keep";
  json gpus;  // null: auto
};

ArgSpec framebuffer_gpus() {
  ArgSpec s = gpus_arg();
  s.doc = "the GPUs framebuffer: release looks at: auto (when not given) or a list of PCI addresses";
  return s;
}

// ---- the wanted parameters ----

using Want = WantedCmdline;

// ---- editing a list of parameters the way edit_grub_cmdline edits a value ----

bool has_value(std::string_view p) { return p.find('=') != std::string_view::npos; }
std::string value_of(std::string_view p) {
  auto eq = p.find('=');
  return eq == std::string_view::npos ? "" : std::string(p.substr(eq + 1));
}
bool same_param(std::string_view a, std::string_view b) {
  return param_name(a) == param_name(b) && has_value(a) == has_value(b) && value_of(a) == value_of(b);
}
bool opaque(std::string_view p) { return p.find('$') != std::string_view::npos; }
std::optional<std::string> opaque_name(std::string_view p) {
  auto eq = p.find('=');
  if (eq == std::string_view::npos || p.substr(0, eq).find('$') != std::string_view::npos) return std::nullopt;
  return param_name(p);
}

struct Item {
  std::string text;
  int origin = -1;  // where it is written (path-specific); -1: an addition
  bool removed = false;
  std::optional<std::string> replacement;
  std::string current() const { return replacement ? *replacement : text; }
};

struct ListEdit {
  std::vector<Item> items;
  CmdlineEditResult res;  // added, removed, replaced (res.text unused)
  std::vector<std::string> result() const {
    std::vector<std::string> out;
    for (const auto& i : items)
      if (!i.removed) out.push_back(i.current());
    return out;
  }
};

// Absent entries go (by name, or only that value); a present name=value takes the place of the
// first other value of the name when in_place(origin) allows (else that one goes and the wanted
// one is added), and later other values go: the kernel reads left to right, the last one wins.
// Names compare the kernel's way ('-' is '_'); a parameter whose value is a shell variable and
// whose name is wanted is an error.
Expected<ListEdit> edit_list(std::vector<Item> items, const Want& w, const std::function<bool(int)>& in_place) {
  ListEdit out;
  auto& res = out.res;
  auto conflict = [&](const std::string& entry) -> std::optional<std::string> {
    for (const auto& m : items)
      if (!m.removed && opaque(m.text) && opaque_name(m.text) == param_name(entry))
        return m.text + " takes its value from a shell variable: cannot tell whether it is " + entry +
               "; edit it by hand";
    return std::nullopt;
  };
  for (const auto& entry : w.absent) {
    if (auto msg = conflict(entry)) return Error{*msg};
    for (auto& m : items) {
      if (m.removed || opaque(m.text)) continue;
      bool match = has_value(entry) ? same_param(m.current(), entry) : param_name(m.current()) == param_name(entry);
      if (!match) continue;
      m.removed = true;
      res.removed.push_back(m.current());
    }
  }
  for (const auto& entry : w.present) {
    if (auto msg = conflict(entry)) return Error{*msg};
    auto add = [&] {
      items.push_back({entry, -1, false, std::nullopt});
      res.added.push_back(entry);
    };
    std::vector<size_t> same_name;
    for (size_t k = 0; k < items.size(); ++k)
      if (!items[k].removed && !opaque(items[k].text) && param_name(items[k].current()) == param_name(entry))
        same_name.push_back(k);
    if (!has_value(entry)) {
      if (std::none_of(same_name.begin(), same_name.end(),
                       [&](size_t k) { return same_param(items[k].current(), entry); }))
        add();
      continue;
    }
    if (same_name.empty()) {
      add();
      continue;
    }
    for (size_t n = 1; n < same_name.size(); ++n) {
      Item& m = items[same_name[n]];
      if (same_param(m.current(), entry)) continue;
      m.removed = true;
      res.removed.push_back(m.current());
    }
    Item& first = items[same_name.front()];
    if (same_param(first.current(), entry)) continue;
    if (first.origin < 0) {
      std::replace(res.added.begin(), res.added.end(), first.text, entry);
      first.text = entry;
    } else if (in_place(first.origin)) {
      res.replaced.push_back(first.current() + " with " + entry);
      res.replaced_old.push_back(first.current());
      res.replaced_new.push_back(entry);
      first.replacement = entry;
    } else {
      first.removed = true;
      res.removed.push_back(first.current());
      add();
    }
  }
  // An addition that was removed again in the same edit is no addition at all.
  for (const auto& m : items)
    if (m.origin < 0 && m.removed)
      if (auto it = std::find(res.added.begin(), res.added.end(), m.text); it != res.added.end()) res.added.erase(it);
  items.erase(std::remove_if(items.begin(), items.end(), [](const Item& m) { return m.origin < 0 && m.removed; }),
              items.end());
  out.items = std::move(items);
  return out;
}

std::vector<Item> items_of(const std::vector<std::string>& params, int origin = 0) {
  std::vector<Item> out;
  for (const auto& p : params) out.push_back({p, origin, false, std::nullopt});
  return out;
}

void add_unique(std::vector<std::string>& to, const std::vector<std::string>& from) {
  for (const auto& s : from)
    if (std::find(to.begin(), to.end(), s) == to.end()) to.push_back(s);
}

// What a tool that adds and removes parameters is told: removals (also the old values of
// replacements), then additions (also the new values).
std::vector<std::string> to_remove(const CmdlineEditResult& r) {
  std::vector<std::string> out;
  add_unique(out, r.removed);
  add_unique(out, r.replaced_old);
  return out;
}
std::vector<std::string> to_add(const CmdlineEditResult& r) {
  std::vector<std::string> out;
  add_unique(out, r.added);
  add_unique(out, r.replaced_new);
  return out;
}

// ---- GRUB: /etc/default/grub and /etc/default/grub.d/*.cfg ----

const char* const kGrubDefault = "/etc/default/grub";
const char* const kGrubDropins = "/etc/default/grub.d";
const std::array<std::string, 2> kKeys = {"GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"};

struct GrubFile {
  std::string path, text;
};

// A file that is a shell program rather than assignments (functions, sourcing other files,
// control flow) cannot be edited as values: its parameters are whatever it computes.
std::optional<std::string> shell_program(const GrubFile& f) {
  const std::string& t = f.text;
  bool dq = false, sq = false;
  int line = 1;
  size_t i = 0;
  while (i < t.size()) {
    // At the start of a line, outside quotes: what kind of statement is it?
    if (!dq && !sq) {
      size_t p = i;
      while (p < t.size() && (t[p] == ' ' || t[p] == '\t')) ++p;
      size_t w = p;
      while (w < t.size() && (std::isalnum(static_cast<unsigned char>(t[w])) || t[w] == '_' || t[w] == '.')) ++w;
      const std::string word = t.substr(p, w - p);
      size_t after = w;
      while (after < t.size() && (t[after] == ' ' || t[after] == '\t')) ++after;
      const char next = after < t.size() ? t[after] : '\n';
      std::string what;
      if ((word == "." || word == "source") && (next != '=' && w > p))
        what = "sources another file (" + word + ")";
      else if (word == "function")
        what = "defines a shell function";
      else if (!word.empty() && next == '(' && t.compare(after, 2, "()") == 0)
        what = "defines a shell function (" + word + "())";
      else if (word == "if" || word == "for" || word == "while" || word == "until" || word == "case" ||
               word == "eval" || word == "exec")
        what = "is a shell program ('" + word + "')";
      if (!what.empty())
        return f.path + ":" + std::to_string(line) + ": " + what +
               ": gptagent edits assignments, not shell programs; left untouched, edit the kernel parameters by hand";
    }
    // To the end of the line, following quotes (a value may span lines) and comments.
    for (; i < t.size(); ++i) {
      const char c = t[i];
      if (c == '\n') {
        ++line;
        ++i;
        break;
      }
      if (sq) {
        if (c == '\'') sq = false;
      } else if (dq) {
        if (c == '\\')
          ++i, line += (i < t.size() && t[i] == '\n');
        else if (c == '"')
          dq = false;
      } else if (c == '\\') {
        ++i;
        if (i < t.size() && t[i] == '\n') ++line;
      } else if (c == '\'') {
        sq = true;
      } else if (c == '"') {
        dq = true;
      } else if (c == '#' && (i == 0 || t[i - 1] == ' ' || t[i - 1] == '\t' || t[i - 1] == '\n' || t[i - 1] == ';')) {
        i = t.find('\n', i);
        if (i == std::string::npos) i = t.size();
        --i;
      }
    }
  }
  return std::nullopt;
}

// The main file, then the drop-ins in the order grub-mkconfig sources them.
Expected<std::vector<GrubFile>> read_grub_files(const Root& root) {
  std::vector<GrubFile> files;
  auto main = read_file(root, kGrubDefault);
  if (!main) return Error{main.error()};
  files.push_back({kGrubDefault, std::move(*main)});
  auto names = list_dir(root, kGrubDropins);
  if (!names) return Error{names.error()};
  for (const auto& n : *names) {
    if (n.size() < 4 || n.substr(n.size() - 4) != ".cfg") continue;
    const std::string path = std::string(kGrubDropins) + "/" + n;
    auto text = read_file(root, path);
    if (!text) return Error{text.error()};
    files.push_back({path, std::move(*text)});
  }
  // grub-mkconfig sources every one of them: one that sh refuses fails it, whichever is edited.
  for (const auto& f : files)
    if (auto valid = check_shell_file(f.path, f.text); !valid) return Error{valid.error()};
  for (const auto& f : files)
    if (auto msg = shell_program(f)) return Error{*msg};
  return files;
}

int origin_of(size_t file, size_t key) { return static_cast<int>(file * 2 + key); }

struct GrubModel {
  std::vector<Item> items;       // GRUB_CMDLINE_LINUX then GRUB_CMDLINE_LINUX_DEFAULT, as sourced
  std::array<size_t, 2> last{};  // per key: the file with its last assignment (0 when none)
};

// The command line GRUB gives a normal boot entry: each key's value after every file is sourced
// (the last assignment wins; one that starts with $KEY extends the value before it).
Expected<GrubModel> grub_model(const std::vector<GrubFile>& files) {
  GrubModel m;
  for (size_t k = 0; k < kKeys.size(); ++k) {
    std::vector<Item> value;
    for (size_t f = 0; f < files.size(); ++f) {
      auto kv = grub_key_value(files[f].text, kKeys[k]);
      if (!kv) return Error{files[f].path + ": " + kv.error()};
      if (!kv->assigned) continue;
      m.last[k] = f;
      if (!kv->inherits) value.clear();
      for (const auto& p : kv->params) value.push_back({p, origin_of(f, k), false, std::nullopt});
    }
    m.items.insert(m.items.end(), value.begin(), value.end());
  }
  return m;
}

struct PathResult {
  Result r;
  CmdlineEditResult edit;            // for the message
  std::vector<std::string> current;  // the command line after the change
};

std::string grub_label(const std::vector<GrubFile>& files) {
  const size_t n = files.size() - 1;
  return n == 0 ? "" : " (+ " + std::to_string(n) + " drop-in" + (n == 1 ? "" : "s") + " in " + kGrubDropins + ")";
}

Expected<PathResult> converge_grub(Context& ctx, const Args& args, const Want& w, bool apply) {
  auto files = read_grub_files(ctx.root);
  if (!files) return Error{files.error()};
  // Refuse a value that runs a command, in any file, before anything is planned.
  for (const auto& f : *files)
    for (const auto& key : kKeys)
      if (auto e = edit_grub_cmdline(f.text, {key, {}, {}}); !e) return Error{f.path + ": " + e.error()};
  auto model = grub_model(*files);
  if (!model) return Error{model.error()};
  // A wrong value in GRUB_CMDLINE_LINUX is replaced where it is; one in _DEFAULT goes and the
  // wanted value is added to GRUB_CMDLINE_LINUX, which recovery entries get too.
  auto edit = edit_list(model->items, w, [](int origin) { return origin % 2 == 0; });
  if (!edit) return Error{edit.error()};

  std::map<int, CmdlineEdit> groups;
  auto group = [&](int origin) -> CmdlineEdit& {
    auto [it, fresh] = groups.try_emplace(origin);
    if (fresh) it->second.key = kKeys[static_cast<size_t>(origin % 2)];
    return it->second;
  };
  for (const auto& m : edit->items) {
    if (m.origin < 0)
      group(origin_of(model->last[0], 0)).present.push_back(m.text);
    else if (m.replacement)
      group(m.origin).present.push_back(*m.replacement);
  }
  // Removed items: edit_list keeps them, marked.
  for (const auto& m : edit->items)
    if (m.removed && m.origin >= 0) group(m.origin).absent.push_back(m.text);

  std::vector<GrubFile> after = *files;
  std::vector<std::string> edited;
  for (const auto& [origin, e] : groups) {
    const size_t f = static_cast<size_t>(origin / 2);
    auto res = edit_grub_cmdline(after[f].text, e);
    if (!res) return Error{after[f].path + ": " + res.error()};
    if (res->changed()) edited.push_back(after[f].path + ": " + e.key);
    after[f].text = std::move(res->text);
  }
  // The files as edited must give the wanted command line: nothing left to change.
  auto check_model = grub_model(after);
  if (!check_model) return Error{check_model.error()};
  auto again = edit_list(check_model->items, w, [](int origin) { return origin % 2 == 0; });
  if (!again || again->res.changed())
    return Error{"internal error: the edited GRUB files would still need " +
                 (again ? again->res.summary() : again.error()) + "; nothing written"};

  PathResult out;
  out.edit = edit->res;
  for (const auto& m : check_model->items) out.current.push_back(m.text);
  FileChanges changes(ctx.root);
  for (size_t f = 0; f < files->size(); ++f) changes.write((*files)[f].path, (*files)[f].text, after[f].text);
  out.r.data["files"] = json::array();
  for (const auto& f : *files) out.r.data["files"].push_back(f.path);
  out.r.data["edited"] = edited;
  if (changes.empty()) {
    out.r.msg = "GRUB" + grub_label(*files) + ": the command line is as wanted";
    return out;
  }
  out.r.status = Outcome::changed;
  out.r.msg = "GRUB" + grub_label(*files) + ": " + edit->res.summary() + " (edited " + join(edited, ", ") + ")";
  out.r.diff = changes.diff();
  if (args.regenerate) out.r.handlers = grub_handlers(ctx.facts, (*files)[0].text, edit->res);
  if (apply)
    if (auto st = changes.apply(out.r.data); !st) return Error{st.error()};
  return out;
}

// ---- BootLoaderSpec entries through grubby (Fedora, RHEL) ----

Expected<PathResult> converge_grubby(Context& ctx, const Args& args, const Want& w, bool apply) {
  std::vector<LoaderEntry> entries;
  for (const auto& dir : kLoaderEntryDirs) {
    auto e = loader_entries(ctx.root, dir);
    if (!e) return Error{e.error()};
    if (!e->empty()) {
      entries = std::move(*e);
      break;
    }
  }
  if (entries.empty())
    return Error{"no BootLoaderSpec entries (*.conf) in /boot/loader/entries: nothing for grubby to update"};
  PathResult out;
  CmdlineEditResult all;
  for (const auto& e : entries) {
    auto ed = edit_list(items_of(e.options), w, [](int) { return true; });
    if (!ed) return Error{e.path + ": " + ed.error()};
    add_unique(all.added, ed->res.added);
    add_unique(all.removed, ed->res.removed);
    add_unique(all.replaced, ed->res.replaced);
    add_unique(all.replaced_old, ed->res.replaced_old);
    add_unique(all.replaced_new, ed->res.replaced_new);
    if (out.current.empty()) out.current = ed->result();
  }
  // /etc/default/grub's GRUB_CMDLINE_LINUX is what entries of future kernels get: kept in step.
  FileChanges changes(ctx.root);
  auto grub = read_file_if_exists(ctx.root, kGrubDefault);
  if (!grub) return Error{grub.error()};
  if (*grub) {
    if (auto valid = check_shell_file(kGrubDefault, **grub); !valid) return Error{valid.error()};
    if (auto msg = shell_program({kGrubDefault, **grub})) return Error{*msg};
    auto res = edit_grub_cmdline(**grub, {kKeys[0], w.present, w.absent});
    if (!res) return Error{std::string(kGrubDefault) + ": " + res.error()};
    changes.write(kGrubDefault, **grub, res->text);
  }
  out.edit = all;
  out.r.data["entries"] = json::array();
  for (const auto& e : entries) out.r.data["entries"].push_back(e.path);
  const std::string label =
      "grubby (" + std::to_string(entries.size()) + " boot entr" + (entries.size() == 1 ? "y" : "ies") + ")";
  const auto add = to_add(all), remove = to_remove(all);
  if (add.empty() && remove.empty() && changes.empty()) {
    out.r.msg = label + ": the command line is as wanted";
    return out;
  }
  out.r.status = Outcome::changed;
  out.r.msg = label + ": " + (all.changed() ? all.summary() : std::string("the boot entries are as wanted")) +
              (changes.empty() ? "" : "; GRUB_CMDLINE_LINUX of /etc/default/grub kept in step");
  out.r.diff = changes.diff();
  // grubby updates the entries as a handler: in a stage booted as a trial, only after the trial
  // entry (with the same options) booted and passed the stage's checks.
  if (!add.empty() || !remove.empty()) out.r.handlers.push_back(update_boot_entries(add, remove, all.summary()));
  (void)args;
  if (apply)
    if (auto st = changes.apply(out.r.data); !st) return Error{st.error()};
  return out;
}

// ---- /etc/kernel/cmdline: kernel-install (systemd-boot) and proxmox-boot-tool ----

const char* const kKernelCmdline = "/etc/kernel/cmdline";

Expected<PathResult> converge_kernel_cmdline(Context& ctx, const Args& args, const Want& w, bool apply, bool proxmox) {
  auto text = read_file_if_exists(ctx.root, kKernelCmdline);
  if (!text) return Error{text.error()};
  std::vector<std::string> base;
  std::string from;
  if (*text) {
    base = parse_cmdline(**text);
  } else if (proxmox) {
    return Error{std::string(kKernelCmdline) +
                 " does not exist: a Proxmox host without it boots through GRUB (use boot_path: grub)"};
  } else if (auto lib = read_file_if_exists(ctx.root, "/usr/lib/kernel/cmdline"); lib && *lib) {
    base = parse_cmdline(**lib);
    from = " (created from /usr/lib/kernel/cmdline)";
  } else {
    // What kernel-install itself falls back to: the running kernel's, without the loader's own.
    for (const auto& p : ctx.facts.cmdline)
      if (p.rfind("BOOT_IMAGE=", 0) != 0 && p.rfind("initrd=", 0) != 0) base.push_back(p);
    from = " (created from /proc/cmdline)";
  }
  auto ed = edit_list(items_of(base), w, [](int) { return true; });
  if (!ed) return Error{std::string(kKernelCmdline) + ": " + ed.error()};
  PathResult out;
  out.edit = ed->res;
  out.current = ed->result();
  const std::string label =
      proxmox ? "proxmox-boot-tool (/etc/kernel/cmdline)" : "kernel-install (/etc/kernel/cmdline)";
  FileChanges changes(ctx.root);
  const std::string after = join(out.current, " ") + "\n";
  changes.write(kKernelCmdline, *text, after);
  if (changes.empty()) {
    out.r.msg = label + ": the command line is as wanted";
    return out;
  }
  out.r.status = Outcome::changed;
  out.r.msg = label + ": " + (ed->res.changed() ? ed->res.summary() : std::string("written")) + from;
  out.r.diff = changes.diff();
  if (apply)
    if (auto st = changes.apply(out.r.data); !st) return Error{st.error()};
  if (!args.regenerate) return out;
  // The boot entries are made from the file. kernel-install writes the running kernel's entry again
  // (new kernels read the file anyway), as a handler: in a stage booted as a trial, only after the
  // trial entry (with the file's options) booted and passed the stage's checks. proxmox-boot-tool
  // copies it to every ESP.
  if (!proxmox) {
    if (find_program(ctx.root, "kernel-install") && !ctx.facts.kernel_release.empty() &&
        kernel_image(ctx.root, ctx.facts.kernel_release)) {
      out.r.handlers.push_back(write_kernel_entry());
    } else {
      out.r.msg += "; no kernel-install or no image of the running kernel " + ctx.facts.kernel_release +
                   ": kernels installed from now on get it, run `kernel-install add` for the installed ones";
      out.r.data["regenerated"] = false;
    }
    return out;
  }
  Result run = ctx.run_system(Command{{"proxmox-boot-tool", "refresh"}}, apply, "regenerated the boot entries");
  out.r.commands = run.commands;
  if (run.status == Outcome::failed) return Error{std::string(kKernelCmdline) + " written; " + run.msg};
  if (run.status == Outcome::skipped) out.r.msg += "; " + run.msg;
  return out;
}

// ---- Pop!_OS: kernelstub ----

const char* const kKernelstubConfig = "/etc/kernelstub/configuration";

Expected<PathResult> converge_kernelstub(Context& ctx, const Args&, const Want& w, bool apply) {
  auto text = read_file(ctx.root, kKernelstubConfig);
  if (!text) return Error{text.error()};
  json conf = json::parse(*text, nullptr, false);
  if (conf.is_discarded() || !conf.is_object() || !conf.contains("user") || !conf["user"].is_object() ||
      !conf["user"].contains("kernel_options") || !conf["user"]["kernel_options"].is_array())
    return Error{std::string(kKernelstubConfig) + ": not JSON with user.kernel_options, as kernelstub writes it"};
  std::vector<std::string> options;
  for (const auto& o : conf["user"]["kernel_options"])
    if (o.is_string()) options.push_back(o.get<std::string>());
  auto ed = edit_list(items_of(options), w, [](int) { return true; });
  if (!ed) return Error{std::string(kKernelstubConfig) + ": " + ed.error()};
  PathResult out;
  out.edit = ed->res;
  out.current = ed->result();
  if (!ed->res.changed()) {
    out.r.msg = "kernelstub: the command line is as wanted";
    return out;
  }
  out.r.status = Outcome::changed;
  out.r.msg = "kernelstub: " + ed->res.summary();
  std::vector<Command> cmds;
  for (const auto& p : to_remove(ed->res)) cmds.push_back({{"kernelstub", "-d", p}});
  for (const auto& p : to_add(ed->res)) cmds.push_back({{"kernelstub", "-a", p}});
  bool skipped = false;
  for (const auto& c : cmds) {
    Result run = ctx.run_system(c, apply, "updated the boot entry");
    out.r.commands.insert(out.r.commands.end(), run.commands.begin(), run.commands.end());
    if (run.status == Outcome::failed) return Error{run.msg};
    skipped = skipped || run.status == Outcome::skipped;
  }
  if (skipped) out.r.msg += "; not run under --root " + ctx.root.dir() + ": " + join(out.r.commands, "; ");
  return out;
}

// ---- which boot path ----

bool any_entries(const Root& root) {
  for (const auto& dir : kLoaderEntryDirs)
    if (auto names = list_dir(root, dir); names)
      for (const auto& n : *names)
        if (n.size() > 5 && n.substr(n.size() - 5) == ".conf") return true;
  return false;
}

bool bls_enabled(const Root& root) {
  auto text = read_file_if_exists(root, kGrubDefault);
  if (!text || !*text) return false;
  auto v = grub_cmdline_params(**text, "GRUB_ENABLE_BLSCFG");
  return v && !v->empty() && v->back() == "true";
}

Expected<std::string> detect(const Context& ctx) {
  const Root& root = ctx.root;
  if (find_program(root, "kernelstub") && path_exists(root, kKernelstubConfig)) return std::string("kernelstub");
  if (find_program(root, "proxmox-boot-tool") && path_exists(root, "/etc/kernel/proxmox-boot-uuids") &&
      path_exists(root, kKernelCmdline))
    return std::string("proxmox");
  if (ctx.facts.boot.grubby && bls_enabled(root)) return std::string("grubby");
  if (!ctx.facts.boot.grub.empty() && path_exists(root, kGrubDefault)) return std::string("grub");
  if (path_exists(root, kKernelCmdline) || any_entries(root)) return std::string("kernel-install");
  return Error{
      "cannot tell how this host boots: looked for kernelstub with /etc/kernelstub/configuration (Pop!_OS), "
      "proxmox-boot-tool with /etc/kernel/proxmox-boot-uuids and /etc/kernel/cmdline (Proxmox), grubby with "
      "GRUB_ENABLE_BLSCFG=true in /etc/default/grub (Fedora, RHEL), update-grub, grub2-mkconfig or "
      "grub-mkconfig with /etc/default/grub (GRUB), /etc/kernel/cmdline or loader entries (systemd-boot, "
      "kernel-install); set boot_path to say which"};
}

// framebuffer: release — the parameter that keeps the boot framebuffer (efifb, simpledrm...) off
// the GPUs to pass through, when one of them is held by it; added to `w` with a note saying why
// (or why nothing is added).
Status release_framebuffer(const Facts& facts, const json& spec, Want& w) {
  auto gpus = select_gpus(facts, spec, /*force=*/true);  // blockers are preflight's business
  if (!gpus) {
    if (!spec.is_string()) return Error{"framebuffer: release: " + gpus.error()};
    w.note += " (framebuffer: release: no GPU to pass through, nothing to add)";
    return {};
  }
  std::vector<std::string> held, clear, params;
  for (const auto& g : *gpus) {
    if (g.framebuffer.empty()) {
      clear.push_back(g.address);
      continue;
    }
    held.push_back(g.framebuffer + " holds " + g.address);
    if (std::find(params.begin(), params.end(), g.framebuffer_param) == params.end())
      params.push_back(g.framebuffer_param);
  }
  if (held.empty()) {
    w.note += " (framebuffer: release: no boot framebuffer holds memory of " + join(clear, ", ") + ", nothing to add)";
    return {};
  }
  // The kernel reads every video= (one per output or driver): replacing the user's own is not ours to do.
  for (const auto& p : params)
    for (const auto& c : facts.cmdline)
      if (param_name(p) == "video" && param_name(c) == "video" && c != p)
        return Error{"framebuffer: release would replace " + c + " with " + p +
                     " (the kernel reads every video= parameter): add " + p + " to present by hand if both are wanted"};
  w.present.insert(w.present.end(), params.begin(), params.end());
  w.note += " (framebuffer: release: " + join(held, ", ") + ": " + join(params, " ") + ")";
  return {};
}

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  auto w = wanted_cmdline(ctx.facts, args);
  if (!w) return Result::failed(w.error());
  if (args.framebuffer == "release")
    if (auto st = release_framebuffer(ctx.facts, args.gpus.is_null() ? json("auto") : args.gpus, *w); !st)
      return Result::failed(st.error());
  std::string path = args.boot_path;
  const bool detected = path == "auto";
  if (detected) {
    auto d = detect(ctx);
    if (!d) return Result::failed(d.error());
    path = *d;
  }
  Expected<PathResult> res = Error{"unknown boot path " + path};
  if (path == "grub")
    res = converge_grub(ctx, args, *w, apply);
  else if (path == "grubby")
    res = converge_grubby(ctx, args, *w, apply);
  else if (path == "kernel-install")
    res = converge_kernel_cmdline(ctx, args, *w, apply, false);
  else if (path == "proxmox")
    res = converge_kernel_cmdline(ctx, args, *w, apply, true);
  else if (path == "kernelstub")
    res = converge_kernelstub(ctx, args, *w, apply);
  const std::string how = "boot path " + path + (detected ? " (detected)" : "") + ": ";
  if (!res) {
    Result f = Result::failed(how + res.error());
    f.data["boot_path"] = path;
    return f;
  }
  Result r = std::move(res->r);
  r.msg = how + r.msg + w->note;
  r.data["boot_path"] = path;
  r.data["cmdline"] = res->current;
  r.data["added"] = res->edit.added;
  r.data["removed"] = res->edit.removed;
  r.data["replaced"] = res->edit.replaced;
  r.expect = {{"cmdline_present", w->present}, {"cmdline_absent", w->absent}};
  if (r.status == Outcome::changed) r.reboot_required = true;
  if (path == "grub")
    guard_new_kernels(ctx, w->present, w->absent, apply, r);
  else if (path == "grubby" || path == "kernel-install")
    guard_new_entries(ctx, w->present, w->absent, path == "grubby", apply, r);
  return r;
}

// What `gptagent doc kernel_cmdline` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "The command line the host will boot with holds the present parameters and none of the absent ones, "
          "wherever its boot path keeps it (the same present, absent and iommu semantics as grub_cmdline, which "
          "stays the primitive for one GRUB file). Names compare the kernel's way (vfio-pci.ids is vfio_pci.ids; "
          "nvidia.modeset is not nouveau.modeset).\n\n"
          "The boot path is detected in this order (or set with boot_path) and named in the message. kernelstub "
          "(Pop!_OS): kernelstub -d P / kernelstub -a P per parameter. proxmox (proxmox-boot-tool, "
          "/etc/kernel/proxmox-boot-uuids and /etc/kernel/cmdline): edits /etc/kernel/cmdline, then "
          "proxmox-boot-tool refresh. grubby (BootLoaderSpec: grubby and GRUB_ENABLE_BLSCFG=true): grubby "
          "--update-kernel=ALL --args=... --remove-args=... from the entries' options, with GRUB_CMDLINE_LINUX kept "
          "in step for future kernels. grub: the command line is computed as grub-mkconfig does, sourcing "
          "/etc/default/grub then /etc/default/grub.d/*.cfg (the last assignment of a key wins, $KEY extends the "
          "value before it), GRUB_CMDLINE_LINUX then GRUB_CMDLINE_LINUX_DEFAULT; conflicting values are removed "
          "from whichever file and key holds them (a wrong value in GRUB_CMDLINE_LINUX is replaced in place), "
          "missing ones are added to the last assignment of GRUB_CMDLINE_LINUX, and grub_config is notified. "
          "kernel-install (/etc/kernel/cmdline or loader entries, e.g. systemd-boot): edits /etc/kernel/cmdline, "
          "then asks for the handler kernel_install (kernel-install add RELEASE IMAGE for the running kernel).\n\n"
          "It installs the kernel guard: on the grub path grub_cmdline's hook (/etc/kernel/postinst.d/, Debian and "
          "Ubuntu); on the grubby and kernel-install paths kernel-install's plugin "
          "/etc/kernel/install.d/95-gptagent-cmdline.install, which checks each new kernel's BootLoaderSpec entry for "
          "the parameters and records the result for gptagent status and --check; a recorded entry without them is "
          "drift, repaired by grubby's update of every entry or by kernel-install add for that kernel.\n\n"
          "A GRUB file that is a shell program (a function, source or ., if, for, while, case, eval or exec, a "
          "command substitution in a GRUB_CMDLINE_* value) is refused with file:line and nothing is written; so is "
          "one that sh -n would refuse. regenerate: false skips the regeneration.\n\n"
          "framebuffer: release (default keep) adds the parameter that keeps the boot framebuffer off the GPUs to "
          "pass through (gpus, default auto) when it holds one of them: initcall_blacklist=sysfb_init where the "
          "kernel uses sysfb (5.15 on, or simpledrm/simplefb in /proc/iomem), video=efifb:off before; nothing when "
          "no framebuffer holds them.\n\n"
          "A change needs a reboot. On the grub path it notifies grub_config and, on BootLoaderSpec hosts, grubby; on "
          "the grubby path, grubby; on the kernel-install path, kernel_install (a trial boot defers both until the "
          "trial "
          "entry passed the stage's checks).",
      .examples = {"# IOMMU on and vfio-pci taking the GPU's ids, wherever this host keeps its command line\n"
                   "- name: kernel command line for passthrough\n"
                   "  kernel_cmdline:\n"
                   "    iommu: auto\n"
                   "    present:\n"
                   "      - iommu=pt\n"
                   "      - vfio-pci.ids=10de:1b80,10de:10f0\n",
                   "# Keep the boot framebuffer off the GPU passed through, on a Proxmox host\n"
                   "- kernel_cmdline:\n"
                   "    boot_path: proxmox\n"
                   "    framebuffer: release\n"
                   "    gpus: [\"0000:01:00.0\"]\n"},
      .notifies = {"grub_config", "grubby", "kernel_install"},
      .reboot = true,
  };
}

ModuleDef definition() {
  auto def = declare_module(
      "kernel_cmdline",
      "kernel parameters wherever the host's boot path keeps them (GRUB and drop-ins, grubby, kernel-install, "
      "proxmox-boot-tool, kernelstub)",
      cmdline_args<Args>()
          .arg("boot_path", &Args::boot_path, "where the parameters are kept; auto finds the one this host boots by",
               {.choices = {"auto", "grub", "grubby", "kernel-install", "proxmox", "kernelstub"}})
          .arg("regenerate", &Args::regenerate,
               "regenerate what the host boots from the changed files (update-grub, kernel-install, proxmox-boot-tool "
               "refresh)")
          .arg("framebuffer", &Args::framebuffer,
               "release: when the boot framebuffer (efifb, simpledrm...) holds a GPU to pass through, add the "
               "parameter that keeps it off; keep: leave it",
               {.choices = {"keep", "release"}})
          .arg(framebuffer_gpus(), &Args::gpus)
          .check([](const Args& a) { return check_present_absent(a); }),
      converge);
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace

Expected<std::string> detect_boot_path(const Context& ctx) { return detect(ctx); }

}  // namespace gpt
