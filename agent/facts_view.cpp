#include "agent/facts_view.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "agent/gpu_hold.hpp"
#include "agent/handoff.hpp"
#include "agent/host.hpp"
#include "agent/text.hpp"

namespace gpt {

void name_devices_from_host(const Root& root, Facts& facts) {
  for (const char* path : {"/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"}) {
    auto text = read_file_if_exists(root, path, 64u << 20);
    if (!text || !*text) continue;
    name_pci_devices(facts.pci, **text);
    for (auto& g : facts.gpus)
      for (const auto& d : facts.pci)
        if (d.address == g.address) g.name = d.name;
    return;
  }
}

namespace {

std::string pad(std::string s, size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

const Gpu* gpu_of(const Facts& f, const std::string& address) {
  for (const auto& g : f.gpus)
    if (std::find(g.functions.begin(), g.functions.end(), address) != g.functions.end()) return &g;
  return nullptr;
}

}  // namespace

void print_facts_table(std::ostream& out, const Facts& f) {
  auto row = [&](const std::string& k, const std::string& v) { out << pad(k, 12) << v << "\n"; };
  row("CPU", f.cpu.vendor + (f.cpu.vendor_id.empty() ? "" : " (" + f.cpu.vendor_id + ")") +
                 (f.cpu.has_flag("vmx")   ? ", vmx"
                  : f.cpu.has_flag("svm") ? ", svm"
                                          : ", no vmx/svm") +
                 (f.cpu.model_name.empty() ? "" : ", " + f.cpu.model_name));
  row("Distro", f.os.pretty_name.empty() ? (f.os.id.empty() ? "unknown" : f.os.id) : f.os.pretty_name);
  row("Kernel", f.kernel_release.empty() ? "unknown" : f.kernel_release);
  row("KVM", f.kvm ? "/dev/kvm present" : "no /dev/kvm");
  row("IOMMU", f.iommu.on() ? "on, " + std::to_string(f.iommu.groups) + " groups" +
                                  (f.iommu.units.empty() ? "" : " (" + join(f.iommu.units, ", ") + ")")
                            : "off");
  for (const auto& v : f.iommu_verdicts)
    if (v.level != Verdict::Level::info) row("", v.level_name() + ": " + v.reason);
  row("Secure Boot", !f.secure_boot ? "unknown (no efivars)" : *f.secure_boot ? "on" : "off");
  for (const auto& v : f.host_verdicts)
    if (v.level != Verdict::Level::info) row("", v.level_name() + ": " + v.reason);
  row("Boot", "grub: " + (f.boot.grub.empty() ? std::string("none found") : f.boot.grub) +
                  ", initramfs: " + (f.boot.initramfs.empty() ? std::string("none found") : f.boot.initramfs));
  for (const auto& w : f.warnings) row("Unread", w);

  out << "\n"
      << pad("ADDRESS", 14) << pad("CLASS", 35) << pad("ID", 11) << pad("DRIVER", 16) << pad("GROUP", 7)
      << pad("PASSTHROUGH", 13) << "NAME\n";
  if (f.pci.empty()) out << "(no PCI devices under /sys/bus/pci/devices)\n";
  for (const auto& d : f.pci) {
    char cls[64];
    std::snprintf(cls, sizeof cls, "%s [%04x]", d.class_name().c_str(), d.class_code >> 8);
    const Gpu* g = gpu_of(f, d.address);
    std::string verdict = g ? (g->viable() ? "possible" : "blocked") : "-";
    out << pad(d.address, 14) << pad(cls, 35) << pad(d.id(), 11) << pad(d.driver.empty() ? "-" : d.driver, 16)
        << pad(d.iommu_group ? std::to_string(*d.iommu_group) : "-", 7) << pad(verdict, 13) << d.name << "\n";
    for (const auto& p : d.problems) out << "              ! " << p << "\n";
  }
  out << "\n";
  if (f.gpus.empty()) out << "GPUs: none (no display-class PCI device)\n";
  for (const auto& g : f.gpus) {
    out << "GPU " << g.address << " " << g.id << (g.name.empty() ? "" : " " + g.name) << ": passthrough "
        << (g.viable() ? "possible" : "not possible") << "\n";
    out << "    functions " << join(g.functions, " ");
    if (!g.groups.empty()) {
      std::vector<std::string> groups;
      for (int n : g.groups) groups.push_back(std::to_string(n));
      out << ", IOMMU group " << join(groups, " ");
    }
    out << "\n";
    out << "    reset "
        << (!g.reset_method           ? "unknown"
            : g.reset_method->empty() ? "none"
                                      : *g.reset_method)
        << (g.framebuffer.empty() ? "" : ", boot framebuffer " + g.framebuffer)
        << (g.in_use.empty() ? "" : ", in use by " + g.users()) << "\n";
    for (const auto& v : g.verdicts) out << "    " << v.level_name() << ": " << v.reason << "\n";
  }
  for (const auto& h : f.handoff) {
    std::vector<std::string> units, stopped;
    for (const auto& u : h["units"])
      units.push_back(describe(HandoffUnit{u["name"].get<std::string>(), u.value("user", "")}));
    for (const auto& u : h["stopped"])
      stopped.push_back(describe(HandoffUnit{u["name"].get<std::string>(), u.value("user", "")}));
    out << "Hand-off for VM " << h["vm"].get<std::string>() << ": "
        << join(h["gpus"].get<std::vector<std::string>>(), " ") << "; its hook stops "
        << (units.empty() ? "no unit" : join(units, ", ")) << ", then waits up to " << h["timeout"].get<int>()
        << " s for the GPU\n";
    if (!stopped.empty()) out << "    stopped now, started again when the VM stops: " << join(stopped, ", ") << "\n";
  }
}

namespace {

// Where `path` lands in the copy: resolved in dest as in a root (the links copied so far are
// followed inside it), so that a link the tree holds can never lead a write out of dest. A link
// itself is made where its parent resolves.
std::string in_dest(const Root& copy, const std::string& path, bool link) {
  const size_t slash = path.find_last_of('/');
  auto real = copy.resolve(link ? (slash == 0 ? "/" : path.substr(0, slash)) : path);
  if (!real) return {};
  return link ? (*real == "/" ? "" : *real) + path.substr(slash) : *real;
}

// Creates a file of the capture: never through a link, never over something already there.
bool write_new(const std::string& path, std::string_view content, mode_t mode = 0644) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return false;
  const UniqueFd hold(fd);
  if (::fchmod(fd, mode) != 0) return false;  // what the umask took away
  while (!content.empty()) {
    const ssize_t n = ::write(fd, content.data(), content.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    content.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Copies one path (file or symlink) from the root into dest, keeping links as links.
bool copy_one(const Root& root, const std::string& path, const Root& dest, int& count) {
  namespace fs = std::filesystem;
  const auto link = read_link(root, path);
  const std::string target = in_dest(dest, path, link.has_value());
  if (target.empty()) return false;
  std::error_code ec;
  fs::create_directories(fs::path(target).parent_path(), ec);
  if (link) {
    fs::remove(target, ec);
    fs::create_symlink(*link, target, ec);
    if (!ec) ++count;
    return !ec;
  }
  auto text = read_file(root, path, 4u << 20);
  if (!text || !write_new(target, *text)) return false;
  ++count;
  return true;
}

// The directory a sysfs link points to, made to exist in the copy so the link resolves there.
void copy_link_target_dir(const Root& dest, const std::string& link_path, const std::string& link) {
  std::error_code ec;
  const std::string parent = link_path.substr(0, link_path.find_last_of('/'));
  const std::string target = in_dest(dest, link.starts_with("/") ? link : parent + "/" + link, false);
  if (!target.empty()) std::filesystem::create_directories(target, ec);
}

}  // namespace

namespace {

// Makes `dest` anew (0700) and opens it: nothing another user put there beforehand (a symlink, a
// directory of theirs) can take a write, and everything is then written through the descriptor,
// never through the name, which whoever may write its parent could swap.
Expected<UniqueFd> make_capture_dir(const std::string& dest) {
  if (::mkdir(dest.c_str(), 0700) != 0) {
    if (errno == EEXIST)
      return Error{"--capture " + dest +
                   " already exists: name a new directory (it is made 0700, so that nothing "
                   "already there, a symlink say, can take a write)"};
    return Error{"cannot create " + dest + ": " + std::strerror(errno)};
  }
  UniqueFd fd(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0) return Error{"cannot open " + dest + ": " + std::strerror(errno)};
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
    return Error{dest + " was replaced by someone else's directory as it was made: nothing was captured"};
  return fd;
}

}  // namespace

Expected<int> capture_facts(const Root& root, const std::string& capture_dir) {
  auto dir_fd = make_capture_dir(capture_dir);
  if (!dir_fd) return Error{dir_fd.error()};
  const Root out = Root::at_fd(dir_fd->get());
  const std::string& dest = out.dir();
  std::error_code ec;
  int count = 0;
  for (const char* p :
       {"/proc/cpuinfo", "/proc/cmdline", "/proc/modules", "/proc/sys/kernel/osrelease",
        "/proc/sys/kernel/random/boot_id", "/proc/iomem", "/usr/lib/os-release", "/etc/os-release", kSecureBootVar})
    copy_one(root, p, out, count);
  if (auto rel = read_file(root, "/proc/sys/kernel/osrelease", 256))
    copy_one(root, "/lib/modules/" + std::string(trim(*rel)) + "/modules.builtin", out, count);
  // Presence only: the tools are stand-ins that say what the host has, never copies of programs.
  for (const char* tool :
       {"update-grub", "grub2-mkconfig", "grub-mkconfig", "update-initramfs", "dracut", "mkinitcpio", "grubby"})
    if (auto p = find_program(root, tool)) {
      std::filesystem::create_directories(std::filesystem::path(dest + *p).parent_path(), ec);
      write_new(dest + *p,
                "#!/bin/sh\n# captured by gptagent facts --capture: the host has " + std::string(tool) + "\nexit 1\n",
                0755);
    }
  // ACPI tables: their names only (whether the firmware describes an IOMMU), never their content.
  if (auto tables = list_dir(root, "/sys/firmware/acpi/tables"); tables)
    for (const auto& t : *tables) {
      if (t.find('/') != std::string::npos) continue;
      std::filesystem::create_directories(dest + "/sys/firmware/acpi/tables", ec);
      if (write_new(dest + "/sys/firmware/acpi/tables/" + t, "")) ++count;
    }
  if (path_exists(root, "/dev/kvm")) {
    std::filesystem::create_directories(dest + "/dev", ec);
    write_new(dest + "/dev/kvm", "");
  }
  for (const char* dir : {"/sys/class/iommu"})
    if (auto names = list_dir(root, dir); names)
      for (const auto& n : *names) {
        const std::string p = std::string(dir) + "/" + n;
        if (auto link = read_link(root, p)) copy_link_target_dir(out, p, *link);
        copy_one(root, p, out, count);
      }
  if (auto groups = list_dir(root, "/sys/kernel/iommu_groups"); groups)
    for (const auto& g : *groups) {
      const std::string gdir = "/sys/kernel/iommu_groups/" + g + "/devices";
      std::filesystem::create_directories(dest + gdir, ec);
      if (auto devs = list_dir(root, gdir); devs)
        for (const auto& d : *devs) copy_one(root, gdir + "/" + d, out, count);
    }
  if (auto devs = list_dir(root, "/sys/bus/pci/devices"); devs)
    for (const auto& d : *devs) {
      const std::string link_path = "/sys/bus/pci/devices/" + d;
      auto link = read_link(root, link_path);
      if (!link) continue;
      copy_link_target_dir(out, link_path, *link);
      copy_one(root, link_path, out, count);
      for (const char* attr : {"vendor", "device", "class", "subsystem_vendor", "subsystem_device", "boot_vga",
                               "driver_override", "reset_method", "enable", "resource"})
        copy_one(root, link_path + "/" + attr, out, count);
      if (auto drm = list_dir(root, link_path + "/drm"); drm)
        for (const auto& n : *drm) copy_one(root, link_path + "/drm/" + n + "/dev", out, count);
      copy_one(root, "/proc/driver/nvidia/gpus/" + d + "/information", out, count);
      for (const char* l : {"driver", "iommu_group"}) {
        const std::string lp = link_path + "/" + l;
        auto target = read_link(root, lp);
        if (!target) continue;
        // The link sits in the device's real directory: make its target exist relative to that.
        auto real_dir = root.resolve(link_path);
        std::string rel_dir = real_dir ? real_dir->substr(root.dir() == "/" ? 0 : root.dir().size()) : link_path;
        copy_link_target_dir(out, rel_dir + "/" + l, *target);
        copy_one(root, lp, out, count);
      }
    }
  // The processes that hold a GPU: their names and their GPU files only, nothing else of /proc.
  for (const auto& g : gather_facts(root).gpus)
    for (const auto& u : g.in_use) {
      const std::string proc = "/proc/" + std::to_string(u.pid);
      copy_one(root, proc + "/comm", out, count);
      // argv[0] alone (the name when comm is cut short): the arguments may hold anything.
      if (auto cmdline = read_file(root, proc + "/cmdline", 4096))
        if (const std::string target = in_dest(out, proc + "/cmdline", false);
            !target.empty() && write_new(target, cmdline->substr(0, cmdline->find('\0') + 1)))
          ++count;
      for (const auto& fd : u.fds) copy_one(root, fd, out, count);
    }
  return count;
}

}  // namespace gpt
