// The batching policy of one lane, as a data structure with no threads and no locks: what is queued, and which
// batch (if any) is ready at a given time. Triton's dynamic batcher and TF Serving's batch scheduler are the
// references.
#pragma once

#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/task.h"

namespace clipserve {

struct BatchingOptions {
  // Rows in one batch at most.
  int max_batch_size = 8;
  // A queue holding fewer rows than a full (or preferred) batch dispatches what it has once its oldest row has
  // waited this long. Zero dispatches at once.
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  // Optional, strictly ascending, each in [1, max_batch_size]: a queue holding at least the largest preferred
  // size dispatches that many rows without waiting for max_queue_delay.
  std::vector<int> preferred_batch_sizes;
  // Rows queued and not yet running, at most; a call whose rows do not all fit is refused RESOURCE_EXHAUSTED.
  // At least max_batch_size.
  int max_queue_size = 256;
  // Task::priority() is in [0, priority_levels); 0 goes first.
  int priority_levels = 1;
};

// INVALID_ARGUMENT naming the first field that is out of range.
absl::Status ValidateBatchingOptions(const BatchingOptions& options);

// A row removed before it could run, with the answer it is owed.
struct DroppedTask {
  std::unique_ptr<Task> task;
  absl::Status status;
};

// The queue and batch formation of one lane. Formation is a pure function of the queue's contents (including
// the rows' cancellation flags) and the `now` passed in, so tests can check it exactly with explicit times.
//
// A queue is ready when it holds at least max_batch_size rows (the batch takes max_batch_size), or at least the
// largest preferred size (it takes that size), or when its oldest row has waited max_queue_delay, or once it is
// closed (it takes min(queued, max_batch_size)). Rows leave in priority order, FIFO within a priority, so the
// rows of one call keep their order. Rows whose deadline has passed or whose call was cancelled are removed
// before a batch is formed and handed back as DroppedTask, never counted in a batch; a batch is formed only
// when TakeReadyBatch is called, so it grows until then. Expired rows are found anywhere in the queue; a
// cancelled row is noticed when it is among the next max_batch_size candidates or at the next event time.
//
// The queue never calls Task::Answer; the caller answers dropped rows (outside its locks). Not thread-safe: the
// owner serialises calls (the Scheduler does, under its mutex).
class BatchQueue {
 public:
  // `name` only labels status messages ("lane 'clip/text'").
  static absl::StatusOr<std::unique_ptr<BatchQueue>> Create(const BatchingOptions& options, std::string name = "");

  // Appends all of `*tasks` (in order) and clears the vector, or appends none and leaves it untouched:
  // UNAVAILABLE once closed, INVALID_ARGUMENT for a null, already answered or out-of-range priority task,
  // RESOURCE_EXHAUSTED if they do not all fit under max_queue_size. Sets each task's enqueue time to `now`.
  // An empty vector is OK and changes nothing.
  absl::Status Enqueue(std::vector<std::unique_ptr<Task>>* tasks, absl::Time now);

  // Removes rows that have expired (DEADLINE_EXCEEDED) or were cancelled (CANCELLED) into `*dropped`, then
  // returns the ready batch at `now`, in the order the rows should run, or an empty vector if none is ready.
  std::vector<std::unique_ptr<Task>> TakeReadyBatch(absl::Time now, std::vector<DroppedTask>* dropped);

  // When TakeReadyBatch should be called next: `now` if a batch is ready or a deadline has passed, else the
  // earlier of the oldest row's dispatch time (enqueue time + max_queue_delay) and the nearest deadline;
  // InfiniteFuture when the queue is empty. Exact right after TakeReadyBatch(now) (which purges cancelled rows).
  absl::Time NextEventTime(absl::Time now) const;

  // After Close, Enqueue is refused UNAVAILABLE and whatever is queued is ready at once (a final flush).
  void Close() { closed_ = true; }
  bool closed() const { return closed_; }

  // Removes every queued row into `*dropped`, each owed `status`.
  void DropAll(const absl::Status& status, std::vector<DroppedTask>* dropped);

  int size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const BatchingOptions& options() const { return options_; }
  const std::string& name() const { return name_; }

 private:
  BatchQueue(const BatchingOptions& options, std::string name);

  // Batch size ready at `now`, 0 if none. Assumes the candidates are purged of cancelled rows.
  int ReadyBatchSize(absl::Time now) const;
  absl::Time OldestEnqueueTime() const;
  void DropExpired(absl::Time now, std::vector<DroppedTask>* dropped);
  void DropCancelledCandidates(std::vector<DroppedTask>* dropped);
  // Bookkeeping for a row leaving the queue.
  void Forget(const Task& task);

  const BatchingOptions options_;
  const std::string name_;
  // One FIFO per priority level.
  std::vector<std::deque<std::unique_ptr<Task>>> levels_;
  // Finite deadlines of the queued rows.
  std::multiset<absl::Time> deadlines_;
  int size_ = 0;
  bool closed_ = false;
};

}  // namespace clipserve
