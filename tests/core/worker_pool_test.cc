// Worker threads pulling from a scheduler: contexts and init hooks, failure paths, graceful shutdown, and a
// multi-producer stress test in which every accepted row must be answered exactly once.
#include "server/core/worker_pool.h"

#include <atomic>
#include <iostream>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/counting_task.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace clipserve {
namespace {

using ::clipserve::testing::FakeClock;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::MakeTasks;
using ::clipserve::testing::RecordingRunner;
using ::clipserve::testing::StatusIs;
using ::clipserve::testing::TaskLog;
using ::clipserve::testing::TaskSpec;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kWait = absl::Seconds(10);  // bound on real-time waits; never reached when passing

LaneOptions Lane(const std::string& name, int max_batch, BatchRunner runner) {
  LaneOptions options;
  options.name = name;
  options.batching.max_batch_size = max_batch;
  options.batching.max_queue_delay = absl::Milliseconds(10);
  options.batching.max_queue_size = 64;
  options.runner = std::move(runner);
  return options;
}

TEST(WorkerPoolTest, WorkerPool_InitRunsOnEachWorkerAndRunnersSeeTheirContext) {
  TaskLog log;  // outlives the pool, whose workers destroy tasks
  FakeClock clock;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto scheduler, Scheduler::Create({.clock = &clock}));
  absl::Mutex mu;
  std::set<std::thread::id> init_threads;
  std::vector<int> init_instances;
  std::vector<std::string> run_devices;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(clipserve::Lane * lane,
                                 scheduler->AddLane(Lane("image", 1, [&](absl::Span<Task* const>) {
                                   const WorkerContext* context = WorkerPool::Current();
                                   absl::MutexLock lock(&mu);
                                   run_devices.push_back(context == nullptr ? "none" : context->device.ToString());
                                   return absl::OkStatus();
                                 })));
  WorkerPoolOptions options;
  options.scheduler = scheduler.get();
  options.device = {Device::Kind::kCuda, 1};
  options.instances = 2;
  options.init = [&](const WorkerContext& context) {
    absl::MutexLock lock(&mu);
    init_threads.insert(std::this_thread::get_id());
    init_instances.push_back(context.instance);
    EXPECT_EQ(WorkerPool::Current(), &context);
    return absl::OkStatus();
  };
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, WorkerPool::Create(options));
  {
    absl::MutexLock lock(&mu);
    // Create returned only after both hooks ran, each on its own worker thread.
    EXPECT_THAT(init_instances, UnorderedElementsAre(0, 1));
    EXPECT_EQ(init_threads.size(), 2u);
    EXPECT_EQ(init_threads.count(std::this_thread::get_id()), 0u);
  }
  EXPECT_EQ(WorkerPool::Current(), nullptr);
  std::vector<std::unique_ptr<Task>> tasks = MakeTasks(&log, 0, 3);
  ASSERT_THAT(lane->Enqueue(&tasks), IsOk());
  ASSERT_TRUE(log.WaitForAnswers(3, kWait));
  EXPECT_THAT(log.IdsWithCode(absl::StatusCode::kOk), UnorderedElementsAre(0, 1, 2));
  pool->Stop();
  absl::MutexLock lock(&mu);
  EXPECT_THAT(run_devices, ElementsAre("cuda:1", "cuda:1", "cuda:1"));
}

TEST(WorkerPoolTest, WorkerPool_InitFailureFailsCreateAndTakesNoBatch) {
  TaskLog log;  // outlives the pool, whose workers destroy tasks
  FakeClock clock;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto scheduler, Scheduler::Create({.clock = &clock}));
  RecordingRunner runner;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(clipserve::Lane * lane, scheduler->AddLane(Lane("image", 2, runner.AsRunner())));
  std::vector<std::unique_ptr<Task>> tasks = MakeTasks(&log, 0, 2);
  ASSERT_THAT(lane->Enqueue(&tasks), IsOk());  // ready before any worker exists
  WorkerPoolOptions options;
  options.scheduler = scheduler.get();
  options.instances = 3;
  options.init = [](const WorkerContext& context) {
    if (context.instance == 1) return absl::FailedPreconditionError("no such device");
    return absl::OkStatus();
  };
  EXPECT_THAT(WorkerPool::Create(options).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("worker 1 on cpu:0: no such device")));
  options.init = [](const WorkerContext&) -> absl::Status { throw std::runtime_error("CUDA error"); };
  EXPECT_THAT(WorkerPool::Create(options).status(),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("init hook threw: CUDA error")));
  options.init = [](const WorkerContext&) -> absl::Status { throw 7; };
  EXPECT_THAT(WorkerPool::Create(options).status(),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("non-standard exception")));
  EXPECT_THAT(runner.batches(), IsEmpty());
  EXPECT_EQ(lane->queue_depth(), 2) << "the scheduler is untouched and still usable";
}

TEST(WorkerPoolTest, WorkerPool_CreateValidatesOptions) {
  FakeClock clock;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto scheduler, Scheduler::Create({.clock = &clock}));
  WorkerPoolOptions options;
  EXPECT_THAT(WorkerPool::Create(options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scheduler")));
  options.scheduler = scheduler.get();
  options.instances = 0;
  EXPECT_THAT(WorkerPool::Create(options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("instances")));
}

TEST(WorkerPoolTest, WorkerPool_RunnerExceptionFailsItsBatchButNotTheWorker) {
  TaskLog log;  // outlives the pool, whose workers destroy tasks
  FakeClock clock;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto scheduler, Scheduler::Create({.clock = &clock}));
  std::atomic<int> calls{0};
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(clipserve::Lane * lane,
                                 scheduler->AddLane(Lane("image", 2, [&](absl::Span<Task* const>) -> absl::Status {
                                   if (calls.fetch_add(1) == 0) throw std::runtime_error("first batch explodes");
                                   return absl::OkStatus();
                                 })));
  WorkerPoolOptions options;
  options.scheduler = scheduler.get();
  options.instances = 1;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, WorkerPool::Create(options));
  std::vector<std::unique_ptr<Task>> first = MakeTasks(&log, 0, 2);
  ASSERT_THAT(lane->Enqueue(&first), IsOk());
  ASSERT_TRUE(log.WaitForAnswers(2, kWait));
  std::vector<std::unique_ptr<Task>> second = MakeTasks(&log, 2, 2);
  ASSERT_THAT(lane->Enqueue(&second), IsOk());
  ASSERT_TRUE(log.WaitForAnswers(4, kWait));
  EXPECT_THAT(log.IdsWithCode(absl::StatusCode::kInternal), ElementsAre(0, 1));
  EXPECT_THAT(*log.status(0), StatusIs(absl::StatusCode::kInternal, HasSubstr("first batch explodes")));
  EXPECT_THAT(log.IdsWithCode(absl::StatusCode::kOk), ElementsAre(2, 3));
}

TEST(WorkerPoolTest, Shutdown_InFlightBatchFinishesQueuedRowsFailAfterGraceAndWorkersJoin) {
  TaskLog log;  // outlives the pool, whose workers destroy tasks
  FakeClock clock;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto scheduler, Scheduler::Create({.clock = &clock}));
  absl::Notification started, release;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(clipserve::Lane * lane,
                                 scheduler->AddLane(Lane("image", 2, [&](absl::Span<Task* const>) {
                                   started.Notify();
                                   release.WaitForNotificationWithTimeout(kWait);
                                   return absl::OkStatus();
                                 })));
  WorkerPoolOptions options;
  options.scheduler = scheduler.get();
  options.instances = 1;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, WorkerPool::Create(options));
  std::vector<std::unique_ptr<Task>> running = MakeTasks(&log, 0, 2);
  ASSERT_THAT(lane->Enqueue(&running), IsOk());
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(kWait));  // the only worker is busy with rows 0, 1
  std::vector<std::unique_ptr<Task>> queued = MakeTasks(&log, 2, 2);
  ASSERT_THAT(lane->Enqueue(&queued), IsOk());

  scheduler->StopAccepting();  // phase 1
  std::vector<std::unique_ptr<Task>> late = MakeTasks(&log, 4, 1);
  EXPECT_THAT(lane->Enqueue(&late), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("server is shutting down")));

  absl::Status drain_status;
  absl::Notification drained;
  std::thread drainer([&] {
    drain_status = scheduler->Drain(clock.Now() + absl::Seconds(30));  // phase 2
    drained.Notify();
  });
  ASSERT_TRUE(clock.WaitForBlocked(1, kWait));
  clock.Advance(absl::Seconds(30));
  ASSERT_TRUE(drained.WaitForNotificationWithTimeout(kWait));
  drainer.join();
  EXPECT_THAT(drain_status, StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("2 queued rows")));
  EXPECT_THAT(log.IdsWithCode(absl::StatusCode::kUnavailable), ElementsAre(2, 3));

  release.Notify();
  pool->Stop();  // phase 3: joins after the running batch ends
  EXPECT_THAT(log.IdsWithCode(absl::StatusCode::kOk), ElementsAre(0, 1));
  EXPECT_EQ(log.num_answers(), 4);
  late.clear();
  EXPECT_EQ(log.num_destroyed(), 5);
}

TEST(WorkerPoolTest, Shutdown_DestroyingPoolAndSchedulerAnswersQueuedRowsAndDoesNotHang) {
  TaskLog log;
  {
    FakeClock clock;
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto scheduler, Scheduler::Create({.clock = &clock}));
    RecordingRunner runner;
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(clipserve::Lane * lane, scheduler->AddLane(Lane("text", 8, runner.AsRunner())));
    WorkerPoolOptions options;
    options.scheduler = scheduler.get();
    options.instances = 2;
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, WorkerPool::Create(options));
    std::vector<std::unique_ptr<Task>> tasks = MakeTasks(&log, 0, 3);
    ASSERT_THAT(lane->Enqueue(&tasks), IsOk());  // not ready: the workers keep waiting
    ASSERT_TRUE(clock.WaitForBlocked(2, kWait));
    pool.reset();
  }
  EXPECT_THAT(log.IdsWithCode(absl::StatusCode::kUnavailable), ElementsAre(0, 1, 2));
  EXPECT_EQ(log.num_destroyed(), 3);
}

// Several producers enqueue calls of 1-4 rows into two lanes (two priorities, some calls cancelled, some with
// deadlines that expire, runners that sometimes fail or throw) while two workers run batches on the real clock;
// shutdown begins while producers are still enqueueing. Every accepted row must be answered exactly once, with
// a status that fits what happened to it, and every task destroyed.
TEST(WorkerPoolStressTest, Stress_EveryAcceptedRowIsAnsweredExactlyOnce) {
  TaskLog log;  // outlives the pool, whose workers destroy tasks
  constexpr int kProducers = 4;
  constexpr int kCallsPerProducer = 1000;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto scheduler, Scheduler::Create({}));
  std::atomic<int> batches{0};
  std::atomic<int> oversized{0};
  auto runner = [&](absl::Span<Task* const> batch) -> absl::Status {
    const int n = batches.fetch_add(1);
    if (batch.size() > 8) oversized.fetch_add(1);
    if (n % 17 == 5) return absl::InternalError("flaky device");
    if (n % 23 == 7) throw std::runtime_error("flaky kernel");
    return absl::OkStatus();
  };
  for (const char* name : {"text", "image"}) {
    LaneOptions options;
    options.name = name;
    options.batching.max_batch_size = 8;
    options.batching.preferred_batch_sizes = {4};
    options.batching.max_queue_delay = absl::Microseconds(200);
    options.batching.max_queue_size = 64;
    options.batching.priority_levels = 2;
    options.runner = runner;
    ASSERT_THAT(scheduler->AddLane(options), IsOk());
  }
  WorkerPoolOptions pool_options;
  pool_options.scheduler = scheduler.get();
  pool_options.instances = 2;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, WorkerPool::Create(pool_options));

  std::atomic<int> made{0}, accepted{0}, refused_full{0}, refused_shutdown{0}, calls_done{0};
  absl::Notification stop_called;
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937 rng(p);
      clipserve::Lane* lanes[2] = {scheduler->FindLane("text"), scheduler->FindLane("image")};
      for (int c = 0; c < kCallsPerProducer; ++c) {
        // Shutdown begins somewhere after 3/4 of the calls, concurrently with enqueues; the last 1/8 certainly
        // comes after it.
        if (c == kCallsPerProducer * 7 / 8) stop_called.WaitForNotificationWithTimeout(kWait);
        const int rows = 1 + static_cast<int>(rng() % 4);
        TaskSpec spec;
        spec.priority = static_cast<int>(rng() % 2);
        std::shared_ptr<CancellationFlag> flag;
        if (rng() % 10 == 0) spec.cancellation = flag = std::make_shared<CancellationFlag>();
        if (rng() % 10 == 0) spec.deadline = absl::Now() + absl::Microseconds(rng() % 300);
        std::vector<std::unique_ptr<Task>> tasks = MakeTasks(&log, (p * kCallsPerProducer + c) * 4, rows, spec);
        made += rows;
        clipserve::Lane* lane = lanes[rng() % 2];
        absl::Status status = lane->Enqueue(&tasks);
        for (int retry = 0; retry < 100 && status.code() == absl::StatusCode::kResourceExhausted; ++retry) {
          std::this_thread::yield();  // a client backing off
          status = lane->Enqueue(&tasks);
        }
        if (status.ok()) {
          accepted += rows;
          EXPECT_THAT(tasks, IsEmpty());
        } else if (status.code() == absl::StatusCode::kResourceExhausted) {
          refused_full += rows;
        } else {
          EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
          refused_shutdown += rows;
        }
        if (flag != nullptr) flag->Cancel();
        ++calls_done;
      }
    });
  }
  // Start shutting down while the producers are still at work.
  while (calls_done.load() < kProducers * kCallsPerProducer * 3 / 4) std::this_thread::yield();
  scheduler->StopAccepting();
  stop_called.Notify();
  for (std::thread& t : producers) t.join();
  EXPECT_THAT(scheduler->Drain(absl::Now() + kWait), IsOk());
  pool->Stop();

  std::cerr << "accepted " << accepted << " rows, refused " << refused_full << " (queue full) + " << refused_shutdown
            << " (shutting down), " << batches << " batches\n";
  EXPECT_GT(accepted.load(), 0);
  EXPECT_GT(refused_shutdown.load(), 0);
  EXPECT_EQ(oversized.load(), 0);
  EXPECT_EQ(made.load(), accepted.load() + refused_full.load() + refused_shutdown.load());
  EXPECT_EQ(log.num_answers(), accepted.load());
  EXPECT_EQ(log.num_destroyed(), made.load());
  std::set<int> seen;
  for (const TaskLog::Answer& a : log.answers()) {
    EXPECT_TRUE(seen.insert(a.id).second) << "row " << a.id << " answered twice";
    const absl::StatusCode code = a.status.code();
    EXPECT_TRUE(code == absl::StatusCode::kOk || code == absl::StatusCode::kCancelled ||
                code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kInternal)
        << a.status;
  }
  EXPECT_FALSE(log.IdsWithCode(absl::StatusCode::kOk).empty());
  EXPECT_FALSE(log.IdsWithCode(absl::StatusCode::kInternal).empty());
}

}  // namespace
}  // namespace clipserve
