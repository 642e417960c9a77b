// `gptagent facts`: the table people read, and --capture, the copy of what the agent reads that a
// user attaches to a bug report and tests replay.
#pragma once

#include <ostream>
#include <string>

#include "agent/expected.hpp"
#include "agent/facts.hpp"

namespace gpt {

class Root;

// Names from the host's pci.ids (pciutils or hwdata), when it has one.
void name_devices_from_host(const Root& root, Facts& facts);
void print_facts_table(std::ostream& out, const Facts& facts);
// Copies the files and links under /proc, /sys (and os-release, modules.builtin, the boot tools'
// presence) that gather_facts reads into `dest`, keeping sysfs links relative as the kernel has them.
Expected<int> capture_facts(const Root& root, const std::string& dest);

}  // namespace gpt
