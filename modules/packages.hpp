// packages: what the distribution's package database says is installed, read as pure functions
// of its text (dpkg's status file, pacman's local desc files, rpm's query output), the package
// manager of an os-release, and the named sets a playbook may ask for.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/facts.hpp"

namespace gpt {

enum class PackageManager { apt, dnf, pacman, zypper };
std::string_view package_manager_name(PackageManager m);
// apt on Debian and Ubuntu, dnf on Fedora and RHEL, pacman on Arch, zypper on openSUSE and SLES:
// from ID, then ID_LIKE. nullopt when none of them is known.
std::optional<PackageManager> package_manager_for(const OsRelease& os);

// One installed package: its name, architecture ("" when the database has none) and the names it
// provides (versions left out).
struct InstalledPackage {
  std::string name;
  std::string arch;
  std::vector<std::string> provides;
};

// dpkg's /var/lib/dpkg/status (and the journal files in /var/lib/dpkg/updates, in the same
// format): the packages whose state counts as installed ("installed", "triggers-awaited",
// "triggers-pending"). Half-installed, unpacked, half-configured and config-files entries are not:
// apt would install those again.
struct DpkgEntry {
  std::string name;
  std::string arch;
  std::string state;  // the third word of Status:
  std::vector<std::string> provides;
};
std::vector<DpkgEntry> parse_dpkg_status(std::string_view text);
bool dpkg_state_installed(std::string_view state);

// One pacman local database entry (/var/lib/pacman/local/NAME-VERSION/desc); nullopt without %NAME%.
std::optional<InstalledPackage> parse_pacman_desc(std::string_view text);

// rpm's answer to the query the module makes (kRpmQueryFormat: name, arch and provides per line).
extern const char* const kRpmQueryFormat;
std::vector<InstalledPackage> parse_rpm_query(std::string_view text);

// The installed packages, and whether a request ("name" or "name:arch") is satisfied: an installed
// package of that name (and architecture; "all"/"noarch"/"any" packages fit any), or, for a name
// without an architecture, one that provides it — as apt, dnf, zypper and pacman take an installed
// provider of a virtual name.
class PackageDb {
 public:
  explicit PackageDb(std::vector<InstalledPackage> pkgs) : pkgs_(std::move(pkgs)) {}
  // The installed package that satisfies the request (its own name, or its provider's), or nullopt.
  std::optional<std::string> satisfied_by(std::string_view request) const;
  // Installed under this very name (and architecture): what a removal takes out.
  bool has(std::string_view request) const;
  std::vector<std::string> names() const;  // "name" or "name:arch", sorted, for before/after
  const std::vector<InstalledPackage>& packages() const { return pkgs_; }

 private:
  std::vector<InstalledPackage> pkgs_;
};

// What `apt-get -s` would do: "Inst NAME (VERSION ...)" installs, "Inst NAME [OLD] (NEW ...)"
// upgrades, "Remv NAME [VERSION]" removes (configure lines left out).
struct AptSimulation {
  std::vector<std::string> install;
  std::vector<std::string> upgrade;
  std::vector<std::string> remove;
};
AptSimulation parse_apt_simulation(std::string_view text);

// Why a requested name is not a plain package name (versions like foo=1.2 or foo>=1 are refused);
// nullopt when it is one. `name:arch` is allowed.
std::optional<std::string> bad_package_name(std::string_view name);

// The named sets: "virtualization" (QEMU for x86, libvirt daemon and client, OVMF, qemu-img) and
// "tpm" (swtpm) with the distribution's package names.
bool is_package_set(std::string_view name);
std::vector<std::string> package_set(PackageManager m, std::string_view set);

}  // namespace gpt
