// VM tuning in libvirt_domain: the host checks on sample trees (CPUs, ROM files, hugepages, USB
// controllers), and the tuned domain on libvirt's test:/// driver and on a private libvirtd:
// changed then ok, --check predicting the first run, drift in each managed field found and
// repaired, and libvirt's own additions never counted as drift.
#include "modules/lib/vm_tuning.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "agent/virt.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/libvirt_test_driver.hpp"
#include "tests/support/libvirtd.hpp"

namespace gpt {
namespace {

using test::TestDriver;

namespace fs = std::filesystem;
using test::slurp;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// ---------------------------------------------------------------------------------------------
// The host side

TEST(VmTuning, CpusetsParseLikeLibvirtAndFormatCanonically) {
  EXPECT_EQ(*vm::parse_cpuset("2-7,10-15"), (std::vector<int>{2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(*vm::parse_cpuset("6,4, 5"), (std::vector<int>{6, 4, 5})) << "vCPU order is the order written";
  EXPECT_EQ(*vm::parse_cpuset("0-3,^2"), (std::vector<int>{0, 1, 3}));
  for (const char* bad : {"", "3-1", "a", "1,1", "0-3,^0-1", "1,,2", "-1", "^1", "9000"})
    EXPECT_FALSE(vm::parse_cpuset(bad).ok()) << bad;
  EXPECT_TRUE(has(vm::parse_cpuset("1,1").error(), "CPU 1 is named twice")) << vm::parse_cpuset("1,1").error();
  EXPECT_EQ(vm::format_cpuset({8, 3, 0, 1, 2}), "0-3,8");
  EXPECT_EQ(vm::format_cpuset({5}), "5");
  EXPECT_EQ(vm::format_cpuset({1, 3, 5, 6}), "1,3,5-6");
}

TEST(VmTuning, LookingGlassMemoryIsTheNextPowerOfTwoAboveTwoFramesAndTenMiB) {
  // The table of the Looking Glass documentation.
  EXPECT_EQ(vm::looking_glass_mib(1920, 1080), 32u);
  EXPECT_EQ(vm::looking_glass_mib(1920, 1200), 32u);
  EXPECT_EQ(vm::looking_glass_mib(2560, 1440), 64u);
  EXPECT_EQ(vm::looking_glass_mib(3840, 2160), 128u);
  EXPECT_EQ(vm::looking_glass_mib(1, 1), 16u) << "10 MiB and a few bytes round up to 16";
}

// A host with `n` CPUs where CPU c and c + n/2 are SMT siblings (Intel's and AMD's numbering).
void write_cpus(const std::string& root, int n, const std::string& online = "") {
  test::write(root + "/sys/devices/system/cpu/online", (online.empty() ? "0-" + std::to_string(n - 1) : online) + "\n");
  for (int c = 0; c < n; ++c) {
    const int a = c % (n / 2), b = a + n / 2;
    test::write(root + "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/thread_siblings_list",
                std::to_string(a) + "," + std::to_string(b) + "\n");
  }
}

TEST(VmTuning, PinningIsCheckedAgainstTheHostsCpusAndSiblings) {
  test::TempDir dir;
  write_cpus(dir.path(), 8);
  auto host = vm::read_host_cpus(Root(dir.path()));
  ASSERT_TRUE(host.ok()) << host.error();
  EXPECT_EQ(host->online.size(), 8u);
  EXPECT_EQ(host->siblings.at(5), (std::vector<int>{1, 5}));

  // Siblings on consecutive vCPUs of a 2-thread guest core: clean.
  auto good = vm::check_pinning(*host, {1, 5, 2, 6}, 2, {0}, {});
  EXPECT_FALSE(good.error);
  EXPECT_TRUE(good.warnings.empty()) << good.warnings[0];
  // The same CPUs in host order split each core over two guest cores.
  auto split = vm::check_pinning(*host, {1, 2, 5, 6}, 2, {0}, {});
  ASSERT_EQ(split.warnings.size(), 2u);
  EXPECT_EQ(
      split.warnings[0],
      "pin: host CPUs 1,5 are SMT siblings of one core, but vCPUs 0, 2 pinned to them are in different guest cores "
      "(threads: 2): give siblings to consecutive vCPUs and set cpu.threads to match");
  // Threads 1: every vCPU is a core of its own, so siblings always split.
  EXPECT_EQ(vm::check_pinning(*host, {1, 5}, 1, {}, {}).warnings.size(), 1u);
  // The emulator on a vCPU's CPU.
  auto shared = vm::check_pinning(*host, {1, 5}, 2, {5, 0}, {});
  ASSERT_EQ(shared.warnings.size(), 1u);
  EXPECT_TRUE(has(shared.warnings[0], "host CPUs 5 run vCPUs and also the emulator")) << shared.warnings[0];
  // A CPU the host does not have (or has offline).
  auto missing = vm::check_pinning(*host, {1, 9}, 1, {12}, {});
  ASSERT_TRUE(missing.error);
  EXPECT_EQ(*missing.error, "pin: host CPUs 9,12 are not online (this host has CPUs 0-7)");
  write_cpus(dir.path(), 8, "0-5");
  EXPECT_EQ(*vm::check_pinning(*vm::read_host_cpus(Root(dir.path())), {6}, 1, {}, {}).error,
            "pin: host CPU 6 is not online (this host has CPUs 0-5)");
  test::TempDir empty;
  EXPECT_TRUE(has(vm::read_host_cpus(Root(empty.path())).error(), "cannot read the host's CPUs"));
}

// /etc/passwd and /etc/group with the hypervisor users of Debian and Fedora, and a desktop user.
void write_accounts(const std::string& root) {
  test::write(root + "/etc/passwd",
              "root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:108::/var/lib/libvirt:/usr/sbin/nologin\n"
              "qemu:x:107:107::/:/sbin/nologin\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n");
  test::write(root + "/etc/group",
              "root:x:0:\nkvm:x:108:alice\nqemu:x:107:\nvideo:x:44:libvirt-qemu,alice\nalice:x:1000:\n");
}

TEST(VmTuning, ARomMustBeAnOptionRomTheHypervisorCanRead) {
  test::TempDir dir;
  write_accounts(dir.path());
  const Root root(dir.path());
  const std::string rom = std::string("\x55\xAA", 2) + std::string(1022, '\x01');
  test::write(dir / "roms/gpu.rom", rom, 0644);
  EXPECT_TRUE(vm::check_rom(root, "/roms/gpu.rom", "libvirt-qemu").ok());
  EXPECT_EQ(vm::check_rom(root, "/roms/none.rom", "libvirt-qemu").error(), "rom: /roms/none.rom does not exist");
  EXPECT_EQ(vm::check_rom(root, "roms/gpu.rom", "libvirt-qemu").error(), "rom: 'roms/gpu.rom' is not an absolute path");
  test::write(dir / "roms/nvflash.rom", "NVGI" + rom, 0644);
  EXPECT_TRUE(has(vm::check_rom(root, "/roms/nvflash.rom", "libvirt-qemu").error(),
                  "rom: /roms/nvflash.rom is not a PCI option ROM (it does not start with the 0x55 0xAA signature"));
  // Owned by root (the test runs as root), 0600: the hypervisor's user cannot read it.
  test::write(dir / "roms/private.rom", rom, 0600);
  EXPECT_EQ(vm::check_rom(root, "/roms/private.rom", "libvirt-qemu").error(),
            "rom: libvirt-qemu (the hypervisor's user) cannot read /roms/private.rom: make it readable (chmod 0644)");
  // 0640 with group video, of which libvirt-qemu is a member: readable.
  ASSERT_EQ(::chown((dir / "roms/private.rom").c_str(), 0, 44), 0);
  ASSERT_EQ(::chmod((dir / "roms/private.rom").c_str(), 0640), 0);
  EXPECT_TRUE(vm::check_rom(root, "/roms/private.rom", "libvirt-qemu").ok());
  EXPECT_FALSE(vm::check_rom(root, "/roms/private.rom", "qemu").ok());
  // A directory on the way that it cannot enter.
  ASSERT_EQ(::chmod((dir / "roms").c_str(), 0700), 0);
  EXPECT_EQ(vm::check_rom(root, "/roms/gpu.rom", "libvirt-qemu").error(),
            "rom: libvirt-qemu (the hypervisor's user) cannot enter /roms to read /roms/gpu.rom");
  EXPECT_TRUE(vm::check_rom(root, "/roms/gpu.rom", "nobody-here").ok())
      << "a user the host does not have is not checked";

  Facts debian, fedora;
  debian.os.id = "ubuntu";
  fedora.os.id = "fedora";
  EXPECT_EQ(vm::hypervisor_user(root, debian), "libvirt-qemu");
  EXPECT_EQ(vm::hypervisor_user(root, fedora), "qemu");
  test::write(dir / "etc/libvirt/qemu.conf", "# user = \"root\"\nuser_thing = 1\nuser = \"alice\"\ngroup = \"kvm\"\n");
  EXPECT_EQ(vm::hypervisor_user(root, fedora), "alice");
  EXPECT_TRUE(vm::check_owner(root, "alice", "kvm").ok());
  EXPECT_EQ(vm::check_owner(root, "bob", "kvm").error(), "user bob does not exist on this host (/etc/passwd)");
  EXPECT_EQ(vm::check_owner(root, "alice", "libvirt").error(),
            "group libvirt does not exist on this host (/etc/group)");
}

void write_hugepages(const std::string& root, uint64_t total2m, uint64_t free2m, uint64_t total1g = 0,
                     uint64_t free1g = 0) {
  test::write(root + "/proc/meminfo", "MemTotal:       32768000 kB\nHugePages_Total:    " + std::to_string(total2m) +
                                          "\nHugepagesize:       2048 kB\n");
  test::write(root + "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", std::to_string(total2m) + "\n");
  test::write(root + "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", std::to_string(free2m) + "\n");
  test::write(root + "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", std::to_string(total1g) + "\n");
  test::write(root + "/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", std::to_string(free1g) + "\n");
}

TEST(VmTuning, HugepagePoolsAreReadPerSize) {
  test::TempDir dir;
  write_hugepages(dir.path(), 100, 60, 4, 3);
  const Root root(dir.path());
  auto def = vm::read_hugepages(root, 0);
  ASSERT_TRUE(def.ok()) << def.error();
  EXPECT_EQ(def->size_kib, 2048u);
  EXPECT_TRUE(def->default_size);
  EXPECT_EQ(def->total, 100u);
  EXPECT_EQ(def->free, 60u);
  auto big = vm::read_hugepages(root, 1048576);
  ASSERT_TRUE(big.ok());
  EXPECT_FALSE(big->default_size);
  EXPECT_EQ(big->free, 3u);
  EXPECT_EQ(vm::read_hugepages(root, 16384).error(),
            "hugepages: this host has no 16 MiB pages (offered: 1048576kB, 2048kB)");
  test::TempDir none;
  EXPECT_EQ(vm::read_hugepages(Root(none.path()), 0).error(),
            "hugepages: the kernel offers none (no Hugepagesize in /proc/meminfo)");
}

PciDevice device(const std::string& addr, uint32_t cls, std::optional<int> group, const std::string& id = "8086:a36d") {
  PciDevice d;
  d.address = addr;
  d.class_code = cls;
  d.vendor = id.substr(0, 4);
  d.device = id.substr(5);
  d.iommu_group = group;
  return d;
}

TEST(VmTuning, UsbControllersGoWholeOnlyFromGroupsOfTheirOwn) {
  Facts f;
  f.pci = {device("0000:00:00.0", 0x060000, 0),
           device("0000:00:14.0", 0x0c0330, 3),
           device("0000:00:14.2", 0x050000, 3),
           device("0000:01:00.0", 0x030000, 10, "10de:1e84"),
           device("0000:01:00.2", 0x0c0330, 10, "10de:1ad6"),
           device("0000:05:00.0", 0x0c0330, 12, "1b21:2142"),
           device("0000:06:00.0", 0x060400, 13),
           device("0000:07:00.0", 0x0c0330, 13, "1912:0014")};
  const std::vector<std::string> gpu = {"0000:01:00.0", "0000:01:00.2"};
  // auto: the ASMedia card (alone) and the Renesas one (alone but for a bridge); not the chipset
  // controller sharing its group with a RAM controller, nor the GPU's own USB-C function.
  auto picked = vm::select_usb_controllers(f, "auto", false, gpu);
  ASSERT_TRUE(picked.ok()) << picked.error();
  EXPECT_EQ(*picked, (std::vector<std::string>{"0000:05:00.0", "0000:07:00.0"}));
  EXPECT_EQ(*vm::select_usb_controllers(f, {"0000:05:00.0", "0000:01:00.2"}, false, gpu),
            (std::vector<std::string>{"0000:05:00.0"}));
  EXPECT_EQ(
      vm::select_usb_controllers(f, {"0000:00:14.0"}, false, gpu).error(),
      "usb_controllers: 0000:00:14.0 cannot be passed through: IOMMU group 3 also holds 0000:00:14.2 (RAM memory) "
      "(force: true to go on anyway)");
  EXPECT_TRUE(vm::select_usb_controllers(f, {"0000:00:14.0"}, true, gpu).ok());
  EXPECT_EQ(vm::select_usb_controllers(f, {"0000:01:00.0"}, false, {}).error(),
            "usb_controllers: 0000:01:00.0 is a VGA compatible controller, not a USB controller");
  EXPECT_EQ(vm::select_usb_controllers(f, {"0000:09:00.0"}, false, gpu).error(),
            "usb_controllers: PCI device 0000:09:00.0 does not exist on this host");
  // auto never takes every controller the host has.
  f.pci.erase(f.pci.begin() + 1, f.pci.begin() + 3);
  f.pci.pop_back();
  EXPECT_EQ(vm::select_usb_controllers(f, "auto", false, gpu).error(),
            "usb_controllers: auto would take every USB controller of the host (0000:05:00.0), leaving it no keyboard: "
            "name the ones the VM gets");
  for (auto& d : f.pci) d.iommu_group.reset();
  EXPECT_TRUE(has(vm::select_usb_controllers(f, "auto", false, gpu).error(), "0000:05:00.0: it is in no IOMMU group"));
}

// ---------------------------------------------------------------------------------------------
// The tuned domain

// A PCI device in a sample tree, the way sysfs shows it.
void add_pci(const std::string& root, const std::string& addr, const std::string& cls, const std::string& vendor,
             const std::string& dev, int group) {
  const std::string real = root + "/sys/devices/pci0000:00/" + addr;
  test::write(real + "/class", cls + "\n");
  test::write(real + "/vendor", "0x" + vendor + "\n");
  test::write(real + "/device", "0x" + dev + "\n");
  fs::create_directories(root + "/sys/kernel/iommu_groups/" + std::to_string(group) + "/devices");
  fs::create_symlink("../../../kernel/iommu_groups/" + std::to_string(group), real + "/iommu_group");
  fs::create_symlink("../../../devices/pci0000:00/" + addr, root + "/sys/bus/pci/devices/" + addr);
  fs::create_symlink("../../../../devices/pci0000:00/" + addr,
                     root + "/sys/kernel/iommu_groups/" + std::to_string(group) + "/devices/" + addr);
}

// Ubuntu 24.04 with an NVIDIA GPU at 01:00 (IOMMU on), OVMF, 8 CPUs, hugepages, a ROM file, input
// devices, users, and two USB controllers (the chipset's, and a card alone in its group).
struct TunedHost : test::VmHost {
  TunedHost() : VmHost("ubuntu-24.04") {
    write_cpus(root(), 8);
    write_hugepages(root(), 0, 0, 0, 0);
    write_accounts(root());
    test::write(file("/var/lib/libvirt/vbios/gpu.rom"), std::string("\x55\xAA", 2) + std::string(510, '\0'));
    test::write(file("/dev/input/by-id/usb-Logitech_Keyboard-event-kbd"), "");
    test::write(file("/dev/input/by-id/usb-Logitech_Mouse-event-mouse"), "");
    add_pci(root(), "0000:00:14.0", "0x0c0330", "8086", "a36d", 30);
    add_pci(root(), "0000:00:14.2", "0x050000", "8086", "a36f", 30);
    add_pci(root(), "0000:05:00.0", "0x0c0330", "1b21", "2142", 31);
  }
};

const std::string kTuning =
    "      rom: {file: /var/lib/libvirt/vbios/gpu.rom, bar: on}\n"
    "      cpu: {sockets: 1, cores: 2, threads: 2}\n"
    "      pin: {vcpus: \"1,5,2,6\", emulator: \"0\", iothreads: \"4\"}\n"
    "      hugepages: {size: 2M, reserve: true}\n"
    "      looking_glass: {resolution: 2560x1440, user: alice}\n"
    "      hyperv: true\n"
    "      evdev: [/dev/input/by-id/usb-Logitech_Keyboard-event-kbd, /dev/input/by-id/usb-Logitech_Mouse-event-mouse]\n"
    "      usb_controllers: auto\n";

std::string tuned(const std::string& uri, const std::string& extra = kTuning) {
  return "tasks:\n  - name: vm\n    libvirt_domain:\n      name: gamevm\n      connect: " + uri +
         "\n      machine: pc-q35-7.2\n      memory: 8G\n      vcpus: 4\n      gpus: [\"0000:01:00.0\"]\n"
         "      disks: [/var/lib/libvirt/images/gamevm.qcow2]\n" +
         extra;
}

TEST(VmTuning, ATunedDomainConvergesAndEachManagedFieldIsRepaired) {
  TunedHost host;
  TestDriver lv;
  const std::string pb = tuned("test:///default");
  auto check = test::converge_root(host.root(), pb, true);
  ASSERT_TRUE(check.load_errors.empty()) << check.load_errors[0];
  ASSERT_EQ(check.tasks.back().result.status, Outcome::changed) << check.tasks.back().result.msg;
  EXPECT_EQ(lv.xml("gamevm"), "");
  EXPECT_FALSE(test::exists(host.file("/etc/sysctl.d/80-gptagent-hugepages.conf")));

  auto first = test::converge_root(host.root(), pb, false);
  const Result& r = first.tasks.back().result;
  ASSERT_EQ(r.status, Outcome::changed) << r.msg;
  EXPECT_EQ(first.changes(), check.changes());
  EXPECT_TRUE(has(r.msg, "created /var/lib/libvirt/qemu/nvram/gamevm_VARS.fd")) << r.msg;
  // The recorder reserved nothing: the pool is still empty after sysctl, and the run says so.
  EXPECT_TRUE(has(r.msg,
                  "[warning: hugepages: the kernel has 0 free pages of 2 MiB after the reservation, fewer than the "
                  "domain needs (4096): its memory is fragmented"))
      << r.msg;
  EXPECT_TRUE(has(r.msg, "wrote /etc/sysctl.d/80-gptagent-hugepages.conf; wrote /etc/tmpfiles.d/10-looking-glass.conf"))
      << r.msg;
  EXPECT_TRUE(has(r.msg, "reserved 4096 hugepages of 2 MiB: sysctl -w vm.nr_hugepages=4096")) << r.msg;
  EXPECT_TRUE(
      has(r.msg, "created /dev/shm/looking-glass: systemd-tmpfiles --create /etc/tmpfiles.d/10-looking-glass.conf"))
      << r.msg;
  EXPECT_EQ(first.commands,
            (std::vector<std::string>{"sysctl -w vm.nr_hugepages=4096",
                                      "systemd-tmpfiles --create /etc/tmpfiles.d/10-looking-glass.conf"}));
  EXPECT_EQ(slurp(host.file("/etc/sysctl.d/80-gptagent-hugepages.conf")),
            "# Managed by gptagent: hugepages for libvirt domains (2 MiB pages)\nvm.nr_hugepages = 4096\n");
  EXPECT_EQ(slurp(host.file("/etc/tmpfiles.d/10-looking-glass.conf")),
            "# Managed by gptagent: Looking Glass's shared memory for domain gamevm, readable by its client\n"
            "f /dev/shm/looking-glass 0660 alice kvm -\n");
  const std::string xml = lv.xml("gamevm");
  for (const char* want : {"<rom bar='on' file='/var/lib/libvirt/vbios/gpu.rom'/>",
                           "<topology sockets='1' dies='1' cores='2' threads='2'/>",
                           "<vcpupin vcpu='0' cpuset='1'/>",
                           "<vcpupin vcpu='1' cpuset='5'/>",
                           "<vcpupin vcpu='3' cpuset='6'/>",
                           "<emulatorpin cpuset='0'/>",
                           "<iothreadpin iothread='1' cpuset='4'/>",
                           "<iothreads>1</iothreads>",
                           "<driver name='qemu' type='qcow2' iothread='1'/>",
                           "<page size='2048' unit='KiB'/>",
                           "<shmem name='looking-glass'>",
                           "<model type='ivshmem-plain'/>",
                           "<size unit='M'>64</size>",
                           "<relaxed state='on'/>",
                           "<spinlocks state='on' retries='8191'/>",
                           "<stimer state='on'/>",
                           "<vendor_id state='on' value='gptagent'/>",
                           "<hidden state='on'/>",
                           "<timer name='hypervclock' present='yes'/>",
                           "<clock offset='localtime'>",
                           "<source dev='/dev/input/by-id/usb-Logitech_Keyboard-event-kbd' grab='all' repeat='on'/>",
                           "<source dev='/dev/input/by-id/usb-Logitech_Mouse-event-mouse'/>",
                           "<address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>"})
    EXPECT_TRUE(has(xml, want)) << want << "\n" << xml;
  EXPECT_FALSE(has(xml, "bus='0x00' slot='0x14'")) << "the chipset's USB controller shares its group";

  // The kernel granted the pages; a second run is all ok.
  write_hugepages(host.root(), 4096, 4096);
  auto second = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(second.tasks.back().result.status, Outcome::ok)
      << second.tasks.back().result.msg << second.tasks.back().result.diff;
  EXPECT_TRUE(second.commands.empty());

  // Drift in each managed field, made by hand: --check finds it, apply repairs it, then ok.
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"<rom bar='on'", "<rom bar='off'"},
      {"threads='2'/>", "threads='1'/>"},
      {"<vcpupin vcpu='1' cpuset='5'/>", "<vcpupin vcpu='1' cpuset='3'/>"},
      {"<emulatorpin cpuset='0'/>", ""},
      {"<page size='2048' unit='KiB'/>", "<page size='1048576' unit='KiB'/>"},
      {"<size unit='M'>64</size>", "<size unit='M'>32</size>"},
      {"<stimer state='on'/>", ""},
      {"<timer name='hypervclock' present='yes'/>", ""},
      {" grab='all' repeat='on'/>", "/>"},
  };
  // The vendor_id hyperv: true chose is a default, not a key of the playbook: the user's own stays.
  {
    const std::string now = lv.xml("gamevm");
    std::string edited = now;
    const std::string from = "<vendor_id state='on' value='gptagent'/>";
    ASSERT_TRUE(has(now, from)) << now;
    edited.replace(edited.find(from), from.size(), "<vendor_id state='on' value='other'/>");
    ASSERT_TRUE(lv.conn.define(edited).ok());
    EXPECT_EQ(test::converge_root(host.root(), pb, true).exit_code, 0);
    ASSERT_TRUE(lv.conn.define(now).ok());
  }
  test::expect_edits_repaired(lv, host.root(), "gamevm", pb, edits);

  // Tuning taken out of the playbook goes out of the domain; the host files stay.
  auto plain = test::converge_root(host.root(), tuned("test:///default", ""), false);
  EXPECT_EQ(plain.tasks.back().result.msg, "redefined domain gamevm") << plain.tasks.back().result.msg;
  const std::string untuned = lv.xml("gamevm");
  for (const char* gone : {"<rom ", "<topology", "<cputune>", "<hugepages", "<shmem", "<hyperv", "hypervclock", "evdev",
                           "<address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>"})
    EXPECT_FALSE(has(untuned, gone)) << gone << "\n" << untuned;
  EXPECT_TRUE(has(untuned, "<hidden state='on'/>"));
  EXPECT_EQ(test::converge_root(host.root(), tuned("test:///default", ""), false).tasks.back().result.status,
            Outcome::ok);
}

TEST(VmTuning, TheUsersLookingGlassTmpfilesLineIsMergedNeverReplaced) {
  TunedHost host;
  TestDriver lv;
  const std::string pb = tuned("test:///default", "      looking_glass: {resolution: 1920x1080, user: alice}\n");
  const std::string conf = host.file("/etc/tmpfiles.d/10-looking-glass.conf");
  // The file Looking Glass's documentation has users write, for another user, among their lines.
  test::write(conf, "# Looking Glass\nd /run/lg-logs 0755 root root -\nf /dev/shm/looking-glass 0660 bob kvm -\n");
  auto first = test::converge_root(host.root(), pb, false);
  ASSERT_EQ(first.tasks.back().result.status, Outcome::changed) << first.tasks.back().result.msg;
  EXPECT_EQ(slurp(conf),
            "# Looking Glass\nd /run/lg-logs 0755 root root -\nf /dev/shm/looking-glass 0660 alice kvm -\n");
  EXPECT_TRUE(has(
      first.tasks.back().result.msg,
      "/etc/tmpfiles.d/10-looking-glass.conf: line 3 'f /dev/shm/looking-glass 0660 bob kvm -' now gives alice:kvm"))
      << first.tasks.back().result.msg;
  EXPECT_EQ(test::converge_root(host.root(), pb, false).tasks.back().result.status, Outcome::ok);

  // A user's file that already says it is left byte for byte (no final newline either).
  TunedHost other;
  const std::string theirs = "f /dev/shm/looking-glass 0660 alice kvm -";
  test::write(other.file("/etc/tmpfiles.d/10-looking-glass.conf"), theirs);
  auto r = test::converge_root(other.root(), pb, false);
  ASSERT_NE(r.tasks.back().result.status, Outcome::failed) << r.tasks.back().result.msg;
  EXPECT_EQ(slurp(other.file("/etc/tmpfiles.d/10-looking-glass.conf")), theirs);
  EXPECT_FALSE(has(r.tasks.back().result.msg, "10-looking-glass.conf")) << r.tasks.back().result.msg;
}

TEST(VmTuning, EachCheckRefusesWithItsReasonAndDefinesNothing) {
  TunedHost host;
  TestDriver lv;
  auto load_error = [&](const std::string& extra) {
    auto r = test::converge_root(host.root(), tuned("test:///default", extra), false);
    return r.load_errors.empty() ? std::string("(loaded)") : r.load_errors[0];
  };
  auto task_error = [&](const std::string& extra) {
    auto r = test::converge_root(host.root(), tuned("test:///default", extra), false);
    if (!r.load_errors.empty()) return "load error: " + r.load_errors[0];
    EXPECT_EQ(r.tasks.back().result.status, Outcome::failed) << extra;
    return r.tasks.back().result.msg;
  };
  EXPECT_TRUE(has(load_error("      cpu: {cores: 3, threads: 2}\n"),
                  "cpu: 1 sockets x 3 cores x 2 threads is 6 vCPUs, but vcpus is 4"));
  EXPECT_TRUE(has(load_error("      pin: {vcpus: \"1-3\"}\n"), "pin: vcpus names 3 host CPUs for 4 vCPUs"));
  EXPECT_TRUE(has(load_error("      pin: {vcpus: \"1-2,2-3\"}\n"),
                  "test.yaml:11:20: libvirt_domain argument 'pin' argument 'vcpus': "
                  "'1-2,2-3' is not a CPU list like 2-7,10-15: CPU 2 is named twice"))
      << load_error("      pin: {vcpus: \"1-2,2-3\"}\n");
  EXPECT_TRUE(has(load_error("      hugepages: 3M\n"), "'3M' is not a page size like 2M or 1G"));
  EXPECT_TRUE(has(load_error("      looking_glass: {resolution: 2560*1440, user: alice}\n"),
                  "'2560*1440' is not a resolution like 2560x1440"));
  EXPECT_TRUE(
      has(load_error("      looking_glass: {resolution: 2560x1440}\n"), "is missing the required argument 'user'"));
  EXPECT_TRUE(has(load_error("      evdev: [/tmp/kbd]\n"), "'/tmp/kbd' is not a /dev/input/ path"));
  EXPECT_TRUE(has(load_error("      rom: {file: /x.rom, gpu: \"01:00\"}\n"), "'01:00' is not a PCI address"));

  EXPECT_EQ(task_error("      rom: {file: /var/lib/libvirt/vbios/none.rom}\n"),
            "rom: /var/lib/libvirt/vbios/none.rom does not exist");
  EXPECT_EQ(task_error("      rom: {file: /var/lib/libvirt/vbios/gpu.rom, gpu: \"0000:00:14.0\"}\n"),
            "rom: 0000:00:14.0 is not one of the domain's GPUs");
  EXPECT_EQ(task_error("      pin: {vcpus: \"1,5,2,16\"}\n"),
            "pin: host CPU 16 is not online (this host has CPUs 0-7)");
  EXPECT_EQ(task_error("      hugepages: true\n"),
            "hugepages: the domain needs 4096 pages of 2 MiB, the host has 0 free (of 0): 4096 missing; reserve them "
            "(hugepages: {reserve: true}, or hugepages=N on the kernel command line)");
  EXPECT_EQ(task_error("      hugepages: 16M\n"),
            "hugepages: this host has no 16 MiB pages (offered: 1048576kB, 2048kB)");
  EXPECT_EQ(
      task_error("      hugepages: {size: 1G, reserve: true}\n"),
      "hugepages: reserve: true sets vm.nr_hugepages, which counts pages of the default size only, not 1 GiB pages: "
      "reserve those at boot (kernel_cmdline: hugepagesz=1G hugepages=8) and leave reserve off");
  write_hugepages(host.root(), 0, 0, 8, 8);
  auto odd = test::converge_root(
      host.root(),
      [] {
        std::string pb = tuned("test:///default", "      hugepages: 1G\n");
        return pb.replace(pb.find("memory: 8G"), 10, "memory: 7680M");
      }(),
      false);
  EXPECT_EQ(odd.tasks.back().result.msg,
            "hugepages: memory 7.5 GiB (8053063680 bytes) is not a whole number of 1 GiB pages");
  EXPECT_EQ(task_error("      looking_glass: {resolution: 2560x1440, user: bob}\n"),
            "looking_glass: user bob does not exist on this host (/etc/passwd)");
  EXPECT_EQ(task_error("      evdev: [/dev/input/by-id/gone-event-kbd]\n"),
            "evdev: /dev/input/by-id/gone-event-kbd does not exist (list them: ls /dev/input/by-id/)");
  EXPECT_TRUE(has(task_error("      usb_controllers: [\"0000:00:14.0\"]\n"), "IOMMU group 30 also holds 0000:00:14.2"));
  EXPECT_EQ(lv.xml("gamevm"), "");
  EXPECT_FALSE(test::exists(host.file("/etc/sysctl.d/80-gptagent-hugepages.conf")));
  EXPECT_FALSE(test::exists(host.file("/etc/tmpfiles.d/10-looking-glass.conf")));
  EXPECT_FALSE(test::exists(host.file("/var/lib/libvirt/qemu/nvram/gamevm_VARS.fd")));

  // A warning is not a refusal: it comes with the result, every run.
  write_hugepages(host.root(), 4096, 4096);
  auto warned = test::converge_root(
      host.root(),
      tuned("test:///default", "      pin: {vcpus: \"1,2,5,6\", emulator: \"1\"}\n      cpu: {cores: 2, threads: 2}\n"),
      false);
  ASSERT_EQ(warned.tasks.back().result.status, Outcome::changed) << warned.tasks.back().result.msg;
  EXPECT_TRUE(has(warned.tasks.back().result.msg, "[warning: pin: host CPUs 1,5 are SMT siblings"))
      << warned.tasks.back().result.msg;
  EXPECT_TRUE(has(warned.tasks.back().result.msg, "host CPUs 1 run vCPUs and also the emulator"))
      << warned.tasks.back().result.msg;
  EXPECT_EQ(warned.tasks.back().result.data["warnings"].size(), 3u);
}

// The same tuned domain against a real libvirtd (QEMU driver): the XML validates against libvirt's
// schema, the daemon accepts it, and what it fills in (dies, addresses, controllers) is no drift.
TEST(VmTuningRealLibvirtd, TheTunedXmlValidatesAndTheDaemonAcceptsIt) {
  test::PrivateLibvirtd daemon;
  TunedHost host;
  write_hugepages(host.root(), 4096, 4096);
  test::TempDir work;
  test::write(work / "tuned.yaml", tuned(daemon.uri()));
  const std::vector<std::string> base{"apply", work / "tuned.yaml", "--root", host.root(), "--color", "never"};
  auto args = base;
  args.insert(args.end(), {"--check", "--json"});
  auto check = test::run_agent(args);
  ASSERT_EQ(check.exit_code, 2) << check.out << check.err;
  const auto doc = nlohmann::json::parse(check.out);
  const std::string xml = doc["stages"][0]["tasks"].back()["data"]["xml"].get<std::string>();
  test::write(work / "tuned.xml", xml);
  auto valid = test::run_program("/usr/bin/virt-xml-validate", {work / "tuned.xml", "domain"});
  EXPECT_EQ(valid.exit_code, 0) << valid.out << valid.err << xml;

  auto first = test::run_agent(base);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_TRUE(has(first.out, "changed: [vm] defined domain gamevm")) << first.out;
  const std::string defined = daemon.virsh("dumpxml --inactive gamevm");
  for (const char* want : {"<rom bar='on' file='/var/lib/libvirt/vbios/gpu.rom'/>", "<shmem name='looking-glass'>",
                           "<vcpupin vcpu='3' cpuset='6'/>", "<page size='2048' unit='KiB'/>", "<relaxed state='on'/>",
                           "<input type='evdev'>"})
    EXPECT_TRUE(has(defined, want)) << want << "\n" << defined;
  auto second = test::run_agent(base);
  EXPECT_EQ(second.exit_code, 0) << second.out;
  EXPECT_TRUE(has(second.out, "ok: [vm] domain gamevm is as wanted")) << second.out;
}

}  // namespace
}  // namespace gpt
