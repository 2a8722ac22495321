// Two small macros for absl::Status plumbing (Debian's abseil 20220623 has neither).
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CLIPSERVE_STATUS_CONCAT_INNER_(a, b) a##b
#define CLIPSERVE_STATUS_CONCAT_(a, b) CLIPSERVE_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function if it is not OK.
#define CLIPSERVE_RETURN_IF_ERROR(expr)                   \
  do {                                                    \
    ::absl::Status clipserve_status_ = (expr);            \
    if (!clipserve_status_.ok()) return clipserve_status_; \
  } while (0)

// `CLIPSERVE_ASSIGN_OR_RETURN(auto x, MakeX());` assigns the value of a StatusOr or returns its error.
#define CLIPSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  CLIPSERVE_ASSIGN_OR_RETURN_IMPL_(CLIPSERVE_STATUS_CONCAT_(clipserve_statusor_, __LINE__), lhs, expr)

#define CLIPSERVE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                     \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = std::move(statusor).value()
