// A Clock that moves only when a test says so, for exact and instant batching and shutdown tests.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/clock.h"

namespace clipserve::testing {

// Time stands still until Advance() moves it; Advance then wakes every thread waiting on this clock whose
// deadline has come (by locking and unlocking the registered mutexes, which makes absl::Mutex re-evaluate
// their conditions). AwaitWithDeadline never times out in real time. Thread-safe.
//
// Lock order: waiters_mu_ -> a registered mutex (Advance); a registered mutex -> blocked_mu_ (a waiter).
// AddWaiter/RemoveWaiter are called without the registered mutex held (Clock's contract), Now() takes no lock.
class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1700000000)) : now_ns_(absl::ToUnixNanos(start)) {}

  absl::Time Now() const override { return absl::FromUnixNanos(now_ns_.load(std::memory_order_acquire)); }

  // Moves time forward by `d` (>= 0) and wakes the waiters whose deadline has come.
  void Advance(absl::Duration d) {
    now_ns_.fetch_add(absl::ToInt64Nanoseconds(d), std::memory_order_acq_rel);
    absl::MutexLock lock(&waiters_mu_);
    for (absl::Mutex* mu : waiters_) {
      mu->Lock();
      mu->Unlock();
    }
  }

  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline) override {
    struct CondOrDeadline {
      const absl::Condition* cond;
      const FakeClock* clock;
      absl::Time deadline;
      bool operator()() const { return cond->Eval() || clock->Now() >= deadline; }
    };
    const CondOrDeadline wake{&cond, this, deadline};
    {
      absl::MutexLock lock(&blocked_mu_);
      ++blocked_;
    }
    mu->Await(absl::Condition(&wake));
    {
      absl::MutexLock lock(&blocked_mu_);
      --blocked_;
    }
    return cond.Eval();
  }

  void AddWaiter(absl::Mutex* mu) override {
    absl::MutexLock lock(&waiters_mu_);
    waiters_.push_back(mu);
  }
  void RemoveWaiter(absl::Mutex* mu) override {
    absl::MutexLock lock(&waiters_mu_);
    auto it = std::find(waiters_.begin(), waiters_.end(), mu);
    if (it != waiters_.end()) waiters_.erase(it);
  }

  // Blocks (in real time, at most `timeout`) until at least `n` threads wait in AwaitWithDeadline; returns
  // whether they do. Lets a test advance time knowing a worker is already asleep.
  bool WaitForBlocked(int n, absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&blocked_mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(blocked_mu_) { return blocked_ >= n; };
    return blocked_mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }

  int blocked() const {
    absl::MutexLock lock(&blocked_mu_);
    return blocked_;
  }

 private:
  std::atomic<int64_t> now_ns_;
  absl::Mutex waiters_mu_;
  std::vector<absl::Mutex*> waiters_ ABSL_GUARDED_BY(waiters_mu_);
  mutable absl::Mutex blocked_mu_;
  int blocked_ ABSL_GUARDED_BY(blocked_mu_) = 0;
};

}  // namespace clipserve::testing
