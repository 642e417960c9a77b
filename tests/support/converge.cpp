#include "tests/support/converge.hpp"

#include <filesystem>
#include <fstream>

#include "agent/facts.hpp"
#include "agent/playbook.hpp"

namespace gpt::test {

std::vector<std::string> Converged::changes() const {
  std::vector<std::string> out;
  for (const auto& t : tasks)
    if (t.result.status == Outcome::changed) out.push_back(t.name + "\n" + t.result.diff);
  return out;
}

ExecResult SimulatedKernelExec::run(const Command& cmd) {
  commands.push_back(cmd.display());
  if (cmd.argv.size() > 2 && cmd.argv[0] == "modprobe" && cmd.argv[1] == "-a") {
    std::string modules = exists(root_ + "/proc/modules") ? slurp(root_ + "/proc/modules") : "";
    for (size_t i = 2; i < cmd.argv.size(); ++i) modules += cmd.argv[i] + " 16384 0 - Live 0x0000000000000000\n";
    write(root_ + "/proc/modules", modules);
  }
  if (PackageManagers::handles(cmd)) return packages_.run(cmd);
  if (cmd.argv.size() > 1 && cmd.argv[0] == "systemctl" && cmd.argv[1] == "--root=" + Root(root_).dir())
    return real_.run(cmd);
  return {0, false, "", ""};
}

Status SimulatedSysfs::write(const Root& root, const std::string& path, const std::string& value) {
  namespace fs = std::filesystem;
  writes.push_back(path + "=" + value);
  auto real = root.resolve(path);
  if (!real || !exists(*real)) return Error{"cannot write " + path + ": No such file or directory"};
  const std::string dev_dir = root.dir() + "/sys/bus/pci/devices/" + value;
  std::error_code ec;
  if (path.size() > 14 && path.substr(path.size() - 14) == "/driver/unbind") {
    // The driver goes, and the DRM nodes it made with it.
    fs::remove(fs::path(*root.resolve("/sys/bus/pci/devices/" + value)) / "driver", ec);
    fs::remove_all(fs::path(*root.resolve("/sys/bus/pci/devices/" + value)) / "drm", ec);
  } else if (path == "/sys/bus/pci/drivers_probe") {
    std::string override_drv = slurp(*root.resolve("/sys/bus/pci/devices/" + value + "/driver_override"));
    while (!override_drv.empty() && override_drv.back() == '\n') override_drv.pop_back();
    fs::path dev = *root.resolve("/sys/bus/pci/devices/" + value);
    fs::path drivers = root.dir() + "/sys/bus/pci/drivers/" + override_drv;
    fs::create_directories(drivers, ec);
    fs::remove(dev / "driver", ec);
    fs::create_symlink(fs::relative(drivers, dev), dev / "driver", ec);
  } else {
    std::ofstream(*real, std::ios::trunc) << value;
  }
  return {};
}

namespace {

Converged run_on_root(Exec& exec, SimulatedSysfs* sysfs, const std::string& root_dir, const std::string& yaml,
                      bool check, bool allow_system, const nlohmann::json& extra_vars) {
  Converged c;
  Root root(root_dir);
  Facts facts = gather_facts(root);
  LoadOptions opts;
  opts.facts = facts.to_json();
  opts.extra_vars = extra_vars;
  auto loaded = load_playbook_text(yaml, "test.yaml", opts);
  if (!loaded.ok()) {
    c.load_errors = loaded.errors;
    c.exit_code = 1;
    return c;
  }
  Context ctx{root, exec, facts, allow_system, sysfs};
  Collect rep(c.tasks);
  RunOptions ro;
  ro.check = check;
  c.stats = run_playbook(loaded.playbook, ctx, ro, rep);
  c.exit_code = exit_code_for(c.stats, check);
  return c;
}

}  // namespace

Converged converge_root(const std::string& root_dir, const std::string& yaml, bool check, bool allow_system,
                        const nlohmann::json& extra_vars) {
  SimulatedKernelExec exec(root_dir);
  SimulatedSysfs sysfs;
  Converged c = run_on_root(exec, &sysfs, root_dir, yaml, check, allow_system, extra_vars);
  c.commands = exec.commands;
  c.sysfs_writes = sysfs.writes;
  return c;
}

Converged converge_root_with(Exec& exec, const std::string& root_dir, const std::string& yaml, bool check,
                             bool allow_system) {
  return run_on_root(exec, nullptr, root_dir, yaml, check, allow_system, nlohmann::json::object());
}

}  // namespace gpt::test
