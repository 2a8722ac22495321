// Tensor comparison helpers for parity tests.
#pragma once

#include <ATen/ATen.h>

namespace clipserve::testing {

// ‖a − b‖ / ‖b‖ in float64 (the fixtures' tolerance measure).
inline double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.detach().to(at::kDouble).cpu(), y = b.detach().to(at::kDouble).cpu();
  return (x - y).norm().item<double>() / y.norm().item<double>();
}

}  // namespace clipserve::testing
