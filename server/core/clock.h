// The time source of the serving core, injected so that batching and shutdown tests are exact and instant.
#pragma once

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace clipserve {

// A clock: reads the time and waits on an absl::Mutex condition until a deadline on that clock. Everything in
// server/core that reads the time or waits for it goes through a Clock, so a fake clock (tests/testing/
// fake_clock.h) can drive it. Implementations are thread-safe; Now() never blocks and takes no lock.
//
// A component that waits on a clock registers the mutex it waits with (AddWaiter) for as long as it may wait,
// and unregisters it (RemoveWaiter) before the mutex is destroyed; neither may be called with that mutex held.
// A clock whose time jumps (a fake) locks and unlocks the registered mutexes after each jump, which makes
// absl::Mutex re-evaluate the waiters' conditions against the new time. The real clock ignores registrations.
class Clock {
 public:
  virtual ~Clock() = default;

  // The process-wide real clock (absl::Now()); never destroyed.
  static Clock* Real();

  virtual absl::Time Now() const = 0;

  // Waits until `cond` holds or Now() >= deadline, like absl::Mutex::AwaitWithDeadline: `mu` must be held
  // (exclusively); it is released while waiting and held again on return. Returns whether `cond` holds.
  // `cond` must read only state guarded by `mu`.
  virtual bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond, absl::Time deadline) = 0;

  virtual void AddWaiter(absl::Mutex* /*mu*/) {}
  virtual void RemoveWaiter(absl::Mutex* /*mu*/) {}
};

}  // namespace clipserve
