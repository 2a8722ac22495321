// The operational endpoints of the HTTP side port: /metrics, /healthz, /readyz.
#pragma once

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "server/common/metrics.h"
#include "server/http/http_server.h"

namespace clipserve::http {

// Whether the process should receive traffic: OK when ready, else a status whose message says why not
// ("models loading", "draining"). Called on HTTP worker threads, concurrently: thread-safe and quick.
using ReadinessCheck = absl::AnyInvocable<absl::Status() const>;

// Registers on a stopped `server`:
//   GET /metrics  200, metrics::kPrometheusContentType, registry->Collect()
//   GET /healthz  200 "ok" while the process serves HTTP at all (liveness)
//   GET /readyz   200 "ready" when `readiness` returns OK, else 503 "not ready: <message>"
// `registry` must outlive the server's running. Errors are Handle()'s.
absl::Status AddObservabilityHandlers(HttpServer* server, const metrics::Registry* registry, ReadinessCheck readiness);

}  // namespace clipserve::http
