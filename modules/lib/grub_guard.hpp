// The kernel-update guard's command-line half, for the modules that put kernel parameters where
// new kernels' entries take them from (grub_cmdline, kernel_cmdline): a hook that checks each
// kernel installed from now on gets an entry with the parameters (agent/kernel_guard.hpp).
#pragma once

#include <string>
#include <vector>

#include "agent/module.hpp"

namespace gpt {

// Where kernel packages run /etc/kernel/postinst.d and update-grub writes each new kernel's entry
// (Debian, Ubuntu): writes the hook (a change of `r`, needing no reboot), and a recorded entry that
// lacks `present` is drift, repaired by regenerating grub.cfg (a grub_config handler on `r`).
// Elsewhere, or with nothing present, `r` is left as it is.
//
// One hook serves every task that keeps parameters (grub_cmdline and kernel_cmdline, in one
// playbook or several): it checks the parameters it checked before, but those this task wants
// absent, and this task's present ones, so that tasks with different parameters do not rewrite it
// in turn.
void guard_new_kernels(Context& ctx, const std::vector<std::string>& present, const std::vector<std::string>& absent,
                       bool apply, Result& r);

// Where kernels are installed through kernel-install (Fedora and RHEL with grubby, systemd-boot):
// writes its plugin that checks each new kernel's BootLoaderSpec entry (a change of `r`), and a
// recorded entry that lacks `present` is drift. With `grubby`, the module's own update of every
// entry repairs it; otherwise kernel-install writes that kernel's entry again.
void guard_new_entries(Context& ctx, const std::vector<std::string>& present, const std::vector<std::string>& absent,
                       bool grubby, bool apply, Result& r);

}  // namespace gpt
