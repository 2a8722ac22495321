// Lanes, batches and the scheduler on a fake clock: dispatch timing, lane choice, drops, run outcomes, shutdown.
#include "server/core/scheduler.h"

#include <functional>
#include <memory>
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
using ::clipserve::testing::IdsOf;
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

constexpr absl::Duration kDelay = absl::Milliseconds(10);
constexpr absl::Duration kWait = absl::Seconds(10);  // bound on real-time waits; never reached when passing

class RecordingObserver : public LaneObserver {
 public:
  void OnEnqueue(int rows, int queue_depth) override {
    absl::MutexLock lock(&mu_);
    enqueues.push_back({rows, queue_depth});
  }
  void OnDrop(absl::StatusCode code) override {
    absl::MutexLock lock(&mu_);
    drops.push_back(code);
  }
  void OnBatchStart(int batch_size, absl::Span<const absl::Duration> queue_times) override {
    absl::MutexLock lock(&mu_);
    starts.push_back(batch_size);
    last_queue_times.assign(queue_times.begin(), queue_times.end());
  }
  void OnBatchEnd(int batch_size, absl::Duration compute_time, const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    ends.push_back(batch_size);
    last_compute_time = compute_time;
    last_status = status;
  }

  absl::Mutex mu_;
  std::vector<std::pair<int, int>> enqueues;
  std::vector<absl::StatusCode> drops;
  std::vector<int> starts;
  std::vector<absl::Duration> last_queue_times;
  std::vector<int> ends;
  absl::Duration last_compute_time;
  absl::Status last_status;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override { CLIPSERVE_ASSERT_OK_AND_ASSIGN(scheduler_, Scheduler::Create({.clock = &clock_})); }
  void TearDown() override {
    StopAndJoin();
    scheduler_.reset();
    // Nothing leaked: every accepted task was answered exactly once, every task made was destroyed.
    EXPECT_EQ(log_.num_destroyed(), made_);
    EXPECT_EQ(log_.num_answers(), accepted_);
    for (const TaskLog::Answer& a : log_.answers()) EXPECT_EQ(log_.finish_calls(a.id), 1) << "row " << a.id;
  }

  Lane* AddLane(const std::string& name, int max_batch, RecordingRunner* runner,
                std::shared_ptr<LaneObserver> observer = nullptr, int priority_levels = 1) {
    LaneOptions options;
    options.name = name;
    options.batching.max_batch_size = max_batch;
    options.batching.max_queue_delay = kDelay;
    options.batching.max_queue_size = 64;
    options.batching.priority_levels = priority_levels;
    options.runner = runner->AsRunner();
    options.observer = std::move(observer);
    absl::StatusOr<Lane*> lane = scheduler_->AddLane(options);
    EXPECT_THAT(lane, IsOk());
    return lane.ok() ? *lane : nullptr;
  }
  std::vector<std::unique_ptr<Task>> MakeCall(int first, int n, const TaskSpec& spec = {}) {
    made_ += n;
    return MakeTasks(&log_, first, n, spec);
  }
  absl::Status Enqueue(Lane* lane, int first, int n, const TaskSpec& spec = {}) {
    std::vector<std::unique_ptr<Task>> tasks = MakeCall(first, n, spec);
    absl::Status status = lane->Enqueue(&tasks);
    if (status.ok()) accepted_ += n;
    return status;
  }
  // Runs `fn` on a thread that StopAndJoin joins.
  void Spawn(std::function<void()> fn) { threads_.emplace_back(std::move(fn)); }
  // Stops the scheduler and joins the spawned threads: tests whose threads use the test's locals call it
  // before returning (TearDown calls it too).
  void StopAndJoin() {
    scheduler_->Stop();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  FakeClock clock_;
  TaskLog log_;
  int made_ = 0;
  int accepted_ = 0;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::thread> threads_;
};

TEST_F(SchedulerTest, Scheduler_DispatchesPartialBatchWhenOldestRowReachesDelay) {
  RecordingRunner runner;
  Lane* lane = AddLane("text", 8, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  EXPECT_EQ(scheduler_->TryNextBatch(), nullptr);
  clock_.Advance(kDelay - absl::Nanoseconds(1));
  EXPECT_EQ(scheduler_->TryNextBatch(), nullptr);
  clock_.Advance(absl::Nanoseconds(1));
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(&batch->lane(), lane);
  EXPECT_THAT(IdsOf(batch->tasks()), ElementsAre(0, 1));
  EXPECT_THAT(batch->Run(), IsOk());
  EXPECT_THAT(runner.batches(), ElementsAre(ElementsAre(0, 1)));
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kOk), ElementsAre(0, 1));
}

TEST_F(SchedulerTest, Scheduler_NextBatchSleepsUntilTheDelayOnTheClock) {
  RecordingRunner runner;
  Lane* lane = AddLane("text", 8, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 1), IsOk());
  absl::Notification got;
  std::vector<int> ids;
  Spawn([&] {
    std::unique_ptr<Batch> batch = scheduler_->NextBatch();
    if (batch == nullptr) return;
    ids = IdsOf(batch->tasks());
    batch->Run().IgnoreError();
    got.Notify();
  });
  ASSERT_TRUE(clock_.WaitForBlocked(1, kWait));
  clock_.Advance(kDelay - absl::Nanoseconds(1));
  EXPECT_FALSE(got.HasBeenNotified());
  clock_.Advance(absl::Nanoseconds(1));
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(kWait));
  EXPECT_THAT(ids, ElementsAre(0));
  StopAndJoin();
}

TEST_F(SchedulerTest, Scheduler_EnqueueOfFullBatchWakesWaitingWorker) {
  RecordingRunner runner;
  Lane* lane = AddLane("text", 4, &runner);
  absl::Notification got;
  Spawn([&] {
    std::unique_ptr<Batch> batch = scheduler_->NextBatch();
    if (batch == nullptr) return;
    batch->Run().IgnoreError();
    got.Notify();
  });
  ASSERT_TRUE(clock_.WaitForBlocked(1, kWait));
  ASSERT_THAT(Enqueue(lane, 0, 4), IsOk());  // no time passes
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(kWait));
  EXPECT_THAT(runner.batches(), ElementsAre(ElementsAre(0, 1, 2, 3)));
  StopAndJoin();
}

TEST_F(SchedulerTest, Scheduler_NextBatchUntilGivesUpAtItsDeadline) {
  RecordingRunner runner;
  AddLane("text", 4, &runner);
  absl::Notification returned;
  bool got_null = false;
  const absl::Time deadline = clock_.Now() + absl::Milliseconds(5);
  Spawn([&] {
    got_null = scheduler_->NextBatchUntil(deadline) == nullptr;
    returned.Notify();
  });
  ASSERT_TRUE(clock_.WaitForBlocked(1, kWait));
  clock_.Advance(absl::Milliseconds(5));
  ASSERT_TRUE(returned.WaitForNotificationWithTimeout(kWait));
  StopAndJoin();
  EXPECT_TRUE(got_null);
}

TEST_F(SchedulerTest, Scheduler_ServesReadyLanesRoundRobin) {
  RecordingRunner text_runner, image_runner;
  Lane* text = AddLane("text", 2, &text_runner);
  Lane* image = AddLane("image", 2, &image_runner);
  ASSERT_THAT(Enqueue(text, 0, 6), IsOk());
  ASSERT_THAT(Enqueue(image, 100, 4), IsOk());
  std::vector<std::string> order;
  while (std::unique_ptr<Batch> batch = scheduler_->TryNextBatch()) {
    order.push_back(batch->lane().name());
    batch->Run().IgnoreError();
  }
  EXPECT_THAT(order, ElementsAre("text", "image", "text", "image", "text"));
  EXPECT_THAT(text_runner.batches(), ElementsAre(ElementsAre(0, 1), ElementsAre(2, 3), ElementsAre(4, 5)));
  EXPECT_THAT(image_runner.batches(), ElementsAre(ElementsAre(100, 101), ElementsAre(102, 103)));
}

TEST_F(SchedulerTest, Scheduler_OnlyReadyLanesAreServed) {
  RecordingRunner text_runner, image_runner;
  Lane* text = AddLane("text", 4, &text_runner);
  Lane* image = AddLane("image", 2, &image_runner);
  ASSERT_THAT(Enqueue(text, 0, 1), IsOk());
  ASSERT_THAT(Enqueue(image, 100, 2), IsOk());
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->lane().name(), "image");
  batch.reset();
  EXPECT_EQ(scheduler_->TryNextBatch(), nullptr);
  EXPECT_EQ(scheduler_->FindLane("text"), text);
  EXPECT_EQ(scheduler_->FindLane("nope"), nullptr);
}

TEST_F(SchedulerTest, Scheduler_ExpiredRowIsAnsweredAtItsDeadlineAndNeverRuns) {
  RecordingRunner runner;
  Lane* lane = AddLane("text", 4, &runner);
  Spawn([&] {
    while (std::unique_ptr<Batch> batch = scheduler_->NextBatch()) batch->Run().IgnoreError();
  });
  ASSERT_TRUE(clock_.WaitForBlocked(1, kWait));
  ASSERT_THAT(Enqueue(lane, 0, 1, {.deadline = clock_.Now() + absl::Milliseconds(3)}), IsOk());
  clock_.Advance(absl::Milliseconds(3));  // before the 10 ms delay: the waiting worker wakes for the deadline
  ASSERT_TRUE(log_.WaitForAnswers(1, kWait));
  EXPECT_THAT(*log_.status(0), StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("lane 'text'")));
  StopAndJoin();
  EXPECT_THAT(runner.batches(), IsEmpty());
}

TEST_F(SchedulerTest, Scheduler_CancelledCallNeverRunsAndIsAnsweredCancelled) {
  RecordingRunner runner;
  auto observer = std::make_shared<RecordingObserver>();
  Lane* lane = AddLane("text", 8, &runner, observer);
  auto flag = std::make_shared<CancellationFlag>();
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  ASSERT_THAT(Enqueue(lane, 10, 3, {.cancellation = flag}), IsOk());
  ASSERT_THAT(Enqueue(lane, 20, 1), IsOk());
  flag->Cancel();
  clock_.Advance(kDelay);
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(IdsOf(batch->tasks()), ElementsAre(0, 1, 20));
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kCancelled), ElementsAre(10, 11, 12));
  EXPECT_THAT(observer->drops,
              ElementsAre(absl::StatusCode::kCancelled, absl::StatusCode::kCancelled, absl::StatusCode::kCancelled));
}

TEST_F(SchedulerTest, Scheduler_QueueFullRefusesCallAndEnqueuesNothing) {
  RecordingRunner runner;
  LaneOptions options;
  options.name = "small";
  options.batching.max_batch_size = 2;
  options.batching.max_queue_size = 3;
  options.runner = runner.AsRunner();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Lane * lane, scheduler_->AddLane(options));
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  std::vector<std::unique_ptr<Task>> call = MakeCall(10, 2);
  EXPECT_THAT(lane->Enqueue(&call), StatusIs(absl::StatusCode::kResourceExhausted,
                                             HasSubstr("lane 'small' queue is full: 2 rows queued + 2 new > limit 3")));
  EXPECT_EQ(call.size(), 2u) << "the caller keeps refused tasks";
  EXPECT_EQ(lane->queue_depth(), 2);
  call.clear();
  EXPECT_EQ(log_.finish_calls(10) + log_.finish_calls(11), 0) << "refused tasks are not answered";
}

TEST_F(SchedulerTest, Scheduler_AddLaneValidatesOptions) {
  RecordingRunner runner;
  LaneOptions options;
  options.name = "text";
  options.runner = runner.AsRunner();
  ASSERT_THAT(scheduler_->AddLane(options), IsOk());
  EXPECT_THAT(scheduler_->AddLane(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("already exists")));
  LaneOptions no_name = options;
  no_name.name = "";
  EXPECT_THAT(scheduler_->AddLane(no_name), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name")));
  LaneOptions no_runner = options;
  no_runner.name = "image";
  no_runner.runner = nullptr;
  EXPECT_THAT(scheduler_->AddLane(no_runner), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no runner")));
  LaneOptions bad = options;
  bad.name = "image";
  bad.batching.preferred_batch_sizes = {100};
  EXPECT_THAT(scheduler_->AddLane(bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lane 'image': preferred_batch_sizes")));
  scheduler_->StopAccepting();
  LaneOptions late = options;
  late.name = "late";
  EXPECT_THAT(scheduler_->AddLane(late), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("shutting down")));
}

TEST_F(SchedulerTest, Batch_RunnerErrorAnswersEveryRowWithIt) {
  RecordingRunner runner;
  auto observer = std::make_shared<RecordingObserver>();
  runner.set_result([](const std::vector<int>&) { return absl::ResourceExhaustedError("device out of memory"); });
  Lane* lane = AddLane("image", 3, &runner, observer);
  ASSERT_THAT(Enqueue(lane, 0, 3), IsOk());
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(batch->Run(), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("out of memory")));
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kResourceExhausted), ElementsAre(0, 1, 2));
  EXPECT_THAT(observer->last_status, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("out of memory")));
}

TEST_F(SchedulerTest, Batch_RunnerExceptionBecomesInternal) {
  RecordingRunner runner;
  runner.set_result([](const std::vector<int>&) -> absl::Status { throw std::runtime_error("c10::Error: boom"); });
  Lane* lane = AddLane("image", 2, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(batch->Run(), StatusIs(absl::StatusCode::kInternal, HasSubstr("threw: c10::Error: boom")));
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kInternal), ElementsAre(0, 1));
}

TEST_F(SchedulerTest, Batch_NonStandardExceptionBecomesInternal) {
  RecordingRunner runner;
  runner.set_result([](const std::vector<int>&) -> absl::Status { throw 42; });
  Lane* lane = AddLane("image", 1, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 1), IsOk());
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(batch->Run(), StatusIs(absl::StatusCode::kInternal, HasSubstr("non-standard exception")));
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kInternal), ElementsAre(0));
}

TEST_F(SchedulerTest, Batch_RowAnsweredByTheRunnerKeepsItsAnswer) {
  LaneOptions options;
  options.name = "gen";
  options.batching.max_batch_size = 3;
  options.runner = [](absl::Span<Task* const> batch) {
    batch[1]->Answer(absl::InvalidArgumentError("row 1 is bad"));
    return absl::OkStatus();
  };
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Lane * lane, scheduler_->AddLane(options));
  ASSERT_THAT(Enqueue(lane, 0, 3), IsOk());
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(batch->Run(), IsOk());
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kOk), ElementsAre(0, 2));
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kInvalidArgument), ElementsAre(1));
}

TEST_F(SchedulerTest, Batch_ReleasedWithoutRunningAnswersEveryRowInternal) {
  RecordingRunner runner;
  Lane* lane = AddLane("image", 2, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(scheduler_->batches_in_flight(), 1);
  batch.reset();
  EXPECT_EQ(scheduler_->batches_in_flight(), 0);
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kInternal), ElementsAre(0, 1));
  EXPECT_THAT(runner.batches(), IsEmpty());
}

TEST_F(SchedulerTest, Batch_RunsOnlyOnce) {
  RecordingRunner runner;
  Lane* lane = AddLane("image", 1, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 1), IsOk());
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(batch->Run(), IsOk());
  EXPECT_THAT(batch->Run(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("twice")));
  EXPECT_EQ(runner.batches().size(), 1u);
}

TEST_F(SchedulerTest, Observer_SeesEnqueueQueueTimesComputeTimeAndDrops) {
  auto observer = std::make_shared<RecordingObserver>();
  LaneOptions options;
  options.name = "text";
  options.batching.max_batch_size = 8;
  options.batching.max_queue_delay = kDelay;
  options.observer = observer;
  options.runner = [this](absl::Span<Task* const>) {
    clock_.Advance(absl::Milliseconds(7));  // "compute"
    return absl::OkStatus();
  };
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Lane * lane, scheduler_->AddLane(options));
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  clock_.Advance(absl::Milliseconds(4));
  ASSERT_THAT(Enqueue(lane, 2, 1, {.deadline = clock_.Now() + absl::Milliseconds(1)}), IsOk());
  ASSERT_THAT(Enqueue(lane, 3, 1), IsOk());
  clock_.Advance(absl::Milliseconds(6));
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(batch->Run(), IsOk());
  EXPECT_THAT(observer->enqueues, ElementsAre(std::pair(2, 2), std::pair(1, 3), std::pair(1, 4)));
  EXPECT_THAT(observer->drops, ElementsAre(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(observer->starts, ElementsAre(3));
  EXPECT_THAT(observer->last_queue_times,
              ElementsAre(absl::Milliseconds(10), absl::Milliseconds(10), absl::Milliseconds(6)));
  EXPECT_THAT(observer->ends, ElementsAre(3));
  EXPECT_EQ(observer->last_compute_time, absl::Milliseconds(7));
  EXPECT_THAT(observer->last_status, IsOk());
}

TEST_F(SchedulerTest, Shutdown_StopAcceptingRefusesEnqueueAndFlushesPartialBatches) {
  RecordingRunner runner;
  Lane* lane = AddLane("text", 8, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 3), IsOk());
  scheduler_->StopAccepting();
  std::vector<std::unique_ptr<Task>> call = MakeCall(10, 1);
  EXPECT_THAT(lane->Enqueue(&call), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("server is shutting down")));
  EXPECT_EQ(call.size(), 1u);
  // No time passes: the partial batch is ready because nothing more can join it.
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(IdsOf(batch->tasks()), ElementsAre(0, 1, 2));
  EXPECT_THAT(batch->Run(), IsOk());
}

TEST_F(SchedulerTest, Shutdown_DrainLetsRunningBatchFinishAndFailsQueuedRowsAtDeadline) {
  RecordingRunner runner;
  Lane* lane = AddLane("image", 2, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  std::unique_ptr<Batch> running = scheduler_->TryNextBatch();  // in flight, like a worker's
  ASSERT_NE(running, nullptr);
  // No worker takes the rest: it stays queued until the grace deadline.
  ASSERT_THAT(Enqueue(lane, 2, 3), IsOk());
  absl::Notification drained;
  absl::Status drain_status;
  const absl::Time grace = clock_.Now() + absl::Seconds(5);
  Spawn([&] {
    drain_status = scheduler_->Drain(grace);
    drained.Notify();
  });
  ASSERT_TRUE(clock_.WaitForBlocked(1, kWait));
  clock_.Advance(absl::Seconds(5) - absl::Nanoseconds(1));
  EXPECT_FALSE(drained.HasBeenNotified());
  clock_.Advance(absl::Nanoseconds(1));
  ASSERT_TRUE(drained.WaitForNotificationWithTimeout(kWait));
  EXPECT_THAT(drain_status, StatusIs(absl::StatusCode::kDeadlineExceeded,
                                     HasSubstr("3 queued rows answered UNAVAILABLE, 1 batches still running")));
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kUnavailable), ElementsAre(2, 3, 4));
  // The running batch is not touched by the drain; it finishes normally.
  EXPECT_THAT(running->Run(), IsOk());
  running.reset();
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kOk), ElementsAre(0, 1));
  StopAndJoin();
}

TEST_F(SchedulerTest, Shutdown_DrainReturnsOkOnceQueuesAreEmptyAndBatchesDone) {
  RecordingRunner runner;
  Lane* lane = AddLane("image", 4, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  absl::Notification drained;
  absl::Status drain_status;
  Spawn([&] {
    drain_status = scheduler_->Drain(clock_.Now() + absl::Seconds(5));
    drained.Notify();
  });
  ASSERT_TRUE(clock_.WaitForBlocked(1, kWait));
  // Draining closed the lane, so the partial batch is ready without waiting for the delay.
  std::unique_ptr<Batch> batch = scheduler_->TryNextBatch();
  ASSERT_NE(batch, nullptr);
  EXPECT_THAT(batch->Run(), IsOk());
  EXPECT_FALSE(drained.HasBeenNotified()) << "the batch is still in flight until it is released";
  batch.reset();
  ASSERT_TRUE(drained.WaitForNotificationWithTimeout(kWait));
  StopAndJoin();
  EXPECT_THAT(drain_status, IsOk());
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kOk), ElementsAre(0, 1));
}

TEST_F(SchedulerTest, Shutdown_StopWakesWaitingWorkersAndAnswersQueuedRowsUnavailable) {
  RecordingRunner runner;
  Lane* lane = AddLane("text", 8, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 2), IsOk());
  absl::Notification returned;
  bool got_null = false;
  Spawn([&] {
    got_null = scheduler_->NextBatch() == nullptr;
    returned.Notify();
  });
  ASSERT_TRUE(clock_.WaitForBlocked(1, kWait));
  scheduler_->Stop();
  ASSERT_TRUE(returned.WaitForNotificationWithTimeout(kWait));
  StopAndJoin();
  EXPECT_TRUE(got_null);
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kUnavailable), ElementsAre(0, 1));
  EXPECT_EQ(scheduler_->NextBatch(), nullptr);
  EXPECT_THAT(runner.batches(), IsEmpty());
}

TEST_F(SchedulerTest, Shutdown_DestructorAnswersAndDestroysQueuedRows) {
  RecordingRunner runner;
  Lane* lane = AddLane("text", 8, &runner);
  ASSERT_THAT(Enqueue(lane, 0, 3), IsOk());
  scheduler_.reset();
  EXPECT_THAT(log_.IdsWithCode(absl::StatusCode::kUnavailable), ElementsAre(0, 1, 2));
  EXPECT_EQ(log_.num_destroyed(), 3);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(scheduler_, Scheduler::Create({.clock = &clock_}));  // for TearDown
}

TEST(SchedulerRealClockTest, Scheduler_DispatchesAfterDelayOnTheRealClock) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Scheduler> scheduler, Scheduler::Create({}));
  RecordingRunner runner;
  LaneOptions options;
  options.name = "text";
  options.batching.max_batch_size = 8;
  options.batching.max_queue_delay = absl::Milliseconds(20);
  options.runner = runner.AsRunner();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Lane * lane, scheduler->AddLane(options));
  TaskLog log;
  std::vector<std::unique_ptr<Task>> tasks = MakeTasks(&log, 0, 2);
  const absl::Time start = absl::Now();
  ASSERT_THAT(lane->Enqueue(&tasks), IsOk());
  std::unique_ptr<Batch> batch = scheduler->NextBatchUntil(absl::Now() + kWait);
  const absl::Duration waited = absl::Now() - start;
  ASSERT_NE(batch, nullptr);
  EXPECT_GE(waited, absl::Milliseconds(20));
  EXPECT_LT(waited, absl::Seconds(5));
  EXPECT_THAT(IdsOf(batch->tasks()), ElementsAre(0, 1));
  EXPECT_THAT(batch->Run(), IsOk());
  batch.reset();
  EXPECT_EQ(log.num_answers(), 2);
}

}  // namespace
}  // namespace clipserve
