#include "client/clip_client.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_interceptor.h>

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::client {
namespace {

constexpr char kServerPayloadUrl[] = "type.clipserve.dev/clipctl.ServerStatus";

template <typename Request, typename Response, typename Stub>
absl::StatusOr<Response> Unary(const ClipClient& client, Stub* stub,
                               grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                               const Request& request, const CallOptions& call) {
  grpc::ClientContext context;
  client.PrepareContext(call, &context);
  Response response;
  const grpc::Status status = (stub->*method)(&context, request, &response);
  if (!status.ok()) return client.ConvertStatus(status);
  return response;
}

// Adds `authorization: Bearer <token>` to the initial metadata of every call on the channel. An interceptor, not
// call credentials: gRPC refuses call credentials on a plaintext channel, and a token over plaintext is
// legitimate to a server behind a TLS-terminating proxy or mesh.
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::shared_ptr<const std::string> header) : header_(std::move(header)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::shared_ptr<const std::string> header_;
};

class BearerTokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : header_(std::make_shared<const std::string>(absl::StrCat("Bearer ", token))) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  const std::shared_ptr<const std::string> header_;
};

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what) {
  absl::StatusOr<std::string> text = ReadFileToString(path, 1u << 20);
  if (!text.ok()) return absl::Status(text.status().code(), absl::StrCat(what, ": ", text.status().message()));
  // gRPC would only fail at the first handshake, with an error that does not name the file.
  if (!absl::StrContains(*text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, ": not PEM (no -----BEGIN line)"));
  }
  return text;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const ChannelSecurity& s) {
  if (!s.tls_cert_file.empty() || !s.tls_key_file.empty()) {
    if (s.tls_cert_file.empty() || s.tls_key_file.empty()) {
      return absl::InvalidArgumentError("a client certificate needs both its certificate file and its key file");
    }
    if (!s.tls) return absl::InvalidArgumentError("a client certificate needs TLS");
  }
  if (!s.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!s.tls_ca_file.empty()) {
    CLIPSERVE_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(s.tls_ca_file, "TLS CA file"));
  }
  if (!s.tls_cert_file.empty()) {
    CLIPSERVE_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPemFile(s.tls_cert_file, "TLS client certificate"));
    CLIPSERVE_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPemFile(s.tls_key_file, "TLS client key"));
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClipChannel(const ClientOptions& options) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials, Credentials(options.security));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(-1);
  if (options.connection_index >= 0) {
    // A subchannel pool of this channel's own: channels to one target no longer share a TCP connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("clipctl.connection_index", options.connection_index);
  }
  if (options.security.tls && !options.security.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.security.tls_server_name);
  }
  if (options.security.token.empty()) return grpc::CreateCustomChannel(options.target, credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(options.security.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(options.target, credentials, args,
                                                                 std::move(interceptors));
}

absl::StatusOr<std::unique_ptr<ClipClient>> ClipClient::Create(const ClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("the target (HOST:PORT) is empty");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the timeout must be positive, not ", absl::FormatDuration(options.timeout)));
  }
  CLIPSERVE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, CreateClipChannel(options));
  return std::unique_ptr<ClipClient>(new ClipClient(options, std::move(channel)));
}

ClipClient::ClipClient(const ClientOptions& options, std::shared_ptr<grpc::Channel> channel)
    : options_(options),
      channel_(std::move(channel)),
      stub_(v1::Clip::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

void ClipClient::PrepareContext(const CallOptions& call, grpc::ClientContext* context) const {
  const absl::Duration timeout = call.timeout > absl::ZeroDuration() ? call.timeout : options_.timeout;
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

absl::Status ClipClient::ConvertStatus(const grpc::Status& status) const {
  return FromGrpcStatus(status, options_.target);
}

absl::StatusOr<v1::EmbedTextResponse> ClipClient::EmbedText(const v1::EmbedTextRequest& request,
                                                            const CallOptions& call) const {
  return Unary(*this, stub_.get(), &v1::Clip::Stub::EmbedText, request, call);
}

absl::StatusOr<v1::EmbedImageResponse> ClipClient::EmbedImage(const v1::EmbedImageRequest& request,
                                                              const CallOptions& call) const {
  return Unary(*this, stub_.get(), &v1::Clip::Stub::EmbedImage, request, call);
}

absl::StatusOr<v1::ClassifyResponse> ClipClient::Classify(const v1::ClassifyRequest& request,
                                                          const CallOptions& call) const {
  return Unary(*this, stub_.get(), &v1::Clip::Stub::Classify, request, call);
}

absl::StatusOr<v1::RankResponse> ClipClient::Rank(const v1::RankRequest& request, const CallOptions& call) const {
  return Unary(*this, stub_.get(), &v1::Clip::Stub::Rank, request, call);
}

absl::StatusOr<v1::SimilarityResponse> ClipClient::Similarity(const v1::SimilarityRequest& request,
                                                              const CallOptions& call) const {
  return Unary(*this, stub_.get(), &v1::Clip::Stub::Similarity, request, call);
}

absl::StatusOr<v1::TokenizeResponse> ClipClient::Tokenize(const v1::TokenizeRequest& request,
                                                          const CallOptions& call) const {
  return Unary(*this, stub_.get(), &v1::Clip::Stub::Tokenize, request, call);
}

absl::StatusOr<v1::ListModelsResponse> ClipClient::ListModels(const CallOptions& call) const {
  return Unary(*this, stub_.get(), &v1::Clip::Stub::ListModels, v1::ListModelsRequest(), call);
}

absl::StatusOr<v1::ModelInfo> ClipClient::GetModel(const std::string& name, const CallOptions& call) const {
  v1::GetModelRequest request;
  request.set_name(name);
  return Unary(*this, stub_.get(), &v1::Clip::Stub::GetModel, request, call);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse> ClipClient::CheckHealth(const std::string& service,
                                                                              const CallOptions& call) const {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  return Unary(*this, health_.get(), &grpc::health::v1::Health::Stub::Check, request, call);
}

absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view target) {
  if (status.ok()) return absl::OkStatus();
  const std::string& message = status.error_message();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    // gRPC's own connection failures ("failed to connect to all addresses; last error: UNKNOWN:
    // ipv4:127.0.0.1:8500: Failed to connect to remote host: Connection refused", "DNS resolution failed ...").
    const std::string lower = absl::AsciiStrToLower(message);
    std::string reason;
    if (absl::StrContains(lower, "connection refused")) {
      reason = "connection refused";
    } else if (absl::StrContains(lower, "dns resolution failed") || absl::StrContains(lower, "name resolution") ||
               absl::StrContains(lower, "could not resolve") || absl::StrContains(lower, "domain name not found")) {
      reason = "cannot resolve the host name";
    } else if (absl::StrContains(lower, "ssl") || absl::StrContains(lower, "handshake")) {
      // "... Ssl handshake failed: SSL_ERROR_SSL: error:0A000086:SSL routines::certificate verify failed": the
      // server is there; its certificate, ours, or a TLS/plaintext mismatch is the problem.
      return absl::UnavailableError(absl::StrCat("cannot reach ", target, ": TLS handshake failed (", message, ")"));
    } else if (absl::StrContains(lower, "failed to connect") || absl::StrContains(lower, "connect failed")) {
      reason = message;
    }
    if (!reason.empty()) {
      const bool name_failed = reason == "cannot resolve the host name";
      return absl::UnavailableError(
          absl::StrCat("cannot reach ", target, ": ", reason, name_failed ? "" : " (is the server running?)"));
    }
  }
  absl::Status out(code, message);
  out.SetPayload(kServerPayloadUrl, absl::Cord("server"));
  return out;
}

bool IsServerStatus(const absl::Status& status) { return status.GetPayload(kServerPayloadUrl).has_value(); }

std::string TargetHost(absl::string_view target) {
  if (absl::StartsWith(target, "unix:") || absl::StartsWith(target, "unix-abstract:")) return "";
  const size_t scheme = target.find("://");
  if (scheme != absl::string_view::npos) {
    target.remove_prefix(scheme + 3);
    const size_t slash = target.find('/');  // dns://AUTHORITY/host:port
    if (slash != absl::string_view::npos) target.remove_prefix(slash + 1);
  } else if (absl::StartsWith(target, "dns:") || absl::StartsWith(target, "ipv4:") ||
             absl::StartsWith(target, "ipv6:")) {
    target.remove_prefix(target.find(':') + 1);
  }
  if (absl::StartsWith(target, "[")) {
    const size_t close = target.find(']');
    return close == absl::string_view::npos ? std::string(target) : std::string(target.substr(0, close + 1));
  }
  const size_t colon = target.rfind(':');
  return std::string(colon == absl::string_view::npos ? target : target.substr(0, colon));
}

}  // namespace clipserve::client
