// The package managers of a host tree, stood in at the host boundary: apt-get, pacman, dnf and
// zypper change the tree's own package database as the real tools would (dpkg's status file,
// pacman's local database, rpm's database through the real rpm), and an install puts in place the
// files later tasks look for (libvirt's daemon units). rpm's queries run for real.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/exec.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt::test {

class PackageManagers final : public gpt::Exec {
 public:
  explicit PackageManagers(std::string root) : root_(std::move(root)) {}
  // Whether `cmd` is a package manager's (apt-get, also through env; pacman, dnf, zypper, rpm).
  static bool handles(const Command& cmd);
  // Records `cmd`, then answers it as the package manager would, changing the tree's database.
  ExecResult run(const Command& cmd) override;

  std::map<std::string, std::vector<std::string>> depends;  // apt: what an install brings too
  std::optional<ExecResult> fail;                           // when set, every command's answer
  std::vector<std::string> commands;

  // rpm's database in the tree (/var/lib/rpm): created, and NAME (noarch, with `provides`) built
  // with rpmbuild and recorded in it (--justdb) as its installation would; erase takes it out.
  ProcResult rpm(std::vector<std::string> args) const;
  void rpm_install(const std::string& name, const std::vector<std::string>& provides = {});
  void rpm_erase(const std::string& name);

 private:
  ExecResult apt(const Command& cmd);
  void pacman(const Command& cmd);
  void brought_by(const std::string& package);  // the files an installed package puts in place

  std::string root_;
  std::optional<TempDir> build_;  // rpmbuild's tree, made on the first rpm package
  ProcessExec real_;
};

}  // namespace gpt::test
