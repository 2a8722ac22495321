// VqganModel: a taming-transformers VQGAN (VQModel) loaded from our format — a directory with `config.json`
// (see config.h) and `model.safetensors` (taming's state_dict keys, `loss.*` ignored) — as written by
// tools/convert_taming_vqgan.py or by Save().
//
// Error layers: every method of VqganModel returns absl::Status (INVALID_ARGUMENT for bad inputs, checkpoints
// and configs; INTERNAL for torch failures, which are caught here with CatchTorchErrors and never escape).
// module() exposes the torch layer (modules.h), whose methods throw c10::Error and skip input validation;
// generation and training code that calls it converts errors at its own boundary.
#pragma once

#include <ATen/ATen.h>

#include <filesystem>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/models/vqgan/config.h"
#include "server/models/vqgan/modules.h"

namespace clipserve::vqgan {

// Whether a call records an autograd graph. Generation back-propagates through Decode and Quantize and needs
// kAutograd; serving paths that only want pixels pass kInferenceMode (c10::InferenceMode: faster, and the
// resulting tensors can never enter autograd later).
enum class GradMode { kAutograd, kInferenceMode };

struct EncodeResult {
  at::Tensor h;        // quant_conv(encoder(x)), [B, embed_dim, H/f, W/f]
  at::Tensor indices;  // nearest codebook row per cell, [B, H/f, W/f] int64
  at::Tensor z_q;      // codebook rows at `indices`, [B, embed_dim, H/f, W/f]
};

// The model and its configuration. Owns the torch module (held by shared_ptr so that trainers can hand it to
// optimisers). In eval mode after Create/Load. Const methods may be called from several threads at once;
// Save() too; anything that changes parameters (training through module(), moving) must not overlap them.
//
// dtype: float32 is the reference. On CPU with libtorch 1.13, bfloat16 runs (tests: a few percent from the float32
// reference) but float16 does not: 1.13 has no CPU half convolution ("slow_conv2d_cpu" not implemented for
// 'Half'), so a float16 CPU model loads but its calls fail with INTERNAL. On CUDA both half types are expected
// to work (every op used has CUDA half kernels) but are not exercised by the CPU-only tests. The quantiser's
// distances are always computed in float32.
// Inputs are converted to the model's dtype and device; outputs are in the model's dtype (indices int64).
class VqganModel {
 public:
  struct Options {
    // Load(): the directory with config.json and model.safetensors.
    std::filesystem::path model_dir;
    // Create(): the architecture to build with freshly initialised (random) parameters, e.g. for training.
    VqganConfig config;
    // Parameter and compute dtype: at::kFloat (default), at::kHalf or at::kBFloat16.
    at::ScalarType dtype = at::kFloat;
    at::Device device = at::kCPU;
  };

  // A model with random parameters for `options.config` (validated).
  static absl::StatusOr<std::unique_ptr<VqganModel>> Create(const Options& options);
  // Reads `options.model_dir`. The checkpoint must hold exactly the keys of the config's architecture (plus
  // any `loss.*`, skipped) with float tensors of exactly the expected shapes; otherwise INVALID_ARGUMENT naming
  // the missing, unknown and mis-shaped keys. Nothing is allocated for the model before that check passes.
  static absl::StatusOr<std::unique_ptr<VqganModel>> Load(const Options& options);

  // Writes config.json and model.safetensors (parameters in the model's dtype) into `dir`, creating it.
  absl::Status Save(const std::filesystem::path& dir) const;

  // x [B, in_channels, H, W] in [−1, 1], H and W multiples of downsample_factor().
  absl::StatusOr<EncodeResult> Encode(const at::Tensor& x, GradMode mode = GradMode::kAutograd) const;
  // z [B, embed_dim, h, w] → nearest codes; see QuantizeGradient for what gradients reach.
  absl::StatusOr<Quantized> Quantize(const at::Tensor& z, QuantizeGradient gradient,
                                     GradMode mode = GradMode::kAutograd) const;
  // z_q [B, embed_dim, h, w] → image [B, out_ch, h·f, w·f], ≈ [−1, 1]. Differentiable w.r.t. z_q.
  absl::StatusOr<at::Tensor> Decode(const at::Tensor& z_q, GradMode mode = GradMode::kAutograd) const;
  // indices [B, h, w] (integers in [0, n_embed)) → image.
  absl::StatusOr<at::Tensor> DecodeCodes(const at::Tensor& indices, GradMode mode = GradMode::kAutograd) const;
  // Decode(Encode(x).z_q).
  absl::StatusOr<at::Tensor> Reconstruct(const at::Tensor& x, GradMode mode = GradMode::kAutograd) const;

  const VqganConfig& config() const { return config_; }
  // [n_embed, embed_dim], the parameter itself (do not modify outside training).
  at::Tensor codebook() const { return module_->codebook(); }
  int64_t downsample_factor() const { return config_.downsample_factor(); }
  at::ScalarType dtype() const { return dtype_; }
  at::Device device() const { return device_; }

  // The torch layer, for generation and training (throws c10::Error; see the header comment).
  VqModel& module() const { return *module_; }
  std::shared_ptr<VqModel> shared_module() const { return module_; }

 private:
  VqganModel(VqganConfig config, std::shared_ptr<VqModel> module, at::ScalarType dtype, at::Device device)
      : config_(std::move(config)), module_(std::move(module)), dtype_(dtype), device_(device) {}

  absl::Status CheckLatent(const at::Tensor& z, const char* what) const;
  at::Tensor ToModel(const at::Tensor& t) const;

  VqganConfig config_;
  std::shared_ptr<VqModel> module_;
  at::ScalarType dtype_;
  at::Device device_;
};

}  // namespace clipserve::vqgan
