// packages: the package databases read from real files (dpkg's status and journal, pacman's local
// database, rpm's own database built here with rpmbuild), and each package manager's commands
// recorded by a stand-in that changes the database as the real tool would. The real apt and dpkg
// run in scripts/prove-packages.
#include "modules/packages.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "agent/facts.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using Lines = std::vector<std::string>;

const std::string kDebian = "ID=debian\nVERSION_ID=\"12\"\n";
const std::string kFedora = "ID=fedora\nVERSION_ID=40\n";
const std::string kArch = "ID=arch\n";
const std::string kLeap = "ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\nVERSION_ID=\"15.6\"\n";
const std::string kAptGet =
    "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l APT_LISTCHANGES_FRONTEND=none apt-get -q -y";
const std::string kAptOptions =
    " -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

std::string fixture(const std::string& name) { return test::source_path("tests/fixtures/packages/" + name); }

// A host tree with an os-release and, for Debian, the real dpkg status fixture.
struct Host {
  TempDir d;
  explicit Host(const std::string& os_release) { test::write(d / "etc/os-release", os_release); }
  std::string root() const { return d.path(); }
  void dpkg(const std::string& status = "dpkg-status") const {
    test::write(d / "var/lib/dpkg/status", test::slurp(fixture(status)));
    fs::create_directories(d / "var/lib/dpkg/updates");
  }
};

// The playbook run on the host with `exec`; result() is its one task's.
struct Ran : test::Converged {
  const Result& result() const { return tasks.at(0).result; }
};

Ran run(const Host& h, const std::string& yaml, Exec& exec, bool check, bool allow_system = true) {
  return {test::converge_root_with(exec, h.root(), yaml, check, allow_system)};
}

std::string task(const std::string& args) { return "tasks:\n  - packages: " + args + "\n"; }

TEST(PackagesDpkg, ReadsOnlyInstalledStatesFromARealStatusFile) {
  const auto entries = parse_dpkg_status(test::slurp(fixture("dpkg-status")));
  std::map<std::string, std::string> state;
  for (const auto& e : entries) state[e.name] = e.state;
  EXPECT_EQ(state, (std::map<std::string, std::string>{{"base-files", "installed"},
                                                       {"dpkg", "installed"},
                                                       {"gpt-conf", "config-files"},
                                                       {"gpt-failconf", "half-configured"},
                                                       {"gpt-unpacked", "unpacked"},
                                                       {"libc6", "installed"},
                                                       {"mawk", "installed"}}));
  for (const char* s : {"config-files", "half-configured", "unpacked", "half-installed", "not-installed"})
    EXPECT_FALSE(dpkg_state_installed(s)) << s;
  for (const char* s : {"installed", "triggers-pending", "triggers-awaited"}) EXPECT_TRUE(dpkg_state_installed(s)) << s;
  const auto mawk = std::find_if(entries.begin(), entries.end(), [](const DpkgEntry& e) { return e.name == "mawk"; });
  ASSERT_NE(mawk, entries.end());
  EXPECT_EQ(mawk->arch, "amd64");
  EXPECT_EQ(mawk->provides, Lines{"awk"});
  const auto journal = parse_dpkg_status(test::slurp(fixture("dpkg-updates-0000")));
  ASSERT_EQ(journal.size(), 1u);
  EXPECT_EQ(journal[0].name, "gpt-half");
  EXPECT_EQ(journal[0].state, "half-installed");
}

TEST(PackagesDpkg, VersionedProvidesGiveTheirNames) {
  std::map<std::string, Lines> provides;
  for (const auto& e : parse_dpkg_status(test::slurp(fixture("dpkg-status-build-host")))) provides[e.name] = e.provides;
  EXPECT_EQ(provides["apt"], Lines{"apt-transport-https"});
  EXPECT_EQ(provides["dbus"], (Lines{"dbus-system-bus", "default-dbus-system-bus"}));
  EXPECT_EQ(provides["g++"], (Lines{"c++-compiler", "g++-x86-64-linux-gnu"}));
  EXPECT_EQ(provides["qemu-utils"], Lines{});
}

TEST(PackagesDpkg, AnInstalledProviderSatisfiesAVirtualNameAsAptTakesIt) {
  std::vector<InstalledPackage> pkgs;
  for (const auto& e : parse_dpkg_status(test::slurp(fixture("dpkg-status"))))
    if (dpkg_state_installed(e.state)) pkgs.push_back({e.name, e.arch, e.provides});
  const PackageDb db(pkgs);
  EXPECT_EQ(db.satisfied_by("awk"), "mawk");
  EXPECT_EQ(db.satisfied_by("mawk:amd64"), "mawk");
  EXPECT_EQ(db.satisfied_by("mawk:i386"), std::nullopt);
  EXPECT_EQ(db.satisfied_by("awk:amd64"), std::nullopt) << "a provided name has no architecture";
  EXPECT_EQ(db.satisfied_by("gpt-conf"), std::nullopt) << "config-files is not installed";
  EXPECT_EQ(db.satisfied_by("gpt-conf-virtual"), std::nullopt) << "nor does it provide anything";
  EXPECT_FALSE(db.has("awk")) << "a removal names the package itself";
  EXPECT_TRUE(db.has("mawk"));
}

TEST(PackagesApt, ReadsARealSimulation) {
  const AptSimulation sim = parse_apt_simulation(test::slurp(fixture("apt-get-s-install-virtualization")));
  EXPECT_EQ(sim.install.size(), 439u);
  for (const char* p :
       {"qemu-system-x86", "qemu-utils", "libvirt-daemon-system", "libvirt-clients", "ovmf", "swtpm", "swtpm-tools"})
    EXPECT_NE(std::find(sim.install.begin(), sim.install.end(), p), sim.install.end()) << p;
  EXPECT_EQ(sim.remove, (Lines{"zsh", "zsh-common"}));
  EXPECT_TRUE(sim.upgrade.empty());
  EXPECT_EQ(parse_apt_simulation(test::slurp(fixture("apt-get-s-remove-zsh-common"))).remove,
            (Lines{"zsh", "zsh-common"}));
  EXPECT_EQ(parse_apt_simulation("Inst libc6 [2.36-9] (2.36-9+deb12u4 Debian:12.5 [amd64])\n").upgrade, Lines{"libc6"});
}

TEST(PackagesApt, CheckPredictsApplyInstallsOneTransactionThenNothingRuns) {
  Host h(kDebian);
  h.dpkg();
  test::PackageManagers apt(h.root());
  apt.depends["gpt-new"] = {"gpt-new-lib"};
  const std::string pb = task("{present: [gpt-new, awk, libc6:amd64, gpt-conf], absent: [mawk-not-there, base-files]}");
  const std::string before = test::slurp(h.d / "var/lib/dpkg/status");

  Ran check = run(h, pb, apt, true);
  ASSERT_TRUE(check.load_errors.empty()) << check.load_errors[0];
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_EQ(check.result().status, Outcome::changed);
  EXPECT_EQ(check.result().msg, "would install gpt-conf gpt-new gpt-new-lib; would remove base-files");
  const std::string transaction = kAptGet + kAptOptions + " install gpt-new gpt-conf base-files-";
  EXPECT_EQ(apt.commands, Lines{kAptGet + " -s" + kAptOptions + " install gpt-new gpt-conf base-files-"});
  EXPECT_EQ(check.result().commands, Lines{transaction});
  EXPECT_EQ(test::slurp(h.d / "var/lib/dpkg/status"), before);

  apt.commands.clear();
  Ran first = run(h, pb, apt, false);
  EXPECT_EQ(first.exit_code, 0);
  EXPECT_EQ(first.result().status, Outcome::changed) << first.result().msg;
  EXPECT_EQ(apt.commands, Lines{transaction});
  EXPECT_EQ(first.result().msg, "installed gpt-conf gpt-new gpt-new-lib; removed base-files");
  EXPECT_EQ(first.result().diff, check.result().diff);
  EXPECT_EQ(first.result().diff,
            "--- packages (before)\n+++ packages (after)\n-base-files\n+gpt-conf\n+gpt-new\n+gpt-new-lib\n");

  apt.commands.clear();
  Ran second = run(h, pb, apt, false);
  EXPECT_EQ(second.result().status, Outcome::ok) << second.result().msg;
  EXPECT_EQ(second.result().msg, "4 present, 2 absent");
  EXPECT_TRUE(apt.commands.empty()) << apt.commands[0];
  EXPECT_TRUE(second.result().commands.empty());
  EXPECT_EQ(run(h, pb, apt, true).exit_code, 0);
  EXPECT_TRUE(apt.commands.empty());
}

TEST(PackagesApt, AHalfInstalledPackageInDpkgsJournalIsInstalledAgain) {
  Host h(kDebian);
  h.dpkg();
  test::write(h.d / "var/lib/dpkg/updates/0000", test::slurp(fixture("dpkg-updates-0000")));
  test::PackageManagers apt(h.root());
  Ran check = run(h, task("{present: [gpt-half, gpt-unpacked, gpt-failconf, mawk]}"), apt, true);
  EXPECT_EQ(check.result().data["install"], (Lines{"gpt-failconf", "gpt-half", "gpt-unpacked"}));
  // A journal record replaces the status file's: an installed package the journal marks removed is gone.
  test::write(h.d / "var/lib/dpkg/updates/0001",
              "Package: mawk\nStatus: deinstall ok config-files\nArchitecture: amd64\n");
  apt.commands.clear();
  EXPECT_EQ(run(h, task("{present: [mawk]}"), apt, true).result().data["install"], Lines{"mawk"});
}

TEST(PackagesApt, UpdatesTheCacheOnlyWhenSomethingIsInstalled) {
  Host h(kDebian);
  h.dpkg();
  test::PackageManagers apt(h.root());
  Ran removal = run(h, task("{absent: [mawk], update_cache: true}"), apt, false);
  EXPECT_EQ(apt.commands, Lines{kAptGet + kAptOptions + " remove mawk"});
  apt.commands.clear();
  Ran install = run(h, task("{present: [gpt-new], update_cache: true, lock_timeout: 5}"), apt, false);
  EXPECT_EQ(install.result().status, Outcome::changed) << install.result().msg;
  const std::string opts =
      " -o DPkg::Lock::Timeout=5 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
  EXPECT_EQ(apt.commands, (Lines{kAptGet + opts + " update", kAptGet + opts + " install gpt-new"}));
  apt.commands.clear();
  EXPECT_EQ(run(h, task("{present: [gpt-new], update_cache: true}"), apt, false).result().status, Outcome::ok);
  EXPECT_TRUE(apt.commands.empty());
}

TEST(PackagesApt, AFailureCarriesAptsOwnMessageAndChangesNothing) {
  Host h(kDebian);
  h.dpkg();
  test::PackageManagers apt(h.root());
  apt.fail = ExecResult{100, false, "Reading package lists...\n", "E: Unable to locate package gpt-no-such-package\n"};
  const std::string before = test::slurp(h.d / "var/lib/dpkg/status");
  Ran r = run(h, task("{present: [gpt-no-such-package]}"), apt, false);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.result().status, Outcome::failed);
  EXPECT_NE(r.result().msg.find("failed: exit code 100: E: Unable to locate package gpt-no-such-package"),
            std::string::npos)
      << r.result().msg;
  EXPECT_EQ(test::slurp(h.d / "var/lib/dpkg/status"), before);
  Ran check = run(h, task("{present: [gpt-no-such-package]}"), apt, true);
  EXPECT_EQ(check.result().status, Outcome::failed) << "apt's simulation fails the same way";
  EXPECT_NE(check.result().msg.find("E: Unable to locate package"), std::string::npos);
}

TEST(PackagesApt, UnderRootTheCommandsAreReportedNeverRun) {
  Host h(kDebian);
  h.dpkg();
  test::RecordingExec exec;
  Ran r = run(h, task("{present: [virtualization, tpm]}"), exec, false, /*allow_system=*/false);
  EXPECT_EQ(r.result().status, Outcome::skipped);
  EXPECT_TRUE(exec.commands.empty());
  EXPECT_EQ(r.result().commands,
            Lines{kAptGet + kAptOptions +
                  " install qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients ovmf swtpm swtpm-tools"});
  EXPECT_NE(
      r.result().msg.find("virtualization: qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients ovmf"),
      std::string::npos)
      << r.result().msg;
  EXPECT_EQ(r.result().data["sets"]["tpm"], (Lines{"swtpm", "swtpm-tools"}));
}

struct ArchHost : Host {
  ArchHost() : Host(kArch) {
    fs::create_directories(d / "var/lib/pacman");
    fs::copy(fixture("pacman-local"), d / "var/lib/pacman/local", fs::copy_options::recursive);
  }
};

TEST(PackagesPacman, ReadsARealLocalDatabase) {
  const auto gawk = parse_pacman_desc(test::slurp(fixture("pacman-local/gawk-4.2.1-2/desc")));
  ASSERT_TRUE(gawk);
  EXPECT_EQ(gawk->name, "gawk");
  EXPECT_EQ(gawk->arch, "x86_64");
  EXPECT_EQ(gawk->provides, Lines{"awk"});
  EXPECT_EQ(parse_pacman_desc(test::slurp(fixture("pacman-local/ca-certificates-utils-20181109-1/desc")))->arch, "any");
  EXPECT_EQ(parse_pacman_desc(test::slurp(fixture("pacman-local/expac-git-8.1.g5ae006f-1/desc")))->provides,
            Lines{"expac"});
  EXPECT_FALSE(parse_pacman_desc(test::slurp(fixture("pacman-local/ALPM_DB_VERSION"))));

  ArchHost h;
  test::PackageManagers pacman(h.root());
  Ran r = run(h, task("{present: [gawk, awk, sh, expac, glibc, filesystem, ca-certificates], absent: [gpt-none]}"),
              pacman, false);
  EXPECT_EQ(r.result().status, Outcome::ok) << r.result().msg;
  EXPECT_EQ(r.result().msg, "7 present, 1 absent");
  EXPECT_EQ(run(h, task("{present: [filesystem:x86_64]}"), pacman, false).result().msg,
            "'filesystem:x86_64': pacman has no name:arch, name the package alone");
  EXPECT_TRUE(pacman.commands.empty());
}

TEST(PackagesPacman, InstallsAndRemovesWithoutAQuestion) {
  ArchHost h;
  test::PackageManagers pacman(h.root());
  const std::string pb = task("{present: [virtualization, tpm, bash], absent: [acl, expac-git]}");
  Ran first = run(h, pb, pacman, false);
  EXPECT_EQ(first.result().status, Outcome::changed) << first.result().msg;
  EXPECT_EQ(pacman.commands, (Lines{"pacman -S --noconfirm --needed qemu-base qemu-img libvirt edk2-ovmf swtpm",
                                    "pacman -R --noconfirm acl expac-git"}));
  EXPECT_EQ(first.result().data["remove"], (Lines{"acl", "expac-git"}));
  pacman.commands.clear();
  EXPECT_EQ(run(h, pb, pacman, false).result().status, Outcome::ok);
  EXPECT_TRUE(pacman.commands.empty());
}

TEST(PackagesPacman, WaitsForPacmansLockWithinTheBound) {
  ArchHost h;
  test::PackageManagers pacman(h.root());
  test::write(h.d / "var/lib/pacman/db.lck", "");
  const auto start = std::chrono::steady_clock::now();
  Ran r = run(h, task("{present: [swtpm], lock_timeout: 1}"), pacman, false);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(r.result().status, Outcome::failed);
  EXPECT_NE(r.result().msg.find("/var/lib/pacman/db.lck is still there after 1 s"), std::string::npos)
      << r.result().msg;
  EXPECT_TRUE(pacman.commands.empty());
  EXPECT_EQ(run(h, task("{present: [swtpm], update_cache: true}"), pacman, false)
                .result()
                .msg.rfind("update_cache on Arch", 0),
            0u);
}

// rpm's real database in the root (rpm --dbpath /var/lib/rpm), packages built with rpmbuild; dnf and
// zypper are stood in for by rpm --justdb installs and removals of such packages. rpm queries run.
class RpmHost : public Host {
 public:
  explicit RpmHost(const std::string& os_release) : Host(os_release), tools(root()) {
    EXPECT_EQ(tools.rpm({"--initdb"}).exit_code, 0) << "rpm and rpmbuild come with scripts/deps";
  }
  test::PackageManagers tools;
};

const std::string kRpmQuery = "rpm --root ";

// An rpm-based host with gpt-old installed, and the stand-ins for its dnf or zypper.
struct RpmWithOld {
  explicit RpmWithOld(const std::string& os_release) : host(os_release), tools(host.tools) {
    tools.rpm_install("gpt-old");
  }
  Ran run(const std::string& yaml, bool check) { return gpt::run(host, yaml, tools, check); }
  RpmHost host;
  test::PackageManagers& tools;
};

TEST(PackagesRpm, ReadsRpmsOwnDatabaseWithProvides) {
  RpmHost h(kFedora);
  h.tools.rpm_install("gpt-old");
  h.tools.rpm_install("gpt-provider", {"gpt-capability = 2.0", "gpt-virtual"});
  auto q = h.tools.rpm({"-qa", "--qf", "%{NAME}\t%{ARCH}\t[%{PROVIDENAME} ]\n"});
  auto pkgs = parse_rpm_query(q.out);
  std::sort(pkgs.begin(), pkgs.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  ASSERT_EQ(pkgs.size(), 2u) << q.out;
  EXPECT_EQ(pkgs[1].name, "gpt-provider");
  EXPECT_EQ(pkgs[1].arch, "noarch");
  EXPECT_EQ(pkgs[1].provides, (Lines{"gpt-capability", "gpt-provider", "gpt-virtual"}));
  EXPECT_TRUE(parse_rpm_query("gpg-pubkey\t(none)\tgpg(Fedora) \n").empty());

  test::PackageManagers& tools = h.tools;
  tools.commands.clear();
  Ran r = run(h, task("{present: [gpt-old, gpt-virtual, gpt-capability, gpt-provider:x86_64], absent: [gpt-gone]}"),
              tools, false);
  EXPECT_EQ(r.result().status, Outcome::ok) << r.result().msg;
  ASSERT_EQ(tools.commands.size(), 1u);
  EXPECT_EQ(tools.commands[0],
            "rpm --root " + h.root() + " --dbpath /var/lib/rpm -qa --qf '%{NAME}\\t%{ARCH}\\t[%{PROVIDENAME} ]\\n'");
}

// rpm, asked about a tree without a database, makes an empty one there (and answers "none"): the
// module asks only where one exists.
TEST(PackagesRpm, ATreeWithoutItsDatabaseFailsAndIsNotGivenOne) {
  Host h(kFedora);
  test::PackageManagers tools(h.root());
  Ran r = run(h, task("{present: [qemu-kvm]}"), tools, true);
  EXPECT_EQ(r.result().status, Outcome::failed);
  EXPECT_EQ(r.result().msg,
            "no rpm database in /var/lib/rpm under " + h.root() + " (rpmdb.sqlite, Packages.db or Packages)");
  EXPECT_TRUE(tools.commands.empty()) << tools.commands[0];
  EXPECT_FALSE(test::exists(h.d / "var/lib/rpm"));
}

TEST(PackagesRpm, DnfInstallsTheFedoraSetThenRemoves) {
  RpmWithOld fedora(kFedora);
  const std::string pb = task("{present: [virtualization], absent: [gpt-old]}");
  Ran check = fedora.run(pb, true);
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_EQ(
      check.result().commands,
      (Lines{"dnf -y install qemu-kvm qemu-img libvirt-daemon-kvm libvirt-client edk2-ovmf", "dnf -y remove gpt-old"}));
  EXPECT_EQ(fedora.tools.commands.size(), 1u) << "check mode only reads rpm's database";
  fedora.tools.commands.clear();
  Ran first = fedora.run(pb, false);
  EXPECT_EQ(first.result().status, Outcome::changed) << first.result().msg;
  EXPECT_EQ(first.result().diff, check.result().diff);
  EXPECT_EQ(first.result().msg,
            "installed edk2-ovmf libvirt-client libvirt-daemon-kvm qemu-img qemu-kvm; removed gpt-old; "
            "virtualization: qemu-kvm qemu-img libvirt-daemon-kvm libvirt-client edk2-ovmf");
  fedora.tools.commands.clear();
  EXPECT_EQ(fedora.run(pb, false).result().status, Outcome::ok);
  ASSERT_EQ(fedora.tools.commands.size(), 1u);
  EXPECT_EQ(fedora.tools.commands[0].rfind(kRpmQuery, 0), 0u) << "a converged run reads rpm's database, runs no dnf";
  EXPECT_EQ(fedora.run(task("{present: [gpt-new:x86_64]}"), true).result().commands,
            Lines{"dnf -y install gpt-new.x86_64"});
}

TEST(PackagesRpm, ZypperTakesInstallsAndRemovalsInOneTransaction) {
  RpmWithOld leap(kLeap);
  const std::string pb = task("{present: [tpm], absent: [gpt-old], lock_timeout: 60}");
  EXPECT_EQ(
      leap.run(pb, false).result().commands,
      Lines{"env ZYPP_LOCK_TIMEOUT=60 zypper --non-interactive install --auto-agree-with-licenses swtpm '!gpt-old'"});
  leap.tools.commands.clear();
  Ran again = leap.run(pb, false);
  EXPECT_EQ(again.result().status, Outcome::ok) << again.result().msg;
  EXPECT_EQ(again.result().msg, "1 present, 1 absent; tpm: swtpm");
  EXPECT_EQ(leap.tools.commands.size(), 1u);
}

// install_recommends: each package manager's own switch, in the simulation too; unset, none (the
// package manager's configuration decides).
TEST(Packages, InstallRecommendsIsEachPackageManagersOwnSwitch) {
  Host h(kDebian);
  h.dpkg();
  test::PackageManagers apt(h.root());
  Ran no = run(h, task("{present: [gpt-new], install_recommends: false}"), apt, true);
  EXPECT_EQ(apt.commands, Lines{kAptGet + " -s" + kAptOptions + " --no-install-recommends install gpt-new"});
  EXPECT_EQ(no.result().commands, Lines{kAptGet + kAptOptions + " --no-install-recommends install gpt-new"});
  apt.commands.clear();
  Ran yes = run(h, task("{present: [gpt-new], install_recommends: true}"), apt, false);
  EXPECT_EQ(yes.result().status, Outcome::changed) << yes.result().msg;
  EXPECT_EQ(apt.commands, Lines{kAptGet + kAptOptions + " --install-recommends install gpt-new"});
  apt.commands.clear();
  EXPECT_EQ(run(h, task("{present: [gpt-other]}"), apt, true).result().commands,
            Lines{kAptGet + kAptOptions + " install gpt-other"});

  RpmWithOld fedora(kFedora);
  EXPECT_EQ(fedora.run(task("{present: [gpt-new], install_recommends: false}"), true).result().commands,
            Lines{"dnf -y --setopt=install_weak_deps=False install gpt-new"});
  RpmWithOld leap(kLeap);
  EXPECT_EQ(leap.run(task("{present: [gpt-new], install_recommends: false}"), true).result().commands,
            Lines{"env ZYPP_LOCK_TIMEOUT=300 zypper --non-interactive install --no-recommends "
                  "--auto-agree-with-licenses gpt-new"});
  // Removals take no recommendations.
  EXPECT_EQ(leap.run(task("{absent: [gpt-old], install_recommends: false}"), true).result().commands,
            Lines{"env ZYPP_LOCK_TIMEOUT=300 zypper --non-interactive remove gpt-old"});
}

TEST(Packages, AnUnknownDistributionFailsNamingIt) {
  Host h("ID=gentoo\nNAME=Gentoo\n");
  test::RecordingExec exec;
  Ran r = run(h, task("{present: [qemu]}"), exec, false);
  EXPECT_EQ(r.result().status, Outcome::failed);
  EXPECT_EQ(r.result().msg.rfind("no package manager known for os id 'gentoo':", 0), 0u) << r.result().msg;
  EXPECT_TRUE(exec.commands.empty());
  Host like("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
  like.dpkg();
  EXPECT_EQ(run(like, task("{present: [mawk]}"), exec, false).result().status, Outcome::ok);
  const auto manager_of = [](const std::string& tree) {
    return package_manager_for(parse_os_release(test::slurp(test::source_path(tree + "/etc/os-release"))));
  };
  EXPECT_EQ(manager_of("tests/fixtures/hosts/fedora-40"), PackageManager::dnf);
  EXPECT_EQ(manager_of("tests/fixtures/hosts/arch"), PackageManager::pacman);
  EXPECT_EQ(manager_of("tests/fixtures/hosts/debian-12"), PackageManager::apt);
  EXPECT_EQ(manager_of("playbooks/sandbox/ubuntu-22.04"), PackageManager::apt);
}

TEST(Packages, RejectsWhatItCannotDoWithLineAndColumn) {
  Host h(kDebian);
  test::RecordingExec exec;
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{present: [qemu-utils], absent: [qemu-utils]}", "'qemu-utils' is both in present and in absent"},
      {"{present: [qemu-utils=1:7.2]}", "'qemu-utils=1:7.2': versions are not supported"},
      {"{present: [\"libvirt>=9\"]}", "'libvirt>=9': versions are not supported"},
      {"{absent: [virtualization]}", "'virtualization' is a set, for present only"},
      {"{present: [\"two words\"]}", "'two words' is not a package name"},
      {"{present: [\"foo:amd64:i386\"]}", "name:arch has one colon"},
      {"{present: [qemu], lock_timeout: -1}", "must be a number of seconds of at least 0"},
      {"{present: [qemu], version: 2}", "version"},
  };
  for (const auto& [args, want] : bad) {
    Ran r = run(h, task(args), exec, false);
    ASSERT_EQ(r.load_errors.size(), 1u) << args;
    EXPECT_EQ(r.load_errors[0].rfind("test.yaml:2:", 0), 0u) << r.load_errors[0];
    EXPECT_NE(r.load_errors[0].find(want), std::string::npos) << r.load_errors[0];
  }
  EXPECT_TRUE(exec.commands.empty());
  h.dpkg();
  EXPECT_EQ(run(h, task("{present: []}"), exec, false).result().status, Outcome::ok);
}

}  // namespace
}  // namespace gpt
