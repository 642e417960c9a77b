// Editing kernel parameters inside a shell-syntax /etc/default/grub, byte for byte outside the
// edited value.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "agent/declare.hpp"
#include "agent/expected.hpp"
#include "agent/module.hpp"

namespace gpt {

// What a module reads of a grub defaults file at most: real ones are a few KiB, and the editor
// holds about a hundred bytes per byte of a value.
constexpr size_t kMaxGrubFileBytes = 1u << 20;

struct CmdlineEdit {
  std::string key = "GRUB_CMDLINE_LINUX";
  std::vector<std::string> present;  // parameters that must be there; name=value replaces other values
  std::vector<std::string> absent;   // `name` removes any value of name, `name=value` only that one
};

struct CmdlineEditResult {
  std::string text;                                   // the new file content (equal to the input when nothing changes)
  std::vector<std::string> added, removed, replaced;  // replaced: "old with new", for messages
  std::vector<std::string> replaced_old, replaced_new;
  bool changed() const { return !added.empty() || !removed.empty() || !replaced.empty(); }
  std::string summary() const;  // "added a, b; replaced x=1 with x=0; removed q"
};

// Applies `edit` to the value of `edit.key` as the shell would see it: the last assignment counts
// (and earlier ones it references with $KEY), quoting style and everything else kept.
Expected<CmdlineEditResult> edit_grub_cmdline(std::string_view text, const CmdlineEdit& edit);

// The parameters `key` holds after the file is sourced, as far as they can be known without
// running it (references to other variables stay as written, e.g. "$FOO").
Expected<std::vector<std::string>> grub_cmdline_params(std::string_view text, std::string_view key);

// The handlers that make a change of GRUB_CMDLINE_LINUX take effect: grub_config, and on
// BootLoaderSpec hosts (GRUB_ENABLE_BLSCFG=true, grubby installed) grubby for the existing entries.
// A BootLoaderSpec host with GRUB (Fedora, RHEL): grubby installed and GRUB_ENABLE_BLSCFG=true in
// this /etc/default/grub text: the entries hold the command line, grubby edits them.
bool bls_grub(const Facts& facts, std::string_view grub_default);
std::vector<HandlerRequest> grub_handlers(const Facts& facts, std::string_view grub_default,
                                          const CmdlineEditResult& edit);

// What one file says about `key` when it is sourced after others (GRUB's /etc/default/grub.d
// drop-ins): whether it assigns the key, whether its value starts from the value the key had
// before the file ($KEY in its first contributing assignment), the line of its last assignment,
// and its own parameters as grub_cmdline_params gives them.
struct GrubKeyValue {
  bool assigned = false;
  bool inherits = false;
  int line = 0;
  std::vector<std::string> params;
};
Expected<GrubKeyValue> grub_key_value(std::string_view text, std::string_view key);

// The `present`, `absent` and `iommu` arguments that grub_cmdline and kernel_cmdline share: their
// declaration (a module's Args derives from CmdlineArgs), and what they mean on this host. Intel's
// IOMMU is off unless intel_iommu=on; AMD's is on by default and the kernel has no amd_iommu=on, so
// on AMD only the switches that turn it off go (and `note` says so).
struct CmdlineArgs {
  std::vector<std::string> present;
  std::vector<std::string> absent;
  std::string iommu = "none";
};
std::optional<std::string> check_kernel_params(const nlohmann::json& list);
std::optional<std::string> check_present_absent(const CmdlineArgs& args);
template <typename A>
ArgsDecl<A> cmdline_args() {
  return ArgsDecl<A>()
      .arg("present", &CmdlineArgs::present, "kernel parameters the command line must have (name or name=value)",
           {.check = check_kernel_params,
            .example = nlohmann::json::array({"iommu=pt", "vfio-pci.ids=10de:1b80,10de:10f0"})})
      .arg("absent", &CmdlineArgs::absent,
           "kernel parameters it must not have: a name takes out every value of it, name=value only that one",
           {.check = check_kernel_params, .example = nlohmann::json::array({"nomodeset"})})
      .arg("iommu", &CmdlineArgs::iommu,
           "turn the IOMMU on: intel adds intel_iommu=on, amd takes out what turns it off, auto reads the CPU's vendor",
           {.choices = {"auto", "intel", "amd", "none"}});
}
struct WantedCmdline {
  std::vector<std::string> present, absent;
  std::string note;
};
Expected<WantedCmdline> wanted_cmdline(const Facts& facts, const CmdlineArgs& args);

// The boot path kernel_cmdline detects on this host: grub, grubby, kernel-install, proxmox or
// kernelstub (an error naming what was looked for when none).
Expected<std::string> detect_boot_path(const Context& ctx);

// True when a parameter is safe to write into a quoted shell value and a kernel command line.
bool valid_kernel_param(std::string_view param);

}  // namespace gpt
