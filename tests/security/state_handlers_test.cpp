// The state file records what an interrupted run left to do; it is no configuration. A pending
// handler read back from it names only a module that modules request as a handler, with only the
// arguments they pass; a user's handler is a name run as this run's playbook defines it. A forged
// one is dropped with a warning and nothing of it runs (issue 20).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "agent/state.hpp"
#include "tests/chaos/chaos.hpp"

namespace gpt {
namespace {

using chaos::has;
using json = nlohmann::json;
namespace fs = std::filesystem;

const char* kPlaybook = R"(stages:
  - name: host
    tasks:
      - name: No X11 config may take the GPU
        xorg_cleanup: {}
    handlers:
      - name: write the vfio config
        vfio:
          devices: ["0000:01:00.0"]
)";

// A state file as an interrupted run of `playbook` leaves it in stage host, pending these.
void write_state(const chaos::Host& host, const std::string& playbook, const json& handlers, const json& notified) {
  const json state = {{"version", 1},
                      {"phase", "running"},
                      {"playbook", playbook},
                      {"playbook_sha256", std::string(64, '0')},
                      {"stage", "host"},
                      {"boot_id", "00000000-0000-0000-0000-000000000000"},
                      {"recorded_at", "2026-01-01 00:00:00"},
                      {"pending", {{"handlers", handlers}, {"notified", notified}, {"reboot", false}}}};
  fs::create_directories(host.file("/var/lib/gptagent"));
  test::write(host.file(kStatePath), state.dump(2) + "\n");
}

std::map<std::string, std::string> tree(const chaos::Host& host) {
  return chaos::without_lock(chaos::normalised(host.root()));
}

// Item 10: handlers forged in the state file run nothing.
TEST(StateHandlers, ForgedPendingHandlersInTheStateFileRunNothing) {
  test::TempDir plays;
  const std::string playbook = plays / "play.yaml";
  test::write(playbook, kPlaybook);
  chaos::Host reference;
  fs::create_directories(reference.file("/var/lib/gptagent"));  // where the other host's state is
  auto clean = chaos::agent({"apply", playbook, "--root", reference.root(), "--color", "never"});
  ASSERT_EQ(clean.exit_code, 0) << clean.all();

  chaos::Host host;
  const std::string pwned = host.file("/pwned");
  write_state(host, playbook,
              json::array({
                  // A module no module requests as a handler: it would write /etc/modprobe.d.
                  {{"name", "write modprobe"}, {"module", "vfio"}, {"args", {{"devices", {"0000:01:00.0"}}}}},
                  // A handler module with a command only a playbook's author may give.
                  {{"name", "regenerate"},
                   {"module", "grub_config"},
                   {"args", {{"command", {"/bin/sh", "-c", "echo pwned > " + pwned}}}}},
                  // Arguments that are no kernel parameters.
                  {{"name", "boot entries"}, {"module", "grubby"}, {"args", {{"add", {"$(reboot)"}}}}},
                  {{"name", "no such module"}, {"module", "shell"}, {"args", {{"cmd", "id"}}}},
              }),
              json::array({"a handler the playbook never had"}));
  auto r = chaos::agent({"apply", playbook, "--root", host.root(), "--color", "never"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  for (const char* name :
       {"write modprobe", "regenerate", "boot entries", "no such module", "a handler the playbook never had"}) {
    EXPECT_TRUE(has(r.err, std::string("pending handler '") + name + "'")) << name << "\n" << r.err;
    EXPECT_FALSE(has(r.out, std::string("[") + name + "]")) << name << " ran:\n" << r.out;
  }
  EXPECT_FALSE(has(r.out, "/bin/sh")) << r.out;
  EXPECT_FALSE(test::exists(pwned));
  EXPECT_FALSE(test::exists(host.file(kStatePath))) << "the finished stage's intent stays";
  EXPECT_EQ(test::differences(tree(host), tree(reference)), "") << "a forged handler changed the tree";
}

// Item 10: what a genuine interrupted run left still runs: its module handler and the user's
// handler it notified, as this playbook defines it.
TEST(StateHandlers, AGenuinePendingHandlerStillRunsOnTheNextRun) {
  test::TempDir plays;
  const std::string playbook = plays / "play.yaml";
  test::write(playbook, kPlaybook);
  chaos::Host host;
  write_state(
      host, playbook,
      json::array({{{"name", "regenerate the grub config"}, {"module", "grub_config"}, {"args", json::object()}}}),
      json::array({"write the vfio config"}));
  auto r = chaos::agent({"apply", playbook, "--root", host.root(), "--color", "never"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_FALSE(has(r.err, "warning")) << r.err;
  EXPECT_TRUE(has(r.out, "an interrupted run (2026-01-01 00:00:00) left work for stage host")) << r.out;
  // Under --root the grub config is not regenerated, only said to be: the handler ran.
  EXPECT_TRUE(has(r.out, "skipping: [regenerate the grub config] not run under --root")) << r.out;
  EXPECT_TRUE(has(r.out, "changed: [write the vfio config]")) << r.out;
  EXPECT_FALSE(test::exists(host.file(kStatePath)));
}

}  // namespace
}  // namespace gpt
