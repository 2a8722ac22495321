// Hot-path cost of the metrics (server/common/metrics.h) and the cost of one scrape.
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "server/common/metrics.h"
#include "server/common/process_metrics.h"

namespace clipserve::metrics {
namespace {

// One registry shared by all threads of a multi-threaded run (benchmark runs setup in each thread).
Registry& SharedRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

Counter& SharedCounter() {
  static Counter* counter = &(*SharedRegistry().AddCounter("bench_counter_total", "", {"model"}))->Labels({"m"});
  return *counter;
}

Histogram& SharedHistogram() {
  static Histogram* histogram =
      &(*SharedRegistry().AddHistogram("bench_seconds", "", {"model"}, DefaultLatencyBuckets()))->Labels({"m"});
  return *histogram;
}

void BM_CounterIncrement(benchmark::State& state) {
  Counter& c = SharedCounter();
  for (auto _ : state) c.Increment();
  benchmark::DoNotOptimize(c.value());
}
BENCHMARK(BM_CounterIncrement)->Threads(1)->Threads(2)->UseRealTime();

void BM_HistogramObserve(benchmark::State& state) {
  Histogram& h = SharedHistogram();
  double v = 0.0001;
  for (auto _ : state) {
    h.Observe(v);
    v = v < 100 ? v * 1.7 : 0.0001;  // walk over every bucket
  }
  benchmark::DoNotOptimize(h.snapshot().count);
}
BENCHMARK(BM_HistogramObserve)->Threads(1)->Threads(2)->UseRealTime();

// The cost of a child lookup, which callers do once and keep the reference.
void BM_FamilyLabelsLookup(benchmark::State& state) {
  Registry r;
  CounterFamily* f = *r.AddCounter("lookup_total", "", {"model", "lane"});
  f->Labels({"vit-b32", "text"});
  for (auto _ : state) benchmark::DoNotOptimize(&f->Labels({"vit-b32", "text"}));
}
BENCHMARK(BM_FamilyLabelsLookup);

// A registry of 46 series (211 sample lines): 2 models x 3 lanes of requests, failures (3 codes) and two
// histograms of 15 buckets, a gauge, a callback gauge per lane and the 6 process metrics.
void BM_Collect50Series(benchmark::State& state) {
  Registry r;
  CounterFamily* requests = *r.AddCounter("clipserve_requests_total", "Requests.", {"model", "lane"});
  CounterFamily* failures = *r.AddCounter("clipserve_request_failures_total", "Failures.", {"model", "lane", "code"});
  HistogramFamily* e2e =
      *r.AddHistogram("clipserve_request_duration_seconds", "E2E.", {"model", "lane"}, DefaultLatencyBuckets());
  HistogramFamily* compute =
      *r.AddHistogram("clipserve_compute_seconds", "Compute.", {"model", "lane"}, DefaultLatencyBuckets());
  GaugeFamily* active = *r.AddGauge("clipserve_generation_jobs_active", "Active jobs.");
  CallbackFamily* depth = *r.AddCallbackGauge("clipserve_queue_depth", "Depth.", {"lane"});
  (void)AddProcessMetrics(&r);
  for (const char* model : {"vit-b32", "vit-l14"}) {
    for (const char* lane : {"clip.text", "clip.image", "generation.step"}) {
      requests->Labels({model, lane}).Increment(123);
      for (const char* code : {"INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}) {
        failures->Labels({model, lane, code}).Increment(2);
      }
      e2e->Labels({model, lane}).Observe(0.042);
      compute->Labels({model, lane}).Observe(0.017);
    }
  }
  active->Get().Set(1);
  for (const char* lane : {"clip.text", "clip.image", "generation.step"}) (void)depth->Set({lane}, [] { return 3.0; });
  size_t bytes = 0;
  for (auto _ : state) {
    std::string text = r.Collect();
    bytes = text.size();
    benchmark::DoNotOptimize(text);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_Collect50Series)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace clipserve::metrics
