#include "client/metrics.h"

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/fakes.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::client {
namespace {

using ::clipserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

constexpr char kMetrics[] = R"(# HELP clipserve_batch_size Rows per executed batch.
# TYPE clipserve_batch_size histogram
clipserve_batch_size_bucket{model="fixture",lane="clip.text",le="1"} 2
clipserve_batch_size_bucket{model="fixture",lane="clip.text",le="2"} 3
clipserve_batch_size_bucket{model="fixture",lane="clip.text",le="4"} 3
clipserve_batch_size_bucket{model="fixture",lane="clip.text",le="8"} 10
clipserve_batch_size_bucket{model="fixture",lane="clip.text",le="+Inf"} 10
clipserve_batch_size_sum{model="fixture",lane="clip.text"} 60
clipserve_batch_size_count{model="fixture",lane="clip.text"} 10
clipserve_batch_size_bucket{model="fixture",lane="clip.image",le="1"} 0
clipserve_batch_size_bucket{model="fixture",lane="clip.image",le="+Inf"} 0
clipserve_batch_size_sum{model="fixture",lane="clip.image"} 0
clipserve_batch_size_count{model="fixture",lane="clip.image"} 0
# TYPE clipserve_requests_total counter
clipserve_requests_total{model="fixture",method="EmbedText",note="a \"quoted\" \\ value"} 1.5e3 1700000000000
process_up 1
)";

TEST(ParsePrometheusText, ReadsNamesLabelsValuesAndSkipsComments) {
  auto samples = ParsePrometheusText(kMetrics);
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 13u);
  EXPECT_EQ((*samples)[0].name, "clipserve_batch_size_bucket");
  EXPECT_THAT((*samples)[0].labels, ElementsAre(Pair("lane", "clip.text"), Pair("le", "1"), Pair("model", "fixture")));
  EXPECT_EQ((*samples)[0].value, 2);
  const PrometheusSample& counter = (*samples)[11];
  EXPECT_EQ(counter.labels.at("note"), "a \"quoted\" \\ value");
  EXPECT_EQ(counter.value, 1500);
  EXPECT_EQ((*samples)[12].name, "process_up");
  EXPECT_TRUE((*samples)[12].labels.empty());
}

TEST(ParsePrometheusText, MalformedLineNamesItsNumber) {
  EXPECT_THAT(ParsePrometheusText("ok 1\nbad{lane=\"x} 2\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metrics line 2")));
  EXPECT_THAT(ParsePrometheusText("x notanumber\n"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("value")));
}

TEST(ExtractHistograms, GroupsSeriesByLabelsWithoutLe) {
  auto samples = ParsePrometheusText(kMetrics);
  ASSERT_TRUE(samples.ok());
  const std::vector<Histogram> h = ExtractHistograms(*samples, "clipserve_batch_size");
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].label("lane"), "clip.text");
  EXPECT_EQ(h[0].count, 10);
  EXPECT_DOUBLE_EQ(h[0].mean(), 6.0);
  ASSERT_EQ(h[0].buckets.size(), 5u);
  EXPECT_EQ(h[0].buckets[3], std::make_pair(8.0, 10.0));
  EXPECT_TRUE(std::isinf(h[0].buckets[4].first));
  EXPECT_EQ(h[1].label("lane"), "clip.image");
  EXPECT_EQ(h[1].mean(), 0);
}

TEST(SubtractHistograms, GivesTheBatchesBetweenTwoScrapes) {
  Histogram before{{{"lane", "t"}}, {{1, 2}, {8, 5}, {INFINITY, 5}}, 20, 5};
  Histogram after{{{"lane", "t"}}, {{1, 3}, {8, 9}, {INFINITY, 9}}, 40, 9};
  Histogram fresh{{{"lane", "i"}}, {{1, 1}, {INFINITY, 1}}, 1, 1};
  const auto d = SubtractHistograms({after, fresh}, {before});
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].count, 4);
  EXPECT_EQ(d[0].sum, 20);
  EXPECT_THAT(d[0].buckets, ElementsAre(Pair(1, 1), Pair(8, 4), Pair(INFINITY, 4)));
  EXPECT_EQ(d[1].count, 1);
}

TEST(HttpGet, FetchesTheBodyOfA200) {
  testing::FakeHttpServer server([](int) { return testing::FakeHttpServer::Ok(kMetrics); });
  auto body = HttpGet(server.url("/metrics"), absl::Seconds(5));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, kMetrics);
}

TEST(HttpGet, DecodesChunkedBodies) {
  testing::FakeHttpServer server([](int) {
    return std::string(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n world!\r\n0\r\n\r\n");
  });
  auto body = HttpGet(server.url("/"), absl::Seconds(5));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, "hello world!");
}

TEST(HttpGet, ReportsHttpErrorsAndUnreachableHosts) {
  testing::FakeHttpServer server([](int) { return std::string("HTTP/1.1 404 Not Found\r\n\r\n"); });
  EXPECT_THAT(HttpGet(server.url("/metrics"), absl::Seconds(5)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("HTTP 404 Not Found")));
  int closed_port = 0;
  {
    testing::FakeHttpServer gone([](int) { return std::string(); });
    closed_port = gone.port();
  }
  EXPECT_THAT(HttpGet(absl::StrCat("http://127.0.0.1:", closed_port, "/metrics"), absl::Seconds(5)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Connection refused")));
  EXPECT_THAT(HttpGet("https://x/metrics", absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("http://")));
}

TEST(DefaultMetricsUrl, UsesTheTargetsHostAndPort8501) {
  EXPECT_EQ(DefaultMetricsUrl("localhost:8500"), "http://localhost:8501/metrics");
  EXPECT_EQ(DefaultMetricsUrl("dns:///svc.ns:8500"), "http://svc.ns:8501/metrics");
  EXPECT_EQ(DefaultMetricsUrl("[::1]:8500"), "http://[::1]:8501/metrics");
  EXPECT_EQ(DefaultMetricsUrl("unix:/tmp/s"), "");
}

}  // namespace
}  // namespace clipserve::client
