// A denoiser of VQGAN latents: a small convolutional network that, given a latent grid whose codes have been
// partly replaced and perturbed, predicts the code of every cell of the real picture's encoding. It is trained on
// the VQGAN's encodings of real pictures (train-latent-denoiser), so what it returns for any latent is the
// nearest layout it knows: whole shapes on flat grounds. Generation can pull z towards its prediction
// (JobOptions::denoiser_weight; "regularisation by denoising": the term λ·‖z − D(z)‖²/2 with D(z) held fixed)
// so that the optimisation stays among pictures of the world the CLIP was trained on. The reference has no such
// term; it is this project's (docs/generation.md, "Quality").
//
//   auto d = LatentDenoiser::Create({.embed_dim = 32, .n_embed = 512}, vqgan.codebook());
//   ... train d->module() on (corrupted z, clean codes) with cross-entropy on d->Logits(z) ...
//   d->Save(vqgan_dir / LatentDenoiser::kFileName);
//   at::Tensor target = d->Denoise(z, vqgan.codebook());  // [B, embed_dim, h, w], no gradient
//
// Logits/Denoise may be called from several threads at once; training (module()) must not overlap them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>

#include "absl/status/statusor.h"

namespace clipserve::generation {

struct LatentDenoiserConfig {
  int64_t embed_dim = 32;  // the VQGAN's
  int64_t n_embed = 512;   // the VQGAN's
  int64_t width = 64;      // channels of the hidden layers
  // One residual block (two 3×3 convolutions) per entry, with that dilation: the default's receptive field
  // (1 + 2·2·(1+2+4+8+1+2) = 73 cells) covers any latent up to 36 cells across.
  std::vector<int64_t> dilations = {1, 2, 4, 8, 1, 2};
};

class LatentDenoiserNet : public torch::nn::Module {
 public:
  explicit LatentDenoiserNet(const LatentDenoiserConfig& config);
  at::Tensor forward(const at::Tensor& z);  // [B, embed_dim, h, w] (normalised) → logits [B, n_embed, h, w]

 private:
  torch::nn::Conv2d in_{nullptr}, out_{nullptr};
  torch::nn::ModuleList blocks_{nullptr};  // pairs of convolutions
};

class LatentDenoiser {
 public:
  static constexpr const char* kFileName = "latent_denoiser.safetensors";

  // Random weights; `codebook` [n_embed, embed_dim] fixes the input normalisation (its per-channel mean and
  // standard deviation). INVALID_ARGUMENT for a bad config or a codebook of another shape.
  static absl::StatusOr<std::unique_ptr<LatentDenoiser>> Create(const LatentDenoiserConfig& config,
                                                                const at::Tensor& codebook);
  // Reads a file written by Save (the config comes from the tensors' shapes), onto `device`.
  static absl::StatusOr<std::unique_ptr<LatentDenoiser>> Load(const std::filesystem::path& path,
                                                              at::Device device = at::kCPU);
  absl::Status Save(const std::filesystem::path& path) const;

  const LatentDenoiserConfig& config() const { return config_; }
  LatentDenoiserNet& module() const { return *net_; }

  // Code logits [B, n_embed, h, w] for latents z [B, embed_dim, h, w] (any float dtype; computed in float32).
  at::Tensor Logits(const at::Tensor& z) const;
  // The codebook rows of the most likely codes, [B, embed_dim, h, w] float32, without a gradient.
  at::Tensor Denoise(const at::Tensor& z, const at::Tensor& codebook) const;

 private:
  LatentDenoiser(LatentDenoiserConfig config, std::shared_ptr<LatentDenoiserNet> net, at::Tensor shift,
                 at::Tensor scale)
      : config_(std::move(config)), net_(std::move(net)), shift_(std::move(shift)), scale_(std::move(scale)) {}

  LatentDenoiserConfig config_;
  std::shared_ptr<LatentDenoiserNet> net_;
  at::Tensor shift_, scale_;  // [1, embed_dim, 1, 1]: z is fed as (z − shift) / scale
};

}  // namespace clipserve::generation
