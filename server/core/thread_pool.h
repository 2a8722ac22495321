// A fixed-size pool of threads for CPU work (decoding, preprocessing, tokenising, encoding frames).
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace clipserve {

struct ThreadPoolOptions {
  int num_threads = 1;
  // Closures waiting for a thread, at most; Schedule refuses more with RESOURCE_EXHAUSTED, so the service can
  // turn work away instead of growing memory without bound. 0: unbounded.
  int max_queue_size = 0;
  // Labels status messages.
  std::string name = "thread pool";
};

// `num_threads` threads running scheduled closures in FIFO order (Abseil's internal ThreadPool is the model).
// Schedule may be called from any thread, including a pool thread, and never blocks beyond a short critical
// section. The destructor runs every closure already queued, then joins the threads; it must not be called
// from a pool thread. Closures must not throw.
class ThreadPool {
 public:
  static absl::StatusOr<std::unique_ptr<ThreadPool>> Create(const ThreadPoolOptions& options);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn`, or returns RESOURCE_EXHAUSTED (the queue is at max_queue_size; `fn` is dropped uncalled) or
  // INVALID_ARGUMENT (empty `fn`).
  absl::Status Schedule(absl::AnyInvocable<void()> fn);

  int num_threads() const { return static_cast<int>(threads_.size()); }
  // Closures queued and not yet started.
  int queue_size() const;

 private:
  explicit ThreadPool(const ThreadPoolOptions& options);
  void WorkLoop();
  bool WorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; }

  const ThreadPoolOptions options_;
  mutable absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace clipserve
