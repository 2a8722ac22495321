#include "server/http/tls_terminator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <algorithm>
#include <list>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace clipserve::http {
namespace {

// The last OpenSSL errors of this thread, oldest first, and clears them.
std::string OpenSslErrors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(e, text, sizeof(text));
    absl::StrAppend(&out, out.empty() ? "" : "; ", text);
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

void SetTimeouts(int fd, absl::Duration timeout) {
  timeval tv = absl::ToTimeval(timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

bool SendAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsTerminator>> TlsTerminator::Create(const Options& options) {
  if (options.cert_file.empty() || options.key_file.empty()) {
    return absl::InvalidArgumentError("http tls: a certificate file and a key file are required");
  }
  if (options.max_connections < 1) return absl::InvalidArgumentError("http tls: max_connections must be >= 1");
  std::unique_ptr<TlsTerminator> t(new TlsTerminator(options));
  ERR_clear_error();
  t->ctx_ = SSL_CTX_new(TLS_server_method());
  if (t->ctx_ == nullptr) return absl::InternalError(absl::StrCat("http tls: SSL_CTX_new: ", OpenSslErrors()));
  SSL_CTX_set_min_proto_version(t->ctx_, TLS1_2_VERSION);
  SSL_CTX_set_mode(t->ctx_, SSL_MODE_AUTO_RETRY);
  if (SSL_CTX_use_certificate_chain_file(t->ctx_, options.cert_file.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("http tls: cannot use the certificate chain ", options.cert_file, ": ", OpenSslErrors()));
  }
  if (SSL_CTX_use_PrivateKey_file(t->ctx_, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("http tls: cannot use the private key ", options.key_file, ": ", OpenSslErrors()));
  }
  if (SSL_CTX_check_private_key(t->ctx_) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("http tls: the key ", options.key_file,
                                                   " does not belong to the certificate ", options.cert_file));
  }
  if (!options.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(t->ctx_, options.client_ca_file.c_str(), nullptr) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("http tls: cannot load the client CA ", options.client_ca_file, ": ", OpenSslErrors()));
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.client_ca_file.c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(t->ctx_, names);  // takes ownership
    SSL_CTX_set_verify(t->ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return t;
}

TlsTerminator::TlsTerminator(const Options& options) : options_(options), backend_port_(options.backend_port) {}

TlsTerminator::~TlsTerminator() {
  Stop();
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

absl::Status TlsTerminator::Start() {
  // A peer that resets the connection must not kill the process with SIGPIPE (SSL_write writes to the socket
  // directly). Servers ignore it; gRPC and civetweb do too.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { std::signal(SIGPIPE, SIG_IGN); });
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("http tls: socket: ", std::strerror(errno)));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(options_.port));
  if (::inet_pton(AF_INET, options_.listen_address.c_str(), &addr.sin_addr) != 1) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("http tls: bad IPv4 address '", options_.listen_address, "'"));
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("http tls: cannot listen on ", options_.listen_address, ":",
                                               options_.port, ": ", std::strerror(err)));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  listen_fd_ = fd;
  stopping_.store(false);
  port_.store(ntohs(addr.sin_port), std::memory_order_release);
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void TlsTerminator::Stop() {
  if (listen_fd_ < 0) return;
  stopping_.store(true);
  acceptor_.join();  // polls stopping_ every 200 ms
  ::close(listen_fd_);
  listen_fd_ = -1;
  port_.store(0, std::memory_order_release);
  std::list<Connection> connections;
  {
    absl::MutexLock lock(&mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);  // wakes every connection's poll and read
    connections.swap(connections_);
  }
  for (Connection& c : connections) c.thread.join();
}

void TlsTerminator::Reap() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (it->done.load()) {
      it->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void TlsTerminator::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, 200);
    absl::MutexLock lock(&mu_);
    Reap();
    if (ready <= 0) continue;
    sockaddr_in peer{};
    socklen_t peer_len = sizeof(peer);
    const int client = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC);
    if (client < 0) continue;
    char ip[INET_ADDRSTRLEN] = "?";
    ::inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
    std::string peer_name = absl::StrCat(ip, ":", ntohs(peer.sin_port));
    if (active_ >= options_.max_connections) {
      ::close(client);
      spdlog::warn("http tls: refusing a connection: {} open (max_connections)", active_);
      continue;
    }
    ++active_;
    open_fds_.push_back(client);
    Connection& c = connections_.emplace_back();
    c.thread = std::thread([this, client, peer_name = std::move(peer_name), done = &c.done] {
      Serve(client, peer_name);
      done->store(true);
    });
  }
}

void TlsTerminator::Serve(int client, const std::string& peer) {
  int backend = -1;
  SSL* ssl = nullptr;
  auto finish = [&] {
    absl::MutexLock lock(&mu_);
    open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), client), open_fds_.end());
    if (backend >= 0) open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), backend), open_fds_.end());
    --active_;
  };
  SetTimeouts(client, options_.handshake_timeout);
  ssl = SSL_new(ctx_);
  bool ok = ssl != nullptr && SSL_set_fd(ssl, client) == 1;
  if (ok && SSL_accept(ssl) != 1) {
    // Plaintext clients, clients without the right certificate and scanners end here: a warning, but at most
    // one line per 10 s (with a count of the others), so that a scan cannot flood the log.
    const std::string why = OpenSslErrors();
    absl::MutexLock lock(&mu_);
    ++handshake_failures_;
    const absl::Time now = absl::Now();
    if (now - last_failure_log_ >= absl::Seconds(10)) {
      spdlog::warn("http tls: handshake with {} failed: {}{}", peer, why,
                   handshake_failures_ > 1 ? absl::StrCat(" (", handshake_failures_ - 1, " more since the last report)")
                                           : "");
      last_failure_log_ = now;
      handshake_failures_ = 0;
    }
    ok = false;
  }
  if (ok) {
    SetTimeouts(client, absl::Seconds(60));  // a client that stops reading cannot hold the thread for ever
    backend = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(backend_port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = backend >= 0 && ::connect(backend, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
    if (!ok) spdlog::error("http tls: cannot reach the HTTP server on 127.0.0.1:{}", backend_port_);
    if (ok) {
      absl::MutexLock lock(&mu_);
      open_fds_.push_back(backend);
    }
  }
  // Copy both ways until the backend is done (civetweb closes every connection after its response).
  char buffer[16384];
  bool client_open = true;
  while (ok && !stopping_.load()) {
    pollfd p[2] = {{client, static_cast<short>(client_open ? POLLIN : 0), 0}, {backend, POLLIN, 0}};
    const int ready = SSL_pending(ssl) > 0 ? 1 : ::poll(p, 2, 200);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    if (client_open && (SSL_pending(ssl) > 0 || (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0)) {
      const int n = SSL_read(ssl, buffer, sizeof(buffer));
      if (n > 0) {
        if (!SendAll(backend, buffer, static_cast<size_t>(n))) break;
      } else if (SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ) {
        client_open = false;  // the request is complete (or the client gone): let the response finish
        ::shutdown(backend, SHUT_WR);
      }
    }
    if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      const ssize_t n = ::recv(backend, buffer, sizeof(buffer), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        SSL_shutdown(ssl);
        break;
      }
      if (SSL_write(ssl, buffer, static_cast<int>(n)) <= 0) break;  // the client went away
    }
  }
  ERR_clear_error();
  finish();
  if (ssl != nullptr) SSL_free(ssl);
  if (backend >= 0) ::close(backend);
  ::close(client);
}

}  // namespace clipserve::http
