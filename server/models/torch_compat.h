// The one place where clipserve's model code deals with differences between libtorch versions: Debian's
// libtorch 1.13 (CPU; what CI builds) and the official libtorch 2.x (CUDA; what GPU users run).
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <optional>

#define CLIPSERVE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace clipserve::torch_compat {

// softmax(q·kᵀ / sqrt(d) + mask) · v over the last two dimensions; q, k, v are [..., L, d]. `causal` masks
// future positions (key index > query index). Uses the fused kernel (flash / memory-efficient on CUDA) where
// the libtorch version makes it public (2.0+), and the same math with two batched GEMMs elsewhere.
inline at::Tensor ScaledDotProductAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            bool causal) {
#if CLIPSERVE_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/causal);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores;
  if (causal) {
    const int64_t lq = q.size(-2), lk = k.size(-2);
    // Additive mask, -inf above the diagonal; baddbmm folds the scale and the mask into the GEMM.
    at::Tensor mask = at::full({lq, lk}, -std::numeric_limits<float>::infinity(), q.options()).triu_(1);
    auto q3 = q.reshape({-1, lq, q.size(-1)});
    auto k3 = k.reshape({-1, lk, k.size(-1)});
    scores = at::baddbmm(mask.expand({q3.size(0), lq, lk}), q3, k3.transpose(1, 2), /*beta=*/1.0, /*alpha=*/scale);
  } else {
    auto q3 = q.reshape({-1, q.size(-2), q.size(-1)});
    auto k3 = k.reshape({-1, k.size(-2), k.size(-1)});
    scores = at::bmm(q3, k3.transpose(1, 2)).mul_(scale);
  }
  auto probs = at::softmax(scores, -1);
  auto v3 = v.reshape({-1, v.size(-2), v.size(-1)});
  auto out = at::bmm(probs, v3);
  auto shape = q.sizes().vec();
  shape.back() = v.size(-1);
  return out.view(shape);
#endif
}

}  // namespace clipserve::torch_compat
