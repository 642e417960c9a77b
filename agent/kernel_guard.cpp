#include "agent/kernel_guard.hpp"

#include <algorithm>
#include <cctype>

#include "agent/exec.hpp"
#include "agent/facts.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

std::string quoted_words(const std::vector<std::string>& items) {
  std::vector<std::string> q;
  for (const auto& i : items) q.push_back(shell_quote(i));
  return join(q, " ");
}

// What both hooks end with: the record (key=value lines, written whole), then a loud failure when
// something is missing. $1 is the kernel's version in both.
std::string record_and_report(const std::string& kind, const std::string& suffix, const std::string& what_var,
                              const std::string& consequence) {
  return "dir=\"$root\"" + std::string(kGuardDir) +
         "\n"
         "mkdir -p \"$dir\" && chmod 700 \"$dir\"\n"
         "printf 'kernel=%s\\nkind=" +
         kind + "\\nwhat=%s\\nmissing=%s\\n' \"$version\" \"$" + what_var + "\" \"${missing# }\" >\"$dir/$version" +
         suffix + ".new\" && mv -f \"$dir/$version" + suffix + ".new\" \"$dir/$version" + suffix +
         "\"\n"
         "[ -z \"$missing\" ] && exit 0\n"
         "msg=\"gptagent: kernel $version: " +
         consequence +
         "\"\n"
         "echo \"$msg\" >&2\n"
         "logger -t gptagent \"$msg\" 2>/dev/null || true\n"
         "exit 1\n";
}

// The modules of `modules` that neither the listing of $image nor the kernel's modules.builtin
// has, into $missing.
std::string missing_modules(const std::vector<std::string>& modules) {
  return "missing=\"\"\n"
         "for m in " +
         quoted_words(modules) +
         "; do\n"
         "  pattern=$(printf '%s' \"$m\" | sed 's/_/[-_]/g')\n"
         "  printf '%s\\n' \"$listing\" | grep -Eq \"/$pattern\\.ko(\\.(xz|zst|gz))?\\$\" && continue\n"
         "  grep -Eq \"/$pattern\\.ko\\$\" \"$root/lib/modules/$version/modules.builtin\" 2>/dev/null && continue\n"
         "  missing=\"$missing $m\"\n"
         "done\n";
}

// The parameters of `params` that $entry lacks, into $missing.
std::string missing_params(const std::vector<std::string>& params) {
  return "missing=\"\"\n"
         "for p in " +
         quoted_words(params) +
         "; do\n"
         "  case \" $entry \" in *\" $p \"*) ;; *) missing=\"$missing $p\" ;; esac\n"
         "done\n";
}

const char* const kInstallPreamble =
    "root=\"${GPTAGENT_GUARD_ROOT:-}\"  # tests: a tree standing in for /\n"
    "[ \"$1\" = add ] || exit 0\n"
    "version=\"$2\"\n";

}  // namespace

std::string initramfs_guard_script(const std::vector<std::string>& modules) {
  return "#!/bin/sh\n"
         "# Written by gptagent (vfio): after update-initramfs builds an initramfs, a new kernel's too, checks\n"
         "# that it holds the vfio modules vfio-pci needs to claim the GPU at boot, records the result for\n"
         "# gptagent status and apply --check, and fails loudly when they are missing. An edit here is undone\n"
         "# by gptagent's next run.\n"
         "root=\"${GPTAGENT_GUARD_ROOT:-}\"  # tests: a tree standing in for /\n"
         "version=\"$1\"\n"
         "image=\"$2\"\n"
         "listing=$(lsinitramfs \"$image\" 2>/dev/null)\n" +
         missing_modules(modules) +
         record_and_report(
             "initramfs", "", "image",
             "$image lacks$missing: vfio-pci will not claim the GPU when this kernel boots; run gptagent apply");
}

std::string mkinitcpio_guard_script(const std::vector<std::string>& modules) {
  return "#!/bin/sh\n"
         "# Written by gptagent (vfio): after mkinitcpio builds an image, a new kernel's too, checks that it\n"
         "# holds the vfio modules vfio-pci needs to claim the GPU at boot, records the result for gptagent\n"
         "# status and apply --check, and fails loudly when they are missing. An edit here is undone by\n"
         "# gptagent's next run.\n"
         "root=\"${GPTAGENT_GUARD_ROOT:-}\"  # tests: a tree standing in for /\n"
         "image=\"$2\"\n"
         "[ -n \"$image\" ] || exit 0  # a unified kernel image alone: no initramfs to list\n"
         "listing=$(lsinitcpio \"$image\" 2>/dev/null)\n"
         "# The kernel the image is for: mkinitcpio's KERNELVERSION, else the modules' directory in it.\n"
         "version=\"${KERNELVERSION:-}\"\n"
         "[ -n \"$version\" ] && [ \"$version\" != none ] ||\n"
         "  version=$(printf '%s\\n' \"$listing\" | sed -n 's|^\\(usr/\\)\\{0,1\\}lib/modules/\\([^/]*\\)/.*|\\2|p' | "
         "head -n 1)\n"
         "case \"$version\" in ''|*/*|.*) version=unknown ;; esac\n" +
         missing_modules(modules) +
         record_and_report(
             "initramfs", "", "image",
             "$image lacks$missing: vfio-pci will not claim the GPU when this kernel boots; run gptagent apply");
}

std::string cmdline_guard_script(const std::vector<std::string>& params, const std::string& grub_cfg) {
  return "#!/bin/sh\n"
         "# Written by gptagent (kernel_cmdline): after a kernel is installed and update-grub wrote its entry\n"
         "# (this file sorts after zz-update-grub), checks that the entry carries the parameters the playbook\n"
         "# wants, records the result for gptagent status and apply --check, and fails loudly when they are\n"
         "# missing. An edit here is undone by gptagent's next run.\n"
         "root=\"${GPTAGENT_GUARD_ROOT:-}\"  # tests: a tree standing in for /\n"
         "version=\"$1\"\n"
         "quoted=$(printf '%s' \"$version\" | sed 's/[.+]/\\\\&/g')\n"
         "entry=$(grep -E \"^[[:space:]]*linux[[:space:]]+[^[:space:]]*vmlinuz-$quoted[[:space:]]\" \"$root" +
         grub_cfg + "\"" + " 2>/dev/null | head -n 1)\n" + missing_params(params) +
         record_and_report("cmdline", ".cmdline", "entry",
                           "its GRUB entry in " + grub_cfg + " lacks$missing; run gptagent apply");
}

std::string install_initramfs_guard_script(const std::vector<std::string>& modules) {
  return std::string("#!/bin/sh\n") +
         "# Written by gptagent (vfio): kernel-install runs it after dracut built a new kernel's initramfs\n"
         "# (50-dracut.install); it checks that the initramfs holds the vfio modules vfio-pci needs to claim\n"
         "# the GPU at boot, records the result for gptagent status and apply --check, and fails loudly when\n"
         "# they are missing. An edit here is undone by gptagent's next run.\n" +
         kInstallPreamble +
         // Where dracut put it: the staging area (systemd 254 on), the entry's directory
         // (systemd-boot's layout), /boot/initramfs-VERSION.img (Fedora's, with GRUB).
         "image=\"\"\n"
         "for candidate in \"${KERNEL_INSTALL_STAGING_AREA:+$KERNEL_INSTALL_STAGING_AREA/initrd}\" \"${3:+$3/initrd}\" "
         "\"/boot/initramfs-$version.img\"; do\n"
         "  [ -n \"$candidate\" ] && [ -f \"$root$candidate\" ] && { image=\"$candidate\"; break; }\n"
         "done\n"
         "listing=\"\"\n"
         "if [ -n \"$image\" ]; then\n"
         "  if command -v lsinitrd >/dev/null 2>&1; then listing=$(lsinitrd \"$root$image\" 2>/dev/null)\n"
         "  else listing=$(lsinitramfs \"$root$image\" 2>/dev/null); fi\n"
         "else\n"
         "  image=\"(no initramfs found)\"\n"
         "fi\n" +
         missing_modules(modules) +
         record_and_report(
             "initramfs", "", "image",
             "$image lacks$missing: vfio-pci will not claim the GPU when this kernel boots; run gptagent apply");
}

std::string install_cmdline_guard_script(const std::vector<std::string>& params) {
  return std::string("#!/bin/sh\n") +
         "# Written by gptagent (kernel_cmdline): kernel-install runs it after a new kernel's boot entry was\n"
         "# written (20-grub.install, 90-loaderentry.install); it checks that the entry carries the parameters\n"
         "# the playbook wants, records the result for gptagent status and apply --check, and fails loudly\n"
         "# when they are missing. An edit here is undone by gptagent's next run.\n" +
         kInstallPreamble +
         "entry=\"\"\n"
         "for dir in \"${KERNEL_INSTALL_BOOT_ROOT:-}\" /boot /efi /boot/efi; do\n"
         "  [ -n \"$dir\" ] || continue\n"
         "  for f in \"$root$dir\"/loader/entries/*-\"$version\".conf "
         "\"$root$dir\"/loader/entries/*-\"$version\"+*.conf; do\n"
         "    [ -f \"$f\" ] || continue\n"
         "    entry=$(sed -n 's/^options[[:space:]][[:space:]]*//p' \"$f\" | head -n 1)\n"
         "    break 2\n"
         "  done\n"
         "done\n" +
         missing_params(params) +
         record_and_report("cmdline", ".cmdline", "entry",
                           "its boot entry (loader/entries/*-$version.conf) lacks$missing; run gptagent apply");
}

std::vector<std::string> entry_options(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view line : lines(text)) {
    line = trim(line);
    if (line.substr(0, 7) != "options" || (line.size() > 7 && line[7] != ' ' && line[7] != '\t')) continue;
    for (auto& p : parse_cmdline(line.substr(7))) out.push_back(std::move(p));
  }
  return out;
}

Expected<std::vector<LoaderEntry>> loader_entries(const Root& root, const std::string& dir) {
  std::vector<LoaderEntry> out;
  auto names = list_dir(root, dir);
  if (!names) return Error{names.error()};
  std::optional<std::string> kernelopts;
  for (const auto& n : *names) {
    if (n.size() < 5 || n.substr(n.size() - 5) != ".conf") continue;
    LoaderEntry e{dir + "/" + n, {}};
    auto text = read_file(root, e.path);
    if (!text) return Error{text.error()};
    for (auto& p : entry_options(*text)) {
      if (p != "$kernelopts") {
        e.options.push_back(std::move(p));
        continue;
      }
      if (!kernelopts) {
        kernelopts = "";
        if (auto env = read_file_if_exists(root, "/boot/grub2/grubenv"); env && *env)
          for (std::string_view l : lines(**env))
            if (l.substr(0, 11) == "kernelopts=") kernelopts = std::string(l.substr(11));
      }
      for (auto& k : parse_cmdline(*kernelopts)) e.options.push_back(k);
    }
    out.push_back(std::move(e));
  }
  return out;
}

bool entry_of_kernel(std::string_view name, const std::string& kernel) {
  if (name.size() < 5 || name.substr(name.size() - 5) != ".conf") return false;
  const std::string_view stem = name.substr(0, name.size() - 5);
  const auto plus = stem.rfind('+');
  const std::string_view base = plus == std::string_view::npos ? stem : stem.substr(0, plus);
  return base.size() > kernel.size() + 1 && base.substr(base.size() - kernel.size() - 1) == "-" + kernel;
}

std::optional<std::vector<std::string>> loader_entry_options(const Root& root, const std::string& kernel) {
  for (const auto& dir : kLoaderEntryDirs) {
    auto entries = loader_entries(root, dir);
    if (!entries) continue;
    for (auto& e : *entries)
      if (entry_of_kernel(std::string_view(e.path).substr(dir.size() + 1), kernel)) return std::move(e.options);
  }
  return std::nullopt;
}

Expected<std::vector<GuardRecord>> read_guard_records(const Root& root) {
  std::vector<GuardRecord> out;
  auto names = list_dir(root, kGuardDir);
  if (!names) return Error{names.error()};
  for (const auto& n : *names) {
    if (n.size() > 4 && n.substr(n.size() - 4) == ".new") continue;
    const std::string path = std::string(kGuardDir) + "/" + n;
    auto text = read_file(root, path, 1u << 16);
    if (!text) return Error{text.error()};
    GuardRecord r;
    for (std::string_view line : lines(*text)) {
      const auto eq = line.find('=');
      if (eq == std::string_view::npos) continue;
      const std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
      if (key == "kernel")
        r.kernel = value;
      else if (key == "kind")
        r.kind = value;
      else if (key == "what")
        r.what = value;
      else if (key == "missing")
        r.missing = words(value);
    }
    const bool sane = !r.kernel.empty() && r.kernel.find('/') == std::string::npos && r.kernel != "." &&
                      r.kernel != ".." && (r.kind == "initramfs" || r.kind == "cmdline");
    if (!sane) return Error{path + ": not a record the kernel guard writes"};
    if (path_exists(root, "/lib/modules/" + r.kernel) || path_exists(root, "/usr/lib/modules/" + r.kernel))
      out.push_back(std::move(r));
  }
  return out;
}

}  // namespace gpt
