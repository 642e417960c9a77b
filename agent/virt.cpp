#include "agent/virt.hpp"

#include <dlfcn.h>

#include <cstdlib>

// Only the declarations: the library itself is opened with dlopen, never linked.
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

namespace gpt::virt {

struct Api {
  decltype(&virConnectOpen) connect_open;
  decltype(&virConnectClose) connect_close;
  decltype(&virConnectGetCapabilities) capabilities;
  decltype(&virConnectGetURI) connect_uri;
  decltype(&virDomainLookupByName) lookup;
  decltype(&virDomainDefineXML) define;
  decltype(&virDomainGetXMLDesc) xml;
  decltype(&virDomainGetState) state;
  decltype(&virDomainGetAutostart) get_autostart;
  decltype(&virDomainSetAutostart) set_autostart;
  decltype(&virDomainCreate) create;
  decltype(&virDomainShutdown) shutdown;
  decltype(&virDomainDestroy) destroy;
  decltype(&virDomainUndefineFlags) undefine;
  decltype(&virDomainFree) free_domain;
  decltype(&virNetworkLookupByName) network_lookup;
  decltype(&virNetworkDefineXML) network_define;
  decltype(&virNetworkGetXMLDesc) network_xml;
  decltype(&virNetworkIsActive) network_active;
  decltype(&virNetworkGetAutostart) network_get_autostart;
  decltype(&virNetworkSetAutostart) network_set_autostart;
  decltype(&virNetworkCreate) network_create;
  decltype(&virNetworkDestroy) network_destroy;
  decltype(&virNetworkUndefine) network_undefine;
  decltype(&virNetworkFree) free_network;
  decltype(&virGetLastError) last_error;
  decltype(&virSetErrorFunc) set_error_func;
};

namespace {

// libvirt prints every error on stderr unless a handler takes them; the agent reports them itself.
void quiet(void*, virErrorPtr) {}

template <typename F>
bool resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(::dlsym(lib, name));
  return fn != nullptr;
}

Expected<const Api*> load_once() {
  void* lib = ::dlopen("libvirt.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = ::dlerror();
    return Error{std::string("libvirt is not installed on this host (") + (why ? why : "libvirt.so.0 not found") +
                 "): install libvirt-daemon-system and libvirt-clients (Debian, Ubuntu) or libvirt (Fedora, Arch)"};
  }
  static Api api{};
  bool ok =
      resolve(lib, "virConnectOpen", api.connect_open) && resolve(lib, "virConnectClose", api.connect_close) &&
      resolve(lib, "virConnectGetCapabilities", api.capabilities) &&
      resolve(lib, "virConnectGetURI", api.connect_uri) && resolve(lib, "virDomainLookupByName", api.lookup) &&
      resolve(lib, "virDomainDefineXML", api.define) && resolve(lib, "virDomainGetXMLDesc", api.xml) &&
      resolve(lib, "virDomainGetState", api.state) && resolve(lib, "virDomainGetAutostart", api.get_autostart) &&
      resolve(lib, "virDomainSetAutostart", api.set_autostart) && resolve(lib, "virDomainCreate", api.create) &&
      resolve(lib, "virDomainShutdown", api.shutdown) && resolve(lib, "virDomainDestroy", api.destroy) &&
      resolve(lib, "virDomainUndefineFlags", api.undefine) && resolve(lib, "virDomainFree", api.free_domain) &&
      resolve(lib, "virNetworkLookupByName", api.network_lookup) &&
      resolve(lib, "virNetworkDefineXML", api.network_define) &&
      resolve(lib, "virNetworkGetXMLDesc", api.network_xml) && resolve(lib, "virNetworkIsActive", api.network_active) &&
      resolve(lib, "virNetworkGetAutostart", api.network_get_autostart) &&
      resolve(lib, "virNetworkSetAutostart", api.network_set_autostart) &&
      resolve(lib, "virNetworkCreate", api.network_create) && resolve(lib, "virNetworkDestroy", api.network_destroy) &&
      resolve(lib, "virNetworkUndefine", api.network_undefine) && resolve(lib, "virNetworkFree", api.free_network) &&
      resolve(lib, "virGetLastError", api.last_error) && resolve(lib, "virSetErrorFunc", api.set_error_func);
  if (!ok) return Error{"libvirt.so.0 lacks a function the agent needs (libvirt 2.3 or newer is required)"};
  api.set_error_func(nullptr, quiet);
  return &api;
}

std::string last_error(const Api* api) {
  virErrorPtr e = api->last_error();
  return e && e->message ? e->message : "unknown libvirt error";
}

Error fail(const Api* api, const std::string& what) { return Error{what + ": " + last_error(api)}; }

Status status(const Api* api, int rc, const std::string& what) {
  if (rc < 0) return fail(api, what);
  return {};
}

Expected<std::string> take(const Api* api, char* text, const std::string& what) {
  if (!text) return fail(api, what);
  std::string out(text);
  std::free(text);
  return out;
}

}  // namespace

Expected<const Api*> load() {
  static const Expected<const Api*> loaded = load_once();  // once per process, thread-safe
  return loaded;
}

std::string state_name(State s) {
  switch (s) {
    case State::running:
      return "running";
    case State::paused:
      return "paused";
    case State::shutoff:
      return "shut off";
    case State::other:
      return "in transition";
  }
  return "unknown";
}

Domain::~Domain() {
  if (handle_) api_->free_domain(static_cast<virDomainPtr>(handle_));
}

Expected<std::string> Domain::xml(bool inactive) const {
  return take(api_, api_->xml(static_cast<virDomainPtr>(handle_), inactive ? VIR_DOMAIN_XML_INACTIVE : 0),
              "cannot read the domain's XML");
}

Expected<State> Domain::state() const {
  int st = 0, reason = 0;
  if (api_->state(static_cast<virDomainPtr>(handle_), &st, &reason, 0) < 0)
    return fail(api_, "cannot read the domain's state");
  switch (st) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
      return State::running;
    case VIR_DOMAIN_PAUSED:
    case VIR_DOMAIN_PMSUSPENDED:
      return State::paused;
    case VIR_DOMAIN_SHUTOFF:
    case VIR_DOMAIN_CRASHED:
      return State::shutoff;
    default:
      return State::other;
  }
}

Expected<bool> Domain::autostart() const {
  int on = 0;
  if (api_->get_autostart(static_cast<virDomainPtr>(handle_), &on) < 0) return fail(api_, "cannot read autostart");
  return on != 0;
}

Status Domain::set_autostart(bool on) {
  return status(api_, api_->set_autostart(static_cast<virDomainPtr>(handle_), on ? 1 : 0), "cannot set autostart");
}
Status Domain::start() {
  return status(api_, api_->create(static_cast<virDomainPtr>(handle_)), "cannot start the domain");
}
Status Domain::shutdown() {
  return status(api_, api_->shutdown(static_cast<virDomainPtr>(handle_)), "cannot shut the domain down");
}
Status Domain::destroy() {
  return status(api_, api_->destroy(static_cast<virDomainPtr>(handle_)), "cannot power the domain off");
}
Status Domain::undefine(bool keep_nvram) {
  auto dom = static_cast<virDomainPtr>(handle_);
  const unsigned flags = keep_nvram ? VIR_DOMAIN_UNDEFINE_KEEP_NVRAM : VIR_DOMAIN_UNDEFINE_NVRAM;
  if (api_->undefine(dom, flags) == 0) return {};
  Error first = fail(api_, "cannot undefine the domain");
  // Drivers that manage no nvram (test:///, some remote ones) refuse the flag; without it they
  // keep every file anyway.
  if (keep_nvram && api_->undefine(dom, 0) == 0) return {};
  return first;
}

Network::~Network() {
  if (handle_) api_->free_network(static_cast<virNetworkPtr>(handle_));
}

Expected<std::string> Network::xml(bool inactive) const {
  auto net = static_cast<virNetworkPtr>(handle_);
  if (char* text = api_->network_xml(net, inactive ? VIR_NETWORK_XML_INACTIVE : 0))
    return take(api_, text, "cannot read the network's XML");
  // The test:/// driver keeps one definition and refuses the flag.
  virErrorPtr e = api_->last_error();
  if (inactive && e && e->code == VIR_ERR_INVALID_ARG)
    return take(api_, api_->network_xml(net, 0), "cannot read the network's XML");
  return fail(api_, "cannot read the network's XML");
}

Expected<bool> Network::active() const {
  const int on = api_->network_active(static_cast<virNetworkPtr>(handle_));
  if (on < 0) return fail(api_, "cannot read whether the network is active");
  return on != 0;
}

Expected<bool> Network::autostart() const {
  int on = 0;
  if (api_->network_get_autostart(static_cast<virNetworkPtr>(handle_), &on) < 0)
    return fail(api_, "cannot read the network's autostart");
  return on != 0;
}

Status Network::set_autostart(bool on) {
  return status(api_, api_->network_set_autostart(static_cast<virNetworkPtr>(handle_), on ? 1 : 0),
                "cannot set the network's autostart");
}
Status Network::start() {
  return status(api_, api_->network_create(static_cast<virNetworkPtr>(handle_)), "cannot start the network");
}
Status Network::destroy() {
  return status(api_, api_->network_destroy(static_cast<virNetworkPtr>(handle_)), "cannot stop the network");
}
Status Network::undefine() {
  return status(api_, api_->network_undefine(static_cast<virNetworkPtr>(handle_)), "cannot undefine the network");
}

Expected<Connection> Connection::open(const std::string& uri) {
  auto api = load();
  if (!api) return Error{api.error()};
  virConnectPtr c = (*api)->connect_open(uri.empty() ? nullptr : uri.c_str());
  if (!c) return fail(*api, "cannot connect to libvirt at " + (uri.empty() ? std::string("its default URI") : uri));
  std::string actual = uri;
  if (char* u = (*api)->connect_uri(c)) {
    actual = u;
    std::free(u);
  }
  return Connection(*api, c, actual);
}

Connection::~Connection() {
  if (handle_) api_->connect_close(static_cast<virConnectPtr>(handle_));
}

Expected<std::string> Connection::capabilities() const {
  return take(api_, api_->capabilities(static_cast<virConnectPtr>(handle_)),
              "cannot read the hypervisor's capabilities");
}

Expected<std::optional<Domain>> Connection::lookup(const std::string& name) const {
  virDomainPtr d = api_->lookup(static_cast<virConnectPtr>(handle_), name.c_str());
  if (d) return std::optional<Domain>(Domain(api_, d));
  virErrorPtr e = api_->last_error();
  if (e && e->code == VIR_ERR_NO_DOMAIN) return std::optional<Domain>{};
  return fail(api_, "cannot look up domain " + name);
}

Expected<Domain> Connection::define(const std::string& xml) {
  virDomainPtr d = api_->define(static_cast<virConnectPtr>(handle_), xml.c_str());
  if (!d) return fail(api_, "libvirt refused the domain definition");
  return Domain(api_, d);
}

Expected<std::optional<Network>> Connection::lookup_network(const std::string& name) const {
  virNetworkPtr n = api_->network_lookup(static_cast<virConnectPtr>(handle_), name.c_str());
  if (n) return std::optional<Network>(Network(api_, n));
  virErrorPtr e = api_->last_error();
  if (e && e->code == VIR_ERR_NO_NETWORK) return std::optional<Network>{};
  return fail(api_, "cannot look up network " + name);
}

Expected<Network> Connection::define_network(const std::string& xml) {
  virNetworkPtr n = api_->network_define(static_cast<virConnectPtr>(handle_), xml.c_str());
  if (!n) return fail(api_, "libvirt refused the network definition");
  return Network(api_, n);
}

bool Connection::local() const {
  // scheme[+transport]://[user@]host/path: a host part means another machine.
  const auto sep = uri_.find("://");
  if (sep == std::string::npos) return true;
  const auto rest = uri_.substr(sep + 3);
  const auto host = rest.substr(0, rest.find('/'));
  return host.empty() || host == "localhost";
}

}  // namespace gpt::virt
