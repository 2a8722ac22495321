#include "server/service/gateway.h"

#include <algorithm>
#include <utility>

#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/service/web_assets.h"

namespace clipserve::service {
namespace {

constexpr char kJson[] = "application/json";
constexpr int64_t kMaxTimeoutMs = 3'600'000;

const char* StatusName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

// {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "..."}} (Google's JSON error shape).
std::string ErrorBody(grpc::StatusCode code, const std::string& message) {
  nlohmann::json j;
  j["error"]["code"] = Gateway::HttpStatusFor(code);
  j["error"]["status"] = StatusName(code);
  j["error"]["message"] = message;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;  // the .proto's names, as clipctl --json prints them
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) return absl::InternalError(absl::StrCat("cannot print the reply as JSON: ", status.ToString()));
  return out;
}

// Parses a JSON body into `message`; an empty body is an empty message.
absl::Status FromJson(const std::string& body, google::protobuf::Message* message) {
  if (absl::StripAsciiWhitespace(body).empty()) return absl::OkStatus();
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;  // a misspelt field is an error, not silently ignored
  const auto status = google::protobuf::util::JsonStringToMessage(body, message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the request body is not a ", message->GetTypeName(),
                                                   " in protobuf's JSON mapping: ", status.ToString()));
  }
  return absl::OkStatus();
}

// The raw value of `name` in a query string ("a=1&job_id=x"), not URL-decoded: job ids need no escaping.
std::string QueryValue(const std::string& query, absl::string_view name) {
  for (absl::string_view pair : absl::StrSplit(query, '&')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    if (kv.first == name) return std::string(kv.second);
  }
  return "";
}

const char* EventName(const v1::GenerateResponse& message) {
  switch (message.event_case()) {
    case v1::GenerateResponse::kAccepted: return "accepted";
    case v1::GenerateResponse::kProgress: return "progress";
    case v1::GenerateResponse::kCompleted: return "completed";
    default: return "message";
  }
}

const char* ContentTypeOf(absl::string_view name) {
  if (absl::EndsWith(name, ".html")) return "text/html; charset=utf-8";
  if (absl::EndsWith(name, ".js")) return "text/javascript; charset=utf-8";
  if (absl::EndsWith(name, ".css")) return "text/css; charset=utf-8";
  return "application/octet-stream";
}

}  // namespace

Gateway::Gateway(Options options) : options_(std::move(options)) {}

int Gateway::HttpStatusFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return 200;
    case grpc::StatusCode::CANCELLED: return 499;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE: return 400;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return 504;
    case grpc::StatusCode::NOT_FOUND: return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED: return 409;
    case grpc::StatusCode::PERMISSION_DENIED: return 403;
    case grpc::StatusCode::UNAUTHENTICATED: return 401;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return 429;
    case grpc::StatusCode::UNIMPLEMENTED: return 501;
    case grpc::StatusCode::UNAVAILABLE: return 503;
    default: return 500;  // UNKNOWN, INTERNAL, DATA_LOSS
  }
}

void Gateway::SetChannel(std::shared_ptr<grpc::Channel> channel) {
  auto stubs = std::make_shared<Stubs>();
  stubs->clip = v1::Clip::NewStub(channel);
  stubs->generation = v1::Generation::NewStub(channel);
  absl::MutexLock lock(&mu_);
  stubs_ = std::move(stubs);
}

std::shared_ptr<const Gateway::Stubs> Gateway::stubs() const {
  absl::MutexLock lock(&mu_);
  return stubs_;
}

std::vector<std::pair<std::string, std::string>> Gateway::CorsHeaders(const http::Request& request) const {
  const std::string* origin = request.Header("Origin");
  if (origin == nullptr) return {};
  for (const std::string& allowed : options_.cors_allowed_origins) {
    if (allowed == "*") return {{"Access-Control-Allow-Origin", "*"}};
    if (allowed == *origin) return {{"Access-Control-Allow-Origin", *origin}, {"Vary", "Origin"}};
  }
  return {};
}

http::Response Gateway::Error(const http::Request& request, grpc::StatusCode code, const std::string& message) const {
  http::Response r;
  r.status = HttpStatusFor(code);
  r.content_type = kJson;
  r.body = ErrorBody(code, message);
  r.headers = CorsHeaders(request);
  return r;
}

bool Gateway::PrepareContext(const http::Request& request, bool stream, grpc::ClientContext* context,
                             http::Response* error) const {
  absl::Duration timeout = stream ? absl::InfiniteDuration() : options_.default_timeout;
  if (const std::string* header = request.Header("X-Timeout-Ms"); header != nullptr) {
    int64_t ms = 0;
    if (!absl::SimpleAtoi(*header, &ms) || ms < 1 || ms > kMaxTimeoutMs) {
      *error = Error(request, grpc::StatusCode::INVALID_ARGUMENT,
                     absl::StrCat("X-Timeout-Ms must be a whole number of milliseconds in [1, ", kMaxTimeoutMs,
                                  "], got '", *header, "'"));
      return false;
    }
    timeout = absl::Milliseconds(ms);
  }
  if (timeout != absl::InfiniteDuration()) context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (const std::string* auth = request.Header("Authorization"); auth != nullptr) {
    context->AddMetadata("authorization", *auth);
  }
  return true;
}

template <typename Request, typename Reply, typename Stub>
http::Response Gateway::Unary(const http::Request& http_request,
                              grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Reply*),
                              std::unique_ptr<Stub> Stubs::*which) const {
  std::shared_ptr<const Stubs> stubs = this->stubs();
  if (stubs == nullptr) return Error(http_request, grpc::StatusCode::UNAVAILABLE, "the server is starting");
  Request request;
  if (absl::Status s = FromJson(http_request.body, &request); !s.ok()) {
    return Error(http_request, grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message()));
  }
  grpc::ClientContext context;
  http::Response error;
  if (!PrepareContext(http_request, /*stream=*/false, &context, &error)) return error;
  Reply reply;
  Stub* stub = ((*stubs).*which).get();
  const grpc::Status status = (stub->*method)(&context, request, &reply);
  if (!status.ok()) return Error(http_request, status.error_code(), status.error_message());
  absl::StatusOr<std::string> json = ToJson(reply);
  if (!json.ok()) return Error(http_request, grpc::StatusCode::INTERNAL, std::string(json.status().message()));
  http::Response r;
  r.content_type = kJson;
  r.body = std::move(*json);
  r.headers = CorsHeaders(http_request);
  return r;
}

void Gateway::Stream(const http::Request& http_request, http::ResponseWriter& writer, bool watch) const {
  std::shared_ptr<const Stubs> stubs = this->stubs();
  if (stubs == nullptr) {
    writer.Respond(Error(http_request, grpc::StatusCode::UNAVAILABLE, "the server is starting"));
    return;
  }
  grpc::ClientContext context;
  http::Response error;
  if (!PrepareContext(http_request, /*stream=*/true, &context, &error)) {
    writer.Respond(error);
    return;
  }
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  if (watch) {
    v1::WatchGenerationRequest request;
    request.set_job_id(QueryValue(http_request.query, "job_id"));
    if (!http_request.body.empty()) {
      if (absl::Status s = FromJson(http_request.body, &request); !s.ok()) {
        writer.Respond(Error(http_request, grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message())));
        return;
      }
    }
    reader = stubs->generation->WatchGeneration(&context, request);
  } else {
    v1::GenerateRequest request;
    if (absl::Status s = FromJson(http_request.body, &request); !s.ok()) {
      writer.Respond(Error(http_request, grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message())));
      return;
    }
    reader = stubs->generation->Generate(&context, request);
  }
  // The first message decides between an event stream and a plain error response (a bad request is a 400,
  // not a 200 stream with an error in it).
  v1::GenerateResponse message;
  bool started = false;
  bool client_gone = false;
  while (reader->Read(&message)) {
    if (!started) {
      std::vector<std::pair<std::string, std::string>> headers = CorsHeaders(http_request);
      if (!writer.Start(200, "text/event-stream", headers)) {
        client_gone = true;
        break;
      }
      started = true;
    }
    absl::StatusOr<std::string> json = ToJson(message);
    if (!json.ok()) {
      spdlog::error("gateway: {}", std::string(json.status().message()));
      continue;
    }
    if (!writer.Write(absl::StrCat("event: ", EventName(message), "\ndata: ", *json, "\n\n"))) {
      client_gone = true;
      break;
    }
  }
  if (client_gone) {
    // The browser went away (or the server is stopping): cancel the call, which cancels the job unless it
    // was started with detach.
    context.TryCancel();
    while (reader->Read(&message)) {
    }
    reader->Finish();
    return;
  }
  const grpc::Status status = reader->Finish();
  if (!started) {
    writer.Respond(status.ok() ? Error(http_request, grpc::StatusCode::INTERNAL, "the stream ended without a message")
                               : Error(http_request, status.error_code(), status.error_message()));
    return;
  }
  if (!status.ok()) {
    writer.Write(absl::StrCat("event: error\ndata: ", ErrorBody(status.error_code(), status.error_message()), "\n\n"));
  }
}

absl::Status Gateway::Register(http::HttpServer* server) {
  struct UnaryRoute {
    const char* method;
    const char* path;
    http::Handler handler;
  };
  std::vector<UnaryRoute> routes;
  using C = v1::Clip::Stub;
  using G = v1::Generation::Stub;
  routes.push_back({"POST", "/v1/embed/text", [this](const http::Request& r) {
                      return Unary(r, &C::EmbedText, &Stubs::clip);
                    }});
  routes.push_back({"POST", "/v1/embed/image", [this](const http::Request& r) {
                      return Unary(r, &C::EmbedImage, &Stubs::clip);
                    }});
  routes.push_back(
      {"POST", "/v1/classify", [this](const http::Request& r) { return Unary(r, &C::Classify, &Stubs::clip); }});
  routes.push_back({"POST", "/v1/rank", [this](const http::Request& r) { return Unary(r, &C::Rank, &Stubs::clip); }});
  routes.push_back({"POST", "/v1/similarity", [this](const http::Request& r) {
                      return Unary(r, &C::Similarity, &Stubs::clip);
                    }});
  routes.push_back(
      {"POST", "/v1/tokenize", [this](const http::Request& r) { return Unary(r, &C::Tokenize, &Stubs::clip); }});
  routes.push_back({"GET", "/v1/models", [this](const http::Request& r) {
                      http::Request empty = r;
                      empty.body.clear();
                      return Unary(empty, &C::ListModels, &Stubs::clip);
                    }});
  routes.push_back({"POST", "/v1/generations/cancel", [this](const http::Request& r) {
                      return Unary(r, &G::CancelGeneration, &Stubs::generation);
                    }});
  routes.push_back({"GET", "/v1/generations", [this](const http::Request& r) {
                      http::Request empty = r;
                      empty.body.clear();
                      return Unary(empty, &G::ListGenerations, &Stubs::generation);
                    }});
  std::vector<std::string> paths;
  for (UnaryRoute& route : routes) {
    paths.push_back(route.path);
    if (absl::Status s = server->Handle(route.method, route.path, std::move(route.handler)); !s.ok()) return s;
  }
  if (absl::Status s = server->HandleStream(
          "POST", "/v1/generate",
          [this](const http::Request& r, http::ResponseWriter& w) { Stream(r, w, /*watch=*/false); });
      !s.ok()) {
    return s;
  }
  if (absl::Status s = server->HandleStream(
          "GET", "/v1/generations/watch",
          [this](const http::Request& r, http::ResponseWriter& w) { Stream(r, w, /*watch=*/true); });
      !s.ok()) {
    return s;
  }
  paths.push_back("/v1/generate");
  paths.push_back("/v1/generations/watch");
  // CORS preflight for every route.
  for (const std::string& path : paths) {
    absl::Status s = server->Handle("OPTIONS", path, [this](const http::Request& r) {
      http::Response response;
      response.status = 204;
      response.headers = CorsHeaders(r);
      if (!response.headers.empty()) {
        response.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        response.headers.emplace_back("Access-Control-Allow-Headers", "authorization, content-type, x-timeout-ms");
        response.headers.emplace_back("Access-Control-Max-Age", "600");
      }
      return response;
    });
    if (!s.ok()) return s;
  }
  if (options_.web_demo) {
    for (const EmbeddedFile& file : WebAssets()) {
      const std::string path = std::string(file.name) == "index.html" ? "/" : absl::StrCat("/", file.name);
      http::Response response;
      response.content_type = ContentTypeOf(file.name);
      response.body.assign(reinterpret_cast<const char*>(file.data), file.size);
      response.headers = {{"X-Content-Type-Options", "nosniff"},
                          {"Content-Security-Policy",
                           "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; frame-ancestors 'none'"},
                          {"Cache-Control", "no-cache"}};
      if (absl::Status s = server->Handle("GET", path, [response](const http::Request&) { return response; });
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace clipserve::service
