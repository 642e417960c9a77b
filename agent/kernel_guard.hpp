// The kernel-update guard: hooks that the vfio and kernel_cmdline modules install so that a kernel
// installed later cannot silently lose the setup. After update-initramfs builds an initramfs
// (/etc/initramfs/post-update.d/, which runs for a new kernel's too, from dpkg's trigger) the vfio
// hook checks that it holds the vfio modules; after a new kernel's GRUB entry is written
// (/etc/kernel/postinst.d/, after zz-update-grub) the kernel_cmdline hook checks that the entry
// carries the parameters. Where kernels are installed through kernel-install (Fedora, RHEL, hosts
// with systemd-boot), its plugins in /etc/kernel/install.d/ do the same after dracut built the new
// kernel's initramfs and its boot entry was written. Each records what it found in /var/lib/gptagent/kernel-guard/ (for
// `gptagent status`, and for `apply --check`, which reports a recorded gap as drift) and fails,
// loudly, when something is missing.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "agent/expected.hpp"
#include "agent/host.hpp"

namespace gpt {

constexpr const char* kGuardDir = "/var/lib/gptagent/kernel-guard";
constexpr const char* kInitramfsGuard = "/etc/initramfs/post-update.d/gptagent-vfio";
constexpr const char* kCmdlineGuard = "/etc/kernel/postinst.d/zzz-gptagent-cmdline";
// kernel-install's plugins run in the order of their names: after 50-dracut.install (the
// initramfs), 20-grub.install and 90-loaderentry.install (the entry).
constexpr const char* kInstallInitramfsGuard = "/etc/kernel/install.d/95-gptagent-vfio.install";
constexpr const char* kInstallCmdlineGuard = "/etc/kernel/install.d/95-gptagent-cmdline.install";

// mkinitcpio (Arch) runs each executable here after it built an image, a new kernel's too (pacman's
// hook runs mkinitcpio -P): `HOOK KERNEL-IMAGE INITRAMFS-IMAGE [UKI]`, KERNELVERSION in the environment.
constexpr const char* kMkinitcpioGuard = "/etc/initcpio/post/gptagent-vfio";

// The hooks' text, for these modules and parameters.
std::string initramfs_guard_script(const std::vector<std::string>& modules);
std::string mkinitcpio_guard_script(const std::vector<std::string>& modules);
std::string cmdline_guard_script(const std::vector<std::string>& params, const std::string& grub_cfg);
// kernel-install's plugins: `add VERSION ENTRY_DIR IMAGE [INITRD...]` checks; anything else passes.
std::string install_initramfs_guard_script(const std::vector<std::string>& modules);
std::string install_cmdline_guard_script(const std::vector<std::string>& params);
// The loader directories kernel-install and grubby keep BootLoaderSpec entries in, and the entries
// of one with their `options` (Fedora 30-32 entries say `options $kernelopts`, kept in grubenv).
inline const std::array<std::string, 3> kLoaderEntryDirs = {"/boot/loader/entries", "/efi/loader/entries",
                                                            "/boot/efi/loader/entries"};
struct LoaderEntry {
  std::string path;
  std::vector<std::string> options;
};
// The parameters of an entry's `options` lines, all of them, as the boot loader joins them (GRUB
// variables such as $kernelopts left as they are).
std::vector<std::string> entry_options(std::string_view text);
Expected<std::vector<LoaderEntry>> loader_entries(const Root& root, const std::string& dir);
// Whether an entry's file name is a kernel's as kernel-install names them: NAME-VERSION.conf, or
// NAME-VERSION+LEFT[-DONE].conf where boot counting is on.
bool entry_of_kernel(std::string_view file_name, const std::string& kernel);
// The options of a kernel's BootLoaderSpec entry (NAME-VERSION.conf, or NAME-VERSION+TRIES.conf
// where boot counting is on) in the loader directories kernel-install writes to; nullopt when it
// has none.
std::optional<std::vector<std::string>> loader_entry_options(const Root& root, const std::string& kernel);

// One check a hook recorded: kind is "initramfs" (what: the image) or "cmdline" (what: the entry's
// linux line).
struct GuardRecord {
  std::string kernel, kind, what;
  std::vector<std::string> missing;
};
// The records of kernels still installed (/lib/modules/KERNEL exists); a record that does not
// parse is an error naming it.
Expected<std::vector<GuardRecord>> read_guard_records(const Root& root);

}  // namespace gpt
