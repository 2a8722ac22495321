// Security of the gRPC port: the server credentials (plaintext, TLS or mutual TLS) and the bearer-token check,
// both built once at start-up from the config's `security` block (proto/clipserve/v1/config.proto).
//
// The token check runs in the services, not in a gRPC AuthMetadataProcessor: a processor would guard every
// service on the port, and grpc.health.v1 (Kubernetes probes) and reflection must stay open; it also needs TLS
// credentials, while tokens over plaintext are legitimate behind a TLS-terminating proxy or mesh.
#pragma once

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/string_ref.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/service/config.h"

namespace clipserve::service {

// Checks `authorization: Bearer <token>` against a fixed set of tokens. Only SHA-256 digests of the tokens are
// kept, and a presented token is compared with every one of them in constant time (CRYPTO_memcmp, no early
// exit), so neither the position of a mismatch nor which token nearly matched shows in the timing; comparing
// digests also hides the tokens' lengths. Tokens never appear in statuses or logs. Immutable after Create
// (CheckCall's rate-limited log aside): any thread may call it.
class BearerAuth {
 public:
  // INVALID_ARGUMENT when `tokens` is empty or a token is empty or not printable ASCII without spaces.
  static absl::StatusOr<std::unique_ptr<BearerAuth>> Create(const std::vector<std::string>& tokens);

  // UNAUTHENTICATED unless the metadata has exactly one `authorization` entry carrying a configured token.
  absl::Status Check(const std::multimap<grpc::string_ref, grpc::string_ref>& client_metadata) const;
  // The same for the value of an Authorization header ("Bearer <token>"; the scheme is case-insensitive,
  // spaces around the token are ignored); an empty value means the header is missing. For the HTTP gateway.
  absl::Status Check(absl::string_view authorization) const;
  // Check on a call's metadata; a refusal is logged (at most one line every few seconds, with the number of
  // refusals since the last line, so that a client retrying with a bad token cannot flood the log).
  absl::Status CheckCall(const grpc::ServerContextBase& context, absl::string_view method) const;

  int token_count() const { return static_cast<int>(digests_.size()); }

 private:
  using Digest = std::array<uint8_t, 32>;
  explicit BearerAuth(std::vector<Digest> digests) : digests_(std::move(digests)) {}

  const std::vector<Digest> digests_;
  mutable absl::Mutex log_mu_;
  mutable absl::Time next_log_ ABSL_GUARDED_BY(log_mu_) = absl::InfinitePast();
  mutable int64_t refused_since_log_ ABSL_GUARDED_BY(log_mu_) = 0;
};

// A `security` block with its files read: what the gRPC port listens with.
struct ServerSecurity {
  // Insecure (plaintext) when the config has no TLS certificate.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Null when calls need no token.
  std::unique_ptr<BearerAuth> auth;
  bool tls = false;
  bool mutual_tls = false;
  // For the start-up log: what is on, the certificate's subject and expiry, how many tokens; never a secret.
  std::string summary;
};

// Reads the files and the environment variable named by `config` (whose relative paths must already be
// resolved, as FinalizeServerConfig does) and checks them: certificates and key parse, the key belongs to the
// certificate, tokens are well-formed. INVALID_ARGUMENT (NOT_FOUND for a missing file) naming the field
// ("security.tls_key_file: ..."). Never includes a token or key material in a message.
absl::StatusOr<ServerSecurity> LoadServerSecurity(const SecurityConfig& config);

}  // namespace clipserve::service
