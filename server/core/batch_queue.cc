#include "server/core/batch_queue.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace clipserve {

absl::Status ValidateBatchingOptions(const BatchingOptions& options) {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_size must be at least 1, got ", options.max_batch_size));
  }
  if (options.max_queue_delay < absl::ZeroDuration() || options.max_queue_delay == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue_delay must be finite and not negative, got ",
                                                   absl::FormatDuration(options.max_queue_delay)));
  }
  const std::vector<int>& preferred = options.preferred_batch_sizes;
  for (size_t i = 0; i < preferred.size(); ++i) {
    if (preferred[i] < 1 || preferred[i] > options.max_batch_size || (i > 0 && preferred[i] <= preferred[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("preferred_batch_sizes must be strictly ascending, each in [1, ",
                                                     "max_batch_size = ", options.max_batch_size, "], got [",
                                                     absl::StrJoin(preferred, ", "), "]"));
    }
  }
  if (options.max_queue_size < options.max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("max_queue_size (", options.max_queue_size,
                                                   ") must be at least max_batch_size (", options.max_batch_size, ")"));
  }
  if (options.priority_levels < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("priority_levels must be at least 1, got ", options.priority_levels));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BatchQueue>> BatchQueue::Create(const BatchingOptions& options, std::string name) {
  if (absl::Status status = ValidateBatchingOptions(options); !status.ok()) {
    if (name.empty()) return status;
    return absl::InvalidArgumentError(absl::StrCat("lane '", name, "': ", status.message()));
  }
  return std::unique_ptr<BatchQueue>(new BatchQueue(options, std::move(name)));
}

BatchQueue::BatchQueue(const BatchingOptions& options, std::string name)
    : options_(options), name_(std::move(name)), levels_(options.priority_levels) {}

namespace {

std::string Label(const std::string& name) {
  return name.empty() ? std::string("the queue") : absl::StrCat("lane '", name, "'");
}

}  // namespace

absl::Status BatchQueue::Enqueue(std::vector<std::unique_ptr<Task>>* tasks, absl::Time now) {
  if (closed_) {
    return absl::UnavailableError(absl::StrCat("server is shutting down: ", Label(name_), " accepts no new rows"));
  }
  const int rows = static_cast<int>(tasks->size());
  for (int i = 0; i < rows; ++i) {
    const Task* task = (*tasks)[i].get();
    if (task == nullptr) return absl::InvalidArgumentError(absl::StrCat("row ", i, " is null"));
    if (task->answered()) return absl::InvalidArgumentError(absl::StrCat("row ", i, " was already answered"));
    if (task->priority() < 0 || task->priority() >= options_.priority_levels) {
      return absl::InvalidArgumentError(absl::StrCat("row ", i, " has priority ", task->priority(), "; ", Label(name_),
                                                     " has priority levels 0..", options_.priority_levels - 1));
    }
  }
  if (rows > options_.max_queue_size - size_) {
    return absl::ResourceExhaustedError(absl::StrCat(Label(name_), " queue is full: ", size_, " rows queued + ", rows,
                                                     " new > limit ", options_.max_queue_size));
  }
  for (std::unique_ptr<Task>& task : *tasks) {
    task->enqueue_time_ = now;
    if (task->deadline() != absl::InfiniteFuture()) deadlines_.insert(task->deadline());
    levels_[task->priority()].push_back(std::move(task));
  }
  size_ += rows;
  tasks->clear();
  return absl::OkStatus();
}

void BatchQueue::Forget(const Task& task) {
  if (task.deadline() != absl::InfiniteFuture()) deadlines_.erase(deadlines_.find(task.deadline()));
  --size_;
}

void BatchQueue::DropExpired(absl::Time now, std::vector<DroppedTask>* dropped) {
  if (deadlines_.empty() || now < *deadlines_.begin()) return;
  for (std::deque<std::unique_ptr<Task>>& level : levels_) {
    auto keep = level.begin();
    for (auto it = level.begin(); it != level.end(); ++it) {
      Task& task = **it;
      if (now >= task.deadline()) {
        Forget(task);
        dropped->push_back(
            {std::move(*it), absl::DeadlineExceededError(absl::StrCat(
                                 "deadline exceeded after ", absl::FormatDuration(now - task.enqueue_time()),
                                 " in the queue of ", Label(name_), ", before the row ran"))});
      } else {
        if (keep != it) *keep = std::move(*it);
        ++keep;
      }
    }
    level.erase(keep, level.end());
  }
}

void BatchQueue::DropCancelledCandidates(std::vector<DroppedTask>* dropped) {
  int live = 0;
  for (std::deque<std::unique_ptr<Task>>& level : levels_) {
    for (auto it = level.begin(); it != level.end() && live < options_.max_batch_size;) {
      if ((*it)->cancelled()) {
        Forget(**it);
        dropped->push_back({std::move(*it), absl::CancelledError(absl::StrCat("call cancelled before the row ran (",
                                                                              Label(name_), ")"))});
        it = level.erase(it);
      } else {
        ++live;
        ++it;
      }
    }
    if (live >= options_.max_batch_size) return;
  }
}

absl::Time BatchQueue::OldestEnqueueTime() const {
  absl::Time oldest = absl::InfiniteFuture();
  for (const std::deque<std::unique_ptr<Task>>& level : levels_) {
    if (!level.empty()) oldest = std::min(oldest, level.front()->enqueue_time());
  }
  return oldest;
}

int BatchQueue::ReadyBatchSize(absl::Time now) const {
  if (size_ == 0) return 0;
  if (size_ >= options_.max_batch_size) return options_.max_batch_size;
  if (!options_.preferred_batch_sizes.empty() && size_ >= options_.preferred_batch_sizes.back()) {
    return options_.preferred_batch_sizes.back();
  }
  if (closed_ || now - OldestEnqueueTime() >= options_.max_queue_delay) return size_;
  return 0;
}

std::vector<std::unique_ptr<Task>> BatchQueue::TakeReadyBatch(absl::Time now, std::vector<DroppedTask>* dropped) {
  std::vector<std::unique_ptr<Task>> batch;
  if (size_ == 0) return batch;
  DropExpired(now, dropped);
  DropCancelledCandidates(dropped);
  const int n = ReadyBatchSize(now);
  if (n == 0) return batch;
  // The first n candidates are live: DropCancelledCandidates walked at least min(size_, max_batch_size) of them.
  batch.reserve(n);
  for (std::deque<std::unique_ptr<Task>>& level : levels_) {
    while (!level.empty() && static_cast<int>(batch.size()) < n) {
      Forget(*level.front());
      batch.push_back(std::move(level.front()));
      level.pop_front();
    }
  }
  return batch;
}

absl::Time BatchQueue::NextEventTime(absl::Time now) const {
  if (size_ == 0) return absl::InfiniteFuture();
  if (ReadyBatchSize(now) > 0) return now;
  absl::Time next = OldestEnqueueTime() + options_.max_queue_delay;
  if (!deadlines_.empty()) next = std::min(next, *deadlines_.begin());
  return std::max(next, now);
}

void BatchQueue::DropAll(const absl::Status& status, std::vector<DroppedTask>* dropped) {
  for (std::deque<std::unique_ptr<Task>>& level : levels_) {
    for (std::unique_ptr<Task>& task : level) dropped->push_back({std::move(task), status});
    level.clear();
  }
  deadlines_.clear();
  size_ = 0;
}

}  // namespace clipserve
