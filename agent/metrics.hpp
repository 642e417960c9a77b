// A run's outcome as node_exporter's textfile collector reads it (Prometheus text exposition
// format), so a Prometheus already watching the fleet sees drift.
#pragma once

#include <string>
#include <string_view>

#include "agent/expected.hpp"

namespace gpt {

class Root;
struct LastRun;

// A label value as the exposition format quotes it: backslash, double quote and line feed
// escaped, and any byte that is no part of valid UTF-8 replaced by U+FFFD (the collector refuses
// a whole file for one invalid label).
std::string prometheus_label_value(std::string_view text);

// The metrics of one run, HELP and TYPE lines included:
//   gptagent_drift{playbook}, gptagent_tasks{playbook,status}, gptagent_last_run_timestamp_seconds,
//   gptagent_last_run_duration_seconds, gptagent_last_run_exit_code, gptagent_waiting_for_reboot.
std::string run_metrics(const LastRun& run);

// Replaces `path` (a host path, under the root) with the run's metrics: a temp file of its own in
// the same directory, fsync, rename, mode 0644. A symlink at `path` is refused, never followed; so
// is a directory that its group or others may write into without the sticky bit, or none at all.
Status write_textfile(const Root& root, std::string_view path, const LastRun& run);

}  // namespace gpt
