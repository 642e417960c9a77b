// A raw disk's bytes are its guest's: a qcow2 header the guest wrote at its start (naming a backing
// file on the host) must not turn it into a qcow2 image for the agent. qemu-img info is asked with
// -f and the format the playbook declares (issue 20, nits).
#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/chaos/chaos.hpp"

namespace gpt {
namespace {

using chaos::has;

TEST(QemuImgFormat, AQcow2HeaderAGuestWroteInARawDiskLeavesItARawDisk) {
  if (!test::exists("/usr/bin/qemu-img")) GTEST_SKIP() << "no qemu-img";
  test::TempDir root, plays;
  ::mkdir((root / "images").c_str(), 0755);
  const std::string disk = root / "images/disk.raw";
  // What the guest wrote: a qcow2 header, backed by a file of the host's; the disk is 1 MiB.
  auto made = test::run_program("/usr/bin/qemu-img",
                                {"create", "-q", "-u", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", disk, "1M"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  ASSERT_EQ(::truncate(disk.c_str(), 1 << 20), 0);
  const auto before = chaos::snapshot(root.path());
  test::write(plays / "vm.yaml",
              "tasks:\n  - name: the guest's disk\n    qemu_img: {path: /images/disk.raw, format: raw, size: 1M}\n");

  auto r = chaos::agent({"apply", plays / "vm.yaml", "--root", root.path(), "--color", "never"});
  EXPECT_EQ(r.exit_code, 0) << r.all();
  EXPECT_TRUE(has(r.out, "ok: [the guest's disk] /images/disk.raw: raw, 1 MiB")) << r.out;
  EXPECT_FALSE(has(r.out, "qcow2")) << r.out;
  EXPECT_EQ(chaos::without_lock(chaos::snapshot(root.path())), before);
}

}  // namespace
}  // namespace gpt
