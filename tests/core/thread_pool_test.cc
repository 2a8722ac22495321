#include "server/core/thread_pool.h"

#include <atomic>
#include <memory>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace clipserve {
namespace {

using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(10);  // bound on real-time waits; never reached when passing

TEST(ThreadPoolTest, ThreadPool_RunsEveryScheduledClosureBeforeDestruction) {
  std::atomic<int> ran{0};
  {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, ThreadPool::Create({.num_threads = 2}));
    EXPECT_EQ(pool->num_threads(), 2);
    for (int i = 0; i < 1000; ++i) ASSERT_THAT(pool->Schedule([&ran] { ran.fetch_add(1); }), IsOk());
  }
  EXPECT_EQ(ran.load(), 1000);
}

TEST(ThreadPoolTest, ThreadPool_RunsClosuresOnAllThreadsAtOnce) {
  constexpr int kThreads = 3;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, ThreadPool::Create({.num_threads = kThreads}));
  absl::Mutex mu;
  int arrived = 0;
  std::atomic<int> met{0};
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_THAT(pool->Schedule([&] {
      absl::MutexLock lock(&mu);
      ++arrived;
      // Each closure waits for all of them: only possible if they run on distinct threads at the same time.
      auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return arrived == kThreads; };
      if (mu.AwaitWithTimeout(absl::Condition(&all), kWait)) met.fetch_add(1);
    }),
                IsOk());
  }
  pool.reset();
  EXPECT_EQ(met.load(), kThreads);
}

TEST(ThreadPoolTest, ThreadPool_BoundedQueueRefusesWhenFull) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool,
                                 ThreadPool::Create({.num_threads = 1, .max_queue_size = 2, .name = "decode pool"}));
  absl::Notification started, release;
  std::atomic<int> ran{0};
  ASSERT_THAT(pool->Schedule([&] {
    started.Notify();
    release.WaitForNotificationWithTimeout(kWait);
    ran.fetch_add(1);
  }),
              IsOk());
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(kWait));  // the only thread is busy, the queue is empty
  EXPECT_THAT(pool->Schedule([&] { ran.fetch_add(1); }), IsOk());
  EXPECT_THAT(pool->Schedule([&] { ran.fetch_add(1); }), IsOk());
  EXPECT_EQ(pool->queue_size(), 2);
  EXPECT_THAT(pool->Schedule([&] { ran.fetch_add(100); }),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("decode pool queue is full")));
  release.Notify();
  pool.reset();
  EXPECT_EQ(ran.load(), 3);
}

TEST(ThreadPoolTest, ThreadPool_ClosureMayScheduleMoreWork) {
  std::atomic<int> ran{0};
  {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, ThreadPool::Create({.num_threads = 1}));
    ThreadPool* p = pool.get();
    ASSERT_THAT(pool->Schedule([&ran, p] {
      ran.fetch_add(1);
      EXPECT_THAT(p->Schedule([&ran] { ran.fetch_add(1); }), IsOk());
    }),
                IsOk());
  }
  EXPECT_EQ(ran.load(), 2);
}

TEST(ThreadPoolTest, ThreadPool_RejectsBadOptionsAndEmptyClosures) {
  EXPECT_THAT(ThreadPool::Create({.num_threads = 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_threads")));
  EXPECT_THAT(ThreadPool::Create({.num_threads = 1, .max_queue_size = -1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_queue_size")));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto pool, ThreadPool::Create({}));
  EXPECT_THAT(pool->Schedule(nullptr), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

}  // namespace
}  // namespace clipserve
