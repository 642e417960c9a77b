// Modules that exist only in the test binary: they record what the runner asks of them, so the
// engine's behaviour (handlers, failures, check mode, schemas) is tested without touching a host.
#include "tests/support/probe_modules.hpp"

#include "agent/module.hpp"

namespace gpt::test {

std::vector<ProbeCall>& probe_calls() {
  static std::vector<ProbeCall> calls;
  return calls;
}

namespace {

Result probe(Context&, const json& args, bool apply) {
  probe_calls().push_back({args.value("id", std::string()), apply});
  const std::string outcome = args["outcome"].get<std::string>();
  Result r = outcome == "changed"   ? Result::changed("probe changed")
             : outcome == "failed"  ? Result::failed("probe failed")
             : outcome == "skipped" ? Result::skipped("probe skipped")
                                    : Result::ok("probe ok");
  if (args.contains("handler"))
    r.handlers.push_back({args["handler"].get<std::string>(),
                          "probe",
                          {{"id", args["handler"]}, {"outcome", args.value("handler_outcome", "changed")}}});
  r.reboot_required = args["reboot"].get<bool>();
  return r;
}

const Registration probe_registration{ModuleDef{
    .name = "probe",
    .summary = "test probe",
    .schema = {.args = {{.name = "id", .type = ArgType::str},
                        {.name = "outcome",
                         .type = ArgType::str,
                         .default_value = "ok",
                         .choices = {"ok", "changed", "failed", "skipped"}},
                        {.name = "handler", .type = ArgType::str},
                        // The outcome the handler request asks for: any text, so a test can make a wrong request.
                        {.name = "handler_outcome", .type = ArgType::str},
                        {.name = "reboot", .type = ArgType::boolean, .default_value = false}}},
    .converge = probe,
}};

// Every argument type and rule the loader knows, for the schema tests.
Result typed(Context&, const json& args, bool) {
  Result r = Result::ok();
  r.data = args;
  return r;
}

const Registration typed_registration{ModuleDef{
    .name = "typed",
    .summary = "schema test",
    .schema = {.args = {{.name = "path", .type = ArgType::str, .required = true},
                        {.name = "count", .type = ArgType::integer, .default_value = 1},
                        {.name = "enabled", .type = ArgType::boolean, .default_value = true},
                        {.name = "names", .type = ArgType::list},
                        {.name = "mode", .type = ArgType::str, .choices = {"fast", "safe"}},
                        {.name = "opts",
                         .type = ArgType::dict,
                         .fields = {{.name = "size", .type = ArgType::str, .required = true}}},
                        {.name = "a", .type = ArgType::str},
                        {.name = "b", .type = ArgType::str},
                        {.name = "even",
                         .type = ArgType::integer,
                         .check = [](const json& v) -> std::optional<std::string> {
                           if (v.get<long long>() % 2) return "must be even";
                           return std::nullopt;
                         }}},
               .mutually_exclusive = {{"a", "b"}}},
    .converge = typed,
}};

}  // namespace
}  // namespace gpt::test
