// The one place where absl::Status becomes grpc::Status (the codes share their numbering).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace clipserve::service {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace clipserve::service
