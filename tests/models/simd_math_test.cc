#include "server/models/simd_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace clipserve::simd {
namespace {

#ifdef CLIPSERVE_SIMD_X86

// Applies f to `in`, 16 floats at a time (in.size() a multiple of 16).
template <typename F>
__attribute__((target("avx512f"))) std::vector<float> Apply(const std::vector<float>& in, F f) {
  std::vector<float> out(in.size());
  for (size_t i = 0; i < in.size(); i += 16) _mm512_storeu_ps(out.data() + i, f(_mm512_loadu_ps(in.data() + i)));
  return out;
}

struct ExpFn {
  __attribute__((target("avx512f"))) __m512 operator()(__m512 x) const { return Exp(x); }
};
struct SiluFn {
  __attribute__((target("avx512f"))) __m512 operator()(__m512 x) const { return Silu(x); }
};

// The same, 8 floats at a time with AVX2 (in.size() a multiple of 8).
template <typename F>
__attribute__((target("avx2,fma"))) std::vector<float> Apply8(const std::vector<float>& in, F f) {
  std::vector<float> out(in.size());
  for (size_t i = 0; i < in.size(); i += 8) _mm256_storeu_ps(out.data() + i, f(_mm256_loadu_ps(in.data() + i)));
  return out;
}

struct Exp8Fn {
  __attribute__((target("avx2,fma"))) __m256 operator()(__m256 x) const { return Exp(x); }
};
struct Silu8Fn {
  __attribute__((target("avx2,fma"))) __m256 operator()(__m256 x) const { return Silu(x); }
};

// Every 1/64 from -103 to 88.5 plus the ends of the clamped range.
std::vector<float> Grid() {
  std::vector<float> x;
  for (int i = -103 * 64; i <= 88 * 64 + 32; ++i) x.push_back(static_cast<float>(i) / 64.0f);
  x.push_back(-1e30f);
  x.push_back(1e30f);
  while (x.size() % 16 != 0) x.push_back(0.0f);
  return x;
}

TEST(SimdMath, ExpIsWithinTwoUlpOfExpf) {
  if (!HasAvx512f()) GTEST_SKIP() << "no AVX-512F";
  const std::vector<float> x = Grid(), y = Apply(x, ExpFn{});
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(std::min(x[i], 88.7f)));
    if (want < std::numeric_limits<float>::min()) {  // denormal or zero: absolute error below the smallest normal
      EXPECT_LE(std::fabs(y[i]), std::numeric_limits<float>::min()) << "x = " << x[i];
      continue;
    }
    EXPECT_LE(std::fabs(y[i] - want) / want, 2.5e-7) << "x = " << x[i] << ": " << y[i] << " vs " << want;
  }
}

TEST(SimdMath, SiluMatchesTheDefinitionAndStaysFinite) {
  if (!HasAvx512f()) GTEST_SKIP() << "no AVX-512F";
  const std::vector<float> x = Grid(), y = Apply(x, SiluFn{});
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << "x = " << x[i];
    const double xd = x[i], want = xd / (1.0 + std::exp(-xd));
    EXPECT_LE(std::fabs(y[i] - want), 1e-6 * std::max(1.0, std::fabs(want))) << "x = " << x[i];
  }
}

// AVX2: within 2 ulp of expf over [-87, 88]; outside, the clamped range's ends (no denormals, no inf).
TEST(SimdMath, Avx2ExpIsWithinTwoUlpOfExpfAndSaturates) {
  if (!HasAvx2Fma()) GTEST_SKIP() << "no AVX2 with FMA";
  const std::vector<float> x = Grid(), y = Apply8(x, Exp8Fn{});
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(std::clamp(static_cast<double>(x[i]), -87.0, 88.0));
    EXPECT_LE(std::fabs(y[i] - want) / want, 2.5e-7) << "x = " << x[i] << ": " << y[i] << " vs " << want;
  }
}

TEST(SimdMath, Avx2SiluMatchesTheDefinitionAndStaysFinite) {
  if (!HasAvx2Fma()) GTEST_SKIP() << "no AVX2 with FMA";
  const std::vector<float> x = Grid(), y = Apply8(x, Silu8Fn{});
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << "x = " << x[i];
    const double xd = x[i], want = xd / (1.0 + std::exp(-xd));
    EXPECT_LE(std::fabs(y[i] - want), 1e-6 * std::max(1.0, std::fabs(want))) << "x = " << x[i];
  }
}

#else

TEST(SimdMath, NotAnX86Build) { GTEST_SKIP() << "the SIMD kernels are x86-64 only"; }

#endif

}  // namespace
}  // namespace clipserve::simd
