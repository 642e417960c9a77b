// restore_units: every systemd unit the agent enabled, disabled, started or stopped (the service
// module), put back as it was before the agent's first change of it (agent/preimage.hpp). What
// `gptagent revert` runs before it puts the files back: a unit file the agent wrote is still there
// to disable.
#include "agent/declare.hpp"
#include "agent/preimage.hpp"
#include "agent/text.hpp"
#include "modules/lib/handlers.hpp"

namespace gpt {
namespace {

struct Args {};

// The service task that puts `u` back: enabled as it was (where it was enabled or disabled; a
// static or indirect unit was not the agent's to enable), and running or not as it was (where
// that was known). Nothing to declare: nullopt.
std::optional<ServiceArgs> as_it_was(const UnitPreimage& u) {
  ServiceArgs a;
  a.name = u.unit;
  a.scope = u.scope;
  if (u.scope == "user") a.user = u.user;
  if (u.enabled == "enabled" || u.enabled == "enabled-runtime")
    a.enabled = true;
  else if (u.enabled == "disabled")
    a.enabled = false;
  if (u.active == "active" || u.active == "reloading" || u.active == "activating")
    a.state = "started";
  else if (u.active == "inactive" || u.active == "failed")
    a.state = "stopped";
  if (!a.enabled && !a.state) return std::nullopt;
  return a;
}

Expected<Result> converge(Context& ctx, const Args&, bool apply) {
  auto units = load_unit_preimages(ctx.root);
  if (!units) return Result::failed(units.error());
  const ModuleDef* service = Registry::instance().find("service");
  if (!service) return Result::failed("no service module");
  Result out = Result::ok();
  std::vector<std::string> done, notes;
  size_t as_wanted = 0;
  for (const auto& u : *units) {
    auto a = as_it_was(u);
    if (!a) continue;
    Result r = converge_module(*service, ctx, with_defaults(service->schema, service_args().dump(*a)), apply);
    out.commands.insert(out.commands.end(), r.commands.begin(), r.commands.end());
    if (r.status == Outcome::failed) return Result::failed("putting " + u.unit + " back: " + r.msg);
    if (r.status == Outcome::changed)
      done.push_back(r.msg);
    else if (r.status == Outcome::skipped)
      notes.push_back(r.msg);
    else
      ++as_wanted;
  }
  const std::string tail = notes.empty() ? "" : " (" + join(notes, "; ") + ")";
  if (done.empty()) {
    out.msg = std::to_string(as_wanted) + " unit" + (as_wanted == 1 ? "" : "s") + " the agent changed " +
              (as_wanted == 1 ? "is" : "are") + " as before" + tail;
    return out;
  }
  out.status = Outcome::changed;
  out.msg = "units as they were before the agent: " + join(done, "; ") + tail;
  return out;
}

// What `gptagent doc restore_units` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "Puts every systemd unit the service module enabled, disabled, started or stopped back as it was before "
          "the agent's first change of it (recorded then: what systemctl is-enabled and is-active said): enabled "
          "or disabled again (a static or indirect unit is left), started or stopped again (not under --root, where "
          "no manager runs: said as what would run). User units go through their user's manager, as the service "
          "module reaches it. What gptagent revert runs, before restore_files.",
      .examples = {"# Every unit the agent changed on this host back as it was (what gptagent revert runs)\n"
                   "- name: the units as they were before the agent\n"
                   "  restore_units: {}\n"},
  };
}

ModuleDef definition() {
  return declare_module(
      "restore_units",
      "put every systemd unit the agent enabled, disabled, started or stopped back as it was (what gptagent revert "
      "runs)",
      ArgsDecl<Args>(), converge);
}
const Registration registration{definition(), docs()};

}  // namespace
}  // namespace gpt
