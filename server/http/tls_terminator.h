// TLS for the HTTP port: a small TLS terminator (OpenSSL) in front of the plaintext civetweb server.
//
// Why not civetweb's own TLS: Debian 12's civetweb 1.15 loads OpenSSL at run time by symbol name and looks for
// SSL_get_peer_certificate, which OpenSSL 3 no longer exports (it is a macro for SSL_get1_peer_certificate):
// its TLS setup fails, or, with mg_init_library(MG_FEATURES_TLS), the first TLS connection calls a null
// function pointer and the process crashes. So HttpServer binds civetweb to 127.0.0.1 on an ephemeral port
// and this class listens on the public address, completes the TLS handshake (checking client certificates
// for mutual TLS), and copies bytes both ways between the TLS connection and a fresh loopback connection to
// civetweb. Streams (Server-Sent Events) pass through unchanged: each direction is forwarded as it arrives.
//
// One thread per connection (at most max_connections; more are closed at once), like civetweb's own
// workers. A handshake that does not finish within handshake_timeout is dropped. Stop() closes the listener
// and every connection and joins the threads.
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace clipserve::http {

class TlsTerminator {
 public:
  struct Options {
    std::string listen_address = "0.0.0.0";  // IPv4
    int port = 0;                            // 0: ephemeral
    int backend_port = 0;                    // civetweb on 127.0.0.1 (or set_backend_port before Start)
    std::string cert_file;                   // PEM chain, own certificate first
    std::string key_file;                    // PEM, unencrypted
    std::string client_ca_file;              // set: clients must present a certificate from these CAs
    absl::Duration handshake_timeout = absl::Seconds(10);
    int max_connections = 256;
  };

  // Loads and checks the certificate, key and CA files (INVALID_ARGUMENT naming the file on error).
  static absl::StatusOr<std::unique_ptr<TlsTerminator>> Create(const Options& options);
  ~TlsTerminator();

  void set_backend_port(int port) { backend_port_ = port; }
  // Binds and starts accepting. UNAVAILABLE if the address cannot be bound.
  absl::Status Start();
  // Closes the listener and all connections; joins every thread. Idempotent.
  void Stop();
  // The bound port while running, else 0.
  int port() const { return port_.load(std::memory_order_acquire); }

 private:
  explicit TlsTerminator(const Options& options);
  struct Connection {
    std::thread thread;
    std::atomic<bool> done{false};  // set by the thread as its last action: then it may be joined
  };
  void AcceptLoop();
  void Serve(int client_fd, const std::string& peer);
  // Joins the threads of finished connections.
  void Reap() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  int backend_port_;
  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> port_{0};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);  // client and backend sockets, to shut down on Stop
  std::list<Connection> connections_ ABSL_GUARDED_BY(mu_);
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  int handshake_failures_ ABSL_GUARDED_BY(mu_) = 0;  // since the last logged one
  absl::Time last_failure_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace clipserve::http
