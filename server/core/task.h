// One row of work for a lane, and the flag that cancels every row of one call.
#pragma once

#include <atomic>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace clipserve {

// Set once by whoever serves a call (e.g. when its client goes away); read by the lanes, which answer the
// call's rows that have not started CANCELLED instead of running them. Rows hold it as
// shared_ptr<const CancellationFlag>, the service keeps a non-const one. Thread-safe, never blocks.
class CancellationFlag {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_release); }
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

 private:
  std::atomic<bool> cancelled_{false};
};

// One row of work (an image, a text, a generation step): the service layer subclasses it with its payload and
// a slot for the result, sets deadline/priority/cancellation, and hands it to Lane::Enqueue. Ownership moves
// to the lane only if Enqueue returns OK; from then on the core answers the task exactly once through Finish():
// OK once the lane's runner has filled the result, the runner's error if its batch failed, DEADLINE_EXCEEDED or
// CANCELLED if it expired or its call was cancelled before it ran, UNAVAILABLE if the lane shut down first,
// INTERNAL if a batch was released without an answer. The core destroys the task right after Finish returns.
// The setters are for the owner before Enqueue; after that only the core touches the task (a runner may
// Answer() one of its rows early to fail it alone).
class Task {
 public:
  Task() = default;
  virtual ~Task() = default;
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;

  // Rows still queued at this time are answered DEADLINE_EXCEEDED instead of running.
  absl::Time deadline() const { return deadline_; }
  void set_deadline(absl::Time deadline) { deadline_ = deadline; }

  // 0 is the highest; must be below the lane's BatchingOptions::priority_levels.
  int priority() const { return priority_; }
  void set_priority(int priority) { priority_ = priority; }

  // Shared by every row of one call; null means the call cannot be cancelled.
  const std::shared_ptr<const CancellationFlag>& cancellation() const { return cancellation_; }
  void set_cancellation(std::shared_ptr<const CancellationFlag> flag) { cancellation_ = std::move(flag); }
  bool cancelled() const { return cancellation_ != nullptr && cancellation_->cancelled(); }

  // When the lane accepted the task (on the lane's clock); InfinitePast before that.
  absl::Time enqueue_time() const { return enqueue_time_; }

  // Calls Finish(status) if the task has not been answered yet and returns true; otherwise does nothing and
  // returns false. Thread-safe; the core calls it, a runner may call it on a row of its batch.
  bool Answer(absl::Status status) {
    if (answered_.exchange(true, std::memory_order_acq_rel)) return false;
    Finish(std::move(status));
    return true;
  }
  bool answered() const { return answered_.load(std::memory_order_acquire); }

 protected:
  // Receives the task's one answer. Runs on a worker thread, or on the thread that enqueued, drained or
  // stopped the lane; never with a lock of the core held. Must not block for long; may enqueue new work.
  virtual void Finish(absl::Status status) = 0;

 private:
  friend class BatchQueue;

  absl::Time enqueue_time_ = absl::InfinitePast();
  absl::Time deadline_ = absl::InfiniteFuture();
  int priority_ = 0;
  std::shared_ptr<const CancellationFlag> cancellation_;
  std::atomic<bool> answered_{false};
};

}  // namespace clipserve
