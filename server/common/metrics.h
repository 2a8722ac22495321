// Metrics: counters, gauges, histograms and scrape-time callback metrics in a Registry that renders the
// Prometheus text exposition format 0.0.4 (served as kPrometheusContentType).
//
// Naming rules (https://prometheus.io/docs/practices/naming/). The Registry enforces the mechanical ones
// (marked *) and returns INVALID_ARGUMENT otherwise; the rest are the caller's job:
//  * metric names match [a-zA-Z_][a-zA-Z0-9_]* (colons are reserved for recording rules and rejected);
//  * counters end in `_total`; gauges and histograms do not, and histograms do not end in `_bucket`, `_sum` or
//    `_count` (those are the series a histogram writes);
//  * label names match [a-zA-Z_][a-zA-Z0-9_]*, do not start with `__`, are unique, and a histogram has no `le`;
//  * no two families write a series of the same name (a histogram `x` takes `x_bucket`, `x_sum`, `x_count`);
//  - names are snake_case with an application prefix (`clipserve_`), and carry the unit, in base units and
//    plural, before any `_total`: `_seconds`, `_bytes` (never ms or kB), `_total` for counts; ratios are 0..1;
//  - label values have bounded cardinality (`model`, `lane`, `code` = a status code name): never request ids,
//    user text or free-form error messages;
//  - every series of a family means the same thing: summing or averaging over a label must make sense.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace clipserve::metrics {

class Registry;

// The HTTP Content-Type of Registry::Collect()'s output.
inline constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// A monotonically increasing value (one series of a counter family). Owned by its family; any thread may
// call any method; lock-free, never blocks. Increment() is one atomic add; Increment(amount) a CAS loop on a
// double (about twice the cost, and retries under contention).
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Increment() { count_.fetch_add(1, std::memory_order_relaxed); }
  // Adds `amount`; a negative or NaN amount is ignored (counters never go down).
  void Increment(double amount) {
    if (!(amount >= 0.0)) return;
    double old = amount_.load(std::memory_order_relaxed);
    while (!amount_.compare_exchange_weak(old, old + amount, std::memory_order_relaxed)) {
    }
  }
  double value() const {
    return static_cast<double>(count_.load(std::memory_order_relaxed)) + amount_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> count_{0};   // Increment()
  std::atomic<double> amount_{0.0};  // Increment(amount)
};

// A value that goes up and down (one series of a gauge family). Owned by its family; any thread may call any
// method; lock-free, never blocks.
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double amount = 1.0) {
    double old = value_.load(std::memory_order_relaxed);
    while (!value_.compare_exchange_weak(old, old + amount, std::memory_order_relaxed)) {
    }
  }
  void Decrement(double amount = 1.0) { Increment(-amount); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A distribution of observations in fixed buckets (one series of a histogram family): per-bucket counts and
// a sum. Owned by its family; any thread may call any method; Observe is lock-free (a bucket search over the
// family's bounds, one atomic add, one CAS on the sum) and never blocks.
class Histogram {
 public:
  // Cumulative counts, one per bound plus the final +Inf bucket; `count` equals the last element.
  struct Snapshot {
    std::vector<uint64_t> cumulative_counts;
    double sum = 0.0;
    uint64_t count = 0;
  };

  // `bounds`: finite, strictly increasing upper bounds (the +Inf bucket is implicit). Families make these.
  explicit Histogram(std::shared_ptr<const std::vector<double>> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Records `value` (e.g. seconds) in the first bucket whose upper bound is >= value; NaN is ignored.
  void Observe(double value);

  // A scrape-time copy. Observations racing with it may be in the counts but not yet in the sum.
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return *bounds_; }

 private:
  std::shared_ptr<const std::vector<double>> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_->size() + 1, not cumulative
  std::atomic<double> sum_{0.0};
};

// Bucket bound helpers (upper bounds, without +Inf).
// start, start*factor, ... (`count` bounds); start > 0, factor > 1, count >= 1.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// start, start+width, ... (`count` bounds); width > 0, count >= 1.
std::vector<double> LinearBuckets(double start, double width, int count);
// Request latencies in seconds, 1 ms to 60 s.
std::vector<double> DefaultLatencyBuckets();

namespace internal {

// What every family has in common; Registry owns them and renders them in name order.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Appends HELP, TYPE and sample lines (nothing when the family has no series).
  virtual void AppendTo(std::string* out) const = 0;

 protected:
  FamilyBase(std::string name, std::string help, std::string type, std::vector<std::string> label_names);
  // INVALID_ARGUMENT unless there is one value per label name.
  absl::Status CheckArity(absl::Span<const absl::string_view> label_values) const;
  // `a="x",b="y"` with values escaped.
  std::string FormatLabels(absl::Span<const absl::string_view> label_values) const;
  void AppendHeader(std::string* out) const;

  const std::string name_;
  const std::string help_;
  const std::string type_;
  const std::vector<std::string> label_names_;
};

}  // namespace internal

// A metric family of Counter, Gauge or Histogram children, one per combination of label values. Owned by the
// Registry that made it (pointers stay valid for the Registry's lifetime); children are never removed. Any
// thread may call it. Labels() takes a mutex and allocates on first use: look a child up once and keep the
// reference; the child's own methods are lock-free.
template <typename Child>
class Family final : public internal::FamilyBase {
 public:
  using ChildFactory = std::function<std::unique_ptr<Child>()>;

  // The child for `label_values` (one per label name, in order), made on first use. A wrong number of values
  // is a programming error: it logs and aborts. Use TryLabels where the values come from input.
  Child& Labels(absl::Span<const absl::string_view> label_values);
  absl::StatusOr<Child*> TryLabels(absl::Span<const absl::string_view> label_values);
  // The only child of a family without labels.
  Child& Get() { return Labels({}); }

  void AppendTo(std::string* out) const override;

 private:
  friend class Registry;
  Family(std::string name, std::string help, std::string type, std::vector<std::string> label_names,
         ChildFactory factory);

  struct Entry {
    std::string labels;  // rendered once: `a="x",b="y"`
    std::unique_ptr<Child> child;
  };

  const ChildFactory factory_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, Entry> children_ ABSL_GUARDED_BY(mu_);
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;
using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// A gauge or counter family whose values are computed at scrape time by callbacks (queue depth, resident
// memory, CPU time), one callback per combination of label values. Owned by its Registry. Any thread may call
// it. Callbacks run on the scraping thread, inside Registry::Collect() and under this family's mutex: they
// must be thread-safe, quick, and must not call into the Registry. Set and Remove block while a scrape is
// running this family's callbacks, so after Remove returns the callback is neither running nor called again:
// remove it before whatever it reads goes away, and do not call Set or Remove while holding a lock that a
// callback takes.
class CallbackFamily final : public internal::FamilyBase {
 public:
  using Callback = std::function<double()>;

  // Sets or replaces the callback for `label_values`; INVALID_ARGUMENT for a wrong number of values or an
  // empty callback.
  absl::Status Set(absl::Span<const absl::string_view> label_values, Callback callback);
  // Removes the series for `label_values` if it exists.
  void Remove(absl::Span<const absl::string_view> label_values);

  void AppendTo(std::string* out) const override;

 private:
  friend class Registry;
  CallbackFamily(std::string name, std::string help, std::string type, std::vector<std::string> label_names);

  struct Entry {
    std::string labels;
    Callback callback;
  };

  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, Entry> children_ ABSL_GUARDED_BY(mu_);
};

// Owns metric families and renders them all, in name order, as Prometheus text. Registration validates names
// (see the rules at the top of this file) and fails with INVALID_ARGUMENT, or ALREADY_EXISTS for a name or a
// series name that is taken. Any thread may call any method; registration and Collect take a mutex (Collect
// holds it while it renders, and runs the callbacks of callback families). A Registry must outlive every
// pointer to its families and children.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // A family without labels has its one child from the start (so it is exported as 0 before first use); a
  // family with labels is exported once it has a child.
  absl::StatusOr<CounterFamily*> AddCounter(absl::string_view name, absl::string_view help,
                                            std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(absl::string_view name, absl::string_view help,
                                        std::vector<std::string> label_names = {});
  // `bounds`: finite, strictly increasing upper bounds; a trailing +Inf is accepted and dropped.
  absl::StatusOr<HistogramFamily*> AddHistogram(absl::string_view name, absl::string_view help,
                                                std::vector<std::string> label_names, std::vector<double> bounds);
  absl::StatusOr<CallbackFamily*> AddCallbackGauge(absl::string_view name, absl::string_view help,
                                                   std::vector<std::string> label_names = {});
  absl::StatusOr<CallbackFamily*> AddCallbackCounter(absl::string_view name, absl::string_view help,
                                                     std::vector<std::string> label_names = {});

  // The exposition: for each family with series, `# HELP`, `# TYPE` and one line per sample, ending in '\n'.
  std::string Collect() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  absl::StatusOr<CallbackFamily*> AddCallbackFamily(absl::string_view name, absl::string_view help,
                                                    std::vector<std::string> label_names, Kind kind);
  // Validates the names and reserves the family's series names.
  absl::Status Reserve(absl::string_view name, Kind kind, const std::vector<std::string>& label_names)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<internal::FamilyBase>, std::less<>> families_ ABSL_GUARDED_BY(mu_);
  std::set<std::string, std::less<>> series_names_ ABSL_GUARDED_BY(mu_);
};

// Formatting helpers of the text format, exposed for tests and for other exporters.
// A sample value: shortest round-trip decimal, "+Inf", "-Inf" or "NaN".
std::string FormatValue(double value);
// Escapes `\`, `"` and newline as `\\`, `\"` and `\n`.
std::string EscapeLabelValue(absl::string_view value);
// Escapes `\` and newline as `\\` and `\n`.
std::string EscapeHelp(absl::string_view help);
// Whether `name` is a valid metric name (colons rejected) / label name (`__` prefix rejected).
bool IsValidMetricName(absl::string_view name);
bool IsValidLabelName(absl::string_view name);

}  // namespace clipserve::metrics
