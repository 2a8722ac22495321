#include "server/core/thread_pool.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace clipserve {

absl::StatusOr<std::unique_ptr<ThreadPool>> ThreadPool::Create(const ThreadPoolOptions& options) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.name, ": num_threads must be at least 1, got ", options.num_threads));
  }
  if (options.max_queue_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.name, ": max_queue_size must not be negative, got ", options.max_queue_size));
  }
  return std::unique_ptr<ThreadPool>(new ThreadPool(options));
}

ThreadPool::ThreadPool(const ThreadPoolOptions& options) : options_(options) {
  threads_.reserve(options.num_threads);
  for (int i = 0; i < options.num_threads; ++i) threads_.emplace_back(&ThreadPool::WorkLoop, this);
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

absl::Status ThreadPool::Schedule(absl::AnyInvocable<void()> fn) {
  if (!fn) return absl::InvalidArgumentError(absl::StrCat(options_.name, ": cannot schedule an empty function"));
  absl::MutexLock lock(&mu_);
  if (options_.max_queue_size > 0 && static_cast<int>(queue_.size()) >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(absl::StrCat(options_.name, " queue is full: ", queue_.size(),
                                                     " closures waiting, limit ", options_.max_queue_size));
  }
  queue_.push_back(std::move(fn));
  return absl::OkStatus();
}

int ThreadPool::queue_size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void ThreadPool::WorkLoop() {
  while (true) {
    absl::AnyInvocable<void()> fn;
    {
      absl::MutexLock lock(&mu_, absl::Condition(this, &ThreadPool::WorkOrStopping));
      if (queue_.empty()) return;  // stopping, and nothing left to run
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

}  // namespace clipserve
