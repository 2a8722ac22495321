// clipserve's metrics (DESIGN.md §6): the families, and the lane observer that feeds them from the serving core.
//
//   clipserve_requests_total{model,method,code}            calls answered, by gRPC status code name
//   clipserve_request_duration_seconds{model,method}       end-to-end time of calls answered OK
//   clipserve_items_total{model,lane}                      rows accepted into a lane
//   clipserve_dropped_total{model,lane,code}               accepted rows answered without running
//   clipserve_queue_depth{model,lane}                      rows queued now (scrape time)
//   clipserve_queue_time_seconds{model,lane}               time a row waited for its batch
//   clipserve_compute_time_seconds{model,lane}             time a batch ran on the model
//   clipserve_batch_size{model,lane}                       rows per batch
//   clipserve_batch_failures_total{model,lane,code}        batches whose runner failed
//   clipserve_text_cache_hits_total / _misses_total{model} text-embedding cache
//   clipserve_model_info{model,kind,device,dtype}          1 per loaded model
//   process_*                                              standard process metrics
// Everything is thread-safe; observers are called from core threads without locks held.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/common/metrics.h"
#include "server/core/lane_observer.h"

namespace clipserve::service {

class ServiceMetrics {
 public:
  static absl::StatusOr<std::unique_ptr<ServiceMetrics>> Create(metrics::Registry* registry);

  // An observer for lane `lane` ("text", "image") of `model`.
  std::shared_ptr<LaneObserver> LaneObserverFor(const std::string& model, const std::string& lane);
  void RecordCall(const std::string& model, const char* method, absl::StatusCode code, absl::Duration elapsed);

  metrics::Registry* registry() const { return registry_; }
  metrics::CallbackFamily* queue_depth() const { return queue_depth_; }
  metrics::CallbackFamily* cache_hits() const { return cache_hits_; }
  metrics::CallbackFamily* cache_misses() const { return cache_misses_; }
  metrics::GaugeFamily* model_info() const { return model_info_; }

 private:
  ServiceMetrics() = default;

  metrics::Registry* registry_ = nullptr;
  metrics::CounterFamily* requests_ = nullptr;
  metrics::HistogramFamily* request_duration_ = nullptr;
  metrics::CounterFamily* items_ = nullptr;
  metrics::CounterFamily* dropped_ = nullptr;
  metrics::HistogramFamily* queue_time_ = nullptr;
  metrics::HistogramFamily* compute_time_ = nullptr;
  metrics::HistogramFamily* batch_size_ = nullptr;
  metrics::CounterFamily* batch_failures_ = nullptr;
  metrics::CallbackFamily* queue_depth_ = nullptr;
  metrics::CallbackFamily* cache_hits_ = nullptr;
  metrics::CallbackFamily* cache_misses_ = nullptr;
  metrics::GaugeFamily* model_info_ = nullptr;

  friend class MetricsLaneObserver;
};

// "OK", "INVALID_ARGUMENT", ... (gRPC's names).
const char* StatusCodeName(absl::StatusCode code);

}  // namespace clipserve::service
