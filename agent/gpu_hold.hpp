// What holds a GPU on the running host, looked at the way an expert does before unbinding it:
// processes with its device nodes open, a boot framebuffer inside its memory, a reset it lacks,
// and Secure Boot, which decides whether out-of-tree modules (vendor-reset, nvidia) load at all.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/pci.hpp"

namespace gpt {

class Root;
struct Facts;

// /proc/iomem: every range with its nesting depth (two spaces a level). `zeroed` when every range
// reads 00000000-00000000, as the kernel shows them to a process without CAP_SYS_ADMIN.
struct Iomem {
  std::vector<MemRange> ranges;
  bool zeroed = false;
};
Iomem parse_iomem(std::string_view text);

// The memory ranges of a device's sysfs `resource` file ("start end flags" in hex, a line per BAR,
// then the ROM): the non-empty ones with IORESOURCE_MEM set.
std::vector<MemRange> parse_pci_resource(std::string_view text);

// The names /proc/iomem gives a boot framebuffer: efifb, vesafb, simplefb, simpledrm, BOOTFB.
bool boot_framebuffer_name(std::string_view name);
// The boot framebuffer whose range lies inside one of `bars` (a driver's name rather than
// sysfb's BOOTFB when both are there); nullopt when none does.
std::optional<std::string> framebuffer_in(const Iomem& iomem, const std::vector<MemRange>& bars);
// The kernel parameter that keeps the boot framebuffer off the GPUs on this kernel: where sysfb
// registers it (kernel 5.15 on, or simpledrm/simplefb/BOOTFB in iomem) initcall_blacklist=sysfb_init,
// on older kernels video=efifb:off (video=vesafb:off for vesafb).
std::string framebuffer_release_param(const Iomem& iomem, std::string_view kernel_release,
                                      std::string_view framebuffer);

// The AMD family whose reset between VM starts is known to fail (the devices the vendor-reset
// module handles), for vendor 1002; nullopt for any other GPU.
std::optional<std::string> amd_reset_bug(std::string_view vendor, std::string_view device);

// The efivar SecureBoot-<EFI global GUID>: 4 bytes of attributes, then the value (1 on, 0 off).
constexpr const char* kSecureBootVar = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
std::optional<bool> parse_secure_boot(std::string_view efivar);

// One open file of a process that is a device node of interest.
struct OpenNode {
  long pid = 0;
  std::string comm;
  std::string fd;    // /proc/PID/fd/N
  std::string node;  // what the link says: /dev/dri/card0
};
struct ProcScan {
  std::vector<OpenNode> open;
  std::vector<std::string> capped;  // "chrome (pid 4242)": processes whose fds were not all looked at
};
// The open files of every process under the root's /proc whose link text is a GPU device node
// (/dev/dri/..., /dev/nvidia..., /dev/i2c-N): the links are read, never followed. Processes that
// end during the walk and fds that cannot be read are left out; at most `max_fds` of a process are
// looked at.
ProcScan scan_gpu_nodes(const Root& root, size_t max_fds = 4096);

// The device nodes by which a process holds the GPU whose display function is `display`: its DRM
// nodes, its I2C adapters' /dev/i2c-N, and when nvidia drives it /dev/nvidiaN (the minor from
// /proc/driver/nvidia, any N when that is unknown), /dev/nvidiactl and /dev/nvidia-modeset.
struct GpuNodes {
  std::vector<std::string> nodes;
  bool any_nvidia_minor = false;
  bool match(std::string_view node) const;
};
GpuNodes gpu_nodes(const Root& root, const PciDevice& display);

// The expert's look at the host after discover_gpus, from the root's /proc and /sys: each GPU's
// reset, boot framebuffer and the processes holding it, with their verdicts; Secure Boot and what
// could not be looked at as host verdicts.
void expert_checks(const Root& root, Facts& facts);

}  // namespace gpt
