// Ctrl-C for a command that must end a call cleanly instead of dying mid-stream. While an InterruptWatcher
// lives, the first SIGINT does not kill the process: it runs `on_interrupt` once, on the watcher's own thread
// (clipctl cancels its gRPC stream there, so that the server cancels the job). A second SIGINT kills the process
// as usual. The signal handler only writes a byte to a pipe (async-signal-safe); the watcher's thread blocks
// reading that pipe, so nothing polls. A process whose SIGINT is ignored (a background job, nohup) keeps it
// ignored. At most one InterruptWatcher may exist at a time; create and destroy it on one thread.
#pragma once

#include <signal.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"

namespace clipserve::client {

class InterruptWatcher {
 public:
  // Installs the SIGINT handler and starts the thread. INTERNAL when the pipe or the handler cannot be set up;
  // FAILED_PRECONDITION when another InterruptWatcher exists.
  static absl::StatusOr<std::unique_ptr<InterruptWatcher>> Create(std::function<void()> on_interrupt);
  // Restores the previous SIGINT action, then stops and joins the thread (waiting for a running on_interrupt).
  ~InterruptWatcher();
  InterruptWatcher(const InterruptWatcher&) = delete;
  InterruptWatcher& operator=(const InterruptWatcher&) = delete;

  // True once on_interrupt has started.
  bool interrupted() const { return interrupted_.load(); }

 private:
  InterruptWatcher(std::function<void()> on_interrupt, int read_fd, int write_fd);
  void Run();

  const std::function<void()> on_interrupt_;
  const int read_fd_;
  const int write_fd_;
  struct sigaction previous_ {};
  std::atomic<bool> interrupted_{false};
  std::thread thread_;
};

}  // namespace clipserve::client
