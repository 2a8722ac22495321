#include "server/generation/latent_denoiser.h"

#include <string>
#include <utility>

#include <torch/nn/functional/activation.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/models/tensor_io.h"
#include "server/models/vqgan/modules.h"

namespace clipserve::generation {
namespace {

torch::nn::Conv2d Conv(int64_t in, int64_t out, int64_t kernel, int64_t dilation) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).padding(dilation * (kernel / 2)).dilation(dilation));
}

absl::Status ValidateConfig(const LatentDenoiserConfig& c) {
  if (c.embed_dim < 1 || c.n_embed < 2 || c.width < 1 || c.width > 4096 || c.dilations.empty() ||
      c.dilations.size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat("latent denoiser: bad config (embed_dim ", c.embed_dim, ", n_embed ",
                                                   c.n_embed, ", width ", c.width, ", ", c.dilations.size(),
                                                   " blocks)"));
  }
  for (int64_t d : c.dilations) {
    if (d < 1 || d > 64) return absl::InvalidArgumentError(absl::StrCat("latent denoiser: dilation ", d));
  }
  return absl::OkStatus();
}

}  // namespace

LatentDenoiserNet::LatentDenoiserNet(const LatentDenoiserConfig& config) {
  in_ = register_module("in", Conv(config.embed_dim, config.width, 3, 1));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t d : config.dilations) {
    blocks_->push_back(Conv(config.width, config.width, 3, d));
    blocks_->push_back(Conv(config.width, config.width, 3, d));
  }
  out_ = register_module("out", Conv(config.width, config.n_embed, 1, 1));
}

at::Tensor LatentDenoiserNet::forward(const at::Tensor& z) {
  at::Tensor x = in_->forward(z);
  for (size_t i = 0; i + 1 < blocks_->size(); i += 2) {
    const at::Tensor y = blocks_[i]->as<torch::nn::Conv2d>()->forward(at::gelu(x));
    x = x + blocks_[i + 1]->as<torch::nn::Conv2d>()->forward(at::gelu(y));
  }
  return out_->forward(at::gelu(x));
}

absl::StatusOr<std::unique_ptr<LatentDenoiser>> LatentDenoiser::Create(const LatentDenoiserConfig& config,
                                                                       const at::Tensor& codebook) {
  CLIPSERVE_RETURN_IF_ERROR(ValidateConfig(config));
  if (!codebook.defined() || codebook.dim() != 2 || codebook.size(0) != config.n_embed ||
      codebook.size(1) != config.embed_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("latent denoiser: the codebook must be [", config.n_embed, ", ", config.embed_dim, "]"));
  }
  std::unique_ptr<LatentDenoiser> d;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("creating a latent denoiser", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    const at::Tensor e = codebook.detach().to(at::kFloat);
    const at::Tensor shift = e.mean(0).view({1, -1, 1, 1}).to(at::kCPU);
    const at::Tensor scale = e.std(0).clamp_min(1e-6).view({1, -1, 1, 1}).to(at::kCPU);
    auto net = std::make_shared<LatentDenoiserNet>(config);
    net->eval();
    d.reset(new LatentDenoiser(config, std::move(net), shift, scale));
    return absl::OkStatus();
  }));
  return d;
}

absl::StatusOr<std::unique_ptr<LatentDenoiser>> LatentDenoiser::Load(const std::filesystem::path& path,
                                                                     at::Device device) {
  CLIPSERVE_ASSIGN_OR_RETURN(auto tensors, LoadTensors(path));
  const auto get = [&](const std::string& name) { return FindTensor(tensors, name, path); };
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor dilations, get("dilations"));
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor in_weight, get("in.weight"));
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor out_weight, get("out.weight"));
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor shift, get("shift"));
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor scale, get("scale"));
  if (dilations.dim() != 1 || in_weight.dim() != 4 || out_weight.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a latent denoiser"));
  }
  if (shift.numel() != in_weight.size(1) || scale.numel() != in_weight.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": shift and scale need ", in_weight.size(1), " values"));
  }
  LatentDenoiserConfig config;
  config.width = in_weight.size(0);
  config.embed_dim = in_weight.size(1);
  config.n_embed = out_weight.size(0);
  const at::Tensor dl = dilations.to(at::kLong).contiguous();
  config.dilations.assign(dl.data_ptr<int64_t>(), dl.data_ptr<int64_t>() + dl.numel());
  CLIPSERVE_RETURN_IF_ERROR(ValidateConfig(config));
  std::unique_ptr<LatentDenoiser> d;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors(
      "loading a latent denoiser",
      [&]() -> absl::Status {
        at::NoGradGuard no_grad;
        auto net = std::make_shared<LatentDenoiserNet>(config);
        for (auto& p : net->named_parameters()) {
          CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor t, get(p.key()));
          if (!t.sizes().equals(p.value().sizes())) {
            return absl::InvalidArgumentError(absl::StrCat(path.string(), ": '", p.key(), "' has the wrong shape"));
          }
          p.value().copy_(t);
        }
        net->to(device);
        net->eval();
        for (auto& p : net->parameters()) p.set_requires_grad(false);
        d.reset(new LatentDenoiser(config, std::move(net), shift.to(device, at::kFloat).view({1, -1, 1, 1}).clone(),
                                   scale.to(device, at::kFloat).view({1, -1, 1, 1}).clone()));
        return absl::OkStatus();
      },
      absl::StatusCode::kInvalidArgument));
  return d;
}

absl::Status LatentDenoiser::Save(const std::filesystem::path& path) const {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : net_->named_parameters()) tensors.emplace_back(p.key(), p.value().detach());
  tensors.emplace_back("shift", shift_.view({-1}));
  tensors.emplace_back("scale", scale_.view({-1}));
  tensors.emplace_back("dilations", at::tensor(config_.dilations, at::kLong));
  return SaveTensors(path, tensors);
}

at::Tensor LatentDenoiser::Logits(const at::Tensor& z) const {
  const at::Tensor zf = z.to(at::kFloat);
  return net_->forward((zf - shift_.to(zf.device())) / scale_.to(zf.device()));
}

at::Tensor LatentDenoiser::Denoise(const at::Tensor& z, const at::Tensor& codebook) const {
  at::NoGradGuard no_grad;
  return vqgan::CodebookRows(codebook.detach().to(z.device(), at::kFloat), Logits(z.detach()).argmax(1));
}

}  // namespace clipserve::generation
