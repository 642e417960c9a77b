// The kernel-update guard's GRUB half, for the modules that put kernel parameters in
// /etc/default/grub (grub_cmdline, kernel_cmdline on a GRUB host): a hook that checks each kernel
// installed from now on gets an entry with the parameters (agent/kernel_guard.hpp).
#pragma once

#include <string>
#include <vector>

#include "agent/module.hpp"

namespace gpt {

// Where kernel packages run /etc/kernel/postinst.d and update-grub writes each new kernel's entry
// (Debian, Ubuntu): writes the hook (a change of `r`, needing no reboot), and a recorded entry that
// lacks `present` is drift, repaired by regenerating grub.cfg (a grub_config handler on `r`).
// Elsewhere, or with nothing present, `r` is left as it is.
void guard_new_kernels(Context& ctx, const std::vector<std::string>& present, bool apply, Result& r);

}  // namespace gpt
