#include "server/common/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/process_metrics.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::metrics {
namespace {

using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(Metrics, ContentTypeIsTextFormat004) {
  EXPECT_STREQ(kPrometheusContentType, "text/plain; version=0.0.4; charset=utf-8");
}

TEST(Metrics, CollectRendersExactTextInNameOrder) {
  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CounterFamily * requests,
                                 r.AddCounter("clipserve_requests_total", "Requests received.", {"model", "lane"}));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(GaugeFamily * depth, r.AddGauge("clipserve_queue_depth", "Queued items."));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HistogramFamily * latency, r.AddHistogram("clipserve_compute_seconds", "Compute time.",
                                                                           {"model"}, {0.01, 0.1, 1}));

  requests->Labels({"vit-b32", "text"}).Increment();
  requests->Labels({"vit-b32", "text"}).Increment(2);
  requests->Labels({"vit-b32", "image"}).Increment();
  requests->Labels({"rn50", "text"});  // exported as 0
  depth->Get().Set(7);
  Histogram& h = latency->Labels({"vit-b32"});
  h.Observe(0.005);
  h.Observe(0.01);  // upper bounds are inclusive
  h.Observe(0.5);
  h.Observe(3);

  EXPECT_EQ(r.Collect(),
            "# HELP clipserve_compute_seconds Compute time.\n"
            "# TYPE clipserve_compute_seconds histogram\n"
            "clipserve_compute_seconds_bucket{model=\"vit-b32\",le=\"0.01\"} 2\n"
            "clipserve_compute_seconds_bucket{model=\"vit-b32\",le=\"0.1\"} 2\n"
            "clipserve_compute_seconds_bucket{model=\"vit-b32\",le=\"1\"} 3\n"
            "clipserve_compute_seconds_bucket{model=\"vit-b32\",le=\"+Inf\"} 4\n"
            "clipserve_compute_seconds_sum{model=\"vit-b32\"} 3.515\n"
            "clipserve_compute_seconds_count{model=\"vit-b32\"} 4\n"
            "# HELP clipserve_queue_depth Queued items.\n"
            "# TYPE clipserve_queue_depth gauge\n"
            "clipserve_queue_depth 7\n"
            "# HELP clipserve_requests_total Requests received.\n"
            "# TYPE clipserve_requests_total counter\n"
            "clipserve_requests_total{model=\"rn50\",lane=\"text\"} 0\n"
            "clipserve_requests_total{model=\"vit-b32\",lane=\"image\"} 1\n"
            "clipserve_requests_total{model=\"vit-b32\",lane=\"text\"} 3\n");
}

TEST(Metrics, UnlabeledFamiliesExportZeroAndLabeledOnesWaitForAChild) {
  Registry r;
  ASSERT_THAT(r.AddCounter("a_total", "A.").status(), IsOk());
  ASSERT_THAT(r.AddCounter("b_total", "B.", {"code"}).status(), IsOk());
  ASSERT_THAT(r.AddHistogram("c_seconds", "C.", {}, {1}).status(), IsOk());
  ASSERT_THAT(r.AddCallbackGauge("d", "D.").status(), IsOk());
  EXPECT_EQ(r.Collect(),
            "# HELP a_total A.\n# TYPE a_total counter\na_total 0\n"
            "# HELP c_seconds C.\n# TYPE c_seconds histogram\n"
            "c_seconds_bucket{le=\"1\"} 0\nc_seconds_bucket{le=\"+Inf\"} 0\nc_seconds_sum 0\nc_seconds_count 0\n");
}

TEST(Metrics, EmptyRegistryCollectsNothing) { EXPECT_EQ(Registry().Collect(), ""); }

TEST(Metrics, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeLabelValue("plain ünïcode {}=,"), "plain ünïcode {}=,");
  EXPECT_EQ(EscapeHelp("a\\b\"c\nd"), "a\\\\b\"c\\nd");

  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CounterFamily * f, r.AddCounter("x_total", "Line one\nback\\slash \"q\".", {"l"}));
  f->Labels({"say \"hi\"\\\n"}).Increment();
  EXPECT_EQ(r.Collect(),
            "# HELP x_total Line one\\nback\\\\slash \"q\".\n"
            "# TYPE x_total counter\n"
            "x_total{l=\"say \\\"hi\\\"\\\\\\n\"} 1\n");
}

TEST(Metrics, FormatsValuesAsShortestRoundTrip) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(1), "1");
  EXPECT_EQ(FormatValue(2.5), "2.5");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(-3.25), "-3.25");
  EXPECT_EQ(FormatValue(123456789), "123456789");
  EXPECT_EQ(FormatValue(1e-9), "1e-09");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  for (double v : {0.1 + 0.2, 1.0 / 3, 6.02214076e23, 5e-324})
    EXPECT_EQ(std::strtod(FormatValue(v).c_str(), nullptr), v);
}

TEST(Metrics, ValidatesNames) {
  EXPECT_TRUE(IsValidMetricName("clipserve_requests_total"));
  EXPECT_TRUE(IsValidMetricName("_x9"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_FALSE(IsValidMetricName("9x"));
  EXPECT_FALSE(IsValidMetricName("a-b"));
  EXPECT_FALSE(IsValidMetricName("job:rate"));
  EXPECT_TRUE(IsValidLabelName("model"));
  EXPECT_FALSE(IsValidLabelName("__name__"));
  EXPECT_FALSE(IsValidLabelName("a.b"));

  Registry r;
  EXPECT_THAT(r.AddCounter("bad name_total", "").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid metric name")));
  EXPECT_THAT(r.AddCounter("requests", "").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must end in _total")));
  EXPECT_THAT(r.AddGauge("items_total", "").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("only counter")));
  EXPECT_THAT(r.AddHistogram("x_count", "", {}, {1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("_bucket, _sum or _count")));
  EXPECT_THAT(r.AddHistogram("x_seconds", "", {"le"}, {1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'le'")));
  EXPECT_THAT(r.AddGauge("g", "", {"model", "model"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate label")));
  EXPECT_THAT(r.AddGauge("g", "", {"__x"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid label name")));
  EXPECT_THAT(r.AddHistogram("h_seconds", "", {}, {1, 1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("strictly increase")));
  EXPECT_THAT(r.AddHistogram("h_seconds", "", {}, {std::nan(""), 1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not finite")));
  EXPECT_EQ(r.Collect(), "");  // nothing was registered by the failures
}

TEST(Metrics, RejectsNamesAndSeriesNamesThatAreTaken) {
  Registry r;
  ASSERT_THAT(r.AddHistogram("lat_seconds", "", {}, {1}).status(), IsOk());
  EXPECT_THAT(r.AddHistogram("lat_seconds", "", {}, {1}).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("lat_seconds")));
  EXPECT_THAT(r.AddGauge("lat_seconds_count", "").status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("lat_seconds_count")));
  ASSERT_THAT(r.AddGauge("depth", "").status(), IsOk());
  EXPECT_THAT(r.AddCallbackGauge("depth", "").status(), StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("")));
  ASSERT_THAT(r.AddGauge("q_sum", "").status(), IsOk());
  EXPECT_THAT(r.AddHistogram("q", "", {}, {1}).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("q_sum")));
}

TEST(Metrics, WrongNumberOfLabelValuesIsAnErrorOrADeath) {
  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CounterFamily * f, r.AddCounter("x_total", "", {"model", "lane"}));
  EXPECT_THAT(f->TryLabels({"only-one"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has 2 labels (model, lane), got 1")));
  EXPECT_DEATH(f->Labels({"a", "b", "c"}), "has 2 labels");
}

TEST(Metrics, LabelsReturnsTheSameChildForTheSameValues) {
  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(GaugeFamily * f, r.AddGauge("g", "", {"model"}));
  Gauge& a = f->Labels({"a"});
  const std::string a_again = "a";
  EXPECT_EQ(&a, &f->Labels({a_again}));
  EXPECT_NE(&a, &f->Labels({"b"}));
  a.Set(5);
  a.Increment(2);
  a.Decrement();
  a.Decrement(0.5);
  EXPECT_EQ(a.value(), 5.5);
}

TEST(Metrics, CountersIgnoreNegativeAndNaNIncrements) {
  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CounterFamily * f, r.AddCounter("x_total", ""));
  Counter& c = f->Get();
  c.Increment(1.5);
  c.Increment(-1);
  c.Increment(std::nan(""));
  EXPECT_EQ(c.value(), 1.5);
  c.Increment();
  c.Increment(2);
  EXPECT_EQ(c.value(), 4.5);
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInclusiveUpperBounds) {
  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(
      HistogramFamily * f,
      r.AddHistogram("h_seconds", "", {}, {1, 2, 4, std::numeric_limits<double>::infinity()}));  // +Inf dropped
  Histogram& h = f->Get();
  EXPECT_THAT(h.bounds(), ElementsAre(1, 2, 4));
  for (double v : {-1.0, 0.0, 1.0, 1.5, 2.0, 4.0, 4.5, 100.0}) h.Observe(v);
  h.Observe(std::nan(""));  // ignored
  const Histogram::Snapshot s = h.snapshot();
  EXPECT_THAT(s.cumulative_counts, ElementsAre(3, 5, 6, 8));
  EXPECT_EQ(s.count, 8u);
  EXPECT_DOUBLE_EQ(s.sum, 112.0);
  EXPECT_THAT(r.Collect(), HasSubstr("h_seconds_bucket{le=\"1\"} 3\n"
                                     "h_seconds_bucket{le=\"2\"} 5\n"
                                     "h_seconds_bucket{le=\"4\"} 6\n"
                                     "h_seconds_bucket{le=\"+Inf\"} 8\n"
                                     "h_seconds_sum 112\n"
                                     "h_seconds_count 8\n"));
}

TEST(Metrics, HistogramWithoutBoundsHasOnlyTheInfBucket) {
  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HistogramFamily * f, r.AddHistogram("h_seconds", "", {}, {}));
  f->Get().Observe(3);
  EXPECT_THAT(f->Get().snapshot().cumulative_counts, ElementsAre(1));
}

TEST(Metrics, BucketHelpers) {
  EXPECT_THAT(ExponentialBuckets(0.001, 10, 4),
              ElementsAre(0.001, 0.01, ::testing::DoubleEq(0.1), ::testing::DoubleEq(1)));
  EXPECT_THAT(LinearBuckets(1, 2, 3), ElementsAre(1, 3, 5));
  const std::vector<double> d = DefaultLatencyBuckets();
  EXPECT_TRUE(std::is_sorted(d.begin(), d.end()));
  EXPECT_EQ(d.front(), 0.001);
  EXPECT_EQ(d.back(), 60);
}

TEST(Metrics, CallbackFamiliesAreEvaluatedAtScrapeTimeAndCanBeRemoved) {
  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CallbackFamily * depth, r.AddCallbackGauge("queue_depth", "Depth.", {"lane"}));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CallbackFamily * steps, r.AddCallbackCounter("steps_total", "Steps."));
  int text_depth = 3;
  ASSERT_THAT(depth->Set({"text"}, [&] { return text_depth; }), IsOk());
  ASSERT_THAT(depth->Set({"image"}, [] { return 1.0; }), IsOk());
  ASSERT_THAT(steps->Set({}, [] { return 42.0; }), IsOk());
  EXPECT_THAT(depth->Set({}, [] { return 0.0; }), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("labels")));
  EXPECT_THAT(depth->Set({"x"}, nullptr), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty callback")));

  text_depth = 9;
  EXPECT_EQ(r.Collect(),
            "# HELP queue_depth Depth.\n# TYPE queue_depth gauge\n"
            "queue_depth{lane=\"image\"} 1\nqueue_depth{lane=\"text\"} 9\n"
            "# HELP steps_total Steps.\n# TYPE steps_total counter\nsteps_total 42\n");

  depth->Remove({"image"});
  depth->Remove({"never-set"});
  ASSERT_THAT(depth->Set({"text"}, [] { return 2.0; }), IsOk());  // replaces
  EXPECT_THAT(r.Collect(), HasSubstr("queue_depth{lane=\"text\"} 2\n# HELP steps_total"));
  EXPECT_THAT(r.Collect(), ::testing::Not(HasSubstr("image")));
}

TEST(Metrics, ConcurrentIncrementsAndObservationsAreExact) {
  Registry r;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CounterFamily * counters, r.AddCounter("c_total", "", {"t"}));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(GaugeFamily * gauges, r.AddGauge("g", ""));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HistogramFamily * hists, r.AddHistogram("h_seconds", "", {}, {0.5, 1.5}));
  constexpr int kThreads = 8;
  constexpr int kIterations = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& shared = counters->Labels({"shared"});  // every thread looks it up: one child
      Counter& own = counters->Labels({absl::StrCat("own", t)});
      Gauge& g = gauges->Get();
      Histogram& h = hists->Get();
      for (int i = 0; i < kIterations; ++i) {
        shared.Increment();
        own.Increment(0.5);
        g.Increment(2);
        g.Decrement();
        h.Observe(i % 3);                // 0, 1, 2: one per bucket
        if (i % 5000 == 0) r.Collect();  // scrapes race with updates
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(counters->Labels({"shared"}).value(), kThreads * kIterations);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(counters->Labels({absl::StrCat("own", t)}).value(), kIterations / 2);
  EXPECT_EQ(gauges->Get().value(), kThreads * kIterations);
  const Histogram::Snapshot s = hists->Get().snapshot();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kIterations));
  const uint64_t per_value = kThreads * ((kIterations + 2) / 3);
  EXPECT_EQ(s.cumulative_counts[0], per_value);
  EXPECT_EQ(s.sum, static_cast<double>(kThreads) * (0 * 6667 + 1 * 6667 + 2 * 6666));
}

TEST(ProcessMetrics, ExportsTheStandardNamesWithSaneValues) {
  Registry r;
  ASSERT_THAT(AddProcessMetrics(&r), IsOk());
  EXPECT_THAT(AddProcessMetrics(&r), StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("process_")));
  const std::string text = r.Collect();
  EXPECT_THAT(text, HasSubstr("# TYPE process_cpu_seconds_total counter\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE process_resident_memory_bytes gauge\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE process_start_time_seconds gauge\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("NaN")));
  auto value = [&](const std::string& name) {
    const size_t at = text.find("\n" + name + " ");
    EXPECT_NE(at, std::string::npos) << name;
    return std::strtod(text.c_str() + at + name.size() + 2, nullptr);
  };
  EXPECT_GT(value("process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(value("process_virtual_memory_bytes"), value("process_resident_memory_bytes"));
  EXPECT_GE(value("process_cpu_seconds_total"), 0);
  EXPECT_GT(value("process_open_fds"), 2);
  EXPECT_GE(value("process_max_fds"), value("process_open_fds"));
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(value("process_start_time_seconds"), now + 2);
  EXPECT_GT(value("process_start_time_seconds"), now - 3600);  // this test process started recently
}

// promtool (Debian package `prometheus`) lints a realistic exposition: it must parse and report no problems.
TEST(Metrics, PromtoolCheckMetricsAcceptsARealisticExposition) {
  const char* promtool = "/usr/bin/promtool";
  ASSERT_EQ(access(promtool, X_OK), 0)
      << "promtool not found at /usr/bin/promtool: install the Debian package 'prometheus' "
         "(tools/install-deps.sh lists it)";

  Registry r;
  ASSERT_THAT(AddProcessMetrics(&r), IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(
      CounterFamily * requests,
      r.AddCounter("clipserve_requests_total", "Requests received, by model and lane.", {"model", "lane"}));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(
      CounterFamily * failures,
      r.AddCounter("clipserve_request_failures_total", "Failed requests, by status code.", {"model", "lane", "code"}));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(HistogramFamily * e2e,
                                 r.AddHistogram("clipserve_request_duration_seconds", "End-to-end time of a request.",
                                                {"model", "lane"}, DefaultLatencyBuckets()));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(
      HistogramFamily * batch,
      r.AddHistogram("clipserve_batch_size", "Items per batch.", {"model", "lane"}, ExponentialBuckets(1, 2, 8)));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(GaugeFamily * active,
                                 r.AddGauge("clipserve_generation_jobs_active", "Generation jobs running."));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(CallbackFamily * depth,
                                 r.AddCallbackGauge("clipserve_queue_depth", "Items waiting, by lane.", {"lane"}));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(
      GaugeFamily * info, r.AddGauge("clipserve_model_info", "Loaded models (value 1).", {"model", "dtype", "device"}));
  for (const char* model : {"vit-b32", "vit-l14 \"quoted\\path\"\nnext"}) {
    for (const char* lane : {"text", "image"}) {
      requests->Labels({model, lane}).Increment(10);
      failures->Labels({model, lane, "INVALID_ARGUMENT"}).Increment();
      failures->Labels({model, lane, "DEADLINE_EXCEEDED"}).Increment(2);
      for (double s : {0.0004, 0.003, 0.02, 0.7, 12.0, 90.0}) e2e->Labels({model, lane}).Observe(s);
      for (int b : {1, 3, 32, 200}) batch->Labels({model, lane}).Observe(b);
    }
    info->Labels({model, "float16", "cuda:0"}).Set(1);
  }
  active->Get().Set(2);
  ASSERT_THAT(depth->Set({"text"}, [] { return 5.0; }), IsOk());
  ASSERT_THAT(depth->Set({"image"}, [] { return 0.0; }), IsOk());
  const std::string text = r.Collect();

  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  const std::string base = (dir / absl::StrCat("clipserve_metrics_", getpid())).string();
  { std::ofstream(base + ".prom") << text; }
  const std::string cmd = absl::StrCat(promtool, " check metrics < ", base, ".prom > ", base, ".out 2>&1");
  const int rc = std::system(cmd.c_str());
  std::ifstream out_file(base + ".out");
  const std::string report((std::istreambuf_iterator<char>(out_file)), std::istreambuf_iterator<char>());
  std::filesystem::remove(base + ".prom");
  std::filesystem::remove(base + ".out");
  EXPECT_EQ(rc, 0) << "promtool check metrics failed:\n" << report << "\non:\n" << text;
  EXPECT_THAT(report, IsEmpty()) << text;
}

}  // namespace
}  // namespace clipserve::metrics
