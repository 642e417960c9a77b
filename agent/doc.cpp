#include "agent/doc.hpp"

#include <cctype>
#include <string>
#include <vector>

#include "agent/module.hpp"
#include "agent/text.hpp"

namespace gpt {

namespace {

std::string_view type_word(ArgType t) {
  switch (t) {
    case ArgType::str:
      return "string";
    case ArgType::boolean:
      return "boolean";
    case ArgType::integer:
      return "integer";
    case ArgType::list:
      return "list";
    case ArgType::dict:
      return "mapping";
    case ArgType::any:
      return "any";
  }
  return "?";
}

// "list of string, required, default: [], one of: a, b": what a playbook's author must know.
std::string describe(const ArgSpec& a) {
  std::string s(type_word(a.type));
  if (a.type == ArgType::list) s += " of " + std::string(type_word(a.elements));
  if (a.required) s += ", required";
  if (!a.default_value.is_null())
    s += ", default: " + a.default_value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (!a.choices.empty()) s += ", one of: " + join(a.choices, ", ");
  return s;
}

// Each argument and, under a mapping (or list of mappings), its fields as PARENT.FIELD.
template <typename Fn>
void walk_args(const std::vector<ArgSpec>& args, const std::string& prefix, Fn&& fn) {
  for (const auto& a : args) {
    fn(prefix + a.name, a);
    walk_args(a.fields, prefix + a.name + ".", fn);
  }
}

// Paragraphs (separated by a blank line) wrapped into lines of at most `width` columns; a word
// longer than a line has one of its own. A blank line between paragraphs.
void write_wrapped(std::ostream& out, std::string_view text, size_t width) {
  bool first = true;
  while (!text.empty()) {
    const size_t end = text.find("\n\n");
    const std::string_view para = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 2);
    if (!first) out << "\n";
    first = false;
    std::string line;
    for (const auto& word : words(para)) {
      if (!line.empty() && line.size() + 1 + word.size() > width) {
        out << line << "\n";
        line.clear();
      }
      line += (line.empty() ? "" : " ") + word;
    }
    if (!line.empty()) out << line << "\n";
  }
}

// Each line of a text, indented (an example, as a playbook has it).
void write_indented(std::ostream& out, std::string_view text, size_t indent) {
  for (const auto& line : lines(text)) out << std::string(line.empty() ? 0 : indent, ' ') << line << "\n";
}

std::vector<const CLI::App*> subcommands(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App*) { return true; });
}

// "-C, --check", or "-t, --tags TEXT" for an option that takes a value.
std::string roff_option_names(const CLI::Option& o) {
  std::string s;
  for (const auto& n : o.get_snames())
    s += (s.empty() ? "" : ", ") + std::string("\\fB") + roff_escape("-" + n) + "\\fR";
  for (const auto& n : o.get_lnames())
    s += (s.empty() ? "" : ", ") + std::string("\\fB") + roff_escape("--" + n) + "\\fR";
  // CLI11 appends its validators' descriptions (":{auto,always,never}"); the description says them.
  std::string type = o.get_type_name().substr(0, o.get_type_name().find(':'));
  if (o.get_type_size() != 0 && !type.empty()) s += " \\fI" + roff_escape(type) + "\\fR";
  return s;
}

}  // namespace

std::string roff_escape(std::string_view text) {
  std::string out;
  for (char ch : text) {
    if (ch == '\\')
      out += "\\e";
    else if (ch == '-')
      out += "\\-";
    else
      out += ch;
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out.insert(0, "\\&");
  return out;
}

void write_module_list(std::ostream& out) {
  const auto& reg = Registry::instance();
  size_t width = 0;
  for (const auto& name : reg.names()) width = std::max(width, name.size());
  for (const auto& name : reg.names())
    out << name << std::string(width + 2 - name.size(), ' ') << reg.find(name)->summary << "\n";
}

bool write_module_doc(std::ostream& out, std::string_view name) {
  const auto& reg = Registry::instance();
  const ModuleDef* def = reg.find(name);
  if (!def) return false;
  out << def->name << ": " << def->summary << "\n";
  if (!def->description.empty()) {
    out << "\n";
    // Not indented: an indented line "  WORD (" is an argument's, as scripts/prove-package reads them.
    write_wrapped(out, def->description, 100);
  }
  out << "\nArguments:\n";
  if (def->schema.args.empty()) out << "  (no arguments)\n";
  walk_args(def->schema.args, "", [&](const std::string& path, const ArgSpec& a) {
    out << "  " << path << " (" << describe(a) << ")\n";
    if (!a.doc.empty()) out << "      " << a.doc << "\n";
    if (!a.example.is_null())
      out << "      example: " << a.example.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  });
  for (const auto& group : def->schema.mutually_exclusive) {
    out << "  mutually exclusive:";
    for (const auto& n : group) out << " " << n;
    out << "\n";
  }
  for (const auto& group : def->schema.required_one_of) {
    out << "  one of these is required:";
    for (const auto& n : group) out << " " << n;
    out << "\n";
  }
  out << "\nA change sets in motion:\n";
  for (const auto& handler : def->notifies) {
    const ModuleDef* h = reg.find(handler);
    out << "  the handler " << handler << (h ? ": " + h->summary : std::string()) << "\n";
  }
  if (def->reboot) out << "  a reboot: what it changes for the boot takes effect when the host boots next\n";
  if (def->notifies.empty() && !def->reboot) out << "  nothing more: no handler, no reboot\n";
  if (!def->examples.empty()) out << "\nExamples:\n";
  for (size_t i = 0; i < def->examples.size(); ++i) {
    if (i > 0) out << "\n";
    write_indented(out, def->examples[i], 2);
  }
  return true;
}

namespace {

json arg_doc_json(const ArgSpec& a) {
  json j = {{"name", a.name}, {"type", type_word(a.type)}, {"required", a.required}};
  if (a.type == ArgType::list) j["elements"] = type_word(a.elements);
  if (!a.default_value.is_null()) j["default"] = a.default_value;
  if (!a.choices.empty()) j["choices"] = a.choices;
  if (!a.doc.empty()) j["doc"] = a.doc;
  if (!a.example.is_null()) j["example"] = a.example;
  if (!a.fields.empty()) {
    j["fields"] = json::array();
    for (const auto& f : a.fields) j["fields"].push_back(arg_doc_json(f));
  }
  return j;
}

}  // namespace

json module_doc_json(const ModuleDef& def) {
  json args = json::array();
  for (const auto& a : def.schema.args) args.push_back(arg_doc_json(a));
  json j = {{"name", def.name},
            {"summary", def.summary},
            {"description", def.description},
            {"arguments", std::move(args)},
            {"examples", def.examples},
            {"notifies", def.notifies},
            {"reboot", def.reboot}};
  if (!def.schema.mutually_exclusive.empty()) j["mutually_exclusive"] = def.schema.mutually_exclusive;
  if (!def.schema.required_one_of.empty()) j["required_one_of"] = def.schema.required_one_of;
  if (def.handler_args) j["handler_arguments"] = *def.handler_args;
  return j;
}

bool write_module_doc_json(std::ostream& out, std::string_view name) {
  const auto& reg = Registry::instance();
  json doc;
  if (name.empty()) {
    doc = json::array();
    for (const auto& n : reg.names()) doc.push_back(module_doc_json(*reg.find(n)));
  } else if (const ModuleDef* def = reg.find(name)) {
    doc = module_doc_json(*def);
  } else {
    return false;
  }
  out << doc.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  return true;
}

void write_roff_commands(std::ostream& out, const CLI::App& app) {
  for (const auto* sub : subcommands(app)) {
    out << ".SS \"gptagent " << roff_escape(sub->get_name()) << " [\\fIOPTIONS\\fR]";
    for (const auto* o : sub->get_options([](const CLI::Option* o) { return !o->nonpositional(); })) {
      std::string name = o->get_name();
      for (auto& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      if (o->get_required())
        out << " \\fI" << roff_escape(name) << "\\fR";
      else
        out << " [\\fI" << roff_escape(name) << "\\fR]";
    }
    out << "\"\n" << roff_escape(sub->get_description()) << ".\n";
    for (const auto* o : sub->get_options()) {
      if (!o->nonpositional()) continue;
      out << ".TP\n" << roff_option_names(*o) << "\n" << roff_escape(o->get_description()) << "\n";
    }
  }
}

void write_roff_modules(std::ostream& out) {
  const auto& reg = Registry::instance();
  for (const auto& name : reg.names()) {
    const ModuleDef* def = reg.find(name);
    out << ".SS " << roff_escape(name) << "\n" << roff_escape(def->summary) << ".\n";
    if (def->schema.args.empty()) out << "It takes no arguments.\n";
    walk_args(def->schema.args, "", [&](const std::string& path, const ArgSpec& a) {
      out << ".TP\n\\fB" << roff_escape(path) << "\\fR\n" << roff_escape(describe(a)) << ".\n";
    });
    for (const auto& group : def->schema.mutually_exclusive) {
      out << ".PP\nMutually exclusive:";
      for (const auto& n : group) out << " \\fB" << roff_escape(n) << "\\fR";
      out << ".\n";
    }
    for (const auto& group : def->schema.required_one_of) {
      out << ".PP\nOne of these is required:";
      for (const auto& n : group) out << " \\fB" << roff_escape(n) << "\\fR";
      out << ".\n";
    }
  }
}

bool write_completion_words(std::ostream& out, const CLI::App& app, std::string_view what) {
  if (what == "commands") {
    for (const auto* sub : subcommands(app)) out << sub->get_name() << "\n";
    return true;
  }
  if (what == "modules") {
    for (const auto& name : Registry::instance().names()) out << name << "\n";
    return true;
  }
  for (const auto* sub : subcommands(app)) {
    if (sub->get_name() != what) continue;
    for (const auto* o : sub->get_options()) {
      for (const auto& n : o->get_lnames()) out << "--" << n << "\n";
      for (const auto& n : o->get_snames()) out << "-" << n << "\n";
    }
    return true;
  }
  return false;
}

}  // namespace gpt
