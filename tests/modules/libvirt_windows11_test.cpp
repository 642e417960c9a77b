// libvirt_domain's keys for Windows 11 (issue 23): tpm (an emulated TPM 2.0 through swtpm),
// secure_boot (OVMF's Secure Boot build with Microsoft's keys, SMM on) and cdrom (the
// installation and driver ISOs). On libvirt's test:/// driver in-process: the exact elements,
// changed then ok, --check predicting, drift repaired, each key given back as the domain had it,
// and the refusals; then on a private libvirtd with the real swtpm, OVMF and QEMU under TCG.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "agent/text.hpp"
#include "agent/virt.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/libvirt_test_driver.hpp"
#include "tests/support/libvirtd.hpp"

namespace gpt {
namespace {

using test::slurp;
using test::TestDriver;
namespace fs = std::filesystem;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// The domain without the agent's record (which names the items it owns and keeps the priors).
std::string without_record(const std::string& xml) {
  return std::regex_replace(xml, std::regex("<metadata>[\\s\\S]*</metadata>"), "");
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

const std::string kIso = "/var/lib/libvirt/images/Win11_24H2_English_x64.iso";
const std::string kDrivers = "/var/lib/libvirt/images/virtio-win.iso";

// A Debian 12 host as the ovmf, swtpm and swtpm-tools packages leave it, with the two ISOs.
struct Win11Host : test::VmHost {
  Win11Host() {
    test::write(file("/usr/share/OVMF/OVMF_CODE_4M.ms.fd"), "OVMF Secure Boot code\n");
    test::write(file("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"), "OVMF variables with Microsoft's keys\n");
    test::write(file("/usr/bin/swtpm"), "#!/bin/sh\n");
    test::write(file("/usr/bin/swtpm_setup"), "#!/bin/sh\n");
    test::write(file(kIso), "CD001\n");
    test::write(file(kDrivers), "CD001\n");
  }
};

std::string win11(const std::string& keys) {
  return "tasks:\n  - name: vm\n    libvirt_domain:\n      name: win11\n      connect: test:///default\n"
         "      machine: pc-q35-7.2\n      memory: 4G\n      vcpus: 2\n      disks: "
         "[/var/lib/libvirt/images/win11.qcow2]\n" +
         keys;
}

const std::string kWindows11 =
    "      tpm: true\n      secure_boot: true\n      cdrom: [" + kIso + ", " + kDrivers + "]\n";

const Result& last(const test::Converged& c) { return c.tasks.back().result; }

TEST(LibvirtWindows11, ANewDomainGetsTheTpmSecureBootAndTheIsosThenOk) {
  Win11Host host;
  TestDriver lv;
  const std::string pb = win11(kWindows11);
  auto check = test::converge_root(host.root(), pb, true);
  ASSERT_TRUE(check.load_errors.empty()) << check.load_errors[0];
  ASSERT_EQ(last(check).status, Outcome::changed) << last(check).msg;
  EXPECT_EQ(lv.xml("win11"), "") << "check mode defined the domain";

  auto first = test::converge_root(host.root(), pb, false);
  ASSERT_EQ(last(first).status, Outcome::changed) << last(first).msg;
  EXPECT_EQ(first.changes(), check.changes());
  EXPECT_EQ(last(first).msg,
            "defined domain win11; created /var/lib/libvirt/qemu/nvram/win11_VARS.fd from "
            "/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
  EXPECT_EQ(slurp(host.file("/var/lib/libvirt/qemu/nvram/win11_VARS.fd")), "OVMF variables with Microsoft's keys\n");
  const std::string xml = lv.xml("win11");
  for (const std::string& want : std::vector<std::string>{
           "<loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>",
           "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/var/lib/libvirt/qemu/nvram/win11_VARS.fd</nvram>",
           "<boot dev='hd'/>\n    <boot dev='cdrom'/>", "<smm state='on'/>",
           "<tpm model='tpm-crb'>\n      <backend type='emulator' version='2.0'/>\n    </tpm>",
           "<disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <source file='" + kIso +
               "'/>\n      <target dev='sda' bus='sata'/>\n      <readonly/>",
           "<source file='" + kDrivers + "'/>\n      <target dev='sdb' bus='sata'/>",
           "<target dev='vda' bus='virtio'/>"})
    EXPECT_TRUE(has(xml, want)) << want << "\n" << xml;
  EXPECT_EQ(count(xml, "<tpm "), 1u) << xml;
  EXPECT_EQ(count(xml, "device='cdrom'"), 2u) << xml;

  auto second = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(last(second).status, Outcome::ok) << last(second).msg << last(second).diff;
  EXPECT_EQ(test::converge_root(host.root(), pb, true).exit_code, 0);

  // Hand edits of what the keys declare: each one is drift, --check finds it, apply puts it back.
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"<tpm model='tpm-crb'>\n      <backend type='emulator' version='2.0'/>\n    </tpm>", ""},
      {"<backend type='emulator' version='2.0'/>", "<backend type='emulator' version='1.2'/>"},
      {" secure='yes'", ""},
      {"<smm state='on'/>", "<smm state='off'/>"},
      {"OVMF_CODE_4M.ms.fd", "OVMF_CODE_4M.fd"},
      {"<source file='" + kDrivers + "'/>", "<source file='/var/lib/libvirt/images/other.iso'/>"},
  };
  test::expect_edits_repaired(lv, host.root(), "win11", pb, edits);
  // The ISO put in by hand in place of the drivers' stays: the user's drive, not the playbook's.
  EXPECT_TRUE(has(lv.xml("win11"), "other.iso")) << lv.xml("win11");

  // The keys dropped: the domain goes back to where a new one starts, the plain OVMF with the
  // nvram kept (and said), no TPM, no ISOs; the boot order is the domain's own by now.
  auto plain = test::converge_root(host.root(), win11(""), false);
  ASSERT_EQ(last(plain).status, Outcome::changed) << last(plain).msg;
  EXPECT_EQ(last(plain).msg,
            "redefined domain win11 [warning: nvram: /var/lib/libvirt/qemu/nvram/win11_VARS.fd is kept (made from "
            "/usr/share/OVMF/OVMF_VARS_4M.ms.fd): its variables, Secure Boot keys included, are not re-enrolled from "
            "/usr/share/OVMF/OVMF_VARS_4M.fd; to start it afresh from that template (its boot entries are lost): virsh "
            "start win11 "
            "--reset-nvram]");
  const std::string back = without_record(lv.xml("win11"));
  EXPECT_TRUE(has(back, "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>")) << back;
  EXPECT_TRUE(
      has(back, "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/win11_VARS.fd</nvram>"))
      << back;
  for (const char* gone : {"<tpm", "<smm", "secure=", "Win11_24H2", "virtio-win"})
    EXPECT_FALSE(has(back, gone)) << gone << "\n" << back;
  EXPECT_TRUE(has(back, "other.iso")) << back;
  EXPECT_EQ(slurp(host.file("/var/lib/libvirt/qemu/nvram/win11_VARS.fd")), "OVMF variables with Microsoft's keys\n");
  EXPECT_EQ(last(test::converge_root(host.root(), win11(""), false)).status, Outcome::ok);
}

// A Windows VM made in virt-manager: plain OVMF with its own nvram, a TPM passed through from
// the host, the Windows 10 ISO in a SATA drive with per-device boot order.
const std::string kUsersVm = R"(<domain type='test'>
  <name>win11</name>
  <memory unit='KiB'>4194304</memory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='i686' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/users_VARS.fd</nvram>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/win11.qcow2'/>
      <target dev='sda' bus='sata'/>
      <boot order='1'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/Win10.iso'/>
      <target dev='sdb' bus='sata'/>
      <readonly/>
      <boot order='2'/>
    </disk>
    <tpm model='tpm-tis'>
      <backend type='passthrough'>
        <device path='/dev/tpm0'/>
      </backend>
    </tpm>
  </devices>
</domain>
)";

std::string adopt(const std::string& keys) {
  return "tasks:\n  - name: vm\n    libvirt_domain:\n      name: win11\n      connect: test:///default\n      memory: "
         "4G\n" +
         keys;
}

TEST(LibvirtWindows11, AUsersDomainTakesTheKeysAndGetsItsOwnBackExactly) {
  Win11Host host;
  TestDriver lv;
  test::write(host.file("/var/lib/libvirt/qemu/nvram/users_VARS.fd"), "the guest's own boot entries\n");
  ASSERT_TRUE(lv.conn.define(kUsersVm).ok());
  const std::string original = lv.xml("win11");
  ASSERT_EQ(last(test::converge_root(host.root(), adopt(""), false)).status, Outcome::changed);  // the record of memory
  const std::string adopted = lv.xml("win11");

  const std::string pb = adopt(kWindows11);
  auto check = test::converge_root(host.root(), pb, true);
  ASSERT_EQ(last(check).status, Outcome::changed) << last(check).msg;
  EXPECT_EQ(lv.xml("win11"), adopted) << "check mode redefined the domain";
  auto first = test::converge_root(host.root(), pb, false);
  ASSERT_EQ(last(first).status, Outcome::changed) << last(first).msg;
  EXPECT_EQ(first.changes(), check.changes());
  // The nvram is the guest's: kept where it is, not remade, and the run says how to start afresh.
  EXPECT_EQ(last(first).msg,
            "redefined domain win11 [warning: nvram: /var/lib/libvirt/qemu/nvram/users_VARS.fd is kept (made from "
            "/usr/share/OVMF/OVMF_VARS_4M.fd): its variables, Secure Boot keys included, are not re-enrolled from "
            "/usr/share/OVMF/OVMF_VARS_4M.ms.fd; to start it afresh from that template (its boot entries are lost): "
            "virsh start "
            "win11 --reset-nvram]");
  EXPECT_EQ(slurp(host.file("/var/lib/libvirt/qemu/nvram/users_VARS.fd")), "the guest's own boot entries\n");
  EXPECT_FALSE(test::exists(host.file("/var/lib/libvirt/qemu/nvram/win11_VARS.fd")));
  const std::string xml = lv.xml("win11");
  for (const std::string& want : std::vector<std::string>{
           "<loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>",
           "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/var/lib/libvirt/qemu/nvram/users_VARS.fd</nvram>",
           "<smm state='on'/>", "<tpm model='tpm-crb'>\n      <backend type='emulator' version='2.0'/>\n    </tpm>",
           "<source file='/var/lib/libvirt/images/Win10.iso'/>\n      <target dev='sdb' bus='sata'/>",
           "<source file='" + kIso + "'/>\n      <target dev='sdc' bus='sata'/>",
           "<source file='" + kDrivers + "'/>\n      <target dev='sdd' bus='sata'/>"})
    EXPECT_TRUE(has(xml, want)) << want << "\n" << xml;
  EXPECT_FALSE(has(without_record(xml), "passthrough")) << xml;
  EXPECT_FALSE(has(xml, "<boot dev=")) << "per-device boot order: no <os><boot>";
  EXPECT_EQ(last(test::converge_root(host.root(), pb, false)).status, Outcome::ok);

  // Each key dropped alone gives back exactly its own part; all of them, the domain as it was.
  for (const std::string& rest : {"      secure_boot: true\n      cdrom: [" + kIso + ", " + kDrivers + "]\n",
                                  "      tpm: true\n      cdrom: [" + kIso + ", " + kDrivers + "]\n",
                                  "      tpm: true\n      secure_boot: true\n      cdrom: [" + kIso + "]\n"}) {
    ASSERT_EQ(last(test::converge_root(host.root(), adopt(rest), false)).status, Outcome::changed) << rest;
    const std::string now = without_record(lv.xml("win11"));
    EXPECT_EQ(has(now, "/dev/tpm0"), !has(rest, "tpm:")) << rest << now;
    EXPECT_EQ(has(now, "OVMF_CODE_4M.ms.fd"), has(rest, "secure_boot:")) << rest << now;
    EXPECT_EQ(has(now, "<smm state='on'/>"), has(rest, "secure_boot:")) << rest << now;
    EXPECT_EQ(has(now, "virtio-win.iso"), has(rest, "virtio-win.iso")) << rest << now;
    EXPECT_TRUE(has(now, "Win10.iso")) << now;
    ASSERT_EQ(last(test::converge_root(host.root(), pb, false)).status, Outcome::changed) << rest;
  }
  auto dropped = test::converge_root(host.root(), adopt(""), false);
  ASSERT_EQ(last(dropped).status, Outcome::changed) << last(dropped).msg;
  EXPECT_EQ(lv.xml("win11"), adopted);
  EXPECT_NE(adopted, original);
  EXPECT_EQ(slurp(host.file("/var/lib/libvirt/qemu/nvram/users_VARS.fd")), "the guest's own boot entries\n");

  // The user's own emulated TPM 2.0 on tpm-tis already is what tpm: true asks for: kept as it is,
  // and given back as it was.
  std::string tis = adopted;
  tis.replace(tis.find("<backend type='passthrough'>"),
              std::string("<backend type='passthrough'>\n        <device path='/dev/tpm0'/>\n      </backend>").size(),
              "<backend type='emulator' version='2.0'/>");
  ASSERT_TRUE(lv.conn.define(tis).ok());
  const std::string theirs = lv.xml("win11");
  ASSERT_EQ(last(test::converge_root(host.root(), adopt("      tpm: true\n"), false)).status, Outcome::changed);
  EXPECT_TRUE(has(lv.xml("win11"), "<tpm model='tpm-tis'>\n      <backend type='emulator' version='2.0'/>"))
      << lv.xml("win11");
  EXPECT_EQ(last(test::converge_root(host.root(), adopt("      tpm: true\n"), false)).status, Outcome::ok);
  ASSERT_EQ(last(test::converge_root(host.root(), adopt(""), false)).status, Outcome::changed);
  EXPECT_EQ(lv.xml("win11"), theirs);

  // exclusive and state: absent take the user's ISO out too.
  auto exact =
      test::converge_root(host.root(), adopt("      cdrom: [" + kIso + "]\n      exclusive: [cdrom]\n"), false);
  ASSERT_EQ(last(exact).status, Outcome::changed) << last(exact).msg;
  EXPECT_FALSE(has(lv.xml("win11"), "Win10.iso")) << lv.xml("win11");
  EXPECT_TRUE(has(lv.xml("win11"), kIso));
  auto absent = test::converge_root(host.root(), adopt("      cdrom: [{path: " + kIso + ", state: absent}]\n"), false);
  ASSERT_EQ(last(absent).status, Outcome::changed) << last(absent).msg;
  EXPECT_FALSE(has(lv.xml("win11"), "device='cdrom'")) << lv.xml("win11");
}

// In check mode a packages task before the VM that would install swtpm counts: the VM is what
// would be defined, not a refusal (the apply installs swtpm first, then defines it).
TEST(LibvirtWindows11, CheckModeCountsTheSwtpmAnEarlierTaskWouldInstall) {
  TestDriver lv;
  Win11Host host;
  fs::remove(host.file("/usr/bin/swtpm"));
  fs::remove(host.file("/usr/bin/swtpm_setup"));
  test::write(host.file("/var/lib/dpkg/status"),
              "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n\n");
  auto check =
      test::converge_root(host.root(), "tasks:\n  - packages: {present: [tpm]}\n" + win11(kWindows11).substr(7), true);
  ASSERT_TRUE(check.load_errors.empty()) << check.load_errors[0];
  ASSERT_EQ(check.tasks.size(), 2u);
  EXPECT_EQ(check.tasks[0].result.msg, "would install swtpm swtpm-tools; tpm: swtpm swtpm-tools")
      << check.tasks[0].result.msg;
  EXPECT_EQ(check.tasks[1].result.status, Outcome::changed) << check.tasks[1].result.msg;
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_EQ(lv.xml("win11"), "");
  // Without that task, the same check is refused.
  auto alone = test::converge_root(host.root(), win11(kWindows11), true);
  EXPECT_EQ(last(alone).status, Outcome::failed) << last(alone).msg;
}

TEST(LibvirtWindows11, RefusalsNameWhatIsMissingAndChangeNothing) {
  TestDriver lv;
  auto refused = [&](const test::VmHost& host, const std::string& pb) {
    auto r = test::converge_root(host.root(), pb, false);
    if (!r.load_errors.empty()) return "load error: " + r.load_errors[0];
    EXPECT_EQ(last(r).status, Outcome::failed) << pb;
    EXPECT_EQ(lv.xml("win11"), "") << pb;
    EXPECT_FALSE(test::exists(host.file("/var/lib/libvirt/qemu/nvram/win11_VARS.fd"))) << pb;
    return last(r).msg;
  };
  {
    Win11Host host;
    fs::remove(host.file("/usr/bin/swtpm"));
    EXPECT_EQ(refused(host, win11(kWindows11)),
              "tpm: the emulated TPM needs swtpm, and this host has no /usr/bin/swtpm: install swtpm and swtpm-tools "
              "(the packages "
              "module's set tpm). Nothing was changed");
  }
  {
    Win11Host host;
    fs::remove(host.file("/usr/bin/swtpm_setup"));
    EXPECT_TRUE(
        has(refused(host, win11(kWindows11)), "this host has no /usr/bin/swtpm_setup: install swtpm and swtpm-tools"));
  }
  {
    Win11Host host;
    fs::remove(host.file("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"));
    EXPECT_EQ(refused(host, win11(kWindows11)),
              "secure_boot: no Secure Boot build of OVMF found (this host has /usr/share/OVMF/OVMF_CODE_4M.fd, which "
              "has no Secure "
              "Boot) (looked for /usr/share/OVMF/OVMF_CODE_4M.ms.fd, /usr/share/OVMF/OVMF_CODE.ms.fd, "
              "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd, /usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd, "
              "/usr/share/edk2-ovmf/x64/OVMF_CODE.secboot.fd): install ovmf (Debian, Ubuntu) or edk2-ovmf (Fedora, "
              "Arch), or give "
              "firmware: {code, vars} of a Secure Boot build; nothing was changed");
  }
  {
    Win11Host host;
    fs::remove(host.file(kIso));
    EXPECT_EQ(
        refused(host, win11(kWindows11)),
        "cdrom: " + kIso + " does not exist: download the ISO there first, or correct the path. Nothing was changed");
    EXPECT_TRUE(
        has(refused(host, win11("      cdrom: [relative.iso]\n")), "cdrom: 'relative.iso' is not an absolute path"));
    EXPECT_TRUE(has(refused(host, win11("      cdrom: [{path: /x.iso, bus: ide}]\n")),
                    "cdrom: unknown key 'bus' (path, state)"));
    EXPECT_TRUE(
        has(refused(host, win11("      exclusive: [cdroms]\n")), "'cdroms' is not one of disks, cdrom, interfaces"));
  }
  // Arch's Secure Boot build comes without keys: accepted, with a warning that says so.
  {
    test::VmHost arch;
    test::write(arch.file("/usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd"), "code\n");
    test::write(arch.file("/usr/share/edk2/x64/OVMF_VARS.4m.fd"), "vars\n");
    auto r = test::converge_root(arch.root(), win11("      secure_boot: true\n"), true);
    EXPECT_EQ(last(r).status, Outcome::changed) << last(r).msg;
    EXPECT_TRUE(has(last(r).msg,
                    "secure_boot: /usr/share/edk2/x64/OVMF_VARS.4m.fd has no Secure Boot keys enrolled (Arch ships "
                    "none): the guest starts in setup mode, which Windows 11 setup accepts"))
        << last(r).msg;
    EXPECT_TRUE(has(last(r).data["xml"].get<std::string>(), ">/usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd</loader>"));
  }
  // An i440FX domain: Secure Boot needs q35's SMM; the domain is left as it was.
  Win11Host host;
  std::string i440fx = std::regex_replace(kUsersVm, std::regex("pc-q35-7.2"), "pc-i440fx-7.2");
  ASSERT_TRUE(lv.conn.define(i440fx).ok());
  const std::string old = lv.xml("win11");
  auto r = test::converge_root(host.root(), adopt("      secure_boot: true\n"), false);
  EXPECT_EQ(last(r).status, Outcome::failed);
  EXPECT_EQ(last(r).msg,
            "secure_boot: domain win11 uses the i440FX chipset (pc-i440fx-7.2), and Secure Boot needs q35 (SMM guards "
            "its keys): "
            "define a new domain with machine: q35 and the same disks instead. Nothing was changed");
  EXPECT_EQ(lv.xml("win11"), old);
}

// ---------------------------------------------------------------------------------------------
// The proof: the Windows 11 domain on a private libvirtd (QEMU driver, TCG), with the real swtpm
// and Debian's Secure Boot OVMF, started far enough for QEMU to hold the TPM and the firmware.

class RealWindows11 : public test::WithPrivateLibvirtd<RealWindows11> {};

std::string field(const std::string& text, const std::string& key) {
  std::smatch m;
  return std::regex_search(text, m, std::regex(key + "[^\\n]*")) ? m.str() : "(no " + key + ")";
}

TEST_F(RealWindows11, TheDomainValidatesAndStartsWithSwtpmAndSecureBootUnderTcg) {
  for (const char* need : {"/usr/bin/swtpm", "/usr/bin/swtpm_setup", "/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
                           "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"})
    ASSERT_TRUE(fs::exists(need)) << need << " is missing: scripts/deps installs swtpm, swtpm-tools and ovmf";
  Win11Host host;
  // The disk and the ISOs where the daemon (nobody) reads them, and the same paths in the root.
  const std::string dir = daemon->dir();
  auto made = test::run_program("/usr/bin/qemu-img", {"create", "-q", "-f", "qcow2", dir + "/win11.qcow2", "1G"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  for (const std::string& iso : {dir + "/Win11_24H2_English_x64.iso", dir + "/virtio-win.iso"})
    test::write(iso, std::string(2048 * 16, '\0'));
  for (const char* f : {"/win11.qcow2", "/Win11_24H2_English_x64.iso", "/virtio-win.iso"}) {
    ASSERT_EQ(::chown((dir + f).c_str(), 65534, 65534), 0) << f;
    test::write(host.file(dir + f), "in the root\n");
  }
  test::TempDir work;
  // The Windows 11 keys of playbooks/windows-gaming-vm.yaml, without what needs a GPU and a host
  // prepared for it (rom, pin, hugepages, looking_glass, evdev) and without hyperv, which QEMU
  // refuses under TCG ("kernel doesn't allow setting HyperV VP_INDEX"), on this daemon's paths.
  auto playbook = [&](const std::string& state) {
    const std::string path = work / (state + ".yaml");
    test::write(
        path,
        "tasks:\n  - name: Windows 11\n    libvirt_domain:\n      name: win11\n      machine: auto\n      memory: 1G\n"
        "      vcpus: 2\n      cpu: {sockets: 1, cores: 1, threads: 2}\n"
        "      tpm: true\n      secure_boot: true\n"
        "      cdrom: [" +
            dir + "/Win11_24H2_English_x64.iso, " + dir +
            "/virtio-win.iso]\n"
            "      disks: [" +
            dir + "/win11.qcow2]\n      nvram: " + dir +
            "/win11_VARS.fd\n"
            "      graphics: {type: none}\n      video: none\n      force_shutoff: true\n      state: " +
            state + "\n");
    return path;
  };
  auto run = [&](const std::string& state, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"apply",     playbook(state), "--root",  host.root(),
                                  "--connect", daemon->uri(),   "--color", "never"};
    args.insert(args.end(), extra.begin(), extra.end());
    return test::run_agent(args);
  };

  auto check = run("running", {"--check", "--json"});
  ASSERT_EQ(check.exit_code, 2) << check.out << check.err;
  const std::string xml =
      nlohmann::json::parse(check.out)["stages"][0]["tasks"].back()["data"]["xml"].get<std::string>();
  test::write(work / "win11.xml", xml);
  auto valid = test::run_program("/usr/bin/virt-xml-validate", {work / "win11.xml", "domain"});
  EXPECT_EQ(valid.exit_code, 0) << valid.out << valid.err << xml;
  EXPECT_TRUE(has(valid.out + valid.err, "validates")) << valid.out << valid.err;

  auto started = run("running");
  ASSERT_EQ(started.exit_code, 0) << started.out << started.err << slurp(dir + "/libvirtd.log");
  EXPECT_TRUE(has(started.out, "changed: [Windows 11] defined domain win11; created " + dir +
                                   "/win11_VARS.fd from "
                                   "/usr/share/OVMF/OVMF_VARS_4M.ms.fd; started"))
      << started.out;
  EXPECT_TRUE(has(daemon->virsh("domstate win11"), "running"));

  // The live definition: libvirt gave the TPM its swtpm and the loader is the Secure Boot build.
  const std::string live = daemon->virsh("dumpxml win11");
  for (const char* want :
       {"<loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>",
        "<smm state='on'/>", "<tpm model='tpm-crb'>", "<backend type='emulator' version='2.0'/>",
        "<alias name='tpm0'/>", "<domain type='qemu' id="})
    EXPECT_TRUE(has(live, want)) << want << "\n" << live;
  // QEMU's own view: its monitor reports the TPM on swtpm's socket, and its command line has
  // the Secure Boot code as pflash0, SMM, and the secure flash.
  const std::string tpm = daemon->virsh("qemu-monitor-command win11 --hmp info tpm");
  EXPECT_TRUE(has(tpm, "tpm0: model=tpm-crb")) << tpm;
  EXPECT_TRUE(has(tpm, "type=emulator,chardev=chrtpm")) << tpm;
  std::string cmdline;
  for (const auto& pidfile : {dir + "/run/libvirt/qemu/run/win11.pid", dir + "/run/libvirt/qemu/win11.pid"})
    if (fs::exists(pidfile)) {
      const std::string pid = slurp(pidfile);
      cmdline = slurp("/proc/" + std::string(trim(pid)) + "/cmdline");
      break;
    }
  std::replace(cmdline.begin(), cmdline.end(), '\0', '\n');
  for (const char* want :
       {"\"filename\":\"/usr/share/OVMF/OVMF_CODE_4M.ms.fd\"", "smm=on", "driver=cfi.pflash01,property=secure,value=on",
        "emulator,id=tpm-tpm0,chardev=chrtpm", "\"driver\":\"tpm-crb\"", "-win11-swtpm.sock"})
    EXPECT_TRUE(has(cmdline, want)) << want << "\n" << cmdline;
  // swtpm itself, as the daemon's user, with the TPM 2.0 state under the daemon's home.
  bool swtpm = false;
  for (const auto& p : fs::directory_iterator("/proc")) {
    std::string args;
    try {
      args = slurp(p.path() / "cmdline");
    } catch (...) {
      continue;
    }
    if (args.rfind("/usr/bin/swtpm", 0) == 0 && has(args, dir) && has(args, "--tpm2")) swtpm = true;
  }
  EXPECT_TRUE(swtpm) << "no swtpm process for the domain";
  std::printf("[ proof    ] %s\n[ proof    ] %s\n[ proof    ] %s\n[ proof    ] %s\n",
              field(without_record(live), "<loader").c_str(), field(without_record(live), "<smm").c_str(),
              field(without_record(live), "<tpm ").c_str(), field(tpm, "tpm0:").c_str());

  // A second run: ok; then off and gone.
  auto again = run("running");
  EXPECT_TRUE(has(again.out, "ok: [Windows 11] domain win11 is as wanted (pc-q35-")) << again.out;
  auto stopped = run("shutoff");
  EXPECT_TRUE(has(stopped.out, "changed: [Windows 11] powered off")) << stopped.out;
  auto gone = run("absent");
  EXPECT_TRUE(has(gone.out, "changed: [Windows 11] undefined domain win11")) << gone.out;
}

}  // namespace
}  // namespace gpt
