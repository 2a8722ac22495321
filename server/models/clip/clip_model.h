// CLIP's two towers (vision transformer and causal text transformer) with their projections, for any Hugging
// Face `CLIPModel` configuration, in libtorch.
//
// Weights live in torch parameters (fused QKV per block; the Hugging Face q/k/v names are views into it), so
// the same model serves inference and training. A ClipModel is created once and then only read: EncodeText and
// EncodeImage are const, hold no state between calls and may run concurrently on several threads. They throw
// torch errors like any torch code; callers at a module boundary wrap them (CatchTorchErrors). Run inference
// under c10::InferenceMode; with grad mode on they build the autograd graph (generation back-propagates
// through EncodeImage).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/models/clip/config.h"
#include "server/models/packed_linear.h"

namespace clipserve::clip {

struct ClipModelOptions {
  // A Hugging Face CLIP directory: config.json + model.safetensors.
  std::filesystem::path dir;
  // Weight dtype: kFloat (CPU default), kHalf or kBFloat16 (for GPUs). LayerNorms and softmax run in the same
  // dtype; embeddings come back as float32.
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // Also keep the projection weights packed for clipserve's CPU GEMM kernel (PrepackForInference()). Only for
  // weights that will not change afterwards (serving; not training).
  bool prepack_cpu_weights = false;
};

class ClipModel : public torch::nn::Module {
 public:
  // Loads config.json + model.safetensors. Unknown, missing and wrong-shape weights are errors that name them;
  // `*.position_ids` buffers of older exports are ignored.
  static absl::StatusOr<std::shared_ptr<ClipModel>> Load(const ClipModelOptions& options);
  // Randomly initialised (transformers' init scheme), for training and benchmarks; `seed` makes it repeatable.
  static std::shared_ptr<ClipModel> CreateRandom(const ClipConfig& config, uint64_t seed);

  // ids [B, L] int64 (L ≤ max_position_embeddings; SOT ... EOT padded) → projected text features [B, P]
  // (not normalised), float32. Only positions up to the last EOS in the batch are computed: with causal
  // attention the pooled state does not depend on what follows it.
  at::Tensor EncodeText(const at::Tensor& ids) const;
  // pixels [B, C, S, S] normalised → projected image features [B, P] (not normalised), float32.
  at::Tensor EncodeImage(const at::Tensor& pixels) const;
  // exp(logit_scale) · cos(image_i, text_j) → [I, T].
  at::Tensor LogitsPerImage(const at::Tensor& image_features, const at::Tensor& text_features) const;
  at::Tensor logit_scale() const { return logit_scale_; }

  const ClipConfig& config() const { return config_; }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }

  // Parameters under their Hugging Face names (views into the fused storage where names are split).
  std::vector<std::pair<std::string, at::Tensor>> NamedWeights() const;
  // Copies weights in by Hugging Face name (any float dtype); checks names and shapes first and changes
  // nothing on error.
  absl::Status LoadWeights(const std::map<std::string, at::Tensor>& weights, const std::string& origin);
  // Writes config.json + model.safetensors (float32 or the model's dtype) to `dir`.
  absl::Status Save(const std::filesystem::path& dir) const;

  // Moves weights to a device and dtype (drops packed copies).
  void ConvertTo(at::Device device, at::ScalarType dtype);

  // Packs the transformer projections and the patch embedding for the packed CPU GEMM (packed_linear.h):
  // inference (no autograd) on a float32 CPU model then streams pre-packed weights instead of having BLAS
  // re-pack them on every call. Costs a second copy of those weights (ViT-B/32: +350 MB). Returns false, packing
  // nothing, where the model is not float32 on CPU or the CPU lacks AVX-512F. Weights changed afterwards
  // (LoadWeights, ConvertTo) drop the packed copies; changing them any other way leaves the copies stale, so
  // call this only for frozen models.
  bool PrepackForInference();
  bool prepacked() const { return patch_packed_ != nullptr; }

  class Tower;  // implementation detail, public for the .cc's helpers

 private:
  explicit ClipModel(const ClipConfig& config);
  void DropPacked();

  ClipConfig config_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  std::shared_ptr<Tower> text_;
  std::shared_ptr<Tower> vision_;
  std::unique_ptr<PackedWeight> patch_packed_;
  at::Tensor token_embedding_, text_position_embedding_, text_final_ln_w_, text_final_ln_b_;
  at::Tensor class_embedding_, patch_embedding_, vision_position_embedding_;
  at::Tensor pre_ln_w_, pre_ln_b_, post_ln_w_, post_ln_b_;
  at::Tensor text_projection_, visual_projection_, logit_scale_;
};

}  // namespace clipserve::clip
