// The HTTP/JSON gateway on the HTTP side port: the Clip and Generation calls for clients that cannot speak
// gRPC (browsers, shell scripts), and the web demo.
//
//   POST /v1/embed/text, /v1/embed/image, /v1/classify, /v1/rank, /v1/similarity, /v1/tokenize
//   GET  /v1/models                      request and response messages in protobuf's JSON mapping
//   POST /v1/generate                    GenerateRequest in, Server-Sent Events out: `accepted`, `progress`,
//   GET  /v1/generations/watch?job_id=   `completed` (frames base64 in the JSON), or one `error` event
//   POST /v1/generations/cancel          CancelGenerationRequest in, GenerationInfo out
//   GET  /v1/generations                 ListGenerationsResponse
//   GET  /, /app.js, /style.css          the web demo (web/, built into the binary)
//
// The gateway owns no serving logic: every call goes through the gRPC server's in-process channel, so limits,
// validation, error codes, metrics and bearer tokens (the `Authorization` header is passed on as metadata)
// are the gRPC port's. A gRPC error becomes an HTTP status (docs/api.md has the table) and a body
// {"error": {"code": <http status>, "status": "INVALID_ARGUMENT", "message": "..."}}. An event stream whose
// client goes away cancels its call, so the job stops within a step unless the request set `detach`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clipserve/v1/clipserve.grpc.pb.h"
#include "server/http/http_server.h"

namespace clipserve::service {

class Gateway {
 public:
  struct Options {
    // Origins that get CORS headers: exact, or "*" for any. Empty: none.
    std::vector<std::string> cors_allowed_origins;
    // Deadline of a unary call without an X-Timeout-Ms header.
    absl::Duration default_timeout = absl::Seconds(60);
    // Serve the web demo at /.
    bool web_demo = true;
  };

  explicit Gateway(Options options);

  // Adds the routes to `server` (which must be stopped).
  absl::Status Register(http::HttpServer* server);
  // The channel the calls go through (the gRPC server's in-process channel). Until it is set the routes
  // answer 503.
  void SetChannel(std::shared_ptr<grpc::Channel> channel);

  // The HTTP status for a gRPC status code (Google's HTTP mapping; CANCELLED is 499).
  static int HttpStatusFor(grpc::StatusCode code);

 private:
  struct Stubs {
    std::unique_ptr<v1::Clip::Stub> clip;
    std::unique_ptr<v1::Generation::Stub> generation;
  };
  template <typename Request, typename Reply, typename Stub>
  http::Response Unary(const http::Request& http_request,
                       grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Reply*),
                       std::unique_ptr<Stub> Stubs::*which) const;
  void Stream(const http::Request& http_request, http::ResponseWriter& writer, bool watch) const;

  // The stubs, or null before SetChannel.
  std::shared_ptr<const Stubs> stubs() const;
  // CORS headers for the request's Origin, if it is allowed.
  std::vector<std::pair<std::string, std::string>> CorsHeaders(const http::Request& request) const;
  http::Response Error(const http::Request& request, grpc::StatusCode code, const std::string& message) const;
  // Sets the deadline (X-Timeout-Ms or the default; none for streams unless the header asks) and passes on
  // the Authorization header. False with `error` set for a malformed X-Timeout-Ms.
  bool PrepareContext(const http::Request& request, bool stream, grpc::ClientContext* context,
                      http::Response* error) const;

  const Options options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const Stubs> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace clipserve::service
