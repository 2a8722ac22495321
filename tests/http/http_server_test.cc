#include "server/http/http_server.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/http_test_client.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::http {
namespace {

using ::clipserve::testing::Dechunk;
using ::clipserve::testing::HttpGet;
using ::clipserve::testing::HttpRequest;
using ::clipserve::testing::HttpResult;
using ::clipserve::testing::HttpRoundTrip;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;

HttpServer::Options LocalOptions() {
  HttpServer::Options options;
  options.listen_address = "127.0.0.1";
  options.port = 0;
  options.num_threads = 4;
  return options;
}

std::unique_ptr<HttpServer> MakeServer(HttpServer::Options options = LocalOptions()) {
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Create(options);
  EXPECT_THAT(server, IsOk());
  return server.ok() ? std::move(server).value() : nullptr;
}

// Echoes what the handler saw, one field per line.
Response Echo(const Request& r) {
  const std::string* agent = r.Header("x-test");
  return Response::Text(200, absl::StrCat(r.method, "\n", r.path, "\n", r.query, "\n", agent ? *agent : "-", "\n",
                                          r.body.size(), "\n", r.body));
}

TEST(HttpServer, CreateValidatesOptions) {
  auto bad = [](auto mutate) {
    HttpServer::Options o = LocalOptions();
    mutate(o);
    return HttpServer::Create(o).status();
  };
  EXPECT_THAT(bad([](auto& o) { o.port = -1; }), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("port")));
  EXPECT_THAT(bad([](auto& o) { o.port = 65536; }), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("port")));
  EXPECT_THAT(bad([](auto& o) { o.num_threads = 0; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_threads")));
  EXPECT_THAT(bad([](auto& o) { o.listen_address = ""; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("listen_address")));
  EXPECT_THAT(bad([](auto& o) { o.listen_address = "127.0.0.1,0.0.0.0"; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("listen_address")));
  EXPECT_THAT(bad([](auto& o) { o.max_request_body_bytes = -1; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_request_body_bytes")));
  EXPECT_THAT(bad([](auto& o) { o.request_timeout = absl::ZeroDuration(); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("request_timeout")));
  EXPECT_THAT(bad([](auto& o) { o.drain_timeout = absl::Seconds(-1); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("drain_timeout")));
}

TEST(HttpServer, HandleRejectsBadAndDuplicateRoutes) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(server->Handle("GET", "metrics", Echo), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  EXPECT_THAT(server->Handle("", "/x", Echo), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  EXPECT_THAT(server->Handle("GET", "/x", nullptr), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  ASSERT_THAT(server->Handle("GET", "/x", Echo), IsOk());
  EXPECT_THAT(server->Handle("GET", "/x", Echo), StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("GET /x")));
  EXPECT_THAT(server->Handle("POST", "/x", Echo), IsOk());
}

TEST(HttpServer, ReportsTheEphemeralPortAndPassesTheRequestToTheHandler) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->Handle("POST", "/echo", Echo), IsOk());
  EXPECT_EQ(server->port(), 0);
  ASSERT_THAT(server->Start(), IsOk());
  ASSERT_GT(server->port(), 0);

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult r,
                                 HttpRoundTrip(server->port(),
                                               "POST /echo?a=1&b=%20x HTTP/1.1\r\nHost: h\r\nX-Test: hello\r\n"
                                               "Content-Length: 11\r\nConnection: close\r\n\r\nhello world"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(r.header("content-length"), absl::StrCat(r.body.size()));
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_THAT(r.header("date"), ::testing::MatchesRegex("[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} "
                                                        "[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"));
  EXPECT_EQ(r.body, "POST\n/echo\na=1&b=%20x\nhello\n11\nhello world");
}

TEST(HttpServer, ReadsChunkedBodies) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->Handle("POST", "/echo", Echo), IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult r,
                                 HttpRoundTrip(server->port(),
                                               "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                               "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST\n/echo\n\n-\n11\nhello world");
}

TEST(HttpServer, UnknownPathIs404AndWrongMethodIs405WithAllow) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->Handle("GET", "/a", Echo), IsOk());
  ASSERT_THAT(server->Handle("POST", "/b", Echo), IsOk());
  ASSERT_THAT(server->Handle("PUT", "/b", Echo), IsOk());
  ASSERT_THAT(server->Start(), IsOk());

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult missing, HttpGet(server->port(), "/nope"));
  EXPECT_EQ(missing.status, 404);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult prefix, HttpGet(server->port(), "/a/b"));  // exact paths only
  EXPECT_EQ(prefix.status, 404);

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult post_a, HttpRequest(server->port(), "POST", "/a", "x"));
  EXPECT_EQ(post_a.status, 405);
  EXPECT_EQ(post_a.header("allow"), "GET, HEAD");
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult get_b, HttpGet(server->port(), "/b"));
  EXPECT_EQ(get_b.status, 405);
  EXPECT_EQ(get_b.header("allow"), "POST, PUT");
}

TEST(HttpServer, HeadIsServedByTheGetRouteWithoutABody) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->Handle("GET", "/a", [](const Request& r) { return Response::Text(200, r.method); }), IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult r, HttpRequest(server->port(), "HEAD", "/a"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "4");  // "HEAD"
  EXPECT_EQ(r.body, "");
}

TEST(HttpServer, CustomStatusContentTypeAndHeaders) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(
      server->Handle("GET", "/j",
                     [](const Request&) {
                       Response r;
                       r.status = 202;
                       r.content_type = "application/json";
                       r.body = "{}";
                       r.headers = {{"X-One", "1"}, {"X-Bad", "a\r\nInjected: yes"}, {"Cache-Control", "no-store"}};
                       return r;
                     }),
      IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult r, HttpGet(server->port(), "/j"));
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("x-one"), "1");
  EXPECT_EQ(r.header("cache-control"), "no-store");
  EXPECT_EQ(r.headers.count("x-bad"), 0u);
  EXPECT_EQ(r.headers.count("injected"), 0u);
  EXPECT_EQ(r.body, "{}");
}

TEST(HttpServer, BodiesOverTheLimitGet413) {
  HttpServer::Options options = LocalOptions();
  options.max_request_body_bytes = 10;
  auto server = MakeServer(options);
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->Handle("POST", "/echo", Echo), IsOk());
  ASSERT_THAT(server->Start(), IsOk());

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult ok, HttpRequest(server->port(), "POST", "/echo", "0123456789"));
  EXPECT_EQ(ok.status, 200);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult big, HttpRequest(server->port(), "POST", "/echo", "0123456789A"));
  EXPECT_EQ(big.status, 413);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult chunked,
                                 HttpRoundTrip(server->port(),
                                               "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                               "8\r\n01234567\r\n8\r\n89ABCDEF\r\n0\r\n\r\n"));
  EXPECT_EQ(chunked.status, 413);
  // A declared length over the limit is refused before the body is read.
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(
      HttpResult declared,
      HttpRoundTrip(server->port(), "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000\r\n\r\nabc"));
  EXPECT_EQ(declared.status, 413);
}

TEST(HttpServer, AThrowingHandlerOrABadStatusGets500) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(
      server->Handle("GET", "/throw", [](const Request&) -> Response { throw std::runtime_error("handler bug"); }),
      IsOk());
  ASSERT_THAT(server->Handle("GET", "/status", [](const Request&) { return Response::Text(42, ""); }), IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult thrown, HttpGet(server->port(), "/throw"));
  EXPECT_EQ(thrown.status, 500);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult bad, HttpGet(server->port(), "/status"));
  EXPECT_EQ(bad.status, 500);
  // The server lives on.
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult after, HttpGet(server->port(), "/throw"));
  EXPECT_EQ(after.status, 500);
}

TEST(HttpServer, ServesConcurrentRequests) {
  HttpServer::Options options = LocalOptions();
  options.num_threads = 4;
  auto server = MakeServer(options);
  ASSERT_NE(server, nullptr);
  std::atomic<int> in_handler{0};
  std::atomic<int> max_in_handler{0};
  ASSERT_THAT(server->Handle("GET", "/slow",
                             [&](const Request& r) {
                               const int now = ++in_handler;
                               int seen = max_in_handler.load();
                               while (now > seen && !max_in_handler.compare_exchange_weak(seen, now)) {
                               }
                               std::this_thread::sleep_for(std::chrono::milliseconds(20));
                               --in_handler;
                               return Response::Text(200, r.query);
                             }),
              IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  constexpr int kClients = 8;
  constexpr int kRequests = 10;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kRequests; ++i) {
        const std::string query = absl::StrCat("c=", c, "&i=", i);
        absl::StatusOr<HttpResult> r = HttpGet(server->port(), "/slow?" + query);
        if (r.ok() && r->status == 200 && r->body == query) ++ok;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok.load(), kClients * kRequests);
  EXPECT_GT(max_in_handler.load(), 1);
  EXPECT_LE(max_in_handler.load(), options.num_threads);
}

TEST(HttpServer, StopsTwiceRestartsAndRefusesRoutesWhileRunning) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->Handle("GET", "/a", Echo), IsOk());
  server->Stop();  // not running: no-op
  ASSERT_THAT(server->Start(), IsOk());
  EXPECT_THAT(server->Start(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("running")));
  EXPECT_THAT(server->Handle("GET", "/b", Echo), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("")));
  const int first_port = server->port();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult r1, HttpGet(first_port, "/a"));
  EXPECT_EQ(r1.status, 200);

  server->Stop();
  server->Stop();
  EXPECT_EQ(server->port(), 0);
  EXPECT_THAT(HttpGet(first_port, "/a").status(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("connect")));

  ASSERT_THAT(server->Handle("GET", "/b", Echo), IsOk());  // allowed again while stopped
  ASSERT_THAT(server->Start(), IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult r2, HttpGet(server->port(), "/b"));
  EXPECT_EQ(r2.status, 200);
  server.reset();  // the destructor stops it
}

TEST(HttpServer, StartFailsWhenThePortIsTaken) {
  auto first = MakeServer();
  ASSERT_NE(first, nullptr);
  ASSERT_THAT(first->Start(), IsOk());
  HttpServer::Options options = LocalOptions();
  options.port = first->port();
  auto second = MakeServer(options);
  ASSERT_NE(second, nullptr);
  EXPECT_THAT(second->Start(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr(absl::StrCat(options.port))));
  EXPECT_EQ(second->port(), 0);
  second->Stop();
}

TEST(HttpServer, StopAnswers503WhileDrainingAndDeliversInFlightResponses) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  absl::Notification entered;
  absl::Notification release;
  ASSERT_THAT(server->Handle("GET", "/slow",
                             [&](const Request&) {
                               entered.Notify();
                               release.WaitForNotification();
                               return Response::Text(200, "slow done");
                             }),
              IsOk());
  ASSERT_THAT(server->Handle("GET", "/fast", Echo), IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  const int port = server->port();
  absl::StatusOr<HttpResult> slow;
  std::thread client([&] { slow = HttpGet(port, "/slow"); });
  entered.WaitForNotification();
  std::thread stopper([&] { server->Stop(); });
  // Until Stop() has begun draining, /fast is still served; then it gets 503.
  int status = 0;
  for (int i = 0; i < 500 && status != 503; ++i) {
    absl::StatusOr<HttpResult> fast = HttpGet(port, "/fast");
    ASSERT_THAT(fast, IsOk());
    status = fast->status;
    if (status != 503) absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ(status, 503);
  release.Notify();
  stopper.join();
  client.join();
  ASSERT_THAT(slow, IsOk());
  EXPECT_EQ(slow->status, 200);
  EXPECT_EQ(slow->body, "slow done");
}

TEST(HttpServer, StopGivesUpOnHandlersAfterTheDrainTimeout) {
  HttpServer::Options options = LocalOptions();
  options.drain_timeout = absl::Milliseconds(50);
  auto server = MakeServer(options);
  ASSERT_NE(server, nullptr);
  absl::Notification entered;
  ASSERT_THAT(server->Handle("GET", "/slow",
                             [&](const Request&) {
                               entered.Notify();
                               absl::SleepFor(absl::Milliseconds(500));
                               return Response::Text(200, "late");
                             }),
              IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  std::thread client([&] { (void)HttpGet(server->port(), "/slow"); });
  entered.WaitForNotification();
  server->Stop();  // waits 50 ms, then for the handler to return (civetweb joins its workers)
  client.join();
}

TEST(HttpServer, StopWaitsForInFlightHandlersAndDoesNotHangOnIdleConnections) {
  auto server = MakeServer();
  ASSERT_NE(server, nullptr);
  absl::Notification entered;
  std::atomic<bool> finished{false};
  ASSERT_THAT(server->Handle("GET", "/slow",
                             [&](const Request&) {
                               entered.Notify();
                               std::this_thread::sleep_for(std::chrono::milliseconds(300));
                               finished = true;
                               return Response::Text(200, "done");
                             }),
              IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  const int port = server->port();
  // A client that connects and never sends a request.
  absl::StatusOr<int> idle = clipserve::testing::ConnectLocal(port);
  ASSERT_THAT(idle, IsOk());

  absl::StatusOr<HttpResult> slow;
  std::thread client([&] { slow = HttpGet(port, "/slow"); });
  entered.WaitForNotification();
  const absl::Time start = absl::Now();
  server->Stop();
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(finished.load());
  client.join();
  ASSERT_THAT(slow, IsOk());
  EXPECT_EQ(slow->status, 200);
  EXPECT_EQ(slow->body, "done");
  EXPECT_LT(took, absl::Seconds(5)) << "Stop() took " << took;
  ::close(*idle);
}

}  // namespace
}  // namespace clipserve::http

namespace clipserve::http {
namespace {

HttpServer::Options StreamOptions(int max_streams) {
  HttpServer::Options options = LocalOptions();
  options.max_streams = max_streams;
  return options;
}

TEST(HttpServerStream, CreateAndHandleStreamValidateTheStreamBudget) {
  HttpServer::Options options = LocalOptions();
  options.max_streams = options.num_threads;
  EXPECT_THAT(HttpServer::Create(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_streams")));
  auto server = MakeServer();  // max_streams 0
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(server->HandleStream("GET", "/s", [](const Request&, ResponseWriter&) {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("max_streams is 0")));
}

TEST(HttpServerStream, ChunksArriveInOrderWithStreamHeaders) {
  auto server = MakeServer(StreamOptions(2));
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->HandleStream("POST", "/events",
                                   [](const Request& r, ResponseWriter& w) {
                                     ASSERT_TRUE(w.Start(200, "text/event-stream", {{"X-Test", "yes"}}));
                                     for (int i = 0; i < 5; ++i) EXPECT_TRUE(w.Write(absl::StrCat("data: ", i, "\n\n")));
                                     EXPECT_TRUE(w.Write(""));  // no chunk: an empty one would end the body
                                     EXPECT_TRUE(w.Write(r.body));
                                   }),
              IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  absl::StatusOr<HttpResult> r = HttpRequest(server->port(), "POST", "/events", "tail");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  EXPECT_EQ(r->header("transfer-encoding"), "chunked");
  EXPECT_EQ(r->header("cache-control"), "no-cache");
  EXPECT_EQ(r->header("x-test"), "yes");
  EXPECT_EQ(r->header("content-length"), "");
  std::vector<std::string> chunks;
  absl::StatusOr<std::string> body = Dechunk(r->body, &chunks);
  ASSERT_THAT(body, IsOk());
  EXPECT_EQ(*body, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ntail");
  EXPECT_EQ(chunks.size(), 6u);
}

TEST(HttpServerStream, RespondSendsAPlainResponseAndSilenceIs500) {
  auto server = MakeServer(StreamOptions(1));
  ASSERT_NE(server, nullptr);
  ASSERT_THAT(server->HandleStream("GET", "/refuse",
                                   [](const Request&, ResponseWriter& w) {
                                     w.Respond(Response::Text(400, "bad prompt\n"));
                                     EXPECT_FALSE(w.Write("late"));  // not a stream
                                   }),
              IsOk());
  ASSERT_THAT(server->HandleStream("GET", "/silent", [](const Request&, ResponseWriter&) {}), IsOk());
  // HEAD is not served by a stream route (it could never notice its client leaving).
  ASSERT_THAT(server->HandleStream("GET", "/throws",
                                   [](const Request&, ResponseWriter&) { throw std::runtime_error("boom"); }),
              IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  absl::StatusOr<HttpResult> r = HttpGet(server->port(), "/refuse");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(r->body, "bad prompt\n");
  for (const char* path : {"/silent", "/throws"}) {
    r = HttpGet(server->port(), path);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->status, 500) << path;
  }
  r = HttpRequest(server->port(), "HEAD", "/silent");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 405);
}

TEST(HttpServerStream, StreamsBeyondTheBudgetGet503WhileUnaryRoutesAreServed) {
  auto server = MakeServer(StreamOptions(1));
  ASSERT_NE(server, nullptr);
  absl::Notification entered, release;
  ASSERT_THAT(server->HandleStream("GET", "/s",
                                   [&](const Request&, ResponseWriter& w) {
                                     w.Start(200, "text/plain");
                                     entered.Notify();
                                     release.WaitForNotification();
                                     w.Write("done");
                                   }),
              IsOk());
  ASSERT_THAT(server->Handle("GET", "/fast", Echo), IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  const int port = server->port();
  absl::StatusOr<HttpResult> first;
  std::thread client([&] { first = HttpGet(port, "/s"); });
  entered.WaitForNotification();
  absl::StatusOr<HttpResult> second = HttpGet(port, "/s");
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->status, 503);
  EXPECT_THAT(second->body, HasSubstr("max_streams = 1"));
  absl::StatusOr<HttpResult> fast = HttpGet(port, "/fast");
  ASSERT_THAT(fast, IsOk());
  EXPECT_EQ(fast->status, 200);
  release.Notify();
  client.join();
  ASSERT_THAT(first, IsOk());
  absl::StatusOr<std::string> body = Dechunk(first->body);
  ASSERT_THAT(body, IsOk());
  EXPECT_EQ(*body, "done");
}

TEST(HttpServerStream, WriteFailsOnceTheClientHasGone) {
  auto server = MakeServer(StreamOptions(1));
  ASSERT_NE(server, nullptr);
  absl::Notification started, gave_up;
  std::atomic<int> writes{0};
  ASSERT_THAT(server->HandleStream("GET", "/forever",
                                   [&](const Request&, ResponseWriter& w) {
                                     w.Start(200, "text/plain");
                                     started.Notify();
                                     const std::string chunk(4096, 'x');
                                     for (int i = 0; i < 100000 && w.Write(chunk); ++i) {
                                       ++writes;
                                       absl::SleepFor(absl::Milliseconds(1));
                                     }
                                     EXPECT_FALSE(w.ok());
                                     gave_up.Notify();
                                   }),
              IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  absl::StatusOr<int> fd = ::clipserve::testing::ConnectLocal(server->port());
  ASSERT_THAT(fd, IsOk());
  const std::string request = "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(*fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  started.WaitForNotification();
  ::close(*fd);
  EXPECT_TRUE(gave_up.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_LT(writes.load(), 100000);
}

TEST(HttpServerStream, StopEndsStreamsWithoutWaitingForTheDrainTimeout) {
  HttpServer::Options options = StreamOptions(1);
  options.drain_timeout = absl::Seconds(30);
  auto server = MakeServer(options);
  ASSERT_NE(server, nullptr);
  absl::Notification started;
  ASSERT_THAT(server->HandleStream("GET", "/ticks",
                                   [&](const Request&, ResponseWriter& w) {
                                     w.Start(200, "text/plain");
                                     started.Notify();
                                     while (w.Write("tick\n")) absl::SleepFor(absl::Milliseconds(10));
                                   }),
              IsOk());
  ASSERT_THAT(server->Start(), IsOk());
  absl::StatusOr<HttpResult> r;
  std::thread client([&] { r = HttpGet(server->port(), "/ticks"); });
  started.WaitForNotification();
  const absl::Time t0 = absl::Now();
  server->Stop();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));  // the stream ended at its next write, not after 30 s
  client.join();
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("tick"));
}

}  // namespace
}  // namespace clipserve::http

namespace clipserve::http {
namespace {

TEST(HttpServerTls, BadTlsOptionsAreRefusedNamingTheFile) {
  HttpServer::Options options = LocalOptions();
  options.tls_cert_file = "/nonexistent/cert.pem";
  EXPECT_THAT(HttpServer::Create(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("go together")));
  options.tls_key_file = "/nonexistent/key.pem";
  auto server = MakeServer(options);
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(server->Start(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("/nonexistent/cert.pem")));
  EXPECT_EQ(server->port(), 0);
  options = LocalOptions();
  options.tls_client_ca_file = "/nonexistent/ca.pem";
  EXPECT_THAT(HttpServer::Create(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tls_client_ca_file")));
}

}  // namespace
}  // namespace clipserve::http
