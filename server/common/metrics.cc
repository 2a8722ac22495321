#include "server/common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace clipserve::metrics {
namespace {

constexpr absl::string_view kTypeCounter = "counter";
constexpr absl::string_view kTypeGauge = "gauge";
constexpr absl::string_view kTypeHistogram = "histogram";

std::vector<std::string> ToKey(absl::Span<const absl::string_view> values) {
  std::vector<std::string> key;
  key.reserve(values.size());
  for (absl::string_view v : values) key.emplace_back(v);
  return key;
}

// `name{labels} value\n`, or `name value\n` without labels.
void AppendSample(absl::string_view name, absl::string_view labels, double value, std::string* out) {
  out->append(name.data(), name.size());
  if (!labels.empty()) {
    out->push_back('{');
    out->append(labels.data(), labels.size());
    out->push_back('}');
  }
  out->push_back(' ');
  out->append(FormatValue(value));
  out->push_back('\n');
}

void AppendSamples(const internal::FamilyBase& family, const std::string& labels, const Counter& c, std::string* out) {
  AppendSample(family.name(), labels, c.value(), out);
}

void AppendSamples(const internal::FamilyBase& family, const std::string& labels, const Gauge& g, std::string* out) {
  AppendSample(family.name(), labels, g.value(), out);
}

void AppendSamples(const internal::FamilyBase& family, const std::string& labels, const Histogram& h,
                   std::string* out) {
  const Histogram::Snapshot s = h.snapshot();
  const std::vector<double>& bounds = h.bounds();
  const std::string bucket_name = absl::StrCat(family.name(), "_bucket");
  const std::string prefix = labels.empty() ? std::string() : absl::StrCat(labels, ",");
  for (size_t i = 0; i <= bounds.size(); ++i) {
    const std::string le = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
    AppendSample(bucket_name, absl::StrCat(prefix, "le=\"", le, "\""), static_cast<double>(s.cumulative_counts[i]),
                 out);
  }
  AppendSample(absl::StrCat(family.name(), "_sum"), labels, s.sum, out);
  AppendSample(absl::StrCat(family.name(), "_count"), labels, static_cast<double>(s.count), out);
}

bool IsNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

bool IsValidName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0)) return false;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Formatting

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[32];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, r.ptr);
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

bool IsValidMetricName(absl::string_view name) { return IsValidName(name); }

bool IsValidLabelName(absl::string_view name) { return IsValidName(name) && !absl::StartsWith(name, "__"); }

// ---------------------------------------------------------------------------------------------------------------
// Histogram and buckets

Histogram::Histogram(std::shared_ptr<const std::vector<double>> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  const std::vector<double>& b = *bounds_;
  // First bound >= value (buckets are `le`, inclusive); past the end is the +Inf bucket.
  const size_t i = static_cast<size_t>(std::lower_bound(b.begin(), b.end(), value) - b.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  double old = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(old, old + value, std::memory_order_relaxed)) {
  }
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.cumulative_counts.resize(bounds_->size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative_counts[i] = total;
  }
  s.count = total;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out.push_back(v);
  return out;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  std::vector<double> out;
  for (int i = 0; i < count; ++i) out.push_back(start + width * i);
  return out;
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

// ---------------------------------------------------------------------------------------------------------------
// Families

namespace internal {

FamilyBase::FamilyBase(std::string name, std::string help, std::string type, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), type_(std::move(type)), label_names_(std::move(label_names)) {}

absl::Status FamilyBase::CheckArity(absl::Span<const absl::string_view> label_values) const {
  if (label_values.size() == label_names_.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("metric ", name_, " has ", label_names_.size(), " labels (",
                                                 absl::StrJoin(label_names_, ", "), "), got ", label_values.size(),
                                                 " values"));
}

std::string FamilyBase::FormatLabels(absl::Span<const absl::string_view> label_values) const {
  std::string out;
  for (size_t i = 0; i < label_values.size(); ++i) {
    absl::StrAppend(&out, i ? "," : "", label_names_[i], "=\"", EscapeLabelValue(label_values[i]), "\"");
  }
  return out;
}

void FamilyBase::AppendHeader(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n# TYPE ", name_, " ", type_, "\n");
}

}  // namespace internal

template <typename Child>
Family<Child>::Family(std::string name, std::string help, std::string type, std::vector<std::string> label_names,
                      ChildFactory factory)
    : FamilyBase(std::move(name), std::move(help), std::move(type), std::move(label_names)),
      factory_(std::move(factory)) {}

template <typename Child>
absl::StatusOr<Child*> Family<Child>::TryLabels(absl::Span<const absl::string_view> label_values) {
  if (absl::Status s = CheckArity(label_values); !s.ok()) return s;
  std::vector<std::string> key = ToKey(label_values);
  absl::MutexLock lock(&mu_);
  auto it = children_.find(key);
  if (it == children_.end()) {
    Entry entry{FormatLabels(label_values), factory_()};
    it = children_.emplace(std::move(key), std::move(entry)).first;
  }
  return it->second.child.get();
}

template <typename Child>
Child& Family<Child>::Labels(absl::Span<const absl::string_view> label_values) {
  absl::StatusOr<Child*> child = TryLabels(label_values);
  if (!child.ok()) {
    std::fprintf(stderr, "metrics: %s\n", child.status().ToString().c_str());
    std::abort();
  }
  return **child;
}

template <typename Child>
void Family<Child>::AppendTo(std::string* out) const {
  absl::MutexLock lock(&mu_);
  if (children_.empty()) return;
  AppendHeader(out);
  for (const auto& [key, entry] : children_) AppendSamples(*this, entry.labels, *entry.child, out);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

CallbackFamily::CallbackFamily(std::string name, std::string help, std::string type,
                               std::vector<std::string> label_names)
    : FamilyBase(std::move(name), std::move(help), std::move(type), std::move(label_names)) {}

absl::Status CallbackFamily::Set(absl::Span<const absl::string_view> label_values, Callback callback) {
  if (absl::Status s = CheckArity(label_values); !s.ok()) return s;
  if (!callback) return absl::InvalidArgumentError(absl::StrCat("metric ", name_, ": empty callback"));
  Entry entry{FormatLabels(label_values), std::move(callback)};
  std::vector<std::string> key = ToKey(label_values);
  absl::MutexLock lock(&mu_);
  children_.insert_or_assign(std::move(key), std::move(entry));
  return absl::OkStatus();
}

void CallbackFamily::Remove(absl::Span<const absl::string_view> label_values) {
  const std::vector<std::string> key = ToKey(label_values);
  absl::MutexLock lock(&mu_);
  children_.erase(key);
}

void CallbackFamily::AppendTo(std::string* out) const {
  absl::MutexLock lock(&mu_);
  if (children_.empty()) return;
  AppendHeader(out);
  for (const auto& [key, entry] : children_) AppendSample(name_, entry.labels, entry.callback(), out);
}

// ---------------------------------------------------------------------------------------------------------------
// Registry

absl::Status Registry::Reserve(absl::string_view name, Kind kind, const std::vector<std::string>& label_names) {
  if (!IsValidMetricName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid metric name '", name, "': want [a-zA-Z_][a-zA-Z0-9_]* (no colons)"));
  }
  const bool total = absl::EndsWith(name, "_total");
  if (kind == Kind::kCounter && !total) {
    return absl::InvalidArgumentError(absl::StrCat("counter name '", name, "' must end in _total"));
  }
  if (kind != Kind::kCounter && total) {
    return absl::InvalidArgumentError(absl::StrCat("only counter names end in _total: '", name, "'"));
  }
  if (kind == Kind::kHistogram &&
      (absl::EndsWith(name, "_bucket") || absl::EndsWith(name, "_sum") || absl::EndsWith(name, "_count"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("histogram name '", name, "' must not end in _bucket, _sum or _count"));
  }
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& l = label_names[i];
    if (!IsValidLabelName(l)) {
      return absl::InvalidArgumentError(absl::StrCat("metric ", name, ": invalid label name '", l,
                                                     "': want [a-zA-Z_][a-zA-Z0-9_]*, not starting with __"));
    }
    if (kind == Kind::kHistogram && l == "le") {
      return absl::InvalidArgumentError(absl::StrCat("histogram ", name, " must not have a label 'le'"));
    }
    if (std::find(label_names.begin(), label_names.begin() + i, l) != label_names.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat("metric ", name, ": duplicate label name '", l, "'"));
    }
  }
  std::vector<std::string> series = {std::string(name)};
  if (kind == Kind::kHistogram) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) series.push_back(absl::StrCat(name, suffix));
  }
  for (const std::string& s : series) {
    if (series_names_.count(s) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("metric ", name, ": series name ", s, " is already registered"));
    }
  }
  series_names_.insert(series.begin(), series.end());
  return absl::OkStatus();
}

absl::StatusOr<CounterFamily*> Registry::AddCounter(absl::string_view name, absl::string_view help,
                                                    std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Reserve(name, Kind::kCounter, label_names); !s.ok()) return s;
  const bool unlabeled = label_names.empty();
  auto family = std::unique_ptr<CounterFamily>(new CounterFamily(std::string(name), std::string(help),
                                                                 std::string(kTypeCounter), std::move(label_names),
                                                                 [] { return std::make_unique<Counter>(); }));
  CounterFamily* out = family.get();
  families_.emplace(std::string(name), std::move(family));
  if (unlabeled) out->Get();
  return out;
}

absl::StatusOr<GaugeFamily*> Registry::AddGauge(absl::string_view name, absl::string_view help,
                                                std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Reserve(name, Kind::kGauge, label_names); !s.ok()) return s;
  const bool unlabeled = label_names.empty();
  auto family =
      std::unique_ptr<GaugeFamily>(new GaugeFamily(std::string(name), std::string(help), std::string(kTypeGauge),
                                                   std::move(label_names), [] { return std::make_unique<Gauge>(); }));
  GaugeFamily* out = family.get();
  families_.emplace(std::string(name), std::move(family));
  if (unlabeled) out->Get();
  return out;
}

absl::StatusOr<HistogramFamily*> Registry::AddHistogram(absl::string_view name, absl::string_view help,
                                                        std::vector<std::string> label_names,
                                                        std::vector<double> bounds) {
  if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", name, ": bucket bound ", FormatValue(bounds[i]), " is not finite"));
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("histogram ", name, ": bucket bounds must strictly increase (",
                                                     FormatValue(bounds[i - 1]), " then ", FormatValue(bounds[i]),
                                                     ")"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Reserve(name, Kind::kHistogram, label_names); !s.ok()) return s;
  const bool unlabeled = label_names.empty();
  auto shared_bounds = std::make_shared<const std::vector<double>>(std::move(bounds));
  auto family = std::unique_ptr<HistogramFamily>(
      new HistogramFamily(std::string(name), std::string(help), std::string(kTypeHistogram), std::move(label_names),
                          [shared_bounds] { return std::make_unique<Histogram>(shared_bounds); }));
  HistogramFamily* out = family.get();
  families_.emplace(std::string(name), std::move(family));
  if (unlabeled) out->Get();
  return out;
}

absl::StatusOr<CallbackFamily*> Registry::AddCallbackFamily(absl::string_view name, absl::string_view help,
                                                            std::vector<std::string> label_names, Kind kind) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Reserve(name, kind, label_names); !s.ok()) return s;
  const absl::string_view type = kind == Kind::kCounter ? kTypeCounter : kTypeGauge;
  auto family = std::unique_ptr<CallbackFamily>(
      new CallbackFamily(std::string(name), std::string(help), std::string(type), std::move(label_names)));
  CallbackFamily* out = family.get();
  families_.emplace(std::string(name), std::move(family));
  return out;
}

absl::StatusOr<CallbackFamily*> Registry::AddCallbackGauge(absl::string_view name, absl::string_view help,
                                                           std::vector<std::string> label_names) {
  return AddCallbackFamily(name, help, std::move(label_names), Kind::kGauge);
}

absl::StatusOr<CallbackFamily*> Registry::AddCallbackCounter(absl::string_view name, absl::string_view help,
                                                             std::vector<std::string> label_names) {
  return AddCallbackFamily(name, help, std::move(label_names), Kind::kCounter);
}

std::string Registry::Collect() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) family->AppendTo(&out);
  return out;
}

}  // namespace clipserve::metrics
