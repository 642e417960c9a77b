// libvirt_domain on domains it did not make: it manages only what the playbook declares, records
// what it took over in the domain's <metadata>, and gives a key back exactly as the user had it.
// On libvirt's test:/// driver in-process, and on a private libvirtd (the QEMU driver) with the
// real passthrough domains of tests/fixtures/domains (collected from public repositories).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <regex>

#include "agent/virt.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/libvirt_test_driver.hpp"
#include "tests/support/libvirtd.hpp"

namespace gpt {
namespace {

using test::TestDriver;
using test::VmHost;

namespace fs = std::filesystem;
using test::slurp;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// ---------------------------------------------------------------------------------------------
// Comparing two domain documents element by element, children matched by identity

std::string identity(pugi::xml_node n) {
  const std::string name = n.name();
  auto a = [&](pugi::xml_node x, const char* k) { return std::string(x.attribute(k).value()); };
  if (name == "disk") return a(n.child("target"), "dev");
  if (name == "interface") return a(n.child("mac"), "address");
  if (name == "hostdev") {
    auto s = n.child("source").child("address");
    if (s) return a(s, "domain") + ":" + a(s, "bus") + ":" + a(s, "slot") + "." + a(s, "function");
    return a(n.child("source").child("vendor"), "id") + ":" + a(n.child("source").child("product"), "id");
  }
  if (name == "controller") return a(n, "type") + ":" + a(n, "index");
  if (name == "input") return a(n, "type") + ":" + a(n, "bus") + ":" + a(n.child("source"), "dev");
  if (name == "channel" || name == "serial" || name == "console")
    return a(n, "type") + ":" + a(n.child("target"), "name");
  if (name == "vcpupin") return a(n, "vcpu");
  if (name == "timer") return a(n, "name");
  if (name == "shmem") return a(n, "name");
  if (name == "graphics" || name == "filesystem" || name == "rng" || name == "tpm") return a(n, "type");
  return "";
}

// Every element as "path -> attributes and text", the path naming each child by identity (or by
// its position among same-named siblings where it has none).
void flatten(pugi::xml_node n, const std::string& path, std::map<std::string, std::string>& out) {
  std::string value;
  for (auto at : n.attributes()) value += std::string(at.name()) + "=" + at.value() + " ";
  value += std::string(n.text().get());
  out[path] = value;
  std::map<std::string, int> seen;
  for (auto c : n.children()) {
    if (c.type() != pugi::node_element) continue;
    std::string id = identity(c);
    if (id.empty()) id = std::to_string(seen[c.name()]++);
    flatten(c, path + "/" + c.name() + "[" + id + "]", out);
  }
}

// The paths where two documents differ.
std::vector<std::string> differences(const std::string& a, const std::string& b) {
  pugi::xml_document da, db;
  da.load_string(a.c_str());
  db.load_string(b.c_str());
  std::map<std::string, std::string> fa, fb;
  flatten(da.document_element(), "", fa);
  flatten(db.document_element(), "", fb);
  std::vector<std::string> diff;
  for (const auto& [k, v] : fa)
    if (!fb.count(k) || fb[k] != v) diff.push_back(k);
  for (const auto& [k, v] : fb)
    if (!fa.count(k)) diff.push_back(k);
  return diff;
}

// The differences outside the allowed path prefixes.
std::vector<std::string> outside(const std::vector<std::string>& diff, const std::vector<std::string>& allowed) {
  std::vector<std::string> out;
  for (const auto& d : diff)
    if (std::none_of(allowed.begin(), allowed.end(), [&](const std::string& p) { return d.rfind(p, 0) == 0; }))
      out.push_back(d);
  return out;
}

// ---------------------------------------------------------------------------------------------
// A domain built in virt-manager and tuned by hand, on the test driver

// What people have: a disk and a CD-ROM with per-device boot order, a NIC, VNC on 5902, video
// none, Hyper-V with their vendor_id, pinning, a topology, an NVMe drive passed through, an evdev
// keyboard, a ROM on the GPU they already pass, and their own nvram.
const std::string kUserDomain = R"(<domain type='test'>
  <name>win10</name>
  <memory unit='KiB'>8388608</memory>
  <currentMemory unit='KiB'>8388608</currentMemory>
  <vcpu placement='static'>4</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='2'/>
    <vcpupin vcpu='1' cpuset='3'/>
    <vcpupin vcpu='2' cpuset='4'/>
    <vcpupin vcpu='3' cpuset='5'/>
  </cputune>
  <os>
    <type arch='i686' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/win10_VARS.fd</nvram>
  </os>
  <features>
    <acpi/>
    <apic/>
    <hyperv mode='custom'>
      <relaxed state='on'/>
      <vapic state='on'/>
      <spinlocks state='on' retries='4096'/>
      <vendor_id state='on' value='randomid'/>
    </hyperv>
  </features>
  <cpu mode='host-passthrough' check='none'>
    <topology sockets='1' dies='1' cores='2' threads='2'/>
  </cpu>
  <clock offset='localtime'>
    <timer name='rtc' tickpolicy='catchup'/>
  </clock>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/win10.qcow2'/>
      <target dev='sda' bus='sata'/>
      <boot order='2'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/Win10.iso'/>
      <target dev='sdb' bus='sata'/>
      <readonly/>
      <boot order='1'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
      <model type='e1000e'/>
    </interface>
    <input type='evdev'>
      <source dev='/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd' grab='all' repeat='on'/>
    </input>
    <graphics type='vnc' port='5902' autoport='no' listen='0.0.0.0'/>
    <video>
      <model type='none'/>
    </video>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source>
        <address domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
      </source>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </hostdev>
  </devices>
</domain>
)";

std::string adopt(const std::string& extra) {
  return "tasks:\n  - name: vm\n    libvirt_domain:\n      name: win10\n      connect: test:///default\n"
         "      memory: 12G\n      vcpus: 4\n      gpus: [\"0000:01:00.0\"]\n" +
         extra;
}

TEST(LibvirtDomainAdopts, AUsersDomainChangesOnlyWhereThePlaybookSays) {
  VmHost host;
  TestDriver lv;
  ASSERT_TRUE(lv.conn.define(kUserDomain).ok());
  const std::string original = lv.xml("win10");

  auto check = test::converge_root(host.root(), adopt(""), true);
  ASSERT_EQ(check.tasks.back().result.status, Outcome::changed) << check.tasks.back().result.msg;
  EXPECT_EQ(lv.xml("win10"), original) << "check mode redefined the domain";
  auto first = test::converge_root(host.root(), adopt(""), false);
  ASSERT_EQ(first.tasks.back().result.status, Outcome::changed) << first.tasks.back().result.msg;
  EXPECT_EQ(first.changes(), check.changes());
  EXPECT_EQ(first.tasks.back().result.msg, "redefined domain win10") << "no nvram is made: the domain has its own";
  EXPECT_FALSE(test::exists(host.file("/var/lib/libvirt/qemu/nvram/win10_VARS.fd")));
  const std::string adopted = lv.xml("win10");

  // Only the memory, the GPU's two functions behind a new root port, and the record differ.
  const auto diff = differences(original, adopted);
  EXPECT_EQ(
      outside(diff, {"/memory[0]", "/currentMemory[0]", "/metadata[0]", "/devices[0]/hostdev[0x0000:0x01:0x00.0x0]",
                     "/devices[0]/hostdev[0x0000:0x01:0x00.0x1]", "/devices[0]/controller[pci:"}),
      std::vector<std::string>{})
      << adopted;
  EXPECT_TRUE(has(adopted, "<memory unit='KiB'>12582912</memory>")) << adopted;
  EXPECT_TRUE(has(adopted, "<controller type='pci' index='5' model='pcie-root-port'/>"))
      << "the first free index: " << adopted;
  EXPECT_TRUE(
      has(adopted, "<address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0' multifunction='on'/>"))
      << adopted;
  EXPECT_FALSE(has(adopted, "<boot dev=")) << "per-device boot order: no <os><boot>";
  EXPECT_TRUE(has(adopted, "xmlns:gptagent=")) << adopted;

  auto second = test::converge_root(host.root(), adopt(""), false);
  EXPECT_EQ(second.tasks.back().result.status, Outcome::ok)
      << second.tasks.back().result.msg << second.tasks.back().result.diff;
  EXPECT_EQ(test::converge_root(host.root(), adopt(""), true).exit_code, 0);

  // hyperv: true takes the enlightenments over; without it they are the user's again, exactly.
  auto tuned = test::converge_root(host.root(), adopt("      hyperv: true\n"), false);
  ASSERT_EQ(tuned.tasks.back().result.status, Outcome::changed) << tuned.tasks.back().result.msg;
  const std::string with_hyperv = lv.xml("win10");
  EXPECT_TRUE(has(with_hyperv, "<spinlocks state='on' retries='4096'/>")) << "the user's retries stay: " << with_hyperv;
  EXPECT_TRUE(has(with_hyperv, "<synic state='on'/>")) << with_hyperv;
  EXPECT_TRUE(has(with_hyperv, "<vendor_id state='on' value='randomid'/>"))
      << "the user's vendor_id stays: " << with_hyperv;
  EXPECT_TRUE(has(with_hyperv, "<timer name='hypervclock' present='yes'/>")) << with_hyperv;
  EXPECT_EQ(test::converge_root(host.root(), adopt("      hyperv: true\n"), false).tasks.back().result.status,
            Outcome::ok);
  auto untuned = test::converge_root(host.root(), adopt(""), false);
  ASSERT_EQ(untuned.tasks.back().result.status, Outcome::changed) << untuned.tasks.back().result.msg;
  EXPECT_EQ(lv.xml("win10"), adopted) << "hyperv given back";

  // So do hide_kvm, graphics, video and the topology: each declared, then given back.
  for (const char* key : {"      hide_kvm: true\n", "      graphics: {type: spice}\n      video: virtio\n",
                          "      cpu: {sockets: 1, cores: 4, threads: 1}\n", "      hyperv_vendor_id: gptagent1\n",
                          "      cpu_mode: host-model\n"}) {
    auto on = test::converge_root(host.root(), adopt(key), false);
    ASSERT_EQ(on.tasks.back().result.status, Outcome::changed) << key << on.tasks.back().result.msg;
    EXPECT_EQ(test::converge_root(host.root(), adopt(key), false).tasks.back().result.status, Outcome::ok) << key;
    auto off = test::converge_root(host.root(), adopt(""), false);
    ASSERT_EQ(off.tasks.back().result.status, Outcome::changed) << key << off.tasks.back().result.msg;
    EXPECT_EQ(lv.xml("win10"), adopted) << key;
  }

  // Without gpus the agent's hostdevs and root port go; the user's NVMe drive stays.
  std::string no_gpu = adopt("");
  no_gpu.erase(no_gpu.find("      gpus:"), std::string("      gpus: [\"0000:01:00.0\"]\n").size());
  ASSERT_EQ(test::converge_root(host.root(), no_gpu, false).tasks.back().result.status, Outcome::changed);
  const std::string released = lv.xml("win10");
  EXPECT_EQ(outside(differences(original, released), {"/memory[0]", "/currentMemory[0]", "/metadata[0]"}),
            std::vector<std::string>{})
      << released;
}

TEST(LibvirtDomainAdopts, ListsAreManagedItemByItem) {
  VmHost host;
  TestDriver lv;
  ASSERT_TRUE(lv.conn.define(kUserDomain).ok());
  const std::string original = lv.xml("win10");
  fs::create_directories(host.file("/sys/class/net/br0/bridge"));  // the host's bridge the NIC plugs into
  // A second disk and a bridge NIC: added beside the user's, on free targets; the user's sata disk
  // is adopted by its path and its bus changed, as the playbook says.
  const std::string lists = adopt(
      "      disks: [{path: /var/lib/libvirt/images/win10.qcow2, bus: sata}, /var/lib/libvirt/images/data.qcow2]\n"
      "      interfaces: [{bridge: br0}]\n");
  auto first = test::converge_root(host.root(), lists, false);
  ASSERT_EQ(first.tasks.back().result.status, Outcome::changed) << first.tasks.back().result.msg;
  const std::string xml = lv.xml("win10");
  EXPECT_TRUE(has(xml, "<source file='/var/lib/libvirt/images/data.qcow2'/>")) << xml;
  EXPECT_TRUE(has(xml, "<target dev='vda' bus='virtio'/>")) << xml;
  EXPECT_TRUE(has(xml, "<source file='/var/lib/libvirt/images/win10.qcow2'/>")) << xml;
  EXPECT_TRUE(has(xml, "<source file='/var/lib/libvirt/images/Win10.iso'/>")) << xml;
  EXPECT_TRUE(has(xml, "<mac address='52:54:00:aa:bb:cc'/>")) << "the user's NIC stays: " << xml;
  EXPECT_TRUE(has(xml, "<source bridge='br0'/>")) << xml;
  EXPECT_EQ(test::converge_root(host.root(), lists, false).tasks.back().result.status, Outcome::ok);

  // Taken out of the playbook: the agent's disk and NIC go, the user's disk is as it was.
  ASSERT_EQ(test::converge_root(host.root(), adopt(""), false).tasks.back().result.status, Outcome::changed);
  const std::string back = lv.xml("win10");
  EXPECT_FALSE(has(back, "data.qcow2")) << back;
  EXPECT_FALSE(has(back, "br0")) << back;
  EXPECT_EQ(outside(differences(original, back), {"/memory[0]", "/currentMemory[0]", "/metadata[0]",
                                                  "/devices[0]/hostdev[0x0000:0x01", "/devices[0]/controller[pci:"}),
            std::vector<std::string>{})
      << back;

  // exclusive: the list is exact; state: absent takes one item out, the user's too.
  auto exact = test::converge_root(host.root(),
                                   adopt("      interfaces: [{bridge: br0}]\n      exclusive: [interfaces]\n"), false);
  ASSERT_EQ(exact.tasks.back().result.status, Outcome::changed) << exact.tasks.back().result.msg;
  EXPECT_FALSE(has(lv.xml("win10"), "52:54:00:aa:bb:cc")) << lv.xml("win10");
  auto absent = test::converge_root(
      host.root(), adopt("      disks: [{path: /var/lib/libvirt/images/win10.qcow2, state: absent}]\n"), false);
  ASSERT_EQ(absent.tasks.back().result.status, Outcome::changed) << absent.tasks.back().result.msg;
  EXPECT_FALSE(has(lv.xml("win10"), "win10.qcow2")) << lv.xml("win10");
  EXPECT_TRUE(has(lv.xml("win10"), "Win10.iso")) << "a CD-ROM is not a disk of the list";
}

TEST(LibvirtDomainAdopts, RefusesWhatWouldBreakTheDomainAndChangesNothing) {
  VmHost host;
  TestDriver lv;
  ASSERT_TRUE(lv.conn.define(kUserDomain).ok());
  const std::string original = lv.xml("win10");
  // boot: beside per-device boot order.
  auto boot = test::converge_root(host.root(), adopt("      boot: [hd]\n"), false);
  EXPECT_EQ(boot.tasks.back().result.status, Outcome::failed);
  EXPECT_EQ(
      boot.tasks.back().result.msg,
      "boot: domain win10 orders its devices itself (disk sda (order 2), disk sdb (order 1)), and libvirt refuses "
      "<os><boot> beside that: leave boot: out, or set the order in the domain");
  EXPECT_EQ(lv.xml("win10"), original);

  // An i440FX domain that would get a GPU.
  std::string i440fx = std::regex_replace(kUserDomain, std::regex("pc-q35-7.2"), "pc-i440fx-7.2");
  i440fx = std::regex_replace(i440fx, std::regex("<name>win10</name>"), "<name>oldvm</name>");
  ASSERT_TRUE(lv.conn.define(i440fx).ok());
  const std::string old = lv.xml("oldvm");
  std::string pb = adopt("");
  pb.replace(pb.find("name: win10"), 11, "name: oldvm");
  auto refused = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(refused.tasks.back().result.status, Outcome::failed);
  EXPECT_TRUE(has(refused.tasks.back().result.msg,
                  "domain oldvm uses the i440FX chipset (pc-i440fx-7.2), which has no PCIe root port for 0000:01:00.0"))
      << refused.tasks.back().result.msg;
  EXPECT_TRUE(has(refused.tasks.back().result.msg, "Nothing was changed")) << refused.tasks.back().result.msg;
  EXPECT_EQ(lv.xml("oldvm"), old);
  // Nor is it moved to q35 when the playbook names one.
  auto q35 = test::converge_root(host.root(), pb + "      machine: pc-q35-7.2\n", false);
  EXPECT_EQ(q35.tasks.back().result.status, Outcome::failed);
  EXPECT_TRUE(has(q35.tasks.back().result.msg,
                  "domain oldvm uses the i440FX chipset (pc-i440fx-7.2), and gptagent does not move an existing domain "
                  "to pc-q35-7.2"))
      << q35.tasks.back().result.msg;
  EXPECT_EQ(lv.xml("oldvm"), old);
}

TEST(LibvirtDomainAdopts, ANewDomainGetsTheDefaultsButOnlyDeclaredKeysAreRecorded) {
  VmHost host;
  TestDriver lv;
  const std::string pb =
      "tasks:\n  - libvirt_domain:\n      name: fresh\n      connect: test:///default\n      memory: 4G\n"
      "      machine: pc-q35-7.2\n";
  ASSERT_EQ(test::converge_root(host.root(), pb, false).tasks.back().result.status, Outcome::changed);
  const std::string xml = lv.xml("fresh");
  for (const char* want : {"<graphics type='spice'", "<model type='vga'", "<hidden state='on'/>", "<boot dev='hd'/>",
                           "<gptagent:part key=\"memory\"/>", "<gptagent:part key=\"machine\"/>"})
    EXPECT_TRUE(has(xml, want)) << want << "\n" << xml;
  EXPECT_FALSE(has(xml, "key=\"graphics\"")) << "a default is where the domain starts, not a key the agent keeps";
  // So the user's own change to an undeclared key stays.
  std::string edited = std::regex_replace(xml, std::regex("<graphics type='spice'"), "<graphics type='vnc'");
  edited = std::regex_replace(edited, std::regex("<channel type='spicevmc'>[\\s\\S]*?</channel>"), "");
  ASSERT_TRUE(lv.conn.define(edited).ok());
  EXPECT_EQ(test::converge_root(host.root(), pb, false).tasks.back().result.status, Outcome::ok);
  EXPECT_TRUE(has(lv.xml("fresh"), "<graphics type='vnc'"));
}

// ---------------------------------------------------------------------------------------------
// The corpus: real passthrough domains, on a private libvirtd

class RealDomains : public test::WithPrivateLibvirtd<RealDomains> {};

// What this machine's libvirtd (Debian 12's 9.0, QEMU 7.2, no KVM for the test daemon) needs to
// define a domain written for another host, and nothing else: the domain type, the emulator's
// path, a machine type this QEMU has (the same chipset, its newest version here when the file's
// is newer or a distribution's own, such as Ubuntu's pc-q35-artful), the name; and what libvirt
// 9.0 does not know or no longer accepts: the iTCO watchdog and PipeWire audio (libvirt 9.1 and
// 8.x-era additions), a spicevmc channel, redirdev or spice audio without spice graphics (older
// libvirt accepted them), firmware autoselection beside an explicit loader (9.2 accepts both),
// virtiofs (not in a session daemon) and a TPM (no swtpm here).
std::string for_this_host(const std::string& xml, const std::string& name) {
  pugi::xml_document d;
  if (!d.load_string(xml.c_str(), pugi::parse_default | pugi::parse_comments)) return "";
  auto dom = d.child("domain");
  dom.attribute("type").set_value("qemu");
  dom.child("name").text().set(name.c_str());
  dom.remove_child("uuid");
  if (auto e = dom.child("devices").child("emulator")) e.text().set("/usr/bin/qemu-system-x86_64");
  auto type = dom.child("os").child("type");
  const std::string machine = type.attribute("machine").value();
  auto version = [](const std::string& m) {
    std::smatch v;
    return std::regex_search(m, v, std::regex("(\\d+)\\.(\\d+)$")) ? std::stoi(v[1]) * 100 + std::stoi(v[2]) : 0;
  };
  if (machine.find("q35") != std::string::npos && (version(machine) > 702 || version(machine) == 0))
    type.attribute("machine").set_value("pc-q35-7.2");
  if (machine.find("i440fx") != std::string::npos && (version(machine) > 702 || version(machine) == 0))
    type.attribute("machine").set_value("pc-i440fx-7.2");
  auto devices = dom.child("devices");
  bool spice = false;
  for (auto g : devices.children("graphics")) spice = spice || std::string(g.attribute("type").value()) == "spice";
  std::vector<pugi::xml_node> unknown;
  for (auto d : devices.children()) {
    const std::string n = d.name(), t = d.attribute("type").value();
    if ((n == "watchdog" && std::string(d.attribute("model").value()) == "itco") || (n == "audio" && t == "pipewire") ||
        (n == "filesystem" && std::string(d.child("driver").attribute("type").value()) == "virtiofs") || n == "tpm" ||
        (!spice && ((n == "channel" || n == "redirdev" || n == "smartcard") && t == "spicevmc")) ||
        (!spice && n == "audio" && t == "spice"))
      unknown.push_back(d);
  }
  for (auto d : unknown) devices.remove_child(d);
  if (dom.child("os").child("loader") && dom.child("os").attribute("firmware")) {
    dom.child("os").remove_attribute("firmware");
    dom.child("os").remove_child("firmware");  // its feature list goes with the autoselection
  }
  if (!type.attribute("arch")) type.append_attribute("arch") = "x86_64";
  std::ostringstream out;
  d.save(out, "  ");
  return out.str();
}

std::string task(const std::string& name, uint64_t memory_kib, int vcpus, const std::string& extra = "") {
  return "tasks:\n  - name: vm\n    libvirt_domain:\n      name: " + name +
         "\n      memory: " + std::to_string(memory_kib / 1024) + "M\n      vcpus: " + std::to_string(vcpus) +
         "\n      gpus: [\"0000:01:00.0\"]\n" + extra;
}

TEST_F(RealDomains, EachRealDomainIsAdoptedWithoutLossAndGivenBackExactly) {
  const fs::path dir = test::source_path("tests/fixtures/domains");
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".xml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 15u) << "the corpus holds at least 15 real domains";
  VmHost host;
  test::TempDir plays;
  int adopted = 0, refused = 0;
  for (const auto& file : files) {
    SCOPED_TRACE(file.filename().string());
    const std::string name = "corpus-" + file.stem().string();
    const std::string prepared = for_this_host(slurp(file), name);
    ASSERT_FALSE(prepared.empty()) << "does not parse";
    test::write(plays / "in.xml", prepared);
    const std::string defined = daemon->virsh("define " + plays / "in.xml");
    if (!has(defined, "defined")) {
      ADD_FAILURE() << defined;
      continue;
    }
    const std::string before = daemon->virsh("dumpxml --inactive " + name);
    pugi::xml_document b;
    ASSERT_TRUE(b.load_string(before.c_str()));
    const auto dom = b.child("domain");
    const uint64_t memory = dom.child("memory").text().as_ullong();
    const int vcpus = dom.child("vcpu").text().as_int();
    auto run = [&](const std::string& pb, bool check) {
      test::write(plays / "pb.yaml", pb);
      std::vector<std::string> args{"apply",       plays / "pb.yaml", "--root", host.root(), "--connect",
                                    daemon->uri(), "--color",         "never",  "--diff"};
      if (check) args.push_back("--check");
      return test::run_agent(args);
    };
    // With NUMA cells libvirt takes the memory from them: another size is refused, with the reason.
    std::string pb = task(name, memory + 1024 * 1024, vcpus);
    if (dom.child("cpu").child("numa")) {
      auto r = run(pb, false);
      EXPECT_EQ(r.exit_code, 1) << r.out;
      EXPECT_TRUE(has(r.out, "NUMA")) << r.out;
      EXPECT_EQ(daemon->virsh("dumpxml --inactive " + name), before) << "refused, untouched";
      pb = task(name, memory, vcpus);
    }
    const std::string machine = dom.child("os").child("type").attribute("machine").value();
    // The sample host's GPU is 0000:01:00.0 and .1: a domain that has both gets nothing new.
    int gpu_functions = 0;
    for (auto h : dom.child("devices").children("hostdev")) {
      auto a = h.child("source").child("address");
      gpu_functions += a.attribute("domain").as_uint() == 0 && a.attribute("bus").as_uint() == 1 &&
                       a.attribute("slot").as_uint() == 0 && a.attribute("function").as_uint() < 2;
    }
    if (machine.find("i440fx") != std::string::npos && gpu_functions < 2) {
      auto r = run(pb, false);
      EXPECT_EQ(r.exit_code, 1) << r.out;
      EXPECT_TRUE(has(r.out, "uses the i440FX chipset")) << r.out;
      EXPECT_EQ(daemon->virsh("dumpxml --inactive " + name), before) << "refused, untouched";
      ++refused;
      continue;
    }
    auto check = run(pb, true);
    EXPECT_EQ(check.exit_code, 2) << check.out << check.err;
    auto first = run(pb, false);
    if (first.exit_code != 0) {
      ADD_FAILURE() << first.out << first.err;
      continue;
    }
    const std::string after = daemon->virsh("dumpxml --inactive " + name);
    EXPECT_EQ(
        outside(differences(before, after), {"/memory[0]", "/currentMemory[0]", "/metadata[0]",
                                             "/devices[0]/hostdev[0x0000:0x01:0x00.", "/devices[0]/controller[pci:"}),
        std::vector<std::string>{})
        << after;
    // The new root port and hostdevs sit where nothing else did.
    auto second = run(pb, false);
    EXPECT_EQ(second.exit_code, 0) << second.out;
    EXPECT_TRUE(has(second.out, "ok: [vm]")) << second.out;
    EXPECT_EQ(run(pb, true).exit_code, 0);
    // A tuning key taken over and given back: the domain returns exactly to what it was.
    auto tuned = run(pb + "      hyperv: true\n", false);
    EXPECT_EQ(tuned.exit_code, 0) << tuned.out;
    auto back = run(pb, false);
    EXPECT_EQ(back.exit_code, 0) << back.out;
    EXPECT_EQ(daemon->virsh("dumpxml --inactive " + name), after);
    ++adopted;
  }
  std::printf("[ corpus   ] %d real domains adopted and given back, %d i440FX domains refused\n", adopted, refused);
  EXPECT_GE(refused, 1) << "the corpus has an i440FX domain that would get a GPU";
}

}  // namespace
}  // namespace gpt
