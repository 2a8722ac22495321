#include "server/generation/layout_prior.h"

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/models/tensor_io.h"

namespace clipserve::generation {
namespace {

// Joint probabilities of the pairs (codes[..., i], codes[..., i + 1]) along `dim` (1: vertical, 2: horizontal).
at::Tensor PairProbabilities(const at::Tensor& codes, int64_t dim, int64_t k, double smoothing) {
  const int64_t n = codes.size(dim);
  const at::Tensor first = codes.narrow(dim, 0, n - 1).reshape(-1);
  const at::Tensor second = codes.narrow(dim, 1, n - 1).reshape(-1);
  at::Tensor counts = at::bincount(first * k + second, /*weights=*/{}, k * k).to(at::kDouble).view({k, k});
  counts = counts + smoothing;
  return (counts / counts.sum()).to(at::kFloat);
}

// Mean −log of the pair likelihoods along `dim` of soft assignments p [B, h, w, K] (dim 1: rows, 2: columns).
at::Tensor SoftPairEnergy(const at::Tensor& p, const at::Tensor& joint, int64_t dim) {
  const int64_t n = p.size(dim);
  if (n < 2) return at::zeros({p.size(0)}, p.options());
  const at::Tensor a = p.narrow(dim, 0, n - 1), b = p.narrow(dim, 1, n - 1);
  const at::Tensor likelihood = (at::matmul(a, joint) * b).sum(-1);
  return -likelihood.clamp_min(1e-30).log().flatten(1).mean(1);
}

at::Tensor HardPairEnergy(const at::Tensor& codes, const at::Tensor& joint, int64_t dim) {
  const int64_t n = codes.size(dim), k = joint.size(0);
  if (n < 2) return at::zeros({codes.size(0)}, joint.options());
  const at::Tensor index = codes.narrow(dim, 0, n - 1) * k + codes.narrow(dim, 1, n - 1);
  return -joint.reshape(-1).index_select(0, index.reshape(-1)).log().view({codes.size(0), -1}).mean(1);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LayoutPrior>> LayoutPrior::Fit(const at::Tensor& codes, const at::Tensor& codebook,
                                                              const LayoutPriorOptions& options) {
  if (!codebook.defined() || codebook.dim() != 2 || codebook.size(0) < 2) {
    return absl::InvalidArgumentError("layout prior: the codebook must be [n_embed >= 2, embed_dim]");
  }
  const int64_t k = codebook.size(0);
  if (!codes.defined() || codes.dim() != 3 || codes.size(0) < 1 || codes.size(1) < 2 || codes.size(2) < 2 ||
      at::isFloatingType(codes.scalar_type())) {
    return absl::InvalidArgumentError("layout prior: codes must be integers [N >= 1, h >= 2, w >= 2]");
  }
  if (!(options.smoothing > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("layout prior: smoothing ", options.smoothing, " must be > 0"));
  }
  std::unique_ptr<LayoutPrior> prior;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("fitting a layout prior", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    const at::Tensor c = codes.to(at::kCPU).to(at::kLong);
    if (c.min().item<int64_t>() < 0 || c.max().item<int64_t>() >= k) {
      return absl::InvalidArgumentError(absl::StrCat("layout prior: code indices must be in [0, ", k, ")"));
    }
    // Temperature: how far apart the codes real pictures use are from their nearest neighbours.
    const at::Tensor e = codebook.detach().to(at::kCPU).to(at::kFloat);
    at::Tensor d = at::cdist(e, e).pow(2);
    d.fill_diagonal_(std::numeric_limits<float>::infinity());
    const at::Tensor used = at::bincount(c.reshape(-1), {}, k).gt(0);
    const double temperature = std::get<0>(d.min(1)).masked_select(used).mean().item<double>();
    if (!(temperature > 0)) return absl::InvalidArgumentError("layout prior: the used codes coincide");
    prior.reset(new LayoutPrior(PairProbabilities(c, 2, k, options.smoothing),
                                PairProbabilities(c, 1, k, options.smoothing), temperature));
    return absl::OkStatus();
  }));
  return prior;
}

absl::StatusOr<std::unique_ptr<LayoutPrior>> LayoutPrior::Load(const std::filesystem::path& path, at::Device device) {
  CLIPSERVE_ASSIGN_OR_RETURN(auto tensors, LoadTensors(path));
  const auto get = [&](const std::string& name) {
    return FindTensor(tensors, name, path, "a layout prior has 'horizontal', 'vertical' and 'temperature'");
  };
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor horizontal, get("horizontal"));
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor vertical, get("vertical"));
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor temperature, get("temperature"));
  if (horizontal.dim() != 2 || horizontal.size(0) != horizontal.size(1) || horizontal.size(0) < 2 ||
      !vertical.sizes().equals(horizontal.sizes()) || temperature.numel() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(),
                                                   ": expected horizontal and vertical [K, K] and a "
                                                   "scalar temperature"));
  }
  std::unique_ptr<LayoutPrior> prior;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("loading a layout prior", [&]() -> absl::Status {
    const double t = temperature.to(at::kDouble).item<double>();
    const bool ok = t > 0 && horizontal.ge(0).all().item<bool>() && vertical.ge(0).all().item<bool>();
    if (!ok) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": negative probability or temperature"));
    prior.reset(new LayoutPrior(horizontal.to(device, at::kFloat).clone(), vertical.to(device, at::kFloat).clone(), t));
    return absl::OkStatus();
  }));
  return prior;
}

absl::Status LayoutPrior::Save(const std::filesystem::path& path) const {
  return SaveTensors(
      path,
      {{"horizontal", horizontal_}, {"vertical", vertical_}, {"temperature", at::full({1}, temperature_, at::kFloat)}});
}

at::Tensor LayoutPrior::Energy(const at::Tensor& z, const at::Tensor& codebook) const {
  const at::Tensor zf = z.permute({0, 2, 3, 1}).to(at::kFloat);  // [B, h, w, C]
  const at::Tensor e = codebook.detach().to(zf.device(), at::kFloat);
  const at::Tensor d = zf.pow(2).sum(-1, true) - 2 * at::matmul(zf, e.t()) + e.pow(2).sum(-1);
  const at::Tensor p = at::softmax(-d / temperature_, -1);
  const at::Tensor h = horizontal_.to(zf.device()), v = vertical_.to(zf.device());
  return (SoftPairEnergy(p, h, 2) + SoftPairEnergy(p, v, 1)) / 2;
}

at::Tensor LayoutPrior::CodeEnergy(const at::Tensor& codes) const {
  const at::Tensor c = codes.to(horizontal_.device()).to(at::kLong);
  return (HardPairEnergy(c, horizontal_, 2) + HardPairEnergy(c, vertical_, 1)) / 2;
}

}  // namespace clipserve::generation
