// vfio_bind: binds the GPU's functions to vfio-pci now, without a reboot: driver_override, unbind
// from the current driver, drivers_probe — the kernel's own way to choose a driver for a device.
#include "agent/declare.hpp"
#include "agent/gpu.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

struct Step {
  std::string path, value;
};

struct Args {
  json gpus = "auto";
  bool force = false;
};

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  const bool force = args.force;
  auto gpus = select_gpus(ctx.facts, args.gpus, force);
  if (!gpus) return Result::failed(gpus.error());
  // Without IOMMU groups vfio-pci refuses the device: unbinding it first would leave it with no
  // driver at all.
  if (!ctx.facts.iommu.on()) {
    std::string why = ctx.facts.iommu_verdicts.empty() ? "" : ": " + ctx.facts.iommu_verdicts.front().reason;
    return Result::failed("vfio-pci can only take a device when the IOMMU is on, and it is off" + why);
  }

  std::vector<std::string> to_bind, done, forced;
  std::vector<Step> steps;
  for (const auto& g : *gpus) {
    // Unbinding a driver whose device is open waits for every user to let go (nvidia), or pulls
    // the display from under them (a desktop session, the remote-desktop server).
    const bool bound = std::all_of(g.functions.begin(), g.functions.end(), [&](const std::string& f) {
      return std::any_of(ctx.facts.pci.begin(), ctx.facts.pci.end(),
                         [&](const PciDevice& d) { return d.address == f && d.driver == "vfio-pci"; });
    });
    if (!g.in_use.empty() && !bound) {
      if (!force)
        return Result::failed("GPU " + g.address + " is in use by " + g.users() +
                              ": stop them before binding (nothing was unbound; force: true unbinds it anyway)");
      forced.push_back(g.users());
    }
    for (const auto& f : g.functions) {
      auto dev =
          std::find_if(ctx.facts.pci.begin(), ctx.facts.pci.end(), [&](const PciDevice& d) { return d.address == f; });
      const std::string driver = dev == ctx.facts.pci.end() ? "" : dev->driver;
      if (driver == "vfio-pci") {
        done.push_back(f);
        continue;
      }
      const std::string dir = "/sys/bus/pci/devices/" + f;
      to_bind.push_back(f + (driver.empty() ? "" : " (from " + driver + ")"));
      steps.push_back({dir + "/driver_override", "vfio-pci"});
      if (!driver.empty()) steps.push_back({dir + "/driver/unbind", f});
      steps.push_back({"/sys/bus/pci/drivers_probe", f});
    }
  }
  if (to_bind.empty()) return Result::ok(join(done, ", ") + " bound to vfio-pci");

  Result r = Result::changed("bind " + join(to_bind, ", ") + " to vfio-pci");
  for (const auto& s : steps) r.commands.push_back("echo " + s.value + " > " + s.path);
  if (!ctx.system_commands_allowed) {
    r.status = Outcome::skipped;
    r.msg = "not run under --root " + ctx.root.dir() + ": " + r.msg;
    return r;
  }
  if (!apply) {
    r.msg = "would " + r.msg;
    return r;
  }
  if (!ctx.facts.module_available("vfio_pci")) {
    Result load = ctx.run_system(Command{{"modprobe", "vfio-pci"}}, apply, "loaded vfio-pci");
    if (load.status == Outcome::failed) return load;
  }
  for (const auto& s : steps)
    if (auto st = ctx.write_sysfs(s.path, s.value); !st) return Result::failed(st.error());
  // The kernel chose a driver: say so only if it is vfio-pci.
  for (const auto& g : *gpus)
    for (const auto& f : g.functions) {
      auto link = read_link(ctx.root, "/sys/bus/pci/devices/" + f + "/driver");
      const std::string now = link ? link->substr(link->find_last_of('/') + 1) : "";
      if (now != "vfio-pci")
        return Result::failed(f + " is on " + (now.empty() ? std::string("no driver") : now) +
                              " after binding, not vfio-pci: see the kernel log (dmesg) for why");
    }
  r.msg = "bound " + join(to_bind, ", ") + " to vfio-pci" +
          (forced.empty() ? "" : " (forced: it was in use by " + join(forced, ", ") + ")");
  return r;
}

// What `gptagent doc vfio_bind` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Binds the GPU's functions to vfio-pci now, without a reboot: driver_override, unbind, drivers_probe, "
          "then checks that the kernel chose vfio-pci. Ok when already bound.\n\n"
          "Refuses, unbinding nothing, a GPU that processes hold (named with their pids) unless force: true; refuses "
          "with the IOMMU off (the device would be left with no driver); never writes under a sandbox root (it says "
          "what it would write).",
      .examples = {"# Hand the GPU to vfio-pci now, without a reboot\n"
                   "- name: the GPU on vfio-pci now\n"
                   "  vfio_bind:\n"
                   "    gpus: [\"0000:01:00.0\"]\n"},
  };
}

const Registration registration{
    declare_module("vfio_bind", "bind the GPU's functions to vfio-pci now (driver_override, unbind, drivers_probe)",
                   ArgsDecl<Args>()
                       .arg(gpus_arg("auto"), &Args::gpus)
                       .arg("force", &Args::force,
                            "unbind a GPU that is in use (a display, a process holding it), or one that cannot be "
                            "passed through, all the same"),
                   converge),
    docs()};

}  // namespace
}  // namespace gpt
