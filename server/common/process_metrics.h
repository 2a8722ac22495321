// The standard process metrics of Prometheus client libraries, computed at scrape time from /proc and
// getrusage (Linux).
#pragma once

#include "absl/status/status.h"
#include "server/common/metrics.h"

namespace clipserve::metrics {

// Registers callback metrics with the standard names:
//   process_cpu_seconds_total       user + system CPU time (counter)
//   process_resident_memory_bytes   resident set size (gauge, /proc/self/statm)
//   process_virtual_memory_bytes    virtual memory size (gauge, /proc/self/statm)
//   process_start_time_seconds      start time since the Unix epoch (gauge, /proc/self/stat + /proc/stat btime)
//   process_open_fds                open file descriptors (gauge, /proc/self/fd)
//   process_max_fds                 the soft RLIMIT_NOFILE (gauge)
// A value that cannot be read is exported as NaN. ALREADY_EXISTS if they are already registered.
absl::Status AddProcessMetrics(Registry* registry);

}  // namespace clipserve::metrics
