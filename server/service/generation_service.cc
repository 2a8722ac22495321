#include "server/service/generation_service.h"

#include <limits>
#include <random>
#include <utility>

#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/models/clip/image_decode.h"
#include "server/service/service_metrics.h"
#include "server/service/status.h"

namespace clipserve::service {
namespace {

using generation::FrameFormat;
using generation::JobEvent;
using generation::JobState;

class GenerationMetrics : public generation::GenerationObserver {
 public:
  static absl::StatusOr<std::shared_ptr<GenerationMetrics>> Create(metrics::Registry* r) {
    auto m = std::make_shared<GenerationMetrics>();
    CLIPSERVE_ASSIGN_OR_RETURN(m->jobs_, r->AddGauge("clipserve_generation_jobs",
                                                     "Generation jobs now, running or queued.", {"state"}));
    CLIPSERVE_ASSIGN_OR_RETURN(m->finished_, r->AddCounter("clipserve_generation_jobs_finished_total",
                                                           "Generation jobs ended, by how.", {"state"}));
    CLIPSERVE_ASSIGN_OR_RETURN(m->steps_, r->AddCounter("clipserve_generation_steps_total",
                                                        "Generation job-steps done."));
    CLIPSERVE_ASSIGN_OR_RETURN(
        m->pass_, r->AddHistogram("clipserve_generation_pass_seconds",
                                  "Time of one batched generation pass (all the jobs in it).", {},
                                  metrics::ExponentialBuckets(0.001, 2, 17)));
    CLIPSERVE_ASSIGN_OR_RETURN(m->frames_, r->AddCounter("clipserve_generation_frames_total",
                                                         "Frames written to streams, or dropped because a newer "
                                                         "one replaced them before a slow reader took them.",
                                                         {"result"}));
    m->jobs_->Labels({"running"}).Set(0);
    m->jobs_->Labels({"queued"}).Set(0);
    for (const char* s : {"completed", "cancelled", "failed"}) m->finished_->Labels({s});
    m->frames_->Labels({"sent"});
    m->frames_->Labels({"dropped"});
    return m;
  }

  void OnJobCounts(int active, int queued) override {
    jobs_->Labels({"running"}).Set(active);
    jobs_->Labels({"queued"}).Set(queued);
  }
  void OnJobFinished(JobState state) override { finished_->Labels({generation::JobStateName(state)}).Increment(); }
  void OnSteps(int jobs, absl::Duration time) override {
    steps_->Get().Increment(jobs);
    pass_->Get().Observe(absl::ToDoubleSeconds(time));
  }
  void OnFrames(int64_t sent, int64_t dropped) override {
    if (sent > 0) frames_->Labels({"sent"}).Increment(static_cast<double>(sent));
    if (dropped > 0) frames_->Labels({"dropped"}).Increment(static_cast<double>(dropped));
  }

 private:
  metrics::GaugeFamily* jobs_ = nullptr;
  metrics::CounterFamily* finished_ = nullptr;
  metrics::CounterFamily* steps_ = nullptr;
  metrics::HistogramFamily* pass_ = nullptr;
  metrics::CounterFamily* frames_ = nullptr;
};

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (int k = 1; k <= extra; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    // Overlong forms, surrogates and values beyond U+10FFFF are not UTF-8.
    static constexpr uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    i += extra + 1;
  }
  return true;
}

// An image field as [3, H, W] float in [0, 1] (alpha dropped, grey expanded).
absl::StatusOr<at::Tensor> ImageTensor(const v1::Image& image, const std::string& field,
                                       const GenerationService::Settings& s) {
  DecodeOptions options;
  options.max_encoded_bytes = static_cast<uint64_t>(s.max_image_bytes);
  options.max_pixels = static_cast<uint64_t>(s.max_image_pixels);
  absl::StatusOr<DecodedImage> decoded;
  switch (image.source_case()) {
    case v1::Image::kEncoded:
      decoded = DecodeImage(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(image.encoded().data()),
                                                image.encoded().size()),
                            options);
      break;
    case v1::Image::kRaw: {
      const auto& raw = image.raw();
      const uint64_t expected = uint64_t{raw.width()} * raw.height() * 3;
      if (raw.width() == 0 || raw.height() == 0 || expected != raw.rgb().size()) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".raw: ", raw.width(), "x", raw.height(),
                                                       " RGB needs ", expected, " bytes, got ", raw.rgb().size()));
      }
      decoded = ImageFromPixels(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(raw.rgb().data()), raw.rgb().size()),
          static_cast<int>(raw.width()), static_cast<int>(raw.height()), 3, options);
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(field, " has neither `encoded` nor `raw` set"));
  }
  if (!decoded.ok()) return absl::InvalidArgumentError(absl::StrCat(field, ": ", decoded.status().message()));
  const int c = decoded->channels;
  at::Tensor hwc = at::from_blob(decoded->pixels.data(), {decoded->height, decoded->width, c}, at::kByte);
  at::Tensor rgb = c == 1 ? hwc.expand({decoded->height, decoded->width, 3}) : hwc.narrow(2, 0, 3);
  return rgb.permute({2, 0, 1}).to(at::kFloat).div(255).contiguous();
}

// [3, H, W] → [3, height, width]: area averaging when shrinking, bicubic when growing.
at::Tensor ResizeImage(const at::Tensor& chw, int width, int height) {
  if (chw.size(1) == height && chw.size(2) == width) return chw;
  const at::Tensor hwc = chw.permute({1, 2, 0}).contiguous();
  cv::Mat src(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_32FC3, hwc.data_ptr<float>());
  cv::Mat dst;
  const bool shrink = width <= src.cols && height <= src.rows;
  cv::resize(src, dst, cv::Size(width, height), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_CUBIC);
  return at::from_blob(dst.data, {height, width, 3}, at::kFloat).clone().clamp(0, 1).permute({2, 0, 1}).contiguous();
}

FrameFormat ToFrameFormat(v1::ImageFormat f) {
  switch (f) {
    case v1::IMAGE_FORMAT_JPEG:
      return FrameFormat::kJpeg;
    case v1::IMAGE_FORMAT_WEBP:
      return FrameFormat::kWebp;
    default:
      return FrameFormat::kPng;
  }
}

v1::ImageFormat ToProtoFormat(FrameFormat f) {
  switch (f) {
    case FrameFormat::kJpeg:
      return v1::IMAGE_FORMAT_JPEG;
    case FrameFormat::kWebp:
      return v1::IMAGE_FORMAT_WEBP;
    case FrameFormat::kPng:
      break;
  }
  return v1::IMAGE_FORMAT_PNG;
}

void FillFrame(const JobEvent& e, v1::Frame* frame) {
  frame->set_data(e.frame);
  frame->set_format(ToProtoFormat(e.frame_format));
  frame->set_width(static_cast<uint32_t>(e.frame_width));
  frame->set_height(static_cast<uint32_t>(e.frame_height));
}

void ToResponse(const JobEvent& e, v1::GenerateResponse* out) {
  out->Clear();
  switch (e.kind) {
    case JobEvent::Kind::kQueued: {
      auto* a = out->mutable_accepted();
      a->set_job_id(e.job_id);
      a->set_queue_position(static_cast<uint32_t>(e.queue_position));
      a->set_total_steps(static_cast<uint32_t>(e.total_steps));
      a->set_seed(e.seed);
      break;
    }
    case JobEvent::Kind::kProgress: {
      auto* p = out->mutable_progress();
      p->set_job_id(e.job_id);
      p->set_step(static_cast<uint32_t>(e.step));
      p->set_total_steps(static_cast<uint32_t>(e.total_steps));
      p->set_loss(e.loss);
      p->set_similarity(e.similarity);
      p->set_elapsed_seconds(absl::ToDoubleSeconds(e.elapsed));
      if (!e.frame.empty()) FillFrame(e, p->mutable_frame());
      break;
    }
    case JobEvent::Kind::kCompleted: {
      auto* c = out->mutable_completed();
      c->set_job_id(e.job_id);
      FillFrame(e, c->mutable_image());
      c->set_steps(static_cast<uint32_t>(e.step));
      c->set_loss(e.loss);
      c->set_similarity(e.similarity);
      c->set_elapsed_seconds(absl::ToDoubleSeconds(e.elapsed));
      c->set_seed(e.seed);
      break;
    }
    case JobEvent::Kind::kFailed:
      break;
  }
}

v1::GenerationState ToProtoState(JobState s) {
  switch (s) {
    case JobState::kQueued:
      return v1::GENERATION_STATE_QUEUED;
    case JobState::kRunning:
      return v1::GENERATION_STATE_RUNNING;
    case JobState::kCompleted:
      return v1::GENERATION_STATE_COMPLETED;
    case JobState::kCancelled:
      return v1::GENERATION_STATE_CANCELLED;
    case JobState::kFailed:
      return v1::GENERATION_STATE_FAILED;
  }
  return v1::GENERATION_STATE_UNSPECIFIED;
}

void ToInfo(const generation::JobSummary& s, v1::GenerationInfo* out) {
  out->set_job_id(s.job_id);
  out->set_state(ToProtoState(s.state));
  out->set_prompt(s.prompt);
  out->set_step(static_cast<uint32_t>(s.step));
  out->set_total_steps(static_cast<uint32_t>(s.total_steps));
  out->set_queue_position(static_cast<uint32_t>(s.queue_position));
  out->set_watchers(static_cast<uint32_t>(s.watchers));
  out->set_detach(s.detach);
  out->set_created_unix_seconds(absl::ToDoubleSeconds(s.created - absl::UnixEpoch()));
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

absl::StatusOr<std::shared_ptr<generation::GenerationObserver>> MakeGenerationMetrics(metrics::Registry* registry) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::shared_ptr<GenerationMetrics> m, GenerationMetrics::Create(registry));
  return std::shared_ptr<generation::GenerationObserver>(std::move(m));
}

absl::StatusOr<generation::GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& r,
                                                                  const GenerationService::Settings& s) {
  generation::GenerationRequest out;
  out.job = s.job_defaults;  // the request's fields below override
  generation::JobOptions& j = out.job;
  if (!ValidUtf8(r.prompt())) return absl::InvalidArgumentError("prompt: not valid UTF-8");
  if (r.has_prompt() && !r.prompt().empty()) {
    CLIPSERVE_ASSIGN_OR_RETURN(j.prompts, generation::ParsePrompts(
                                              r.prompt(), "prompt", {.max_text_bytes = s.max_text_bytes}));
  }
  if (r.image_prompts_size() > 8) {
    return absl::InvalidArgumentError(absl::StrCat("image_prompts: ", r.image_prompts_size(), " given; at most 8"));
  }
  for (int i = 0; i < r.image_prompts_size(); ++i) {
    const v1::ImagePrompt& p = r.image_prompts(i);
    const std::string field = absl::StrCat("image_prompts[", i, "]");
    generation::ImagePrompt ip;
    ip.weight = p.has_weight() ? p.weight() : 1.0f;
    if (!std::isfinite(ip.weight) || ip.weight == 0 || std::abs(ip.weight) > 100) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".weight: ", ip.weight,
                                                     "; use a non-zero weight in [-100, 100]"));
    }
    if (p.has_stop()) {
      if (std::isnan(p.stop()) || p.stop() > generation::kMaxPromptStop) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".stop: ", p.stop(), "; use at most ",
                                                       generation::kMaxPromptStop));
      }
      ip.stop = p.stop();
    }
    if (!p.has_image()) return absl::InvalidArgumentError(absl::StrCat(field, ".image is required"));
    CLIPSERVE_ASSIGN_OR_RETURN(ip.image, ImageTensor(p.image(), field + ".image", s));
    j.image_prompts.push_back(std::move(ip));
  }
  if (j.prompts.empty() && j.image_prompts.empty()) {
    return absl::InvalidArgumentError("prompt: required (text prompts, \"text[:weight[:stop]]\" separated by \"|\", "
                                      "or image_prompts)");
  }
  j.width = r.width() > 0 ? static_cast<int>(std::min<uint32_t>(r.width(), 1 << 20)) : s.default_side;
  j.height = r.height() > 0 ? static_cast<int>(std::min<uint32_t>(r.height(), 1 << 20)) : s.default_side;
  if (r.has_steps()) j.steps = static_cast<int>(std::min<uint32_t>(r.steps(), 1 << 30));
  j.seed = r.seed();
  if (j.seed == 0) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    do {
      j.seed = rng() >> 11;  // below 2^53: exact in any JSON client
    } while (j.seed == 0);
  }
  if (r.has_learning_rate()) j.learning_rate = r.learning_rate();
  if (r.has_cutn()) j.cutouts.cutn = static_cast<int>(std::min<uint32_t>(r.cutn(), 1 << 20));
  if (r.has_cut_pow()) {
    if (!(r.cut_pow() >= 0 && r.cut_pow() <= 100)) {
      return absl::InvalidArgumentError(absl::StrCat("cut_pow: ", r.cut_pow(), "; use 0 to 100"));
    }
    j.cutouts.cut_pow = r.cut_pow();
  }
  if (r.has_init_weight()) j.init_weight = r.init_weight();
  if (r.has_init_image()) {
    CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor init, ImageTensor(r.init_image(), "init_image", s));
    if (j.width > 0 && j.height > 0 && j.width <= 8192 && j.height <= 8192) {
      j.init_image = ResizeImage(init, j.width, j.height);
    }
  }
  out.frames.every = static_cast<int>(std::min<uint32_t>(r.frame_every(), 1 << 30));
  out.frames.format = ToFrameFormat(r.frame_format());
  out.frames.width = static_cast<int>(std::min<uint32_t>(r.frame_width(), 1 << 20));
  out.frames.height = static_cast<int>(std::min<uint32_t>(r.frame_height(), 1 << 20));
  out.frames.quality = r.has_frame_quality() ? static_cast<int>(std::min<uint32_t>(r.frame_quality(), 1000)) : 90;
  out.detach = r.detach();
  return out;
}

// One server stream: Generate or WatchGeneration. Owned by gRPC until OnDone. The subscription's notify
// callback reaches the stream through a shared State, so that a notification racing with OnDone never touches
// a deleted reactor.
class GenerationService::Stream : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  Stream(ServiceMetrics* metrics, const char* method) : metrics_(metrics), method_(method), start_(absl::Now()) {
    state_->stream = this;
  }

  struct State {
    absl::Mutex mu;
    Stream* stream ABSL_GUARDED_BY(mu) = nullptr;  // null once OnDone has run
  };
  std::shared_ptr<State> state() const { return state_; }

  // Attaches the subscription to the stream behind `state` and starts writing; closes the subscription if the
  // stream has already ended. Any thread.
  static void Attach(const std::shared_ptr<State>& state, const std::shared_ptr<generation::Subscription>& sub) {
    bool attached = false;
    {
      absl::MutexLock lock(&state->mu);
      Stream* stream = state->stream;
      if (stream != nullptr && !stream->finished_) {
        stream->subscription_ = sub;
        std::weak_ptr<State> weak = state;
        sub->SetNotify([weak] {
          if (auto s = weak.lock()) {
            absl::MutexLock lock(&s->mu);
            if (s->stream != nullptr) s->stream->PumpLocked();
          }
        });
        stream->PumpLocked();
        attached = true;
      }
    }
    if (!attached) sub->Close();
  }

  // Ends the stream behind `state` with an error, unless it has ended. Any thread.
  static void Fail(const std::shared_ptr<State>& state, const absl::Status& status) {
    absl::MutexLock lock(&state->mu);
    if (state->stream != nullptr) state->stream->FinishLocked(status);
  }


  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&state_->mu);
    writing_ = false;
    if (!ok) {
      // The client is gone; OnCancel follows (or has run).
      FinishLocked(absl::CancelledError("the client went away"));
      return;
    }
    if (finish_after_write_) {
      FinishLocked(absl::OkStatus());
      return;
    }
    PumpLocked();
  }

  void OnCancel() override {
    std::shared_ptr<generation::Subscription> sub;
    {
      absl::MutexLock lock(&state_->mu);
      sub = subscription_;
      FinishLocked(absl::CancelledError("the client cancelled the stream"));
    }
    // Closing may cancel the job (not detached); it calls into the manager, so not under our lock.
    if (sub) sub->Close();
  }

  void OnDone() override {
    std::shared_ptr<generation::Subscription> sub;
    {
      absl::MutexLock lock(&state_->mu);
      state_->stream = nullptr;
      sub = std::move(subscription_);
    }
    if (sub) {
      sub->SetNotify(nullptr);
      sub->Close();
    }
    delete this;
  }

 private:
  // Writes the next event if no write is in flight.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    if (writing_ || finished_ || subscription_ == nullptr) return;
    std::optional<JobEvent> e = subscription_->Next();
    if (!e) return;
    if (e->kind == JobEvent::Kind::kFailed) {
      FinishLocked(e->status);
      return;
    }
    ToResponse(*e, &response_);
    writing_ = true;
    finish_after_write_ = e->terminal();
    StartWrite(&response_);
  }

  void FinishLocked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_->mu) {
    if (finished_) return;
    finished_ = true;
    if (metrics_ != nullptr) metrics_->RecordCall("generation", method_, status.code(), absl::Now() - start_);
    Finish(ToGrpcStatus(status));
  }

  ServiceMetrics* const metrics_;
  const char* const method_;
  const absl::Time start_;
  const std::shared_ptr<State> state_ = std::make_shared<State>();
  std::shared_ptr<generation::Subscription> subscription_ ABSL_GUARDED_BY(state_->mu);
  v1::GenerateResponse response_ ABSL_GUARDED_BY(state_->mu);
  bool writing_ ABSL_GUARDED_BY(state_->mu) = false;
  bool finish_after_write_ ABSL_GUARDED_BY(state_->mu) = false;
  bool finished_ ABSL_GUARDED_BY(state_->mu) = false;
};

GenerationService::GenerationService(ThreadPool* cpu_pool, ServiceMetrics* metrics, const BearerAuth* auth)
    : cpu_pool_(cpu_pool), metrics_(metrics), auth_(auth) {}

absl::Status GenerationService::Authenticate(const grpc::CallbackServerContext& context, const char* method) const {
  return auth_ != nullptr ? auth_->CheckCall(context, method) : absl::OkStatus();
}

void GenerationService::SetManager(generation::JobManager* manager, const Settings& settings) {
  absl::MutexLock lock(&mu_);
  manager_ = manager;
  settings_ = settings;
}

void GenerationService::StopAdmitting() {
  absl::MutexLock lock(&mu_);
  admitting_ = false;
}

absl::StatusOr<generation::JobManager*> GenerationService::Manager(bool admitting_new) const {
  absl::MutexLock lock(&mu_);
  if (admitting_new && !admitting_) return absl::UnavailableError("server is shutting down");
  if (manager_ == nullptr) {
    return absl::FailedPreconditionError(
        "this server has no generation model (configure generation.vqgan_path; see docs/generation.md)");
  }
  return manager_;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(grpc::CallbackServerContext* context,
                                                                            const v1::GenerateRequest* request) {
  auto* stream = new Stream(metrics_, "Generate");
  // The token before anything else: a caller without a valid one learns nothing about the server's state.
  if (absl::Status s = Authenticate(*context, "Generate"); !s.ok()) {
    Stream::Fail(stream->state(), s);
    return stream;
  }
  absl::StatusOr<generation::JobManager*> manager = Manager(/*admitting_new=*/true);
  if (!manager.ok()) {
    Stream::Fail(stream->state(), manager.status());
    return stream;
  }
  Settings settings;
  {
    absl::MutexLock lock(&mu_);
    settings = settings_;
  }
  // Decoding images and creating the job (prompt embeddings) is real work: off the gRPC thread, on a copy of
  // the request (the stream may end, and its request go, before the closure runs).
  std::shared_ptr<Stream::State> state = stream->state();
  generation::JobManager* m = *manager;
  auto copy = std::make_shared<v1::GenerateRequest>(*request);
  const std::string peer = context->peer();
  const absl::Status scheduled = cpu_pool_->Schedule([state, m, copy, settings, peer] {
    {
      absl::MutexLock lock(&state->mu);
      if (state->stream == nullptr) return;  // gone before we started
    }
    absl::StatusOr<generation::GenerationRequest> parsed = ToGenerationRequest(*copy, settings);
    if (!parsed.ok()) return Stream::Fail(state, parsed.status());
    absl::StatusOr<generation::JobManager::Submitted> submitted = m->Submit(std::move(parsed).value());
    if (!submitted.ok()) return Stream::Fail(state, submitted.status());
    spdlog::debug("generation {} for {}", submitted->job_id, peer);
    Stream::Attach(state, submitted->subscription);
  });
  if (!scheduled.ok()) Stream::Fail(state, absl::ResourceExhaustedError("the server is busy preparing requests; retry"));
  return stream;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::WatchGeneration(
    grpc::CallbackServerContext* context, const v1::WatchGenerationRequest* request) {
  auto* stream = new Stream(metrics_, "WatchGeneration");
  if (absl::Status s = Authenticate(*context, "WatchGeneration"); !s.ok()) {
    Stream::Fail(stream->state(), s);
    return stream;
  }
  absl::StatusOr<generation::JobManager*> manager = Manager(/*admitting_new=*/false);
  if (!manager.ok()) {
    Stream::Fail(stream->state(), manager.status());
    return stream;
  }
  absl::StatusOr<std::shared_ptr<generation::Subscription>> sub = (*manager)->Watch(request->job_id());
  if (!sub.ok()) {
    Stream::Fail(stream->state(), sub.status());
    return stream;
  }
  Stream::Attach(stream->state(), *sub);
  return stream;
}

grpc::ServerUnaryReactor* GenerationService::CancelGeneration(grpc::CallbackServerContext* context,
                                                              const v1::CancelGenerationRequest* request,
                                                              v1::GenerationInfo* response) {
  if (absl::Status s = Authenticate(*context, "CancelGeneration"); !s.ok()) return Answer(context, s);
  absl::StatusOr<generation::JobManager*> manager = Manager(/*admitting_new=*/false);
  if (!manager.ok()) return Answer(context, manager.status());
  if (absl::Status s = (*manager)->Cancel(request->job_id()); !s.ok()) return Answer(context, s);
  for (const generation::JobSummary& summary : (*manager)->List()) {
    if (summary.job_id == request->job_id()) ToInfo(summary, response);
  }
  response->set_job_id(request->job_id());
  return Answer(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::ListGenerations(grpc::CallbackServerContext* context,
                                                             const v1::ListGenerationsRequest* /*request*/,
                                                             v1::ListGenerationsResponse* response) {
  if (absl::Status s = Authenticate(*context, "ListGenerations"); !s.ok()) return Answer(context, s);
  absl::StatusOr<generation::JobManager*> manager = Manager(/*admitting_new=*/false);
  if (!manager.ok()) return Answer(context, manager.status());
  for (const generation::JobSummary& s : (*manager)->List()) ToInfo(s, response->add_generations());
  return Answer(context, absl::OkStatus());
}

}  // namespace clipserve::service
