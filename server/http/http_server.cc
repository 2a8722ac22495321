#include "server/http/http_server.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <civetweb.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>
#include <exception>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/spdlog.h"

namespace clipserve::http {
namespace {

int LogMessage(const mg_connection* /*conn*/, const char* message) {
  spdlog::warn("http: {}", message);
  return 1;  // civetweb logs nothing itself
}

constexpr char kHttpDate[] = "%a, %d %b %Y %H:%M:%S GMT";  // RFC 9110 IMF-fixdate

bool HasLineBreak(absl::string_view s) { return s.find_first_of("\r\n") != absl::string_view::npos; }

// "GET, HEAD, POST": the route's methods, plus HEAD where a unary GET route serves it.
template <typename Map>
std::string AllowHeader(const Map& methods) {
  std::vector<std::string> names;
  for (const auto& [method, handler] : methods) names.push_back(method);
  const auto get = methods.find("GET");
  if (get != methods.end() && !get->second.stream && methods.count("HEAD") == 0) names.push_back("HEAD");
  std::sort(names.begin(), names.end());
  return absl::StrJoin(names, ", ");
}

// The status line and headers, up to and including the blank line. Written here rather than with civetweb's
// mg_response_header_* functions, which format the Date header with gmtime(), racing between workers.
// `length` < 0: a chunked body.
std::string Head(mg_connection* conn, int status, absl::string_view content_type, int64_t length,
                 const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out = absl::StrCat("HTTP/1.1 ", status, " ", mg_get_response_code_text(conn, status),
                                 "\r\nDate: ", absl::FormatTime(kHttpDate, absl::Now(), absl::UTCTimeZone()),
                                 "\r\nContent-Type: ", content_type, "\r\n");
  if (length >= 0) {
    absl::StrAppend(&out, "Content-Length: ", length, "\r\n");
  } else {
    // No proxy buffering of a stream (nginx honours this header).
    out += "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";
  }
  out += "Connection: close\r\n";
  for (const auto& [name, value] : headers) {
    if (name.empty() || HasLineBreak(name) || HasLineBreak(value)) {
      spdlog::error("http: dropping response header with an empty name or a line break: '{}'", absl::CEscape(name));
      continue;
    }
    absl::StrAppend(&out, name, ": ", value, "\r\n");
  }
  out += "\r\n";
  return out;
}

// Writes the whole response at once.
void Send(mg_connection* conn, const Response& response, bool with_body) {
  std::string out = Head(conn, response.status, response.content_type,
                         static_cast<int64_t>(response.body.size()), response.headers);
  if (with_body) out += response.body;
  mg_write(conn, out.data(), out.size());
}

bool WriteAll(mg_connection* conn, absl::string_view data) {
  return data.empty() || mg_write(conn, data.data(), data.size()) == static_cast<int>(data.size());
}

}  // namespace

const std::string* Request::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) return &value;
  }
  return nullptr;
}

Response Response::Text(int status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

class HttpServer::ConnectionWriter final : public ResponseWriter {
 public:
  ConnectionWriter(const HttpServer* server, mg_connection* conn, bool with_body)
      : server_(server), conn_(conn), with_body_(with_body) {}

  bool Start(int status, absl::string_view content_type,
             const std::vector<std::pair<std::string, std::string>>& headers) override {
    if (state_ != State::kNew) {
      spdlog::error("http: a stream handler started a response twice");
      return false;
    }
    state_ = State::kStreaming;
    status_ = status;
    ok_ = WriteAll(conn_, Head(conn_, status, content_type, -1, headers)) && !server_->draining();
    return ok_;
  }

  bool Write(absl::string_view data) override {
    if (state_ != State::kStreaming) {
      spdlog::error("http: a stream handler wrote before Start() or after Respond()");
      return false;
    }
    if (!ok_) return false;
    if (!data.empty() && with_body_) {
      std::string chunk = absl::StrCat(absl::Hex(data.size()), "\r\n");
      chunk.append(data.data(), data.size());
      chunk += "\r\n";
      ok_ = WriteAll(conn_, chunk);
    }
    ok_ = ok_ && !server_->draining();
    return ok_;
  }

  void Respond(const Response& response) override {
    if (state_ != State::kNew) {
      spdlog::error("http: a stream handler responded after starting a response");
      return;
    }
    state_ = State::kResponded;
    status_ = response.status;
    Send(conn_, response, with_body_);
  }

  bool ok() const override { return ok_; }

  // After the handler: ends the chunked body, or answers 500 if the handler sent nothing.
  int Finish() {
    if (state_ == State::kStreaming) {
      if (ok_ && with_body_) WriteAll(conn_, "0\r\n\r\n");
    } else if (state_ == State::kNew) {
      Respond(Response::Text(500, "internal error\n"));
    }
    return status_;
  }

 private:
  enum class State { kNew, kStreaming, kResponded };
  const HttpServer* const server_;
  mg_connection* const conn_;
  const bool with_body_;
  State state_ = State::kNew;
  bool ok_ = true;
  int status_ = 500;
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const Options& options) {
  const std::string& address = options.listen_address;
  if (address.empty() || address.find_first_of(":, \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("http: listen_address must be one IPv4 address, got '", absl::CEscape(address), "'"));
  }
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http: port must be in [0, 65535], got ", options.port));
  }
  if (options.num_threads < 1 || options.num_threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("http: num_threads must be in [1, 1024], got ", options.num_threads));
  }
  if (options.max_request_body_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("http: max_request_body_bytes must be >= 0, got ", options.max_request_body_bytes));
  }
  if (options.request_timeout < absl::Milliseconds(1) || options.request_timeout > absl::Hours(24)) {
    return absl::InvalidArgumentError(absl::StrCat("http: request_timeout must be in [1ms, 24h], got ",
                                                   absl::FormatDuration(options.request_timeout)));
  }
  if (options.max_streams < 0 || options.max_streams >= options.num_threads) {
    return absl::InvalidArgumentError(absl::StrCat("http: max_streams must be in [0, num_threads - 1 = ",
                                                   options.num_threads - 1, "], got ", options.max_streams));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("http: tls_cert_file and tls_key_file go together");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("http: tls_client_ca_file needs tls_cert_file and tls_key_file");
  }
  if (options.drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("http: drain_timeout must be >= 0, got ", absl::FormatDuration(options.drain_timeout)));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(options));
}

HttpServer::HttpServer(const Options& options) : options_(options) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Handle(absl::string_view method, absl::string_view path, Handler handler) {
  if (!handler) return absl::InvalidArgumentError(absl::StrCat("http: empty handler for ", method, " ", path));
  return AddRoute(method, path, Route{.unary = std::move(handler), .stream = nullptr});
}

absl::Status HttpServer::HandleStream(absl::string_view method, absl::string_view path, StreamHandler handler) {
  if (!handler) return absl::InvalidArgumentError(absl::StrCat("http: empty handler for ", method, " ", path));
  if (options_.max_streams == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("http: cannot route the stream ", method, " ", path, ": Options::max_streams is 0"));
  }
  return AddRoute(method, path, Route{.unary = nullptr, .stream = std::move(handler)});
}

bool HttpServer::draining() const {
  absl::MutexLock lock(&requests_mu_);
  return draining_;
}

absl::Status HttpServer::AddRoute(absl::string_view method, absl::string_view path, Route route) {
  if (method.empty() || !absl::StartsWith(path, "/")) {
    return absl::InvalidArgumentError(absl::StrCat("http: bad route '", method, " ", path, "'"));
  }
  absl::MutexLock lock(&mu_);
  if (context_ != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("http: cannot add ", method, " ", path, " while running"));
  }
  std::map<std::string, Route>& methods = routes_[std::string(path)];
  if (!methods.emplace(std::string(method), std::move(route)).second) {
    return absl::AlreadyExistsError(absl::StrCat("http: ", method, " ", path, " is already routed"));
  }
  return absl::OkStatus();
}

absl::Status HttpServer::Start() {
  absl::MutexLock lock(&mu_);
  if (context_ != nullptr) return absl::FailedPreconditionError("http: server already running");
  static std::once_flag init_once;
  std::call_once(init_once, [] { mg_init_library(0); });
  const bool tls = !options_.tls_cert_file.empty();
  std::unique_ptr<TlsTerminator> terminator;
  if (tls) {
    auto t = TlsTerminator::Create({.listen_address = options_.listen_address,
                                    .port = options_.port,
                                    .cert_file = options_.tls_cert_file,
                                    .key_file = options_.tls_key_file,
                                    .client_ca_file = options_.tls_client_ca_file,
                                    .max_connections = 4 * options_.num_threads + 64});
    if (!t.ok()) return t.status();
    terminator = std::move(t).value();
  }

  // With TLS, civetweb serves plaintext on loopback only, behind the terminator.
  const std::string ports = tls ? "127.0.0.1:0" : absl::StrCat(options_.listen_address, ":", options_.port);
  const std::string threads = absl::StrCat(options_.num_threads);
  const std::string timeout = absl::StrCat(absl::ToInt64Milliseconds(options_.request_timeout));
  const char* config[] = {"listening_ports", ports.c_str(),       "num_threads", threads.c_str(), "request_timeout_ms",
                          timeout.c_str(),   "enable_keep_alive", "no",          nullptr};
  static const mg_callbacks callbacks = [] {
    mg_callbacks c{};
    c.begin_request = &HttpServer::BeginRequest;
    c.log_message = &LogMessage;
    return c;
  }();
  mg_init_data init{&callbacks, this, config};
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error{&error_code, error_text, sizeof(error_text)};
  {
    absl::MutexLock requests_lock(&requests_mu_);
    draining_ = false;
  }
  mg_context* context = mg_start2(&init, &error);
  if (context == nullptr) {
    return absl::UnavailableError(absl::StrCat("http: cannot listen on ", ports, ": ", error_text));
  }
  mg_server_port bound{};
  if (mg_get_server_ports(context, 1, &bound) < 1 || bound.port <= 0) {
    mg_stop(context);
    return absl::InternalError(absl::StrCat("http: started on ", ports, " but cannot read the bound port"));
  }
  int public_port = bound.port;
  if (terminator != nullptr) {
    terminator->set_backend_port(bound.port);
    if (absl::Status s = terminator->Start(); !s.ok()) {
      mg_stop(context);
      return s;
    }
    public_port = terminator->port();
  }
  context_ = context;
  tls_ = std::move(terminator);
  port_.store(public_port, std::memory_order_release);
  return absl::OkStatus();
}

void HttpServer::Stop() {
  absl::MutexLock lock(&mu_);
  if (context_ == nullptr) return;
  {
    absl::MutexLock requests_lock(&requests_mu_);
    draining_ = true;
    if (!requests_mu_.AwaitWithTimeout(absl::Condition(
                                           +[](int* n) { return *n == 0; }, &in_flight_),
                                       options_.drain_timeout)) {
      spdlog::warn("http: stopping with {} requests still in flight after {}", in_flight_,
                   absl::FormatDuration(options_.drain_timeout));
    }
  }
  port_.store(0, std::memory_order_release);
  mg_stop(context_);  // joins the workers: every handler has returned
  context_ = nullptr;
  if (tls_ != nullptr) tls_->Stop();  // after civetweb, so that drained responses still reach their clients
  tls_.reset();
}

int HttpServer::port() const { return port_.load(std::memory_order_acquire); }

int HttpServer::BeginRequest(mg_connection* conn) {
  const auto* self = static_cast<const HttpServer*>(mg_get_user_data(mg_get_context(conn)));
  return self->Serve(conn);
}

int HttpServer::Serve(mg_connection* conn) const {
  {
    absl::MutexLock lock(&requests_mu_);
    if (draining_) {
      const Response stopping = Response::Text(503, "shutting down\n");
      const char* method = mg_get_request_info(conn)->request_method;
      Send(conn, stopping, method == nullptr || std::strcmp(method, "HEAD") != 0);
      return stopping.status;
    }
    ++in_flight_;
  }
  const int status = ServeRequest(conn);
  absl::MutexLock lock(&requests_mu_);
  --in_flight_;
  return status;
}

int HttpServer::ServeRequest(mg_connection* conn) const {
  const mg_request_info* info = mg_get_request_info(conn);
  Request request;
  request.method = info->request_method != nullptr ? info->request_method : "";
  request.path = info->local_uri != nullptr ? info->local_uri : "";
  request.query = info->query_string != nullptr ? info->query_string : "";
  request.remote_address = info->remote_addr;
  request.headers.reserve(info->num_headers);
  for (int i = 0; i < info->num_headers; ++i) {
    request.headers.emplace_back(info->http_headers[i].name, info->http_headers[i].value);
  }
  const bool with_body = request.method != "HEAD";
  const int64_t limit = options_.max_request_body_bytes;
  const Response too_large = Response::Text(413, absl::StrCat("request body over ", limit, " bytes\n"));
  if (info->content_length > limit) {
    Send(conn, too_large, with_body);
    return too_large.status;
  }
  // Read the body (Content-Length or chunked) up to one byte past the limit.
  char buffer[16384];
  while (true) {
    const int n = mg_read(conn, buffer, sizeof(buffer));
    if (n <= 0) break;
    request.body.append(buffer, static_cast<size_t>(n));
    if (static_cast<int64_t>(request.body.size()) > limit) {
      Send(conn, too_large, with_body);
      return too_large.status;
    }
  }

  Response response;
  const Route* route = Find(request, &response);
  if (route != nullptr && route->stream) {
    int status = 500;
    ServeStream(*route, request, conn, &status);
    return status;
  }
  if (route != nullptr) {
    try {
      response = route->unary(request);
    } catch (const std::exception& e) {
      spdlog::error("http: handler for {} {} threw: {}", request.method, request.path, e.what());
      response = Response::Text(500, "internal error\n");
    } catch (...) {
      spdlog::error("http: handler for {} {} threw a non-std exception", request.method, request.path);
      response = Response::Text(500, "internal error\n");
    }
  }
  if (response.status < 100 || response.status > 599) {
    spdlog::error("http: handler for {} {} returned status {}", request.method, request.path, response.status);
    response = Response::Text(500, "internal error\n");
  }
  Send(conn, response, with_body);
  return response.status;
}

void HttpServer::ServeStream(const Route& route, const Request& request, mg_connection* conn, int* status) const {
  {
    absl::MutexLock lock(&requests_mu_);
    if (streams_ >= options_.max_streams) {
      const Response busy = Response::Text(
          503, absl::StrCat("too many open streams (max_streams = ", options_.max_streams, "); retry later\n"));
      Send(conn, busy, request.method != "HEAD");
      *status = busy.status;
      return;
    }
    ++streams_;
  }
  ConnectionWriter writer(this, conn, request.method != "HEAD");
  try {
    route.stream(request, writer);
  } catch (const std::exception& e) {
    spdlog::error("http: stream handler for {} {} threw: {}", request.method, request.path, e.what());
  } catch (...) {
    spdlog::error("http: stream handler for {} {} threw a non-std exception", request.method, request.path);
  }
  *status = writer.Finish();
  absl::MutexLock lock(&requests_mu_);
  --streams_;
}

const HttpServer::Route* HttpServer::Find(const Request& request, Response* error) const {
  const auto route = routes_.find(request.path);
  if (route == routes_.end()) {
    *error = Response::Text(404, "not found\n");
    return nullptr;
  }
  const std::map<std::string, Route>& methods = route->second;
  auto handler = methods.find(request.method);
  // HEAD is served by a GET route, but not by a streamed one: a stream without a body could never notice its
  // client leaving, and would hold a stream slot for as long as its source runs.
  if (handler == methods.end() && request.method == "HEAD") {
    handler = methods.find("GET");
    if (handler != methods.end() && handler->second.stream) handler = methods.end();
  }
  if (handler == methods.end()) {
    *error = Response::Text(405, "method not allowed\n");
    error->headers.emplace_back("Allow", AllowHeader(methods));
    return nullptr;
  }
  return &handler->second;
}

}  // namespace clipserve::http

// Debian's civetweb creates its threads with a fixed 100 KiB stack (compiled in: USE_STACK_SIZE=102400).
// glibc refuses to create a thread whose stack cannot hold the process's static TLS plus a minimum, and a
// process that links libtorch and OpenBLAS has about 75 KiB of static TLS (OpenBLAS alone 60 KiB): civetweb's
// pthread_create then fails with EINVAL and the HTTP port cannot start ("Cannot create threads").
//
// This definition interposes pthread_attr_setstacksize for the whole process (the executable's symbols come
// first in the dynamic linker's search order) and raises any requested stack below 1 MiB to 1 MiB. It only
// reserves address space; pages are committed as a thread touches them.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t size) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  constexpr size_t kMinStack = size_t{1} << 20;
  return real(attr, std::max(size, kMinStack));
}
