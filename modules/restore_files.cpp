// restore_files: every file the agent changed, put back as it was before the agent's first change
// of it (agent/preimage.hpp): its content, owner and mode, or gone when it did not exist. What
// `gptagent revert` runs; a change of what the host boots (the GRUB files, modprobe.d, the
// initramfs configuration, /etc/kernel/cmdline) regenerates grub.cfg and the initramfs and needs a
// reboot, so a revert is booted as a trial like any boot change.
#include <unistd.h>

#include <algorithm>
#include <array>

#include "agent/changes.hpp"
#include "agent/declare.hpp"
#include "agent/preimage.hpp"
#include "agent/text.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

bool under(const std::string& path, std::string_view dir) { return path.rfind(dir, 0) == 0; }

bool grub_file(const std::string& p) { return p == "/etc/default/grub" || under(p, "/etc/default/grub.d/"); }
bool initramfs_file(const std::string& p) {
  return under(p, "/etc/modprobe.d/") || under(p, "/etc/initramfs-tools/") || under(p, "/etc/dracut.conf.d/") ||
         p == "/etc/mkinitcpio.conf" || under(p, "/etc/modules-load.d/");
}

struct Args {};

Expected<Result> converge(Context& ctx, const Args&, bool apply) {
  auto pre = load_preimages(ctx.root);
  if (!pre) return Result::failed(pre.error());
  FileChanges files(ctx.root);
  std::vector<std::string> restored, removed, dirs;
  for (const auto& p : *pre) {
    auto now = read_file_if_exists(ctx.root, p.path);
    if (!now) return Result::failed(now.error());
    if (p.content) {
      const size_t before = files.paths().size();
      if (auto s = files.write(p.path, *p.content, FileAttrs{.uid = p.uid, .gid = p.gid, .mode = p.mode}); !s)
        return Result::failed(s.error());
      if (files.paths().size() > before) restored.push_back(p.path);
    } else {
      if (*now) {
        files.remove(p.path, **now);
        removed.push_back(p.path);
      }
      for (const auto& d : p.created_dirs)
        if (path_exists(ctx.root, d) && std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.push_back(d);
    }
  }
  // The directories the agent made go once empty, deepest first: one that holds anything else (a
  // backup, the user's file) stays.
  std::sort(dirs.begin(), dirs.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  const auto remove_dirs = [&] {
    std::vector<std::string> gone;
    for (const auto& d : dirs)
      if (auto real = ctx.root.resolve(d); real && ::rmdir(real->c_str()) == 0) gone.push_back(d);
    return gone;
  };
  Result r = Result::ok(pre->empty() ? std::string("the agent has changed no file on this host")
                                     : "the " + std::to_string(pre->size()) +
                                           " files the agent changed are as they were before it");
  if (files.empty()) {
    if (apply && !dirs.empty())
      if (auto gone = remove_dirs(); !gone.empty()) {
        r.status = Outcome::changed;
        r.msg = "removed the empty directories the agent made: " + join(gone, ", ");
      }
    return r;
  }
  r.status = Outcome::changed;
  r.msg = (restored.empty() ? std::string() : "put back " + join(restored, ", ")) +
          (restored.empty() || removed.empty() ? "" : "; ") +
          (removed.empty() ? std::string() : "removed what the agent created: " + join(removed, ", "));
  r.diff = files.diff();
  const auto paths = files.paths();
  const bool grub = std::any_of(paths.begin(), paths.end(), grub_file);
  const bool initramfs = std::any_of(paths.begin(), paths.end(), initramfs_file);
  if (grub) r.handlers.push_back(regenerate_grub_config());
  if (initramfs) r.handlers.push_back(rebuild_initramfs());
  const bool entry = std::find(paths.begin(), paths.end(), "/etc/kernel/cmdline") != paths.end();
  // kernel-install hosts make the entry from the file (Proxmox's own tool is left to the user).
  if (entry && find_program(ctx.root, "kernel-install") && !find_program(ctx.root, "proxmox-boot-tool"))
    r.handlers.push_back(write_kernel_entry());
  r.reboot_required = grub || initramfs || entry;
  if (apply) {
    if (auto s = files.apply(r.data); !s) return Result::failed(s.error());
    if (auto gone = remove_dirs(); !gone.empty())
      r.msg += "; removed the empty directories the agent made: " + join(gone, ", ");
  }
  return r;
}

// What `gptagent doc restore_files` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Puts every file the agent changed back as it was before the agent's first change of it: its content, "
          "owner and mode, or gone when it did not exist; the directories the agent made go once empty. What "
          "gptagent revert runs.\n\n"
          "Putting back what the host boots from is a boot change: a GRUB file (/etc/default/grub and its grub.d) "
          "notifies grub_config; a file of /etc/modprobe.d, /etc/modules-load.d or the initramfs tools' "
          "configuration notifies initramfs; /etc/kernel/cmdline notifies kernel_install where kernel-install makes "
          "the "
          "entries (not on Proxmox, whose proxmox-boot-tool refresh is left to the user). These need a reboot, so a "
          "revert is booted as a trial like any boot change.",
      .examples = {"# Every file the agent changed on this host back as it was (what gptagent revert runs)\n"
                   "- name: the host as it was before the agent\n"
                   "  restore_files: {}\n"},
      .notifies = {"grub_config", "initramfs", "kernel_install"},
      .reboot = true,
  };
}

ModuleDef definition() {
  auto def = declare_module(
      "restore_files",
      "put every file the agent changed back as it was before its first change (what gptagent revert runs)",
      ArgsDecl<Args>(), converge);
  return def;
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt
