// packages: packages present and absent, with the distribution's package manager (apt, dnf, pacman,
// zypper) in one transaction per task. What is installed is read from the package database (dpkg's
// status file, pacman's local database, rpm's), so a converged run starts no package manager at
// all; check mode says what would be installed and removed, from apt's own simulation where the
// host has apt. Never interactive; the package manager's lock is waited for, within lock_timeout.
#include "modules/packages.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "agent/declare.hpp"
#include "agent/text.hpp"

namespace gpt {

const char* const kRpmQueryFormat = "%{NAME}\\t%{ARCH}\\t[%{PROVIDENAME} ]\\n";

std::string_view package_manager_name(PackageManager m) {
  static constexpr std::string_view kNames[] = {"apt", "dnf", "pacman", "zypper"};  // in the enum's order
  return kNames[static_cast<size_t>(m)];
}

std::optional<PackageManager> package_manager_for(const OsRelease& os) {
  const auto of = [](std::string_view id) -> std::optional<PackageManager> {
    if (id == "debian" || id == "ubuntu") return PackageManager::apt;
    if (id == "fedora" || id == "rhel" || id == "centos" || id == "rocky" || id == "almalinux")
      return PackageManager::dnf;
    if (id == "arch" || id == "archarm") return PackageManager::pacman;
    if (id == "suse" || id == "sles" || id == "opensuse" || id.starts_with("opensuse-")) return PackageManager::zypper;
    return std::nullopt;
  };
  if (auto m = of(os.id)) return m;
  for (const auto& like : os.id_like)
    if (auto m = of(like)) return m;
  return std::nullopt;
}

namespace {

// "foo (= 1.2)", "libbar.so=1-64", "sh": the name alone.
std::string relation_name(std::string_view rel) {
  rel = trim(rel);
  const size_t end = rel.find_first_of(" \t(=<>");
  return std::string(rel.substr(0, end));
}

std::vector<std::string> dpkg_provides(std::string_view value) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    std::string name = relation_name(value.substr(start, comma - start));
    if (!name.empty()) out.push_back(std::move(name));
    start = comma + 1;
  }
  return out;
}

}  // namespace

bool dpkg_state_installed(std::string_view state) {
  return state == "installed" || state == "triggers-awaited" || state == "triggers-pending";
}

std::vector<DpkgEntry> parse_dpkg_status(std::string_view text) {
  std::vector<DpkgEntry> out;
  DpkgEntry cur;
  std::string provides, field;
  const auto flush = [&] {
    if (!cur.name.empty()) {
      cur.provides = dpkg_provides(provides);
      out.push_back(std::move(cur));
    }
    cur = {};
    provides.clear();
    field.clear();
  };
  for (std::string_view line : lines(text)) {
    if (trim(line).empty()) {
      flush();
      continue;
    }
    if (line[0] == ' ' || line[0] == '\t') {  // a continuation of the field before
      if (field == "provides") provides += std::string(line);
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    field = lower(line.substr(0, colon));
    const std::string_view value = trim(line.substr(colon + 1));
    if (field == "package")
      cur.name = std::string(value);
    else if (field == "architecture")
      cur.arch = std::string(value);
    else if (field == "provides")
      provides = std::string(value);
    else if (field == "status") {
      auto w = words(value);
      cur.state = w.size() == 3 ? w[2] : "";
    }
  }
  flush();
  return out;
}

std::optional<InstalledPackage> parse_pacman_desc(std::string_view text) {
  InstalledPackage p;
  std::string section;
  for (std::string_view line : lines(text)) {
    line = trim(line);
    if (line.empty()) continue;
    if (line.size() > 2 && line.front() == '%' && line.back() == '%') {
      section = std::string(line);
      continue;
    }
    if (section == "%NAME%")
      p.name = std::string(line);
    else if (section == "%ARCH%")
      p.arch = std::string(line);
    else if (section == "%PROVIDES%")
      p.provides.push_back(relation_name(line));
  }
  if (p.name.empty()) return std::nullopt;
  return p;
}

std::vector<InstalledPackage> parse_rpm_query(std::string_view text) {
  std::vector<InstalledPackage> out;
  for (std::string_view line : lines(text)) {
    const size_t t1 = line.find('\t');
    const size_t t2 = t1 == std::string_view::npos ? t1 : line.find('\t', t1 + 1);
    if (t2 == std::string_view::npos) continue;
    InstalledPackage p{std::string(line.substr(0, t1)), std::string(line.substr(t1 + 1, t2 - t1 - 1)),
                       words(line.substr(t2 + 1))};
    if (p.name.empty() || p.name == "gpg-pubkey") continue;  // rpm's keyring entries are no packages
    out.push_back(std::move(p));
  }
  return out;
}

namespace {

std::pair<std::string_view, std::string_view> split_arch(std::string_view request) {
  const size_t colon = request.find(':');
  if (colon == std::string_view::npos) return {request, {}};
  return {request.substr(0, colon), request.substr(colon + 1)};
}

bool arch_fits(const std::string& have, std::string_view want) {
  return want.empty() || have == want || have == "all" || have == "noarch" || have == "any";
}

}  // namespace

std::optional<std::string> PackageDb::satisfied_by(std::string_view request) const {
  const auto [name, arch] = split_arch(request);
  for (const auto& p : pkgs_)
    if (p.name == name && arch_fits(p.arch, arch)) return p.name;
  if (!arch.empty()) return std::nullopt;
  for (const auto& p : pkgs_)
    if (std::find(p.provides.begin(), p.provides.end(), name) != p.provides.end()) return p.name;
  return std::nullopt;
}

bool PackageDb::has(std::string_view request) const {
  const auto [name, arch] = split_arch(request);
  for (const auto& p : pkgs_)
    if (p.name == name && arch_fits(p.arch, arch)) return true;
  return false;
}

std::vector<std::string> PackageDb::names() const {
  std::set<std::string> out;
  for (const auto& p : pkgs_) out.insert(p.name);
  return {out.begin(), out.end()};
}

AptSimulation parse_apt_simulation(std::string_view text) {
  AptSimulation sim;
  for (std::string_view line : lines(text)) {
    auto w = words(line);
    if (w.size() < 2) continue;
    if (w[0] == "Inst")
      (w.size() > 2 && w[2].starts_with("[") ? sim.upgrade : sim.install).push_back(w[1]);
    else if (w[0] == "Remv")
      sim.remove.push_back(w[1]);
  }
  return sim;
}

std::optional<std::string> bad_package_name(std::string_view name) {
  if (name.empty()) return "a package name is empty";
  const std::string shown = "'" + std::string(name) + "'";
  if (name.find_first_of("=<>") != std::string_view::npos)
    return shown + ": versions are not supported; name the package alone (the package manager installs its candidate)";
  if (name.front() == '-' || name.front() == '.' || name.front() == ':') return shown + " is not a package name";
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("+-._@:").find(c) == std::string_view::npos)
      return shown + " is not a package name (a package's name alone, or name:arch)";
  const auto [base, arch] = split_arch(name);
  if (name.find(':') != std::string_view::npos &&
      (base.empty() || arch.empty() || arch.find(':') != std::string_view::npos))
    return shown + " is not a package name (name:arch has one colon)";
  return std::nullopt;
}

bool is_package_set(std::string_view name) { return name == "virtualization" || name == "tpm"; }

std::vector<std::string> package_set(PackageManager m, std::string_view set) {
  const bool tpm = set == "tpm";
  switch (m) {
    case PackageManager::apt:
      if (tpm) return {"swtpm", "swtpm-tools"};
      return {"qemu-system-x86", "qemu-utils", "libvirt-daemon-system", "libvirt-clients", "ovmf"};
    case PackageManager::dnf:
      if (tpm) return {"swtpm", "swtpm-tools"};
      return {"qemu-kvm", "qemu-img", "libvirt-daemon-kvm", "libvirt-client", "edk2-ovmf"};
    case PackageManager::pacman:
      if (tpm) return {"swtpm"};
      return {"qemu-base", "qemu-img", "libvirt", "edk2-ovmf"};
    case PackageManager::zypper:
      if (tpm) return {"swtpm"};
      return {"qemu-x86", "qemu-tools", "libvirt-daemon-qemu", "libvirt-client", "qemu-ovmf-x86_64"};
  }
  return {};
}

namespace {

// A wait on the package manager's lock is bounded by lock_timeout, the transaction by timeout;
// `recommends` is install_recommends (unset: the package manager's own configuration decides).
struct Limits {
  int lock_seconds = 300;
  std::chrono::seconds timeout{1800};
  std::optional<bool> recommends = std::nullopt;
};

Expected<std::vector<InstalledPackage>> read_dpkg(const Root& root) {
  auto status = read_file_if_exists(root, "/var/lib/dpkg/status", 256u << 20);
  if (!status) return Error{status.error()};
  if (!*status) return Error{"no /var/lib/dpkg/status under " + root.dir() + ": dpkg's database is missing"};
  // dpkg journals each change in /var/lib/dpkg/updates/NNNN (whole records) until it next writes
  // the status file: a record there replaces the status file's one for that package.
  std::map<std::pair<std::string, std::string>, DpkgEntry> entries;
  for (auto& e : parse_dpkg_status(**status)) entries[{e.name, e.arch}] = std::move(e);
  auto journal = list_dir(root, "/var/lib/dpkg/updates");
  if (!journal) return Error{journal.error()};
  std::vector<std::string> numbered;
  for (const auto& n : *journal)
    if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) numbered.push_back(n);
  std::sort(numbered.begin(), numbered.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  for (const auto& n : numbered) {
    auto text = read_file(root, "/var/lib/dpkg/updates/" + n);
    if (!text) return Error{text.error()};
    for (auto& e : parse_dpkg_status(*text)) entries[{e.name, e.arch}] = std::move(e);
  }
  std::vector<InstalledPackage> out;
  for (auto& [key, e] : entries)
    if (dpkg_state_installed(e.state)) out.push_back({e.name, e.arch, std::move(e.provides)});
  return out;
}

Expected<std::vector<InstalledPackage>> read_pacman(const Root& root) {
  const std::string dir = "/var/lib/pacman/local";
  if (!path_exists(root, dir)) return Error{"no " + dir + " under " + root.dir() + ": pacman's database is missing"};
  auto entries = list_dir(root, dir);
  if (!entries) return Error{entries.error()};
  std::vector<InstalledPackage> out;
  for (const auto& e : *entries) {
    auto text = read_file_if_exists(root, dir + "/" + e + "/desc");
    if (!text) return Error{text.error()};
    if (!*text) continue;  // ALPM_DB_VERSION, or an entry pacman is writing
    if (auto p = parse_pacman_desc(**text)) out.push_back(std::move(*p));
  }
  return out;
}

// rpm's database files by backend: sqlite (rpm 4.16 on), ndb (openSUSE), Berkeley DB (before).
constexpr std::array kRpmDbFiles = {"rpmdb.sqlite", "Packages.db", "Packages"};

// rpm's database (sqlite, Berkeley DB or ndb by release) is read by rpm itself: a query, never
// dnf or zypper. Under --root this machine's rpm reads the tree's database where rpm-based
// distributions keep it (/var/lib/rpm), whatever its own default is.
Expected<std::vector<InstalledPackage>> read_rpm(Context& ctx) {
  // A query of a tree without a database is no answer: rpm would make an empty one there.
  if (ctx.root.sandboxed() && !std::any_of(kRpmDbFiles.begin(), kRpmDbFiles.end(), [&](const char* f) {
        return path_exists(ctx.root, std::string("/var/lib/rpm/") + f);
      }))
    return Error{"no rpm database in /var/lib/rpm under " + ctx.root.dir() +
                 " (rpmdb.sqlite, Packages.db or Packages)"};
  Command cmd;
  cmd.argv = {"rpm"};
  if (ctx.root.sandboxed()) cmd.argv.insert(cmd.argv.end(), {"--root", ctx.root.dir(), "--dbpath", "/var/lib/rpm"});
  cmd.argv.insert(cmd.argv.end(), {"-qa", "--qf", kRpmQueryFormat});
  cmd.timeout = std::chrono::minutes(2);
  ExecResult res = ctx.exec.run(cmd);
  if (!res.ok()) return Error{"cannot read rpm's database: " + cmd.display() + " failed: " + res.failure(true)};
  return parse_rpm_query(res.out);
}

Expected<PackageDb> read_db(Context& ctx, PackageManager m) {
  auto pkgs = m == PackageManager::apt      ? read_dpkg(ctx.root)
              : m == PackageManager::pacman ? read_pacman(ctx.root)
                                            : read_rpm(ctx);
  if (!pkgs) return Error{pkgs.error()};
  return PackageDb(std::move(*pkgs));
}

// name:arch as each package manager spells it.
std::string spelled(PackageManager m, const std::string& request) {
  const auto [name, arch] = split_arch(request);
  if (arch.empty() || m == PackageManager::apt) return request;
  return std::string(name) + "." + std::string(arch);
}

Command command(std::vector<std::string> argv, const Limits& lim) {
  Command cmd;
  cmd.argv = std::move(argv);
  cmd.timeout = lim.timeout + std::chrono::seconds(lim.lock_seconds);
  return cmd;
}

// apt-get as nobody is asked anything: no debconf question, no conffile prompt (the local file
// is kept, a new default taken), needrestart only lists; dpkg's lock is waited for.
std::vector<std::string> apt_get(const Limits& lim, bool simulate) {
  std::vector<std::string> argv{
      "env", "DEBIAN_FRONTEND=noninteractive", "NEEDRESTART_MODE=l", "APT_LISTCHANGES_FRONTEND=none", "apt-get", "-q",
      "-y"};
  if (simulate) argv.push_back("-s");
  argv.insert(argv.end(), {"-o", "DPkg::Lock::Timeout=" + std::to_string(lim.lock_seconds), "-o",
                           "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"});
  return argv;
}

std::vector<std::string> zypper(const Limits& lim) {
  return {"env", "ZYPP_LOCK_TIMEOUT=" + std::to_string(lim.lock_seconds), "zypper", "--non-interactive"};
}

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The transaction: one command where the package manager takes installs and removals together
// (apt-get's `name-`, zypper's `!name`), else an install and a removal.
std::vector<Command> transaction(PackageManager m, const std::vector<std::string>& install,
                                 const std::vector<std::string>& remove, const Limits& lim, bool simulate = false) {
  std::vector<std::string> in, out;
  for (const auto& p : install) in.push_back(spelled(m, p));
  for (const auto& p : remove) out.push_back(spelled(m, p));
  switch (m) {
    case PackageManager::apt: {
      if (in.empty()) return {command(plus(plus(apt_get(lim, simulate), {"remove"}), out), lim)};
      for (auto& p : out) p += "-";
      // Options before the verb, the packages after it.
      std::vector<std::string> verb;
      if (lim.recommends) verb.push_back(*lim.recommends ? "--install-recommends" : "--no-install-recommends");
      verb.push_back("install");
      return {command(plus(plus(plus(apt_get(lim, simulate), verb), in), out), lim)};
    }
    case PackageManager::zypper: {
      if (in.empty()) return {command(plus(plus(zypper(lim), {"remove"}), out), lim)};
      for (auto& p : out) p = "!" + p;
      std::vector<std::string> verb = {"install"};
      if (lim.recommends) verb.push_back(*lim.recommends ? "--recommends" : "--no-recommends");
      verb.push_back("--auto-agree-with-licenses");
      return {command(plus(plus(plus(zypper(lim), verb), in), out), lim)};
    }
    case PackageManager::dnf: {
      std::vector<Command> cmds;
      std::vector<std::string> install_cmd = {"dnf", "-y"};
      if (lim.recommends)
        install_cmd.push_back(*lim.recommends ? "--setopt=install_weak_deps=True" : "--setopt=install_weak_deps=False");
      install_cmd.push_back("install");
      if (!in.empty()) cmds.push_back(command(plus(install_cmd, in), lim));
      if (!out.empty()) cmds.push_back(command(plus({"dnf", "-y", "remove"}, out), lim));
      return cmds;
    }
    case PackageManager::pacman: {
      std::vector<Command> cmds;
      if (!in.empty()) cmds.push_back(command(plus({"pacman", "-S", "--noconfirm", "--needed"}, in), lim));
      if (!out.empty()) cmds.push_back(command(plus({"pacman", "-R", "--noconfirm"}, out), lim));
      return cmds;
    }
  }
  return {};
}

std::optional<Command> cache_update(PackageManager m, const Limits& lim) {
  switch (m) {
    case PackageManager::apt:
      return command(plus(apt_get(lim, false), {"update"}), lim);
    case PackageManager::dnf:
      return command({"dnf", "-y", "makecache"}, lim);
    case PackageManager::zypper:
      return command(plus(zypper(lim), {"refresh"}), lim);
    case PackageManager::pacman:
      return std::nullopt;
  }
  return std::nullopt;
}

// pacman fails at once on a held lock: its lock file is waited for to go, within the bound.
bool wait_for_pacman_lock(const Root& root, int seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (path_exists(root, "/var/lib/pacman/db.lck")) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return true;
}

// What --diff shows: packages added (+) and taken out (-).
std::string package_diff(const std::vector<std::string>& added, const std::vector<std::string>& removed) {
  if (added.empty() && removed.empty()) return {};
  std::string out = "--- packages (before)\n+++ packages (after)\n";
  for (const auto& p : removed) out += "-" + p + "\n";
  for (const auto& p : added) out += "+" + p + "\n";
  return out;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::vector<std::string> minus(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::string> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

std::string what_changes(const std::vector<std::string>& install, const std::vector<std::string>& remove, bool done) {
  std::vector<std::string> parts;
  if (!install.empty()) parts.push_back((done ? "installed " : "would install ") + join(install, " "));
  if (!remove.empty()) parts.push_back((done ? "removed " : "would remove ") + join(remove, " "));
  return join(parts, "; ");
}

struct Args {
  std::vector<std::string> present;
  std::vector<std::string> absent;
  bool update_cache = false;
  // Whether an install takes the packages' recommendations (weak dependencies) too; unset: as the
  // package manager is configured. pacman has none.
  std::optional<bool> install_recommends;
  long long lock_timeout = 300;
  long long timeout = 1800;
};

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  const auto manager = package_manager_for(ctx.facts.os);
  if (!manager)
    return Result::failed(
        "no package manager known for os id '" + ctx.facts.os.id + "'" +
        (ctx.facts.os.id_like.empty() ? "" : " (like " + join(ctx.facts.os.id_like, ", ") + ")") +
        ": apt, dnf, pacman and zypper are known, on Debian, Ubuntu, Fedora, RHEL, Arch and openSUSE");
  const PackageManager m = *manager;
  const Limits lim{static_cast<int>(args.lock_timeout), std::chrono::seconds(args.timeout), args.install_recommends};

  // The sets, resolved for this distribution; the names in the order asked, once each.
  json sets = json::object();
  std::vector<std::string> present, absent = args.absent;
  for (const auto& name : args.present) {
    std::vector<std::string> members = is_package_set(name) ? package_set(m, name) : std::vector<std::string>{name};
    if (is_package_set(name)) sets[name] = members;
    for (auto& p : members)
      if (std::find(present.begin(), present.end(), p) == present.end()) present.push_back(std::move(p));
  }
  for (const auto& p : absent)
    if (std::find(present.begin(), present.end(), p) != present.end())
      return Result::failed("'" + p + "' is both present (in a set) and absent");
  if (m == PackageManager::pacman)
    for (const auto& p : present)
      if (!split_arch(p).second.empty())
        return Result::failed("'" + p + "': pacman has no name:arch, name the package alone");

  auto db = read_db(ctx, m);
  if (!db) return Result::failed(db.error());
  std::vector<std::string> install, remove;
  for (const auto& p : present)
    if (!db->satisfied_by(p)) install.push_back(p);
  for (const auto& p : absent)
    if (db->has(p)) remove.push_back(p);

  json data = {{"manager", package_manager_name(m)}, {"present", present}, {"absent", absent}};
  if (!sets.empty()) data["sets"] = sets;
  std::string sets_text;
  for (const auto& [name, members] : sets.items())
    sets_text += "; " + name + ": " + join(members.get<std::vector<std::string>>(), " ");
  if (install.empty() && remove.empty()) {
    Result r = Result::ok(std::to_string(present.size()) + " present, " + std::to_string(absent.size()) + " absent" +
                          sets_text);
    r.data = std::move(data);
    return r;
  }
  if (m == PackageManager::pacman && args.update_cache && !install.empty())
    return Result::failed(
        "update_cache on Arch would be a partial upgrade (pacman -Sy without -u), which Arch does not "
        "support: upgrade with pacman -Syu, then run the task without update_cache");

  std::vector<Command> cmds;
  if (args.update_cache && !install.empty())
    if (auto update = cache_update(m, lim)) cmds.push_back(*update);
  for (auto& c : transaction(m, install, remove, lim)) cmds.push_back(std::move(c));
  std::vector<std::string> command_lines;
  for (const auto& c : cmds) command_lines.push_back(c.display());

  if (!ctx.system_commands_allowed || !apply) {
    // What the transaction would do: apt's own simulation (dependencies included, and what a
    // removal takes with it) where it may run, else the requests themselves.
    std::vector<std::string> would_install = install, would_remove = remove;
    if (m == PackageManager::apt && ctx.system_commands_allowed) {
      const Command sim = transaction(m, install, remove, lim, true).front();
      ExecResult res = ctx.exec.run(sim);
      if (!res.ok()) {
        Result r = Result::failed(sim.display() + " failed: " + res.failure(true));
        r.data = std::move(data);
        return r;
      }
      AptSimulation s = parse_apt_simulation(res.out);
      would_install = plus(would_install, s.install);
      would_remove = plus(would_remove, s.remove);
      data["simulation"] = sim.display();
      // Upgrades of installed packages a dependency needs are no change of what is installed.
      if (!s.upgrade.empty()) data["upgrade"] = sorted(s.upgrade);
    }
    would_install = sorted(would_install);
    would_remove = sorted(would_remove);
    data["install"] = would_install;
    data["remove"] = would_remove;
    const std::string what = what_changes(would_install, would_remove, false) + sets_text;
    for (const auto& p : would_install) ctx.provided.insert("package:" + p);
    Result r = ctx.system_commands_allowed ? Result::changed(what)
                                           : Result::skipped("not run under --root " + ctx.root.dir() + ": " + what);
    r.diff = package_diff(would_install, would_remove);
    r.commands = command_lines;
    r.data = std::move(data);
    return r;
  }

  Result r = Result::changed();
  r.commands = command_lines;
  const std::vector<std::string> before = db->names();
  for (const auto& c : cmds) {
    if (m == PackageManager::pacman && !wait_for_pacman_lock(ctx.root, lim.lock_seconds)) {
      r = Result::failed("pacman's lock /var/lib/pacman/db.lck is still there after " +
                         std::to_string(lim.lock_seconds) +
                         " s (lock_timeout): another pacman runs, or one died and left it");
      break;
    }
    ExecResult res = ctx.exec.run(c);
    if (!res.ok()) {
      r = Result::failed(c.display() + " failed: " + res.failure(true));
      r.data["stdout"] = res.out;
      r.data["stderr"] = res.err;
      break;
    }
  }
  r.commands = command_lines;
  // What the package database says now is what happened, dependencies and all.
  auto after = read_db(ctx, m);
  if (!after) {
    Result failed = Result::failed(after.error());
    failed.commands = command_lines;
    failed.data = std::move(data);
    return failed;
  }
  const std::vector<std::string> now = after->names();
  const std::vector<std::string> added = minus(now, before), taken = minus(before, now);
  data["install"] = added;
  data["remove"] = taken;
  r.data.update(data);
  r.diff = package_diff(added, taken);
  if (r.status == Outcome::failed) {
    if (!added.empty() || !taken.empty()) r.msg += " (meanwhile " + what_changes(added, taken, true) + ")";
    return r;
  }
  std::vector<std::string> missing, left;
  for (const auto& p : present)
    if (!after->satisfied_by(p)) missing.push_back(p);
  for (const auto& p : absent)
    if (after->has(p)) left.push_back(p);
  if (!missing.empty() || !left.empty()) {
    r.status = Outcome::failed;
    r.msg = command_lines.back() + " succeeded, yet" +
            (missing.empty() ? "" : " not installed: " + join(missing, " ")) +
            (left.empty() ? "" : std::string(missing.empty() ? "" : ";") + " still installed: " + join(left, " "));
    return r;
  }
  r.msg = what_changes(added, taken, true) + sets_text;
  return r;
}

std::optional<std::string> check_names(const json& list, bool sets_allowed) {
  for (const auto& v : list) {
    const std::string name = v.get<std::string>();
    if (is_package_set(name)) {
      if (sets_allowed) continue;
      return "'" + name + "' is a set, for present only: name the packages to remove";
    }
    if (auto why = bad_package_name(name)) return why;
  }
  return std::nullopt;
}

std::optional<std::string> positive(const json& v, long long min) {
  if (v.get<long long>() < min) return "must be a number of seconds of at least " + std::to_string(min);
  return std::nullopt;
}

// What `gptagent doc packages` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Packages present and absent with the distribution's own package manager (apt on Debian/Ubuntu, dnf on "
          "Fedora/RHEL, pacman on Arch, zypper on openSUSE; from ID, then ID_LIKE), one transaction per task "
          "(apt-get's name- and zypper's !name remove in the same one; dnf and pacman get an install and a "
          "removal).\n\n"
          "What is installed is read from the package database itself (dpkg's status file and its updates/ "
          "journal, pacman's local/*/desc, rpm's database through rpm -qa), so a converged run starts no package "
          "manager (ok, no command). An installed package that provides a requested name satisfies it (awk with "
          "mawk); name:arch is accepted; versions (foo=1.2, foo>=1) are refused at load. --check says what would be "
          "installed and removed, from apt-get -s on apt hosts (dependencies included; on dnf, pacman and zypper "
          "hosts the requested names only).\n\n"
          "Never interactive (DEBIAN_FRONTEND=noninteractive, --force-confdef --force-confold, "
          "NEEDRESTART_MODE=l; dnf -y; pacman --noconfirm --needed; zypper --non-interactive); the lock is waited "
          "for within lock_timeout seconds (default 300: apt's DPkg::Lock::Timeout, ZYPP_LOCK_TIMEOUT, pacman's "
          "db.lck); a failure carries the package manager's own message. update_cache: true refreshes the index "
          "first, only when something is to be installed (refused on Arch: a partial upgrade). install_recommends: "
          "true or false makes an install take the packages' recommendations or not (apt-get's "
          "--install-recommends/--no-install-recommends, dnf's install_weak_deps, zypper's "
          "--recommends/--no-recommends; pacman installs none); unset, the package manager's configuration "
          "decides.\n\n"
          "In check mode, what a task would install counts for the tasks after it: a service whose unit is not "
          "known yet, or a libvirt task whose hypervisor cannot be reached yet, says what it would do instead of "
          "failing.\n\n"
          "Sets: virtualization (QEMU for x86, qemu-img, libvirt daemon and client, OVMF; on Debian 12 "
          "qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients ovmf) and tpm (swtpm, and swtpm-tools "
          "on apt and dnf), resolved per distribution and shown in the message and data.sets. Under --root the "
          "commands are reported, never run.",
      .examples = {"# What VMs run on: QEMU, qemu-img, libvirt and OVMF, named for this distribution\n"
                   "- name: QEMU, libvirt and OVMF installed\n"
                   "  packages:\n"
                   "    present: [virtualization]\n",
                   "# swtpm for Windows 11 guests, without the packages' recommendations, and no nano\n"
                   "- packages:\n"
                   "    present: [tpm]\n"
                   "    absent: [nano]\n"
                   "    install_recommends: false\n"},
  };
}

const Registration registration{
    declare_module(
        "packages", "packages present and absent, with apt, dnf, pacman or zypper (sets: virtualization, tpm)",
        ArgsDecl<Args>()
            .arg("present", &Args::present,
                 "packages, or sets (virtualization, tpm) resolved for this distribution, to install",
                 {.check = [](const json& v) { return check_names(v, true); },
                  .example = json::array({"virtualization", "tpm"})})
            .arg("absent", &Args::absent, "packages to remove",
                 {.check = [](const json& v) { return check_names(v, false); }})
            .arg("update_cache", &Args::update_cache,
                 "refresh the package lists before an install (refused on Arch, where it would be a partial upgrade)")
            .arg("install_recommends", &Args::install_recommends,
                 "whether an install takes the packages' recommendations too; unset: as the package manager is "
                 "configured")
            .arg("lock_timeout", &Args::lock_timeout,
                 "seconds to wait for another package manager to let go of its lock",
                 {.check = [](const json& v) { return positive(v, 0); }})
            .arg("timeout", &Args::timeout, "seconds one package manager command may take",
                 {.check = [](const json& v) { return positive(v, 1); }})
            .check([](const Args& a) -> std::optional<std::string> {
              for (const auto& p : a.present)
                if (std::find(a.absent.begin(), a.absent.end(), p) != a.absent.end())
                  return "'" + p + "' is both in present and in absent";
              return std::nullopt;
            }),
        converge),
    docs()};

}  // namespace
}  // namespace gpt
