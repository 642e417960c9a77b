#include <gtest/gtest.h>

#include "tests/support/converge.hpp"

namespace gpt {
namespace {

using test::TempDir;

const std::string kNvidiaOutputClass =
    "Section \"OutputClass\"\n    Identifier \"nvidia\"\n    MatchDriver \"nvidia-drm\"\n    Driver \"nvidia\"\n"
    "    Option \"AllowEmptyInitialConfiguration\"\n    ModulePath "
    "\"/usr/lib/x86_64-linux-gnu/nvidia/xorg\"\nEndSection\n";
const std::string kLibinput =
    "Section \"InputClass\"\n        Identifier \"libinput pointer catchall\"\n        Driver "
    "\"libinput\"\nEndSection\n";

struct Host {
  TempDir d;
  Host() {
    test::write(d / "usr/share/X11/xorg.conf.d/10-nvidia.conf", kNvidiaOutputClass);
    test::write(d / "usr/share/X11/xorg.conf.d/40-libinput.conf", kLibinput);
    test::write(d / "etc/X11/xorg.conf.d/20-gpu.conf",
                "Section \"Device\"\n  Identifier \"card\"\n  DRIVER \"Nouveau\"\nEndSection\n");
    test::write(d / "etc/X11/xorg.conf.d/30-commented.conf",
                "Section \"Device\"\n#  Driver \"nvidia\"\n  Driver \"modesetting\"\nEndSection\n");
    test::write(d / "etc/X11/xorg.conf.d/nvidia.conf.dpkg-old", kNvidiaOutputClass);  // not read by X
    test::write(d / "etc/X11/xorg.conf",
                "Section \"OutputClass\"\n  Identifier \"x\"\n  Match_Driver \"nvidia-drm\"\nEndSection\n");
  }
};

test::Converged twice(const std::string& root, const std::string& pb) {
  auto before = test::snapshot(root);
  auto check = test::converge_root(root, pb, true);
  EXPECT_EQ(test::snapshot(root), before);
  auto first = test::converge_root(root, pb, false);
  EXPECT_EQ(first.stats.changed, 1);
  EXPECT_EQ(first.changes(), check.changes());
  auto second = test::converge_root(root, pb, false);
  EXPECT_EQ(second.stats.changed, 0) << second.tasks[0].result.msg;
  EXPECT_EQ(second.tasks[0].result.msg, "no X11 config takes an NVIDIA GPU");
  return first;
}

TEST(XorgCleanup, EmptiesEveryConfigThatTakesTheGpuAndOnlyThose) {
  Host h;
  auto r = twice(h.d.path(), "tasks:\n  - xorg_cleanup: {}\n");
  const auto& files = r.tasks[0].result.data["files"];
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0]["path"], "/usr/share/X11/xorg.conf.d/10-nvidia.conf");
  EXPECT_EQ(files[0]["reason"], "an nvidia-drm OutputClass");
  EXPECT_EQ(files[1]["path"], "/etc/X11/xorg.conf.d/20-gpu.conf");
  EXPECT_EQ(files[1]["reason"], "Driver \"nouveau\"");
  EXPECT_EQ(files[2]["path"], "/etc/X11/xorg.conf");
  EXPECT_EQ(files[2]["reason"], "an nvidia-drm OutputClass");
  const std::string emptied = test::slurp(h.d / "usr/share/X11/xorg.conf.d/10-nvidia.conf");
  EXPECT_EQ(emptied.rfind("# Emptied by gptagent", 0), 0u);
  EXPECT_EQ(test::slurp(h.d / "usr/share/X11/xorg.conf.d/40-libinput.conf"), kLibinput);
  EXPECT_EQ(test::slurp(h.d / "etc/X11/xorg.conf.d/30-commented.conf").find("modesetting") != std::string::npos, true);
  const auto& backups = r.tasks[0].result.data["backups"];
  EXPECT_EQ(test::slurp(h.d.path() + backups["/usr/share/X11/xorg.conf.d/10-nvidia.conf"].get<std::string>()),
            kNvidiaOutputClass);
  EXPECT_NE(r.tasks[0].result.diff.find("-    Driver \"nvidia\""), std::string::npos);
  EXPECT_FALSE(r.stats.reboot_required);
}

TEST(XorgCleanup, DisableRenamesAndKeepsTheContent) {
  Host h;
  twice(h.d.path(), "tasks:\n  - xorg_cleanup: {mode: disable}\n");
  EXPECT_FALSE(test::exists(h.d / "usr/share/X11/xorg.conf.d/10-nvidia.conf"));
  EXPECT_EQ(test::slurp(h.d / "usr/share/X11/xorg.conf.d/10-nvidia.conf.disabled"), kNvidiaOutputClass);
  EXPECT_TRUE(test::exists(h.d / "etc/X11/xorg.conf.disabled"));
}

TEST(XorgCleanup, RemoveKeepsABackup) {
  Host h;
  auto r = twice(h.d.path(), "tasks:\n  - xorg_cleanup: {mode: remove}\n");
  EXPECT_FALSE(test::exists(h.d / "usr/share/X11/xorg.conf.d/10-nvidia.conf"));
  const std::string backup = r.tasks[0].result.data["backups"]["/usr/share/X11/xorg.conf.d/10-nvidia.conf"];
  EXPECT_EQ(test::slurp(h.d.path() + backup), kNvidiaOutputClass);
}

TEST(XorgCleanup, ExplicitPathsAreNeutralisedToo) {
  Host h;
  test::write(h.d / "etc/X11/mine.conf", "Section \"ServerFlags\"\n  Option \"AutoAddGPU\" \"true\"\nEndSection\n");
  auto r = twice(h.d.path(), "tasks:\n  - xorg_cleanup: {paths: [/etc/X11/mine.conf, /etc/X11/absent.conf]}\n");
  EXPECT_EQ(r.tasks[0].result.data["files"].back()["reason"], "listed in paths");
}

TEST(XorgCleanup, NothingToDoIsOk) {
  TempDir d;
  test::write(d / "usr/share/X11/xorg.conf.d/40-libinput.conf", kLibinput);
  auto r = test::converge_root(d.path(), "tasks:\n  - xorg_cleanup: {}\n", false);
  EXPECT_EQ(r.stats.changed, 0);
  EXPECT_EQ(r.exit_code, 0);
}

TEST(XorgCleanup, BadModeIsALoadError) {
  TempDir d;
  auto r = test::converge_root(d.path(), "tasks:\n  - xorg_cleanup: {mode: shred}\n", false);
  ASSERT_EQ(r.load_errors.size(), 1u);
  EXPECT_EQ(r.load_errors[0],
            "test.yaml:2:26: xorg_cleanup argument 'mode' must be one of empty, disable, remove, not 'shred'");
}

}  // namespace
}  // namespace gpt
