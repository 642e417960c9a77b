// libvirt_domain against real libvirt: the test:/// driver in-process, and a private libvirtd
// (QEMU driver, type qemu: these machines cannot run KVM guests) through the binary. GPUs come
// from the sample host trees' sysfs, the only part faked.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "agent/virt.hpp"
#include "tests/support/converge.hpp"
#include "tests/support/libvirt_test_driver.hpp"
#include "tests/support/libvirtd.hpp"

namespace gpt {
namespace {

using test::TestDriver;
using test::VmHost;

using test::slurp;
namespace fs = std::filesystem;

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

std::string play(const std::string& extra) {
  return "tasks:\n  - name: vm\n    libvirt_domain:\n      name: gpuvm\n      connect: test:///default\n"
         "      machine: pc-q35-7.2\n      memory: 8G\n      vcpus: 4\n      gpus: [\"0000:01:00.0\"]\n"
         "      disks: [/var/lib/libvirt/images/gpuvm.qcow2]\n"
         "      interfaces: [{network: default}]\n" +
         extra;
}

TEST(LibvirtDomain, DefinesChecksRedefinesAndUndefinesOnTheTestDriver) {
  VmHost host;
  TestDriver lv;
  const std::string pb = play("");

  auto check = test::converge_root(host.root(), pb, true);
  ASSERT_EQ(check.tasks.size(), 2u) << (check.load_errors.empty() ? "" : check.load_errors[0]);  // preflight, the VM
  EXPECT_EQ(check.tasks[0].result.status, Outcome::ok) << check.tasks[0].result.msg;
  EXPECT_EQ(check.tasks.back().result.status, Outcome::changed) << check.tasks.back().result.msg;
  EXPECT_EQ(lv.xml("gpuvm"), "") << "check mode defined the domain";
  EXPECT_FALSE(test::exists(host.file("/var/lib/libvirt/qemu/nvram/gpuvm_VARS.fd")));

  auto first = test::converge_root(host.root(), pb, false);
  ASSERT_EQ(first.tasks.back().result.status, Outcome::changed) << first.tasks.back().result.msg;
  EXPECT_EQ(first.changes(), check.changes());
  EXPECT_EQ(
      first.tasks.back().result.msg,
      "defined domain gpuvm; created /var/lib/libvirt/qemu/nvram/gpuvm_VARS.fd from /usr/share/OVMF/OVMF_VARS_4M.fd");
  EXPECT_EQ(slurp(host.file("/var/lib/libvirt/qemu/nvram/gpuvm_VARS.fd")), "OVMF variables template\n");
  const std::string xml = lv.xml("gpuvm");
  for (const char* want :
       {"<memory unit='KiB'>8388608</memory>", "<vcpu placement='static'>4</vcpu>", "machine='pc-q35-7.2'",
        "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>",
        "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/gpuvm_VARS.fd</nvram>",
        "<hidden state='on'/>", "<cpu mode='host-passthrough' check='partial'/>",
        "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>",
        "<address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>",
        "<address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0' multifunction='on'/>",
        "<address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x1'/>",
        "<controller type='pci' index='6' model='pcie-root-port'/>", "<driver name='vfio'/>",
        "<source file='/var/lib/libvirt/images/gpuvm.qcow2'/>", "<target dev='vda' bus='virtio'/>",
        "<graphics type='spice' autoport='yes'", "<channel type='spicevmc'>", "<console type='pty'>"})
    EXPECT_TRUE(has(xml, want)) << want << "\n" << xml;

  auto second = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(second.tasks.back().result.status, Outcome::ok)
      << second.tasks.back().result.msg << second.tasks.back().result.diff;
  EXPECT_EQ(second.tasks.back().result.msg, "domain gpuvm is as wanted (pc-q35-7.2, 2 host devices, shut off)");

  // Someone edits the memory in virsh and adds a tablet: drift in the memory only; the redefine
  // keeps the uuid, the MAC libvirt chose, and the device the playbook does not manage.
  std::smatch uuid;
  ASSERT_TRUE(std::regex_search(xml, uuid, std::regex("<uuid>([^<]+)</uuid>")));
  std::string edited = std::regex_replace(xml, std::regex("8388608"), "4194304");
  edited = std::regex_replace(edited, std::regex("</devices>"), "<input type='tablet' bus='usb'/></devices>");
  ASSERT_TRUE(lv.conn.define(edited).ok());
  const std::string mac = std::regex_replace(xml, std::regex("[\\s\\S]*<mac address='([^']+)'/>[\\s\\S]*"), "$1");

  auto drift = test::converge_root(host.root(), pb, true);
  EXPECT_EQ(drift.tasks.back().result.status, Outcome::changed);
  EXPECT_EQ(drift.tasks.back().result.msg, "redefined domain gpuvm");
  EXPECT_TRUE(has(drift.tasks.back().result.diff, "-  <memory unit=\"KiB\">4194304</memory>"))
      << drift.tasks.back().result.diff;
  EXPECT_TRUE(has(drift.tasks.back().result.diff, "+  <memory unit=\"KiB\">8388608</memory>"))
      << drift.tasks.back().result.diff;
  EXPECT_TRUE(has(lv.xml("gpuvm"), "4194304")) << "check mode redefined the domain";
  auto fixed = test::converge_root(host.root(), pb, false);
  EXPECT_EQ(fixed.tasks.back().result.status, Outcome::changed);
  const std::string after = lv.xml("gpuvm");
  EXPECT_TRUE(has(after, "<memory unit='KiB'>8388608</memory>"));
  EXPECT_TRUE(has(after, "<uuid>" + uuid[1].str() + "</uuid>"));
  EXPECT_TRUE(has(after, "<mac address='" + mac + "'/>")) << mac;
  EXPECT_TRUE(has(after, "<input type='tablet' bus='usb'/>"));
  EXPECT_EQ(test::converge_root(host.root(), pb, false).tasks.back().result.status, Outcome::ok);

  // A different playbook value is a change too, and only what it names moves.
  auto more =
      test::converge_root(host.root(), play("      hyperv_vendor_id: whatever\n      autostart: true\n"), false);
  EXPECT_EQ(more.tasks.back().result.msg, "redefined domain gpuvm; autostart on");
  EXPECT_TRUE(has(lv.xml("gpuvm"), "<vendor_id state='on' value='whatever'/>"));

  const std::string absent = play("      state: absent\n");
  auto gone_check = test::converge_root(host.root(), absent, true);
  EXPECT_EQ(gone_check.tasks.back().result.status, Outcome::changed);
  EXPECT_NE(lv.xml("gpuvm"), "");
  auto gone = test::converge_root(host.root(), absent, false);
  EXPECT_EQ(gone.tasks.back().result.msg, "undefined domain gpuvm");
  EXPECT_EQ(lv.xml("gpuvm"), "");
  EXPECT_TRUE(test::exists(host.file("/var/lib/libvirt/qemu/nvram/gpuvm_VARS.fd"))) << "keep_nvram is the default";
  EXPECT_EQ(test::converge_root(host.root(), absent, false).tasks.back().result.msg, "domain gpuvm is absent");
}

TEST(LibvirtDomain, BadInputIsAClearErrorAndDefinesNothing) {
  VmHost host;
  TestDriver lv;
  auto bad_address =
      test::converge_root(host.root(), play("").replace(play("").find("0000:01:00.0"), 12, "01:00"), false);
  ASSERT_FALSE(bad_address.load_errors.empty());
  EXPECT_TRUE(has(bad_address.load_errors[0],
                  "test.yaml:9:13: libvirt_domain argument 'gpus': '01:00' is not a PCI address like 0000:01:00.0"))
      << bad_address.load_errors[0];

  auto bad_memory = test::converge_root(host.root(), play("").replace(play("").find("8G"), 2, "8Q"), false);
  ASSERT_FALSE(bad_memory.load_errors.empty());
  EXPECT_TRUE(has(bad_memory.load_errors[0], "'8Q' is not a size like 16G")) << bad_memory.load_errors[0];

  auto both = test::converge_root(
      host.root(), play("").replace(play("").find("{network: default}"), 18, "{network: default, bridge: br0}"), false);
  ASSERT_FALSE(both.load_errors.empty());
  EXPECT_TRUE(has(both.load_errors[0], "each interface has either bridge or network")) << both.load_errors[0];

  auto missing_gpu =
      test::converge_root(host.root(), play("").replace(play("").find("0000:01:00.0"), 12, "0000:09:00.0"), false);
  ASSERT_EQ(missing_gpu.tasks.size(), 1u);  // the automatic preflight stops the run before the domain
  EXPECT_EQ(missing_gpu.tasks[0].result.status, Outcome::failed);
  EXPECT_TRUE(has(missing_gpu.tasks[0].result.msg, "0000:09:00.0")) << missing_gpu.tasks[0].result.msg;

  auto i440fx =
      test::converge_root(host.root(), play("").replace(play("").find("pc-q35-7.2"), 10, "pc-i440fx-7.2"), false);
  EXPECT_EQ(i440fx.tasks.back().result.msg,
            "machine: pc-i440fx-7.2 is the i440FX chipset, which has no PCIe for a GPU: use q35 (pc-q35-4.2 or newer)");

  auto old_q35 =
      test::converge_root(host.root(), play("").replace(play("").find("pc-q35-7.2"), 10, "pc-q35-2.12"), false);
  EXPECT_EQ(old_q35.tasks.back().result.msg,
            "machine: pc-q35-2.12 is older than pc-q35-4.2, the oldest q35 machine type for GPU passthrough");

  auto no_firmware = test::converge_root(test::SampleHost().root(), play(""), false);
  EXPECT_TRUE(has(no_firmware.tasks.back().result.msg, "no OVMF firmware found"))
      << no_firmware.tasks.back().result.msg;

  auto bad_uri = test::converge_root(
      host.root(), play("").replace(play("").find("test:///default"), 15, "test:///nonexistent.xml"), false);
  EXPECT_EQ(bad_uri.tasks.back().result.status, Outcome::failed);
  EXPECT_TRUE(has(bad_uri.tasks.back().result.msg, "cannot connect to libvirt at test:///nonexistent.xml: "))
      << bad_uri.tasks.back().result.msg;

  EXPECT_EQ(lv.xml("gpuvm"), "");
  EXPECT_FALSE(test::exists(host.file("/var/lib/libvirt/qemu/nvram/gpuvm_VARS.fd")));
}

TEST(LibvirtDomain, UnderASandboxRootOnlyAnExplicitConnectionIsUsed) {
  VmHost host;
  std::string pb = play("");
  pb.erase(pb.find("      connect: test:///default\n"), 31);
  auto r = test::converge_root(host.root(), pb, false, /*allow_system_commands=*/false);
  ASSERT_EQ(r.tasks.back().result.status, Outcome::skipped);
  EXPECT_TRUE(has(r.tasks.back().result.msg, "domain gpuvm would be defined at qemu:///system"))
      << r.tasks.back().result.msg;
}

// A private libvirtd with the QEMU driver, started for this suite.
class RealLibvirtd : public test::WithPrivateLibvirtd<RealLibvirtd> {};

TEST_F(RealLibvirtd, TheSeedExampleValidatesDefinesAndConverges) {
  // Two GTX 1070s at 01:00 and 02:00, as in the walkthrough; the host console moved off the first
  // one (in this tree it is the boot VGA, which the preflight rightly refuses).
  VmHost host("two-gpus-boot-vga");
  test::write(fs::canonical(host.file("/sys/bus/pci/devices/0000:01:00.0")) / "boot_vga", "0\n");
  fs::create_directories(host.file("/sys/class/net/VMBridge/bridge"));  // the walkthrough's bridge
  test::TempDir work;
  const std::string pb = test::source_path("playbooks/seed-example.yaml");
  fs::create_directories(host.file("/var/lib/libvirt/images"));
  const std::vector<std::string> base{"apply",       pb,        "--root", host.root(), "--connect",
                                      daemon->uri(), "--color", "never"};

  auto args = base;
  args.insert(args.end(), {"--check", "--json"});
  auto check = test::run_agent(args);
  ASSERT_EQ(check.exit_code, 2) << check.out << check.err;
  auto doc = nlohmann::json::parse(check.out);
  const auto& tasks = doc["stages"][0]["tasks"];
  const nlohmann::json* vm = nullptr;
  for (const auto& t : tasks)
    if (t["module"] == "libvirt_domain") vm = &t;
  ASSERT_NE(vm, nullptr) << check.out;
  const std::string xml = (*vm)["data"]["xml"].get<std::string>();
  test::write(work / "Example.xml", xml);
  auto valid = test::run_program("/usr/bin/virt-xml-validate", {work / "Example.xml", "domain"});
  EXPECT_EQ(valid.exit_code, 0) << valid.out << valid.err << xml;
  EXPECT_TRUE(has(xml, "machine=\"pc-q35-")) << xml;
  EXPECT_TRUE(has(xml, "<domain type=\"qemu\">")) << "no /dev/kvm in the sample tree: type auto is qemu";
  EXPECT_TRUE(has(daemon->virsh("list --all --name"), "Example") == false);

  auto first = test::run_agent(base);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_TRUE(has(first.out, "changed: [the VM] defined domain Example")) << first.out;
  const std::string defined = daemon->virsh("dumpxml --inactive Example");
  for (const char* want :
       {"<memory unit='KiB'>16777216</memory>", "<vcpu placement='static'>8</vcpu>", "<source bridge='VMBridge'/>",
        "<mac address='c6:f4:35:f8:98:c9'/>",
        "<graphics type='spice' port='5902' autoport='no' listen='192.168.1.103'>",
        "<address domain='0x0000' bus='0x02' slot='0x00' function='0x1'/>", "<boot dev='cdrom'/>",
        "<address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0' multifunction='on'/>",
        "<address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x1'/>"})
    EXPECT_TRUE(has(defined, want)) << want << "\n" << defined;

  auto second = test::run_agent(base);
  EXPECT_EQ(second.exit_code, 0) << second.out;
  EXPECT_TRUE(has(second.out, "ok: [the VM] domain Example is as wanted")) << second.out;

  // Drift made in virsh: --check reports it (exit 2), apply fixes it, --check is clean again.
  EXPECT_TRUE(has(daemon->virsh("setmaxmem Example 4G --config"), ""));
  args = base;
  args.push_back("--check");
  auto drift = test::run_agent(args);
  EXPECT_EQ(drift.exit_code, 2) << drift.out;
  EXPECT_TRUE(has(drift.out, "changed: [the VM] redefined domain Example")) << drift.out;
  EXPECT_EQ(test::run_agent(base).exit_code, 0);
  EXPECT_EQ(test::run_agent(args).exit_code, 0);
  EXPECT_TRUE(has(daemon->virsh("dumpxml --inactive Example"), "<memory unit='KiB'>16777216</memory>"));
}

TEST_F(RealLibvirtd, AVmWithoutGpusStartsAndStopsUnderEmulation) {
  VmHost host;
  test::TempDir plays;
  auto pb = [&](const std::string& state) {
    const std::string path = plays / (state + ".yaml");
    test::write(path,
                "tasks:\n  - name: vm\n    libvirt_domain:\n      name: tcgvm\n      memory: 128M\n      vcpus: 1\n"
                "      graphics: {type: none}\n      video: none\n      nvram: " +
                    daemon->dir() +
                    "/tcgvm_VARS.fd\n"
                    "      force_shutoff: true\n      state: " +
                    state + "\n");
    return path;
  };
  auto run = [&](const std::string& state) {
    return test::run_agent({"apply", pb(state), "--root", host.root(), "--connect", daemon->uri(), "--color", "never"});
  };
  // A definition libvirt refuses (a machine type this QEMU does not have): nothing is changed.
  const std::string refused_pb = plays / "refused.yaml";
  test::write(refused_pb, slurp(pb("running")) + "      machine: pc-q35-99.0\n");
  auto refused =
      test::run_agent({"apply", refused_pb, "--root", host.root(), "--connect", daemon->uri(), "--color", "never"});
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_TRUE(has(refused.out, "failed: [vm] libvirt refused the domain definition: ")) << refused.out;
  EXPECT_TRUE(has(refused.out, "(domain tcgvm, nothing was changed)")) << refused.out;
  EXPECT_FALSE(fs::exists(host.file(daemon->dir() + "/tcgvm_VARS.fd")))
      << "the nvram was made for a domain never defined";
  EXPECT_TRUE(has(daemon->virsh("list --all --name"), "tcgvm") == false);

  auto started = run("running");
  ASSERT_EQ(started.exit_code, 0) << started.out << started.err;
  EXPECT_TRUE(has(started.out, "defined domain tcgvm")) << started.out;
  EXPECT_TRUE(has(started.out, "; started")) << started.out;
  EXPECT_TRUE(has(daemon->virsh("domstate tcgvm"), "running"));
  auto again = run("running");
  EXPECT_TRUE(has(again.out, "ok: [vm] domain tcgvm is as wanted (pc-q35-")) << again.out;
  EXPECT_TRUE(has(again.out, ", running)")) << again.out;
  auto stopped = run("shutoff");
  EXPECT_EQ(stopped.exit_code, 0) << stopped.out << stopped.err;
  EXPECT_TRUE(has(stopped.out, "changed: [vm] powered off")) << stopped.out;
  EXPECT_TRUE(has(daemon->virsh("domstate tcgvm"), "shut off"));
  EXPECT_TRUE(has(run("shutoff").out, "ok: [vm]"));
  auto gone = run("absent");
  EXPECT_TRUE(has(gone.out, "changed: [vm] undefined domain tcgvm")) << gone.out;
  EXPECT_TRUE(has(daemon->virsh("list --all --name"), "tcgvm") == false);
}

}  // namespace
}  // namespace gpt
