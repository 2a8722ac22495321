// The assembled server: configuration → metrics, CPU pool, schedulers and workers per device, one ClipRuntime
// per model, the gRPC server (Clip and Generation services, grpc.health.v1, reflection; plaintext, TLS or mutual
// TLS, and bearer tokens for Clip and Generation, as config.security says) and the HTTP side port.
//
// Lifecycle: Create() (nothing listens yet) → Start() (ports bound, health NOT_SERVING, /readyz 503) →
// LoadModels() (models loaded and warmed up, workers started, health SERVING) → Shutdown() (health
// NOT_SERVING, new calls UNAVAILABLE, admitted calls finish within drain_timeout_ms, queued rows still
// unserved after it fail UNAVAILABLE, workers and servers stop). Start/LoadModels/Shutdown are called from one
// controlling thread (main); Shutdown may be called at any point after Create and is idempotent.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/service/config.h"

namespace clipserve::service {

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Create(const ServerConfig& config);
  ~Server();

  absl::Status Start();
  absl::Status LoadModels();
  void Shutdown();

  // The Prometheus exposition of the server's metrics (what /metrics serves).
  std::string CollectMetrics() const;

  // Bound ports (after Start).
  int grpc_port() const;
  int http_port() const;

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace clipserve::service
