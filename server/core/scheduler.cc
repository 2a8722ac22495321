#include "server/core/scheduler.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"

namespace clipserve {

// ---------------------------------------------------------------------------------------------------------------
// Lane

Lane::Lane(Scheduler* scheduler, const LaneOptions& options, std::unique_ptr<BatchQueue> queue)
    : scheduler_(scheduler),
      name_(options.name),
      batching_(options.batching),
      runner_(options.runner),
      observer_(options.observer != nullptr ? options.observer : std::make_shared<LaneObserver>()),
      queue_(std::move(queue)) {}

absl::Status Lane::Enqueue(std::vector<std::unique_ptr<Task>>* tasks) {
  const int rows = static_cast<int>(tasks->size());
  int depth = 0;
  {
    absl::MutexLock lock(&scheduler_->mu_);
    const absl::Time now = scheduler_->clock_->Now();
    const absl::Time before = queue_->NextEventTime(now);
    if (absl::Status status = queue_->Enqueue(tasks, now); !status.ok()) return status;
    depth = queue_->size();
    // Waiting workers sleep until the earliest event of all lanes, which was at most `before`: they need waking
    // only if this lane's next event moved earlier (it became ready, or got its first row or an earlier deadline).
    if (queue_->NextEventTime(now) < before) ++scheduler_->version_;
  }
  if (rows > 0) observer_->OnEnqueue(rows, depth);
  return absl::OkStatus();
}

int Lane::queue_depth() const {
  absl::MutexLock lock(&scheduler_->mu_);
  return queue_->size();
}

// ---------------------------------------------------------------------------------------------------------------
// Batch

Batch::Batch(Lane* lane, std::vector<std::unique_ptr<Task>> tasks, absl::Time now)
    : lane_(lane), owned_(std::move(tasks)) {
  rows_.reserve(owned_.size());
  queue_times_.reserve(owned_.size());
  for (const std::unique_ptr<Task>& task : owned_) {
    rows_.push_back(task.get());
    queue_times_.push_back(now - task->enqueue_time());
  }
}

Batch::~Batch() {
  for (Task* task : rows_) {
    task->Answer(absl::InternalError(
        absl::StrCat("lane '", lane_->name(), "': the batch was released without an answer for this row")));
  }
  rows_.clear();
  owned_.clear();
  lane_->scheduler_->BatchDone();
}

absl::Status Batch::Run() {
  if (ran_) return absl::FailedPreconditionError("Batch::Run called twice");
  ran_ = true;
  LaneObserver& observer = *lane_->observer_;
  Clock* clock = lane_->scheduler_->clock_;
  observer.OnBatchStart(size(), queue_times_);
  const absl::Time start = clock->Now();
  absl::Status status;
  try {
    status = lane_->runner_(rows_);
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("lane '", lane_->name(), "': the runner threw: ", e.what()));
  } catch (...) {
    status = absl::InternalError(absl::StrCat("lane '", lane_->name(), "': the runner threw a non-standard exception"));
  }
  const absl::Duration compute_time = clock->Now() - start;
  for (Task* task : rows_) task->Answer(status);
  observer.OnBatchEnd(size(), compute_time, status);
  return status;
}

// ---------------------------------------------------------------------------------------------------------------
// Scheduler

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& options) {
  return std::unique_ptr<Scheduler>(new Scheduler(options.clock != nullptr ? options.clock : Clock::Real()));
}

Scheduler::Scheduler(Clock* clock) : clock_(clock) { clock_->AddWaiter(&mu_); }

Scheduler::~Scheduler() {
  Stop();
  clock_->RemoveWaiter(&mu_);
}

absl::StatusOr<Lane*> Scheduler::AddLane(const LaneOptions& options) {
  if (options.name.empty()) return absl::InvalidArgumentError("a lane needs a name");
  if (!options.runner) return absl::InvalidArgumentError(absl::StrCat("lane '", options.name, "' has no runner"));
  absl::StatusOr<std::unique_ptr<BatchQueue>> queue = BatchQueue::Create(options.batching, options.name);
  if (!queue.ok()) return queue.status();
  absl::MutexLock lock(&mu_);
  if (!accepting_) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot add lane '", options.name, "': the scheduler is shutting down"));
  }
  for (const std::unique_ptr<Lane>& lane : lanes_) {
    if (lane->name() == options.name) {
      return absl::InvalidArgumentError(absl::StrCat("lane '", options.name, "' already exists"));
    }
  }
  lanes_.push_back(std::unique_ptr<Lane>(new Lane(this, options, *std::move(queue))));
  return lanes_.back().get();
}

Lane* Scheduler::FindLane(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  for (const std::unique_ptr<Lane>& lane : lanes_) {
    if (lane->name() == name) return lane.get();
  }
  return nullptr;
}

int Scheduler::batches_in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

std::unique_ptr<Batch> Scheduler::TakeReadyBatchLocked(absl::Time now, std::vector<Dropped>* dropped) {
  std::vector<DroppedTask> lane_dropped;
  const size_t n = lanes_.size();
  for (size_t i = 0; i < n; ++i) {
    const size_t index = (next_lane_ + i) % n;
    Lane* lane = lanes_[index].get();
    std::vector<std::unique_ptr<Task>> tasks = lane->queue_->TakeReadyBatch(now, &lane_dropped);
    for (DroppedTask& row : lane_dropped) dropped->push_back({lane, std::move(row)});
    lane_dropped.clear();
    if (!tasks.empty()) {
      next_lane_ = (index + 1) % n;
      ++in_flight_;
      return std::unique_ptr<Batch>(new Batch(lane, std::move(tasks), now));
    }
  }
  return nullptr;
}

absl::Time Scheduler::NextEventTimeLocked(absl::Time now) const {
  absl::Time next = absl::InfiniteFuture();
  for (const std::unique_ptr<Lane>& lane : lanes_) next = std::min(next, lane->queue_->NextEventTime(now));
  return next;
}

bool Scheduler::IdleLocked() const {
  if (in_flight_ > 0) return false;
  for (const std::unique_ptr<Lane>& lane : lanes_) {
    if (!lane->queue_->empty()) return false;
  }
  return true;
}

void Scheduler::DropAllLocked(const absl::Status& status, std::vector<Dropped>* dropped) {
  std::vector<DroppedTask> lane_dropped;
  for (const std::unique_ptr<Lane>& lane : lanes_) {
    lane->queue_->DropAll(status, &lane_dropped);
    for (DroppedTask& row : lane_dropped) dropped->push_back({lane.get(), std::move(row)});
    lane_dropped.clear();
  }
}

void Scheduler::AnswerDropped(std::vector<Dropped>* dropped) {
  for (Dropped& d : *dropped) {
    d.lane->observer_->OnDrop(d.row.status.code());
    d.row.task->Answer(std::move(d.row.status));
  }
  dropped->clear();  // destroys the answered tasks
}

std::unique_ptr<Batch> Scheduler::NextBatchUntil(absl::Time deadline) {
  std::vector<Dropped> dropped;
  while (true) {
    std::unique_ptr<Batch> batch;
    bool give_up = false;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = clock_->Now();
      if (stopped_) {
        give_up = true;
      } else {
        batch = TakeReadyBatchLocked(now, &dropped);
        if (batch == nullptr && dropped.empty()) {
          if (now >= deadline) {
            give_up = true;
          } else {
            const int64_t seen = version_;
            auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return version_ != seen; };
            clock_->AwaitWithDeadline(&mu_, absl::Condition(&changed), std::min(NextEventTimeLocked(now), deadline));
            continue;  // look again, whatever woke us
          }
        }
      }
    }
    // Rows dropped on the way are answered outside the lock; then look again (unless a batch is in hand).
    AnswerDropped(&dropped);
    if (batch != nullptr) return batch;
    if (give_up) return nullptr;
  }
}

void Scheduler::StopAccepting() {
  absl::MutexLock lock(&mu_);
  if (!accepting_) return;
  accepting_ = false;
  for (const std::unique_ptr<Lane>& lane : lanes_) lane->queue_->Close();
  ++version_;  // partial batches are ready now
}

absl::Status Scheduler::Drain(absl::Time deadline) {
  StopAccepting();
  std::vector<Dropped> dropped;
  int running = 0;
  {
    absl::MutexLock lock(&mu_);
    if (clock_->AwaitWithDeadline(&mu_, absl::Condition(this, &Scheduler::IdleLocked), deadline)) {
      return absl::OkStatus();
    }
    DropAllLocked(absl::UnavailableError("server is shutting down: the drain deadline passed before the row ran"),
                  &dropped);
    running = in_flight_;
  }
  const size_t queued = dropped.size();
  AnswerDropped(&dropped);
  return absl::DeadlineExceededError(absl::StrCat(
      "drain deadline passed: ", queued, " queued rows answered UNAVAILABLE, ", running, " batches still running"));
}

void Scheduler::Stop() {
  std::vector<Dropped> dropped;
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    for (const std::unique_ptr<Lane>& lane : lanes_) lane->queue_->Close();
    DropAllLocked(absl::UnavailableError("server is shutting down: the lane stopped before the row ran"), &dropped);
    if (!stopped_) {
      stopped_ = true;
      ++version_;
    }
  }
  AnswerDropped(&dropped);
}

void Scheduler::BatchDone() {
  absl::MutexLock lock(&mu_);
  --in_flight_;
}

}  // namespace clipserve
