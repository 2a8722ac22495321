#include "server/models/vqgan/modules.h"

#include <torch/nn/functional/upsampling.h>

#include <algorithm>
#include <string>

#include "server/models/torch_compat.h"

namespace clipserve::vqgan {
namespace {

torch::nn::GroupNorm Normalize(int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(32, channels).eps(1e-6).affine(true));
}

torch::nn::Conv2d Conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = -1) {
  if (padding < 0) padding = kernel / 2;
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding));
}

bool Contains(const std::vector<int64_t>& values, int64_t v) {
  return std::find(values.begin(), values.end(), v) != values.end();
}

}  // namespace

ResnetBlock::ResnetBlock(int64_t in_channels, int64_t out_channels, double dropout) {
  norm1_ = register_module("norm1", Normalize(in_channels));
  conv1_ = register_module("conv1", Conv(in_channels, out_channels, 3));
  norm2_ = register_module("norm2", Normalize(out_channels));
  dropout_ = register_module("dropout", torch::nn::Dropout(torch::nn::DropoutOptions(dropout)));
  conv2_ = register_module("conv2", Conv(out_channels, out_channels, 3));
  if (in_channels != out_channels) nin_shortcut_ = register_module("nin_shortcut", Conv(in_channels, out_channels, 1));
}

at::Tensor ResnetBlock::forward(const at::Tensor& x) {
  at::Tensor h = conv1_->forward(at::silu(norm1_->forward(x)));
  h = conv2_->forward(dropout_->forward(at::silu(norm2_->forward(h))));
  return (nin_shortcut_ ? nin_shortcut_->forward(x) : x) + h;
}

AttnBlock::AttnBlock(int64_t channels) {
  norm_ = register_module("norm", Normalize(channels));
  q_ = register_module("q", Conv(channels, channels, 1));
  k_ = register_module("k", Conv(channels, channels, 1));
  v_ = register_module("v", Conv(channels, channels, 1));
  proj_out_ = register_module("proj_out", Conv(channels, channels, 1));
}

at::Tensor AttnBlock::forward(const at::Tensor& x) {
  const at::Tensor h = norm_->forward(x);
  const int64_t b = x.size(0), c = x.size(1), height = x.size(2), width = x.size(3);
  // [B, C, H, W] → [B, H·W, C] tokens; softmax(q·kᵀ / sqrt(C)) · v is taming's bmm formulation.
  auto tokens = [&](const at::Tensor& t) { return t.reshape({b, c, height * width}).transpose(1, 2); };
  at::Tensor out = torch_compat::ScaledDotProductAttention(tokens(q_->forward(h)), tokens(k_->forward(h)),
                                                           tokens(v_->forward(h)), /*causal=*/false);
  out = out.transpose(1, 2).reshape({b, c, height, width});
  return x + proj_out_->forward(out);
}

Downsample::Downsample(int64_t channels) { conv_ = register_module("conv", Conv(channels, channels, 3, 2, 0)); }

at::Tensor Downsample::forward(const at::Tensor& x) {
  return conv_->forward(at::constant_pad_nd(x, {0, 1, 0, 1}, 0.0));
}

Upsample::Upsample(int64_t channels) { conv_ = register_module("conv", Conv(channels, channels, 3)); }

at::Tensor Upsample::forward(const at::Tensor& x) {
  namespace F = torch::nn::functional;
  return conv_->forward(
      F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
}

Level::Level(const Spec& spec) {
  auto block = register_module("block", torch::nn::ModuleList());
  auto attn = register_module("attn", torch::nn::ModuleList());
  int64_t in = spec.in_channels;
  for (int64_t i = 0; i < spec.num_blocks; ++i) {
    blocks_.push_back(std::make_shared<ResnetBlock>(in, spec.out_channels, spec.dropout));
    block->push_back(blocks_.back());
    in = spec.out_channels;
    if (spec.attention) {
      attns_.push_back(std::make_shared<AttnBlock>(spec.out_channels));
      attn->push_back(attns_.back());
    }
  }
  if (spec.resample == Resample::kDown) {
    downsample_ = register_module("downsample", std::make_shared<Downsample>(spec.out_channels));
  } else if (spec.resample == Resample::kUp) {
    upsample_ = register_module("upsample", std::make_shared<Upsample>(spec.out_channels));
  }
}

at::Tensor Level::forward(at::Tensor x) {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    x = blocks_[i]->forward(x);
    if (!attns_.empty()) x = attns_[i]->forward(x);
  }
  if (downsample_) x = downsample_->forward(x);
  if (upsample_) x = upsample_->forward(x);
  return x;
}

MidBlock::MidBlock(int64_t channels, double dropout) {
  block_1_ = register_module("block_1", std::make_shared<ResnetBlock>(channels, channels, dropout));
  attn_1_ = register_module("attn_1", std::make_shared<AttnBlock>(channels));
  block_2_ = register_module("block_2", std::make_shared<ResnetBlock>(channels, channels, dropout));
}

at::Tensor MidBlock::forward(const at::Tensor& x) { return block_2_->forward(attn_1_->forward(block_1_->forward(x))); }

Encoder::Encoder(const DdConfig& config) {
  const int64_t levels = static_cast<int64_t>(config.ch_mult.size());
  conv_in_ = register_module("conv_in", Conv(config.in_channels, config.ch, 3));
  auto down = register_module("down", torch::nn::ModuleList());
  int64_t curr_res = config.resolution;
  int64_t block_in = config.ch;
  for (int64_t i = 0; i < levels; ++i) {
    Level::Spec spec;
    spec.in_channels = block_in;
    spec.out_channels = config.ch * config.ch_mult[i];
    spec.num_blocks = config.num_res_blocks;
    spec.attention = Contains(config.attn_resolutions, curr_res);
    spec.resample = i != levels - 1 ? Level::Resample::kDown : Level::Resample::kNone;
    spec.dropout = config.dropout;
    down_.push_back(std::make_shared<Level>(spec));
    down->push_back(down_.back());
    block_in = spec.out_channels;
    if (i != levels - 1) curr_res /= 2;
  }
  mid_ = register_module("mid", std::make_shared<MidBlock>(block_in, config.dropout));
  norm_out_ = register_module("norm_out", Normalize(block_in));
  conv_out_ =
      register_module("conv_out", Conv(block_in, config.double_z ? 2 * config.z_channels : config.z_channels, 3));
}

at::Tensor Encoder::forward(const at::Tensor& x) {
  at::Tensor h = conv_in_->forward(x);
  for (auto& level : down_) h = level->forward(h);
  h = mid_->forward(h);
  return conv_out_->forward(at::silu(norm_out_->forward(h)));
}

Decoder::Decoder(const DdConfig& config) {
  const int64_t levels = static_cast<int64_t>(config.ch_mult.size());
  int64_t block_in = config.ch * config.ch_mult[levels - 1];
  // The attention test uses the config's resolution, whatever size the decoder later runs at.
  int64_t curr_res = config.resolution >> (levels - 1);
  conv_in_ = register_module("conv_in", Conv(config.z_channels, block_in, 3));
  mid_ = register_module("mid", std::make_shared<MidBlock>(block_in, config.dropout));
  up_.resize(levels);
  for (int64_t i = levels - 1; i >= 0; --i) {
    Level::Spec spec;
    spec.in_channels = block_in;
    spec.out_channels = config.ch * config.ch_mult[i];
    spec.num_blocks = config.num_res_blocks + 1;
    spec.attention = Contains(config.attn_resolutions, curr_res);
    spec.resample = i != 0 ? Level::Resample::kUp : Level::Resample::kNone;
    spec.dropout = config.dropout;
    up_[i] = std::make_shared<Level>(spec);
    block_in = spec.out_channels;
    if (i != 0) curr_res *= 2;
  }
  auto up = register_module("up", torch::nn::ModuleList());
  for (auto& level : up_) up->push_back(level);
  norm_out_ = register_module("norm_out", Normalize(block_in));
  conv_out_ = register_module("conv_out", Conv(block_in, config.out_ch, 3));
}

at::Tensor Decoder::forward(const at::Tensor& z) {
  at::Tensor h = mid_->forward(conv_in_->forward(z));
  for (auto it = up_.rbegin(); it != up_.rend(); ++it) h = (*it)->forward(h);
  return conv_out_->forward(at::silu(norm_out_->forward(h)));
}

VectorQuantizer::VectorQuantizer(int64_t n_embed, int64_t embed_dim) {
  embedding_ = register_module("embedding", torch::nn::Embedding(n_embed, embed_dim));
  at::NoGradGuard no_grad;
  embedding_->weight.uniform_(-1.0 / static_cast<double>(n_embed), 1.0 / static_cast<double>(n_embed));
}

Quantized VectorQuantizer::forward(const at::Tensor& z, QuantizeGradient gradient) {
  const at::Tensor& weight = embedding_->weight;
  const at::Tensor z_bhwc = z.permute({0, 2, 3, 1}).contiguous();
  at::Tensor indices;
  {
    // The argmin has no gradient; float32 keeps half-precision models from tying distinct codes.
    at::NoGradGuard no_grad;
    const at::Tensor flat = z_bhwc.view({-1, weight.size(1)}).to(at::kFloat);
    const at::Tensor e = weight.to(at::kFloat);
    const at::Tensor d =
        flat.pow(2).sum(1, /*keepdim=*/true) + e.pow(2).sum(1) - 2 * at::einsum("bd,dn->bn", {flat, e.t()});
    indices = d.argmin(1);
  }
  at::Tensor z_q = at::embedding(weight, indices).view(z_bhwc.sizes());
  if (gradient == QuantizeGradient::kStraightThrough) z_q = z_bhwc + (z_q - z_bhwc).detach();
  return {z_q.permute({0, 3, 1, 2}).contiguous(), indices.view({z.size(0), z.size(2), z.size(3)})};
}

at::Tensor CodebookRows(const at::Tensor& codebook, const at::Tensor& indices) {
  return at::embedding(codebook, indices.to(codebook.device(), at::kLong)).permute({0, 3, 1, 2}).contiguous();
}

at::Tensor VectorQuantizer::Lookup(const at::Tensor& indices) { return CodebookRows(embedding_->weight, indices); }

VqModel::VqModel(const VqganConfig& config) {
  encoder_ = register_module("encoder", std::make_shared<Encoder>(config.ddconfig));
  decoder_ = register_module("decoder", std::make_shared<Decoder>(config.ddconfig));
  quantize_ = register_module("quantize", std::make_shared<VectorQuantizer>(config.n_embed, config.embed_dim));
  quant_conv_ = register_module("quant_conv", Conv(config.ddconfig.z_channels, config.embed_dim, 1));
  post_quant_conv_ = register_module("post_quant_conv", Conv(config.embed_dim, config.ddconfig.z_channels, 1));
}

at::Tensor VqModel::EncodeToLatent(const at::Tensor& x) { return quant_conv_->forward(encoder_->forward(x)); }

at::Tensor VqModel::Decode(const at::Tensor& z_q) { return decoder_->forward(post_quant_conv_->forward(z_q)); }

}  // namespace clipserve::vqgan
