// taming-transformers' VQModel as libtorch modules (modules/diffusionmodules/model.py Encoder/Decoder and
// modules/vqvae/quantize.py VectorQuantizer2 with legacy=True).
//
// This is the torch layer: plain torch::nn::Modules whose named_parameters() are exactly taming's state_dict
// keys (encoder.down.0.block.0.norm1.weight, decoder.up.2.attn.1.q.bias, quantize.embedding.weight, ...),
// trainable with libtorch autograd, and whose methods throw c10::Error like any torch code. Nothing here
// validates inputs; VqganModel (vqgan.h) is the Status-returning boundary that checks shapes and converts
// torch errors. Generation and training code may call these methods directly inside their own
// CatchTorchErrors.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <memory>
#include <vector>

#include "server/models/vqgan/config.h"

namespace clipserve::vqgan {

// GroupNorm(32, eps 1e-6, affine) → swish → 3×3 conv, twice, with a 1×1 `nin_shortcut` when the channel count
// changes.
class ResnetBlock : public torch::nn::Module {
 public:
  ResnetBlock(int64_t in_channels, int64_t out_channels, double dropout);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, nin_shortcut_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};

// Single-head self-attention over the h·w positions with 1×1 q/k/v/proj_out convolutions and a residual.
class AttnBlock : public torch::nn::Module {
 public:
  explicit AttnBlock(int64_t channels);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d q_{nullptr}, k_{nullptr}, v_{nullptr}, proj_out_{nullptr};
};

// Zero padding (0, 1, 0, 1), then a 3×3 stride-2 convolution without padding.
class Downsample : public torch::nn::Module {
 public:
  explicit Downsample(int64_t channels);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv_{nullptr};
};

// Nearest-neighbour ×2, then a 3×3 convolution.
class Upsample : public torch::nn::Module {
 public:
  explicit Upsample(int64_t channels);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv_{nullptr};
};

// One resolution level of the encoder (`down.i`) or decoder (`up.i`): `block.*`, `attn.*` (one per block, or
// none) and an optional `downsample` / `upsample`.
class Level : public torch::nn::Module {
 public:
  enum class Resample { kNone, kDown, kUp };
  struct Spec {
    int64_t in_channels = 0;
    int64_t out_channels = 0;
    int64_t num_blocks = 0;
    bool attention = false;  // an AttnBlock after every ResnetBlock
    Resample resample = Resample::kNone;
    double dropout = 0.0;
  };
  explicit Level(const Spec& spec);
  at::Tensor forward(at::Tensor x);

 private:
  std::vector<std::shared_ptr<ResnetBlock>> blocks_;
  std::vector<std::shared_ptr<AttnBlock>> attns_;
  std::shared_ptr<Downsample> downsample_;
  std::shared_ptr<Upsample> upsample_;
};

// `mid`: block_1, attn_1, block_2 at the lowest resolution.
class MidBlock : public torch::nn::Module {
 public:
  MidBlock(int64_t channels, double dropout);
  at::Tensor forward(const at::Tensor& x);

 private:
  std::shared_ptr<ResnetBlock> block_1_, block_2_;
  std::shared_ptr<AttnBlock> attn_1_;
};

// x [B, in_channels, H, W] → z [B, z_channels (×2 if double_z), H/f, W/f].
class Encoder : public torch::nn::Module {
 public:
  explicit Encoder(const DdConfig& config);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  std::vector<std::shared_ptr<Level>> down_;
  std::shared_ptr<MidBlock> mid_;
  torch::nn::GroupNorm norm_out_{nullptr};
};

// z [B, z_channels, h, w] → image [B, out_ch, h·f, w·f] (no tanh; ≈ [−1, 1]). `up[i]` is level i; forward runs
// up[L−1] (lowest resolution) first.
class Decoder : public torch::nn::Module {
 public:
  explicit Decoder(const DdConfig& config);
  at::Tensor forward(const at::Tensor& z);

 private:
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  std::shared_ptr<MidBlock> mid_;
  std::vector<std::shared_ptr<Level>> up_;
  torch::nn::GroupNorm norm_out_{nullptr};
};

// How Quantize's z_q relates to z under autograd.
enum class QuantizeGradient {
  // z_q = codebook[argmin]: gradients reach the codebook, not z (what the Encode path and training use).
  kCodebook,
  // z_q = z + (codebook[argmin] − z).detach(): forward is the nearest code, backward is the identity to z
  // (what generation optimises through).
  kStraightThrough,
};

struct Quantized {
  at::Tensor z_q;      // [B, embed_dim, h, w], the module's dtype
  at::Tensor indices;  // [B, h, w] int64
};

// indices [B, h, w] (any integer type) → the rows of `codebook` [n_embed, embed_dim] as [B, embed_dim, h, w]
// (taming's get_codebook_entry), contiguous, in the codebook's dtype and on its device.
at::Tensor CodebookRows(const at::Tensor& codebook, const at::Tensor& indices);

// VectorQuantizer2 (legacy): nearest codebook row by d = Σz² + Σe² − 2·z·eᵀ (computed in float32), argmin.
class VectorQuantizer : public torch::nn::Module {
 public:
  VectorQuantizer(int64_t n_embed, int64_t embed_dim);
  Quantized forward(const at::Tensor& z, QuantizeGradient gradient);
  // indices [B, h, w] (any integer type) → codebook rows as [B, embed_dim, h, w] (taming's get_codebook_entry).
  at::Tensor Lookup(const at::Tensor& indices);
  // [n_embed, embed_dim]; the parameter itself.
  const at::Tensor& codebook() const { return embedding_->weight; }

 private:
  torch::nn::Embedding embedding_{nullptr};
};

// taming's VQModel without the loss: encoder, decoder, quantize, quant_conv, post_quant_conv. Constructed with
// freshly initialised parameters (PyTorch defaults; codebook U(−1/n_embed, 1/n_embed) as taming does) and in
// training mode, as any torch module. Thread-safety is torch's: concurrent forward calls are fine in eval mode;
// training, loading and moving are not.
class VqModel : public torch::nn::Module {
 public:
  explicit VqModel(const VqganConfig& config);

  // x [B, in_channels, H, W] in [−1, 1] → h = quant_conv(encoder(x)) [B, embed_dim, H/f, W/f].
  at::Tensor EncodeToLatent(const at::Tensor& x);
  Quantized Quantize(const at::Tensor& h, QuantizeGradient gradient) { return quantize_->forward(h, gradient); }
  // z_q [B, embed_dim, h, w] → decoder(post_quant_conv(z_q)) [B, out_ch, h·f, w·f]. Differentiable.
  at::Tensor Decode(const at::Tensor& z_q);
  // indices [B, h, w] → Decode(codebook rows).
  at::Tensor DecodeCodes(const at::Tensor& indices) { return Decode(quantize_->Lookup(indices)); }
  const at::Tensor& codebook() const { return quantize_->codebook(); }

 private:
  std::shared_ptr<Encoder> encoder_;
  std::shared_ptr<Decoder> decoder_;
  std::shared_ptr<VectorQuantizer> quantize_;
  torch::nn::Conv2d quant_conv_{nullptr}, post_quant_conv_{nullptr};
};

}  // namespace clipserve::vqgan
