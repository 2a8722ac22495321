// A small C++ client for clipserve: a thin wrapper over the generated clipserve.v1.Clip and grpc.health.v1.Health
// stubs that gives every call a deadline and answers absl::StatusOr, with the gRPC status converted (same code,
// same message; a failure to connect becomes UNAVAILABLE "cannot reach TARGET: ... (is the server running?)").
//
//   CLIPSERVE_ASSIGN_OR_RETURN(auto client, ClipClient::Create({.target = "localhost:8500"}));
//   v1::EmbedTextRequest req;
//   req.add_texts("a photo of a cat");
//   CLIPSERVE_ASSIGN_OR_RETURN(v1::EmbedTextResponse resp, client->EmbedText(req));
//
// A ClipClient is thread-safe: any thread may call it concurrently. Calls block until the answer or the
// deadline; for asynchronous calls use stub() with gRPC's callback API.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "clipserve/v1/clipserve.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace clipserve::client {

// How a channel authenticates the server and itself (docs/operations.md, "Security").
struct ChannelSecurity {
  // TLS: off (plaintext) unless `tls` is set. The server's certificate is checked against the CA certificates
  // in tls_ca_file (PEM), or against the system's roots when it is empty.
  bool tls = false;
  std::string tls_ca_file;
  // Mutual TLS: a client certificate chain and its key (PEM files), both or neither; needs `tls`.
  std::string tls_cert_file;
  std::string tls_key_file;
  // The name the server's certificate must carry when it differs from the target's host (connecting by IP
  // address, or through a tunnel). Empty: the target's host.
  std::string tls_server_name;
  // Sent as `authorization: Bearer <token>` with every call when not empty.
  std::string token;
};

struct ClientOptions {
  // A gRPC target: "host:port", "dns:///host:port", "unix:/path", ...
  std::string target = "localhost:8500";
  // Deadline of each call that does not give its own (CallOptions::timeout).
  absl::Duration timeout = absl::Seconds(30);
  // Largest response accepted.
  int max_receive_message_bytes = 64 << 20;
  // -1: share the process-wide connection to the target (gRPC's default). N >= 0: a TCP connection of this
  // channel's own; load generators open several to spread calls over the server's threads.
  int connection_index = -1;
  ChannelSecurity security;
};

struct CallOptions {
  // Deadline of this call, measured from its start; zero uses ClientOptions::timeout.
  absl::Duration timeout = absl::ZeroDuration();
};

class ClipClient {
 public:
  // INVALID_ARGUMENT for an empty target, a non-positive timeout or unusable security options (an unreadable
  // certificate file: NOT_FOUND or INVALID_ARGUMENT naming it). Does not connect: the first call does.
  static absl::StatusOr<std::unique_ptr<ClipClient>> Create(const ClientOptions& options);

  absl::StatusOr<v1::EmbedTextResponse> EmbedText(const v1::EmbedTextRequest& request,
                                                  const CallOptions& call = CallOptions()) const;
  absl::StatusOr<v1::EmbedImageResponse> EmbedImage(const v1::EmbedImageRequest& request,
                                                    const CallOptions& call = CallOptions()) const;
  absl::StatusOr<v1::ClassifyResponse> Classify(const v1::ClassifyRequest& request,
                                                const CallOptions& call = CallOptions()) const;
  absl::StatusOr<v1::RankResponse> Rank(const v1::RankRequest& request, const CallOptions& call = CallOptions()) const;
  absl::StatusOr<v1::SimilarityResponse> Similarity(const v1::SimilarityRequest& request,
                                                    const CallOptions& call = CallOptions()) const;
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& request,
                                                const CallOptions& call = CallOptions()) const;
  absl::StatusOr<v1::ListModelsResponse> ListModels(const CallOptions& call = CallOptions()) const;
  absl::StatusOr<v1::ModelInfo> GetModel(const std::string& name, const CallOptions& call = CallOptions()) const;
  // grpc.health.v1.Health/Check for `service` ("" is the whole server).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse> CheckHealth(const std::string& service,
                                                                    const CallOptions& call = CallOptions()) const;

  // The generated stub, for the async and callback APIs; the caller converts statuses with ConvertStatus.
  v1::Clip::Stub* stub() const { return stub_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }
  // FromGrpcStatus for this client's target.
  absl::Status ConvertStatus(const grpc::Status& status) const;
  // A context with this client's deadline (or the call's own).
  void PrepareContext(const CallOptions& call, grpc::ClientContext* context) const;

 private:
  ClipClient(const ClientOptions& options, std::shared_ptr<grpc::Channel> channel);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Clip::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// A channel to `target` with `security` (see ClientOptions for connection_index). Reads the certificate files;
// errors as for ClipClient::Create.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClipChannel(const ClientOptions& options);

// A gRPC status as absl::Status with the same code and message, marked as coming from the server (see
// IsServerStatus). UNAVAILABLE because the channel could not connect becomes "cannot reach TARGET: REASON (is
// the server running?)", or "cannot reach TARGET: TLS handshake failed: ..." when TLS is what failed, and is not
// marked.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view target);

// True for statuses that FromGrpcStatus converted from a server's answer (clipctl prints them as
// "CODE: message").
bool IsServerStatus(const absl::Status& status);

// "localhost:8500" -> "localhost", "dns:///h:1" -> "h", "[::1]:8500" -> "[::1]"; empty for unix sockets and
// other targets without a host.
std::string TargetHost(absl::string_view target);

}  // namespace clipserve::client
