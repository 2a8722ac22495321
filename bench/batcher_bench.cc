// The serving core's overhead: enqueue -> batch formation -> worker -> answer, with trivial runners.
//   build/bin/clipserve_bench --benchmark_filter='Scheduler|BatchQueue'
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "benchmark/benchmark.h"
#include "server/core/batch_queue.h"
#include "server/core/scheduler.h"
#include "server/core/worker_pool.h"

namespace clipserve {
namespace {

// Counts down a shared number of outstanding rows; the last answer wakes the benchmark thread.
class Countdown {
 public:
  void Reset(int n) {
    absl::MutexLock lock(&mu_);
    remaining_ = n;
  }
  void Done() {
    absl::MutexLock lock(&mu_);
    --remaining_;
  }
  void Wait() {
    absl::MutexLock lock(&mu_);
    auto zero = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return remaining_ == 0; };
    mu_.Await(absl::Condition(&zero));
  }

 private:
  absl::Mutex mu_;
  int remaining_ ABSL_GUARDED_BY(mu_) = 0;
};

class BenchTask : public Task {
 public:
  explicit BenchTask(Countdown* countdown) : countdown_(countdown) {}

 protected:
  void Finish(absl::Status /*status*/) override { countdown_->Done(); }

 private:
  Countdown* const countdown_;
};

// N producer threads enqueue single-row calls into one lane; 2 workers run batches with a runner that does
// nothing. Items/s is the core's ceiling; `rows/batch` shows how much batching the load produced.
void BM_SchedulerThroughput(benchmark::State& state) {
  const int producers = static_cast<int>(state.range(0));
  const int max_batch = static_cast<int>(state.range(1));
  const absl::Duration delay = absl::Microseconds(state.range(2));
  constexpr int kRowsPerIteration = 20000;

  auto scheduler = *Scheduler::Create({});
  std::atomic<int64_t> batches{0};
  LaneOptions lane_options;
  lane_options.name = "bench";
  lane_options.batching.max_batch_size = max_batch;
  lane_options.batching.max_queue_delay = delay;
  lane_options.batching.max_queue_size = 4096;
  lane_options.runner = [&batches](absl::Span<Task* const>) {
    batches.fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  };
  Lane* lane = *scheduler->AddLane(lane_options);
  WorkerPoolOptions pool_options;
  pool_options.scheduler = scheduler.get();
  pool_options.instances = 2;
  auto pool = *WorkerPool::Create(pool_options);

  Countdown countdown;
  int64_t rows_done = 0;
  for (auto _ : state) {
    countdown.Reset(kRowsPerIteration);
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
      const int rows = kRowsPerIteration / producers + (p < kRowsPerIteration % producers ? 1 : 0);
      threads.emplace_back([lane, rows, &countdown] {
        for (int i = 0; i < rows; ++i) {
          std::vector<std::unique_ptr<Task>> call;
          call.push_back(std::make_unique<BenchTask>(&countdown));
          while (lane->Enqueue(&call).code() == absl::StatusCode::kResourceExhausted) std::this_thread::yield();
        }
      });
    }
    for (std::thread& t : threads) t.join();
    countdown.Wait();
    rows_done += kRowsPerIteration;
  }
  scheduler->StopAccepting();
  pool->Stop();
  state.SetItemsProcessed(rows_done);
  state.counters["rows/batch"] = batches.load() > 0 ? static_cast<double>(rows_done) / batches.load() : 0;
}
BENCHMARK(BM_SchedulerThroughput)
    ->ArgNames({"producers", "max_batch", "delay_us"})
    ->ArgsProduct({{1, 2, 4}, {1, 8, 32}, {0, 200}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Single-threaded cost of the batching policy alone: enqueue one row at a time, take full batches.
void BM_BatchQueueEnqueueTake(benchmark::State& state) {
  BatchingOptions options;
  options.max_batch_size = static_cast<int>(state.range(0));
  options.max_queue_size = options.max_batch_size;
  auto queue = *BatchQueue::Create(options);
  Countdown countdown;
  std::vector<DroppedTask> dropped;
  const absl::Time now = absl::Now();
  int64_t rows = 0;
  for (auto _ : state) {
    for (int i = 0; i < options.max_batch_size; ++i) {
      std::vector<std::unique_ptr<Task>> call;
      call.push_back(std::make_unique<BenchTask>(&countdown));
      benchmark::DoNotOptimize(queue->Enqueue(&call, now));
    }
    std::vector<std::unique_ptr<Task>> batch = queue->TakeReadyBatch(now, &dropped);
    benchmark::DoNotOptimize(batch.data());
    rows += static_cast<int64_t>(batch.size());
  }
  state.SetItemsProcessed(rows);
}
BENCHMARK(BM_BatchQueueEnqueueTake)->Arg(1)->Arg(8)->Arg(32);

}  // namespace
}  // namespace clipserve
