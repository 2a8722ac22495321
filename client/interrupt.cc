#include "client/interrupt.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace clipserve::client {
namespace {

constexpr char kInterrupt = 'i';
constexpr char kStop = 's';

// The write end of the live watcher's pipe, or -1. Lock-free, so the handler may read it.
std::atomic<int> g_write_fd{-1};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void OnSigint(int) {
  const int saved_errno = errno;
  const int fd = g_write_fd.load();
  if (fd >= 0) {
    if (::write(fd, &kInterrupt, 1) < 0) {
      // Nothing to do in a handler; the pipe cannot be full (the watcher reads every byte).
    }
  }
  errno = saved_errno;
}

}  // namespace

absl::StatusOr<std::unique_ptr<InterruptWatcher>> InterruptWatcher::Create(std::function<void()> on_interrupt) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  int expected = -1;
  if (!g_write_fd.compare_exchange_strong(expected, fds[1])) {
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::FailedPreconditionError("another InterruptWatcher is active");
  }
  std::unique_ptr<InterruptWatcher> watcher(new InterruptWatcher(std::move(on_interrupt), fds[0], fds[1]));
  // A process started with SIGINT ignored (a background job of a non-interactive shell, nohup) keeps it so.
  if (::sigaction(SIGINT, nullptr, &watcher->previous_) == 0 && watcher->previous_.sa_handler == SIG_IGN) {
    return watcher;
  }
  struct sigaction action {};
  action.sa_handler = OnSigint;
  sigemptyset(&action.sa_mask);
  // SA_RESETHAND: a second Ctrl-C gets the default action (the process ends) if cancelling hangs.
  action.sa_flags = SA_RESTART | SA_RESETHAND;
  if (::sigaction(SIGINT, &action, &watcher->previous_) != 0) {
    // The destructor must not restore an action it did not save: save the current one.
    ::sigaction(SIGINT, nullptr, &watcher->previous_);
    return absl::InternalError(absl::StrCat("sigaction(SIGINT): ", std::strerror(errno)));
  }
  return watcher;
}

InterruptWatcher::InterruptWatcher(std::function<void()> on_interrupt, int read_fd, int write_fd)
    : on_interrupt_(std::move(on_interrupt)), read_fd_(read_fd), write_fd_(write_fd) {
  thread_ = std::thread([this] { Run(); });
}

InterruptWatcher::~InterruptWatcher() {
  ::sigaction(SIGINT, &previous_, nullptr);
  g_write_fd.store(-1);
  while (::write(write_fd_, &kStop, 1) < 0 && errno == EINTR) {
  }
  thread_.join();
  ::close(read_fd_);
  ::close(write_fd_);
}

void InterruptWatcher::Run() {
  for (;;) {
    char byte = 0;
    const ssize_t n = ::read(read_fd_, &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || byte == kStop) return;
    if (!interrupted_.exchange(true)) on_interrupt_();
  }
}

}  // namespace clipserve::client
