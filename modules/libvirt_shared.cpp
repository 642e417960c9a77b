#include "modules/libvirt_shared.hpp"

#include <sstream>

namespace gpt {

std::optional<std::string> libvirt_uri(const Context& ctx, const json& args) {
  if (args.contains("connect") && !args["connect"].is_null()) return args["connect"].get<std::string>();
  if (!ctx.libvirt_uri.empty()) return ctx.libvirt_uri;
  if (!ctx.system_commands_allowed) return std::nullopt;
  return std::string(kSystemLibvirtUri);
}

std::string render_xml(const pugi::xml_document& doc) {
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
  return out.str();
}

bool host_bridge_exists(const Root& root, const std::string& name) {
  // A name with a slash or a dot-dot would look elsewhere in /sys.
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") return false;
  return path_exists(root, "/sys/class/net/" + name + "/bridge");
}

std::string provided_network(const std::string& uri, const std::string& name) { return "libvirt_network:" + uri + "#" + name; }

}  // namespace gpt
