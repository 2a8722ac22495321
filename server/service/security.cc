// Server credentials and the bearer-token check (see security.h).
#include "server/service/security.h"

#include <grpcpp/security/server_credentials.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::service {
namespace {

constexpr char kHowToSend[] = "send 'authorization: Bearer <token>'";
constexpr size_t kMaxTokenBytes = 4096;
constexpr uint64_t kMaxPemBytes = 1u << 20;
constexpr absl::Duration kRefusalLogInterval = absl::Seconds(10);

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("security.", field, ": ", what));
}

// Printable ASCII without spaces: what a header value can carry unquoted, and what a token file line can hold
// without ambiguity.
bool ValidToken(absl::string_view token) {
  if (token.empty() || token.size() > kMaxTokenBytes) return false;
  for (char c : token) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buffer[256];
  ERR_error_string_n(e, buffer, sizeof(buffer));
  return buffer;
}

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

// OpenSSL's passphrase callback, giving none: without one, an encrypted key would make OpenSSL prompt on the
// terminal; gRPC cannot use an encrypted key anyway.
int NoPassphrase(char* /*buffer*/, int /*size*/, int /*writing*/, void* /*data*/) { return 0; }

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
}

// The certificates in `pem`, at least one; INVALID_ARGUMENT naming `field` otherwise.
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& pem, absl::string_view field,
                                                       const std::string& path) {
  ERR_clear_error();
  std::vector<X509Ptr> certificates;
  BioPtr bio = MemoryBio(pem);
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certificates.emplace_back(x, &X509_free);
  // The loop ends at the end of the text ("no start line") or at a malformed block.
  const unsigned long e = ERR_peek_last_error();
  const bool at_end = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
  if (!at_end && e != 0) return Bad(field, absl::StrCat(path, ": malformed PEM certificate: ", OpenSslError()));
  ERR_clear_error();
  if (certificates.empty()) return Bad(field, absl::StrCat(path, ": no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  return certificates;
}

std::string Describe(X509* certificate) {
  std::string subject = "?";
  if (char* s = X509_NAME_oneline(X509_get_subject_name(certificate), nullptr, 0)) {
    subject = s;
    OPENSSL_free(s);
  }
  std::string expiry = "?";
  BioPtr out(BIO_new(BIO_s_mem()), &BIO_free);
  if (ASN1_TIME_print(out.get(), X509_get0_notAfter(certificate)) == 1) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(out.get(), &data);
    expiry.assign(data, static_cast<size_t>(n));
  }
  return absl::StrCat("certificate ", subject, ", valid until ", expiry);
}

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view field) {
  absl::StatusOr<std::string> text = ReadFileToString(path, kMaxPemBytes);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("security.", field, ": ", text.status().message()));
  }
  return text;
}

// Every token of the config: the file's lines, then the environment variable's comma-separated values.
absl::StatusOr<std::vector<std::string>> LoadTokens(const SecurityConfig& config) {
  std::vector<std::string> tokens;
  if (!config.tokens_file().empty()) {
    CLIPSERVE_ASSIGN_OR_RETURN(std::string text, ReadPem(config.tokens_file(), "tokens_file"));
    int line_number = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      ++line_number;
      line = absl::StripAsciiWhitespace(line);  // also the '\r' of CRLF files
      if (line.empty() || absl::StartsWith(line, "#")) continue;
      if (!ValidToken(line)) {
        return Bad("tokens_file", absl::StrCat(config.tokens_file(), ": line ", line_number,
                                               ": a token is 1 to 4096 printable ASCII characters without spaces"));
      }
      tokens.emplace_back(line);
    }
    if (tokens.empty()) return Bad("tokens_file", absl::StrCat(config.tokens_file(), ": no token in the file"));
  }
  if (!config.tokens_env().empty()) {
    const char* value = std::getenv(config.tokens_env().c_str());
    if (value == nullptr || *value == '\0') {
      return Bad("tokens_env", absl::StrCat("the environment variable ", config.tokens_env(), " is not set or empty"));
    }
    const size_t before = tokens.size();
    int index = 0;
    for (absl::string_view token : absl::StrSplit(value, ',')) {
      ++index;
      token = absl::StripAsciiWhitespace(token);
      if (token.empty()) continue;
      if (!ValidToken(token)) {
        return Bad("tokens_env", absl::StrCat(config.tokens_env(), ": token ", index,
                                              " is not 1 to 4096 printable ASCII characters without spaces"));
      }
      tokens.emplace_back(token);
    }
    if (tokens.size() == before) {
      return Bad("tokens_env", absl::StrCat("the environment variable ", config.tokens_env(), " holds no token"));
    }
  }
  return tokens;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BearerAuth>> BearerAuth::Create(const std::vector<std::string>& tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("bearer-token auth needs at least one token");
  std::vector<Digest> digests;
  digests.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!ValidToken(tokens[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", i + 1, " is not 1 to 4096 printable ASCII characters without spaces"));
    }
    Digest d;
    if (EVP_Digest(tokens[i].data(), tokens[i].size(), d.data(), nullptr, EVP_sha256(), nullptr) != 1) {
      return absl::InternalError(absl::StrCat("SHA-256: ", OpenSslError()));
    }
    digests.push_back(d);
  }
  return std::unique_ptr<BearerAuth>(new BearerAuth(std::move(digests)));
}

absl::Status BearerAuth::Check(const std::multimap<grpc::string_ref, grpc::string_ref>& client_metadata) const {
  // gRPC lower-cases metadata keys.
  const auto [begin, end] = client_metadata.equal_range("authorization");
  if (begin == end) return Check(absl::string_view());
  if (std::next(begin) != end) {
    return absl::UnauthenticatedError(
        absl::StrCat("more than one authorization metadata entry; ", kHowToSend, " once"));
  }
  return Check(absl::string_view(begin->second.data(), begin->second.size()));
}

absl::Status BearerAuth::Check(absl::string_view authorization) const {
  authorization = absl::StripAsciiWhitespace(authorization);
  if (authorization.empty()) {
    return absl::UnauthenticatedError(absl::StrCat("missing authorization metadata: ", kHowToSend));
  }
  const size_t space = authorization.find_first_of(" \t");
  const absl::string_view scheme = authorization.substr(0, space);
  if (!absl::EqualsIgnoreCase(scheme, "bearer")) {
    // Not even the scheme is echoed: a client that sends a bare token would see it in the message (and the log).
    return absl::UnauthenticatedError(
        absl::StrCat("authorization metadata does not use the Bearer scheme: ", kHowToSend));
  }
  const absl::string_view token = space == absl::string_view::npos
                                      ? absl::string_view()
                                      : absl::StripLeadingAsciiWhitespace(authorization.substr(space));
  if (token.empty()) return absl::UnauthenticatedError(absl::StrCat("empty bearer token: ", kHowToSend));
  Digest presented;
  if (EVP_Digest(token.data(), token.size(), presented.data(), nullptr, EVP_sha256(), nullptr) != 1) {
    return absl::InternalError(absl::StrCat("SHA-256: ", OpenSslError()));
  }
  // Every configured digest is compared, whatever the earlier ones gave, and the results are OR-ed without a
  // branch: the time does not depend on which token matched, or on how much of one did.
  int matched = 0;
  for (const Digest& d : digests_) {
    matched |= static_cast<int>(CRYPTO_memcmp(d.data(), presented.data(), d.size()) == 0);
  }
  if (matched == 0) return absl::UnauthenticatedError("invalid bearer token");
  return absl::OkStatus();
}

absl::Status BearerAuth::CheckCall(const grpc::ServerContextBase& context, absl::string_view method) const {
  absl::Status status = Check(context.client_metadata());
  if (status.ok()) return status;
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&log_mu_);
  ++refused_since_log_;
  if (now >= next_log_) {
    const std::string more =
        refused_since_log_ > 1
            ? absl::StrCat(" (and ", refused_since_log_ - 1, " more refused since the last such line; one line per ",
                           absl::FormatDuration(kRefusalLogInterval), " at most)")
            : "";
    spdlog::warn("refused {} from {}: UNAUTHENTICATED: {}{}", std::string(method), context.peer(),
                 std::string(status.message()), more);
    refused_since_log_ = 0;
    next_log_ = now + kRefusalLogInterval;
  }
  return status;
}

absl::StatusOr<ServerSecurity> LoadServerSecurity(const SecurityConfig& config) {
  if (!config.tls_key_file().empty() && config.tls_cert_file().empty()) {
    return Bad("tls_key_file", "is set without tls_cert_file; TLS needs both the certificate chain and its key");
  }
  if (!config.tls_cert_file().empty() && config.tls_key_file().empty()) {
    return Bad("tls_cert_file", "is set without tls_key_file; TLS needs both the certificate chain and its key");
  }
  if (!config.tls_client_ca_file().empty() && config.tls_cert_file().empty()) {
    return Bad("tls_client_ca_file", "needs TLS: set tls_cert_file and tls_key_file too");
  }
  const bool has_tokens = !config.tokens_file().empty() || !config.tokens_env().empty();
  const bool require_token = config.has_require_token() ? config.require_token() : has_tokens;
  if (require_token && !has_tokens) {
    return Bad("require_token", "is true but no tokens are configured (set tokens_file or tokens_env)");
  }

  ServerSecurity out;
  std::vector<std::string> summary;
  if (config.tls_cert_file().empty()) {
    out.credentials = grpc::InsecureServerCredentials();
    summary.push_back("plaintext (no TLS)");
  } else {
    CLIPSERVE_ASSIGN_OR_RETURN(const std::string chain, ReadPem(config.tls_cert_file(), "tls_cert_file"));
    CLIPSERVE_ASSIGN_OR_RETURN(const std::string key_pem, ReadPem(config.tls_key_file(), "tls_key_file"));
    CLIPSERVE_ASSIGN_OR_RETURN(std::vector<X509Ptr> certificates,
                               ParseCertificates(chain, "tls_cert_file", config.tls_cert_file()));
    BioPtr bio = MemoryBio(key_pem);
    KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, &NoPassphrase, nullptr), &EVP_PKEY_free);
    if (key == nullptr) {
      ERR_clear_error();  // the reason may quote the file; the message below says enough
      return Bad("tls_key_file", absl::StrCat(config.tls_key_file(), ": not an unencrypted PEM private key"));
    }
    if (X509_check_private_key(certificates.front().get(), key.get()) != 1) {
      ERR_clear_error();
      return Bad("tls_key_file",
                 absl::StrCat(config.tls_key_file(), ": the key does not belong to the first certificate of ",
                              config.tls_cert_file()));
    }
    grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    options.pem_key_cert_pairs.push_back({key_pem, chain});
    out.tls = true;
    summary.push_back(absl::StrCat("TLS on (", Describe(certificates.front().get()), ")"));
    if (!config.tls_client_ca_file().empty()) {
      CLIPSERVE_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(config.tls_client_ca_file(), "tls_client_ca_file"));
      CLIPSERVE_ASSIGN_OR_RETURN(
          std::vector<X509Ptr> cas,
          ParseCertificates(options.pem_root_certs, "tls_client_ca_file", config.tls_client_ca_file()));
      // Verified by gRPC against pem_root_certs; a client without a certificate fails the handshake.
      options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
      out.mutual_tls = true;
      summary.push_back(absl::StrCat("mutual TLS on (client certificates required, signed by ", cas.size(),
                                     " CA certificate(s) from ", config.tls_client_ca_file(), ")"));
    }
    out.credentials = grpc::SslServerCredentials(options);
  }
  if (has_tokens) {
    CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> tokens, LoadTokens(config));
    if (require_token) {
      CLIPSERVE_ASSIGN_OR_RETURN(out.auth, BearerAuth::Create(tokens));
      summary.push_back(absl::StrCat("bearer-token auth on (", tokens.size(), " token(s))"));
    } else {
      summary.push_back(
          absl::StrCat("bearer-token auth off (require_token: false; ", tokens.size(), " token(s) read)"));
    }
  } else {
    summary.push_back("no bearer-token auth");
  }
  out.summary = absl::StrJoin(summary, ", ");
  return out;
}

}  // namespace clipserve::service
