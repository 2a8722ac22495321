#include "server/http/http_server.h"

#include <dlfcn.h>
#include <pthread.h>

#include <civetweb.h>

#include <algorithm>
#include <cstring>
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

// "GET, HEAD, POST": the route's methods, plus HEAD where GET serves it.
std::string AllowHeader(const std::map<std::string, Handler>& methods) {
  std::vector<std::string> names;
  for (const auto& [method, handler] : methods) names.push_back(method);
  if (methods.count("GET") != 0 && methods.count("HEAD") == 0) names.push_back("HEAD");
  std::sort(names.begin(), names.end());
  return absl::StrJoin(names, ", ");
}

// Writes the whole response at once. The head is written here rather than with civetweb's
// mg_response_header_* functions, which format the Date header with gmtime(), racing between workers.
void Send(mg_connection* conn, const Response& response, bool with_body) {
  std::string out = absl::StrCat("HTTP/1.1 ", response.status, " ", mg_get_response_code_text(conn, response.status),
                                 "\r\nDate: ", absl::FormatTime(kHttpDate, absl::Now(), absl::UTCTimeZone()),
                                 "\r\nContent-Type: ", response.content_type,
                                 "\r\nContent-Length: ", response.body.size(), "\r\nConnection: close\r\n");
  for (const auto& [name, value] : response.headers) {
    if (name.empty() || HasLineBreak(name) || HasLineBreak(value)) {
      spdlog::error("http: dropping response header with an empty name or a line break: '{}'", absl::CEscape(name));
      continue;
    }
    absl::StrAppend(&out, name, ": ", value, "\r\n");
  }
  out += "\r\n";
  if (with_body) out += response.body;
  mg_write(conn, out.data(), out.size());
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
  if (options.drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("http: drain_timeout must be >= 0, got ", absl::FormatDuration(options.drain_timeout)));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(options));
}

HttpServer::HttpServer(const Options& options) : options_(options) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Handle(absl::string_view method, absl::string_view path, Handler handler) {
  if (method.empty() || !absl::StartsWith(path, "/")) {
    return absl::InvalidArgumentError(absl::StrCat("http: bad route '", method, " ", path, "'"));
  }
  if (!handler) return absl::InvalidArgumentError(absl::StrCat("http: empty handler for ", method, " ", path));
  absl::MutexLock lock(&mu_);
  if (context_ != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("http: cannot add ", method, " ", path, " while running"));
  }
  std::map<std::string, Handler>& methods = routes_[std::string(path)];
  if (!methods.emplace(std::string(method), std::move(handler)).second) {
    return absl::AlreadyExistsError(absl::StrCat("http: ", method, " ", path, " is already routed"));
  }
  return absl::OkStatus();
}

absl::Status HttpServer::Start() {
  absl::MutexLock lock(&mu_);
  if (context_ != nullptr) return absl::FailedPreconditionError("http: server already running");
  static std::once_flag init_once;
  std::call_once(init_once, [] { mg_init_library(0); });

  const std::string ports = absl::StrCat(options_.listen_address, ":", options_.port);
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
  context_ = context;
  port_.store(bound.port, std::memory_order_release);
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
  try {
    response = Dispatch(request);
  } catch (const std::exception& e) {
    spdlog::error("http: handler for {} {} threw: {}", request.method, request.path, e.what());
    response = Response::Text(500, "internal error\n");
  } catch (...) {
    spdlog::error("http: handler for {} {} threw a non-std exception", request.method, request.path);
    response = Response::Text(500, "internal error\n");
  }
  if (response.status < 100 || response.status > 599) {
    spdlog::error("http: handler for {} {} returned status {}", request.method, request.path, response.status);
    response = Response::Text(500, "internal error\n");
  }
  Send(conn, response, with_body);
  return response.status;
}

Response HttpServer::Dispatch(const Request& request) const {
  const auto route = routes_.find(request.path);
  if (route == routes_.end()) return Response::Text(404, "not found\n");
  const std::map<std::string, Handler>& methods = route->second;
  auto handler = methods.find(request.method);
  if (handler == methods.end() && request.method == "HEAD") handler = methods.find("GET");
  if (handler == methods.end()) {
    Response response = Response::Text(405, "method not allowed\n");
    response.headers.emplace_back("Allow", AllowHeader(methods));
    return response;
  }
  return handler->second(request);
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
