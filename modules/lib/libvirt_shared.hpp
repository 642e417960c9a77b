// What the libvirt modules share: the hypervisor they manage, their XML rendering, and the host's
// bridges and networks that a domain's interfaces plug into.
#pragma once

#include <optional>
#include <pugixml.hpp>
#include <string>
#include <variant>
#include <vector>

#include "agent/module.hpp"
#include "agent/virt.hpp"

namespace gpt {

inline constexpr const char* kSystemLibvirtUri = "qemu:///system";

// Opens the task's hypervisor: its connect:, else --connect, else qemu:///system — the last only
// when the root is "/" (a sandbox root manages files, not this machine's hypervisor). Otherwise the
// task's Result: skipped there, failed when libvirt cannot be reached — in check mode, changed
// when an earlier task would install packages or start a service first (Context::provided).
// `what` names the object the task manages ("domain win10").
std::variant<virt::Connection, Result> open_libvirt(const Context& ctx, const std::optional<std::string>& connect,
                                                    const std::string& what, bool apply);
// The `connect` argument both libvirt modules declare.
ArgSpec connect_arg();

// A libvirt document as the modules show and compare it: two-space indents, no declaration.
std::string render_xml(const pugi::xml_document& doc);

// The host has a bridge of this name (/sys/class/net/NAME/bridge, under the root).
bool host_bridge_exists(const Root& root, const std::string& name);

// The key under which a libvirt_network task records, in Context::provided, a network it started
// (or would start, in check mode) for the domains of later tasks.
std::string provided_network(const std::string& uri, const std::string& name);

// Sets a domain's or network's autostart to `on` where it differs, saying so in `done`. `object`
// is empty when it is not defined yet (check mode): its autostart counts as off.
template <class Object>
Status converge_autostart(std::optional<Object>& object, bool on, bool apply, std::vector<std::string>& done) {
  bool is_on = false;
  if (object) {
    auto a = object->autostart();
    if (!a) return Error{a.error()};
    is_on = *a;
  }
  if (is_on == on) return {};
  done.push_back(on ? "autostart on" : "autostart off");
  if (apply) return object->set_autostart(on);
  return {};
}

}  // namespace gpt
