#include "agent/gpu_hold.hpp"

#include <algorithm>
#include <array>

#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

// Up to 16 hex digits, with or without 0x (as /proc/iomem and sysfs resource write them).
std::optional<uint64_t> hex64(std::string_view s) { return parse_hex(s, 16); }

bool digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool inside(const MemRange& r, const MemRange& outer) { return r.start >= outer.start && r.end <= outer.end; }

bool sysfb_name(std::string_view name) {
  return name == "BOOTFB" || name == "simpledrm" || name == "simplefb" || name.starts_with("simple-framebuffer");
}

struct ResetFamily {
  const char* family;
  std::vector<const char*> devices;
};

// The device ids of vendor-reset's device database (gnif/vendor-reset, src/device-db.h).
const std::array<ResetFamily, 9> kAmdResetBug = {{
    {"Polaris 10",
     {"67c0", "67c1", "67c2", "67c4", "67c7", "67c8", "67c9", "67ca", "67cc", "67cf", "67d0", "67df", "6fdf"}},
    {"Polaris 11", {"67e0", "67e1", "67e3", "67e7", "67e8", "67e9", "67eb", "67ef", "67ff"}},
    {"Polaris 12", {"6980", "6981", "6985", "6986", "6987", "6995", "6997", "699f"}},
    {"Vega 10",
     {"6860", "6861", "6862", "6863", "6864", "6867", "6868", "6869", "686a", "686b", "686c", "686d", "686e", "686f",
      "687f"}},
    {"Vega 20", {"66a0", "66a1", "66a2", "66a3", "66a4", "66a7", "66af", "738c"}},
    {"Navi 10", {"7310", "7312", "7318", "7319", "731a", "731b", "731e", "731f"}},
    {"Navi 12", {"7360", "7362"}},
    {"Navi 14", {"7340", "7341", "7347", "734f"}},
    {"Navi 23", {"73ff"}},
}};

// comm is cut at 15 characters (gnome-remote-de): the program's own name from argv[0] then,
// when it starts the same way.
std::string process_name(const Root& root, const std::string& proc, std::string_view comm) {
  if (comm.size() != 15) return std::string(comm);
  auto cmdline = read_file(root, proc + "/cmdline", 4096);
  if (!cmdline) return std::string(comm);
  std::string_view argv0 = std::string_view(*cmdline).substr(0, cmdline->find('\0'));
  argv0 = argv0.substr(argv0.find_last_of('/') + 1);
  return argv0.starts_with(comm) ? std::string(argv0) : std::string(comm);
}

// How the GPU resets between VM starts: not at all (an empty reset_method), or through a bug of
// its AMD family that vendor-reset works around.
void reset_verdicts(const Facts& f, const PciDevice& dev, Gpu& g) {
  g.reset_method = dev.reset_method;
  if (g.reset_method && g.reset_method->empty())
    g.verdicts.push_back({Verdict::Level::warning,
                          "GPU " + g.address +
                              " has no reset method (reset_method is empty): "
                              "the kernel cannot reset it between VM starts, a VM restart may need a host reboot"});
  auto family = amd_reset_bug(dev.vendor, dev.device);
  if (!family) return;
  g.reset_bug = *family;
  const std::string what = "AMD " + *family + " (" + dev.id() + ")";
  const std::vector<std::string> methods = g.reset_method ? words(*g.reset_method) : std::vector<std::string>{};
  const bool device_specific = std::find(methods.begin(), methods.end(), "device_specific") != methods.end();
  if (!f.module_available("vendor_reset"))
    g.verdicts.push_back(
        {Verdict::Level::warning, what + " cannot be reset reliably between VM starts: install vendor-reset"});
  else if (g.reset_method && !device_specific)
    g.verdicts.push_back(
        {Verdict::Level::warning, what + ": vendor-reset is loaded but the kernel resets it by " +
                                      (g.reset_method->empty() ? std::string("nothing") : *g.reset_method) +
                                      ": echo device_specific > /sys/bus/pci/devices/" + g.address + "/reset_method"});
  else
    g.verdicts.push_back({Verdict::Level::info, what + ": vendor-reset resets it"});
}

}  // namespace

Iomem parse_iomem(std::string_view text) {
  Iomem out;
  bool all_zero = true;
  for (std::string_view line : lines(text)) {
    size_t indent = line.find_first_not_of(' ');
    if (indent == std::string_view::npos) continue;
    std::string_view rest = line.substr(indent);
    const size_t dash = rest.find('-'), colon = rest.find(" : ");
    if (dash == std::string_view::npos || colon == std::string_view::npos || dash > colon) continue;
    auto start = hex64(rest.substr(0, dash)), end = hex64(trim(rest.substr(dash + 1, colon - dash - 1)));
    if (!start || !end || *end < *start) continue;
    all_zero = all_zero && *start == 0 && *end == 0;
    out.ranges.push_back({*start, *end, std::string(trim(rest.substr(colon + 3))), static_cast<int>(indent / 2)});
  }
  out.zeroed = !out.ranges.empty() && all_zero;
  return out;
}

std::vector<MemRange> parse_pci_resource(std::string_view text) {
  constexpr uint64_t kIoresourceMem = 0x200;
  std::vector<MemRange> out;
  for (std::string_view line : lines(text)) {
    auto w = words(line);
    if (w.size() != 3) continue;
    auto start = hex64(w[0]), end = hex64(w[1]), flags = hex64(w[2]);
    if (!start || !end || !flags || *end <= *start || !(*flags & kIoresourceMem)) continue;
    out.push_back({*start, *end, "", 0});
  }
  return out;
}

bool boot_framebuffer_name(std::string_view name) { return name == "efifb" || name == "vesafb" || sysfb_name(name); }

std::optional<std::string> framebuffer_in(const Iomem& iomem, const std::vector<MemRange>& bars) {
  if (iomem.zeroed) return std::nullopt;
  std::optional<std::string> found;
  for (const auto& r : iomem.ranges) {
    if (!boot_framebuffer_name(r.name)) continue;
    if (std::none_of(bars.begin(), bars.end(), [&](const MemRange& b) { return inside(r, b); })) continue;
    if (!found || *found == "BOOTFB") found = r.name;
  }
  return found;
}

std::string framebuffer_release_param(const Iomem& iomem, std::string_view kernel_release,
                                      std::string_view framebuffer) {
  const bool sysfb =
      kernel_version(kernel_release) >= std::pair{5, 15} ||
      std::any_of(iomem.ranges.begin(), iomem.ranges.end(), [](const MemRange& r) { return sysfb_name(r.name); });
  if (sysfb) return "initcall_blacklist=sysfb_init";
  return framebuffer == "vesafb" ? "video=vesafb:off" : "video=efifb:off";
}

std::optional<std::string> amd_reset_bug(std::string_view vendor, std::string_view device) {
  if (vendor != "1002") return std::nullopt;
  const std::string dev = lower(device);
  for (const auto& f : kAmdResetBug)
    for (const char* d : f.devices)
      if (dev == d) return std::string(f.family);
  return std::nullopt;
}

std::optional<bool> parse_secure_boot(std::string_view efivar) {
  if (efivar.size() < 5) return std::nullopt;
  const auto v = static_cast<unsigned char>(efivar[4]);
  if (v > 1) return std::nullopt;
  return v == 1;
}

ProcScan scan_gpu_nodes(const Root& root, size_t max_fds) {
  ProcScan out;
  auto pids = list_dir(root, "/proc");
  if (!pids) return out;
  for (const auto& pid : *pids) {
    if (!digits(pid) || pid.size() > 9) continue;
    const std::string proc = "/proc/" + pid;
    auto fds = list_dir(root, proc + "/fd");
    if (!fds) continue;  // another user's process without the right to look, or gone
    std::vector<OpenNode> found;
    size_t looked = 0;
    for (const auto& fd : *fds) {
      if (looked++ == max_fds) break;
      const std::string path = proc + "/fd/" + fd;
      auto link = read_link(root, path);
      if (!link ||
          !(link->starts_with("/dev/dri/") || link->starts_with("/dev/nvidia") || link->starts_with("/dev/i2c-")))
        continue;
      found.push_back({std::stol(pid), "", path, *link});
    }
    if (found.empty() && fds->size() <= max_fds) continue;
    auto comm = read_file(root, proc + "/comm", 256);
    if (!comm) continue;  // it ended while we looked
    const std::string name = process_name(root, proc, trim(*comm));
    if (fds->size() > max_fds) out.capped.push_back(name + " (pid " + pid + ")");
    for (auto& f : found) {
      f.comm = name;
      out.open.push_back(std::move(f));
    }
  }
  return out;
}

bool GpuNodes::match(std::string_view node) const {
  if (std::find(nodes.begin(), nodes.end(), node) != nodes.end()) return true;
  return any_nvidia_minor && node.starts_with("/dev/nvidia") && digits(node.substr(11));
}

GpuNodes gpu_nodes(const Root& root, const PciDevice& display) {
  GpuNodes out;
  for (const auto& n : display.drm) out.nodes.push_back("/dev/dri/" + n);
  // Its I2C adapters (DDC, where a monitor's brightness is set): the device's own, and its DRM
  // connectors' (DisplayPort AUX), each /dev/i2c-N once i2c-dev is loaded.
  const std::string dir = "/sys/bus/pci/devices/" + display.address;
  auto i2c_in = [&](const std::string& d) {
    if (auto entries = list_dir(root, d))
      for (const auto& e : *entries)
        if (e.starts_with("i2c-") && digits(e.substr(4))) out.nodes.push_back("/dev/" + e);
  };
  i2c_in(dir);
  for (const auto& card : display.drm)
    if (card.starts_with("card"))
      if (auto connectors = list_dir(root, dir + "/drm/" + card))
        for (const auto& c : *connectors)
          if (c.starts_with(card + "-")) i2c_in(dir + "/drm/" + card + "/" + c);
  if (display.driver != "nvidia") return out;
  out.nodes.insert(out.nodes.end(), {"/dev/nvidiactl", "/dev/nvidia-modeset"});
  out.any_nvidia_minor = true;
  auto info = read_file(root, "/proc/driver/nvidia/gpus/" + display.address + "/information", 64u << 10);
  if (!info) return out;
  for (std::string_view line : lines(*info)) {
    auto colon = line.find(':');
    if (colon == std::string_view::npos || trim(line.substr(0, colon)) != "Device Minor") continue;
    const std::string_view minor = trim(line.substr(colon + 1));
    if (!digits(minor) || minor.size() > 6) break;
    out.nodes.push_back("/dev/nvidia" + std::string(minor));
    out.any_nvidia_minor = false;
  }
  return out;
}

void expert_checks(const Root& root, Facts& f) {
  if (auto sb = read_file_if_exists(root, kSecureBootVar, 64); sb && *sb) {
    f.secure_boot = parse_secure_boot(**sb);
    if (f.secure_boot == true)
      f.host_verdicts.push_back({Verdict::Level::warning,
                                 "Secure Boot is on: out-of-tree kernel modules (vendor-reset, the nvidia driver) load "
                                 "only when signed with a key enrolled in MOK (mokutil --import)"});
    else if (f.secure_boot == false)
      f.host_verdicts.push_back({Verdict::Level::info, "Secure Boot is off"});
  } else if (!sb) {
    f.warnings.push_back(sb.error());
    f.errors.push_back(sb.error());
  }

  Iomem iomem;
  if (auto text = read_file_if_exists(root, "/proc/iomem", 4u << 20); text && *text) {
    iomem = parse_iomem(**text);
    if (iomem.zeroed)
      f.host_verdicts.push_back({Verdict::Level::warning,
                                 "/proc/iomem shows every address as 0 (it was read without root): whether a boot "
                                 "framebuffer holds a GPU's memory is unknown"});
  } else if (!text) {
    f.warnings.push_back(text.error());
    f.errors.push_back(text.error());
  }

  const ProcScan scan = f.gpus.empty() ? ProcScan{} : scan_gpu_nodes(root);
  for (const auto& p : scan.capped)
    f.host_verdicts.push_back({Verdict::Level::warning,
                               p + " has more open files than gptagent looks at: whether it holds a GPU is unknown"});

  for (auto& g : f.gpus) {
    auto dev = std::find_if(f.pci.begin(), f.pci.end(), [&](const PciDevice& d) { return d.address == g.address; });
    if (dev == f.pci.end()) continue;
    reset_verdicts(f, *dev, g);
    // BARs from sysfs, and the ranges iomem names after the device (captures without `resource`).
    std::vector<MemRange> bars = dev->bars;
    for (const auto& r : iomem.ranges)
      if (r.name == g.address) bars.push_back(r);
    if (auto fb = framebuffer_in(iomem, bars)) {
      g.framebuffer = *fb;
      g.framebuffer_param = framebuffer_release_param(iomem, f.kernel_release, *fb);
      g.verdicts.push_back(
          {Verdict::Level::warning, "the boot framebuffer (" + *fb + ") holds memory of GPU " + g.address +
                                        ": the host console keeps it; `framebuffer: release` on kernel_cmdline adds " +
                                        g.framebuffer_param});
    }
    const GpuNodes nodes = gpu_nodes(root, *dev);
    for (const auto& o : scan.open) {
      if (!nodes.match(o.node)) continue;
      auto user = std::find_if(g.in_use.begin(), g.in_use.end(), [&](const GpuUser& u) { return u.pid == o.pid; });
      if (user == g.in_use.end()) user = g.in_use.insert(g.in_use.end(), GpuUser{o.pid, o.comm, {}, {}});
      if (std::find(user->nodes.begin(), user->nodes.end(), o.node) == user->nodes.end()) user->nodes.push_back(o.node);
      user->fds.push_back(o.fd);
    }
    if (!g.in_use.empty())
      g.verdicts.push_back(
          {Verdict::Level::warning, "GPU " + g.address + " is in use by " + g.users() + ": stop them before binding"});
  }
}

}  // namespace gpt
