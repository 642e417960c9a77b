// Ctrl-C (SIGINT) or SIGTERM on a local apply: the command running gets the signal too, the agent
// waits for it and keeps the run lock until it has ended, what it was making is removed, the run
// says "interrupted" and exits 130; the next run makes the image whole (issue 20).
#include <gtest/gtest.h>

#include <boost/process.hpp>
#include <csignal>

#include "tests/chaos/chaos.hpp"

namespace gpt {
namespace {

using chaos::has;
namespace bp = boost::process;

// qemu-img as a stand-in: `create` writes the image slowly while STUBS/slow exists, recording the
// signal it gets and taking a second to end after it; `info` describes what create made.
std::string slow_qemu_img(const std::string& stubs) {
  return "#!/bin/sh\n"
         "rec=" +
         stubs +
         "/record\n"
         "for a; do case \"$a\" in /*) image=$a;; esac; done\n"
         "case \"$1\" in\n"
         "  info) [ -f \"$image\" ] || { echo \"qemu-img: Could not open '$image'\" >&2; exit 1; }\n"
         "        echo '{\"format\": \"raw\", \"virtual-size\": 1048576}'; exit 0;;\n"
         "  create)\n"
         "    if [ ! -e " +
         stubs +
         "/slow ]; then head -c 1048576 /dev/zero > \"$image\"; exit 0; fi\n"
         "    ended() { echo \"signal $1\" >> $rec; sleep 1; echo ended >> $rec; exit 130; }\n"
         "    trap 'ended INT' INT; trap 'ended TERM' TERM\n"
         "    echo \"writing $image\" >> $rec\n"
         "    while :; do head -c 4096 /dev/zero >> \"$image\"; sleep 0.05; done;;\n"
         "esac\n"
         "exit 0\n";
}

// Item 7: SIGINT mid-way through a qemu-img create with full preallocation.
TEST(LocalInterrupt, CtrlCStopsTheRunningCommandWaitsForItWithTheLockAndLeavesNoPartialImage) {
  chaos::Stubs stubs;
  stubs.add("qemu-img", slow_qemu_img(stubs.dir.path()));
  test::write(stubs.dir / "slow", "");
  test::TempDir root, plays;
  ::mkdir((root / "images").c_str(), 0755);
  test::write(plays / "vm.yaml",
              "tasks:\n  - name: the VM's disk\n"
              "    qemu_img: {path: /images/vm.raw, format: raw, size: 1M, preallocation: full}\n");
  const std::string record = stubs.dir / "record";

  bp::environment env = boost::this_process::environment();
  env["PATH"] = stubs.path_env().substr(5);
  const std::string out = plays / "out", err = plays / "err";
  bp::child agent(GPTAGENT_BIN, bp::args({"apply", plays / "vm.yaml", "--root", root.path(), "--color", "never"}), env,
                  bp::std_in.close(), bp::std_out > boost::filesystem::path(out),
                  bp::std_err > boost::filesystem::path(err));
  ASSERT_TRUE(test::wait_until([&] { return test::exists(record); }, std::chrono::seconds(30)));
  // While it writes, the image's own name does not exist: a run killed now leaves no image to take.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(test::exists(root / "images/vm.raw"));
  ASSERT_EQ(::kill(agent.id(), SIGINT), 0);

  ASSERT_TRUE(test::wait_until([&] { return has(test::slurp(record), "signal INT"); }, std::chrono::seconds(10)))
      << "qemu-img never got the SIGINT: " << test::slurp(record);
  // qemu-img takes a second to end: the run holds its lock until then.
  const bool held_while_running = !has(test::slurp(record), "ended") && chaos::lock_held(root.path());
  EXPECT_TRUE(held_while_running) << "the lock was let go while qemu-img still ran";
  if (!test::wait_until([&] { return !agent.running(); }, std::chrono::seconds(60))) {
    agent.terminate();
    FAIL() << "the agent did not end";
  }
  EXPECT_TRUE(has(test::slurp(record), "ended")) << "the agent ended before its command";
  EXPECT_EQ(agent.exit_code(), 130) << test::slurp(out) << test::slurp(err);
  EXPECT_TRUE(has(test::slurp(err), "interrupted")) << test::slurp(err);
  EXPECT_TRUE(has(test::slurp(out), "failed: [the VM's disk]")) << test::slurp(out);
  EXPECT_EQ(chaos::without_lock(chaos::snapshot(root.path())),
            (std::map<std::string, std::string>{{"images/", "493 "}}))
      << "a partial image was left";

  // The rerun makes it.
  ::unlink((stubs.dir / "slow").c_str());
  auto rerun =
      chaos::agent({"apply", plays / "vm.yaml", "--root", root.path(), "--color", "never"}, {stubs.path_env()});
  EXPECT_EQ(rerun.exit_code, 0) << rerun.all();
  EXPECT_TRUE(has(rerun.out, "changed: [the VM's disk] created /images/vm.raw")) << rerun.out;
  EXPECT_EQ(test::slurp(root / "images/vm.raw").size(), 1048576u);
}

}  // namespace
}  // namespace gpt
