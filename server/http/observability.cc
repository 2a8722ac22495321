#include "server/http/observability.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace clipserve::http {

absl::Status AddObservabilityHandlers(HttpServer* server, const metrics::Registry* registry, ReadinessCheck readiness) {
  if (registry == nullptr || !readiness) {
    return absl::InvalidArgumentError("http: observability handlers need a registry and a readiness check");
  }
  CLIPSERVE_RETURN_IF_ERROR(server->Handle("GET", "/metrics", [registry](const Request&) {
    Response response;
    response.content_type = metrics::kPrometheusContentType;
    response.body = registry->Collect();
    return response;
  }));
  CLIPSERVE_RETURN_IF_ERROR(
      server->Handle("GET", "/healthz", [](const Request&) { return Response::Text(200, "ok\n"); }));
  CLIPSERVE_RETURN_IF_ERROR(server->Handle("GET", "/readyz", [readiness = std::move(readiness)](const Request&) {
    const absl::Status status = readiness();
    if (status.ok()) return Response::Text(200, "ready\n");
    return Response::Text(503, absl::StrCat("not ready: ", status.message(), "\n"));
  }));
  return absl::OkStatus();
}

}  // namespace clipserve::http
