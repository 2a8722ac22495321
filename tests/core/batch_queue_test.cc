// Batch formation as a pure function of (queue contents, now): every dispatch rule, with explicit times.
#include "server/core/batch_queue.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/counting_task.h"
#include "tests/testing/status_matchers.h"

namespace clipserve {
namespace {

using ::clipserve::testing::IdsOf;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::MakeTasks;
using ::clipserve::testing::StatusIs;
using ::clipserve::testing::TaskLog;
using ::clipserve::testing::TaskSpec;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::FromUnixSeconds(1000);
constexpr absl::Duration kDelay = absl::Milliseconds(10);

class BatchQueueTest : public ::testing::Test {
 protected:
  std::unique_ptr<BatchQueue> MakeQueue(const BatchingOptions& options) {
    absl::StatusOr<std::unique_ptr<BatchQueue>> queue = BatchQueue::Create(options, "test");
    EXPECT_THAT(queue, IsOk());
    return queue.ok() ? *std::move(queue) : nullptr;
  }
  static BatchingOptions Options(int max_batch, absl::Duration delay = kDelay, std::vector<int> preferred = {},
                                 int max_queue = 64, int levels = 1) {
    BatchingOptions o;
    o.max_batch_size = max_batch;
    o.max_queue_delay = delay;
    o.preferred_batch_sizes = std::move(preferred);
    o.max_queue_size = max_queue;
    o.priority_levels = levels;
    return o;
  }
  // Enqueues ids first..first+n-1 at `now`, expecting OK.
  void Add(BatchQueue& q, int first, int n, absl::Time now, const TaskSpec& spec = {}) {
    std::vector<std::unique_ptr<Task>> tasks = MakeTasks(&log_, first, n, spec);
    ASSERT_THAT(q.Enqueue(&tasks, now), IsOk());
    EXPECT_THAT(tasks, IsEmpty());
  }
  // Ids of the batch ready at `now` (empty if none); dropped rows are kept in dropped_.
  std::vector<int> Take(BatchQueue& q, absl::Time now) { return IdsOf(q.TakeReadyBatch(now, &dropped_)); }

  std::vector<int> DroppedIds() const {
    std::vector<int> ids;
    for (const DroppedTask& d : dropped_) ids.push_back(testing::IdOf(d.task.get()));
    return ids;
  }

  TaskLog log_;
  std::vector<DroppedTask> dropped_;
};

TEST_F(BatchQueueTest, Batcher_DispatchesWhenQueueReachesMaxBatchSize) {
  auto q = MakeQueue(Options(4));
  Add(*q, 0, 3, kT0);
  EXPECT_THAT(Take(*q, kT0), IsEmpty());
  Add(*q, 3, 1, kT0);
  EXPECT_THAT(Take(*q, kT0), ElementsAre(0, 1, 2, 3));
  EXPECT_TRUE(q->empty());
}

TEST_F(BatchQueueTest, Batcher_TakesAtMostMaxBatchSizeAndLeavesTheRest) {
  auto q = MakeQueue(Options(4));
  Add(*q, 0, 10, kT0);
  EXPECT_THAT(Take(*q, kT0), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(Take(*q, kT0), ElementsAre(4, 5, 6, 7));
  EXPECT_THAT(Take(*q, kT0), IsEmpty());  // 2 left, younger than the delay
  EXPECT_EQ(q->size(), 2);
  EXPECT_THAT(Take(*q, kT0 + kDelay), ElementsAre(8, 9));
}

TEST_F(BatchQueueTest, Batcher_DispatchesWhenOldestItemReachesDelay) {
  auto q = MakeQueue(Options(8));
  Add(*q, 0, 1, kT0);
  Add(*q, 1, 2, kT0 + absl::Milliseconds(4));
  EXPECT_THAT(Take(*q, kT0 + kDelay - absl::Nanoseconds(1)), IsEmpty());
  EXPECT_THAT(Take(*q, kT0 + kDelay), ElementsAre(0, 1, 2));
}

TEST_F(BatchQueueTest, Batcher_ZeroDelayDispatchesWhateverIsQueued) {
  auto q = MakeQueue(Options(8, absl::ZeroDuration()));
  Add(*q, 0, 2, kT0);
  EXPECT_THAT(Take(*q, kT0), ElementsAre(0, 1));
}

TEST_F(BatchQueueTest, Batcher_BatchGrowsUntilAWorkerTakesIt) {
  auto q = MakeQueue(Options(8));
  Add(*q, 0, 2, kT0);
  // Ready since kT0 + kDelay, but nobody took it: rows that arrive later still join the batch.
  Add(*q, 2, 3, kT0 + absl::Milliseconds(15));
  EXPECT_THAT(Take(*q, kT0 + absl::Milliseconds(20)), ElementsAre(0, 1, 2, 3, 4));
}

TEST_F(BatchQueueTest, Batcher_DispatchesLargestPreferredSizeWithoutWaiting) {
  auto q = MakeQueue(Options(16, kDelay, {4, 8}));
  Add(*q, 0, 7, kT0);
  EXPECT_THAT(Take(*q, kT0), IsEmpty());  // 7 < 8: wait for more or for the delay
  Add(*q, 7, 3, kT0);
  EXPECT_THAT(Take(*q, kT0), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_EQ(q->size(), 2);
}

TEST_F(BatchQueueTest, Batcher_SmallerPreferredSizeWaitsForDelayThenTakesAllQueued) {
  auto q = MakeQueue(Options(16, kDelay, {4, 8}));
  Add(*q, 0, 5, kT0);
  EXPECT_THAT(Take(*q, kT0 + kDelay - absl::Nanoseconds(1)), IsEmpty());
  EXPECT_THAT(Take(*q, kT0 + kDelay), ElementsAre(0, 1, 2, 3, 4));
}

TEST_F(BatchQueueTest, Batcher_FullBatchBeatsPreferredSize) {
  auto q = MakeQueue(Options(6, kDelay, {2, 4}));
  Add(*q, 0, 7, kT0);
  EXPECT_THAT(Take(*q, kT0), ElementsAre(0, 1, 2, 3, 4, 5));
}

TEST_F(BatchQueueTest, Batcher_BatchShapesFollowTheRules) {
  auto q = MakeQueue(Options(4, kDelay, {3}));
  Add(*q, 0, 11, kT0);
  std::vector<size_t> shapes;
  absl::Time now = kT0;
  while (!q->empty()) {
    std::vector<std::unique_ptr<Task>> batch = q->TakeReadyBatch(now, &dropped_);
    if (batch.empty()) {
      now = q->NextEventTime(now);
      continue;
    }
    shapes.push_back(batch.size());
  }
  // 4, 4 (full), 3 (largest preferred), then nothing until the delay.
  EXPECT_THAT(shapes, ElementsAre(4, 4, 3));
  EXPECT_EQ(now, kT0);
  Add(*q, 11, 2, kT0 + absl::Milliseconds(1));
  EXPECT_THAT(Take(*q, kT0 + absl::Milliseconds(1)), IsEmpty());
  EXPECT_EQ(q->NextEventTime(kT0 + absl::Milliseconds(1)), kT0 + absl::Milliseconds(1) + kDelay);
}

TEST_F(BatchQueueTest, Batcher_NextEventTimeIsOldestDispatchTimeOrNearestDeadline) {
  auto q = MakeQueue(Options(8));
  EXPECT_EQ(q->NextEventTime(kT0), absl::InfiniteFuture());
  Add(*q, 0, 1, kT0);
  EXPECT_EQ(q->NextEventTime(kT0), kT0 + kDelay);
  Add(*q, 1, 1, kT0 + absl::Milliseconds(1), {.deadline = kT0 + absl::Milliseconds(3)});
  EXPECT_EQ(q->NextEventTime(kT0 + absl::Milliseconds(1)), kT0 + absl::Milliseconds(3));
  // Full batch: ready now.
  Add(*q, 2, 6, kT0 + absl::Milliseconds(2));
  EXPECT_EQ(q->NextEventTime(kT0 + absl::Milliseconds(2)), kT0 + absl::Milliseconds(2));
}

TEST_F(BatchQueueTest, Batcher_ExpiredRowsAreDroppedDeadlineExceededAndNotCounted) {
  auto q = MakeQueue(Options(4));
  Add(*q, 0, 1, kT0);
  Add(*q, 1, 2, kT0, {.deadline = kT0 + absl::Milliseconds(5)});
  Add(*q, 3, 2, kT0);
  // 5 rows queued, but at +5ms two have expired: the remaining 3 are not a full batch.
  EXPECT_THAT(Take(*q, kT0 + absl::Milliseconds(5)), IsEmpty());
  EXPECT_THAT(DroppedIds(), ElementsAre(1, 2));
  for (const DroppedTask& d : dropped_) {
    EXPECT_THAT(d.status, StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("lane 'test'")));
  }
  EXPECT_EQ(q->size(), 3);
  EXPECT_EQ(q->NextEventTime(kT0 + absl::Milliseconds(5)), kT0 + kDelay);
  EXPECT_THAT(Take(*q, kT0 + kDelay), ElementsAre(0, 3, 4));
  EXPECT_EQ(log_.num_answers(), 0) << "the queue never answers; its owner does";
}

TEST_F(BatchQueueTest, Batcher_RowExpiringExactlyAtDispatchIsDroppedNotRun) {
  auto q = MakeQueue(Options(4));
  Add(*q, 0, 2, kT0, {.deadline = kT0 + kDelay});
  Add(*q, 2, 1, kT0);
  EXPECT_THAT(Take(*q, kT0 + kDelay), ElementsAre(2));
  EXPECT_THAT(DroppedIds(), ElementsAre(0, 1));
}

TEST_F(BatchQueueTest, Batcher_CancelledRowsAreDroppedCancelledAndNotCounted) {
  auto q = MakeQueue(Options(4));
  auto flag = std::make_shared<CancellationFlag>();
  Add(*q, 0, 2, kT0);
  Add(*q, 2, 2, kT0, {.cancellation = flag});
  Add(*q, 4, 1, kT0);
  flag->Cancel();
  // 5 queued, 2 cancelled: 3 live rows are not a full batch.
  EXPECT_THAT(Take(*q, kT0), IsEmpty());
  EXPECT_THAT(DroppedIds(), ElementsAre(2, 3));
  for (const DroppedTask& d : dropped_)
    EXPECT_THAT(d.status, StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));
  Add(*q, 5, 1, kT0);
  EXPECT_THAT(Take(*q, kT0), ElementsAre(0, 1, 4, 5));
}

TEST_F(BatchQueueTest, Batcher_CancelledOldestRowDoesNotTriggerDispatch) {
  auto q = MakeQueue(Options(4));
  auto flag = std::make_shared<CancellationFlag>();
  Add(*q, 0, 1, kT0, {.cancellation = flag});
  Add(*q, 1, 1, kT0 + absl::Milliseconds(5));
  flag->Cancel();
  EXPECT_THAT(Take(*q, kT0 + kDelay), IsEmpty());
  EXPECT_THAT(DroppedIds(), ElementsAre(0));
  EXPECT_EQ(q->NextEventTime(kT0 + kDelay), kT0 + absl::Milliseconds(5) + kDelay);
}

TEST_F(BatchQueueTest, Batcher_QueueFullRefusesWholeCallAndCallerKeepsTasks) {
  auto q = MakeQueue(Options(4, kDelay, {}, /*max_queue=*/6));
  Add(*q, 0, 4, kT0);
  std::vector<std::unique_ptr<Task>> call = MakeTasks(&log_, 10, 3);
  EXPECT_THAT(q->Enqueue(&call, kT0),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("4 rows queued + 3 new > limit 6")));
  EXPECT_THAT(IdsOf(call), ElementsAre(10, 11, 12));  // untouched, not answered
  EXPECT_EQ(q->size(), 4);
  call.resize(2);
  EXPECT_THAT(q->Enqueue(&call, kT0), IsOk());
  EXPECT_EQ(q->size(), 6);
  EXPECT_EQ(log_.num_answers(), 0);
}

TEST_F(BatchQueueTest, Batcher_CallLargerThanQueueIsRefused) {
  auto q = MakeQueue(Options(4, kDelay, {}, /*max_queue=*/4));
  std::vector<std::unique_ptr<Task>> call = MakeTasks(&log_, 0, 5);
  EXPECT_THAT(q->Enqueue(&call, kT0), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit 4")));
  EXPECT_TRUE(q->empty());
}

TEST_F(BatchQueueTest, Batcher_HigherPriorityFirstThenFifo) {
  auto q = MakeQueue(Options(4, kDelay, {}, 64, /*levels=*/3));
  Add(*q, 0, 2, kT0, {.priority = 2});
  Add(*q, 10, 2, kT0, {.priority = 1});
  Add(*q, 20, 1, kT0, {.priority = 0});
  Add(*q, 12, 1, kT0, {.priority = 1});
  EXPECT_THAT(Take(*q, kT0), ElementsAre(20, 10, 11, 12));
  EXPECT_THAT(Take(*q, kT0), IsEmpty());
  EXPECT_THAT(Take(*q, kT0 + kDelay), ElementsAre(0, 1));
}

TEST_F(BatchQueueTest, Batcher_InvalidPriorityRefusesWholeCall) {
  auto q = MakeQueue(Options(4, kDelay, {}, 64, /*levels=*/2));
  std::vector<std::unique_ptr<Task>> call = MakeTasks(&log_, 0, 2);
  call[1]->set_priority(2);
  EXPECT_THAT(q->Enqueue(&call, kT0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row 1 has priority 2")));
  EXPECT_EQ(call.size(), 2u);
  EXPECT_TRUE(q->empty());
}

TEST_F(BatchQueueTest, Batcher_RowsOfOneCallStayInOrderAcrossBatches) {
  auto q = MakeQueue(Options(3));
  Add(*q, 0, 2, kT0);
  Add(*q, 100, 5, kT0);
  EXPECT_THAT(Take(*q, kT0), ElementsAre(0, 1, 100));
  EXPECT_THAT(Take(*q, kT0), ElementsAre(101, 102, 103));
  EXPECT_THAT(Take(*q, kT0 + kDelay), ElementsAre(104));
}

TEST_F(BatchQueueTest, Batcher_EnqueueSetsEnqueueTime) {
  auto q = MakeQueue(Options(1));
  Add(*q, 0, 1, kT0 + absl::Seconds(3));
  std::vector<std::unique_ptr<Task>> batch = q->TakeReadyBatch(kT0 + absl::Seconds(4), &dropped_);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0]->enqueue_time(), kT0 + absl::Seconds(3));
}

TEST_F(BatchQueueTest, Batcher_ClosedQueueRefusesNewRowsAndFlushesAtOnce) {
  auto q = MakeQueue(Options(4));
  Add(*q, 0, 5, kT0);
  q->Close();
  std::vector<std::unique_ptr<Task>> call = MakeTasks(&log_, 9, 1);
  EXPECT_THAT(q->Enqueue(&call, kT0), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  EXPECT_EQ(call.size(), 1u);
  EXPECT_THAT(Take(*q, kT0), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(Take(*q, kT0), ElementsAre(4));  // no waiting for the delay
  EXPECT_EQ(q->NextEventTime(kT0), absl::InfiniteFuture());
}

TEST_F(BatchQueueTest, Batcher_DropAllEmptiesTheQueue) {
  auto q = MakeQueue(Options(4));
  Add(*q, 0, 3, kT0, {.deadline = kT0 + absl::Seconds(1)});
  q->DropAll(absl::UnavailableError("bye"), &dropped_);
  EXPECT_THAT(DroppedIds(), ElementsAre(0, 1, 2));
  EXPECT_TRUE(q->empty());
  EXPECT_EQ(q->NextEventTime(kT0), absl::InfiniteFuture());
}

TEST(BatchingOptionsTest, Batcher_CreateValidatesOptions) {
  auto create = [](auto mutate) {
    BatchingOptions o;
    mutate(o);
    return BatchQueue::Create(o, "x").status();
  };
  EXPECT_THAT(create([](BatchingOptions&) {}), IsOk());
  EXPECT_THAT(create([](BatchingOptions& o) { o.max_batch_size = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_batch_size")));
  EXPECT_THAT(create([](BatchingOptions& o) { o.max_queue_delay = -absl::Milliseconds(1); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_queue_delay")));
  EXPECT_THAT(create([](BatchingOptions& o) {
                o.preferred_batch_sizes = {4, 2};
              }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("preferred_batch_sizes")));
  EXPECT_THAT(create([](BatchingOptions& o) {
                o.preferred_batch_sizes = {2, 9};
              }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("preferred_batch_sizes")));
  EXPECT_THAT(create([](BatchingOptions& o) { o.max_queue_size = 4; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_queue_size (4)")));
  EXPECT_THAT(create([](BatchingOptions& o) { o.priority_levels = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("priority_levels")));
}

}  // namespace
}  // namespace clipserve
