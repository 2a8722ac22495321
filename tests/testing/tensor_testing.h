// Tensor comparison helpers for parity tests.
#pragma once

#include <ATen/ATen.h>

#include <iostream>

namespace clipserve::testing {

// ‖a − b‖ / ‖b‖ in float64 (the fixtures' tolerance measure).
inline double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.detach().to(at::kDouble).cpu(), y = b.detach().to(at::kDouble).cpu();
  return (x - y).norm().item<double>() / y.norm().item<double>();
}

// Checks ‖a − b‖ / ‖b‖ ≤ tolerance and prints the measured value (parity reports quote it).
#define CLIPSERVE_EXPECT_RELATIVE_ERROR_LE(a, b, tolerance)                                              \
  do {                                                                                                   \
    const double clipserve_rel_ = ::clipserve::testing::RelativeError((a), (b));                         \
    std::cout << "[ parity   ] " << #a << " vs " << #b << ": relative error " << clipserve_rel_ << "\n"; \
    EXPECT_LE(clipserve_rel_, (tolerance));                                                               \
  } while (0)

}  // namespace clipserve::testing
