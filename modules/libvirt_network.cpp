// libvirt_network: a libvirt-managed network, defined and started idempotently — NAT with its
// own bridge, address and DHCP range, or libvirt's view of a host bridge that already exists.
//
// Only the parts the playbook declares are managed (forward mode, bridge name, the IPv4 address,
// the DHCP range); the rest of an existing network, one the user made included, stays as libvirt
// has it. Drift is a difference between the persistent definition and that definition with the
// declared parts merged in, and --diff shows that very change. Host bridges themselves are not
// built here: mode bridge expects one.
#include <arpa/inet.h>

#include <bit>
#include <cstdint>
#include <pugixml.hpp>

#include "agent/declare.hpp"
#include "agent/diff.hpp"
#include "agent/text.hpp"
#include "agent/virt.hpp"
#include "modules/lib/libvirt_shared.hpp"

namespace gpt {
namespace {

std::optional<uint32_t> ipv4(const std::string& text) {
  in_addr a{};
  if (::inet_pton(AF_INET, text.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

// 255.255.255.0 -> 24; nullopt for a mask whose ones are not contiguous.
std::optional<int> prefix_of(const std::string& netmask) {
  auto m = ipv4(netmask);
  if (!m) return std::nullopt;
  const int ones = std::popcount(*m);
  if (ones != 32 && (*m << ones) != 0) return std::nullopt;
  return ones;
}

std::optional<std::string> ipv4_check(const json& v) {
  if (!ipv4(v.get<std::string>())) return "'" + v.get<std::string>() + "' is not an IPv4 address";
  return std::nullopt;
}

// The IPv4 address the playbook gives: `address: A/N`, or `ip:` with `netmask:`.
struct Address {
  std::string ip;
  int prefix = 24;
  bool as_netmask = false;  // written as netmask='…' (the playbook gave one) rather than prefix='N'
};

struct Dhcp {
  std::string start;
  std::string end;
};

struct Args {
  std::string name;
  std::optional<std::string> mode;
  std::optional<std::string> bridge;
  std::optional<std::string> address;
  std::optional<std::string> ip;
  std::optional<std::string> netmask;
  std::optional<Dhcp> dhcp;
  std::string state = "active";
  std::optional<bool> autostart;
  std::optional<std::string> connect;
};

std::optional<Address> address_of(const Args& args) {
  if (args.address) {
    const std::string& text = *args.address;
    const auto slash = text.find('/');
    return Address{text.substr(0, slash), std::stoi(text.substr(slash + 1)), false};
  }
  if (args.ip) return Address{*args.ip, *prefix_of(args.netmask.value_or("")), true};
  return std::nullopt;
}

std::string netmask_of(int prefix) {
  const uint32_t m = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  in_addr a{htonl(m)};
  char buf[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::optional<std::string> check_args(const Args& args) {
  const std::string mode = args.mode.value_or("");
  if (mode == "bridge" && !args.bridge) return "mode: bridge needs bridge: (the host bridge the network uses)";
  if (mode == "bridge")
    for (const auto& [key, given] : {std::pair{"address", args.address.has_value()},
                                     std::pair{"ip", args.ip.has_value()}, std::pair{"dhcp", args.dhcp.has_value()}})
      if (given)
        return std::string(key) +
               ": a bridge-mode network has no address of its own (the host bridge's LAN gives them)";
  if (args.ip.has_value() != args.netmask.has_value())
    return "ip: and netmask: go together (or address: 192.168.100.1/24)";
  if (args.dhcp && !args.address && !args.ip) return "dhcp: needs the network's address (address: 192.168.100.1/24)";
  return std::nullopt;
}

ArgsDecl<Args> declaration() {
  return ArgsDecl<Args>()
      .arg("name", &Args::name, "the network", {.required = true, .example = "gpu-lan"})
      .arg("mode", &Args::mode,
           "nat: libvirt's own subnet behind NAT (a new network's default); bridge: the host bridge's LAN",
           {.choices = {"nat", "bridge"}})
      .arg("bridge", &Args::bridge,
           "the bridge: for mode: bridge, the host's own (br0); for nat, the one libvirt makes")
      .arg("address", &Args::address, "the host's address on the network with its prefix length",
           {.check = [](const json& v) -> std::optional<std::string> {
              const std::string s = v.get<std::string>();
              const auto slash = s.find('/');
              const std::string bits = slash == std::string::npos ? "" : s.substr(slash + 1);
              if (slash == std::string::npos || !ipv4(s.substr(0, slash)) || bits.empty() || bits.size() > 2 ||
                  bits.find_first_not_of("0123456789") != std::string::npos || std::stoi(bits) < 1 ||
                  std::stoi(bits) > 30)
                return "'" + s + "' is not an IPv4 address with a prefix length (192.168.100.1/24)";
              return std::nullopt;
            },
            .example = "192.168.100.1/24"})
      .arg("ip", &Args::ip, "the host's address, written with netmask: instead of a prefix", {.check = ipv4_check})
      .arg("netmask", &Args::netmask,
           "the netmask that goes with ip:", {.check = [](const json& v) -> std::optional<std::string> {
             if (!prefix_of(v.get<std::string>())) return "'" + v.get<std::string>() + "' is not a netmask";
             return std::nullopt;
           }})
      .arg("dhcp", &Args::dhcp, "the range libvirt's DHCP server hands out",
           ArgsDecl<Dhcp>()
               .arg("start", &Dhcp::start, "the first address", {.required = true, .check = ipv4_check})
               .arg("end", &Dhcp::end, "the last address", {.required = true, .check = ipv4_check}),
           {.example = json{{"start", "192.168.100.2"}, {"end", "192.168.100.254"}}})
      .arg("state", &Args::state, "active: defined and started; inactive: defined, stopped; absent: undefined",
           {.choices = {"active", "inactive", "absent"}})
      .arg("autostart", &Args::autostart, "whether libvirt starts it at boot (left as it is when not given)")
      .arg(connect_arg(), &Args::connect)
      .mutually_exclusive({"address", "ip"})
      .check(check_args);
}

void set_attr(pugi::xml_node n, const char* name, const std::string& value) {
  auto a = n.attribute(name);
  if (!a) a = n.append_attribute(name);
  a.set_value(value.c_str());
}

pugi::xml_node child_after(pugi::xml_node parent, const char* name, const char* after) {
  if (auto n = parent.child(name)) return n;
  auto prev = parent.child(after);
  return prev ? parent.insert_child_after(name, prev) : parent.append_child(name);
}

// The network's IPv4 <ip> (the one without family, or family='ipv4').
pugi::xml_node ipv4_node(pugi::xml_node net) {
  for (auto ip : net.children("ip")) {
    const std::string family = ip.attribute("family").value();
    if (family.empty() || family == "ipv4") return ip;
  }
  return {};
}

std::optional<int> prefix_in(pugi::xml_node ip) {
  if (auto p = ip.attribute("prefix")) return p.as_int();
  if (auto m = ip.attribute("netmask")) return prefix_of(m.value());
  return std::nullopt;
}

// The declared parts merged into `doc` (the persistent definition, or empty for a new network),
// each written only where it differs.
void merge(pugi::xml_document& doc, const Args& args) {
  auto net = doc.child("network");
  const bool is_new = !net;
  if (is_new) {
    net = doc.append_child("network");
    net.append_child("name").text().set(args.name.c_str());
  }
  // A new network without a mode is a NAT one, like libvirt's default network.
  const std::string mode = args.mode.value_or(is_new ? "nat" : "");
  if (!mode.empty()) {
    auto forward = child_after(net, "forward", "name");
    if (std::string_view(forward.attribute("mode").value()) != mode) set_attr(forward, "mode", mode);
    if (mode == "bridge") {
      // libvirt keeps no address, DHCP or NAT settings of its own on a host bridge's network.
      forward.remove_child("nat");
      while (auto ip = net.child("ip")) net.remove_child(ip);
    }
  }
  if (args.bridge) {
    const std::string& name = *args.bridge;
    auto bridge = child_after(net, "bridge", "forward");
    if (bridge.attribute("name").value() != name) set_attr(bridge, "name", name);
  }
  if (auto want = address_of(args)) {
    auto ip = ipv4_node(net);
    if (!ip) ip = net.append_child("ip");
    if (ip.attribute("address").value() != want->ip) set_attr(ip, "address", want->ip);
    if (prefix_in(ip) != want->prefix) {
      ip.remove_attribute("prefix");
      ip.remove_attribute("netmask");
      if (want->as_netmask)
        set_attr(ip, "netmask", netmask_of(want->prefix));
      else
        set_attr(ip, "prefix", std::to_string(want->prefix));
    }
    if (args.dhcp) {
      auto dhcp = ip.child("dhcp");
      if (!dhcp) dhcp = ip.append_child("dhcp");
      auto range = dhcp.child("range");
      if (!range) range = dhcp.prepend_child("range");
      for (const auto& [end, value] : {std::pair{"start", args.dhcp->start}, std::pair{"end", args.dhcp->end}})
        if (range.attribute(end).value() != value) set_attr(range, end, value);
    }
  }
}

Expected<Result> converge(Context& ctx, const Args& args, bool apply) {
  const std::string& name = args.name;
  const std::string& state = args.state;
  auto opened = open_libvirt(ctx, args.connect, "network " + name, apply);
  if (auto* skip = std::get_if<Result>(&opened)) return *skip;
  virt::Connection* conn = &std::get<virt::Connection>(opened);
  auto found = conn->lookup_network(name);
  if (!found) return Result::failed(found.error());
  std::optional<virt::Network>& net = *found;
  const std::string key = provided_network(conn->uri(), name);
  bool active = false;
  if (net) {
    auto a = net->active();
    if (!a) return Result::failed(a.error());
    active = *a;
  }

  if (state == "absent") {
    ctx.provided.erase(key);
    if (!net) return Result::ok("network " + name + " is absent");
    Result r = Result::changed((active ? "stopped and undefined network " : "undefined network ") + name);
    if (apply) {
      if (active)
        if (auto s = net->destroy(); !s) return Result::failed(s.error());
      if (auto s = net->undefine(); !s) return Result::failed(s.error());
    }
    return r;
  }

  if (args.mode == "bridge" && conn->local() && !host_bridge_exists(ctx.root, *args.bridge))
    return Result::failed("bridge " + *args.bridge + " does not exist on this host (no /sys/class/net/" + *args.bridge +
                          "/bridge): create it first (netplan, NetworkManager or ifupdown), or use mode: nat");
  pugi::xml_document current;
  if (net) {
    auto xml = net->xml(true);
    if (!xml) return Result::failed(xml.error());
    if (!current.load_string(xml->c_str()))
      return Result::failed("libvirt returned XML that does not parse for network " + name);
  } else if (args.mode.value_or("nat") == "nat" && !args.address && !args.ip) {
    return Result::failed("network " + name +
                          " does not exist: a new NAT network needs its address (address: 192.168.100.1/24)");
  }
  pugi::xml_document desired;
  desired.reset(current);
  merge(desired, args);

  Result r = Result::ok();
  std::vector<std::string> done;
  // Rendered once: compared, shown, defined and reported below.
  const std::string before = net ? render_xml(current) : "", after = render_xml(desired);
  const bool redefine = !net || before != after;
  // A network to stop is stopped before it is redefined: the new definition is then the one in
  // force at once (drivers differ in when a pending one takes over).
  const bool stop = state == "inactive" && active;
  if (apply && stop)
    if (auto s = net->destroy(); !s) return Result::failed(s.error());
  if (redefine) {
    r.diff = unified_diff(before, after, "network " + name + " (libvirt XML)");
    done.push_back(net ? "redefined network " + name : "defined network " + name);
    if (apply) {
      auto defined = conn->define_network(after);
      if (!defined) return Result::failed(defined.error() + " (network " + name + ", nothing was changed)");
      net.emplace(std::move(*defined));
    }
  }
  if (state == "active" && !active) {
    done.push_back("started");
    if (apply)
      if (auto s = net->start(); !s) return Result::failed(s.error());
  } else if (stop) {
    done.push_back("stopped");
  } else if (redefine && active) {
    done.push_back(
        "the active network keeps its old configuration until it is restarted (virsh net-destroy, net-start)");
  }
  if (args.autostart)
    if (auto s = converge_autostart(net, *args.autostart, apply, done); !s) return Result::failed(s.error());
  if (state == "active")
    ctx.provided.insert(key);
  else
    ctx.provided.erase(key);

  auto node = desired.child("network");
  r.data = {{"name", name},
            {"uri", conn->uri()},
            {"state", state},
            {"mode", node.child("forward").attribute("mode").value()},
            {"bridge", node.child("bridge").attribute("name").value()}};
  if (redefine) r.data["xml"] = after;
  if (done.empty()) {
    r.msg = "network " + name + " is as wanted (" + (active ? "active" : "inactive") + ")";
    return r;
  }
  r.status = Outcome::changed;
  r.msg = join(done, "; ");
  return r;
}

// What `gptagent doc libvirt_network` says beyond the arguments.
ModuleDocs docs() {
  return {
      .description =
          "A libvirt network defined and started: name, mode: nat (with address: 192.168.100.1/24 or ip and "
          "netmask, dhcp: {start, end}, an optional bridge name) or mode: bridge over a host bridge that already "
          "exists (bridge: br0, checked in /sys/class/net/br0/bridge; the agent does not create host bridges), "
          "state: active, inactive or absent, autostart, connect as for libvirt_domain.\n\n"
          "Only the declared parts are managed: an existing network, the user's own included, keeps everything "
          "else. Drift is a difference in those parts, and --diff shows the XML change. A redefined active network "
          "keeps its old configuration until it is restarted (the agent does not restart it: that would cut "
          "running VMs off). What the agent set is not recorded yet, so a key the playbook stops declaring stays as "
          "it was (network <metadata> needs libvirt 9.7).",
      .examples = {"# A NAT network of libvirt's own, with DHCP, started now and at boot\n"
                   "- name: the VMs' network\n"
                   "  libvirt_network:\n"
                   "    name: gpu-lan\n"
                   "    address: 192.168.100.1/24\n"
                   "    dhcp: {start: 192.168.100.2, end: 192.168.100.254}\n"
                   "    autostart: true\n",
                   "# libvirt's view of the host bridge br0, which must already exist\n"
                   "- libvirt_network:\n"
                   "    name: lan\n"
                   "    mode: bridge\n"
                   "    bridge: br0\n"},
  };
}

const Registration reg{
    declare_module("libvirt_network",
                   "a libvirt network defined and started: NAT with address and DHCP, or over a host bridge",
                   declaration(), converge),
    docs()};

}  // namespace
}  // namespace gpt
