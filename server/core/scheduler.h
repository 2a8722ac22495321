// Lanes (one queue and runner per model entry point) and the Scheduler that hands their ready batches to the
// workers of one device.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/core/batch_queue.h"
#include "server/core/clock.h"
#include "server/core/lane_observer.h"
#include "server/core/task.h"

namespace clipserve {

class Scheduler;

// Runs one batch: fills each row's result and returns OK, or returns the error that fails the whole batch (it
// may also Answer() single rows to fail them alone). Rows come in the order they should be answered (priority,
// then FIFO); the worker answers every row the runner did not. Called on worker threads, concurrently when the
// device has several worker instances. An exception that escapes becomes INTERNAL for the batch.
using BatchRunner = std::function<absl::Status(absl::Span<Task* const> batch)>;

struct LaneOptions {
  // Unique within the scheduler, e.g. "clip-b32/text"; labels messages and metrics.
  std::string name;
  BatchingOptions batching;
  BatchRunner runner;                      // required
  std::shared_ptr<LaneObserver> observer;  // optional
};

// One queue with its batching policy and runner, e.g. the text tower of one model. Owned by its Scheduler
// (Scheduler::AddLane) and valid until the scheduler is destroyed. Thread-safe; Enqueue never blocks beyond a
// short critical section.
class Lane {
 public:
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  // Queues all rows of one call, in order, or none: ownership of the tasks moves to the lane (and `*tasks` is
  // cleared) only if this returns OK; otherwise the caller keeps them, unanswered, and answers the call with
  // the status: UNAVAILABLE "server is shutting down" after StopAccepting, RESOURCE_EXHAUSTED when the rows do
  // not all fit under max_queue_size, INVALID_ARGUMENT for a bad priority or a null task. Wakes a worker if the
  // lane became ready sooner.
  absl::Status Enqueue(std::vector<std::unique_ptr<Task>>* tasks);

  const std::string& name() const { return name_; }
  const BatchingOptions& batching() const { return batching_; }
  // Rows queued and not yet running.
  int queue_depth() const;

 private:
  friend class Scheduler;
  friend class Batch;

  Lane(Scheduler* scheduler, const LaneOptions& options, std::unique_ptr<BatchQueue> queue);

  Scheduler* const scheduler_;
  const std::string name_;
  const BatchingOptions batching_;
  const BatchRunner runner_;
  const std::shared_ptr<LaneObserver> observer_;  // never null
  // Guarded by scheduler_->mu_.
  const std::unique_ptr<BatchQueue> queue_;
};

// A batch taken from a lane by a worker: owns its rows until they are answered. Run() executes it; the
// destructor is the guard that answers every row still unanswered INTERNAL (a batch dropped on an error path)
// and then tells the scheduler the batch is over (Drain waits for that). Used by one thread at a time; must be
// destroyed before its Scheduler.
class Batch {
 public:
  ~Batch();
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  // Calls the lane's runner, then answers each row it did not answer: OK, or the runner's error, or INTERNAL if
  // it threw. Reports OnBatchStart/OnBatchEnd to the lane's observer. Returns the batch's status. Call once
  // (a second call returns FAILED_PRECONDITION and runs nothing). Blocks for as long as the runner does.
  absl::Status Run();

  Lane& lane() const { return *lane_; }
  absl::Span<Task* const> tasks() const { return rows_; }
  int size() const { return static_cast<int>(rows_.size()); }
  // How long each row waited in the queue, when the batch was taken.
  absl::Span<const absl::Duration> queue_times() const { return queue_times_; }

 private:
  friend class Scheduler;

  Batch(Lane* lane, std::vector<std::unique_ptr<Task>> tasks, absl::Time now);

  Lane* const lane_;
  std::vector<std::unique_ptr<Task>> owned_;
  std::vector<Task*> rows_;
  std::vector<absl::Duration> queue_times_;
  bool ran_ = false;
};

struct SchedulerOptions {
  // Not owned; must outlive the scheduler. Null: Clock::Real().
  Clock* clock = nullptr;
};

// The lanes of one device and the choice of the next batch: workers call NextBatch(), which blocks until some
// lane has a ready batch (waiting on the clock until the earliest dispatch time or deadline, woken by
// Enqueue; no polling) and serves ready lanes round-robin. Rows that expire or are cancelled while queued are
// answered by the thread that notices them, outside the lock.
//
// Shutdown has three phases: StopAccepting() (Enqueue answers UNAVAILABLE; queued rows dispatch without
// waiting for max_queue_delay), Drain(deadline) (waits for the queues to empty and running batches to end,
// then fails what is left UNAVAILABLE), Stop() (NextBatch returns null; workers exit). The destructor calls
// Stop(), answering anything still queued; it must run after every worker that pulls from this scheduler has
// been joined and every Batch destroyed. Thread-safe; one mutex.
class Scheduler {
 public:
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Adds a lane; INVALID_ARGUMENT for bad batching options, an empty or duplicate name or a missing runner,
  // FAILED_PRECONDITION once shutdown has begun.
  absl::StatusOr<Lane*> AddLane(const LaneOptions& options);
  // Null if there is no lane of that name.
  Lane* FindLane(absl::string_view name) const;

  // Blocks until a batch is ready and returns it, or returns null once Stop() has been called.
  std::unique_ptr<Batch> NextBatch() { return NextBatchUntil(absl::InfiniteFuture()); }
  // Like NextBatch, but gives up (null) at `deadline` on the scheduler's clock. Past deadline: never waits.
  std::unique_ptr<Batch> NextBatchUntil(absl::Time deadline);
  // Non-blocking: the batch ready now, or null.
  std::unique_ptr<Batch> TryNextBatch() { return NextBatchUntil(absl::InfinitePast()); }

  // Phase 1: refuse new rows. Idempotent.
  void StopAccepting();
  // Phase 2: calls StopAccepting, then blocks until no row is queued and no batch is running, or until
  // `deadline` on the scheduler's clock; at the deadline, rows still queued are answered UNAVAILABLE and the
  // result is DEADLINE_EXCEEDED saying how many (batches already running are left to finish).
  absl::Status Drain(absl::Time deadline);
  // Phase 3: answers every queued row UNAVAILABLE and makes NextBatch return null from now on, waking the
  // workers that wait in it. Does not wait for running batches (WorkerPool::Stop joins its workers). Idempotent.
  void Stop();

  Clock* clock() const { return clock_; }
  // Batches taken and not yet destroyed.
  int batches_in_flight() const;

 private:
  friend class Lane;
  friend class Batch;

  struct Dropped {
    Lane* lane;
    DroppedTask row;
  };

  explicit Scheduler(Clock* clock);

  std::unique_ptr<Batch> TakeReadyBatchLocked(absl::Time now, std::vector<Dropped>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time NextEventTimeLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropAllLocked(const absl::Status& status, std::vector<Dropped>* dropped) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reports and answers dropped rows; call without mu_ held.
  static void AnswerDropped(std::vector<Dropped>* dropped);
  void BatchDone();

  Clock* const clock_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Lane>> lanes_ ABSL_GUARDED_BY(mu_);
  // Round-robin position: the lane tried first by the next TakeReadyBatchLocked.
  size_t next_lane_ ABSL_GUARDED_BY(mu_) = 0;
  // Bumped by every change a waiting worker must look at (a lane became ready sooner, shutdown).
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace clipserve
