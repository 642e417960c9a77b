// `gptagent doc`: the modules and their arguments, and the generated parts of the manual pages and
// of shell completion, read from the code (the CLI and the modules' ArgSpec lists) so they cannot drift.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string_view>

namespace gpt {

struct ModuleDef;

// Every module with its one-line summary.
void write_module_list(std::ostream& out);
// One module's documentation, as ansible-doc shows a module's: its summary and description, each
// argument (type, required, default, choices, doc, example), what a change sets in motion (the
// handlers it notifies, a reboot) and the examples; false when no module has that name.
bool write_module_doc(std::ostream& out, std::string_view name);
// The same as JSON for programs (`gptagent doc --json [MODULE]`): the module's name, summary,
// description, each argument (name, type, elements, required, default, choices, doc, example,
// fields), the argument groups, the examples, the handlers a change notifies and whether it needs a
// reboot; every module, in an array, when `name` is empty. False when no module has that name.
bool write_module_doc_json(std::ostream& out, std::string_view name);
nlohmann::json module_doc_json(const ModuleDef& def);

// The COMMANDS section of gptagent(1): each subcommand of `app` with its positionals and options.
void write_roff_commands(std::ostream& out, const CLI::App& app);
// The MODULES section of gptagent-playbook(5): each module with its arguments.
void write_roff_modules(std::ostream& out);

// Words for shell completion, one a line: `commands` (the subcommands), `modules`, or a subcommand's
// name (its options). False when `what` is none of these.
bool write_completion_words(std::ostream& out, const CLI::App& app, std::string_view what);

// Text made safe for a roff line: backslashes, hyphens (as \-, what man pages want for options) and a
// leading control character escaped.
std::string roff_escape(std::string_view text);

}  // namespace gpt
