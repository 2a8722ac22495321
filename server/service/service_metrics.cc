#include "server/service/service_metrics.h"

#include <cmath>

#include "server/common/process_metrics.h"
#include "server/common/status_macros.h"

namespace clipserve::service {
namespace {

std::vector<double> BatchSizeBuckets(int max_batch_size) {
  std::vector<double> b;
  for (int s = 1; s < max_batch_size; s *= 2) b.push_back(s);
  b.push_back(max_batch_size);
  return b;
}

}  // namespace

const char* StatusCodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return "OK";
    case absl::StatusCode::kCancelled: return "CANCELLED";
    case absl::StatusCode::kUnknown: return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound: return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted: return "ABORTED";
    case absl::StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal: return "INTERNAL";
    case absl::StatusCode::kUnavailable: return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss: return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

// Feeds one lane's events into the families; children are looked up once here.
class MetricsLaneObserver : public LaneObserver {
 public:
  MetricsLaneObserver(ServiceMetrics* m, std::string model, std::string lane)
      : m_(m), model_(std::move(model)), lane_(std::move(lane)),
        items_(m->items_->Labels({model_, lane_})),
        queue_time_(m->queue_time_->Labels({model_, lane_})),
        compute_time_(m->compute_time_->Labels({model_, lane_})),
        batch_size_(m->batch_size_->Labels({model_, lane_})) {}

  void OnEnqueue(int rows, int /*queue_depth*/) override { items_.Increment(rows); }
  void OnDrop(absl::StatusCode code) override { m_->dropped_->Labels({model_, lane_, StatusCodeName(code)}).Increment(); }
  void OnBatchStart(int batch_size, absl::Span<const absl::Duration> queue_times) override {
    batch_size_.Observe(batch_size);
    for (absl::Duration d : queue_times) queue_time_.Observe(absl::ToDoubleSeconds(d));
  }
  void OnBatchEnd(int /*batch_size*/, absl::Duration compute_time, const absl::Status& status) override {
    compute_time_.Observe(absl::ToDoubleSeconds(compute_time));
    if (!status.ok()) m_->batch_failures_->Labels({model_, lane_, StatusCodeName(status.code())}).Increment();
  }

 private:
  ServiceMetrics* const m_;
  const std::string model_;
  const std::string lane_;
  metrics::Counter& items_;
  metrics::Histogram& queue_time_;
  metrics::Histogram& compute_time_;
  metrics::Histogram& batch_size_;
};

absl::StatusOr<std::unique_ptr<ServiceMetrics>> ServiceMetrics::Create(metrics::Registry* registry) {
  std::unique_ptr<ServiceMetrics> m(new ServiceMetrics());
  m->registry_ = registry;
  const std::vector<double> latency = metrics::ExponentialBuckets(0.0005, 2, 18);  // 0.5 ms .. 65 s
  CLIPSERVE_ASSIGN_OR_RETURN(m->requests_, registry->AddCounter("clipserve_requests_total",
                                                                "Calls answered, by method and status code.",
                                                                {"model", "method", "code"}));
  CLIPSERVE_ASSIGN_OR_RETURN(m->request_duration_,
                             registry->AddHistogram("clipserve_request_duration_seconds",
                                                    "End-to-end time of calls answered OK.", {"model", "method"}, latency));
  CLIPSERVE_ASSIGN_OR_RETURN(m->items_, registry->AddCounter("clipserve_items_total", "Rows accepted into a lane.",
                                                             {"model", "lane"}));
  CLIPSERVE_ASSIGN_OR_RETURN(m->dropped_, registry->AddCounter("clipserve_dropped_total",
                                                               "Accepted rows answered without running (deadline, "
                                                               "cancellation, shutdown).",
                                                               {"model", "lane", "code"}));
  CLIPSERVE_ASSIGN_OR_RETURN(m->queue_time_, registry->AddHistogram("clipserve_queue_time_seconds",
                                                                    "Time a row waited in its lane for a batch.",
                                                                    {"model", "lane"}, latency));
  CLIPSERVE_ASSIGN_OR_RETURN(m->compute_time_, registry->AddHistogram("clipserve_compute_time_seconds",
                                                                      "Time a batch ran on the model.",
                                                                      {"model", "lane"}, latency));
  CLIPSERVE_ASSIGN_OR_RETURN(m->batch_size_, registry->AddHistogram("clipserve_batch_size", "Rows per batch.",
                                                                    {"model", "lane"}, BatchSizeBuckets(4096)));
  CLIPSERVE_ASSIGN_OR_RETURN(m->batch_failures_,
                             registry->AddCounter("clipserve_batch_failures_total", "Batches whose run failed.",
                                                  {"model", "lane", "code"}));
  CLIPSERVE_ASSIGN_OR_RETURN(m->queue_depth_, registry->AddCallbackGauge("clipserve_queue_depth",
                                                                         "Rows queued in a lane, not yet running.",
                                                                         {"model", "lane"}));
  CLIPSERVE_ASSIGN_OR_RETURN(m->cache_hits_, registry->AddCallbackCounter("clipserve_text_cache_hits_total",
                                                                          "Text embeddings served from the cache.",
                                                                          {"model"}));
  CLIPSERVE_ASSIGN_OR_RETURN(m->cache_misses_, registry->AddCallbackCounter("clipserve_text_cache_misses_total",
                                                                            "Text embeddings computed by the model.",
                                                                            {"model"}));
  CLIPSERVE_ASSIGN_OR_RETURN(m->model_info_, registry->AddGauge("clipserve_model_info", "1 for each loaded model.",
                                                                {"model", "kind", "device", "dtype"}));
  CLIPSERVE_RETURN_IF_ERROR(metrics::AddProcessMetrics(registry));
  return m;
}

std::shared_ptr<LaneObserver> ServiceMetrics::LaneObserverFor(const std::string& model, const std::string& lane) {
  return std::make_shared<MetricsLaneObserver>(this, model, lane);
}

void ServiceMetrics::RecordCall(const std::string& model, const char* method, absl::StatusCode code,
                                absl::Duration elapsed) {
  requests_->Labels({model, method, StatusCodeName(code)}).Increment();
  if (code == absl::StatusCode::kOk) {
    request_duration_->Labels({model, method}).Observe(absl::ToDoubleSeconds(elapsed));
  }
}

}  // namespace clipserve::service
