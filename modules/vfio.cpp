// vfio: the vfio modules loaded at boot and now, vfio-pci claiming the GPU's ids before its display
// driver, and the modules in the initramfs (initramfs-tools, dracut or mkinitcpio).
#include <fnmatch.h>

#include <algorithm>
#include <set>

#include "agent/changes.hpp"
#include "agent/declare.hpp"
#include "agent/gpu.hpp"
#include "agent/kernel_guard.hpp"
#include "agent/pci.hpp"
#include "agent/shell_syntax.hpp"
#include "agent/text.hpp"
#include "modules/lib/grub_default.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

const char* kHeader = "# Managed by gptagent (GPU passthrough): changes made here by hand are replaced.\n";

std::vector<std::string> default_modules(std::string_view release) {
  std::vector<std::string> mods = {"vfio", "vfio_iommu_type1", "vfio_pci"};
  // vfio_virqfd was folded into vfio in Linux 6.2; before that it is a module of its own.
  auto [major, minor] = kernel_version(release);
  if (major != 0 && (major < 6 || (major == 6 && minor < 2))) mods.push_back("vfio_virqfd");
  return mods;
}

// initramfs-tools: one module per line in /etc/initramfs-tools/modules; missing ones appended.
std::string ensure_module_lines(std::string text, const std::vector<std::string>& mods) {
  std::set<std::string> have;
  for (std::string_view line : lines(text)) {
    auto w = words(line, true);
    if (!w.empty()) have.insert(module_name(w[0]));
  }
  for (const auto& m : mods) {
    if (have.count(module_name(m))) continue;
    if (!text.empty() && text.back() != '\n') text += '\n';
    text += m + "\n";
  }
  return text;
}

// dracut: the agent's drop-in whole; in a user's own one (same name) every line is kept and a
// force_drivers line is added for the modules none of its force_drivers/add_drivers lines name.
bool agent_file(std::string_view text) { return text.starts_with("# Managed by gptagent"); }

std::string ensure_dracut_drivers(const std::string& text, const std::vector<std::string>& mods) {
  const std::string whole = std::string(kHeader) + "force_drivers+=\" " + join(mods, " ") + " \"\n";
  if (text.empty() || agent_file(text)) return whole;
  std::set<std::string> have;
  for (std::string_view line : lines(text)) {
    line = trim(line);
    for (const char* key : {"force_drivers", "add_drivers"}) {
      if (!line.starts_with(key)) continue;
      const size_t eq = line.find('=');
      if (eq == std::string_view::npos) continue;
      std::string value(line.substr(eq + 1));
      value.erase(std::remove(value.begin(), value.end(), '"'), value.end());
      for (const auto& w : words(value, true)) have.insert(module_name(w));
    }
  }
  std::vector<std::string> missing;
  for (const auto& m : mods)
    if (!have.count(module_name(m))) missing.push_back(m);
  if (missing.empty()) return text;
  std::string out = text;
  if (out.back() != '\n') out += '\n';
  return out + "force_drivers+=\" " + join(missing, " ") + " \"  # added by gptagent (vfio)\n";
}

// mkinitcpio: the modules go first in MODULES=(...) of /etc/mkinitcpio.conf.
Expected<std::string> ensure_mkinitcpio_modules(std::string text, const std::vector<std::string>& mods) {
  size_t line_start = std::string::npos;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    size_t p = pos;
    while (p < nl && (text[p] == ' ' || text[p] == '\t')) ++p;
    if (text.compare(p, 8, "MODULES=") == 0) line_start = p;
    pos = nl + 1;
  }
  if (line_start == std::string::npos) {
    if (!text.empty() && text.back() != '\n') text += '\n';
    return text + "MODULES=(" + join(mods, " ") + ")\n";
  }
  size_t open = line_start + 8;
  char close_char = text[open] == '(' ? ')' : (text[open] == '"' || text[open] == '\'') ? text[open] : '\0';
  if (!close_char) return Error{"MODULES in /etc/mkinitcpio.conf is neither an array nor a quoted string"};
  size_t close = text.find(close_char, open + 1);
  if (close == std::string::npos) return Error{"MODULES in /etc/mkinitcpio.conf is not closed"};
  std::set<std::string> have;
  for (const auto& w : words(std::string_view(text).substr(open + 1, close - open - 1), true)) {
    std::string name = w;
    name.erase(std::remove(name.begin(), name.end(), '"'), name.end());
    name.erase(std::remove(name.begin(), name.end(), '\''), name.end());
    have.insert(module_name(name));
  }
  std::vector<std::string> missing;
  for (const auto& m : mods)
    if (!have.count(module_name(m))) missing.push_back(m);
  if (missing.empty()) return text;
  // A space separates the new names from what follows, unless a blank or the closing bracket does.
  const char next = text[open + 1];
  const bool separated = next == ' ' || next == '\t' || next == '\n' || static_cast<size_t>(open + 1) == close;
  text.insert(open + 1, join(missing, " ") + (separated ? "" : " "));
  return text;
}

// ---- /etc/modprobe.d: the user's lines kept, one `options vfio-pci ids=` line in force ----
//
// A modprobe_conf file whose first line is the header (the agent's files, old and new, have it) is
// the agent's and rewritten whole. Any other file is the user's: every line of it is kept, and the
// agent's own lines go between these markers at its end, where later runs find and replace them.
// Only modprobe_conf is looked at this way: in any other file every line counts as the user's, as
// modprobe reads it whoever wrote it.
const char* kBlockBegin =
    "# BEGIN gptagent vfio: the lines up to END are the agent's; the rest of this file is yours and kept\n";
const char* kBlockEnd = "# END gptagent vfio\n";

// One modprobe.d file as its physical lines, each with its '\n' (the last may have none), so that
// joining them gives the file back byte for byte.
struct ConfFile {
  std::string path;
  std::vector<std::string> lines;
  bool managed = false;                            // the agent's whole file
  std::optional<std::pair<size_t, size_t>> block;  // the agent's BEGIN and END lines in a user's file
  std::string text() const {
    std::string out;
    for (const auto& l : lines) out += l;
    return out;
  }
};

Expected<ConfFile> conf_file(std::string path, std::string_view text, bool target) {
  ConfFile f{std::move(path), {}, target && agent_file(text), std::nullopt};
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    nl = nl == std::string_view::npos ? text.size() : nl + 1;
    f.lines.emplace_back(text.substr(pos, nl - pos));
    pos = nl;
  }
  if (f.managed || !target) return f;
  std::optional<size_t> begin;
  for (size_t i = 0; i < f.lines.size(); ++i) {
    const std::string_view t = trim(f.lines[i]);
    if (t.starts_with("# BEGIN gptagent") && !begin) begin = i;
    if (t.starts_with("# END gptagent") && begin && !f.block) f.block = {{*begin, i}};
  }
  if (begin && !f.block)
    return Error{
        f.path + ":" + std::to_string(*begin + 1) +
        " opens the agent's lines with '# BEGIN gptagent' but no '# END gptagent' closes them: put the END line "
        "back where they end (nothing written)"};
  return f;
}

// A command as kmod reads it: a backslash before the newline joins the next line, then blank and
// comment lines are none. `ours`: in the agent's own file or block.
struct ConfCommand {
  const ConfFile* file;
  size_t first, last;  // its physical lines
  std::vector<std::string> words;
  bool ours;
  std::string where(size_t line) const { return file->path + ":" + std::to_string(line + 1); }
  std::string text() const { return join(words, " "); }
};

std::vector<ConfCommand> conf_commands(const ConfFile& f) {
  std::vector<ConfCommand> out;
  for (size_t i = 0; i < f.lines.size(); ++i) {
    const size_t first = i;
    std::string joined;
    for (;; ++i) {
      std::string_view l = f.lines[i];
      const bool continued = l.ends_with("\\\n") && i + 1 < f.lines.size();
      if (l.ends_with('\n')) l.remove_suffix(1);
      if (continued) l.remove_suffix(1);
      joined += l;
      if (!continued) break;
    }
    auto w = words(joined, true);
    if (w.empty()) continue;
    const bool ours = f.managed || (f.block && first > f.block->first && first < f.block->second);
    out.push_back({&f, first, i, std::move(w), ours});
  }
  return out;
}

bool is_vfio_pci(std::string_view name) { return module_name(name) == "vfio_pci"; }

// The ids of an `options vfio-pci ... ids=...` command: the last ids= word is the one the kernel
// keeps. Found in its physical line, so that only that word's value is rewritten.
struct IdsOption {
  const ConfCommand* command;
  size_t line;                    // the physical line holding the ids= word
  size_t value_begin, value_end;  // the value in that line, quotes left out
  std::vector<std::string> ids;   // as written
  std::string where() const { return command->where(line); }
};

std::optional<IdsOption> ids_option(const ConfCommand& c) {
  if (c.words.size() < 3 || c.words[0] != "options" || !is_vfio_pci(c.words[1])) return std::nullopt;
  for (size_t i = c.last + 1; i-- > c.first;) {
    const std::string& l = c.file->lines[i];
    const size_t comment = l.find('#');
    std::optional<size_t> at;
    auto blank_before = [&](size_t p) { return p == 0 || l[p - 1] == ' ' || l[p - 1] == '\t'; };
    bool quoted = false;  // the kernel takes "ids=a,b" and ids="a,b" alike
    for (size_t p = l.find("ids="); p != std::string::npos && p < comment; p = l.find("ids=", p + 1)) {
      const bool quote_first = p > 0 && l[p - 1] == '"' && blank_before(p - 1);
      if (blank_before(p) || quote_first) {
        at = p;
        quoted = quote_first || (p + 4 < l.size() && l[p + 4] == '"');
      }
    }
    if (!at) continue;
    size_t begin = *at + 4, end = begin;
    if (quoted) {
      if (l[begin] == '"') ++begin;
      end = l.find('"', begin);
      if (end == std::string::npos) end = begin;
    } else {
      while (end < l.size() && l[end] != ' ' && l[end] != '\t' && l[end] != '\r' && l[end] != '\n' && l[end] != '\\')
        ++end;
    }
    IdsOption o{&c, i, begin, end, {}};
    for (size_t p = begin; p <= end;) {
      size_t comma = l.find(',', p);
      if (comma == std::string::npos || comma > end) comma = end;
      if (auto id = trim(std::string_view(l).substr(p, comma - p)); !id.empty()) o.ids.emplace_back(id);
      p = comma + 1;
    }
    return o;
  }
  return std::nullopt;
}

// "10DE:1B81:1458:3702" -> "10de:1b81": the vendor and device an ids entry takes (subsystem and
// class fields narrow it further, never widen it).
std::string entry_id(std::string_view entry) {
  const size_t first = entry.find(':');
  const size_t second = first == std::string_view::npos ? first : entry.find(':', first + 1);
  return lower(entry.substr(0, second));
}

std::string device_text(const PciDevice& d) {
  return d.address + " (" + d.class_name() + (d.driver.empty() ? "" : ", on " + d.driver) +
         (d.boot_vga ? ", the boot VGA" : "") + ", " + d.id() + ")";
}

// What the agent wants in modprobe.d, apart from where the ids go.
struct ModprobeWanted {
  std::vector<std::string> ids;               // the task's, in order
  std::vector<std::string> chosen;            // functions passed through by address or id
  std::vector<const PciDevice*> sharing;      // by address: not passed through, the id of one that is
  std::vector<std::string> by_address_lines;  // the install hook and its comment
  std::vector<std::string> softdeps;          // modules vfio-pci goes before
  std::vector<std::string> blacklist;
};

// A user's softdep or blacklist that already does what our line would.
bool user_has(const std::vector<ConfCommand>& user, std::string_view verb, const std::string& mod) {
  for (const auto& c : user) {
    if (c.words.size() < 2 || c.words[0] != verb || module_name(c.words[1]) != module_name(mod)) continue;
    if (verb == "blacklist") return true;
    // softdep M pre: A B post: C: vfio-pci among the pre: modules.
    bool pre = false;
    for (size_t i = 2; i < c.words.size(); ++i) {
      if (c.words[i] == "pre:" || c.words[i] == "post:")
        pre = c.words[i] == "pre:";
      else if (pre && is_vfio_pci(c.words[i]))
        return true;
    }
  }
  return false;
}

// Plans modprobe_conf (and the user's ids line, wherever it is) into `boot`; returns what the
// result says about it, or why nothing may be written.
Expected<std::string> plan_modprobe(const Context& ctx, const ModprobeWanted& want, const std::string& target,
                                    FileChanges& boot) {
  auto names = list_dir(ctx.root, "/etc/modprobe.d");
  if (!names) return Error{names.error()};
  std::vector<std::string> paths;
  for (const auto& n : *names)
    if (ends_with(n, ".conf")) paths.push_back("/etc/modprobe.d/" + n);
  if (std::find(paths.begin(), paths.end(), target) == paths.end()) paths.push_back(target);
  std::vector<ConfFile> files;
  files.reserve(paths.size());  // commands point into them
  auto target_text = read_file_if_exists(ctx.root, target);
  if (!target_text) return Error{target_text.error()};
  for (const auto& p : paths) {
    std::optional<std::string> text;
    if (p == target)
      text = *target_text;
    else if (auto t = read_file(ctx.root, p, 1u << 20))
      text = std::move(*t);
    if (!text) continue;  // absent, or a file modprobe could not read either
    auto f = conf_file(p, *text, p == target);
    if (!f) return Error{f.error()};
    files.push_back(std::move(*f));
  }
  std::vector<ConfCommand> all, user;
  for (const auto& f : files)
    for (auto& c : conf_commands(f)) all.push_back(std::move(c));
  for (const auto& c : all)
    if (!c.ours) user.push_back(c);
  std::vector<IdsOption> user_ids;
  for (const auto& c : user)
    if (auto o = ids_option(c)) user_ids.push_back(*o);
  const bool by_address = !want.by_address_lines.empty();

  // The user's ids line is refused, with nothing written, where no merge makes it right.
  if (!want.ids.empty()) {
    if (user_ids.size() > 1) {
      std::vector<std::string> at;
      for (const auto& o : user_ids) at.push_back(o.where() + " '" + o.command->text() + "'");
      return Error{user_ids[0].where() + ": one of " + std::to_string(user_ids.size()) +
                   " lines that give vfio-pci a list of ids: " + join(at, ", ") +
                   " (modprobe passes them all, and only the last one counts): keep one line of ids (nothing written)"};
    }
    for (const auto& o : user_ids)
      for (const auto& entry : o.ids)
        for (const auto& d : ctx.facts.pci) {
          if (entry_id(entry) != d.id() ||
              std::find(want.chosen.begin(), want.chosen.end(), d.address) != want.chosen.end())
            continue;
          const bool shared = std::find(want.sharing.begin(), want.sharing.end(), &d) != want.sharing.end();
          const bool boot_gpu = d.boot_vga && std::find(want.ids.begin(), want.ids.end(), d.id()) == want.ids.end();
          if (!shared && !boot_gpu) continue;
          return Error{o.where() + ": the user's vfio-pci ids include " + entry + ", which is " + device_text(d) +
                       (shared ? ", not passed through: vfio-pci must take this task's GPU by address, not by id"
                               : ", the host's boot GPU: vfio-pci would take it at the next boot") +
                       "; take " + entry + " out of '" + o.command->text() + "' (nothing written)"};
        }
    if (by_address)
      for (const auto& c : user)
        if (c.words.size() >= 2 && c.words[0] == "install" && is_vfio_pci(c.words[1]))
          return Error{
              c.where(c.first) + " has the user's own '" + c.text() +
              "', and binding by address needs this task's install line for vfio-pci, of which modprobe runs one: "
              "fold the two together by hand, or pass the GPU by id (nothing written)"};
  }

  // The agent's own lines, less what the user's lines already do.
  std::vector<std::string> own = want.by_address_lines;
  if (!by_address && !want.ids.empty() && user_ids.empty())
    own.push_back("options vfio-pci ids=" + join(want.ids, ",") + "\n");
  for (const auto& m : want.softdeps)
    if (!user_has(user, "softdep", m)) own.push_back("softdep " + m + " pre: vfio-pci\n");
  for (const auto& m : want.blacklist)
    if (!user_has(user, "blacklist", m)) own.push_back("blacklist " + m + "\n");

  // The user's ids line takes the task's ids after its own; the rest of its line stays as it is.
  std::string note;
  std::optional<std::pair<const ConfFile*, ConfFile>> edited;  // the user's file with the ids merged
  if (!by_address && !want.ids.empty() && user_ids.size() == 1) {
    const IdsOption& o = user_ids[0];
    std::vector<std::string> added, kept;
    for (const auto& id : want.ids)
      if (std::none_of(o.ids.begin(), o.ids.end(), [&](const std::string& e) { return lower(e) == id; }))
        added.push_back(id);
    for (const auto& e : o.ids)
      if (std::find(want.ids.begin(), want.ids.end(), lower(e)) == want.ids.end()) kept.push_back(e);
    if (added.empty()) {
      note = "; the ids are in the user's " + o.where() + (kept.empty() ? "" : " beside the user's " + join(kept, ","));
    } else {
      ConfFile f = *o.command->file;
      std::string& l = f.lines[o.line];
      const std::string_view value = trim(std::string_view(l).substr(o.value_begin, o.value_end - o.value_begin));
      const std::string sep = value.empty() || value.ends_with(',') ? "" : ",";
      l.insert(o.value_end, sep + join(added, ","));
      edited = {{o.command->file, std::move(f)}};
      note = "; merged ids " + join(added, ",") + " into " + o.where() +
             (kept.empty() ? "" : " (kept the user's " + join(kept, ",") + ")");
    }
  }

  for (const auto& f : files)
    if (edited && edited->first == &f && f.path != target) boot.write(f.path, f.text(), edited->second.text());

  const ConfFile* current = nullptr;
  for (const auto& f : files)
    if (f.path == target) current = &f;
  if (!current || current->managed || (*target_text)->empty()) {
    if (own.empty() && !current) return note;  // nothing of the agent's to write, no file for it
    std::string text = kHeader;
    for (const auto& l : own) text += l;
    boot.write(target, *target_text, text);
    return note;
  }
  // The user's file: all of it kept, the agent's block replaced, dropped when empty, or added at the end.
  std::vector<std::string> lines = edited && edited->first == current ? edited->second.lines : current->lines;
  size_t at = lines.size();
  if (current->block) {
    at = current->block->first;
    lines.erase(lines.begin() + static_cast<std::ptrdiff_t>(current->block->first),
                lines.begin() + static_cast<std::ptrdiff_t>(current->block->second + 1));
  }
  if (!own.empty()) {
    if (at == lines.size() && !lines.empty() && !lines.back().ends_with('\n')) lines.back() += '\n';
    own.insert(own.begin(), kBlockBegin);
    own.push_back(kBlockEnd);
    lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(at), own.begin(), own.end());
  }
  std::string text;
  for (const auto& l : lines) text += l;
  boot.write(target, *target_text, text);
  if (!own.empty()) note += "; the agent's own lines in a marked block of the user's " + target;
  return note;
}

// The modules of the running kernel that would drive `functions` (their sysfs modalias matched
// against the kernel's modules.alias, as udev's modprobe does), vfio-pci aside: the drivers that
// udev may load before vfio-pci at boot, in the initramfs included (bochs for QEMU's VGA, amdgpu,
// xhci_pci for a GPU's USB-C controller). Nothing where the kernel's modules.alias is not there.
Expected<std::vector<std::string>> driver_modules(const Root& root, std::string_view release,
                                                  const std::vector<std::string>& functions) {
  std::vector<std::string> out;
  auto aliases = read_file_if_exists(root, "/lib/modules/" + std::string(release) + "/modules.alias", 64u << 20);
  if (!aliases) return Error{aliases.error()};
  if (!*aliases || functions.empty()) return out;
  std::vector<std::string> modaliases;
  for (const auto& f : functions)
    if (auto m = read_file_if_exists(root, "/sys/bus/pci/devices/" + f + "/modalias", 4096); m && *m)
      modaliases.emplace_back(trim(**m));
  for (std::string_view line : lines(**aliases)) {
    if (!line.starts_with("alias pci:")) continue;
    const size_t sp = line.find(' ', 6);
    if (sp == std::string_view::npos) continue;
    const std::string pattern(line.substr(6, sp - 6)), module(trim(line.substr(sp + 1)));
    if (module.empty() || module == "vfio_pci" || std::find(out.begin(), out.end(), module) != out.end()) continue;
    for (const auto& m : modaliases)
      if (::fnmatch(pattern.c_str(), m.c_str(), 0) == 0) {
        out.push_back(module);
        break;
      }
  }
  return out;
}

struct Args {
  std::optional<std::vector<std::string>> modules;  // unset: what this kernel needs
  std::vector<std::string> ids;
  std::vector<std::string> devices;
  json gpus;  // null: not given
  bool force = false;
  bool softdep = true;
  std::vector<std::string> blacklist;
  bool load = true;
  std::string kernel_cmdline = "auto";
  bool initramfs = true;
  std::string modprobe_conf = "/etc/modprobe.d/vfio.conf";
  std::string modules_load_conf = "/etc/modules-load.d/vfio.conf";
};

// What vfio-pci is to claim: the ids and the functions chosen, and how (by address where another
// device shares an id), with the modules it goes before.
struct Selection {
  std::vector<std::string> ids;      // vendor:device
  std::vector<std::string> chosen;   // the functions named through gpus or devices
  std::vector<std::string> sharing;  // "0000:00:01.0 (VGA compatible controller, the boot VGA, 10de:1b81)"
  bool by_address = false;
  ModprobeWanted want;
};

Expected<Selection> select_functions(const Context& ctx, const Args& args) {
  Selection sel;
  std::vector<std::string>& ids = sel.ids;
  std::vector<std::string>& chosen = sel.chosen;
  std::vector<std::string>& sharing = sel.sharing;
  // The ids vfio-pci claims: given ones, then every function of each given device's slot.
  auto add_id = [&](const std::string& id) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  for (const auto& id : args.ids) add_id(*parse_pci_id(id));
  if (!args.gpus.is_null()) {
    auto gpus = select_gpus(ctx.facts, args.gpus, args.force);
    if (!gpus) return Error{gpus.error()};
    for (const auto& g : *gpus)
      for (const auto& f : g.functions) {
        auto id = pci_device_id(ctx.root, f);
        if (!id) return Error{id.error()};
        add_id(*id);
        chosen.push_back(f);
      }
  }
  for (const auto& dev : args.devices) {
    auto functions = pci_slot_functions(ctx.root, *parse_pci_address(dev));
    if (!functions) return Error{functions.error()};
    for (const auto& f : *functions) {
      auto id = pci_device_id(ctx.root, f);
      if (!id) return Error{id.error()};
      add_id(*id);
      chosen.push_back(f);
    }
  }
  // `options vfio-pci ids=` takes every device with those ids: with two identical cards (or a
  // common audio id), the host's own would go to vfio-pci at the next boot. Then vfio-pci gets the
  // chosen functions by address: an install hook sets their driver_override just before the
  // module loads (at boot from the initramfs, or whenever it is loaded), and no ids are given.
  sel.want.ids = ids;
  sel.want.chosen = chosen;
  for (const auto& d : ctx.facts.pci) {
    if (chosen.empty() || std::find(chosen.begin(), chosen.end(), d.address) != chosen.end()) continue;
    if (std::find(ids.begin(), ids.end(), d.id()) == ids.end()) continue;
    sel.want.sharing.push_back(&d);
    sharing.push_back(device_text(d));
  }
  sel.by_address = !sharing.empty();
  const bool by_address = sel.by_address;
  if (by_address && !args.ids.empty())
    return Error{"ids: " + join(args.ids, ",") + " would also give vfio-pci " + join(sharing, ", ") +
                 ", which is not being passed through: leave ids out, and the GPU's functions are bound by address"};
  if (by_address)
    sel.want.by_address_lines = {
        "# By address, not by id: " + join(sharing, ", ") + " has the id of a function passed through.\n",
        "install vfio-pci /bin/sh -c 'for d in " + join(chosen, " ") +
            "; do echo vfio-pci > /sys/bus/pci/devices/$d/driver_override; done 2>/dev/null; "
            "exec /sbin/modprobe --ignore-install vfio-pci $CMDLINE_OPTS'\n"};
  // vfio-pci must claim the GPU before its display driver and the audio function before HDA: the
  // NVIDIA drivers and HDA always, and whatever else this kernel has for the chosen functions.
  if (args.softdep) {
    sel.want.softdeps = {"nouveau", "nvidia", "snd_hda_intel"};
    auto found = driver_modules(ctx.root, ctx.facts.kernel_release, chosen);
    if (!found) return Error{found.error()};
    for (const auto& m : *found)
      if (std::find(sel.want.softdeps.begin(), sel.want.softdeps.end(), m) == sel.want.softdeps.end())
        sel.want.softdeps.push_back(m);
  }
  sel.want.blacklist = args.blacklist;
  return sel;
}

// The modules in the initramfs (unless initramfs: false), as the host's tool builds it; on Debian
// and Ubuntu the kernel guard's hook too (update-initramfs's), on hosts with dracut and kernel-install
// its plugin. A note when the host has no tool the agent knows.
Expected<std::string> plan_initramfs(const Context& ctx, const Args& args, const std::vector<std::string>& mods,
                                     FileChanges& boot, FileChanges& guard) {
  if (args.initramfs) {
    const std::string& tool = ctx.facts.boot.initramfs;
    // The kernel-update guard: every initramfs built from now on (a new kernel's) is checked for
    // the modules every kernel has (vfio_virqfd went into vfio in 6.2).
    std::vector<std::string> core;
    for (const auto& m : mods)
      if (m == "vfio" || m == "vfio_iommu_type1" || m == "vfio_pci") core.push_back(m);
    if (tool == "update-initramfs") {
      auto text = read_file_if_exists(ctx.root, "/etc/initramfs-tools/modules");
      if (!text) return Error{text.error()};
      boot.write("/etc/initramfs-tools/modules", *text, ensure_module_lines(text->value_or(""), mods));
      if (auto s =
              guard.write(kInitramfsGuard, initramfs_guard_script(core), FileAttrs{.uid = 0, .gid = 0, .mode = 0755});
          !s)
        return Error{s.error()};
    } else if (tool == "dracut") {
      const std::string dropin = "/etc/dracut.conf.d/vfio.conf";
      auto text = read_file_if_exists(ctx.root, dropin);
      if (!text) return Error{text.error()};
      boot.write(dropin, *text, ensure_dracut_drivers(text->value_or(""), mods));
      // Kernels installed through kernel-install (Fedora, RHEL) get their initramfs from its
      // 50-dracut.install: the guard is a plugin after it.
      if (find_program(ctx.root, "kernel-install"))
        if (auto s = guard.write(kInstallInitramfsGuard, install_initramfs_guard_script(core),
                                 FileAttrs{.uid = 0, .gid = 0, .mode = 0755});
            !s)
          return Error{s.error()};
    } else if (tool == "mkinitcpio") {
      auto text = read_file(ctx.root, "/etc/mkinitcpio.conf");
      if (!text) return Error{text.error()};
      // mkinitcpio sources it with bash: bash's syntax (its arrays) is the file's.
      if (auto valid = check_shell_file("/etc/mkinitcpio.conf", *text, ShellDialect::bash); !valid)
        return Error{valid.error()};
      auto edited = ensure_mkinitcpio_modules(*text, mods);
      if (!edited) return Error{edited.error()};
      boot.write("/etc/mkinitcpio.conf", *text, *edited);
      if (auto s =
              guard.write(kMkinitcpioGuard, mkinitcpio_guard_script(core), FileAttrs{.uid = 0, .gid = 0, .mode = 0755});
          !s)
        return Error{s.error()};
    } else {
      return std::string(
          "; no update-initramfs, dracut or mkinitcpio found: the modules are not added to an initramfs");
    }
  }
  return std::string();
}

// vfio-pci.ids= on the kernel command line, where vfio-pci is built into the kernel (or always
// asked for): in a drop-in of its own on Debian and Ubuntu, in /etc/default/grub elsewhere.
struct CmdlinePlan {
  std::string param;  // empty: none
  std::vector<HandlerRequest> grub_requests;
  std::string note;
};

Expected<CmdlinePlan> plan_builtin_cmdline(const Context& ctx, const Args& args, const Selection& sel,
                                           FileChanges& boot) {
  const std::vector<std::string>&ids = sel.ids, &sharing = sel.sharing;
  const bool by_address = sel.by_address;
  CmdlinePlan plan;
  // A vfio-pci built into the kernel never reads modprobe.d: its ids must be on the kernel command
  // line. Debian's grub-mkconfig sources /etc/default/grub.d/*.cfg, so the parameter lives in a
  // drop-in of its own there, apart from the user's (and grub_cmdline's) edits of the main file.
  const std::string& cmdline_mode = args.kernel_cmdline;
  const bool builtin = std::find(ctx.facts.builtin_modules.begin(), ctx.facts.builtin_modules.end(), "vfio_pci") !=
                       ctx.facts.builtin_modules.end();
  if (by_address && (cmdline_mode == "always" || builtin))
    return Error{
        "vfio-pci " +
        std::string(builtin ? "is built into this kernel" : "is set to take its ids from the kernel command line") +
        ", where only vfio-pci.ids= claims devices at boot, and that would also take " + join(sharing, ", ") +
        ": bind the GPU after boot with vfio_bind (by address) instead"};
  if (!by_address && !ids.empty() && (cmdline_mode == "always" || (cmdline_mode == "auto" && builtin))) {
    const std::string param = "vfio-pci.ids=" + join(ids, ",");
    plan.param = param;
    const bool debian_like =
        ctx.facts.os.id == "debian" || ctx.facts.os.id == "ubuntu" ||
        std::find(ctx.facts.os.id_like.begin(), ctx.facts.os.id_like.end(), "debian") != ctx.facts.os.id_like.end();
    CmdlineEditResult edit;
    std::string grub_text;
    if (debian_like) {
      const std::string dropin = "/etc/default/grub.d/gptagent-vfio.cfg";
      auto before = read_file_if_exists(ctx.root, dropin);
      if (!before) return Error{before.error()};
      const std::string after = std::string(kHeader) + "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX " + param + "\"\n";
      if (before->value_or("") != after) {
        boot.write(dropin, *before, after);
        edit.added = {param};
      }
      auto main = read_file_if_exists(ctx.root, "/etc/default/grub", kMaxGrubFileBytes);
      if (!main) return Error{main.error()};
      grub_text = main->value_or("");
      // update-grub sources it before the drop-in: one sh refuses would fail the regeneration.
      if (auto valid = check_shell_file("/etc/default/grub", grub_text); !valid) return Error{valid.error()};
    } else {
      auto text = read_file(ctx.root, "/etc/default/grub", kMaxGrubFileBytes);
      if (!text)
        return Error{text.error() + " (vfio_pci is built into this kernel: its ids go on the kernel command line)"};
      if (auto valid = check_shell_file("/etc/default/grub", *text); !valid) return Error{valid.error()};
      CmdlineEdit e;
      e.present = {param};
      auto res = edit_grub_cmdline(*text, e);
      if (!res) return Error{"/etc/default/grub: " + res.error()};
      boot.write("/etc/default/grub", *text, res->text);
      edit = *res;
      grub_text = *text;
    }
    if (edit.changed()) plan.grub_requests = grub_handlers(ctx.facts, grub_text, edit);
    plan.note = "; vfio_pci is built into this kernel, so its ids are on the kernel command line (" + param + ")";
  }
  return plan;
}

// What the guard recorded: an installed kernel whose initramfs lacks the modules is drift, and
// rebuilding the initramfs of every kernel repairs it (the guard checks each again).
Status repair_guard_gaps(const Context& ctx, const Args& args, Result& r) {
  const std::string& tool = ctx.facts.boot.initramfs;
  if (!args.initramfs || (tool != "update-initramfs" && tool != "dracut" && tool != "mkinitcpio")) return {};
  auto records = read_guard_records(ctx.root);
  if (!records) return Error{records.error()};
  std::vector<std::string> gaps;
  for (const auto& g : *records)
    if (g.kind == "initramfs" && !g.missing.empty())
      gaps.push_back(g.what + " (kernel " + g.kernel + ") lacks " + join(g.missing, ", "));
  if (gaps.empty()) return {};
  r.status = Outcome::changed;
  r.msg += "; the kernel guard recorded: " + join(gaps, "; ") + ": the initramfs is rebuilt";
  if (std::none_of(r.handlers.begin(), r.handlers.end(),
                   [](const HandlerRequest& h) { return h.module == "initramfs"; }))
    r.handlers.push_back(rebuild_initramfs());
  r.data["kernel_guard"] = gaps;
  return {};
}

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  const std::vector<std::string> mods = args.modules ? *args.modules : default_modules(ctx.facts.kernel_release);
  auto selected = select_functions(ctx, args);
  if (!selected) return Result::failed(selected.error());
  const std::vector<std::string>&ids = selected->ids, &chosen = selected->chosen, &sharing = selected->sharing;
  const bool by_address = selected->by_address;
  const ModprobeWanted& want = selected->want;

  FileChanges boot(ctx.root), load_conf(ctx.root), guard(ctx.root);
  auto modprobe_note = plan_modprobe(ctx, want, args.modprobe_conf, boot);
  if (!modprobe_note) return Result::failed(modprobe_note.error());

  auto initramfs_note = plan_initramfs(ctx, args, mods, boot, guard);
  if (!initramfs_note) return Result::failed(initramfs_note.error());
  std::string note = *initramfs_note;
  auto cmdline = plan_builtin_cmdline(ctx, args, *selected, boot);
  if (!cmdline) return Result::failed(cmdline.error());
  const std::string& cmdline_param = cmdline->param;
  note += cmdline->note;

  // modules-load.d: the agent's file whole; a user's own (a wiki's vfio.conf, with kvmfr, say) keeps
  // every line, and only the modules it lacks are added.
  const std::string& load_path = args.modules_load_conf;
  auto load_text = read_file_if_exists(ctx.root, load_path);
  if (!load_text) return Result::failed(load_text.error());
  std::string modules_load = std::string(kHeader);
  for (const auto& m : mods) modules_load += m + "\n";
  if (load_text->has_value() && !(*load_text)->empty() && !agent_file(**load_text))
    modules_load = ensure_module_lines(**load_text, mods);
  load_conf.write(load_path, *load_text, modules_load);

  // Loading now: only what is neither loaded nor built in.
  std::vector<std::string> missing;
  if (args.load)
    for (const auto& m : mods)
      if (!ctx.facts.module_available(m)) missing.push_back(module_name(m));

  Result r = Result::ok("vfio modules " + join(mods, ", ") +
                        (by_address ? "; vfio-pci takes " + join(chosen, ", ") + " by address (" + join(sharing, ", ") +
                                          " has the same id)"
                         : ids.empty() ? ""
                                       : "; vfio-pci ids " + join(ids, ",")) +
                        *modprobe_note);
  r.data = {{"modules", mods}, {"ids", by_address ? std::vector<std::string>{} : ids}};
  if (by_address) r.data["by_address"] = chosen;
  r.expect = {{"modules", mods}, {"vfio_devices", chosen}};
  if (!cmdline_param.empty()) r.expect["cmdline_present"] = json::array({cmdline_param});
  std::vector<std::string> changed = boot.paths();
  for (const auto* f : {&load_conf, &guard})
    for (const auto& p : f->paths()) changed.push_back(p);
  if (!changed.empty()) {
    r.status = Outcome::changed;
    r.msg += "; wrote " + join(changed, ", ");
    r.diff = boot.diff() + load_conf.diff() + guard.diff();
    r.data["files"] = changed;
  }
  if (!boot.empty()) {
    r.reboot_required = true;
    r.handlers = cmdline->grub_requests;
    r.handlers.push_back(rebuild_initramfs());
  }
  if (auto s = repair_guard_gaps(ctx, args, r); !s) return Result::failed(s.error());
  if (apply) {
    if (auto s = boot.apply(r.data); !s) return Result::failed(s.error());
    if (auto s = load_conf.apply(r.data); !s) return Result::failed(s.error());
    if (auto s = guard.apply(r.data); !s) return Result::failed(s.error());
  }
  if (!missing.empty()) {
    Command cmd{{"modprobe", "-a"}};
    cmd.argv.insert(cmd.argv.end(), missing.begin(), missing.end());
    Result load = ctx.run_system(cmd, apply, "loaded " + join(missing, ", "));
    r.commands = load.commands;
    if (load.status == Outcome::failed) return Result::failed(load.msg);
    if (load.status == Outcome::changed) {
      r.status = Outcome::changed;
      r.msg += "; " + load.msg;
    } else {
      r.msg += "; " + join(missing, ", ") + " not loaded now (" + load.msg + ")";
    }
  }
  if (r.status == Outcome::ok && missing.empty()) r.msg += ": as wanted";
  r.msg += note;
  return r;
}

std::optional<std::string> check_ids(const json& v) {
  for (const auto& id : v)
    if (!parse_pci_id(id.get<std::string>()))
      return "'" + id.get<std::string>() + "' is not a vendor:device id like 10de:1b80";
  return std::nullopt;
}

std::optional<std::string> check_devices(const json& v) {
  for (const auto& d : v)
    if (!parse_pci_address(d.get<std::string>()))
      return "'" + d.get<std::string>() + "' is not a PCI address like 0000:01:00.0";
  return std::nullopt;
}

std::optional<std::string> check_names(const json& v) {
  for (const auto& m : v) {
    const std::string s = m.get<std::string>();
    if (s.empty() ||
        s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != std::string::npos)
      return "'" + s + "' is not a kernel module name";
  }
  return std::nullopt;
}

std::optional<std::string> check_conf_path(const json& v) {
  const std::string s = v.get<std::string>();
  if (s.empty() || s[0] != '/' || s.size() < 6 || !ends_with(s, ".conf"))
    return "must be an absolute path ending in .conf (modprobe and systemd read only those)";
  return std::nullopt;
}

// What `gptagent doc vfio` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "The vfio modules at boot (/etc/modules-load.d/vfio.conf) and now (modprobe -a for what is neither "
          "loaded nor built in); options vfio-pci ids= from ids or from devices (every function of each device's "
          "slot, read from sysfs); softdep lines so that vfio-pci claims the GPU before nouveau, nvidia and "
          "snd_hda_intel, and before every other module of the running kernel whose alias matches a chosen "
          "function's modalias (modules.alias, as udev loads drivers, in the initramfs too: amdgpu, xhci_pci for a "
          "GPU's USB-C controller, bochs for QEMU's VGA); an optional blacklist; all in /etc/modprobe.d/vfio.conf. "
          "The modules go in the initramfs (/etc/initramfs-tools/modules, a dracut drop-in with force_drivers, or "
          "the front of mkinitcpio's MODULES=(...)). Default modules follow the running kernel (vfio_virqfd only "
          "before 6.2).\n\n"
          "Where vfio-pci is built into the kernel (Ubuntu), modprobe.d options never reach it: the ids then go on "
          "the kernel command line (/etc/default/grub.d/gptagent-vfio.cfg on Debian-family hosts, the main file "
          "elsewhere; kernel_cmdline: auto, always or never). A GRUB file that sh -n would refuse, or a "
          "/etc/mkinitcpio.conf that bash -n would refuse, is refused with path:line: and nothing is written.\n\n"
          "A modprobe_conf the agent did not write (no \"# Managed by gptagent\" header) is merged, never replaced: "
          "every line of the user's stays byte for byte, the task's ids are appended to the user's one options "
          "vfio-pci ids= line (in whichever /etc/modprobe.d/*.conf it is, its other options kept), and the agent's "
          "other lines (softdeps and blacklists the user has not already written) go in a \"# BEGIN gptagent "
          "vfio\" ... \"# END gptagent vfio\" block at the end of the file. Refused with file:line, nothing "
          "written: two ids lines in force, user ids naming the host's boot GPU or a card the by-address mode "
          "leaves to the host, and a user's install vfio-pci where the by-address mode needs its own. A user's own "
          "/etc/modules-load.d/vfio.conf or /etc/dracut.conf.d/vfio.conf (a wiki's, with kvmfr say) keeps every "
          "line and gets only the modules it lacks.\n\n"
          "Changes rebuild the initramfs (they notify initramfs; with the ids on the command line, grub_config and, "
          "on BootLoaderSpec hosts, grubby too) and need a reboot.\n\n"
          "It installs the kernel guard: update-initramfs's hook /etc/initramfs/post-update.d/gptagent-vfio (Debian, "
          "Ubuntu), or kernel-install's plugin /etc/kernel/install.d/95-gptagent-vfio.install (dracut with "
          "kernel-install: Fedora, RHEL), or mkinitcpio's post hook /etc/initcpio/post/gptagent-vfio (Arch). Each "
          "initramfs built from then on, a new kernel's too, is checked for the "
          "vfio modules, the result recorded for gptagent status and --check; a recorded initramfs without them is "
          "drift, repaired by rebuilding the initramfs.",
      .examples = {"# vfio-pci claims every function of the GPU's slot at boot, before its display driver\n"
                   "- name: vfio-pci claims the GPU at boot\n"
                   "  vfio:\n"
                   "    gpus: [\"0000:01:00.0\"]\n",
                   "# The same by vendor:device ids, with nouveau never loaded automatically\n"
                   "- vfio:\n"
                   "    ids: [\"10de:1b80\", \"10de:10f0\"]\n"
                   "    blacklist: [nouveau]\n"},
      .notifies = {"initramfs", "grub_config", "grubby"},
      .reboot = true,
  };
}

ModuleDef definition() {
  auto def = declare_module(
      "vfio", "vfio modules at boot and now, vfio-pci ids and softdeps, modules in the initramfs",
      ArgsDecl<Args>()
          .arg("modules", &Args::modules,
               "the vfio modules; unset: what this kernel needs (vfio_virqfd only before 6.2)", {.check = check_names})
          .arg("ids", &Args::ids, "vendor:device ids vfio-pci claims at boot",
               {.check = check_ids, .example = json::array({"10de:1b80", "10de:10f0"})})
          .arg("devices", &Args::devices,
               "PCI addresses whose slot's functions vfio-pci claims (their ids, or by address)",
               {.check = check_devices, .example = json::array({"0000:01:00.0"})})
          .arg(gpus_arg(), &Args::gpus)
          .arg("force", &Args::force, "take a GPU named in gpus that cannot be passed through all the same")
          .arg("softdep", &Args::softdep,
               "load vfio-pci before the display and audio drivers (nouveau, nvidia, snd_hda_intel, and this kernel's "
               "for the functions)")
          .arg("blacklist", &Args::blacklist, "modules never loaded automatically (blacklist lines in modprobe_conf)",
               {.check = check_names, .example = json::array({"nouveau"})})
          .arg("load", &Args::load, "load the modules now as well (those neither loaded nor built in)")
          .arg(
              "kernel_cmdline", &Args::kernel_cmdline,
              "vfio-pci.ids= on the kernel command line: auto when vfio_pci is built into the kernel, always, or never",
              {.choices = {"auto", "always", "never"}})
          .arg("initramfs", &Args::initramfs,
               "put the modules in the initramfs (initramfs-tools, dracut or mkinitcpio) and rebuild it")
          .arg("modprobe_conf", &Args::modprobe_conf, "the agent's modprobe.d file (options, softdeps, blacklist)",
               {.check = check_conf_path})
          .arg("modules_load_conf", &Args::modules_load_conf,
               "the modules-load.d file that loads the modules at boot (a user's own file keeps its lines)",
               {.check = check_conf_path}),
      converge);
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt
