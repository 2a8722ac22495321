// Fakes for the serving core: a task that records how it was answered, and a runner that records batches.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/core/task.h"

namespace clipserve::testing {

// Thread-safe record of the answers (Finish calls) and destructions of CountingTasks. Outlives its tasks.
class TaskLog {
 public:
  struct Answer {
    int id;
    absl::Status status;
  };

  void RecordFinish(int id, const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    answers_.push_back({id, status});
    ++finish_calls_[id];
  }
  void RecordDestroyed() {
    absl::MutexLock lock(&mu_);
    ++destroyed_;
  }

  std::vector<Answer> answers() const {
    absl::MutexLock lock(&mu_);
    return answers_;
  }
  int num_answers() const {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(answers_.size());
  }
  int num_destroyed() const {
    absl::MutexLock lock(&mu_);
    return destroyed_;
  }
  int finish_calls(int id) const {
    absl::MutexLock lock(&mu_);
    auto it = finish_calls_.find(id);
    return it == finish_calls_.end() ? 0 : it->second;
  }
  // The status of the first answer of `id`, if any.
  std::optional<absl::Status> status(int id) const {
    absl::MutexLock lock(&mu_);
    for (const Answer& a : answers_) {
      if (a.id == id) return a.status;
    }
    return std::nullopt;
  }
  // Ids answered with `code`, in answer order.
  std::vector<int> IdsWithCode(absl::StatusCode code) const {
    absl::MutexLock lock(&mu_);
    std::vector<int> ids;
    for (const Answer& a : answers_) {
      if (a.status.code() == code) ids.push_back(a.id);
    }
    return ids;
  }
  // Blocks (real time, at most `timeout`) until at least `n` answers were recorded.
  bool WaitForAnswers(int n, absl::Duration timeout = absl::Seconds(10)) const {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return static_cast<int>(answers_.size()) >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Answer> answers_ ABSL_GUARDED_BY(mu_);
  std::map<int, int> finish_calls_ ABSL_GUARDED_BY(mu_);
  int destroyed_ ABSL_GUARDED_BY(mu_) = 0;
};

// A task with an id that records its Finish calls and its destruction in a TaskLog.
class CountingTask : public Task {
 public:
  CountingTask(int id, TaskLog* log) : id_(id), log_(log) {}
  ~CountingTask() override { log_->RecordDestroyed(); }
  int id() const { return id_; }

 protected:
  void Finish(absl::Status status) override { log_->RecordFinish(id_, status); }

 private:
  const int id_;
  TaskLog* const log_;
};

inline int IdOf(const Task* task) { return static_cast<const CountingTask*>(task)->id(); }

inline std::vector<int> IdsOf(absl::Span<Task* const> tasks) {
  std::vector<int> ids;
  for (const Task* task : tasks) ids.push_back(IdOf(task));
  return ids;
}
inline std::vector<int> IdsOf(const std::vector<std::unique_ptr<Task>>& tasks) {
  std::vector<int> ids;
  for (const auto& task : tasks) ids.push_back(IdOf(task.get()));
  return ids;
}

struct TaskSpec {
  absl::Time deadline = absl::InfiniteFuture();
  int priority = 0;
  std::shared_ptr<const CancellationFlag> cancellation = nullptr;
};

// CountingTasks with ids first .. first+n-1, all with `spec`.
inline std::vector<std::unique_ptr<Task>> MakeTasks(TaskLog* log, int first, int n, const TaskSpec& spec = {}) {
  std::vector<std::unique_ptr<Task>> tasks;
  for (int i = 0; i < n; ++i) {
    auto task = std::make_unique<CountingTask>(first + i, log);
    task->set_deadline(spec.deadline);
    task->set_priority(spec.priority);
    task->set_cancellation(spec.cancellation);
    tasks.push_back(std::move(task));
  }
  return tasks;
}

// A thread-safe runner that records the ids of each batch it ran and returns `result(ids)` (OK by default).
class RecordingRunner {
 public:
  std::function<absl::Status(absl::Span<Task* const>)> AsRunner() {
    return [this](absl::Span<Task* const> batch) {
      std::vector<int> ids = IdsOf(batch);
      std::function<absl::Status(const std::vector<int>&)> result;
      {
        absl::MutexLock lock(&mu_);
        batches_.push_back(ids);
        result = result_;
      }
      return result ? result(ids) : absl::OkStatus();
    };
  }
  void set_result(std::function<absl::Status(const std::vector<int>&)> result) {
    absl::MutexLock lock(&mu_);
    result_ = std::move(result);
  }
  std::vector<std::vector<int>> batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }
  std::vector<int> batch_sizes() const {
    absl::MutexLock lock(&mu_);
    std::vector<int> sizes;
    for (const auto& b : batches_) sizes.push_back(static_cast<int>(b.size()));
    return sizes;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::vector<int>> batches_ ABSL_GUARDED_BY(mu_);
  std::function<absl::Status(const std::vector<int>&)> result_ ABSL_GUARDED_BY(mu_);
};

}  // namespace clipserve::testing
