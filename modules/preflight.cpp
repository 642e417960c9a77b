// preflight: looks at the host the way an expert does before touching it, and fails early on what
// makes passthrough impossible instead of half-configuring a host that cannot work.
#include "agent/declare.hpp"
#include "agent/gpu.hpp"
#include "agent/text.hpp"

namespace gpt {
namespace {

struct Args {
  json gpus = "auto";
  bool force = false;
};

Expected<Result> converge(Context& ctx, const Args& args, bool) {
  std::vector<std::string> warnings;
  for (const auto* host : {&ctx.facts.iommu_verdicts, &ctx.facts.host_verdicts})
    for (const auto& v : *host) {
      if (v.level == Verdict::Level::blocker) return Result::failed(v.reason);
      if (v.level == Verdict::Level::warning) warnings.push_back(v.reason);
    }
  auto gpus = select_gpus(ctx.facts, args.gpus, args.force);
  if (!gpus) return Result::failed(gpus.error());
  std::vector<std::string> chosen;
  json data = json::array();
  for (const auto& g : *gpus) {
    chosen.push_back(g.address + " (" + g.id +
                     (g.functions.size() > 1 ? ", " + std::to_string(g.functions.size()) + " functions" : "") + ")");
    data.push_back(to_json(g));
    for (const auto& v : g.verdicts)
      if (v.level == Verdict::Level::warning && std::find(warnings.begin(), warnings.end(), v.reason) == warnings.end())
        warnings.push_back(v.reason);
  }
  Result r = Result::ok("passthrough possible for " + join(chosen, ", ") +
                        (warnings.empty() ? "" : "; " + join(warnings, "; ")));
  r.data["gpus"] = data;
  return r;
}

// What `gptagent doc preflight` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Fails early, with the reason, on what makes passthrough impossible: the IOMMU off in the firmware, a GPU "
          "that is the boot VGA device, a GPU whose IOMMU group holds other devices (bridges excepted). Warns on "
          "what the playbook can fix (the IOMMU off in the kernel: add intel_iommu=on) and on what an expert checks "
          "before binding: processes holding the GPU, a boot framebuffer in its memory, no reset method or an AMD "
          "family with the reset bug (install vendor-reset), Secure Boot on (out-of-tree modules must be "
          "signed).\n\n"
          "Runs automatically first in any playbook whose tasks take gpus.",
      .examples = {"# Stop the run before anything changes if the GPU cannot be passed through\n"
                   "- name: the GPU can be passed through\n"
                   "  preflight:\n"
                   "    gpus: [\"0000:01:00.0\"]\n"},
  };
}

const Registration registration{
    declare_module("preflight", "check that the host can pass the GPUs through before anything changes",
                   ArgsDecl<Args>()
                       .arg(gpus_arg("auto"), &Args::gpus)
                       .arg("force", &Args::force,
                            "go on with a GPU that cannot be passed through (what blocks it is reported all the same)"),
                   converge),
    docs()};

}  // namespace
}  // namespace gpt
