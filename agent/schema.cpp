#include "agent/schema.hpp"

#include <string>
#include <vector>

#include "agent/module.hpp"

namespace gpt {

namespace {

json def_ref(const std::string& def) { return {{"$ref", "#/$defs/" + def}}; }

// The loader renders a `{{ ... }}` template before it types the value: any argument may be one.
json any_of_or_template(json typed) { return {{"anyOf", json::array({std::move(typed), def_ref("template")})}}; }

json value_schema(const ArgSpec& a, ArgType type);

// A mapping with declared fields: only those, the required ones present; a null field is one
// left out. An empty `fields` takes any keys.
json fields_schema(const std::vector<ArgSpec>& fields) {
  json s = {{"type", "object"}};
  if (fields.empty()) return s;
  json props = json::object(), required = json::array();
  for (const auto& f : fields) {
    json p = value_schema(f, f.type);
    if (!f.default_value.is_null()) p["default"] = f.default_value;
    if (!f.doc.empty()) p["description"] = f.doc;
    if (!f.example.is_null()) p["examples"] = json::array({f.example});
    if (f.required) {
      required.push_back(f.name);
    } else if (p.contains("anyOf")) {
      p["anyOf"].push_back({{"type", "null"}});
    } else {
      p = {{"anyOf", json::array({std::move(p), {{"type", "null"}}})}};
    }
    props[f.name] = std::move(p);
  }
  s["properties"] = std::move(props);
  s["additionalProperties"] = false;
  if (!required.empty()) s["required"] = std::move(required);
  return s;
}

json value_schema(const ArgSpec& a, ArgType type) {
  switch (type) {
    case ArgType::str: {
      // A number or a boolean is taken as its text; a template is a string already.
      if (a.choices.empty()) return {{"type", json::array({"string", "number", "boolean"})}};
      json choices = json::array();
      for (const auto& c : a.choices) {
        choices.push_back(c);
        // Unquoted, `1` is a number and `true` a boolean, which the loader takes as their text.
        if (json t = plain_scalar(c); !t.is_string() && !t.is_null()) choices.push_back(t);
      }
      return any_of_or_template({{"enum", choices}});
    }
    case ArgType::boolean:
      return def_ref("boolean");
    case ArgType::integer:
      return {{"anyOf", json::array({{{"type", "integer"}}, def_ref("integer_text"), def_ref("template")})}};
    case ArgType::list: {
      // One value where a list is asked is a list of that one value.
      json item = value_schema(a, a.elements);
      return {{"anyOf", json::array({{{"type", "array"}, {"items", item}}, item, def_ref("template")})}};
    }
    case ArgType::dict: {
      json s = fields_schema(a.fields);
      // Null is an empty mapping.
      return {{"anyOf", json::array({std::move(s), {{"type", "null"}}, def_ref("template")})}};
    }
    case ArgType::any:
      return json::object();
  }
  return json::object();
}

json module_schema(const ModuleDef& m) {
  json s = fields_schema(m.schema.args);
  s["type"] = json::array({"object", "null"});  // `xorg_cleanup:` with nothing is every default
  // What an editor shows on hover: the summary, then the description `gptagent doc` shows.
  s["description"] = m.description.empty() ? m.summary : m.summary + "\n\n" + m.description;
  json all = json::array();
  for (const auto& group : m.schema.mutually_exclusive)
    for (size_t i = 0; i < group.size(); ++i)
      for (size_t j = i + 1; j < group.size(); ++j)
        all.push_back({{"not", {{"required", json::array({group[i], group[j]})}}}});
  for (const auto& group : m.schema.required_one_of) {
    json one = json::array();
    for (const auto& n : group) one.push_back({{"required", json::array({n})}});
    all.push_back({{"anyOf", std::move(one)}});
  }
  if (!all.empty()) s["allOf"] = std::move(all);
  return s;
}

json names_schema() {
  return {{"anyOf", json::array({{{"type", "string"}}, {{"type", "array"}, {"items", {{"type", "string"}}}}})}};
}

// A task: its keywords and exactly one module. `handler` also needs a name (tasks notify it by it).
json task_schema(bool handler) {
  const auto& reg = Registry::instance();
  json props = {
      {"name", {{"type", "string"}}},
      {"when",
       {{"anyOf", json::array({{{"type", json::array({"string", "boolean"})}},
                               {{"type", "array"}, {"items", {{"type", "string"}}}}})},
        {"description", "conditions on vars and facts, all of which must hold"}}},
      {"tags", names_schema()},
      {"ignore_errors", def_ref("boolean")},
  };
  if (!handler) props["notify"] = names_schema();
  json one_module = json::array();
  for (const auto& name : reg.names()) {
    props[name] = def_ref("module_" + name);
    one_module.push_back({{"required", json::array({name})}});
  }
  json s = {{"type", "object"}, {"properties", props}, {"additionalProperties", false}, {"oneOf", one_module}};
  if (handler) s["required"] = json::array({"name"});
  return s;
}

}  // namespace

json playbook_schema() {
  const auto& reg = Registry::instance();
  json defs = {
      {"template",
       {{"type", "string"}, {"pattern", "\\{\\{"}, {"description", "a template, rendered from vars and facts"}}},
      {"boolean_text",
       {{"type", "string"},
        {"pattern", "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|[Oo][Nn]|[Oo][Ff][Ff]|1|0)$"}}},
      {"integer_text", {{"type", "string"}, {"pattern", "^[0-9]{1,18}$"}}},
      {"boolean", {{"anyOf", json::array({{{"type", "boolean"}}, def_ref("boolean_text"), def_ref("template")})}}},
      {"task", task_schema(false)},
      {"handler", task_schema(true)},
      {"tasks", {{"type", "array"}, {"items", def_ref("task")}}},
      {"handlers", {{"type", json::array({"array", "null"})}, {"items", def_ref("handler")}}},
      {"stage",
       {{"type", "object"},
        {"properties",
         {{"name", {{"type", "string"}}},
          {"reboot",
           {{"enum", {"never", "when_needed", "always"}},
            {"description",
             "whether the host reboots after the stage: never, when_needed (a change asked for one), always"}}},
          {"tasks", def_ref("tasks")},
          {"handlers", def_ref("handlers")}}},
        {"required", {"tasks"}},
        {"additionalProperties", false}}},
  };
  for (const auto& name : reg.names()) defs["module_" + name] = module_schema(*reg.find(name));
  return {
      {"$schema", "https://json-schema.org/draft/2020-12/schema"},
      {"$id", kPlaybookSchemaId},
      {"title", "gptagent playbook"},
      {"description", "A playbook for `gptagent apply`: `stages` (each with its tasks), or `tasks` as one stage."},
      {"type", "object"},
      {"properties",
       {{"name", {{"type", "string"}}},
        {"vars",
         {{"type", json::array({"object", "null"})},
          {"not", {{"required", {"facts"}}}},
          {"description", "variables for templates; `facts` is the host's and cannot be set"}}},
        {"stages", {{"type", "array"}, {"items", def_ref("stage")}}},
        {"tasks", def_ref("tasks")},
        {"handlers", def_ref("handlers")}}},
      {"additionalProperties", false},
      {"oneOf", json::array({{{"required", {"stages"}}}, {{"required", {"tasks"}}}})},
      {"$defs", std::move(defs)},
  };
}

}  // namespace gpt
