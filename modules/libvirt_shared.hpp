// What the libvirt modules share: the hypervisor they manage, their XML rendering, and the host's
// bridges and networks that a domain's interfaces plug into.
#pragma once

#include <optional>
#include <string>

#include <pugixml.hpp>

#include "agent/module.hpp"

namespace gpt {

inline constexpr const char* kSystemLibvirtUri = "qemu:///system";

// The task's connect:, else --connect, else qemu:///system — the last only when the root is "/":
// a sandbox root manages files, not this machine's hypervisor (nullopt: skip the task).
std::optional<std::string> libvirt_uri(const Context& ctx, const json& args);

// A libvirt document as the modules show and compare it: two-space indents, no declaration.
std::string render_xml(const pugi::xml_document& doc);

// The host has a bridge of this name (/sys/class/net/NAME/bridge, under the root).
bool host_bridge_exists(const Root& root, const std::string& name);

// The key under which a libvirt_network task records, in Context::provided, a network it started
// (or would start, in check mode) for the domains of later tasks.
std::string provided_network(const std::string& uri, const std::string& name);

}  // namespace gpt
