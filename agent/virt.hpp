// libvirt, opened at run time: the binary goes to hosts that may not have libvirt yet, and only
// the libvirt modules need it. Small RAII wrappers over the C API; every error is the message
// libvirt gave, prefixed with what was being done.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "agent/expected.hpp"

namespace gpt::virt {

struct Api;  // the resolved libvirt functions (virt.cpp)

// Loads libvirt.so.0 once per process; an error says how to install it.
Expected<const Api*> load();

enum class State { running, paused, shutoff, other };
std::string state_name(State s);

class Domain {
 public:
  Domain(const Api* api, void* handle) : api_(api), handle_(handle) {}
  ~Domain();
  Domain(Domain&& o) noexcept : api_(o.api_), handle_(o.handle_) { o.handle_ = nullptr; }
  Domain& operator=(Domain&&) = delete;
  Domain(const Domain&) = delete;

  Expected<std::string> xml(bool inactive) const;
  Expected<State> state() const;
  Expected<bool> autostart() const;
  Status set_autostart(bool on);
  Status start();
  Status shutdown();  // ACPI power button: the guest decides
  Status destroy();   // power off now
  Status undefine(bool keep_nvram);

 private:
  const Api* api_;
  void* handle_;
};

// A libvirt virtual network (virsh net-*).
class Network {
 public:
  Network(const Api* api, void* handle) : api_(api), handle_(handle) {}
  ~Network();
  Network(Network&& o) noexcept : api_(o.api_), handle_(o.handle_) { o.handle_ = nullptr; }
  Network& operator=(Network&&) = delete;
  Network(const Network&) = delete;

  // The persistent definition when `inactive` (drivers that keep no separate one give the live one).
  Expected<std::string> xml(bool inactive) const;
  Expected<bool> active() const;
  Expected<bool> autostart() const;
  Status set_autostart(bool on);
  Status start();
  Status destroy();
  Status undefine();

 private:
  const Api* api_;
  void* handle_;
};

class Connection {
 public:
  // Opens `uri` ("" lets libvirt choose its default).
  static Expected<Connection> open(const std::string& uri);
  ~Connection();
  Connection(Connection&& o) noexcept : api_(o.api_), handle_(o.handle_), uri_(std::move(o.uri_)) {
    o.handle_ = nullptr;
  }
  Connection& operator=(Connection&&) = delete;
  Connection(const Connection&) = delete;

  const std::string& uri() const { return uri_; }
  Expected<std::string> capabilities() const;
  // nullopt when no domain has this name.
  Expected<std::optional<Domain>> lookup(const std::string& name) const;
  Expected<Domain> define(const std::string& xml);
  // nullopt when no network has this name.
  Expected<std::optional<Network>> lookup_network(const std::string& name) const;
  Expected<Network> define_network(const std::string& xml);
  // False for an URI that names a host (qemu+ssh://host/system): the hypervisor is elsewhere.
  bool local() const;

 private:
  Connection(const Api* api, void* handle, std::string uri) : api_(api), handle_(handle), uri_(std::move(uri)) {}
  const Api* api_;
  void* handle_;
  std::string uri_;
};

}  // namespace gpt::virt
