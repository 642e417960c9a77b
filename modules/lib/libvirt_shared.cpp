#include "modules/lib/libvirt_shared.hpp"

#include <sstream>

namespace gpt {

ArgSpec connect_arg() {
  return {.name = "connect",
          .doc = "the hypervisor's URI; else --connect, else qemu:///system (on the host itself, not under --root)",
          .example = "qemu+ssh://root@gpu-host/system"};
}

std::variant<virt::Connection, Result> open_libvirt(const Context& ctx, const std::optional<std::string>& connect,
                                                    const std::string& what, bool apply) {
  std::string uri = connect.value_or(ctx.libvirt_uri);
  if (uri.empty()) {
    if (!ctx.system_commands_allowed)
      return Result::skipped("not run under --root " + ctx.root.dir() + ": " + what + " would be defined at " +
                             kSystemLibvirtUri + " (give connect: or --connect to manage another hypervisor)");
    uri = kSystemLibvirtUri;
  }
  auto conn = virt::Connection::open(uri);
  if (!conn) {
    // In check mode, libvirt that an earlier task would install or start is not there yet: the
    // object would be made then, with what this task says.
    if (!apply && (ctx.packages_pending() || ctx.provided_any("service:")))
      return Result::changed(what + " would be defined at " + uri + ": libvirt cannot be reached yet (" + conn.error() +
                             "), and an earlier task would " +
                             (ctx.packages_pending() ? "install packages" : "start a service") + " first");
    return Result::failed(conn.error());
  }
  return std::move(*conn);
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

std::string provided_network(const std::string& uri, const std::string& name) {
  return "libvirt_network:" + uri + "#" + name;
}

}  // namespace gpt
