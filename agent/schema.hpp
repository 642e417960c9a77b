// `gptagent schema`: a JSON Schema (draft 2020-12) of the playbook format, made from the modules'
// declarations (their ArgSpec lists) and the playbook's own keywords, so an editor with a YAML
// language server validates and completes playbooks as the agent's loader would read them.
#pragma once

#include <nlohmann/json.hpp>

namespace gpt {

// The schema's $id, and what `# yaml-language-server: $schema=` in the shipped playbooks names.
inline constexpr const char* kPlaybookSchemaId = "https://gptagent.dev/schema/playbook.json";

// The schema of a playbook, as the YAML 1.2 core schema types its scalars (what the agent's loader
// and editors' language servers do). It accepts what the loader accepts: booleans also as yes/no/on/
// off, integers also as digit strings, one item where a list is asked, `{{ ... }}` templates for any
// value; a key given as null is a key left out.
nlohmann::json playbook_schema();

}  // namespace gpt
