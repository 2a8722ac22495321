#include "server/service/server.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/common/metrics.h"
#include "server/common/status_macros.h"
#include "server/core/scheduler.h"
#include "server/core/thread_pool.h"
#include "server/core/worker_pool.h"
#include "server/http/http_server.h"
#include "server/http/observability.h"
#include "server/runtime/clip_runtime.h"
#include "server/generation/job_manager.h"
#include "server/models/vqgan/vqgan.h"
#include "server/service/clip_service.h"
#include "server/service/gateway.h"
#include "server/service/generation_defaults.h"
#include "server/service/generation_service.h"
#include "server/service/security.h"
#include "server/service/service_metrics.h"

namespace clipserve::service {
namespace {

constexpr char kServiceName[] = "clipserve.v1.Clip";
constexpr char kGenerationServiceName[] = "clipserve.v1.Generation";

runtime::LaneSettings LaneFromConfig(const LaneConfig& c) {
  runtime::LaneSettings s;
  s.batching.max_batch_size = static_cast<int>(c.max_batch_size());
  s.batching.max_queue_delay = absl::Microseconds(c.max_queue_delay_us());
  s.batching.preferred_batch_sizes.assign(c.preferred_batch_sizes().begin(), c.preferred_batch_sizes().end());
  s.batching.max_queue_size = static_cast<int>(c.max_queue_size());
  s.batching.priority_levels = static_cast<int>(c.priority_levels());
  s.default_priority = static_cast<int>(c.default_priority());
  return s;
}

absl::StatusOr<Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return Device{};
  Device d;
  d.kind = Device::Kind::kCuda;
  d.index = std::stoi(name.substr(5));  // validated by the config: "cuda:N"
  return d;
}

}  // namespace

class Server::Impl {
 public:
  explicit Impl(const ServerConfig& config) : config_(config) {}

  absl::Status Init() {
    CLIPSERVE_ASSIGN_OR_RETURN(metrics_, ServiceMetrics::Create(&registry_));
    const auto& t = config_.threads();
    // Image decoding: at most a few seconds of work queued per thread before callers are refused.
    CLIPSERVE_ASSIGN_OR_RETURN(cpu_pool_, ThreadPool::Create({.num_threads = static_cast<int>(t.cpu_pool_threads()),
                                                              .max_queue_size = 4096,
                                                              .name = "cpu pool"}));
    // Certificates, key and tokens: read again here (the config's validation read them to report a bad file
    // early); what this reads is what the port listens with.
    CLIPSERVE_ASSIGN_OR_RETURN(security_, LoadServerSecurity(config_.security()));
    service_ = std::make_unique<ClipService>(config_.limits(), metrics_.get(), security_.auth.get());
    generation_service_ = std::make_unique<GenerationService>(cpu_pool_.get(), metrics_.get(), security_.auth.get());
    http::HttpServer::Options http;
    http.listen_address = config_.listen_address();
    http.port = static_cast<int>(config_.http_port());
    http.drain_timeout = absl::Seconds(2);
    if (config_.security().http_tls()) {
      http.tls_cert_file = config_.security().tls_cert_file();
      http.tls_key_file = config_.security().tls_key_file();
      http.tls_client_ca_file = config_.security().tls_client_ca_file();
    }
    const GatewayConfig& g = config_.gateway();
    if (g.enabled()) {
      http.max_streams = static_cast<int>(g.max_streams());
      http.num_threads = http.max_streams + 8;
      http.max_request_body_bytes = g.max_request_bytes();
    }
    CLIPSERVE_ASSIGN_OR_RETURN(http_, http::HttpServer::Create(http));
    if (g.enabled()) {
      gateway_ = std::make_unique<Gateway>(Gateway::Options{
          .cors_allowed_origins = {g.cors_allowed_origins().begin(), g.cors_allowed_origins().end()},
          .default_timeout = absl::Milliseconds(g.default_timeout_ms()),
          .web_demo = g.web_demo()});
      CLIPSERVE_RETURN_IF_ERROR(gateway_->Register(http_.get()));
    }
    return http::AddObservabilityHandlers(http_.get(), &registry_, [this]() -> absl::Status {
      absl::MutexLock lock(&mu_);
      if (draining_) return absl::UnavailableError("draining");
      if (!serving_) return absl::UnavailableError("models loading");
      return absl::OkStatus();
    });
  }

  absl::Status Start() {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    const std::string address = absl::StrCat(config_.listen_address(), ":", config_.grpc_port());
    builder.AddListeningPort(address, security_.credentials, &grpc_port_);
    builder.SetMaxReceiveMessageSize(static_cast<int>(config_.limits().max_message_bytes()));
    builder.SetMaxSendMessageSize(static_cast<int>(config_.limits().max_message_bytes()));
    builder.RegisterService(service_.get());
    builder.RegisterService(generation_service_.get());
    grpc_server_ = builder.BuildAndStart();
    if (grpc_server_ == nullptr || grpc_port_ == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ", address));
    }
    SetHealth(false);
    if (gateway_ != nullptr) {
      // The gateway's calls enter the gRPC server in-process: no socket, no TLS, same services and limits.
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(static_cast<int>(config_.limits().max_message_bytes()));
      args.SetMaxSendMessageSize(static_cast<int>(config_.limits().max_message_bytes()));
      gateway_->SetChannel(grpc_server_->InProcessChannel(args));
    }
    CLIPSERVE_RETURN_IF_ERROR(http_->Start());
    spdlog::info("listening: gRPC on {}:{}, HTTP on {}:{} (/metrics, /healthz, /readyz{})", config_.listen_address(),
                 grpc_port_, config_.listen_address(), http_->port(),
                 gateway_ == nullptr                 ? ""
                 : config_.gateway().web_demo() ? ", JSON gateway /v1/, web demo /"
                                                     : ", JSON gateway /v1/");
    spdlog::info("gRPC security: {}; grpc.health.v1 and reflection need no token", security_.summary);
    const auto& sec = config_.security();
    spdlog::info("HTTP security: {}{}", !sec.http_tls() ? "plaintext"
                                        : sec.tls_client_ca_file().empty() ? "TLS (same certificate)"
                                                                           : "TLS and client certificates (mutual TLS)",
                 gateway_ == nullptr         ? ""
                 : security_.auth != nullptr ? "; the JSON gateway needs the bearer tokens"
                                             : "");
    if (!sec.http_tls() && !sec.tls_client_ca_file().empty() && gateway_ != nullptr) {
      spdlog::warn("mutual TLS protects the gRPC port only: the HTTP port's JSON gateway takes plaintext calls "
                   "without a client certificate (security.http_tls is false)");
    }
    if (security_.auth != nullptr && !security_.tls) {
      spdlog::warn("bearer tokens travel in clear text without TLS: only run like this behind a TLS-terminating "
                   "proxy or mesh (security.tls_cert_file)");
    }
    return absl::OkStatus();
  }

  absl::Status LoadModels() {
    std::map<std::string, int> instances_per_device;
    ModelSet set;
    for (const ModelConfig& m : config_.models()) {
      const absl::Time t0 = absl::Now();
      CLIPSERVE_ASSIGN_OR_RETURN(Scheduler * scheduler, SchedulerFor(m.device()));
      runtime::ClipRuntimeOptions o;
      o.name = m.name();
      o.dir = m.path();
      o.device = m.device();
      o.dtype = m.dtype();
      o.text_lane = LaneFromConfig(m.text_lane());
      o.image_lane = LaneFromConfig(m.image_lane());
      o.text_cache_entries = m.text_cache_entries();
      o.max_text_bytes = config_.limits().max_text_bytes();
      o.max_image_bytes = config_.limits().max_image_bytes();
      o.max_image_pixels = config_.limits().max_image_pixels();
      o.text_observer = metrics_->LaneObserverFor(m.name(), "text");
      o.image_observer = metrics_->LaneObserverFor(m.name(), "image");
      auto rt = runtime::ClipRuntime::Create(o, scheduler, cpu_pool_.get());
      if (!rt.ok()) {
        return absl::Status(rt.status().code(), absl::StrCat("model '", m.name(), "': ", rt.status().message()));
      }
      CLIPSERVE_RETURN_IF_ERROR((*rt)->WarmUp());
      runtime::ClipRuntime* runtime = rt->get();
      const auto& d = runtime->description();
      for (const char* lane : {"text", "image"}) {
        Lane* l = scheduler->FindLane(m.name() + "/" + lane);
        CLIPSERVE_RETURN_IF_ERROR(metrics_->queue_depth()->Set({m.name(), lane}, [l] { return l->queue_depth(); }));
      }
      CLIPSERVE_RETURN_IF_ERROR(metrics_->cache_hits()->Set(
          {m.name()}, [runtime] { return static_cast<double>(runtime->text_cache().hits()); }));
      CLIPSERVE_RETURN_IF_ERROR(metrics_->cache_misses()->Set(
          {m.name()}, [runtime] { return static_cast<double>(runtime->text_cache().misses()); }));
      metrics_->model_info()->Labels({m.name(), d.kind, d.device, d.dtype}).Set(1);
      set.models[m.name()] = runtime;
      if (m.default_()) set.default_model = m.name();
      instances_per_device[m.device()] = std::max<int>(instances_per_device[m.device()], m.instances());
      runtimes_.push_back(std::move(*rt));
      spdlog::info("model '{}' loaded from {} in {:.1f} s: embedding dim {}, image {}px, context {}, {} {}", m.name(),
                   m.path(), absl::ToDoubleSeconds(absl::Now() - t0), d.embedding_dim, d.image_size,
                   d.context_length, d.device, d.dtype);
    }
    if (config_.has_generation() && !config_.generation().vqgan_path().empty()) {
      CLIPSERVE_RETURN_IF_ERROR(StartGeneration(set));
    }
    const int intra = static_cast<int>(config_.threads().intra_op_threads());
    for (const auto& [device_name, instances] : instances_per_device) {
      CLIPSERVE_ASSIGN_OR_RETURN(Device device, ParseDevice(device_name));
      CLIPSERVE_ASSIGN_OR_RETURN(
          auto pool, WorkerPool::Create({.scheduler = schedulers_.at(device_name).get(),
                                         .device = device,
                                         .instances = instances,
                                         .init = [intra](const WorkerContext& c) {
                                           return runtime::InitWorkerThread(c, intra);
                                         }}));
      workers_.push_back(std::move(pool));
    }
    service_->SetModels(std::move(set));
    {
      absl::MutexLock lock(&mu_);
      serving_ = true;
    }
    SetHealth(true);
    spdlog::info("serving {} model(s)", runtimes_.size());
    return absl::OkStatus();
  }

  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      if (shut_down_) return;
      shut_down_ = true;
      draining_ = true;
    }
    const absl::Time deadline = absl::Now() + absl::Milliseconds(config_.drain_timeout_ms());
    spdlog::info("shutting down: refusing new calls, draining for up to {} ms", config_.drain_timeout_ms());
    SetHealth(false);
    service_->StopAdmitting();
    generation_service_->StopAdmitting();
    // Generation jobs run for minutes: they stop after their current step (their streams end UNAVAILABLE).
    if (generation_ != nullptr) generation_->Shutdown();
    if (!service_->WaitForInFlight(deadline)) {
      spdlog::warn("drain deadline passed with {} call(s) in flight; their queued rows fail UNAVAILABLE",
                   service_->in_flight());
    }
    for (auto& [name, scheduler] : schedulers_) {
      scheduler->StopAccepting();
      if (absl::Status s = scheduler->Drain(deadline); !s.ok()) spdlog::warn("drain {}: {}", name, std::string(s.message()));
    }
    if (grpc_server_ != nullptr) grpc_server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    workers_.clear();  // stops the schedulers and joins the workers
    // Runs what is still queued for decoding (calls left over after the drain deadline: their rows are refused
    // by the stopped lanes) and joins the pool, before the runtimes its closures point to are destroyed.
    cpu_pool_.reset();
    if (http_ != nullptr) http_->Stop();
    spdlog::info("shut down");
  }

  std::string CollectMetrics() const { return registry_.Collect(); }
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_ == nullptr ? 0 : http_->port(); }

 private:
  // Loads the VQGAN next to the CLIP that steers it and starts the job manager with its step lane.
  absl::Status StartGeneration(const ModelSet& set) {
    const GenerationConfig& g = config_.generation();
    const absl::Time t0 = absl::Now();
    const ModelConfig* clip_config = nullptr;
    for (const ModelConfig& m : config_.models()) {
      if (m.name() == g.clip_model()) clip_config = &m;
    }
    auto runtime = set.models.find(g.clip_model());
    if (clip_config == nullptr || runtime == set.models.end()) {
      return absl::InvalidArgumentError(absl::StrCat("generation.clip_model '", g.clip_model(), "' is not loaded"));
    }
    std::shared_ptr<const clip::ClipBundle> bundle = runtime->second->bundle();
    vqgan::VqganModel::Options vo;
    vo.model_dir = g.vqgan_path();
    vo.device = bundle->model->device();
    auto vq = vqgan::VqganModel::Load(vo);
    if (!vq.ok()) {
      return absl::Status(vq.status().code(), absl::StrCat("generation.vqgan_path: ", vq.status().message()));
    }
    std::vector<std::shared_ptr<const clip::ClipBundle>> more_clips;
    for (const std::string& name : g.more_clip_models()) {
      auto more = set.models.find(name);
      if (more == set.models.end()) {
        return absl::InvalidArgumentError(absl::StrCat("generation.more_clip_models: '", name, "' is not loaded"));
      }
      more_clips.push_back(more->second->bundle());
    }
    CLIPSERVE_ASSIGN_OR_RETURN(
        generation::GenerationModels models,
        generation::GenerationModels::Create(std::move(vq).value(), bundle, {}, std::move(more_clips)));
    CLIPSERVE_ASSIGN_OR_RETURN(Scheduler * scheduler, SchedulerFor(clip_config->device()));
    generation::JobManagerOptions o;
    o.models = models;
    o.scheduler = scheduler;
    o.step_batching = LaneFromConfig(g.step_lane()).batching;
    o.cpu_pool = cpu_pool_.get();
    o.max_active_jobs = static_cast<int>(g.max_active_jobs());
    o.max_queued_jobs = static_cast<int>(g.max_queued_jobs());
    o.limits = {.max_side = static_cast<int>(g.max_side()),
                .max_steps = static_cast<int>(g.max_steps()),
                .max_cutn = static_cast<int>(g.max_cutn()),
                .max_frame_side = static_cast<int>(g.max_frame_side())};
    o.keep_finished = absl::Seconds(g.keep_finished_s());
    CLIPSERVE_ASSIGN_OR_RETURN(o.observer, MakeGenerationMetrics(&registry_));
    o.lane_observer = metrics_->LaneObserverFor("generation", "step");
    CLIPSERVE_ASSIGN_OR_RETURN(generation_, generation::JobManager::Create(o));
    Lane* lane = scheduler->FindLane(o.lane_name);
    CLIPSERVE_RETURN_IF_ERROR(
        metrics_->queue_depth()->Set({"generation", "step"}, [lane] { return lane->queue_depth(); }));
    generation_service_->SetManager(generation_.get(),
                                    {.default_side = static_cast<int>(g.default_side()),
                                     .max_text_bytes = static_cast<int>(config_.limits().max_text_bytes()),
                                     .max_image_bytes = static_cast<int64_t>(config_.limits().max_image_bytes()),
                                     .max_image_pixels = static_cast<int64_t>(config_.limits().max_image_pixels()),
                                     .job_defaults = JobDefaultsFromConfig(g)});
    const std::string more =
        g.more_clip_models().empty()
            ? ""
            : absl::StrCat(" (an ensemble with '", absl::StrJoin(g.more_clip_models(), "', '"), "')");
    spdlog::info(
        "generation ready in {:.1f} s: VQGAN {} (factor {}) with CLIP '{}'{}, up to {} jobs at once, {} queued",
        absl::ToDoubleSeconds(absl::Now() - t0), g.vqgan_path(), models.vqgan->downsample_factor(), g.clip_model(),
        more, g.max_active_jobs(), g.max_queued_jobs());
    return absl::OkStatus();
  }

  absl::StatusOr<Scheduler*> SchedulerFor(const std::string& device) {
    auto it = schedulers_.find(device);
    if (it != schedulers_.end()) return it->second.get();
    CLIPSERVE_ASSIGN_OR_RETURN(auto scheduler, Scheduler::Create({}));
    return schedulers_.emplace(device, std::move(scheduler)).first->second.get();
  }

  void SetHealth(bool serving) {
    if (grpc_server_ == nullptr) return;
    auto* health = grpc_server_->GetHealthCheckService();
    if (health == nullptr) return;
    health->SetServingStatus(serving);
    health->SetServingStatus(kServiceName, serving);
    health->SetServingStatus(kGenerationServiceName, serving && generation_ != nullptr);
  }

  const ServerConfig config_;
  metrics::Registry registry_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<ThreadPool> cpu_pool_;
  // Before the services, which point to its token check.
  ServerSecurity security_;
  std::unique_ptr<ClipService> service_;
  std::unique_ptr<GenerationService> generation_service_;
  // Before http_, whose handlers call it: destroyed after the HTTP server has stopped.
  std::unique_ptr<Gateway> gateway_;
  std::unique_ptr<http::HttpServer> http_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int grpc_port_ = 0;
  // Declared before the runtimes and workers that refer to them: destroyed after.
  std::map<std::string, std::unique_ptr<Scheduler>> schedulers_;
  std::vector<std::unique_ptr<runtime::ClipRuntime>> runtimes_;
  // After the schedulers (its lane lives there) and before the workers (destroyed once they have stopped).
  std::unique_ptr<generation::JobManager> generation_;
  std::vector<std::unique_ptr<WorkerPool>> workers_;

  absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const ServerConfig& config) {
  auto impl = std::make_unique<Impl>(config);
  CLIPSERVE_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() { impl_->Shutdown(); }
absl::Status Server::Start() { return impl_->Start(); }
absl::Status Server::LoadModels() { return impl_->LoadModels(); }
void Server::Shutdown() { impl_->Shutdown(); }
std::string Server::CollectMetrics() const { return impl_->CollectMetrics(); }
int Server::grpc_port() const { return impl_->grpc_port(); }
int Server::http_port() const { return impl_->http_port(); }

}  // namespace clipserve::service
