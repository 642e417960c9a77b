// vfio: the vfio modules loaded at boot and now, vfio-pci claiming the GPU's ids before its display
// driver, and the modules in the initramfs (initramfs-tools, dracut or mkinitcpio).
#include <algorithm>
#include <set>

#include "agent/changes.hpp"
#include "agent/gpu.hpp"
#include "agent/module.hpp"
#include "agent/pci.hpp"
#include "agent/shell_syntax.hpp"
#include "agent/text.hpp"
#include "modules/grub_default.hpp"

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

// An `options vfio-pci ids=` line in another modprobe.d file: writing ours too would double it.
std::optional<std::string> foreign_ids_option(const Context& ctx, const std::string& ours) {
  auto names = list_dir(ctx.root, "/etc/modprobe.d");
  if (!names) return names.error();
  for (const auto& n : *names) {
    const std::string path = "/etc/modprobe.d/" + n;
    if (path == ours || !ends_with(n, ".conf")) continue;
    auto text = read_file(ctx.root, path, 1u << 20);
    if (!text) continue;
    int line_no = 0;
    for (std::string_view line : lines(*text)) {
      ++line_no;
      auto w = words(line, true);
      if (w.size() >= 3 && w[0] == "options" && module_name(w[1]) == "vfio_pci" &&
          std::any_of(w.begin() + 2, w.end(), [](const std::string& o) { return o.rfind("ids=", 0) == 0; }))
        return path + ":" + std::to_string(line_no) + " already sets '" + std::string(line) +
               "': remove it (or this task's ids) so vfio-pci gets one list of ids";
    }
  }
  return std::nullopt;
}

Result converge(Context& ctx, const json& args, bool apply) {
  const std::vector<std::string> mods = args.contains("modules") ? args["modules"].get<std::vector<std::string>>()
                                                                  : default_modules(ctx.facts.kernel_release);
  // The ids vfio-pci claims: given ones, then every function of each given device's slot.
  std::vector<std::string> ids;
  auto add_id = [&](const std::string& id) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  for (const auto& id : args["ids"]) add_id(*parse_pci_id(id.get<std::string>()));
  std::vector<std::string> chosen;  // the functions named through gpus or devices
  if (args.contains("gpus")) {
    auto gpus = select_gpus(ctx.facts, args["gpus"], args["force"].get<bool>());
    if (!gpus) return Result::failed(gpus.error());
    for (const auto& g : *gpus)
      for (const auto& f : g.functions) {
        auto id = pci_device_id(ctx.root, f);
        if (!id) return Result::failed(id.error());
        add_id(*id);
        chosen.push_back(f);
      }
  }
  for (const auto& dev : args["devices"]) {
    auto functions = pci_slot_functions(ctx.root, *parse_pci_address(dev.get<std::string>()));
    if (!functions) return Result::failed(functions.error());
    for (const auto& f : *functions) {
      auto id = pci_device_id(ctx.root, f);
      if (!id) return Result::failed(id.error());
      add_id(*id);
      chosen.push_back(f);
    }
  }
  // `options vfio-pci ids=` takes every device with those ids: with two identical cards (or a
  // common audio id), the host's own would go to vfio-pci at the next boot. Then vfio-pci gets the
  // chosen functions by address: an install hook sets their driver_override just before the
  // module loads (at boot from the initramfs, or whenever it is loaded), and no ids are given.
  std::vector<std::string> sharing;  // "0000:00:01.0 (VGA compatible controller, the boot VGA, 10de:1b81)"
  for (const auto& d : ctx.facts.pci) {
    if (chosen.empty() || std::find(chosen.begin(), chosen.end(), d.address) != chosen.end()) continue;
    if (std::find(ids.begin(), ids.end(), d.id()) == ids.end()) continue;
    sharing.push_back(d.address + " (" + d.class_name() + (d.driver.empty() ? "" : ", on " + d.driver) +
                      (d.boot_vga ? ", the boot VGA" : "") + ", " + d.id() + ")");
  }
  const bool by_address = !sharing.empty();
  if (by_address && !args["ids"].empty())
    return Result::failed("ids: " + join(args["ids"].get<std::vector<std::string>>(), ",") + " would also give vfio-pci " +
                          join(sharing, ", ") + ", which is not being passed through: leave ids out, and the GPU's functions are bound by address");
  const std::string modprobe_path = args["modprobe_conf"].get<std::string>();
  if (!ids.empty()) {
    if (auto conflict = foreign_ids_option(ctx, modprobe_path)) return Result::failed(*conflict);
  }

  FileChanges boot(ctx.root), load_conf(ctx.root);
  std::vector<HandlerRequest> grub_requests;
  std::string modprobe = kHeader;
  if (by_address) {
    modprobe += "# By address, not by id: " + join(sharing, ", ") + " has the id of a function passed through.\n" +
                "install vfio-pci /bin/sh -c 'for d in " + join(chosen, " ") +
                "; do echo vfio-pci > /sys/bus/pci/devices/$d/driver_override; done 2>/dev/null; "
                "exec /sbin/modprobe --ignore-install vfio-pci $CMDLINE_OPTS'\n";
  } else if (!ids.empty()) {
    modprobe += "options vfio-pci ids=" + join(ids, ",") + "\n";
  }
  if (args["softdep"].get<bool>()) {
    // vfio-pci must claim the GPU before its display driver and the audio function before HDA.
    for (const char* drv : {"nouveau", "nvidia", "snd_hda_intel"}) modprobe += std::string("softdep ") + drv + " pre: vfio-pci\n";
  }
  for (const auto& b : args["blacklist"]) modprobe += "blacklist " + b.get<std::string>() + "\n";
  if (auto s = boot.write(modprobe_path, modprobe); !s) return Result::failed(s.error());

  std::string note;
  if (args["initramfs"].get<bool>()) {
    const std::string& tool = ctx.facts.boot.initramfs;
    if (tool == "update-initramfs") {
      auto text = read_file_if_exists(ctx.root, "/etc/initramfs-tools/modules");
      if (!text) return Result::failed(text.error());
      boot.write("/etc/initramfs-tools/modules", *text, ensure_module_lines(text->value_or(""), mods));
    } else if (tool == "dracut") {
      if (auto s = boot.write("/etc/dracut.conf.d/vfio.conf", std::string(kHeader) + "force_drivers+=\" " + join(mods, " ") + " \"\n"); !s)
        return Result::failed(s.error());
    } else if (tool == "mkinitcpio") {
      auto text = read_file(ctx.root, "/etc/mkinitcpio.conf");
      if (!text) return Result::failed(text.error());
      // mkinitcpio sources it with bash: bash's syntax (its arrays) is the file's.
      if (auto valid = check_shell_file("/etc/mkinitcpio.conf", *text, ShellDialect::bash); !valid)
        return Result::failed(valid.error());
      auto edited = ensure_mkinitcpio_modules(*text, mods);
      if (!edited) return Result::failed(edited.error());
      boot.write("/etc/mkinitcpio.conf", *text, *edited);
    } else {
      note = "; no update-initramfs, dracut or mkinitcpio found: the modules are not added to an initramfs";
    }
  }
  // A vfio-pci built into the kernel never reads modprobe.d: its ids must be on the kernel command
  // line. Debian's grub-mkconfig sources /etc/default/grub.d/*.cfg, so the parameter lives in a
  // drop-in of its own there, apart from the user's (and grub_cmdline's) edits of the main file.
  const std::string cmdline_mode = args["kernel_cmdline"].get<std::string>();
  const bool builtin = std::find(ctx.facts.builtin_modules.begin(), ctx.facts.builtin_modules.end(), "vfio_pci") !=
                       ctx.facts.builtin_modules.end();
  std::string cmdline_param;
  if (by_address && (cmdline_mode == "always" || builtin))
    return Result::failed("vfio-pci " + std::string(builtin ? "is built into this kernel" : "is set to take its ids from the kernel command line") +
                          ", where only vfio-pci.ids= claims devices at boot, and that would also take " + join(sharing, ", ") +
                          ": bind the GPU after boot with vfio_bind (by address) instead");
  if (!by_address && !ids.empty() && (cmdline_mode == "always" || (cmdline_mode == "auto" && builtin))) {
    const std::string param = "vfio-pci.ids=" + join(ids, ",");
    cmdline_param = param;
    const bool debian_like = ctx.facts.os.id == "debian" || ctx.facts.os.id == "ubuntu" ||
                             std::find(ctx.facts.os.id_like.begin(), ctx.facts.os.id_like.end(), "debian") !=
                                 ctx.facts.os.id_like.end();
    CmdlineEditResult edit;
    std::string grub_text;
    if (debian_like) {
      const std::string dropin = "/etc/default/grub.d/gptagent-vfio.cfg";
      auto before = read_file_if_exists(ctx.root, dropin);
      if (!before) return Result::failed(before.error());
      const std::string after = std::string(kHeader) + "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX " + param + "\"\n";
      if (before->value_or("") != after) {
        boot.write(dropin, *before, after);
        edit.added = {param};
      }
      auto main = read_file_if_exists(ctx.root, "/etc/default/grub", kMaxGrubFileBytes);
      if (!main) return Result::failed(main.error());
      grub_text = main->value_or("");
      // update-grub sources it before the drop-in: one sh refuses would fail the regeneration.
      if (auto valid = check_shell_file("/etc/default/grub", grub_text); !valid) return Result::failed(valid.error());
    } else {
      auto text = read_file(ctx.root, "/etc/default/grub", kMaxGrubFileBytes);
      if (!text) return Result::failed(text.error() + " (vfio_pci is built into this kernel: its ids go on the kernel command line)");
      if (auto valid = check_shell_file("/etc/default/grub", *text); !valid) return Result::failed(valid.error());
      CmdlineEdit e;
      e.present = {param};
      auto res = edit_grub_cmdline(*text, e);
      if (!res) return Result::failed("/etc/default/grub: " + res.error());
      boot.write("/etc/default/grub", *text, res->text);
      edit = *res;
      grub_text = *text;
    }
    if (edit.changed()) grub_requests = grub_handlers(ctx.facts, grub_text, edit);
    note += "; vfio_pci is built into this kernel, so its ids are on the kernel command line (" + param + ")";
  }

  std::string modules_load = std::string(kHeader);
  for (const auto& m : mods) modules_load += m + "\n";
  if (auto s = load_conf.write(args["modules_load_conf"].get<std::string>(), modules_load); !s)
    return Result::failed(s.error());

  // Loading now: only what is neither loaded nor built in.
  std::vector<std::string> missing;
  if (args["load"].get<bool>())
    for (const auto& m : mods)
      if (!ctx.facts.module_available(m)) missing.push_back(module_name(m));

  Result r = Result::ok("vfio modules " + join(mods, ", ") +
                        (by_address ? "; vfio-pci takes " + join(chosen, ", ") + " by address (" + join(sharing, ", ") +
                                          " has the same id)"
                                    : ids.empty() ? "" : "; vfio-pci ids " + join(ids, ",")));
  r.data = {{"modules", mods}, {"ids", by_address ? std::vector<std::string>{} : ids}};
  if (by_address) r.data["by_address"] = chosen;
  r.expect = {{"modules", mods}, {"vfio_devices", chosen}};
  if (!cmdline_param.empty()) r.expect["cmdline_present"] = json::array({cmdline_param});
  std::vector<std::string> changed = boot.paths();
  for (const auto& p : load_conf.paths()) changed.push_back(p);
  if (!changed.empty()) {
    r.status = Outcome::changed;
    r.msg += "; wrote " + join(changed, ", ");
    r.diff = boot.diff() + load_conf.diff();
    r.data["files"] = changed;
  }
  if (!boot.empty()) {
    r.reboot_required = true;
    r.handlers = grub_requests;
    r.handlers.push_back({"rebuild the initramfs", "initramfs", json::object()});
  }
  if (apply) {
    if (auto s = boot.apply(r.data); !s) return Result::failed(s.error());
    if (auto s = load_conf.apply(r.data); !s) return Result::failed(s.error());
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
    if (s.empty() || s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != std::string::npos)
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

const Registration registration{ModuleDef{
    .name = "vfio",
    .summary = "vfio modules at boot and now, vfio-pci ids and softdeps, modules in the initramfs",
    .schema = {.args = {{.name = "modules", .type = ArgType::list, .check = check_names},
                        {.name = "ids", .type = ArgType::list, .default_value = json::array(), .check = check_ids},
                        {.name = "devices", .type = ArgType::list, .default_value = json::array(), .check = check_devices},
                        gpus_arg(),
                        {.name = "force", .type = ArgType::boolean, .default_value = false},
                        {.name = "softdep", .type = ArgType::boolean, .default_value = true},
                        {.name = "blacklist", .type = ArgType::list, .default_value = json::array(), .check = check_names},
                        {.name = "load", .type = ArgType::boolean, .default_value = true},
                        {.name = "kernel_cmdline", .type = ArgType::str, .default_value = "auto",
                         .choices = {"auto", "always", "never"}},
                        {.name = "initramfs", .type = ArgType::boolean, .default_value = true},
                        {.name = "modprobe_conf", .type = ArgType::str, .default_value = "/etc/modprobe.d/vfio.conf",
                         .check = check_conf_path},
                        {.name = "modules_load_conf", .type = ArgType::str,
                         .default_value = "/etc/modules-load.d/vfio.conf", .check = check_conf_path}}},
    .converge = converge,
    .changes_boot = true,
}};

}  // namespace
}  // namespace gpt
