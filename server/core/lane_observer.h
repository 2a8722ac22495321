// Per-lane events for metrics, without a dependency on a metrics library.
#pragma once

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace clipserve {

// Receives a lane's events; the service implements it with Prometheus counters and histograms. The default
// methods do nothing. Called on the thread that caused the event (Enqueue's caller; a worker; the thread that
// drains or stops), with no lock of the core held, possibly from several threads at once: implementations must
// be thread-safe and must not block. Shared by the lane (LaneOptions::observer), so it lives as long as the lane.
class LaneObserver {
 public:
  virtual ~LaneObserver() = default;

  // A call's `rows` were accepted; `queue_depth` rows are now queued in the lane (not yet running).
  virtual void OnEnqueue(int /*rows*/, int /*queue_depth*/) {}
  // One accepted row was answered without running: DEADLINE_EXCEEDED, CANCELLED or UNAVAILABLE.
  virtual void OnDrop(absl::StatusCode /*code*/) {}
  // A worker starts a batch of `batch_size` rows that waited `queue_times` (one per row) in the queue.
  virtual void OnBatchStart(int /*batch_size*/, absl::Span<const absl::Duration> /*queue_times*/) {}
  // The runner returned `status` for the batch after `compute_time`.
  virtual void OnBatchEnd(int /*batch_size*/, absl::Duration /*compute_time*/, const absl::Status& /*status*/) {}
};

}  // namespace clipserve
