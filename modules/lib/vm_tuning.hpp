// The host side of the VM tuning that libvirt_domain offers: what a GPU VM's extras need from the
// host (a ROM file the hypervisor can read, CPUs to pin to, free hugepages, USB controllers in
// groups of their own) and the arithmetic behind them (cpusets, Looking Glass's shared memory).
// Pure functions over the root's files, so that each check is tested on a sample tree.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/expected.hpp"

namespace gpt {

class Root;
struct Facts;
struct PciDevice;

namespace vm {

// libvirt's cpuset syntax: "2-7,10-15", "0,2,^1" (exclusions). The CPUs in the order written,
// exclusions removed; an error for anything else, or a CPU named twice.
Expected<std::vector<int>> parse_cpuset(std::string_view text);
// The canonical text of a set, as libvirt writes it back: sorted, runs as ranges ("0-3,8").
std::string format_cpuset(std::vector<int> cpus);

// The host's CPUs from /sys/devices/system/cpu: online ones, and for each its SMT siblings.
struct HostCpus {
  std::vector<int> online;
  std::map<int, std::vector<int>> siblings;  // cpu -> thread_siblings_list (itself included)
};
Expected<HostCpus> read_host_cpus(const Root& root);

// Pinning checked against the host: errors for CPUs that are not online, warnings for layouts
// that work but cost performance.
struct PinCheck {
  std::optional<std::string> error;
  std::vector<std::string> warnings;
};
// vcpu_cpus[i] is the host CPU of vCPU i; `threads` the guest's threads per core (vCPUs i and j
// share a guest core when i / threads == j / threads).
PinCheck check_pinning(const HostCpus& host, const std::vector<int>& vcpu_cpus, int threads,
                       const std::vector<int>& emulator, const std::vector<int>& iothreads);

// Looking Glass's shared memory for a resolution: width x height x 4 bytes x 2 frames + 10 MiB,
// rounded up to the next power of two, in MiB.
uint64_t looking_glass_mib(uint64_t width, uint64_t height);

// The user the hypervisor runs guests as: `user` of /etc/libvirt/qemu.conf, else the
// distribution's default (libvirt-qemu on Debian and Ubuntu, qemu elsewhere).
std::string hypervisor_user(const Root& root, const Facts& facts);
// A GPU ROM file: it exists, looks like a PCI option ROM (0x55 0xAA), and `user` can read it
// (every directory on the way searchable). A user missing from /etc/passwd is not checked.
Status check_rom(const Root& root, const std::string& path, const std::string& user);

// `user` in the root's /etc/passwd and `group` in its /etc/group, or an error naming what is missing.
Status check_owner(const Root& root, const std::string& user, const std::string& group);

// Hugepages of one size on the host (/sys/kernel/mm/hugepages, /proc/meminfo).
struct HugepagePool {
  uint64_t size_kib = 0;
  bool default_size = false;  // the size vm.nr_hugepages counts
  uint64_t total = 0, free = 0;
};
// size_kib 0: the default size (Hugepagesize in /proc/meminfo). An error when the host has no
// pool of that size (the kernel does not offer it, or hugepages are off).
Expected<HugepagePool> read_hugepages(const Root& root, uint64_t size_kib);

// The USB controllers (class 0x0c03) a domain takes: "auto" (each one alone in its IOMMU group,
// bridges aside, refused when that would be every USB controller of the host) or the addresses
// given (each must be a USB controller in a group of its own unless `force`). Functions of a
// passed GPU's slot are left out: they go with the GPU.
Expected<std::vector<std::string>> select_usb_controllers(const Facts& facts, const nlohmann::json& spec, bool force,
                                                          const std::vector<std::string>& gpu_functions);

}  // namespace vm
}  // namespace gpt
