// The HTTP side port: a small civetweb-backed server that routes requests by exact path and method to
// handlers (/metrics, /healthz, /readyz, the JSON gateway), streams responses for Server-Sent Events, and serves
// HTTPS through a TlsTerminator.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/http/tls_terminator.h"

struct mg_context;
struct mg_connection;

namespace clipserve::http {

// One request, fully read (headers and body) before the handler runs.
struct Request {
  std::string method;                                        // "GET", "POST", ...
  std::string path;                                          // URL-decoded, without the query: "/metrics"
  std::string query;                                         // raw, without '?': "a=1&b=2" (empty when absent)
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;
  std::string remote_address;

  // The value of the first header named `name` (case-insensitive), or nullptr.
  const std::string* Header(absl::string_view name) const;
};

// A complete response. The server adds Date, Content-Type, Content-Length and `Connection: close`; `headers`
// are any others (names and values must not contain CR or LF; such headers are dropped and logged).
struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;

  // A text/plain response.
  static Response Text(int status, std::string body);
};

// Called on a server worker thread, concurrently with other requests (and with itself): it must be
// thread-safe. It may block, but each blocked call holds one of Options::num_threads workers, and Stop()
// waits for it.
using Handler = absl::AnyInvocable<Response(const Request&) const>;

// The response side of a streamed request (one per request; used only by its handler's thread). Either
// Respond() once with a complete response (an error found before streaming), or Start() the stream and
// Write() to it; the body is sent with chunked transfer encoding, each Write() one chunk, flushed at once.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  // Sends the status line and headers (no Content-Length). False if the client is gone or the server stops.
  virtual bool Start(int status, absl::string_view content_type,
                     const std::vector<std::pair<std::string, std::string>>& headers = {}) = 0;
  // Sends `data` as one chunk (nothing for empty data). False once the client is gone or the server is
  // stopping: the handler should then end the stream (cancel its work) and return.
  virtual bool Write(absl::string_view data) = 0;
  // Sends a complete response instead of a stream; only before Start().
  virtual void Respond(const Response& response) = 0;
  // Whether the client is still connected and the server not stopping, as far as the last write knows.
  virtual bool ok() const = 0;
};

// A streamed request's handler: runs on a worker thread for as long as the stream lasts. If it returns
// without Start() or Respond(), the client gets 500.
using StreamHandler = absl::AnyInvocable<void(const Request&, ResponseWriter&) const>;

// An HTTP/1.1 server on civetweb. Routes are registered with Handle() while the server is stopped; a request
// whose path has no route gets 404, a path with routes but not for its method gets 405 with an `Allow`
// header (HEAD is served by a GET route, without the body, except by a streamed one), a body over Options::max_request_body_bytes gets
// 413 (civetweb still reads and discards what the client sends, for at most request_timeout), and a handler
// that throws or returns a status outside 100..599 gets 500. Connections are closed after each response (no
// keep-alive), so an idle client never holds a worker for longer than request_timeout.
//
// Owned by its creator. Handle, Start and Stop are for one controlling thread at a time (they are serialized
// by a mutex); port() may be called from any thread. Start binds and returns once the server accepts
// connections. Stop answers requests that arrive from then on with 503, waits (up to drain_timeout) for
// in-flight handlers to return and send their responses, then closes the listener and joins the workers;
// it takes up to 2 s more, because Debian's civetweb polls its listener in 2 s quanta. Stop is idempotent,
// the destructor calls it, and a stopped server may be started again.
//
// Streaming (Server-Sent Events): a StreamHandler, registered with HandleStream(), gets a ResponseWriter
// instead of returning a Response. Streams hold a worker each for their whole life, so they have their own
// budget (Options::max_streams, below num_threads): beyond it a stream request gets 503 at once, and /metrics
// and /healthz always find a worker.
class HttpServer {
 public:
  struct Options {
    // IPv4 address to listen on (Debian's civetweb is built without IPv6): "0.0.0.0" for all interfaces,
    // "127.0.0.1" for local only.
    std::string listen_address = "0.0.0.0";
    // 0 picks an ephemeral port; port() reports it once started.
    int port = 0;
    // Worker threads: the number of requests handled at once. Further connections wait in the accept queue.
    int num_threads = 4;
    // Largest accepted request body; larger ones get 413 without being read.
    int64_t max_request_body_bytes = int64_t{1} << 20;
    // How long a connection may take to send its request (and the server to send its response); whole
    // milliseconds.
    absl::Duration request_timeout = absl::Seconds(30);
    // How long Stop() waits for in-flight handlers to finish and send their responses before it closes the
    // connections anyway.
    absl::Duration drain_timeout = absl::Seconds(10);
    // Streams (HandleStream routes) open at once; further stream requests get 503. Must be below num_threads
    // when there are stream routes, so that unary routes always find a worker.
    int max_streams = 0;
    // HTTPS: PEM certificate chain and unencrypted private key (both or neither); the port then speaks only
    // TLS (1.2 or later), through a TlsTerminator in front of civetweb (tls_terminator.h says why). With
    // tls_client_ca_file, clients must present a certificate from that CA (mutual TLS). The files are read by
    // Start(). Handlers then see 127.0.0.1 as Request::remote_address.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_client_ca_file;
  };

  // INVALID_ARGUMENT for bad options. Does not bind: Start() does.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const Options& options);
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Routes `method` requests for exactly `path` (e.g. "GET", "/metrics") to `handler`. INVALID_ARGUMENT for a
  // path not starting with '/' or an empty method, ALREADY_EXISTS for a taken route, FAILED_PRECONDITION
  // while running.
  absl::Status Handle(absl::string_view method, absl::string_view path, Handler handler);
  // Routes `method` requests for exactly `path` to a streaming handler (same errors as Handle;
  // FAILED_PRECONDITION when Options::max_streams is 0).
  absl::Status HandleStream(absl::string_view method, absl::string_view path, StreamHandler handler);

  // Binds and starts the workers. UNAVAILABLE if the address cannot be bound, FAILED_PRECONDITION if running.
  absl::Status Start();
  // Stops accepting, waits for in-flight requests, joins the workers. No-op when not running.
  void Stop();

  // The bound port while running, else 0.
  int port() const;

 private:
  // A route's handler for one method: exactly one of the two is set.
  struct Route {
    Handler unary;
    StreamHandler stream;
  };
  using Routes = std::map<std::string, std::map<std::string, Route>, std::less<>>;
  class ConnectionWriter;

  absl::Status AddRoute(absl::string_view method, absl::string_view path, Route route);

  explicit HttpServer(const Options& options);
  static int BeginRequest(mg_connection* conn);
  // Counts the request in flight (or answers 503 while draining) around ServeRequest.
  int Serve(mg_connection* conn) const;
  // Reads the request, dispatches it, sends the response; returns its status.
  int ServeRequest(mg_connection* conn) const;
  bool draining() const;
  // The route for the request, or a 404/405 response.
  const Route* Find(const Request& request, Response* error) const;
  void ServeStream(const Route& route, const Request& request, mg_connection* conn, int* status) const;

  const Options options_;
  // In-flight requests, for Stop()'s drain. Never taken together with mu_ by a worker.
  mutable absl::Mutex requests_mu_;
  mutable int in_flight_ ABSL_GUARDED_BY(requests_mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(requests_mu_) = false;
  mutable int streams_ ABSL_GUARDED_BY(requests_mu_) = 0;
  // Written only while stopped (under mu_), read by workers without the mutex: mg_start/mg_stop order the
  // accesses.
  Routes routes_;
  mutable absl::Mutex mu_;
  mg_context* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::atomic<int> port_{0};  // atomic so that port() never waits for Stop()
  // HTTPS (Options::tls_*): terminates TLS on the public address in front of civetweb on 127.0.0.1.
  std::unique_ptr<TlsTerminator> tls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace clipserve::http
