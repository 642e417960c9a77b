// What holds a GPU on a running host: processes with its device nodes open, the boot framebuffer
// in its memory, its reset, Secure Boot. Sample trees get what a running desktop adds to them.
#include "agent/gpu_hold.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/desktop.hpp"
#include "tests/support/verdicts.hpp"

namespace gpt {
namespace {

using test::gpu;
using test::says;

using Lines = std::vector<std::string>;

bool mentions(const std::vector<Verdict>& verdicts, const std::string& text) {
  return std::any_of(verdicts.begin(), verdicts.end(),
                     [&](const Verdict& v) { return v.reason.find(text) != std::string::npos; });
}

using test::add_drm;
using test::add_process;

// Ubuntu 24.04's desktop: the RTX 3080 (nvidia, minor 0) and the iGPU (amdgpu) with their DRM
// nodes; Xorg on both, the remote-desktop server on the RTX's render node, Firefox on the iGPU's.
struct Desktop {
  test::SampleHost h{"ubuntu-24.04"};
  Desktop() {
    add_drm(h, "0000:0c:00.0", {"card0", "renderD128"});
    add_drm(h, "0000:01:00.0", {"card1", "renderD129"});
    test::write(
        h.file("/proc/driver/nvidia/gpus/0000:01:00.0/information"),
        "Model: \t\t NVIDIA GeForce RTX 3080\nIRQ:   \t\t 148\nDevice Minor: \t 0\nBus Location: \t 0000:01:00.0\n");
    add_process(h, 999, "Xorg",
                {{0, "/dev/null"}, {11, "/dev/dri/card0"}, {12, "/dev/nvidiactl"}, {13, "/dev/nvidia0"}},
                "/usr/lib/xorg/Xorg");
    add_process(h, 1234, "gnome-remote-de",
                {{3, "socket:[52311]"}, {21, "/dev/dri/renderD129"}, {22, "/dev/dri/renderD129"}},
                "/usr/libexec/gnome-remote-desktop-daemon");
    add_process(h, 2000, "firefox", {{40, "/dev/dri/renderD128"}, {41, "anon_inode:[eventfd]"}});
    add_process(h, 2100, "bash", {{0, "/dev/pts/0"}, {1, "/dev/pts/0"}});
    // Ended while gptagent looked: its fd directory is there, its comm is gone.
    std::filesystem::create_directories(h.file("/proc/3000/fd"));
    std::filesystem::create_symlink("/dev/nvidia0", h.file("/proc/3000/fd/4"));
  }
};

TEST(GpuInUse, ProcessesHoldingTheGpusNodesAreNamed) {
  Desktop d;
  Facts f = gather_facts(Root(d.h.root()));
  const Gpu& rtx = gpu(f, "0000:01:00.0");
  ASSERT_EQ(rtx.in_use.size(), 2u);
  EXPECT_EQ(rtx.in_use[0].pid, 1234);
  EXPECT_EQ(rtx.in_use[0].comm, "gnome-remote-desktop-daemon");  // comm is cut at 15 characters: argv[0] says more
  EXPECT_EQ(rtx.in_use[0].nodes, Lines{"/dev/dri/renderD129"});
  EXPECT_EQ(rtx.in_use[1].comm, "Xorg");
  EXPECT_EQ(rtx.in_use[1].nodes, (Lines{"/dev/nvidiactl", "/dev/nvidia0"}));
  EXPECT_TRUE(says(rtx.verdicts, Verdict::Level::warning,
                   "GPU 0000:01:00.0 is in use by gnome-remote-desktop-daemon (pid 1234), Xorg (pid 999): stop them "
                   "before binding"));
  EXPECT_TRUE(rtx.viable()) << "in use is a warning, not a blocker";
  // Firefox holds only the iGPU's render node: it is not named for the RTX, and the RTX's nodes
  // do not make Xorg's iGPU list longer.
  const Gpu& igpu = gpu(f, "0000:0c:00.0");
  ASSERT_EQ(igpu.in_use.size(), 2u);
  EXPECT_EQ(igpu.in_use[0].comm, "firefox");
  EXPECT_EQ(igpu.in_use[1].comm, "Xorg");
  EXPECT_EQ(igpu.in_use[1].nodes, Lines{"/dev/dri/card0"});
  EXPECT_TRUE(f.host_verdicts.empty() || !mentions(f.host_verdicts, "open files"));
}

// powerdevil (KDE) and ddcutil set a monitor's brightness over the GPU's I2C buses (DDC): a
// process with one of the card's /dev/i2c-N open holds the card too. Adapters are the device's
// own (nvidia, amdgpu) or its DRM connectors' (DisplayPort AUX); another device's are not its.
TEST(GpuInUse, TheGpusI2cAdaptersCountAsHoldingIt) {
  Desktop d;
  std::filesystem::create_directories(d.h.file("/sys/bus/pci/devices/0000:01:00.0/i2c-4"));
  std::filesystem::create_directories(d.h.file("/sys/bus/pci/devices/0000:01:00.0/drm/card1/card1-DP-1/i2c-7"));
  std::filesystem::create_directories(d.h.file("/sys/bus/pci/devices/0000:0c:00.0/i2c-2"));
  add_process(d.h, 5000, "powerdevil", {{9, "/dev/i2c-4"}, {10, "/dev/i2c-2"}});
  add_process(d.h, 5100, "ddcutil", {{3, "/dev/i2c-7"}});
  Facts f = gather_facts(Root(d.h.root()));
  const auto& users = gpu(f, "0000:01:00.0").in_use;
  ASSERT_EQ(users.size(), 4u);  // in /proc's order: 1234, 5000, 5100, 999
  EXPECT_EQ(users[1].comm, "powerdevil");
  EXPECT_EQ(users[1].nodes, Lines{"/dev/i2c-4"});
  EXPECT_EQ(users[2].comm, "ddcutil");
  EXPECT_EQ(users[2].nodes, Lines{"/dev/i2c-7"});
  const auto& igpu = gpu(f, "0000:0c:00.0").in_use;
  ASSERT_EQ(igpu.size(), 3u);
  EXPECT_EQ(igpu[1].comm, "powerdevil");
  EXPECT_EQ(igpu[1].nodes, Lines{"/dev/i2c-2"});
}

TEST(GpuInUse, WithoutItsMinorAnyNvidiaNodeCountsAndOtherDriversNeverDo) {
  Desktop d;
  std::filesystem::remove_all(d.h.file("/proc/driver"));
  add_process(d.h, 4000, "nvidia-smi", {{3, "/dev/nvidia1"}});
  Facts f = gather_facts(Root(d.h.root()));
  const auto& users = gpu(f, "0000:01:00.0").in_use;
  ASSERT_EQ(users.size(), 3u);
  EXPECT_EQ(users[1].comm, "nvidia-smi");
  // On nouveau the same links mean nothing for this GPU: only its DRM nodes do.
  test::SampleHost fedora("fedora-40");
  add_process(fedora, 999, "Xorg", {{3, "/dev/nvidia0"}, {4, "/dev/nvidiactl"}});
  Facts nouveau = gather_facts(Root(fedora.root()));
  EXPECT_TRUE(gpu(nouveau, "0000:01:00.0").in_use.empty());
  EXPECT_FALSE(mentions(gpu(nouveau, "0000:01:00.0").verdicts, "in use"));
}

TEST(GpuInUse, AProcessWithTooManyFilesIsCutShortAndSaidSo) {
  Desktop d;
  std::map<int, std::string> many;
  for (int fd = 0; fd < 5000; ++fd) many[fd] = "/dev/null";
  add_process(d.h, 5000, "chrome", many);
  Root root(d.h.root());
  ProcScan scan = scan_gpu_nodes(root, 4096);
  EXPECT_EQ(scan.capped, Lines{"chrome (pid 5000)"});
  Facts f = gather_facts(root);
  EXPECT_TRUE(says(f.host_verdicts, Verdict::Level::warning,
                   "chrome (pid 5000) has more open files than gptagent looks at: whether it holds a GPU is unknown"));
  EXPECT_EQ(gpu(f, "0000:01:00.0").in_use.size(), 2u);
}

// ---- the boot framebuffer ----

// /proc/iomem of the Ubuntu desktop: simpledrm (through sysfb's BOOTFB) in the RTX's 64-bit BAR,
// the iGPU's window elsewhere.
const char* const kIomemRtx =
    "00000000-00000fff : Reserved\n"
    "00001000-0009ffff : System RAM\n"
    "00100000-09bfefff : System RAM\n"
    "  04000000-04e01fff : Kernel code\n"
    "d0000000-fec2ffff : PCI Bus 0000:00\n"
    "  d0000000-dfffffff : PCI Bus 0000:0c\n"
    "    d0000000-dfffffff : 0000:0c:00.0\n"
    "  f6000000-f70fffff : PCI Bus 0000:01\n"
    "    f6000000-f6ffffff : 0000:01:00.0\n"
    "      f6000000-f6ffffff : nvidia\n"
    "    f7080000-f7083fff : 0000:01:00.1\n"
    "      f7080000-f7083fff : ICH HD audio\n"
    "fc00000000-fe0fffffff : PCI Bus 0000:00\n"
    "  fc00000000-fe01ffffff : PCI Bus 0000:01\n"
    "    fc00000000-fdffffffff : 0000:01:00.0\n"
    "      fc00000000-fc007e8fff : BOOTFB\n"
    "        fc00000000-fc007e8fff : simpledrm\n"
    "    fe00000000-fe01ffffff : 0000:01:00.0\n";

// sysfs `resource` of the RTX 3080: BAR0, BAR1 (64-bit prefetchable), BAR3, the I/O BAR, the ROM.
const char* const kResourceRtx =
    "0x00000000f6000000 0x00000000f6ffffff 0x0000000000040200\n"
    "0x000000fc00000000 0x000000fdffffffff 0x000000000014220c\n"
    "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
    "0x000000fe00000000 0x000000fe01ffffff 0x000000000014220c\n"
    "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
    "0x000000000000f000 0x000000000000f07f 0x0000000000040101\n"
    "0x00000000f7000000 0x00000000f707ffff 0x0000000000046200\n"
    "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";

// The efivar's attributes (NV, BS, RT) and its value.
const std::string kSecureBootOn("\x06\0\0\0\x01", 5), kSecureBootOff("\x06\0\0\0\0", 5);

// The desktop booted through UEFI with Secure Boot on, simpledrm in the RTX's BAR.
void boot_through_uefi(const Desktop& d) {
  test::write(d.h.file("/proc/iomem"), kIomemRtx);
  test::write(d.h.file("/sys/bus/pci/devices/0000:01:00.0/resource"), kResourceRtx);
  test::write(d.h.file(kSecureBootVar), kSecureBootOn);
}

TEST(BootFramebuffer, IomemNestingAndBars) {
  Iomem m = parse_iomem(kIomemRtx);
  ASSERT_EQ(m.ranges.size(), 18u);
  EXPECT_FALSE(m.zeroed);
  EXPECT_EQ(m.ranges[16].name, "simpledrm");
  EXPECT_EQ(m.ranges[16].depth, 4);
  EXPECT_EQ(m.ranges[16].start, 0xfc00000000u);
  EXPECT_EQ(m.ranges[16].end, 0xfc007e8fffu);
  auto bars = parse_pci_resource(kResourceRtx);
  ASSERT_EQ(bars.size(), 4u);  // the I/O BAR and the empty lines are no memory
  EXPECT_EQ(bars[1].start, 0xfc00000000u);
  EXPECT_EQ(framebuffer_in(m, bars), "simpledrm");  // the driver's name rather than sysfb's BOOTFB
  EXPECT_EQ(framebuffer_in(m, {bars[0]}), std::nullopt);
  // Without root every address reads 0: nothing is inside anything.
  Iomem zero = parse_iomem("00000000-00000000 : Reserved\n  00000000-00000000 : efifb\n");
  EXPECT_TRUE(zero.zeroed);
  EXPECT_EQ(framebuffer_in(zero, {{0, 0, "", 0}}), std::nullopt);
  EXPECT_TRUE(parse_iomem("garbage\n-\n12-4 : backwards\n").ranges.empty());
}

TEST(BootFramebuffer, TheParameterFitsTheKernel) {
  Iomem efifb = parse_iomem("e0000000-efffffff : 0000:01:00.0\n  e0000000-e07e8fff : efifb\n");
  EXPECT_EQ(framebuffer_release_param(efifb, "6.1.0-18-amd64", "efifb"), "initcall_blacklist=sysfb_init");
  EXPECT_EQ(framebuffer_release_param(efifb, "5.15.0-105-generic", "efifb"), "initcall_blacklist=sysfb_init");
  EXPECT_EQ(framebuffer_release_param(efifb, "5.10.0-28-amd64", "efifb"), "video=efifb:off");
  EXPECT_EQ(framebuffer_release_param(efifb, "4.18.0-513.el8.x86_64", "vesafb"), "video=vesafb:off");
  // A backported sysfb shows itself in iomem whatever the version says.
  Iomem simplefb = parse_iomem("e0000000-efffffff : 0000:01:00.0\n  e0000000-e07e8fff : BOOTFB\n");
  EXPECT_EQ(framebuffer_release_param(simplefb, "5.14.0-362.el9.x86_64", "BOOTFB"), "initcall_blacklist=sysfb_init");
}

TEST(BootFramebuffer, AFramebufferInTheGpusBarIsAWarningOneOutsideIsNot) {
  Desktop d;
  test::write(d.h.file("/proc/iomem"), kIomemRtx);
  test::write(d.h.file("/sys/bus/pci/devices/0000:01:00.0/resource"), kResourceRtx);
  Facts f = gather_facts(Root(d.h.root()));
  const Gpu& rtx = gpu(f, "0000:01:00.0");
  EXPECT_EQ(rtx.framebuffer, "simpledrm");
  EXPECT_EQ(rtx.framebuffer_param, "initcall_blacklist=sysfb_init");
  EXPECT_TRUE(says(rtx.verdicts, Verdict::Level::warning,
                   "the boot framebuffer (simpledrm) holds memory of GPU 0000:01:00.0: the host console keeps it; "
                   "`framebuffer: release` on kernel_cmdline adds initcall_blacklist=sysfb_init"));
  EXPECT_TRUE(gpu(f, "0000:0c:00.0").framebuffer.empty());

  // Debian 11's kernel with efifb in the iGPU's window (no `resource`: the range iomem names after
  // the device counts): the iGPU is held, the RTX is not.
  test::write(d.h.file("/proc/sys/kernel/osrelease"), "5.10.0-28-amd64\n");
  test::write(d.h.file("/proc/iomem"),
              "d0000000-fec2ffff : PCI Bus 0000:00\n  d0000000-dfffffff : 0000:0c:00.0\n    d0000000-d07e8fff : efifb\n"
              "  f6000000-f6ffffff : 0000:01:00.0\n");
  Facts old = gather_facts(Root(d.h.root()));
  EXPECT_TRUE(gpu(old, "0000:01:00.0").framebuffer.empty());
  EXPECT_FALSE(mentions(gpu(old, "0000:01:00.0").verdicts, "boot framebuffer"));
  EXPECT_EQ(gpu(old, "0000:0c:00.0").framebuffer, "efifb");
  EXPECT_TRUE(says(gpu(old, "0000:0c:00.0").verdicts, Verdict::Level::warning, "adds video=efifb:off"));

  // Read without root: unknown, and said so once for the host.
  test::write(d.h.file("/proc/iomem"), "00000000-00000000 : PCI Bus 0000:00\n  00000000-00000000 : efifb\n");
  Facts zero = gather_facts(Root(d.h.root()));
  EXPECT_TRUE(gpu(zero, "0000:0c:00.0").framebuffer.empty());
  EXPECT_TRUE(says(zero.host_verdicts, Verdict::Level::warning, "/proc/iomem shows every address as 0"));
}

// ---- reset ----

TEST(GpuReset, AmdFamiliesFromVendorResetsList) {
  EXPECT_EQ(amd_reset_bug("1002", "731f"), "Navi 10");
  EXPECT_EQ(amd_reset_bug("1002", "67DF"), "Polaris 10");
  EXPECT_EQ(amd_reset_bug("1002", "687f"), "Vega 10");
  EXPECT_EQ(amd_reset_bug("1002", "66af"), "Vega 20");
  EXPECT_EQ(amd_reset_bug("1002", "7340"), "Navi 14");
  EXPECT_EQ(amd_reset_bug("1002", "73bf"), std::nullopt);  // Navi 21 resets
  EXPECT_EQ(amd_reset_bug("10de", "731f"), std::nullopt);
}

TEST(GpuReset, NoResetMethodAndTheAmdResetBugAreWarnings) {
  test::SampleHost h("ubuntu-24.04");
  const std::string dev = h.file("/sys/bus/pci/devices/0000:01:00.0");
  Facts flr = gather_facts(Root(h.root()));
  EXPECT_EQ(gpu(flr, "0000:01:00.0").reset_method, "flr");
  EXPECT_FALSE(mentions(gpu(flr, "0000:01:00.0").verdicts, "reset"));
  EXPECT_EQ(gpu(flr, "0000:0c:00.0").reset_method, std::nullopt);  // no file: a kernel before 5.15 says nothing

  test::write(dev + "/reset_method", "\n");
  Facts none = gather_facts(Root(h.root()));
  EXPECT_EQ(gpu(none, "0000:01:00.0").reset_method, "");
  EXPECT_TRUE(
      says(gpu(none, "0000:01:00.0").verdicts, Verdict::Level::warning, "GPU 0000:01:00.0 has no reset method"));

  // An RX 5700 XT in the same slot.
  test::write(dev + "/vendor", "0x1002\n");
  test::write(dev + "/device", "0x731f\n");
  test::write(dev + "/reset_method", "bus\n");
  Facts navi = gather_facts(Root(h.root()));
  EXPECT_EQ(gpu(navi, "0000:01:00.0").reset_bug, "Navi 10");
  EXPECT_TRUE(says(gpu(navi, "0000:01:00.0").verdicts, Verdict::Level::warning,
                   "AMD Navi 10 (1002:731f) cannot be reset reliably between VM starts: install vendor-reset"));
  // vendor-reset loaded and chosen as the reset method: handled.
  test::write(h.file("/proc/modules"),
              test::slurp(h.file("/proc/modules")) + "vendor_reset 94208 0 - Live 0x0000000000000000 (OE)\n");
  test::write(dev + "/reset_method", "device_specific\n");
  Facts fixed = gather_facts(Root(h.root()));
  EXPECT_FALSE(mentions(gpu(fixed, "0000:01:00.0").verdicts, "install vendor-reset"));
  EXPECT_TRUE(says(gpu(fixed, "0000:01:00.0").verdicts, Verdict::Level::info, "vendor-reset resets it"));
}

// ---- Secure Boot ----

TEST(SecureBoot, TheEfivarSaysOnOrOff) {
  EXPECT_EQ(parse_secure_boot(kSecureBootOn), true);
  EXPECT_EQ(parse_secure_boot(kSecureBootOff), false);
  EXPECT_EQ(parse_secure_boot(std::string("\x06\0\0", 3)), std::nullopt);
  test::SampleHost h("ubuntu-24.04");
  Facts unknown = gather_facts(Root(h.root()));
  EXPECT_EQ(unknown.secure_boot, std::nullopt);  // no efivars: BIOS boot, or not mounted
  test::write(h.file(kSecureBootVar), kSecureBootOn);
  Facts on = gather_facts(Root(h.root()));
  EXPECT_EQ(on.secure_boot, true);
  EXPECT_TRUE(says(on.host_verdicts, Verdict::Level::warning,
                   "Secure Boot is on: out-of-tree kernel modules (vendor-reset, the nvidia driver)"));
  test::write(h.file(kSecureBootVar), kSecureBootOff);
  Facts off = gather_facts(Root(h.root()));
  EXPECT_EQ(off.secure_boot, false);
  EXPECT_FALSE(says(off.host_verdicts, Verdict::Level::warning, "Secure Boot"));
}

// ---- what users see ----

TEST(ExpertChecks, FactsJsonAndTableShowThem) {
  Desktop d;
  boot_through_uefi(d);
  auto r = test::run_agent({"facts", "--json", "--root", d.h.root()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["secure_boot"], true);
  EXPECT_EQ(j["host_verdicts"][0]["level"], "warning");
  const auto& g = j["gpus"][0];
  ASSERT_EQ(g["address"], "0000:01:00.0");
  EXPECT_EQ(
      g["in_use"][0],
      (nlohmann::json{{"pid", 1234}, {"comm", "gnome-remote-desktop-daemon"}, {"nodes", {"/dev/dri/renderD129"}}}));
  EXPECT_EQ(g["in_use"][1]["comm"], "Xorg");
  EXPECT_EQ(g["framebuffer"],
            (nlohmann::json{{"name", "simpledrm"}, {"release_param", "initcall_blacklist=sysfb_init"}}));
  EXPECT_EQ(g["reset_method"], "flr");
  EXPECT_EQ(g["reset_bug"], nullptr);
  EXPECT_EQ(j["gpus"][1]["reset_method"], nullptr);
  EXPECT_EQ(j["gpus"][1]["framebuffer"], nullptr);

  auto table = test::run_agent({"facts", "--root", d.h.root()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("Secure Boot on\n"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("    reset flr, boot framebuffer simpledrm, in use by gnome-remote-desktop-daemon (pid "
                           "1234), Xorg (pid 999)\n"),
            std::string::npos)
      << table.out;
}

TEST(ExpertChecks, CaptureKeepsWhatTheChecksRead) {
  Desktop d;
  boot_through_uefi(d);
  test::TempDir capture;
  auto c = test::run_agent({"facts", "--root", d.h.root(), "--capture", capture / "host"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto original = nlohmann::json::parse(test::run_agent({"facts", "--json", "--root", d.h.root()}).out);
  auto replayed = nlohmann::json::parse(test::run_agent({"facts", "--json", "--root", capture / "host"}).out);
  EXPECT_EQ(replayed, original);
  // Only the processes that hold a GPU are in the capture, and only their GPU files.
  EXPECT_TRUE(test::exists(capture / "host/proc/999/fd/13"));
  EXPECT_FALSE(test::exists(capture / "host/proc/999/fd/0"));
  EXPECT_FALSE(test::exists(capture / "host/proc/2100"));
}

TEST(ExpertChecks, PreflightWarnsAndGoesOn) {
  Desktop d;
  test::write(d.h.file(kSecureBootVar), kSecureBootOn);
  auto r = test::converge_root(d.h.root(), "tasks:\n  - preflight: {gpus: ['0000:01:00.0']}\n", true);
  EXPECT_EQ(r.exit_code, 0);
  const std::string& msg = r.tasks[0].result.msg;
  EXPECT_NE(msg.find("passthrough possible for 0000:01:00.0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Secure Boot is on"), std::string::npos) << msg;
  EXPECT_NE(msg.find("GPU 0000:01:00.0 is in use by gnome-remote-desktop-daemon (pid 1234), Xorg (pid 999)"),
            std::string::npos)
      << msg;
}

// ---- vfio_bind and a GPU in use ----

TEST(VfioBindInUse, RefusesToUnbindAGpuInUseUnlessForced) {
  // Fedora's RTX 2070 on nouveau, with Xorg on its card node.
  test::SampleHost h("fedora-40");
  test::write(h.file("/sys/bus/pci/drivers_probe"), "");
  add_drm(h, "0000:01:00.0", {"card1", "renderD129"});
  add_process(h, 999, "Xorg", {{14, "/dev/dri/card1"}});
  const auto pristine = test::snapshot(h.root());
  const std::string pb = "tasks:\n  - vfio_bind: {gpus: ['0000:01:00.0']}\n";
  auto check = test::converge_root(h.root(), pb, true);
  auto refused = test::converge_root(h.root(), pb, false);
  for (const auto* r : {&check, &refused}) {
    EXPECT_EQ(r->exit_code, 1);
    EXPECT_TRUE(r->sysfs_writes.empty());
    EXPECT_TRUE(r->commands.empty());
    EXPECT_EQ(r->tasks.back().result.status, Outcome::failed);
    EXPECT_EQ(
        r->tasks.back().result.msg,
        "GPU 0000:01:00.0 is in use by Xorg (pid 999): stop them before binding (nothing was unbound; force: true "
        "unbinds it anyway)");
  }
  EXPECT_EQ(test::snapshot(h.root()), pristine);

  const std::string forced = "tasks:\n  - vfio_bind: {gpus: ['0000:01:00.0'], force: true}\n";
  auto fcheck = test::converge_root(h.root(), forced, true);
  EXPECT_EQ(fcheck.exit_code, 2);
  EXPECT_TRUE(fcheck.sysfs_writes.empty());
  auto first = test::converge_root(h.root(), forced, false);
  ASSERT_EQ(first.exit_code, 0) << first.tasks.back().result.msg;
  EXPECT_EQ(first.changes(), fcheck.changes());
  EXPECT_EQ(first.sysfs_writes.size(), 12u);
  EXPECT_EQ(first.tasks.back().result.msg,
            "bound 0000:01:00.0 (from nouveau), 0000:01:00.1 (from snd_hda_intel), 0000:01:00.2 (from xhci_hcd), "
            "0000:01:00.3 (from nvidia-gpu) to vfio-pci (forced: it was in use by Xorg (pid 999))");
  EXPECT_FALSE(test::exists(h.file("/sys/bus/pci/devices/0000:01:00.0/drm"))) << "nouveau's DRM nodes go with it";
  auto second = test::converge_root(h.root(), forced, false);
  EXPECT_EQ(second.stats.changed, 0);
  EXPECT_TRUE(second.sysfs_writes.empty());
  EXPECT_EQ(second.tasks.back().result.status, Outcome::ok);
  // Bound: no DRM node is left to hold, and the unforced task is ok too.
  EXPECT_EQ(test::converge_root(h.root(), pb, false).exit_code, 0);
}

TEST(VfioBindInUse, AProcessOnAnotherGpuDoesNotStopIt) {
  test::SampleHost h("fedora-40");
  test::write(h.file("/sys/bus/pci/drivers_probe"), "");
  add_drm(h, "0000:00:02.0", {"card0", "renderD128"});
  add_drm(h, "0000:01:00.0", {"card1", "renderD129"});
  add_process(h, 999, "gnome-shell", {{14, "/dev/dri/card0"}, {15, "/dev/dri/renderD128"}});
  auto r = test::converge_root(h.root(), "tasks:\n  - vfio_bind: {gpus: ['0000:01:00.0']}\n", false);
  EXPECT_EQ(r.exit_code, 0) << r.tasks.back().result.msg;
  EXPECT_EQ(r.tasks.back().result.status, Outcome::changed);
}

}  // namespace
}  // namespace gpt
