// The gRPC `clipserve.v1.Clip` service: translates requests into ClipRuntime calls and results into responses.
// Owns no serving logic (DESIGN.md §3): validation of request shapes and limits, model lookup, composition of
// embeddings into classification, ranking and similarity.
//
// Uses gRPC's callback API: a handler validates, starts the runtime calls and returns; the call is finished
// on whichever thread completes the last runtime call. A client that goes away cancels its rows that have not
// started. Every call gets exactly one answer. Thread-safe.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "clipserve/v1/clipserve.grpc.pb.h"
#include "clipserve/v1/config.pb.h"
#include "server/runtime/clip_runtime.h"
#include "server/service/security.h"
#include "server/service/service_metrics.h"

namespace clipserve::service {

// The models the service answers for, set once they are loaded (calls before that get UNAVAILABLE).
struct ModelSet {
  std::map<std::string, runtime::ClipRuntime*> models;
  std::string default_model;
};

class ClipService final : public ::clipserve::v1::Clip::CallbackService {
 public:
  // `auth` (not owned, outlives the service; null: no token needed) checks every call's bearer token.
  ClipService(const ::clipserve::v1::config::Limits& limits, ServiceMetrics* metrics, const BearerAuth* auth);

  // Publishes the loaded models; from then on calls are served.
  void SetModels(ModelSet models);
  // Refuses new calls with UNAVAILABLE from now on; calls already admitted continue.
  void StopAdmitting();
  // Waits until no admitted call is in flight or `deadline`; returns whether all finished.
  bool WaitForInFlight(absl::Time deadline);
  int in_flight() const;

  grpc::ServerUnaryReactor* EmbedText(grpc::CallbackServerContext* context, const v1::EmbedTextRequest* request,
                                      v1::EmbedTextResponse* response) override;
  grpc::ServerUnaryReactor* EmbedImage(grpc::CallbackServerContext* context, const v1::EmbedImageRequest* request,
                                       v1::EmbedImageResponse* response) override;
  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context, const v1::ClassifyRequest* request,
                                     v1::ClassifyResponse* response) override;
  grpc::ServerUnaryReactor* Rank(grpc::CallbackServerContext* context, const v1::RankRequest* request,
                                 v1::RankResponse* response) override;
  grpc::ServerUnaryReactor* Similarity(grpc::CallbackServerContext* context, const v1::SimilarityRequest* request,
                                       v1::SimilarityResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context, const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context, const v1::GetModelRequest* request,
                                     v1::ModelInfo* response) override;

  class Call;

 private:
  // Admits a call: checks its token, the service state and resolves the model. On error the call is already
  // finished.
  Call* Admit(grpc::CallbackServerContext* context, const char* method, const std::string& model_name,
              runtime::ClipRuntime** model);
  void CallFinished();

  const ::clipserve::v1::config::Limits limits_;
  ServiceMetrics* const metrics_;
  const BearerAuth* const auth_;
  mutable absl::Mutex mu_;
  ModelSet models_ ABSL_GUARDED_BY(mu_);
  bool ready_ ABSL_GUARDED_BY(mu_) = false;
  bool admitting_ ABSL_GUARDED_BY(mu_) = true;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace clipserve::service
