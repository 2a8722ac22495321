// Reading the server's /metrics for `clipctl bench`: a minimal HTTP/1.0 GET over a plain socket, a parser for the
// Prometheus text exposition format, and histogram extraction (the batch-size histogram per model and lane).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace clipserve::client {

// GET `url` ("http://host:port/path"; no TLS, no redirects) and return the body of a 200 answer. Blocks for at
// most about `timeout`. UNAVAILABLE when the host cannot be reached, FAILED_PRECONDITION for another status.
absl::StatusOr<std::string> HttpGet(const std::string& url, absl::Duration timeout);

// One sample line: `name{label="value",...} value [timestamp]`.
struct PrometheusSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text format (comments and blank lines skipped; label values unescaped; +Inf/-Inf/NaN accepted).
// INVALID_ARGUMENT naming the line for a malformed sample.
absl::StatusOr<std::vector<PrometheusSample>> ParsePrometheusText(absl::string_view text);

// A histogram series: one per distinct label set of `family`_bucket/_sum/_count, `le` excluded.
struct Histogram {
  std::map<std::string, std::string> labels;
  // (upper bound, cumulative count), ascending; the last bound is +Inf.
  std::vector<std::pair<double, double>> buckets;
  double sum = 0;
  double count = 0;

  double mean() const { return count > 0 ? sum / count : 0; }
  std::string label(const std::string& name) const;
};

std::vector<Histogram> ExtractHistograms(const std::vector<PrometheusSample>& samples, const std::string& family);

// `after` − `before` for the series in `after` (a series missing from `before` is kept whole), so that a bench
// reports only the batches of its own run.
std::vector<Histogram> SubtractHistograms(const std::vector<Histogram>& after, const std::vector<Histogram>& before);

// "http://HOST:8501/metrics" for a gRPC target's host; empty when the target has no host (unix sockets).
std::string DefaultMetricsUrl(absl::string_view target);

}  // namespace clipserve::client
