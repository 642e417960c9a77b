#include "tests/support/package_managers.hpp"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace gpt::test {
namespace {

namespace fs = std::filesystem;
using Lines = std::vector<std::string>;

// The words of argv after `verb`.
Lines after(const Command& cmd, const std::string& verb) {
  auto it = std::find(cmd.argv.begin(), cmd.argv.end(), verb);
  return it == cmd.argv.end() ? Lines{} : Lines(it + 1, cmd.argv.end());
}
bool has(const Command& cmd, const std::string& word) {
  return std::find(cmd.argv.begin(), cmd.argv.end(), word) != cmd.argv.end();
}

// The unit a package brings that a playbook's `service` task starts: libvirt's daemon, the
// monolithic libvirtd or Fedora's modular virtqemud, as each distribution's package ships it.
const std::map<std::string, std::string> kUnitOf = {
    {"libvirt-daemon-system", "libvirtd.service"},  // Debian, Ubuntu
    {"libvirt", "libvirtd.service"},                // Arch
    {"libvirt-daemon-kvm", "virtqemud.service"},    // Fedora, RHEL
    {"libvirt-daemon-qemu", "libvirtd.service"},    // openSUSE
};

}  // namespace

bool PackageManagers::handles(const Command& cmd) {
  if (cmd.argv.empty()) return false;
  const std::string& tool = cmd.argv[0];
  if (tool == "env") return has(cmd, "apt-get") || has(cmd, "zypper");
  return tool == "apt-get" || tool == "pacman" || tool == "dnf" || tool == "zypper" || tool == "rpm";
}

void PackageManagers::brought_by(const std::string& package) {
  auto unit = kUnitOf.find(package);
  if (unit == kUnitOf.end()) return;
  write(root_ + "/usr/lib/systemd/system/" + unit->second,
        "[Unit]\nDescription=libvirt daemon (" + package + ")\n\n[Service]\nType=notify\nExecStart=/usr/sbin/" +
            unit->second.substr(0, unit->second.find('.')) + "\n\n[Install]\nWantedBy=multi-user.target\n");
}

// apt-get and dpkg as far as the status file shows them: an install writes an installed stanza
// for each package and its dependencies (`depends`), `name-` and a removal take stanzas out; -s
// prints what apt's simulation would, without touching anything.
ExecResult PackageManagers::apt(const Command& cmd) {
  if (has(cmd, "update")) return {0, false, "Reading package lists...\n", ""};
  Lines add, remove;
  for (const auto& w : has(cmd, "install") ? after(cmd, "install") : Lines{}) {
    if (w.back() == '-') {
      remove.push_back(w.substr(0, w.size() - 1));
      continue;
    }
    add.push_back(w);
    for (const auto& dep : depends[w]) add.push_back(dep);
  }
  for (const auto& w : after(cmd, "remove")) remove.push_back(w);
  if (has(cmd, "-s")) {
    std::string out;
    for (const auto& p : add) out += "Inst " + p + " (1.0 fake [all])\n";
    for (const auto& p : remove) out += "Remv " + p + " [1.0]\n";
    return {0, false, out, ""};
  }
  const std::string status = root_ + "/var/lib/dpkg/status";
  std::string text = slurp(status), kept;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find("\n\n", start);
    end = end == std::string::npos ? text.size() : end + 2;
    const std::string stanza = text.substr(start, end - start);
    const bool gone = std::any_of(remove.begin(), remove.end(),
                                  [&](const std::string& p) { return stanza.starts_with("Package: " + p + "\n"); });
    if (!gone) kept += stanza;
    start = end;
  }
  for (const auto& p : add) {
    kept += "Package: " + p + "\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\n\n";
    brought_by(p);
  }
  write(status, kept);
  return {0, false, "", ""};
}

// pacman's side of a transaction on the tree's local database: -S writes a desc per package, -R
// removes its directory.
void PackageManagers::pacman(const Command& cmd) {
  const std::string local = root_ + "/var/lib/pacman/local/";
  for (const auto& p : after(cmd, "--needed")) {
    write(local + p + "-1.0-1/desc", "%NAME%\n" + p + "\n\n%VERSION%\n1.0-1\n\n");
    brought_by(p);
  }
  if (has(cmd, "-R"))
    for (const auto& p : after(cmd, "--noconfirm"))
      for (const auto& e : fs::directory_iterator(local))
        if (e.path().filename().string().rfind(p + "-", 0) == 0) fs::remove_all(e.path());
}

ExecResult PackageManagers::run(const Command& cmd) {
  commands.push_back(cmd.display());
  if (fail) return *fail;
  if (cmd.argv[0] == "rpm") return real_.run(cmd);
  if (has(cmd, "apt-get")) return apt(cmd);
  if (cmd.argv[0] == "pacman") pacman(cmd);
  // dnf and zypper: rpm --justdb installs and removals of packages built here.
  Lines install, remove;
  if (cmd.argv[0] == "dnf")
    (has(cmd, "install") ? install : remove) = after(cmd, has(cmd, "install") ? "install" : "remove");
  if (has(cmd, "zypper"))
    for (const auto& w : has(cmd, "install") ? after(cmd, "--auto-agree-with-licenses") : after(cmd, "remove"))
      (w[0] == '!' || has(cmd, "remove") ? remove : install).push_back(w[0] == '!' ? w.substr(1) : w);
  for (const auto& p : install) rpm_install(p);
  for (const auto& p : remove) rpm_erase(p);
  return {0, false, "", ""};
}

ProcResult PackageManagers::rpm(Lines args) const {
  args.insert(args.begin(), {"--root", root_, "--dbpath", "/var/lib/rpm"});
  return run_program("rpm", args);
}

void PackageManagers::rpm_install(const std::string& name, const Lines& provides) {
  if (!build_) build_.emplace();
  const std::string top = build_->path(), spec = top + "/" + name + ".spec";
  std::string text =
      "Name: " + name + "\nVersion: 1.0\nRelease: 1\nSummary: gptagent test\nLicense: MIT\nBuildArch: noarch\n";
  for (const auto& p : provides) text += "Provides: " + p + "\n";
  write(spec, text + "%description\ngptagent test\n%files\n");
  auto built = run_program("rpmbuild", {"--define", "_topdir " + top, "-bb", spec});
  if (built.exit_code != 0) throw std::runtime_error("rpmbuild " + name + ": " + built.err);
  auto done = rpm({"-i", "--nodeps", "--justdb", top + "/RPMS/noarch/" + name + "-1.0-1.noarch.rpm"});
  if (done.exit_code != 0) throw std::runtime_error("rpm -i --justdb " + name + ": " + done.err);
  brought_by(name);
}

void PackageManagers::rpm_erase(const std::string& name) {
  auto done = rpm({"-e", "--nodeps", "--justdb", name});
  if (done.exit_code != 0) throw std::runtime_error("rpm -e --justdb " + name + ": " + done.err);
}

}  // namespace gpt::test
