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
    chosen.push_back(g.address + " (" + g.id + (g.functions.size() > 1 ? ", " + std::to_string(g.functions.size()) + " functions" : "") + ")");
    data.push_back(to_json(g));
    for (const auto& v : g.verdicts)
      if (v.level == Verdict::Level::warning &&
          std::find(warnings.begin(), warnings.end(), v.reason) == warnings.end())
        warnings.push_back(v.reason);
  }
  Result r = Result::ok("passthrough possible for " + join(chosen, ", ") +
                        (warnings.empty() ? "" : "; " + join(warnings, "; ")));
  r.data["gpus"] = data;
  return r;
}

const Registration registration{
    declare_module("preflight", "check that the host can pass the GPUs through before anything changes",
                   ArgsDecl<Args>()
                       .arg(gpus_arg("auto"), &Args::gpus)
                       .arg("force", &Args::force,
                            "go on with a GPU that cannot be passed through (what blocks it is reported all the same)"),
                   converge)};

}  // namespace
}  // namespace gpt
