// What the libFuzzer targets (tests/fuzz/) found, each fed through the API the target uses and
// answered with a clean result or error, not a crash. The inputs are kept in
// tests/fuzz/regressions/TARGET/ too, and bench/fuzz replays them before it fuzzes.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/facts.hpp"
#include "agent/host.hpp"
#include "agent/inventory.hpp"
#include "agent/module.hpp"
#include "agent/pci.hpp"
#include "agent/report.hpp"
#include "tests/support/sandbox.hpp"

namespace gpt {
namespace {

using json = nlohmann::json;
using test::TempDir;

std::string regression(const std::string& target, const std::string& name) {
  return test::slurp(test::source_path("tests/fuzz/regressions/" + target + "/" + name));
}

// fuzz_proc_text, fuzz_facts_tree: a pci.ids line shorter than a vendor id ("20G") threw
// std::out_of_range out of name_pci_devices, and `gptagent facts` aborted.
TEST(FuzzRegressions, ShortPciIdsLineNamesNothing) {
  std::vector<PciDevice> devs(1);
  devs[0].address = "0000:01:00.0";
  devs[0].vendor = "10de";
  devs[0].device = "1b80";
  EXPECT_NO_THROW(name_pci_devices(devs, regression("fuzz_proc_text", "pci-ids-short-line")));
  EXPECT_NO_THROW(name_pci_devices(devs, "ab\n10de  NVIDIA Corporation\n\t1b80  GP104 [GeForce GTX 1080]\n"));
  EXPECT_EQ(devs[0].name, "NVIDIA Corporation GP104 [GeForce GTX 1080]");
}

// fuzz_root_resolve: a path with a NUL byte resolved to "ROOT/..\0x", which every system call
// reads as ROOT/.., the root's parent.
TEST(FuzzRegressions, RootRefusesPathsWithNul) {
  TempDir d;
  Root root(d.path());
  auto r = root.resolve(std::string("/..\0/x", 6));
  ASSERT_FALSE(r.ok()) << *r;
  EXPECT_NE(r.error().find("NUL"), std::string::npos) << r.error();
  EXPECT_FALSE(read_file(root, std::string("/..\0", 4)).ok());
}

// fuzz_root_resolve: once a component was missing, later ones were never checked for links, even
// after ".." climbed back above the missing one: "/x/../up/secret" with up -> ../outside was
// handed to the kernel as ROOT/up/secret, which it follows out of the root.
TEST(FuzzRegressions, RootFollowsLinksAfterDotDotOverAMissingComponent) {
  TempDir d;
  ::mkdir((d / "root").c_str(), 0755);
  test::write(d / "outside/secret", "outside the root\n");
  ASSERT_EQ(::symlink("../outside", (d / "root/up").c_str()), 0);
  Root root(d / "root");
  auto r = root.resolve("/x/../up/secret");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(*r, root.dir() + "/outside/secret");  // the link's target, taken inside the root
  EXPECT_FALSE(read_file(root, "/x/../up/secret").ok());
  EXPECT_FALSE(read_file(root, "/x/y/../../up/secret").ok());
  // Still resolved as before: a missing component with more missing ones after it.
  EXPECT_EQ(*root.resolve("/x/y/../z"), root.dir() + "/x/z");
}

// fuzz_qemu_img_info: qemu-img output that is not JSON (nor UTF-8) makes a failed task whose
// message quotes it; the JSON report threw nlohmann's type_error 316 on it and the agent aborted.
// The same held for facts, playbook errors and inventory variables (see the CLI tests below).
TEST(FuzzRegressions, JsonReportOfInvalidUtf8QemuImgOutput) {
  TempDir d;
  test::write(d / "var/lib/libvirt/images/vm.qcow2", "QFI\xfb");
  test::RecordingExec exec;
  exec.next = {0, false, regression("fuzz_qemu_img_info", "not-json-not-utf8").substr(1), ""};
  Root root(d.path());
  Facts facts;
  Context ctx{root, exec, facts, false};
  const ModuleDef* def = Registry::instance().find("qemu_img");
  ASSERT_NE(def, nullptr);
  const json args = with_defaults(def->schema, {{"path", "/var/lib/libvirt/images/vm.qcow2"}, {"size", "20G"}});
  Result r = def->converge(ctx, args, false);
  ASSERT_EQ(r.status, Outcome::failed) << r.msg;
  EXPECT_NE(r.msg.find("cannot read the output of qemu-img info"), std::string::npos) << r.msg;

  std::ostringstream out;
  ReportOptions ro;
  ro.check = true;
  auto rep = make_json_reporter(out, ro);
  Stage stage;
  stage.name = "main";
  rep->stage(stage);
  TaskReport t;
  t.stage = "main";
  t.name = "image";
  t.module = "qemu_img";
  t.result = r;
  rep->task(t);
  RunStats stats;
  stats.failed = 1;
  EXPECT_NO_THROW(rep->done(stats, 1));
  json doc = json::parse(out.str(), nullptr, false);
  EXPECT_FALSE(doc.is_discarded()) << out.str();
}

// fuzz_qemu_img_info: a virtual-size that is no byte count (1e115, -1, 1.5) was converted with
// get<uint64_t>: undefined for a float past 2^64 (UBSan), a wrapped size for a negative one.
TEST(FuzzRegressions, QemuImgVirtualSizeThatIsNoByteCount) {
  TempDir d;
  test::write(d / "var/lib/libvirt/images/vm.qcow2", "QFI\xfb");
  Root root(d.path());
  Facts facts;
  const ModuleDef* def = Registry::instance().find("qemu_img");
  ASSERT_NE(def, nullptr);
  const json args = with_defaults(def->schema, {{"path", "/var/lib/libvirt/images/vm.qcow2"}, {"size", "20G"}});
  for (const std::string& out : {regression("fuzz_qemu_img_info", "virtual-size-float").substr(1),
                                 std::string(R"({"format": "qcow2", "virtual-size": -1})"),
                                 std::string(R"({"format": "qcow2", "virtual-size": 1.5})")}) {
    test::RecordingExec exec;
    exec.next = {0, false, out, ""};
    Context ctx{root, exec, facts, false};
    Result r = def->converge(ctx, args, false);
    EXPECT_EQ(r.status, Outcome::failed) << out << ": " << r.msg;
    EXPECT_NE(r.msg.find("virtual-size is not a number of bytes"), std::string::npos) << r.msg;
  }
}

// fuzz_proc_text, fuzz_facts_tree: facts read from a host whose files are not UTF-8 (here a
// Latin-1 os-release) made `gptagent facts --json` abort; the bytes are now replaced.
TEST(FuzzRegressions, FactsJsonOfALatin1Host) {
  test::SampleHost host;
  test::write(host.file("/etc/os-release"), regression("fuzz_proc_text", "os-release-latin1"));
  auto r = test::run_agent({"facts", "--json", "--root", host.root()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json doc = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_EQ(doc["distro_name"],
            "Debian GNU/Linux 12 (bookworm) \xef\xbf\xbd"
            "dition fran\xef\xbf\xbd"
            "aise");
}

// fuzz_playbook: an error quoting a byte that is not UTF-8 made `gptagent apply --json` abort.
TEST(FuzzRegressions, ApplyJsonOfAPlaybookThatIsNotUtf8) {
  test::SampleHost host;
  TempDir d;
  test::write(d / "play.yaml", regression("fuzz_playbook", "latin1-module-name"));
  auto r = test::run_agent({"apply", d / "play.yaml", "--root", host.root(), "--check", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  json doc = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  ASSERT_EQ(doc["errors"].size(), 1u) << r.out;
  // The error at the byte (refused as not UTF-8, or quoted as an unknown module): line 2.
  EXPECT_EQ(doc["errors"][0].get<std::string>().rfind(d / "play.yaml:2:", 0), 0u) << r.out;
}

// fuzz_inventory_ini, fuzz_inventory_yaml: the error for a port or a group priority that is not
// one quoted the value with json::dump, which threw on bytes that are not UTF-8: the exception
// left parse_inventory_* and `gptagent apply -i` aborted.
TEST(FuzzRegressions, InventoryErrorsQuoteValuesThatAreNotUtf8) {
  // The port is checked for the hosts a run reaches (connection_error), the quoting the same.
  auto ini = parse_inventory_ini(regression("fuzz_inventory_ini", "port-not-utf8"), "fuzz.ini");
  ASSERT_TRUE(ini.ok()) << ini.error();
  ASSERT_FALSE(ini->hosts.empty());
  EXPECT_EQ(ini->hosts.front().connection_error().value_or(""),
            "host 'h': ansible_port must be a port number (1-65535), not \"22\xef\xbf\xbd\"");
  auto prio = parse_inventory_ini(regression("fuzz_inventory_ini", "group-priority-not-utf8"), "fuzz.ini");
  ASSERT_FALSE(prio.ok());
  EXPECT_NE(prio.error().find("ansible_group_priority must be an integer"), std::string::npos) << prio.error();
  auto yaml = parse_inventory_yaml(regression("fuzz_inventory_yaml", "port-not-utf8"), "fuzz.yaml");
  ASSERT_TRUE(yaml.ok()) << yaml.error();
  ASSERT_FALSE(yaml->hosts.empty());
  EXPECT_NE(yaml->hosts.front().connection_error().value_or("").find("ansible_port must be a port number"),
            std::string::npos);
}

// fuzz_host_pattern: a --limit subscript with more digits than a long long holds threw
// std::out_of_range (std::stoll) out of select_hosts, and `gptagent apply -i ... --limit` aborted.
TEST(FuzzRegressions, LimitSubscriptTooLargeForALongLong) {
  auto inv = parse_inventory_ini("[gpus]\ngpu[01:03]\n", "fuzz.ini");
  ASSERT_TRUE(inv.ok()) << inv.error();
  EXPECT_FALSE(select_hosts(*inv, regression("fuzz_host_pattern", "subscript-too-large")).ok());
  auto one = select_hosts(*inv, "gpus[99999999999999999999]");
  ASSERT_FALSE(one.ok());
  EXPECT_NE(one.error().find("matches no host"), std::string::npos) << one.error();
  EXPECT_FALSE(select_hosts(*inv, "gpus[-99999999999999999999]").ok());
  auto slice = select_hosts(*inv, "gpus[1:99999999999999999999]");
  ASSERT_TRUE(slice.ok()) << slice.error();
  ASSERT_EQ(slice->size(), 2u);
  EXPECT_EQ((*slice)[0]->name, "gpu02");
}

}  // namespace
}  // namespace gpt
