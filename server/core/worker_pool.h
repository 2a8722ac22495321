// The worker threads of one device: each takes batches from a Scheduler and runs them.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/scheduler.h"

namespace clipserve {

// Where a worker runs its batches. The core only passes it on (to the init hook and WorkerPool::Current()).
struct Device {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;

  std::string ToString() const;  // "cpu:0", "cuda:1"
  bool operator==(const Device& other) const { return kind == other.kind && index == other.index; }
};

// What a worker thread knows about itself.
struct WorkerContext {
  Device device;
  int instance = 0;  // 0 .. instances-1 within its pool
};

struct WorkerPoolOptions {
  // Not owned; must outlive the pool. Required.
  Scheduler* scheduler = nullptr;
  Device device;
  // Worker threads, each running one batch at a time.
  int instances = 1;
  // Optional; called once on each worker thread before it takes any batch (the model layer sets the CUDA
  // device and stream, or torch's thread state, here). An error or exception fails Create.
  std::function<absl::Status(const WorkerContext&)> init;
};

// `instances` threads bound to one device, each looping: Scheduler::NextBatch(), Batch::Run() (runner, then
// every row answered). A runner's error or exception fails its batch, never the worker. Create starts the
// threads and blocks until every init hook has returned; if one fails, no worker takes a batch, the threads are
// joined and the error is returned. Stop() (also run by the destructor) stops the scheduler, so NextBatch
// returns null for every pool pulling from it, and joins this pool's threads after their running batches end.
// Call the Scheduler's StopAccepting()/Drain() first for a graceful shutdown. Create, Stop and the destructor
// may be called from any thread except a worker of this pool.
class WorkerPool {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(const WorkerPoolOptions& options);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Stop();

  const Device& device() const { return options_.device; }
  int instances() const { return options_.instances; }

  // The calling worker's context, or null on a thread that is not a pool worker (e.g. for a runner that needs
  // its device index).
  static const WorkerContext* Current();

 private:
  enum class Gate { kWait, kRun, kExit };

  explicit WorkerPool(const WorkerPoolOptions& options);
  void Work(WorkerContext context);

  const WorkerPoolOptions options_;
  absl::Mutex mu_;
  int inits_done_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status init_status_ ABSL_GUARDED_BY(mu_);
  Gate gate_ ABSL_GUARDED_BY(mu_) = Gate::kWait;
  absl::Mutex join_mu_;  // serialises Stop()
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(join_mu_);
};

}  // namespace clipserve
