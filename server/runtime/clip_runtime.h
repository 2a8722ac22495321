// ClipRuntime: one served CLIP model bound to the serving core — its text and image lanes, the row tasks that
// travel through them, the batch runners that call the towers, and the text-embedding cache.
//
// Calls are asynchronous: EmbedTexts/EmbedImages validate and prepare their inputs (tokenising on the calling
// thread — 0.4 µs a caption, cheaper than a pool hop; decoding and preprocessing images on the CPU pool), enqueue
// one row per input, and answer `done` exactly once, on whichever thread finished the last row, with every
// row's raw projected embedding in input order or the first error. Thread-safe; all methods may be called from
// any thread. This header includes no torch: the gRPC service layer uses it as it is.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/core/scheduler.h"
#include "server/core/task.h"
#include "server/core/thread_pool.h"
#include "server/core/worker_pool.h"
#include "server/runtime/embedding_cache.h"

namespace clipserve::clip {
struct ClipBundle;
}  // namespace clipserve::clip

namespace clipserve::runtime {

// An image as the caller has it: encoded bytes, or raw RGB pixels. The bytes must stay valid until `done`.
struct ImageInput {
  absl::string_view encoded;
  absl::string_view rgb;  // width · height · 3 bytes
  int width = 0;
  int height = 0;
};

enum class Truncation { kTruncate, kReject };

struct CallOptions {
  absl::Time deadline = absl::InfiniteFuture();
  // 0 = the lane's default level; 1 = highest.
  int priority = 0;
  Truncation truncation = Truncation::kTruncate;
  // Shared by every row of the call; may be null.
  std::shared_ptr<const CancellationFlag> cancellation;
};

// n × dim raw (projected, unnormalised) embeddings, row-major, in input order.
struct Embeddings {
  int dim = 0;
  std::vector<float> values;
  std::vector<bool> truncated;  // texts: cut to the context
  size_t size() const { return dim == 0 ? 0 : values.size() / static_cast<size_t>(dim); }
  const float* row(size_t i) const { return values.data() + i * static_cast<size_t>(dim); }
};

struct TokenizedText {
  std::vector<int32_t> ids;  // SOT … EOT, untruncated
  bool exceeds_context = false;
};

struct ModelDescription {
  std::string name;
  std::string kind = "clip";
  int embedding_dim = 0;
  int image_size = 0;
  int context_length = 0;
  std::string device;
  std::string dtype;
  std::string source;
  float logit_scale = 1.0f;  // exp(logit_scale parameter)
};

struct LaneSettings {
  BatchingOptions batching;
  int default_priority = 1;  // 1-based
};

struct ClipRuntimeOptions {
  std::string name;
  std::filesystem::path dir;
  std::string device = "cpu";    // "cpu" or "cuda:N"
  std::string dtype = "float32";  // "float32", "float16", "bfloat16"
  LaneSettings text_lane;
  LaneSettings image_lane;
  size_t text_cache_entries = 10000;
  size_t max_text_bytes = 16384;
  uint64_t max_image_bytes = uint64_t{16} << 20;
  uint64_t max_image_pixels = 40'000'000;
  // Lane observers for metrics (may be null).
  std::shared_ptr<LaneObserver> text_observer;
  std::shared_ptr<LaneObserver> image_observer;
};

using EmbedDone = absl::AnyInvocable<void(absl::StatusOr<Embeddings>)>;

class ClipRuntime {
 public:
  // Loads the model and adds its lanes ("<name>/text", "<name>/image") to `scheduler`. Not owned; both must
  // outlive the runtime.
  static absl::StatusOr<std::unique_ptr<ClipRuntime>> Create(const ClipRuntimeOptions& options, Scheduler* scheduler,
                                                             ThreadPool* cpu_pool);
  ~ClipRuntime();

  void EmbedTexts(std::vector<std::string> texts, const CallOptions& options, EmbedDone done);
  void EmbedImages(std::vector<ImageInput> images, const CallOptions& options, EmbedDone done);
  // Synchronous (cheap): ids with SOT/EOT, untruncated. INVALID_ARGUMENT for bad UTF-8 or an oversized text.
  absl::StatusOr<std::vector<TokenizedText>> Tokenize(absl::Span<const std::string> texts) const;

  // Runs one text and one image batch through the towers directly (not through the lanes), so that the first
  // real calls do not pay for lazy initialisation.
  absl::Status WarmUp();

  const ModelDescription& description() const { return description_; }
  const EmbeddingCache& text_cache() const;
  // The model itself (tokenizer, preprocessing, towers), e.g. for generation, which drives the towers directly.
  std::shared_ptr<const clip::ClipBundle> bundle() const;

  class Impl;

 private:
  explicit ClipRuntime(std::unique_ptr<Impl> impl, ModelDescription description);
  std::unique_ptr<Impl> impl_;
  ModelDescription description_;
};

}  // namespace clipserve::runtime

namespace clipserve::runtime {

// Prepares a model worker thread (WorkerPoolOptions::init): torch's intra-op threads for this thread (OpenMP's
// setting is per thread), and on CUDA the thread's current device.
absl::Status InitWorkerThread(const WorkerContext& context, int intra_op_threads);

}  // namespace clipserve::runtime
