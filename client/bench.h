// `clipctl bench`: a load generator for clipserve built on gRPC's callback API, so that a few threads drive
// hundreds of calls in flight and the client's own cost stays small next to the server's.
//
// Closed loop (`concurrency` callers): each caller keeps exactly one call in flight and sends the next one from
// the previous call's completion. Open loop (`rate` > 0): calls leave at scheduled times whatever the server
// does — Poisson arrivals (exponential gaps, mean 1/rate; a seeded generator) or a fixed interval — and each
// call's latency is measured from its scheduled time, so a client that falls behind does not hide queueing
// (no coordinated omission). Calls are spread round-robin over `channels` TCP connections.
//
// Only calls that start (closed) or are scheduled (open) inside the measurement window [warm-up end, warm-up end
// + duration) count; every counted call is waited for. Latency percentiles are over the OK calls; failed calls
// are counted by status code. The server's batch-size histogram (`clipserve_batch_size`) is scraped from
// /metrics at the start and the end of the window and the difference reported, so it shows this run only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/clip_client.h"
#include "client/metrics.h"
#include "clipserve/v1/clipserve.pb.h"
#include "nlohmann/json.hpp"

namespace clipserve::client {

enum class BenchCall { kEmbedText, kEmbedImage, kClassify };
enum class Arrival { kPoisson, kUniform };

// "embed_text" | "embed_image" | "classify"; INVALID_ARGUMENT otherwise.
absl::StatusOr<BenchCall> ParseBenchCall(const std::string& name);
std::string BenchCallName(BenchCall call);

struct BenchOptions {
  std::string target = "localhost:8500";
  ChannelSecurity security;  // TLS and token of every connection
  std::string model;  // empty: the server's default
  BenchCall call = BenchCall::kEmbedText;
  // Every call sends the same request: all `texts` (embed_text), all `images` (embed_image), or all `images`
  // against `labels` with `label_template` (classify).
  std::vector<std::string> texts;
  std::vector<v1::Image> images;
  std::vector<std::string> labels;
  std::string label_template;

  int concurrency = 16;  // closed loop: callers
  double rate = 0;       // > 0: open loop at this many calls per second
  Arrival arrival = Arrival::kPoisson;
  int max_in_flight = 20000;  // open loop: a call due while this many are in flight is not sent (not_sent)
  int channels = 4;           // TCP connections
  absl::Duration duration = absl::Seconds(10);
  absl::Duration warmup = absl::Seconds(2);
  absl::Duration timeout = absl::Seconds(30);  // deadline of each call
  std::string metrics_url;                     // empty: do not scrape
  uint64_t seed = 1;                           // Poisson arrivals
};

struct LatencySummary {
  int64_t count = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

// Nearest-rank percentile of ascending `sorted` (p in [0, 100]): the smallest value with at least p % of the
// values at or below it. 0 for an empty list.
double Percentile(const std::vector<double>& sorted, double p);
// Sorts `values` and summarises them.
LatencySummary SummarizeLatencies(std::vector<double> values);

struct BenchResult {
  BenchOptions options;  // without the image bytes and the token
  std::string model;     // as the server named it in its answers
  double measured_s = 0;
  int64_t calls = 0;  // answered calls in the window, OK or not
  int64_t ok = 0;
  int64_t not_sent = 0;                   // open loop: due while max_in_flight calls were in flight
  std::map<std::string, int64_t> errors;  // status code name -> count
  double throughput_per_s = 0;            // OK calls per second
  LatencySummary latency_ms;              // OK calls

  // Batch sizes of this run: the series of `model` whose count grew during the window.
  std::vector<Histogram> batch_sizes;
  std::string metrics_note;  // empty, or why batch sizes are missing or cover more than this run
};

// Runs the load. Fails (without load) when a first call cannot reach the server or is rejected as malformed
// (INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED, ...); transient errors are counted instead.
absl::StatusOr<BenchResult> RunBench(const BenchOptions& options);

std::string FormatBenchTable(const BenchResult& result);
// {throughput_per_s, latency_ms {p50,p90,p99,max,mean}, calls, ok, not_sent, errors {code: count},
//  batch_size {lane: {model, batches, mean, histogram [{le, count}]}}, ...}; histogram counts are per bucket
// (not cumulative), `le` as Prometheus writes it ("1", "2", "+Inf").
nlohmann::json BenchResultToJson(const BenchResult& result);

}  // namespace clipserve::client
