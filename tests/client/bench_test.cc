// Unit tests of bench's arithmetic and output; the load itself runs in clipctl_end_to_end_test.
#include "client/bench.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::client {
namespace {

using ::testing::HasSubstr;

TEST(Percentile, NearestRank) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 90), 90);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 99.5), 100);
  EXPECT_EQ(Percentile(v, 100), 100);
  EXPECT_EQ(Percentile(v, 0), 1);
  EXPECT_EQ(Percentile({7}, 99), 7);
  EXPECT_EQ(Percentile({}, 50), 0);
  // 10 values: p99 is the largest, p90 the 9th, p50 the 5th.
  const std::vector<double> ten = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(Percentile(ten, 99), 10);
  EXPECT_EQ(Percentile(ten, 90), 9);
  EXPECT_EQ(Percentile(ten, 50), 5);
}

TEST(SummarizeLatencies, SortsAndSummarises) {
  const LatencySummary s = SummarizeLatencies({5, 1, 4, 2, 3});
  EXPECT_EQ(s.count, 5);
  EXPECT_EQ(s.p50, 3);
  EXPECT_EQ(s.p90, 5);
  EXPECT_EQ(s.max, 5);
  EXPECT_DOUBLE_EQ(s.mean, 3);
  EXPECT_EQ(SummarizeLatencies({}).count, 0);
}

TEST(ParseBenchCall, KnowsTheThreeCalls) {
  EXPECT_EQ(ParseBenchCall("embed_text").value(), BenchCall::kEmbedText);
  EXPECT_EQ(ParseBenchCall("classify").value(), BenchCall::kClassify);
  EXPECT_THAT(ParseBenchCall("rank"),
              clipserve::testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("embed_text")));
}

BenchResult Sample() {
  BenchResult r;
  r.options.target = "h:1";
  r.options.concurrency = 32;
  r.model = "fixture";
  r.measured_s = 2;
  r.calls = 10;
  r.ok = 8;
  r.errors = {{"RESOURCE_EXHAUSTED", 2}};
  r.throughput_per_s = 4;
  r.latency_ms = SummarizeLatencies({1, 2, 3, 4, 5, 6, 7, 8});
  r.batch_sizes.push_back(
      Histogram{{{"model", "fixture"}, {"lane", "clip.text"}}, {{1, 1}, {2, 1}, {4, 3}, {INFINITY, 3}}, 7, 3});
  return r;
}

TEST(BenchResultToJson, HasTheDocumentedShape) {
  const nlohmann::json j = BenchResultToJson(Sample());
  EXPECT_EQ(j["throughput_per_s"], 4.0);
  EXPECT_EQ(j["calls"], 10);
  EXPECT_EQ(j["ok"], 8);
  EXPECT_EQ(j["errors"]["RESOURCE_EXHAUSTED"], 2);
  EXPECT_EQ(j["latency_ms"]["p50"], 4.0);
  EXPECT_EQ(j["latency_ms"]["p99"], 8.0);
  for (const char* k : {"p50", "p90", "p99", "max", "mean"}) EXPECT_TRUE(j["latency_ms"].contains(k)) << k;
  const nlohmann::json& lane = j["batch_size"]["clip.text"];
  EXPECT_EQ(lane["model"], "fixture");
  EXPECT_DOUBLE_EQ(lane["mean"].get<double>(), 7.0 / 3.0);
  EXPECT_EQ(lane["histogram"],
            nlohmann::json::parse(R"([{"le":"1","count":1.0},{"le":"2","count":0.0},{"le":"4","count":2.0},)"
                                  R"({"le":"+Inf","count":0.0}])"));
  EXPECT_EQ(j["mode"], "closed");
  EXPECT_EQ(j["concurrency"], 32);
}

TEST(FormatBenchTable, ShowsThroughputLatencyErrorsAndBatchSizes) {
  const std::string t = FormatBenchTable(Sample());
  EXPECT_THAT(t, HasSubstr("closed loop, 32 callers"));
  EXPECT_THAT(t, HasSubstr("throughput  4.0 OK calls/s"));
  EXPECT_THAT(t, HasSubstr("p99 8.00"));
  EXPECT_THAT(t, HasSubstr("RESOURCE_EXHAUSTED 2"));
  EXPECT_THAT(t, HasSubstr("lane clip.text: 3 batches, mean 2.33"));
  EXPECT_THAT(t, HasSubstr("<= 4               2"));
}

}  // namespace
}  // namespace clipserve::client
