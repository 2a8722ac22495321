// Everything needed to serve one CLIP directory: the model, its tokenizer and its preprocessing settings.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "server/models/clip/clip_model.h"
#include "server/models/clip/preprocess.h"
#include "server/models/clip/tokenizer.h"

namespace clipserve::clip {

struct ClipBundleOptions {
  // A Hugging Face CLIP directory: config.json, model.safetensors, vocab.json, merges.txt,
  // preprocessor_config.json.
  std::filesystem::path dir;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // Keep the projections packed for the CPU GEMM kernel (ClipModel::PrepackForInference); a served model's
  // weights never change. Costs a second copy of those weights on CPU float32 models.
  bool prepack_cpu_weights = true;
  // Per-word BPE cache of the tokenizer.
  size_t tokenizer_cache_words = 100000;
};

// Immutable after Load(); every member may be used from any thread (see each class).
struct ClipBundle {
  static absl::StatusOr<std::unique_ptr<ClipBundle>> Load(const ClipBundleOptions& options);

  std::filesystem::path dir;
  std::shared_ptr<ClipModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  PreprocessConfig preprocess;

  int context_length() const { return tokenizer->context_length(); }
  int embedding_dim() const { return model->config().projection_dim; }
  int image_size() const { return model->config().vision.image_size; }
};

}  // namespace clipserve::clip
