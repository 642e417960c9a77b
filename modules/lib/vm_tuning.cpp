#include "modules/lib/vm_tuning.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "agent/pci.hpp"
#include "agent/text.hpp"

namespace gpt::vm {
namespace {

std::optional<int> to_int(std::string_view s) {
  s = trim(s);
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

bool contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }

// "0-3,8" as the kernel writes CPU lists (no exclusions).
std::vector<int> kernel_cpu_list(std::string_view text) {
  auto cpus = parse_cpuset(trim(text));
  return cpus ? *cpus : std::vector<int>{};
}

}  // namespace

Expected<std::vector<int>> parse_cpuset(std::string_view text) {
  std::vector<int> cpus, excluded;
  std::string_view rest = text;
  const auto bad = [&](std::string_view why) {
    return Error{"'" + std::string(text) + "' is not a CPU list like 2-7,10-15: " + std::string(why)};
  };
  if (trim(text).empty()) return bad("it is empty");
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view item = trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (item.empty()) return bad("an empty item");
    const bool exclude = item.front() == '^';
    if (exclude) item.remove_prefix(1);
    const size_t dash = item.find('-');
    auto lo = to_int(item.substr(0, dash));
    auto hi = dash == std::string_view::npos ? lo : to_int(item.substr(dash + 1));
    if (!lo || !hi) return bad("'" + std::string(item) + "' is not a CPU number or range");
    if (*hi < *lo) return bad("the range " + std::string(item) + " runs backwards");
    if (*hi > 8191) return bad("CPU " + std::to_string(*hi) + " is beyond 8191");
    if (exclude && dash != std::string_view::npos) return bad("an exclusion is one CPU (^N)");
    for (int c = *lo; c <= *hi; ++c) {
      if (exclude) {
        excluded.push_back(c);
      } else {
        if (contains(cpus, c)) return bad("CPU " + std::to_string(c) + " is named twice");
        cpus.push_back(c);
      }
    }
  }
  std::erase_if(cpus, [&](int c) { return contains(excluded, c); });
  if (cpus.empty()) return bad("it names no CPU");
  return cpus;
}

std::string format_cpuset(std::vector<int> cpus) {
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  std::vector<std::string> parts;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    parts.push_back(j == i ? std::to_string(cpus[i]) : std::to_string(cpus[i]) + "-" + std::to_string(cpus[j]));
    i = j + 1;
  }
  return join(parts, ",");
}

Expected<HostCpus> read_host_cpus(const Root& root) {
  HostCpus h;
  auto online = read_file(root, "/sys/devices/system/cpu/online", 1 << 16);
  if (!online) return Error{"cannot read the host's CPUs: " + online.error()};
  h.online = kernel_cpu_list(*online);
  if (h.online.empty())
    return Error{"/sys/devices/system/cpu/online does not list CPUs: '" + std::string(trim(*online)) + "'"};
  for (int c : h.online) {
    const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/";
    auto sib = read_file_if_exists(root, base + "thread_siblings_list", 1 << 16);
    std::vector<int> s = sib && *sib ? kernel_cpu_list(**sib) : std::vector<int>{};
    if (s.empty()) s = {c};  // no topology: a core of its own
    h.siblings[c] = s;
  }
  return h;
}

PinCheck check_pinning(const HostCpus& host, const std::vector<int>& vcpu_cpus, int threads,
                       const std::vector<int>& emulator, const std::vector<int>& iothreads) {
  PinCheck r;
  std::vector<int> offline;
  for (const auto* set : {&vcpu_cpus, &emulator, &iothreads})
    for (int c : *set)
      if (!contains(host.online, c) && !contains(offline, c)) offline.push_back(c);
  if (!offline.empty()) {
    r.error = "pin: host CPU" + std::string(offline.size() > 1 ? "s " : " ") + format_cpuset(offline) +
              (offline.size() > 1 ? " are" : " is") + " not online (this host has CPUs " + format_cpuset(host.online) +
              ")";
    return r;
  }
  // SMT siblings are one physical core: the guest should see them as threads of one core too.
  std::map<std::vector<int>, std::set<int>> guest_cores_of;  // host core (its siblings) -> guest cores
  std::map<std::vector<int>, std::vector<int>> vcpus_of;
  for (size_t v = 0; v < vcpu_cpus.size(); ++v) {
    const auto& core = host.siblings.at(vcpu_cpus[v]);
    guest_cores_of[core].insert(static_cast<int>(v) / std::max(threads, 1));
    vcpus_of[core].push_back(static_cast<int>(v));
  }
  for (const auto& [core, guest_cores] : guest_cores_of) {
    if (guest_cores.size() < 2) continue;
    std::vector<std::string> vcpus;
    for (int v : vcpus_of[core]) vcpus.push_back(std::to_string(v));
    r.warnings.push_back("pin: host CPUs " + format_cpuset(core) + " are SMT siblings of one core, but vCPUs " +
                         join(vcpus, ", ") +
                         " pinned to them are in different guest cores (threads: " + std::to_string(threads) +
                         "): give siblings to consecutive vCPUs and set cpu.threads to match");
  }
  std::vector<int> shared;
  for (const auto* set : {&emulator, &iothreads})
    for (int c : *set)
      if (contains(vcpu_cpus, c) && !contains(shared, c)) shared.push_back(c);
  if (!shared.empty())
    r.warnings.push_back("pin: host CPUs " + format_cpuset(shared) +
                         " run vCPUs and also the emulator or I/O threads: the vCPUs will stall behind them");
  return r;
}

uint64_t looking_glass_mib(uint64_t width, uint64_t height) {
  const uint64_t bytes = width * height * 4 * 2 + (10ull << 20);
  uint64_t mib = 1;
  while ((mib << 20) <= bytes) mib <<= 1;  // "the next power of two above"
  return mib;
}

std::string hypervisor_user(const Root& root, const Facts& facts) {
  if (auto conf = read_file_if_exists(root, "/etc/libvirt/qemu.conf"); conf && *conf) {
    for (auto line : lines(**conf)) {
      line = trim(line);
      if (!line.starts_with("user")) continue;
      auto eq = line.find('=');
      if (eq == std::string_view::npos || trim(line.substr(4, eq - 4)) != "") continue;
      std::string_view v = trim(line.substr(eq + 1));
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      if (v.starts_with('+')) continue;  // a numeric uid: nothing to look up by name
      if (!v.empty()) return std::string(v);
    }
  }
  const bool debian = facts.os.id == "debian" || facts.os.id == "ubuntu" ||
                      std::find(facts.os.id_like.begin(), facts.os.id_like.end(), "debian") != facts.os.id_like.end();
  return debian ? "libvirt-qemu" : "qemu";
}

namespace {

struct Account {
  uid_t uid = 0;
  std::vector<gid_t> gids;
};

// The user's uid and groups from the root's /etc/passwd and /etc/group.
std::optional<Account> account(const Root& root, const std::string& user) {
  auto passwd = read_file_if_exists(root, "/etc/passwd");
  if (!passwd || !*passwd) return std::nullopt;
  std::optional<Account> a;
  for (auto line : lines(**passwd)) {
    std::vector<std::string> f;
    size_t start = 0;
    for (size_t i = 0; i <= line.size(); ++i)
      if (i == line.size() || line[i] == ':') f.emplace_back(line.substr(start, i - start)), start = i + 1;
    if (f.size() < 4 || f[0] != user) continue;
    auto uid = to_int(f[2]), gid = to_int(f[3]);
    if (!uid || !gid) return std::nullopt;
    a = Account{static_cast<uid_t>(*uid), {static_cast<gid_t>(*gid)}};
    break;
  }
  if (!a) return std::nullopt;
  if (auto group = read_file_if_exists(root, "/etc/group"); group && *group) {
    for (auto line : lines(**group)) {
      auto c1 = line.find(':'), c2 = line.find(':', c1 + 1), c3 = line.find(':', c2 + 1);
      if (c3 == std::string_view::npos) continue;
      auto gid = to_int(line.substr(c2 + 1, c3 - c2 - 1));
      if (!gid) continue;
      for (std::string_view rest = trim(line.substr(c3 + 1)); !rest.empty();) {  // members: a,b,c
        auto comma = rest.find(',');
        if (trim(rest.substr(0, comma)) == user) a->gids.push_back(static_cast<gid_t>(*gid));
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
      }
    }
  }
  return a;
}

bool may(const FileInfo& f, const Account& a, mode_t user_bit, mode_t group_bit, mode_t other_bit) {
  if (a.uid == 0) return true;
  if (f.uid == a.uid) return f.mode & user_bit;
  if (std::find(a.gids.begin(), a.gids.end(), f.gid) != a.gids.end()) return f.mode & group_bit;
  return f.mode & other_bit;
}

}  // namespace

Status check_owner(const Root& root, const std::string& user, const std::string& group) {
  if (!account(root, user)) return Error{"user " + user + " does not exist on this host (/etc/passwd)"};
  auto groups = read_file_if_exists(root, "/etc/group");
  if (groups && *groups)
    for (auto line : lines(**groups))
      if (line.substr(0, line.find(':')) == group) return {};
  return Error{"group " + group + " does not exist on this host (/etc/group)"};
}

Status check_rom(const Root& root, const std::string& path, const std::string& user) {
  if (path.empty() || path[0] != '/') return Error{"rom: '" + path + "' is not an absolute path"};
  auto info = stat_file(root, path);
  if (!info) return Error{"rom: " + info.error()};
  if (!info->exists) return Error{"rom: " + path + " does not exist"};
  if (!info->regular) return Error{"rom: " + path + " is not a regular file"};
  auto head = read_file(root, path, 64u << 20);
  if (!head) return Error{"rom: " + head.error()};
  if (head->size() < 2 || static_cast<unsigned char>((*head)[0]) != 0x55 ||
      static_cast<unsigned char>((*head)[1]) != 0xAA)
    return Error{"rom: " + path +
                 " is not a PCI option ROM (it does not start with the 0x55 0xAA signature; a ROM dumped "
                 "with a vendor tool may carry a header to cut off first)"};
  auto a = account(root, user);
  if (!a) return {};  // the hypervisor's user is not on this host (yet): nothing to check against
  std::string dir;
  for (std::string_view rest = std::string_view(path).substr(1);;) {
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) break;
    dir += "/" + std::string(rest.substr(0, slash));
    rest = rest.substr(slash + 1);
    auto d = stat_file(root, dir);
    if (d && d->exists && !may(*d, *a, S_IXUSR, S_IXGRP, S_IXOTH))
      return Error{"rom: " + user + " (the hypervisor's user) cannot enter " + dir + " to read " + path};
  }
  if (!may(*info, *a, S_IRUSR, S_IRGRP, S_IROTH))
    return Error{"rom: " + user + " (the hypervisor's user) cannot read " + path + ": make it readable (chmod 0644)"};
  return {};
}

Expected<HugepagePool> read_hugepages(const Root& root, uint64_t size_kib) {
  uint64_t default_kib = 0;
  if (auto meminfo = read_file_if_exists(root, "/proc/meminfo"); meminfo && *meminfo)
    for (auto line : lines(**meminfo))
      if (line.starts_with("Hugepagesize:")) {
        auto w = words(line.substr(13));
        if (!w.empty()) default_kib = std::strtoull(w[0].c_str(), nullptr, 10);
      }
  HugepagePool p;
  p.size_kib = size_kib ? size_kib : default_kib;
  if (!p.size_kib) return Error{"hugepages: the kernel offers none (no Hugepagesize in /proc/meminfo)"};
  p.default_size = p.size_kib == default_kib;
  const std::string dir = "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(p.size_kib) + "kB";
  auto read_count = [&](const char* name) -> Expected<uint64_t> {
    auto text = read_file(root, dir + "/" + name, 4096);
    if (!text) return Error{text.error()};
    auto n = to_int(*text);
    if (!n) return Error{dir + "/" + name + " does not hold a number"};
    return static_cast<uint64_t>(*n);
  };
  if (!path_exists(root, dir)) {
    auto sizes = list_dir(root, "/sys/kernel/mm/hugepages");
    std::vector<std::string> offered;
    if (sizes)
      for (const auto& s : *sizes)
        if (s.starts_with("hugepages-")) offered.push_back(s.substr(10));
    return Error{"hugepages: this host has no " + size_text(p.size_kib * 1024) + " pages (" +
                 (offered.empty() ? "none offered" : "offered: " + join(offered, ", ")) + ")"};
  }
  auto total = read_count("nr_hugepages");
  if (!total) return Error{total.error()};
  auto free = read_count("free_hugepages");
  if (!free) return Error{free.error()};
  p.total = *total;
  p.free = *free;
  return p;
}

Expected<std::vector<std::string>> select_usb_controllers(const Facts& facts, const nlohmann::json& spec, bool force,
                                                          const std::vector<std::string>& gpu_functions) {
  auto is_usb = [](const PciDevice& d) { return (d.class_code >> 8) == 0x0c03; };
  // Why a controller cannot go alone: its group's other members (bridges aside), or no IOMMU.
  auto blockers = [&](const PciDevice& d) -> std::string {
    if (!d.iommu_group) return "it is in no IOMMU group (the IOMMU is off)";
    std::vector<std::string> peers;
    for (const auto& p : facts.pci)
      if (p.address != d.address && p.iommu_group == d.iommu_group && !p.bridge())
        peers.push_back(p.address + " (" + p.class_name() + ")");
    if (peers.empty()) return "";
    return "IOMMU group " + std::to_string(*d.iommu_group) + " also holds " + join(peers, ", ");
  };
  auto gpu_function = [&](const std::string& a) {
    return std::find(gpu_functions.begin(), gpu_functions.end(), a) != gpu_functions.end();
  };
  std::vector<std::string> out;
  if (spec.is_string()) {  // auto
    std::vector<std::string> all, why_not;
    for (const auto& d : facts.pci) {
      if (!is_usb(d) || gpu_function(d.address)) continue;
      all.push_back(d.address);
      if (auto b = blockers(d); b.empty())
        out.push_back(d.address);
      else
        why_not.push_back(d.address + ": " + b);
    }
    if (out.empty())
      return Error{all.empty() ? "usb_controllers: auto found no USB controller on this host"
                               : "usb_controllers: auto found no USB controller in an IOMMU group of its own (" +
                                     join(why_not, "; ") + ")"};
    if (out.size() == all.size())
      return Error{"usb_controllers: auto would take every USB controller of the host (" + join(out, ", ") +
                   "), leaving it no keyboard: name the ones the VM gets"};
    return out;
  }
  for (const auto& a : spec) {
    auto addr = parse_pci_address(a.get<std::string>());
    auto d = std::find_if(facts.pci.begin(), facts.pci.end(),
                          [&](const PciDevice& p) { return addr && p.address == *addr; });
    if (d == facts.pci.end())
      return Error{"usb_controllers: PCI device " + a.get<std::string>() + " does not exist on this host"};
    if (!is_usb(*d))
      return Error{"usb_controllers: " + d->address + " is a " + d->class_name() + ", not a USB controller"};
    if (gpu_function(d->address)) continue;
    if (auto b = blockers(*d); !b.empty() && !force)
      return Error{"usb_controllers: " + d->address + " cannot be passed through: " + b +
                   " (force: true to go on anyway)"};
    if (std::find(out.begin(), out.end(), d->address) == out.end()) out.push_back(d->address);
  }
  return out;
}

}  // namespace gpt::vm
