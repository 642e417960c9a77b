// Trial boots: a stage's boot change (kernel command line, initramfs) is booted once, as a
// one-shot entry, and becomes the host's default only after that boot passed the stage's
// post-reboot checks. A trial that does not come up, or whose checks fail, leaves the default
// entry as it was: the next reset boots it.
//
// GRUB (Debian, Ubuntu, Arch; Fedora without BootLoaderSpec): the stage's grub.cfg and initramfs
// regeneration is deferred; the distribution's own grub-mkconfig writes a configuration to a file
// of the agent's, whose first entry (the one GRUB_DEFAULT=0 boots) is copied into a marked block of
// custom.cfg (which grub.cfg sources at boot) as `gptagent-trial`, with panic=10 and the marker
// gptagent.trial=ID, and booting the trial's own initramfs when the stage changed it; grub-reboot
// arms it for one boot (GRUB clears next_entry before it boots the entry).
//
// BootLoaderSpec with GRUB (Fedora, RHEL: grubby, GRUB_ENABLE_BLSCFG=true, GRUB_DEFAULT=saved):
// the stage's grubby updates of every entry and its initramfs rebuild are deferred; the entry
// saved_entry names (the one the host boots) is copied to /boot/loader/entries/gptagent-trial.conf
// with the options the deferred grubby requests would give it, panic=10 and the marker, and the
// trial's own initramfs; grub2-reboot arms it for one boot, as above.
//
// systemd-boot with kernel-install (/etc/kernel/cmdline): the stage's `kernel-install add` and its
// initramfs rebuild are deferred; the running kernel's entry (the one `kernel-install add` writes
// again at the commit) is copied beside it as gptagent-trial+1.conf, a boot-counted entry with one
// try, with the options kernel-install would write from the stage's /etc/kernel/cmdline, panic=10,
// the marker, and the trial's own initramfs in the kernel's directory; `bootctl set-oneshot` arms
// it. systemd-boot removes the one-shot variable as it reads it and renames the entry to +0-1 as it
// boots it: a reset boots the default entry again, and the tried entry is never chosen by itself.
// Blessing waits for the stage's checks (kTrialCheckUnit); the commit writes the real entry and the trial's goes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/expected.hpp"
#include "agent/module.hpp"
#include "agent/state.hpp"

namespace gpt {

constexpr const char* kTrialEntry = "gptagent-trial";
constexpr const char* kTrialBlsEntry = "/boot/loader/entries/gptagent-trial.conf";
constexpr const char* kTrialCountedEntry = "gptagent-trial+1.conf";  // systemd-boot: its ID for set-oneshot
constexpr const char* kSystemdBoot = "systemd-boot";
constexpr const char* kLoaderVendorGuid = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";  // systemd-boot's EFI variables
constexpr const char* kTrialResultPath = "/var/lib/gptagent/trial.json";

// Whether a trial can be booted on this host: its boot path is GRUB's own configuration, grub.cfg
// sources custom.cfg and honours next_entry, GRUB_DEFAULT boots the first entry, and GRUB can
// write its environment block where it lives (not on btrfs, ZFS, LVM, RAID: `grub-probe` tells).
// The error says why not and what to do instead.
Status trial_possible(Context& ctx);

// Arms the trial for a stage that stopped for a reboot: `deferred` are the regenerations the stage
// did not run (they run at the commit). On failure nothing of the trial is left armed.
Expected<TrialRecord> prepare_trial(Context& ctx, const std::string& stage,
                                    const std::vector<HandlerRequest>& deferred);

// The running boot is the trial (its marker is on /proc/cmdline).
bool booted_trial(const TrialRecord& trial, const Facts& facts);

// Removes what the trial added: its entry from custom.cfg (the file itself when the trial made
// it), its initramfs, a next_entry still armed. Idempotent.
Status remove_trial(Context& ctx, const TrialRecord& trial);

// Puts the stage's files back as they were before it (from their backups; files it created go).
// Returns what was put back, for the report.
Expected<std::vector<std::string>> restore_stage_files(Context& ctx, const TrialRecord& trial);

// Both of the above: what an armed or failed trial leaves is taken back (changed, saying what was
// put back; failed, saying what could not be).
Result undo_trial(Context& ctx, const TrialRecord& trial);

// gptagent-resume.service, enabled: on the boot after a reboot the installed agent's `gptagent
// resume` finishes the run (checks, the trial's commit, the stages after it), so that a host that
// rebooted itself needs nobody to run it again. Idle when no run is recorded. Without an installed
// agent root may run (agent/installed.hpp) it is not installed, and the message says so.
Result install_resume_unit(Context& ctx);
// Once the run it finished left nothing to finish, the unit goes (it and its multi-user.target.wants
// link, as the agent's own files: a later --reboot run installs it again): a host that reverted, or
// converged, keeps nothing of the agent's machinery. The message says what was removed; nullopt
// when there was nothing.
Expected<std::optional<std::string>> retire_resume_unit(const Root& root);
// systemd-boot: systemd-bless-boot marks the booted counted entry good once boot-complete.target is
// reached. For a trial that must wait for the stage's checks: this unit, enabled as the trial is
// armed (where an agent root may run is installed), runs `gptagent resume --check` in the trial boot
// only, ordered before boot-complete.target, which requires it; a failed check fails the target and
// the entry is marked bad. It goes with the trial.
constexpr const char* kTrialCheckUnit = "/etc/systemd/system/gptagent-trial-check.service";
constexpr const char* kTrialCheckLink =
    "/etc/systemd/system/boot-complete.target.requires/gptagent-trial-check.service";
constexpr const char* kResumeUnit = "/etc/systemd/system/gptagent-resume.service";
constexpr const char* kResumeWantsLink = "/etc/systemd/system/multi-user.target.wants/gptagent-resume.service";

// The last trial's outcome, for `gptagent status`.
struct TrialResult {
  std::string stage, outcome, at;  // outcome: committed, failed
  std::vector<std::string> diagnosis;
  nlohmann::json to_json() const;
};
Status save_trial_result(const Root& root, const TrialResult& r);
Expected<std::optional<TrialResult>> load_trial_result(const Root& root);

// The first top-level menuentry of a grub.cfg, as lines from `menuentry` to its closing brace.
Expected<std::vector<std::string>> first_grub_entry(std::string_view grub_cfg);

}  // namespace gpt
