// The HTTP/JSON gateway through a real server (configs/default.textproto: the shapes-world CLIP and VQGAN): JSON
// routes, gRPC errors as HTTP statuses with JSON bodies, limits, CORS, Server-Sent-Event generation (a bad
// request is a plain 400, a client that goes away cancels its job) and the web demo.
#include "server/service/gateway.h"

#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/service/config.h"
#include "server/service/server.h"
#include "tests/testing/http_test_client.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_server.h"

namespace clipserve::service {
namespace {

using ::clipserve::testing::Dechunk;
using ::clipserve::testing::HttpResult;
using ::clipserve::testing::HttpRoundTrip;
using ::clipserve::testing::IsOk;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kOrigin[] = "https://app.example.com";

// One Server-Sent Event.
struct Event {
  std::string name;
  json data;
};

std::vector<Event> ParseEvents(const std::string& body) {
  std::vector<Event> events;
  for (absl::string_view block : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    Event e;
    for (absl::string_view line : absl::StrSplit(block, '\n')) {
      if (absl::ConsumePrefix(&line, "event: ")) e.name = std::string(line);
      if (absl::ConsumePrefix(&line, "data: ")) e.data = json::parse(line);
    }
    events.push_back(std::move(e));
  }
  return events;
}

class GatewayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto config = ::clipserve::testing::ShippedConfigOnLocalPorts();
    if (config.ok()) {
      config->mutable_gateway()->add_cors_allowed_origins(kOrigin);
      config->mutable_gateway()->set_max_request_bytes(200'000);
    }
    server_ = ::clipserve::testing::StartTestServer(config);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << ::clipserve::testing::TestServerError(); }

  // `method path` with a body and extra header lines ("Name: value\r\n").
  static absl::StatusOr<HttpResult> Call(absl::string_view method, absl::string_view path, absl::string_view body,
                                         absl::string_view headers = "") {
    return HttpRoundTrip(server_->http_port(),
                         absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
                                      "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n",
                                      headers, "\r\n", body));
  }
  // The body of a JSON response, checked to be one.
  static json Json(const HttpResult& r) {
    EXPECT_EQ(r.header("content-type"), "application/json");
    return json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  }
  // POST /v1/generate with `body` on a raw connection, read until the first progress event, then close the
  // connection: a client that goes away mid-stream.
  static absl::Status GenerateUntilFirstProgressThenHangUp(const std::string& body) {
    absl::StatusOr<int> fd = ::clipserve::testing::ConnectLocal(server_->http_port());
    if (!fd.ok()) return fd.status();
    const std::string request = absl::StrCat("POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: ",
                                             body.size(), "\r\n\r\n", body);
    absl::Status status;
    if (::send(*fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
      status = absl::UnavailableError("could not send the request");
    }
    std::string seen;
    char buffer[4096];
    while (status.ok() && !absl::StrContains(seen, "event: progress")) {
      const ssize_t n = ::recv(*fd, buffer, sizeof(buffer), 0);
      if (n <= 0) status = absl::DataLossError(absl::StrCat("the stream ended before a progress event: ", seen));
      if (n > 0) seen.append(buffer, static_cast<size_t>(n));
    }
    ::close(*fd);
    return status;
  }
  static json Generations() {
    absl::StatusOr<HttpResult> r = Call("GET", "/v1/generations", "");
    EXPECT_THAT(r, IsOk());
    return r.ok() ? Json(*r) : json();
  }

  static Server* server_;
};
Server* GatewayTest::server_ = nullptr;

TEST(GatewayStatus, GrpcCodesMapToHttpStatuses) {
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::OK), 200);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::INVALID_ARGUMENT), 400);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::FAILED_PRECONDITION), 400);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::UNAUTHENTICATED), 401);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::PERMISSION_DENIED), 403);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::NOT_FOUND), 404);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::RESOURCE_EXHAUSTED), 429);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::CANCELLED), 499);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::INTERNAL), 500);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::UNIMPLEMENTED), 501);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::UNAVAILABLE), 503);
  EXPECT_EQ(Gateway::HttpStatusFor(grpc::StatusCode::DEADLINE_EXCEEDED), 504);
}

TEST_F(GatewayTest, UnaryRoutesAnswerInTheJsonMapping) {
  absl::StatusOr<HttpResult> r = Call("GET", "/v1/models", "");
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->status, 200) << r->body;
  json models = Json(*r);
  ASSERT_EQ(models["models"].size(), 2u);  // the shipped CLIP and the smoothed one that steers generation
  EXPECT_EQ(models["models"][0]["name"], "shapes-world");
  EXPECT_EQ(models["models"][0]["embedding_dim"], 128);
  EXPECT_EQ(models["models"][1]["name"], "shapes-world-smoothed");

  r = Call("POST", "/v1/embed/text", R"({"texts": ["a red circle", "a blue star"]})");
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->status, 200) << r->body;
  json embed = Json(*r);
  ASSERT_EQ(embed["embeddings"].size(), 2u);
  EXPECT_EQ(embed["embeddings"][0]["values"].size(), 128u);

  // Field names in either spelling of the mapping (proto names and lowerCamelCase) are accepted.
  r = Call("POST", "/v1/similarity",
           R"({"rows": [{"text": "a red circle"}], "columns": [{"text": "a red circle"}, {"text": "a blue star"}]})");
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->status, 200) << r->body;
  json sim = Json(*r);
  ASSERT_EQ(sim["cosine"].size(), 2u);
  EXPECT_NEAR(sim["cosine"][0].get<double>(), 1.0, 1e-4);
  EXPECT_LT(sim["cosine"][1].get<double>(), 0.99);
  r = Call("POST", "/v1/tokenize", R"({"texts": ["a red circle"]})");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(GatewayTest, GrpcErrorsBecomeHttpStatusesWithJsonBodies) {
  absl::StatusOr<HttpResult> r = Call("POST", "/v1/classify", R"({"images": [{"encoded": "aGVsbG8="}], "labels": ["x"]})");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 400);
  json e = Json(*r)["error"];
  EXPECT_EQ(e["code"], 400);
  EXPECT_EQ(e["status"], "INVALID_ARGUMENT");
  EXPECT_THAT(e["message"].get<std::string>(), HasSubstr("at least 2"));

  r = Call("POST", "/v1/embed/text", R"({"model": "no-such-model", "texts": ["x"]})");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(Json(*r)["error"]["status"], "NOT_FOUND");

  // Not JSON, an unknown field, a wrong type: 400 naming the message type.
  for (const char* body : {"{not json", R"({"textz": ["x"]})", R"({"texts": {"a": 1}})"}) {
    r = Call("POST", "/v1/embed/text", body);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->status, 400) << body;
    EXPECT_THAT(Json(*r)["error"]["message"].get<std::string>(), HasSubstr("clipserve.v1.EmbedTextRequest")) << body;
  }

  r = Call("POST", "/v1/embed/text", R"({"texts": ["x"]})", "X-Timeout-Ms: soon\r\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 400);
  EXPECT_THAT(Json(*r)["error"]["message"].get<std::string>(), HasSubstr("X-Timeout-Ms"));

  r = Call("GET", "/v1/classify", "");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 405);
  EXPECT_THAT(r->header("allow"), HasSubstr("POST"));
}

TEST_F(GatewayTest, BodiesOverTheLimitGet413AndTheServerStaysHealthy) {
  const std::string big = absl::StrCat(R"({"texts": [")", std::string(300'000, 'a'), R"("]})");
  absl::StatusOr<HttpResult> r = Call("POST", "/v1/embed/text", big);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 413);
  r = Call("GET", "/v1/models", "");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 200);
}

TEST_F(GatewayTest, CorsHeadersOnlyForAllowedOrigins) {
  absl::StatusOr<HttpResult> r = Call("GET", "/v1/models", "", absl::StrCat("Origin: ", kOrigin, "\r\n"));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->header("access-control-allow-origin"), kOrigin);
  EXPECT_EQ(r->header("vary"), "Origin");
  r = Call("GET", "/v1/models", "", "Origin: https://evil.example.com\r\n");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("access-control-allow-origin"), "");
  // Errors carry the header too, so a browser can read the message.
  r = Call("POST", "/v1/classify", "{}", absl::StrCat("Origin: ", kOrigin, "\r\n"));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->header("access-control-allow-origin"), kOrigin);
  // Preflight.
  r = Call("OPTIONS", "/v1/generate", "",
           absl::StrCat("Origin: ", kOrigin, "\r\nAccess-Control-Request-Method: POST\r\n"));
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->header("access-control-allow-origin"), kOrigin);
  EXPECT_THAT(r->header("access-control-allow-headers"), HasSubstr("authorization"));
  EXPECT_THAT(r->header("access-control-allow-methods"), HasSubstr("POST"));
}

TEST_F(GatewayTest, GenerateStreamsAcceptedProgressFramesAndOneCompleted) {
  absl::StatusOr<HttpResult> r =
      Call("POST", "/v1/generate", R"({"prompt": "a red circle", "steps": 4, "frame_every": 2, "cutn": 4, "seed": 5})");
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  absl::StatusOr<std::string> body = Dechunk(r->body);
  ASSERT_THAT(body, IsOk());
  std::vector<Event> events = ParseEvents(*body);
  ASSERT_EQ(events.size(), 6u) << *body;
  EXPECT_EQ(events[0].name, "accepted");
  EXPECT_EQ(events[0].data["accepted"]["seed"], "5");  // uint64 is a string in the JSON mapping
  for (int step = 1; step <= 4; ++step) {
    const Event& e = events[step];
    ASSERT_EQ(e.name, "progress");
    EXPECT_EQ(e.data["progress"]["step"], step);
    EXPECT_EQ(e.data["progress"].contains("frame"), step == 2) << "step " << step;  // the last one is `completed`
  }
  ASSERT_EQ(events[5].name, "completed");
  const std::string png = events[5].data["completed"]["image"]["data"].get<std::string>();
  EXPECT_TRUE(absl::StartsWith(png, "iVBORw0KGgo")) << png.substr(0, 20);  // base64 of the PNG signature
}

TEST_F(GatewayTest, ABadGenerateRequestIsAPlain400NotAStream) {
  absl::StatusOr<HttpResult> r = Call("POST", "/v1/generate", R"({"prompt": "a red circle", "width": 63})");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 400);
  EXPECT_THAT(Json(*r)["error"]["message"].get<std::string>(), HasSubstr("width"));
  r = Call("GET", "/v1/generations/watch?job_id=gen-none", "");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 404);
}

TEST_F(GatewayTest, AClientThatGoesAwayCancelsItsJob) {
  ASSERT_THAT(GenerateUntilFirstProgressThenHangUp(R"({"prompt": "a green star", "steps": 1000, "cutn": 4})"),
              IsOk());
  bool cancelled = false;
  for (int i = 0; i < 300 && !cancelled; ++i) {
    const json list = Generations();  // a named object: a range over a temporary's member would dangle
    for (const json& g : list["generations"]) {
      cancelled |= g["prompt"] == "a green star" && g["state"] == "GENERATION_STATE_CANCELLED";
    }
    if (!cancelled) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(cancelled) << Generations().dump();
}

TEST_F(GatewayTest, CancelAndWatchRoutes) {
  // A detached job keeps running without a reader; it can be watched and cancelled through the gateway.
  ASSERT_THAT(GenerateUntilFirstProgressThenHangUp(
                  R"({"prompt": "a blue ring", "steps": 1000, "cutn": 4, "detach": true})"),
              IsOk());
  std::string job;
  const json list = Generations();
  for (const json& g : list["generations"]) {
    if (g["prompt"] == "a blue ring") job = g["job_id"];
  }
  ASSERT_FALSE(job.empty());
  absl::StatusOr<HttpResult> r = Call("POST", "/v1/generations/cancel", absl::StrCat(R"({"job_id": ")", job, R"("})"));
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->status, 200) << r->body;
  // Watching the cancelled job replays its latest frame (if any) and ends with CANCELLED as an error event.
  r = Call("GET", absl::StrCat("/v1/generations/watch?job_id=", job), "");
  ASSERT_THAT(r, IsOk());
  if (r->status == 200) {
    absl::StatusOr<std::string> events = Dechunk(r->body);
    ASSERT_THAT(events, IsOk());
    EXPECT_THAT(*events, HasSubstr("event: error"));
    EXPECT_THAT(*events, HasSubstr("CANCELLED"));
  } else {
    EXPECT_EQ(r->status, 499) << r->body;
    EXPECT_EQ(Json(*r)["error"]["status"], "CANCELLED");
  }
}

TEST_F(GatewayTest, ServesTheWebDemo) {
  absl::StatusOr<HttpResult> r = Call("GET", "/", "");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/html; charset=utf-8");
  EXPECT_THAT(r->header("content-security-policy"), HasSubstr("default-src 'self'"));
  EXPECT_THAT(r->body, HasSubstr("<script src=\"/app.js\""));
  r = Call("GET", "/app.js", "");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/javascript; charset=utf-8");
  EXPECT_THAT(r->body, HasSubstr("/v1/generate"));
}

}  // namespace
}  // namespace clipserve::service
