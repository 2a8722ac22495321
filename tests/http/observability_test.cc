#include "server/http/observability.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/metrics.h"
#include "server/common/process_metrics.h"
#include "tests/testing/http_test_client.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::http {
namespace {

using ::clipserve::testing::HttpGet;
using ::clipserve::testing::HttpRequest;
using ::clipserve::testing::HttpResult;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class ObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServer::Options options;
    options.listen_address = "127.0.0.1";
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(server_, HttpServer::Create(options));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(metrics::CounterFamily * requests,
                                   registry_.AddCounter("clipserve_requests_total", "Requests.", {"model"}));
    requests_ = &requests->Labels({"vit-b32"});
    ASSERT_THAT(metrics::AddProcessMetrics(&registry_), IsOk());
    ASSERT_THAT(AddObservabilityHandlers(server_.get(), &registry_,
                                         [this]() -> absl::Status {
                                           if (ready_) return absl::OkStatus();
                                           return absl::UnavailableError("models loading");
                                         }),
                IsOk());
    ASSERT_THAT(server_->Start(), IsOk());
  }

  metrics::Registry registry_;
  metrics::Counter* requests_ = nullptr;
  std::atomic<bool> ready_{false};
  std::unique_ptr<HttpServer> server_;  // declared last: stopped before what its handlers use goes away
};

TEST_F(ObservabilityTest, MetricsServesTheRegistryAsPrometheusText) {
  requests_->Increment();
  requests_->Increment();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult r, HttpGet(server_->port(), "/metrics"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_THAT(r.body, HasSubstr("# TYPE clipserve_requests_total counter\n"
                                "clipserve_requests_total{model=\"vit-b32\"} 2\n"));
  EXPECT_THAT(r.body, HasSubstr("\nprocess_resident_memory_bytes "));
  requests_->Increment();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult again, HttpGet(server_->port(), "/metrics"));
  EXPECT_THAT(again.body, HasSubstr("clipserve_requests_total{model=\"vit-b32\"} 3\n"));
}

TEST_F(ObservabilityTest, HealthzIsOkWhileTheProcessLives) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult r, HttpGet(server_->port(), "/healthz"));
  EXPECT_EQ(r.status, 200);  // even while not ready
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_THAT(r.header("content-type"), StartsWith("text/plain"));
}

TEST_F(ObservabilityTest, ReadyzFollowsTheReadinessCheck) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult loading, HttpGet(server_->port(), "/readyz"));
  EXPECT_EQ(loading.status, 503);
  EXPECT_EQ(loading.body, "not ready: models loading\n");
  ready_ = true;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult ready, HttpGet(server_->port(), "/readyz"));
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "ready\n");
  ready_ = false;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult draining, HttpGet(server_->port(), "/readyz"));
  EXPECT_EQ(draining.status, 503);
}

TEST_F(ObservabilityTest, UnknownPathsAndWrongMethods) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult missing, HttpGet(server_->port(), "/metricz"));
  EXPECT_EQ(missing.status, 404);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HttpResult post, HttpRequest(server_->port(), "POST", "/metrics", "x"));
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.header("allow"), "GET, HEAD");
}

TEST_F(ObservabilityTest, ConcurrentScrapesWhileCounting) {
  std::atomic<bool> stop{false};
  std::thread counter([&] {
    while (!stop) requests_->Increment();
  });
  std::atomic<int> ok{0};
  std::vector<std::thread> scrapers;
  for (int t = 0; t < 4; ++t) {
    scrapers.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        absl::StatusOr<HttpResult> r = HttpGet(server_->port(), i % 2 ? "/metrics" : "/healthz");
        if (r.ok() && r->status == 200) ++ok;
      }
    });
  }
  for (std::thread& t : scrapers) t.join();
  stop = true;
  counter.join();
  EXPECT_EQ(ok.load(), 40);
}

TEST(Observability, NeedsARegistryAndAReadinessCheck) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto server, HttpServer::Create(HttpServer::Options()));
  metrics::Registry registry;
  EXPECT_THAT(AddObservabilityHandlers(server.get(), nullptr, [] { return absl::OkStatus(); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("registry")));
  EXPECT_THAT(AddObservabilityHandlers(server.get(), &registry, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("readiness")));
}

}  // namespace
}  // namespace clipserve::http
