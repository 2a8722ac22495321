#include "server/runtime/clip_runtime.h"

#include <atomic>
#include <cstring>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/common/status_macros.h"
#include "server/models/clip/clip_bundle.h"
#include "server/models/clip/image_decode.h"
#include "server/models/tensor_io.h"

namespace clipserve::runtime {
namespace {

absl::StatusOr<at::ScalarType> ParseDtype(const std::string& dtype) {
  if (dtype == "float32") return at::kFloat;
  if (dtype == "float16") return at::kHalf;
  if (dtype == "bfloat16") return at::kBFloat16;
  return absl::InvalidArgumentError(absl::StrCat("dtype '", dtype, "'; use float32, float16 or bfloat16"));
}

absl::StatusOr<at::Device> ParseDevice(const std::string& device) {
  try {
    at::Device d(device);
    if (d.is_cuda() && !at::hasCUDA()) {
      return absl::FailedPreconditionError(absl::StrCat("device '", device, "': this build or machine has no CUDA"));
    }
    return d;
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("device '", device, "'; use cpu or cuda:N"));
  }
}

// The rows of one call share this: results land in place, the last row to finish answers the call.
class CallState {
 public:
  CallState(size_t rows, int dim, EmbedDone done) : remaining_(rows), done_(std::move(done)) {
    result_.dim = dim;
    result_.values.resize(rows * static_cast<size_t>(dim));
    result_.truncated.resize(rows);
  }

  float* row(size_t i) { return result_.values.data() + i * static_cast<size_t>(result_.dim); }
  void set_truncated(size_t i, bool truncated) { result_.truncated[i] = truncated; }
  int dim() const { return result_.dim; }

  // Rows answered without running the model (cache hits) are finished before the others are enqueued.
  void RowDone(const absl::Status& status) {
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      if (!status.ok() && error_.ok()) error_ = status;
      last = --remaining_ == 0;
    }
    if (last) Answer();
  }

  // Answers the call with `status` before any row was enqueued (validation, decoding, queue full).
  void Fail(absl::Status status) { done_(std::move(status)); }

 private:
  void Answer() {
    if (error_.ok()) {
      done_(std::move(result_));
    } else {
      done_(error_);
    }
  }

  absl::Mutex mu_;
  size_t remaining_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  Embeddings result_;
  EmbedDone done_;
};

class RowTask : public Task {
 public:
  RowTask(std::shared_ptr<CallState> call, size_t index) : call_(std::move(call)), index_(index) {}
  float* destination() const { return call_->row(index_); }
  int dim() const { return call_->dim(); }

 protected:
  void Finish(absl::Status status) override { call_->RowDone(status); }

 private:
  std::shared_ptr<CallState> call_;
  size_t index_;
};

class TextRow : public RowTask {
 public:
  TextRow(std::shared_ptr<CallState> call, size_t index, std::vector<int64_t> ids)
      : RowTask(std::move(call), index), ids(std::move(ids)) {}
  const std::vector<int64_t> ids;  // padded to the context
};

class ImageRow : public RowTask {
 public:
  ImageRow(std::shared_ptr<CallState> call, size_t index, size_t floats)
      : RowTask(std::move(call), index), pixels(floats) {}
  std::vector<float> pixels;  // CHW, normalised
};

}  // namespace

class ClipRuntime::Impl {
 public:
  Impl(const ClipRuntimeOptions& options, std::unique_ptr<clip::ClipBundle> bundle, ThreadPool* pool)
      : options_(options), bundle_(std::move(bundle)), pool_(pool), cache_(options.text_cache_entries) {}

  absl::Status AddLanes(Scheduler* scheduler) {
    CLIPSERVE_ASSIGN_OR_RETURN(text_lane_, scheduler->AddLane({.name = options_.name + "/text",
                                                                .batching = options_.text_lane.batching,
                                                                .runner = [this](auto batch) { return RunText(batch); },
                                                                .observer = options_.text_observer}));
    CLIPSERVE_ASSIGN_OR_RETURN(image_lane_,
                               scheduler->AddLane({.name = options_.name + "/image",
                                                   .batching = options_.image_lane.batching,
                                                   .runner = [this](auto batch) { return RunImages(batch); },
                                                   .observer = options_.image_observer}));
    return absl::OkStatus();
  }

  void EmbedTexts(std::vector<std::string> texts, const CallOptions& options, EmbedDone done) {
    if (texts.empty()) return done(Embeddings{.dim = bundle_->embedding_dim()});
    const size_t ctx = static_cast<size_t>(bundle_->context_length());
    auto call = std::make_shared<CallState>(texts.size(), bundle_->embedding_dim(), std::move(done));
    absl::StatusOr<int> priority = TaskPriority(options, options_.text_lane);
    if (!priority.ok()) return call->Fail(priority.status());
    std::vector<std::unique_ptr<Task>> rows;
    std::vector<size_t> cached;
    for (size_t i = 0; i < texts.size(); ++i) {
      if (absl::Status s = CheckTextSize(i, texts[i]); !s.ok()) return call->Fail(s);
      std::vector<int64_t> ids(ctx);
      bool truncated = false;
      const absl::Status s = bundle_->tokenizer->EncodePadded(
          texts[i], options.truncation == Truncation::kReject ? clip::Truncation::kReject : clip::Truncation::kTruncate,
          absl::MakeSpan(ids), &truncated);
      if (!s.ok()) return call->Fail(absl::InvalidArgumentError(absl::StrCat("texts[", i, "]: ", s.message())));
      call->set_truncated(i, truncated);
      if (cache_.Lookup(ids, absl::MakeSpan(call->row(i), static_cast<size_t>(call->dim())))) {
        cached.push_back(i);
        continue;
      }
      auto row = std::make_unique<TextRow>(call, i, std::move(ids));
      SetMeta(row.get(), options, *priority);
      rows.push_back(std::move(row));
    }
    if (!rows.empty()) {
      const absl::Status s = text_lane_->Enqueue(&rows);
      if (!s.ok()) return call->Fail(s);
    }
    for (size_t i = 0; i < cached.size(); ++i) call->RowDone(absl::OkStatus());
  }

  void EmbedImages(std::vector<ImageInput> images, const CallOptions& options, EmbedDone done) {
    if (images.empty()) return done(Embeddings{.dim = bundle_->embedding_dim()});
    auto call = std::make_shared<CallState>(images.size(), bundle_->embedding_dim(), std::move(done));
    absl::StatusOr<int> priority = TaskPriority(options, options_.image_lane);
    if (!priority.ok()) return call->Fail(priority.status());
    // Early admission: when the lane is already full, refuse before spending CPU on decoding (under overload
    // that work would only slow down the calls that are served). Enqueue remains the authoritative check.
    const int limit = options_.image_lane.batching.max_queue_size;
    if (image_lane_->queue_depth() + static_cast<int>(images.size()) > limit) {
      return call->Fail(absl::ResourceExhaustedError(
          absl::StrCat("lane ", image_lane_->name(), " is full (", image_lane_->queue_depth(), " of ", limit,
                       " rows queued); retry later")));
    }
    // Decoding runs on the CPU pool, one image per closure; the last one to finish enqueues the call's rows.
    struct Pending {
      std::vector<std::unique_ptr<ImageRow>> rows;
      std::vector<ImageInput> inputs;
      std::atomic<size_t> remaining{0};
      absl::Mutex mu;
      absl::Status error ABSL_GUARDED_BY(mu);
    };
    auto pending = std::make_shared<Pending>();
    const size_t floats = clip::PreprocessedSize(bundle_->preprocess);
    for (size_t i = 0; i < images.size(); ++i) {
      pending->rows.push_back(std::make_unique<ImageRow>(call, i, floats));
      SetMeta(pending->rows.back().get(), options, *priority);
    }
    pending->inputs = std::move(images);
    pending->remaining = pending->inputs.size();
    auto finish_one = [this, call, pending](size_t) {
      if (pending->remaining.fetch_sub(1) != 1) return;
      absl::Status error;
      {
        absl::MutexLock lock(&pending->mu);
        error = pending->error;
      }
      if (!error.ok()) return call->Fail(error);
      std::vector<std::unique_ptr<Task>> rows;
      for (auto& r : pending->rows) rows.push_back(std::move(r));
      const absl::Status s = image_lane_->Enqueue(&rows);
      if (!s.ok()) call->Fail(s);
    };
    auto record_error = [pending](absl::Status s) {
      absl::MutexLock lock(&pending->mu);
      if (pending->error.ok()) pending->error = std::move(s);
    };
    const size_t n = pending->inputs.size();
    for (size_t i = 0; i < n; ++i) {
      const absl::Status scheduled = pool_->Schedule([this, pending, i, finish_one, record_error]() mutable {
        const absl::Status s = Prepare(pending->inputs[i], absl::MakeSpan(pending->rows[i]->pixels));
        if (!s.ok()) record_error(absl::InvalidArgumentError(absl::StrCat("images[", i, "]: ", s.message())));
        finish_one(i);
      });
      if (!scheduled.ok()) {
        record_error(absl::ResourceExhaustedError(
            absl::StrCat("the image decoding queue is full (", pool_->queue_size(), " images waiting); retry later")));
        finish_one(i);
      }
    }
  }

  absl::StatusOr<std::vector<TokenizedText>> Tokenize(absl::Span<const std::string> texts) const {
    std::vector<TokenizedText> out;
    out.reserve(texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      CLIPSERVE_RETURN_IF_ERROR(CheckTextSize(i, texts[i]));
      auto t = bundle_->tokenizer->Tokenize(texts[i]);
      if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("texts[", i, "]: ", t.status().message()));
      out.push_back({std::move(t->ids), t->truncated});
    }
    return out;
  }

  absl::Status WarmUp() {
    return CatchTorchErrors(options_.name + " warm-up", [&] {
      c10::InferenceMode guard;
      at::Tensor ids = at::zeros({1, bundle_->context_length()}, at::kLong);
      ids[0][0] = bundle_->tokenizer->sot_id();
      ids[0][1] = bundle_->tokenizer->eot_id();
      bundle_->model->EncodeText(ids);
      bundle_->model->EncodeImage(at::zeros({1, 3, bundle_->image_size(), bundle_->image_size()}));
      return absl::OkStatus();
    });
  }

  clip::ClipBundle& bundle() { return *bundle_; }
  std::shared_ptr<const clip::ClipBundle> shared_bundle() const { return bundle_; }
  const EmbeddingCache& cache() const { return cache_; }

 private:
  // CallOptions::priority (0 = default, 1-based) → Task::priority (0-based).
  static absl::StatusOr<int> TaskPriority(const CallOptions& options, const LaneSettings& lane) {
    const int level = options.priority == 0 ? lane.default_priority : options.priority;
    if (level < 1 || level > lane.batching.priority_levels) {
      return absl::InvalidArgumentError(absl::StrCat("priority ", options.priority, " is outside [1, ",
                                                     lane.batching.priority_levels, "] (0 = default)"));
    }
    return level - 1;
  }

  absl::Status CheckTextSize(size_t index, const std::string& text) const {
    if (text.size() <= options_.max_text_bytes) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("texts[", index, "] is ", text.size(), " bytes; the limit is ", options_.max_text_bytes));
  }

  static void SetMeta(Task* task, const CallOptions& options, int priority) {
    task->set_deadline(options.deadline);
    task->set_priority(priority);
    task->set_cancellation(options.cancellation);
  }

  absl::Status Prepare(const ImageInput& input, absl::Span<float> out) const {
    DecodeOptions decode;
    decode.max_encoded_bytes = options_.max_image_bytes;
    decode.max_pixels = options_.max_image_pixels;
    absl::StatusOr<DecodedImage> image;
    if (!input.encoded.empty()) {
      image = DecodeImage({reinterpret_cast<const uint8_t*>(input.encoded.data()), input.encoded.size()}, decode);
    } else {
      if (static_cast<uint64_t>(input.width) * static_cast<uint64_t>(input.height) > options_.max_image_pixels) {
        return absl::InvalidArgumentError(absl::StrCat("raw image of ", input.width, "x", input.height,
                                                       " pixels exceeds the limit of ", options_.max_image_pixels));
      }
      image = ImageFromPixels({reinterpret_cast<const uint8_t*>(input.rgb.data()), input.rgb.size()}, input.width,
                              input.height, 3);
    }
    if (!image.ok()) return image.status();
    return clip::Preprocess(*image, bundle_->preprocess, out);
  }

  absl::Status RunText(absl::Span<Task* const> batch) {
    const int64_t b = static_cast<int64_t>(batch.size()), ctx = bundle_->context_length();
    return CatchTorchErrors(options_.name + "/text batch", [&] {
      c10::InferenceMode guard;
      at::Tensor ids = at::empty({b, ctx}, at::kLong);
      int64_t* p = ids.data_ptr<int64_t>();
      for (int64_t i = 0; i < b; ++i) {
        const auto* row = static_cast<const TextRow*>(batch[i]);
        std::memcpy(p + i * ctx, row->ids.data(), static_cast<size_t>(ctx) * sizeof(int64_t));
      }
      const at::Tensor out = bundle_->model->EncodeText(ids).to(at::kCPU).contiguous();
      Scatter(batch, out);
      for (int64_t i = 0; i < b; ++i) {
        const auto* row = static_cast<const TextRow*>(batch[i]);
        cache_.Insert(row->ids, absl::MakeConstSpan(row->destination(), static_cast<size_t>(row->dim())));
      }
      return absl::OkStatus();
    });
  }

  absl::Status RunImages(absl::Span<Task* const> batch) {
    const int64_t b = static_cast<int64_t>(batch.size());
    const auto& pre = bundle_->preprocess;
    return CatchTorchErrors(options_.name + "/image batch", [&] {
      c10::InferenceMode guard;
      at::Tensor pixels = at::empty({b, 3, pre.crop_height, pre.crop_width});
      float* p = pixels.data_ptr<float>();
      const size_t floats = clip::PreprocessedSize(pre);
      for (int64_t i = 0; i < b; ++i) {
        std::memcpy(p + i * static_cast<int64_t>(floats), static_cast<const ImageRow*>(batch[i])->pixels.data(),
                    floats * sizeof(float));
      }
      Scatter(batch, bundle_->model->EncodeImage(pixels).to(at::kCPU).contiguous());
      return absl::OkStatus();
    });
  }

  static void Scatter(absl::Span<Task* const> batch, const at::Tensor& out) {
    const float* o = out.data_ptr<float>();
    const int64_t dim = out.size(1);
    for (size_t i = 0; i < batch.size(); ++i) {
      std::memcpy(static_cast<RowTask*>(batch[i])->destination(), o + static_cast<int64_t>(i) * dim,
                  static_cast<size_t>(dim) * sizeof(float));
    }
  }

  const ClipRuntimeOptions options_;
  std::shared_ptr<clip::ClipBundle> bundle_;
  ThreadPool* const pool_;
  EmbeddingCache cache_;
  Lane* text_lane_ = nullptr;
  Lane* image_lane_ = nullptr;
};

absl::StatusOr<std::unique_ptr<ClipRuntime>> ClipRuntime::Create(const ClipRuntimeOptions& options,
                                                                 Scheduler* scheduler, ThreadPool* cpu_pool) {
  CLIPSERVE_ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtype(options.dtype));
  CLIPSERVE_ASSIGN_OR_RETURN(at::Device device, ParseDevice(options.device));
  CLIPSERVE_ASSIGN_OR_RETURN(auto bundle,
                             clip::ClipBundle::Load({.dir = options.dir, .dtype = dtype, .device = device}));
  ModelDescription d;
  d.name = options.name;
  d.embedding_dim = bundle->embedding_dim();
  d.image_size = bundle->image_size();
  d.context_length = bundle->context_length();
  d.device = device.str();
  d.dtype = options.dtype;
  d.source = options.dir.string();
  d.logit_scale = bundle->model->logit_scale().to(at::kFloat).exp().item<float>();
  auto impl = std::make_unique<Impl>(options, std::move(bundle), cpu_pool);
  CLIPSERVE_RETURN_IF_ERROR(impl->AddLanes(scheduler));
  return std::unique_ptr<ClipRuntime>(new ClipRuntime(std::move(impl), std::move(d)));
}

ClipRuntime::ClipRuntime(std::unique_ptr<Impl> impl, ModelDescription description)
    : impl_(std::move(impl)), description_(std::move(description)) {}

ClipRuntime::~ClipRuntime() = default;

void ClipRuntime::EmbedTexts(std::vector<std::string> texts, const CallOptions& options, EmbedDone done) {
  impl_->EmbedTexts(std::move(texts), options, std::move(done));
}

void ClipRuntime::EmbedImages(std::vector<ImageInput> images, const CallOptions& options, EmbedDone done) {
  impl_->EmbedImages(std::move(images), options, std::move(done));
}

absl::StatusOr<std::vector<TokenizedText>> ClipRuntime::Tokenize(absl::Span<const std::string> texts) const {
  return impl_->Tokenize(texts);
}

absl::Status ClipRuntime::WarmUp() { return impl_->WarmUp(); }

const EmbeddingCache& ClipRuntime::text_cache() const { return impl_->cache(); }
std::shared_ptr<const clip::ClipBundle> ClipRuntime::bundle() const { return impl_->shared_bundle(); }

}  // namespace clipserve::runtime
