// The gRPC `clipserve.v1.Generation` service: turns requests into generation::JobManager jobs and streams
// their events back (one ServerWriteReactor per stream, one write in flight at a time). Validation of request
// fields and decoding of init and prompt images happen here; the job logic lives in server/generation.
//
// A stream never blocks a worker: the manager pushes events into the stream's Subscription and wakes the
// reactor, which writes the newest event when the previous write has completed. A client that goes away closes
// its Subscription (which cancels the job unless it is detached). Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "clipserve/v1/clipserve.grpc.pb.h"
#include "clipserve/v1/config.pb.h"
#include "server/common/metrics.h"
#include "server/core/thread_pool.h"
#include "server/generation/job_manager.h"
#include "server/service/security.h"
#include "server/service/service_metrics.h"

namespace clipserve::service {

// Counts jobs, steps, passes and frames into the registry:
//   clipserve_generation_jobs{state="running"|"queued"}          jobs now
//   clipserve_generation_jobs_finished_total{state}              completed, cancelled, failed
//   clipserve_generation_steps_total                              job-steps done
//   clipserve_generation_pass_seconds                             time of one batched pass (all its jobs)
//   clipserve_generation_frames_total{result="sent"|"dropped"}    frames written / replaced before a slow
//                                                                 reader took them
// The step lane's batch sizes and queue times are the usual clipserve_batch_size{model="generation",lane="step"}.
absl::StatusOr<std::shared_ptr<generation::GenerationObserver>> MakeGenerationMetrics(metrics::Registry* registry);

class GenerationService final : public ::clipserve::v1::Generation::CallbackService {
 public:
  struct Settings {
    int default_side = 64;
    int max_text_bytes = 16384;
    int64_t max_image_bytes = 16 << 20;
    int64_t max_image_pixels = 40'000'000;
    // What a request leaves unset (steps, learning rate, cutn, cut_pow) and what it cannot set (the cutouts'
    // augmentations, the smoothness weight): JobDefaultsFromConfig. A request's prompts, size and seed always
    // replace these defaults' own.
    generation::JobOptions job_defaults;
  };
  // `cpu_pool` (not owned, must outlive the service) runs request preparation (image decoding, job creation).
  // `auth` (not owned, outlives the service; null: no token needed) checks every call's bearer token.
  GenerationService(ThreadPool* cpu_pool, ServiceMetrics* metrics, const BearerAuth* auth);

  // Serves from now on (calls before get FAILED_PRECONDITION when generation is not configured at all, which
  // is also the state until this is called). `manager` must outlive every call.
  void SetManager(generation::JobManager* manager, const Settings& settings);
  // New Generate calls get UNAVAILABLE from now on.
  void StopAdmitting();

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                            const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* WatchGeneration(grpc::CallbackServerContext* context,
                                                                   const v1::WatchGenerationRequest* request) override;
  grpc::ServerUnaryReactor* CancelGeneration(grpc::CallbackServerContext* context,
                                             const v1::CancelGenerationRequest* request,
                                             v1::GenerationInfo* response) override;
  grpc::ServerUnaryReactor* ListGenerations(grpc::CallbackServerContext* context,
                                            const v1::ListGenerationsRequest* request,
                                            v1::ListGenerationsResponse* response) override;

  class Stream;

 private:
  // The manager, or the status to answer with.
  absl::StatusOr<generation::JobManager*> Manager(bool admitting_new) const;
  // OK, or UNAUTHENTICATED when auth is on and the call carries no valid token.
  absl::Status Authenticate(const grpc::CallbackServerContext& context, const char* method) const;

  ThreadPool* const cpu_pool_;
  ServiceMetrics* const metrics_;
  const BearerAuth* const auth_;
  mutable absl::Mutex mu_;
  generation::JobManager* manager_ ABSL_GUARDED_BY(mu_) = nullptr;
  Settings settings_ ABSL_GUARDED_BY(mu_);
  bool admitting_ ABSL_GUARDED_BY(mu_) = true;
};

// A GenerateRequest as a generation request (prompts parsed, images decoded, defaults applied);
// INVALID_ARGUMENT naming the field. Exposed for tests.
absl::StatusOr<generation::GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                                  const GenerationService::Settings& settings);

}  // namespace clipserve::service
