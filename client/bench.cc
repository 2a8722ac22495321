#include "client/bench.h"

#include <grpcpp/client_context.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/clip_client.h"
#include "server/common/status_macros.h"

namespace clipserve::client {
namespace {

constexpr char kBatchSizeFamily[] = "clipserve_batch_size";

// Starts one call of the benchmarked kind; type-erases the request and response types.
class CallKind {
 public:
  virtual ~CallKind() = default;
  virtual std::unique_ptr<google::protobuf::Message> NewResponse() const = 0;
  // Starts the call on `stub`; `done` runs on a gRPC thread when it ends. `context` and `response` must live
  // until then.
  virtual void Start(v1::Clip::Stub* stub, grpc::ClientContext* context, google::protobuf::Message* response,
                     std::function<void(grpc::Status)> done) const = 0;
  virtual std::string ModelOf(const google::protobuf::Message& response) const = 0;
};

template <typename Request, typename Response>
class TypedCall final : public CallKind {
 public:
  using Method = void (v1::Clip::Stub::async::*)(grpc::ClientContext*, const Request*, Response*,
                                                 std::function<void(grpc::Status)>);
  TypedCall(Request request, Method method) : request_(std::move(request)), method_(method) {}

  std::unique_ptr<google::protobuf::Message> NewResponse() const override { return std::make_unique<Response>(); }
  void Start(v1::Clip::Stub* stub, grpc::ClientContext* context, google::protobuf::Message* response,
             std::function<void(grpc::Status)> done) const override {
    (stub->async()->*method_)(context, &request_, static_cast<Response*>(response), std::move(done));
  }
  std::string ModelOf(const google::protobuf::Message& response) const override {
    return static_cast<const Response&>(response).model();
  }

 private:
  const Request request_;  // shared, read-only, by every call in flight
  const Method method_;
};

absl::StatusOr<std::unique_ptr<CallKind>> MakeCallKind(const BenchOptions& o) {
  switch (o.call) {
    case BenchCall::kEmbedText: {
      if (o.texts.empty()) return absl::InvalidArgumentError("embed_text needs at least one --text");
      v1::EmbedTextRequest r;
      r.set_model(o.model);
      for (const auto& t : o.texts) r.add_texts(t);
      return std::unique_ptr<CallKind>(
          new TypedCall<v1::EmbedTextRequest, v1::EmbedTextResponse>(std::move(r), &v1::Clip::Stub::async::EmbedText));
    }
    case BenchCall::kEmbedImage: {
      if (o.images.empty()) return absl::InvalidArgumentError("embed_image needs at least one --image");
      v1::EmbedImageRequest r;
      r.set_model(o.model);
      for (const auto& i : o.images) *r.add_images() = i;
      return std::unique_ptr<CallKind>(new TypedCall<v1::EmbedImageRequest, v1::EmbedImageResponse>(
          std::move(r), &v1::Clip::Stub::async::EmbedImage));
    }
    case BenchCall::kClassify: {
      if (o.images.empty() || o.labels.size() < 2) {
        return absl::InvalidArgumentError("classify needs at least one --image and two --labels");
      }
      v1::ClassifyRequest r;
      r.set_model(o.model);
      for (const auto& i : o.images) *r.add_images() = i;
      for (const auto& l : o.labels) r.add_labels(l);
      r.set_template_(o.label_template);
      return std::unique_ptr<CallKind>(
          new TypedCall<v1::ClassifyRequest, v1::ClassifyResponse>(std::move(r), &v1::Clip::Stub::async::Classify));
    }
  }
  return absl::InvalidArgumentError("unknown call");
}

// Tallies answered calls. Thread-safe; gRPC's callback threads call Record concurrently.
class Recorder {
 public:
  Recorder(absl::Time window_start, absl::Time window_end) : start_(window_start), end_(window_end) {}

  bool InWindow(absl::Time sent) const { return sent >= start_ && sent < end_; }

  // A call sent (or scheduled) at `sent` ended at `done` with `status`; `model` is the answering model (OK only).
  void Record(absl::Time sent, absl::Time done, const grpc::Status& status, const CallKind& kind,
              const google::protobuf::Message& response) {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (status.ok() && model_.empty()) model_ = kind.ModelOf(response);
    if (!InWindow(sent)) return;
    ++calls_;
    if (status.ok()) {
      latencies_ms_.push_back(absl::ToDoubleMilliseconds(done - sent));
    } else {
      ++errors_[absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()))];
    }
  }

  // Open loop: admits a call unless `limit` are in flight.
  bool TryAdmit(int64_t limit, absl::Time scheduled) {
    absl::MutexLock lock(&mu_);
    if (in_flight_ >= limit) {
      if (InWindow(scheduled)) ++not_sent_;
      return false;
    }
    ++in_flight_;
    return true;
  }
  void Admit(int64_t n) {
    absl::MutexLock lock(&mu_);
    in_flight_ += n;
  }
  void WaitUntilIdle() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int64_t* in_flight) { return *in_flight == 0; }, &in_flight_));
  }

  void Fill(BenchResult* r) {
    absl::MutexLock lock(&mu_);
    r->model = model_;
    r->calls = calls_;
    r->ok = static_cast<int64_t>(latencies_ms_.size());
    r->not_sent = not_sent_;
    r->errors = errors_;
    r->latency_ms = SummarizeLatencies(std::move(latencies_ms_));
  }

 private:
  const absl::Time start_, end_;
  absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t not_sent_ ABSL_GUARDED_BY(mu_) = 0;
  std::string model_ ABSL_GUARDED_BY(mu_);
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> errors_ ABSL_GUARDED_BY(mu_);
};

// One closed-loop caller: sends its next call from the completion of the previous one until `end`.
class Caller {
 public:
  Caller(v1::Clip::Stub* stub, const CallKind& kind, Recorder& recorder, absl::Time end, absl::Duration timeout)
      : stub_(stub), kind_(kind), recorder_(recorder), end_(end), timeout_(timeout), response_(kind.NewResponse()) {}

  void Start() {
    // The previous call's context (if any) is done: gRPC holds its own reference to the finished call.
    context_.emplace();
    sent_ = absl::Now();
    context_->set_deadline(absl::ToChronoTime(sent_ + timeout_));
    kind_.Start(stub_, &*context_, response_.get(), [this](grpc::Status status) { OnDone(status); });
  }

 private:
  void OnDone(const grpc::Status& status) {
    const absl::Time now = absl::Now();
    const bool again = now < end_;
    if (again) recorder_.Admit(1);  // before Record, so that the in-flight count never touches zero early
    recorder_.Record(sent_, now, status, kind_, *response_);
    if (again) Start();
  }

  v1::Clip::Stub* const stub_;
  const CallKind& kind_;
  Recorder& recorder_;
  const absl::Time end_;
  const absl::Duration timeout_;
  std::optional<grpc::ClientContext> context_;
  std::unique_ptr<google::protobuf::Message> response_;
  absl::Time sent_;
};

// One open-loop call: owns its context and response, deletes itself when answered.
struct OpenCall {
  grpc::ClientContext context;
  std::unique_ptr<google::protobuf::Message> response;
  absl::Time scheduled;
};

struct Scrape {
  std::vector<Histogram> histograms;
  absl::Status status;
};

Scrape ScrapeBatchSizes(const std::string& url) {
  Scrape out;
  absl::StatusOr<std::string> body = HttpGet(url, absl::Seconds(5));
  if (!body.ok()) {
    out.status = body.status();
    return out;
  }
  absl::StatusOr<std::vector<PrometheusSample>> samples = ParsePrometheusText(*body);
  if (!samples.ok()) {
    out.status = samples.status();
    return out;
  }
  out.histograms = ExtractHistograms(*samples, kBatchSizeFamily);
  return out;
}

// The batch-size series of this run: of the answering model (when known), grown during the window.
std::vector<Histogram> SelectBatchSizes(const std::vector<Histogram>& all, const std::string& model) {
  std::vector<Histogram> out;
  for (const Histogram& h : all) {
    if (h.count <= 0) continue;
    if (!model.empty() && h.labels.count("model") && h.label("model") != model) continue;
    out.push_back(h);
  }
  return out;
}

bool IsPermanentFailure(const absl::Status& s) {
  if (!IsServerStatus(s)) return true;  // cannot reach the server
  switch (s.code()) {
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return false;
    default:
      return true;
  }
}

std::string FormatLe(double bound) { return std::isinf(bound) ? "+Inf" : absl::StrCat(bound); }

std::string LaneKey(const Histogram& h, const std::vector<Histogram>& all) {
  const std::string lane = h.labels.count("lane") ? h.label("lane") : "";
  int same = 0;
  for (const Histogram& o : all) same += o.label("lane") == lane;
  if (same <= 1 && !lane.empty()) return lane;
  std::string key;
  for (const auto& [k, v] : h.labels) absl::StrAppend(&key, key.empty() ? "" : ",", k, "=", v);
  return key.empty() ? "all" : key;
}

}  // namespace

absl::StatusOr<BenchCall> ParseBenchCall(const std::string& name) {
  if (name == "embed_text") return BenchCall::kEmbedText;
  if (name == "embed_image") return BenchCall::kEmbedImage;
  if (name == "classify") return BenchCall::kClassify;
  return absl::InvalidArgumentError(
      absl::StrCat("--call must be embed_text, embed_image or classify, not '", name, "'"));
}

std::string BenchCallName(BenchCall call) {
  switch (call) {
    case BenchCall::kEmbedText:
      return "embed_text";
    case BenchCall::kEmbedImage:
      return "embed_image";
    case BenchCall::kClassify:
      return "classify";
  }
  return "?";
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double n = static_cast<double>(sorted.size());
  int64_t rank = static_cast<int64_t>(std::ceil(p / 100.0 * n));
  rank = std::clamp<int64_t>(rank, 1, static_cast<int64_t>(sorted.size()));
  return sorted[static_cast<size_t>(rank - 1)];
}

LatencySummary SummarizeLatencies(std::vector<double> values) {
  LatencySummary s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.p50 = Percentile(values, 50);
  s.p90 = Percentile(values, 90);
  s.p99 = Percentile(values, 99);
  s.max = values.back();
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(values.size());
  return s;
}

absl::StatusOr<BenchResult> RunBench(const BenchOptions& options) {
  if (options.rate <= 0 && options.concurrency < 1) return absl::InvalidArgumentError("--concurrency must be >= 1");
  if (options.channels < 1) return absl::InvalidArgumentError("--channels must be >= 1");
  if (options.duration <= absl::ZeroDuration()) return absl::InvalidArgumentError("--duration must be positive");
  CLIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<CallKind> kind, MakeCallKind(options));

  std::vector<std::unique_ptr<ClipClient>> clients;
  for (int i = 0; i < options.channels; ++i) {
    ClientOptions co;
    co.target = options.target;
    co.timeout = options.timeout;
    co.connection_index = i;
    co.security = options.security;
    CLIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<ClipClient> c, ClipClient::Create(co));
    clients.push_back(std::move(c));
  }

  // One call first, synchronously: a server that cannot be reached or a request it rejects ends the bench here.
  for (const auto& c : clients) {
    grpc::ClientContext context;
    c->PrepareContext(CallOptions(), &context);
    std::unique_ptr<google::protobuf::Message> response = kind->NewResponse();
    absl::Mutex mu;
    bool done = false;
    grpc::Status status;
    kind->Start(c->stub(), &context, response.get(), [&](grpc::Status s) {
      absl::MutexLock lock(&mu);
      status = std::move(s);
      done = true;
    });
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(&done));
    }
    const absl::Status converted = c->ConvertStatus(status);
    if (!converted.ok() && IsPermanentFailure(converted)) return converted;
  }

  const absl::Time start = absl::Now();
  const absl::Time window_start = start + options.warmup;
  const absl::Time window_end = window_start + options.duration;
  Recorder recorder(window_start, window_end);

  Scrape before;
  std::thread scraper;
  if (!options.metrics_url.empty()) {
    scraper = std::thread([&] {
      absl::SleepFor(window_start - absl::Now());
      before = ScrapeBatchSizes(options.metrics_url);
    });
  }

  std::vector<std::unique_ptr<Caller>> callers;
  if (options.rate <= 0) {
    for (int i = 0; i < options.concurrency; ++i) {
      callers.push_back(
          std::make_unique<Caller>(clients[i % clients.size()]->stub(), *kind, recorder, window_end, options.timeout));
    }
    recorder.Admit(options.concurrency);
    for (auto& c : callers) c->Start();
  } else {
    std::mt19937_64 rng(options.seed);
    std::exponential_distribution<double> gap(options.rate);
    absl::Time next = start;
    for (int64_t k = 0; next < window_end; ++k) {
      const absl::Time now = absl::Now();
      if (next > now) absl::SleepFor(next - now);
      if (recorder.TryAdmit(options.max_in_flight, next)) {
        auto* call = new OpenCall;
        call->response = kind->NewResponse();
        call->scheduled = next;
        call->context.set_deadline(absl::ToChronoTime(next + options.timeout));
        const CallKind& k_ref = *kind;
        kind->Start(clients[k % clients.size()]->stub(), &call->context, call->response.get(),
                    [call, &recorder, &k_ref](grpc::Status status) {
                      recorder.Record(call->scheduled, absl::Now(), status, k_ref, *call->response);
                      delete call;
                    });
      }
      next += options.arrival == Arrival::kPoisson ? absl::Seconds(gap(rng)) : absl::Seconds(1.0 / options.rate);
    }
  }
  recorder.WaitUntilIdle();
  if (scraper.joinable()) scraper.join();

  BenchResult result;
  result.options = options;
  result.options.images.clear();
  result.options.security.token.clear();  // results are printed and saved; the token stays out of them
  result.measured_s = absl::ToDoubleSeconds(options.duration);
  recorder.Fill(&result);
  result.throughput_per_s = static_cast<double>(result.ok) / result.measured_s;

  if (options.metrics_url.empty()) {
    result.metrics_note = "not scraped (no metrics URL)";
  } else {
    const Scrape after = ScrapeBatchSizes(options.metrics_url);
    if (!after.status.ok()) {
      result.metrics_note = absl::StrCat("could not scrape ", options.metrics_url, ": ", after.status.message());
    } else if (!before.status.ok()) {
      result.batch_sizes = SelectBatchSizes(after.histograms, result.model);
      result.metrics_note = absl::StrCat("the scrape at the start failed (", before.status.message(),
                                         "): batch sizes since the server started");
    } else {
      result.batch_sizes = SelectBatchSizes(SubtractHistograms(after.histograms, before.histograms), result.model);
      if (result.batch_sizes.empty()) {
        result.metrics_note =
            absl::StrCat(options.metrics_url, " shows no ", kBatchSizeFamily, " batches for this run");
      }
    }
  }
  return result;
}

std::string FormatBenchTable(const BenchResult& r) {
  const BenchOptions& o = r.options;
  std::string out = absl::StrCat("clipctl bench: ", BenchCallName(o.call), " against ", o.target,
                                 r.model.empty() ? "" : absl::StrCat(" (model ", r.model, ")"), "\n");
  if (o.rate > 0) {
    absl::StrAppend(&out, absl::StrFormat("  open loop at %.1f calls/s (%s arrivals), %d connections", o.rate,
                                          o.arrival == Arrival::kPoisson ? "Poisson" : "fixed-interval", o.channels));
  } else {
    absl::StrAppend(&out, absl::StrFormat("  closed loop, %d callers over %d connections", o.concurrency, o.channels));
  }
  absl::StrAppend(&out, absl::StrFormat("; %.1f s measured after %.1f s of warm-up\n", r.measured_s,
                                        absl::ToDoubleSeconds(o.warmup)));
  absl::StrAppend(&out, absl::StrFormat("calls       %d answered: %d OK, %d failed", r.calls, r.ok, r.calls - r.ok));
  if (r.not_sent > 0) absl::StrAppend(&out, absl::StrFormat(", %d not sent (too many in flight)", r.not_sent));
  absl::StrAppend(&out, absl::StrFormat("\nthroughput  %.1f OK calls/s\n", r.throughput_per_s));
  const LatencySummary& l = r.latency_ms;
  absl::StrAppend(&out, absl::StrFormat("latency ms  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  mean %.2f  (OK calls)\n",
                                        l.p50, l.p90, l.p99, l.max, l.mean));
  if (r.errors.empty()) {
    absl::StrAppend(&out, "errors      none\n");
  } else {
    absl::StrAppend(&out, "errors     ");
    for (const auto& [code, n] : r.errors) absl::StrAppend(&out, " ", code, " ", n);
    absl::StrAppend(&out, "\n");
  }
  if (r.batch_sizes.empty()) {
    absl::StrAppend(&out, "batch size  ", r.metrics_note.empty() ? "no batches recorded" : r.metrics_note, "\n");
  } else {
    absl::StrAppend(&out, "batch size  from ", o.metrics_url, "\n");
    if (!r.metrics_note.empty()) absl::StrAppend(&out, "  (", r.metrics_note, ")\n");
  }
  for (const Histogram& h : r.batch_sizes) {
    absl::StrAppend(
        &out, absl::StrFormat("  lane %s: %.0f batches, mean %.2f\n", LaneKey(h, r.batch_sizes), h.count, h.mean()));
    double prev = 0;
    size_t last = 0;
    for (size_t i = 0; i < h.buckets.size(); ++i) {
      if (h.buckets[i].second - (i ? h.buckets[i - 1].second : 0) > 0) last = i;
    }
    for (size_t i = 0; i <= last && i < h.buckets.size(); ++i) {
      const double n = h.buckets[i].second - prev;
      prev = h.buckets[i].second;
      absl::StrAppend(&out, absl::StrFormat("    <= %-6s %10.0f\n", FormatLe(h.buckets[i].first), n));
    }
  }
  return out;
}

nlohmann::json BenchResultToJson(const BenchResult& r) {
  const BenchOptions& o = r.options;
  nlohmann::json j;
  j["call"] = BenchCallName(o.call);
  j["target"] = o.target;
  j["model"] = r.model;
  if (o.rate > 0) {
    j["mode"] = "open";
    j["rate_per_s"] = o.rate;
    j["arrival"] = o.arrival == Arrival::kPoisson ? "poisson" : "uniform";
  } else {
    j["mode"] = "closed";
    j["concurrency"] = o.concurrency;
  }
  j["channels"] = o.channels;
  j["duration_s"] = r.measured_s;
  j["warmup_s"] = absl::ToDoubleSeconds(o.warmup);
  j["calls"] = r.calls;
  j["ok"] = r.ok;
  j["not_sent"] = r.not_sent;
  j["throughput_per_s"] = r.throughput_per_s;
  j["latency_ms"] = {{"p50", r.latency_ms.p50},
                     {"p90", r.latency_ms.p90},
                     {"p99", r.latency_ms.p99},
                     {"max", r.latency_ms.max},
                     {"mean", r.latency_ms.mean}};
  j["errors"] = nlohmann::json::object();
  for (const auto& [code, n] : r.errors) j["errors"][code] = n;
  j["batch_size"] = nlohmann::json::object();
  for (const Histogram& h : r.batch_sizes) {
    nlohmann::json lane;
    lane["model"] = h.label("model");
    lane["batches"] = h.count;
    lane["mean"] = h.mean();
    lane["histogram"] = nlohmann::json::array();
    double prev = 0;
    for (const auto& [bound, cumulative] : h.buckets) {
      lane["histogram"].push_back({{"le", FormatLe(bound)}, {"count", cumulative - prev}});
      prev = cumulative;
    }
    j["batch_size"][LaneKey(h, r.batch_sizes)] = std::move(lane);
  }
  j["metrics_url"] = o.metrics_url;
  if (!r.metrics_note.empty()) j["metrics_note"] = r.metrics_note;
  return j;
}

}  // namespace clipserve::client
