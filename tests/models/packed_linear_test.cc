#include "server/models/packed_linear.h"

#include "server/models/linear.h"

#include <string>
#include <tuple>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include "gtest/gtest.h"
#include "tests/testing/tensor_testing.h"

namespace clipserve {
namespace {

using ::clipserve::testing::RelativeError;

// Runs the packed GEMM with `isa` while in scope (skipping the test where this CPU has not got it), then puts
// back what the process ran before.
class ScopedIsa {
 public:
  explicit ScopedIsa(PackedIsa isa) : before_(PackedGemmIsa()), ok_(SetPackedGemmIsa(isa)) {}
  ~ScopedIsa() { SetPackedGemmIsa(before_); }
  bool ok() const { return ok_; }

 private:
  const PackedIsa before_;
  const bool ok_;
};

// Every test below runs once per kernel family: AVX-512 and AVX2 (each skipped where the CPU lacks it).
const auto kIsas = ::testing::Values(PackedIsa::kAvx512, PackedIsa::kAvx2);

#define CLIPSERVE_USE_ISA(isa)                                                                      \
  ScopedIsa scoped_isa(isa);                                                                        \
  if (!scoped_isa.ok()) GTEST_SKIP() << "this CPU cannot run the " << PackedIsaName(isa) << " kernel"

using Shape = std::tuple<int64_t, int64_t, int64_t>;  // rows m, outputs n, inputs k
class PackedLinearTest : public ::testing::TestWithParam<std::tuple<PackedIsa, Shape>> {};
class PackedLinearIsaTest : public ::testing::TestWithParam<PackedIsa> {};

// Shapes around every blocking edge: rows per kernel (12) and per pass (512), panel width (32), depth per pass
// (256, where the last panel prefetches the first one a pass deeper), and the ViT-B/32 batch-1 shapes.
TEST_P(PackedLinearTest, MatchesAddmm) {
  CLIPSERVE_USE_ISA(std::get<0>(GetParam()));
  const auto [m, n, k] = std::get<1>(GetParam());
  at::manual_seed(m * 1000003 + n * 1009 + k);
  const at::Tensor x = at::randn({m, k}), w = at::randn({n, k}), b = at::randn({n});
  const PackedWeight packed(w);
  ASSERT_EQ(packed.rows(), n);
  ASSERT_EQ(packed.columns(), k);
  c10::InferenceMode guard;
  EXPECT_LE(RelativeError(PackedLinear(x, packed, b), at::addmm(b, x, w.t())), 1e-5);
  EXPECT_LE(RelativeError(PackedLinear(x, packed, at::Tensor()), at::mm(x, w.t())), 1e-5);
  EXPECT_LE(RelativeError(PackedLinear(x, packed, b, 1.702, 0.5), at::addmm(b, x, w.t(), 0.5, 1.702)), 1e-5);
  EXPECT_LE(RelativeError(PackedLinear(x, packed, b, 1.702, 0.5, Epilogue::kSilu),
                          at::silu(at::addmm(b, x, w.t(), 0.5, 1.702))),
            1e-5);
}

std::string ShapeName(const ::testing::TestParamInfo<PackedLinearTest::ParamType>& info) {
  const auto [m, n, k] = std::get<1>(info.param);
  return std::string(PackedIsaName(std::get<0>(info.param))) + "_" + std::to_string(m) + "x" + std::to_string(n) + "x" +
         std::to_string(k);
}

// (The AVX2 kernel's edges: 6 rows per call and 16-column halves; 7 × 17 and 13 × 33 cross them too.)
INSTANTIATE_TEST_SUITE_P(
    Shapes, PackedLinearTest,
    ::testing::Combine(kIsas, ::testing::ValuesIn(std::vector<Shape>{
                                  {1, 1, 1}, {1, 768, 768}, {7, 17, 5}, {12, 32, 256}, {13, 33, 257},
                                  {50, 2304, 768}, {50, 768, 3072}, {193, 100, 300}, {400, 64, 513}, {3, 48, 40},
                                  {513, 40, 300}, {1030, 70, 260}, {6, 16, 9}, {5, 24, 64},
                                  // Either side of the switch from splitting panels to rows.
                                  {199, 70, 260}, {200, 70, 260}, {201, 2304, 768}})),
    ShapeName);

TEST_P(PackedLinearIsaTest, ReadsRowStridedInput) {
  CLIPSERVE_USE_ISA(GetParam());
  const at::Tensor wide = at::randn({20, 100}), w = at::randn({40, 60});
  const at::Tensor x = wide.narrow(1, 10, 60);  // row stride 100
  ASSERT_FALSE(x.is_contiguous());
  EXPECT_LE(RelativeError(PackedLinear(x, PackedWeight(w), at::Tensor()), at::mm(x, w.t())), 1e-5);
  // Enough rows to be split by rows between threads.
  const at::Tensor tall = at::randn({300, 100}).narrow(1, 10, 60);
  EXPECT_LE(RelativeError(PackedLinear(tall, PackedWeight(w), at::Tensor()), at::mm(tall, w.t())), 1e-5);
}

TEST_P(PackedLinearIsaTest, SameResultOnOneThreadAndInsideAParallelRegion) {
  CLIPSERVE_USE_ISA(GetParam());
  const at::Tensor x = at::randn({50, 128}), w = at::randn({96, 128}), b = at::randn({96});
  const PackedWeight packed(w);
  const at::Tensor whole = PackedLinear(x, packed, b);
  at::Tensor inside;
  at::parallel_for(0, 1, 1, [&](int64_t, int64_t) { inside = PackedLinear(x, packed, b); });
  // Each output element is the same dot product in the same order however the panels are split.
  EXPECT_TRUE(at::equal(whole, inside));
}

TEST_P(PackedLinearIsaTest, EmptyInputGivesEmptyOutput) {
  CLIPSERVE_USE_ISA(GetParam());
  const at::Tensor out = PackedLinear(at::empty({0, 16}), PackedWeight(at::randn({8, 16})), at::Tensor());
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{0, 8}));
}

TEST_P(PackedLinearIsaTest, NoInputFeaturesLeaveTheBiasTerm) {
  CLIPSERVE_USE_ISA(GetParam());
  const PackedWeight packed(at::empty({5, 0}));
  const at::Tensor b = at::randn({5});
  EXPECT_TRUE(at::allclose(PackedLinear(at::empty({3, 0}), packed, b, 2.0, 0.5), (b * 0.5).expand({3, 5})));
  EXPECT_TRUE(at::equal(PackedLinear(at::empty({3, 0}), packed, at::Tensor()), at::zeros({3, 5})));
}

TEST_P(PackedLinearIsaTest, RejectsMismatchedShapes) {
  CLIPSERVE_USE_ISA(GetParam());
  const PackedWeight packed(at::randn({8, 16}));
  EXPECT_THROW(PackedLinear(at::randn({4, 15}), packed, at::Tensor()), c10::Error);
  EXPECT_THROW(PackedLinear(at::randn({4, 16}), packed, at::randn({7})), c10::Error);
  EXPECT_THROW(PackedLinear(at::randn({4, 16}).to(at::kDouble), packed, at::Tensor()), c10::Error);
  EXPECT_THROW(PackedWeight(at::randn({8, 16}).to(at::kHalf)), c10::Error);
}

// Linear(x, w, packed, b) must be exactly the packed kernel for inference up to the row limit, exactly BLAS
// above it, and differentiable (BLAS) under autograd.
TEST_P(PackedLinearIsaTest, LinearChoosesThePathByModeAndRows) {
  CLIPSERVE_USE_ISA(GetParam());
  const at::Tensor w = at::randn({64, 96}), b = at::randn({64});
  const PackedWeight packed(w);
  {
    c10::InferenceMode guard;
    const int64_t limit = PackedLinearMaxRows();
    ASSERT_EQ(limit, GetParam() == PackedIsa::kAvx2 ? kPackedLinearMaxRowsAvx2 : kPackedLinearMaxRows);
    const at::Tensor small = at::randn({limit, 96}), large = at::randn({limit + 1, 96});
    EXPECT_TRUE(at::equal(Linear(small, w, &packed, b), PackedLinear(small, packed, b)));
    EXPECT_TRUE(at::equal(Linear(large, w, &packed, b), Linear(large, w, b)));
  }
  const at::Tensor x = at::randn({8, 96}).requires_grad_(true);
  const at::Tensor y = Linear(x, w, &packed, b);
  ASSERT_TRUE(y.requires_grad());
  y.sum().backward();
  EXPECT_LE(RelativeError(x.grad(), w.sum(0).expand({8, 96})), 1e-5);
}

// The silu epilogue: fused into the packed kernel for inference, a separate pass on BLAS's result above the row
// limit and without a packed copy, out of place (differentiable) under autograd.
TEST_P(PackedLinearIsaTest, LinearAppliesTheSiluEpilogueOnEveryPath) {
  CLIPSERVE_USE_ISA(GetParam());
  const at::Tensor w = at::randn({64, 96}), b = at::randn({64});
  const PackedWeight packed(w);
  auto expected = [&](const at::Tensor& x) { return at::silu(at::addmm(b, x, w.t(), 0.5, 2.0)); };
  {
    c10::InferenceMode guard;
    const at::Tensor small = at::randn({40, 96}), large = at::randn({PackedLinearMaxRows() + 1, 96});
    EXPECT_LE(RelativeError(Linear(small, w, &packed, b, 2.0, 0.5, Epilogue::kSilu), expected(small)), 1e-5);
    EXPECT_LE(RelativeError(Linear(large, w, &packed, b, 2.0, 0.5, Epilogue::kSilu), expected(large)), 1e-5);
    EXPECT_LE(RelativeError(Linear(small, w, nullptr, b, 2.0, 0.5, Epilogue::kSilu), expected(small)), 1e-5);
  }
  const at::Tensor x = at::randn({8, 96}).requires_grad_(true);
  const at::Tensor y = Linear(x, w, &packed, b, 2.0, 0.5, Epilogue::kSilu);
  ASSERT_TRUE(y.requires_grad());
  EXPECT_LE(RelativeError(y.detach(), expected(x.detach())), 1e-5);
  y.sum().backward();
  const at::Tensor xr = x.detach().clone().requires_grad_(true);
  expected(xr).sum().backward();
  EXPECT_LE(RelativeError(x.grad(), xr.grad()), 1e-5);
}

// Outputs far into silu's tails: large positive values pass through, large negative ones go to (minus) zero,
// nothing overflows to inf or NaN.
TEST_P(PackedLinearIsaTest, SiluEpilogueHandlesLargeMagnitudes) {
  CLIPSERVE_USE_ISA(GetParam());
  const at::Tensor x = at::ones({3, 4}), w = at::eye(4), b = at::tensor({1e4f, -1e4f, 90.0f, -90.0f});
  c10::InferenceMode guard;
  const at::Tensor y = PackedLinear(x, PackedWeight(w), b, 1.0, 1.0, Epilogue::kSilu);
  ASSERT_TRUE(at::isfinite(y).all().item<bool>()) << y;
  EXPECT_LE(RelativeError(y, at::silu(at::addmm(b, x, w.t()))), 1e-6) << y;
}

INSTANTIATE_TEST_SUITE_P(Kernels, PackedLinearIsaTest, kIsas,
                         [](const auto& info) { return std::string(PackedIsaName(info.param)); });

// Where neither kernel may run, a prepacked projection falls back to BLAS rather than failing.
TEST(PackedLinear, LinearFallsBackToBlasWhenThePackedGemmIsOff) {
  if (!PackedGemmAvailable()) GTEST_SKIP() << "no packed kernel on this CPU: every call is already BLAS";
  const at::Tensor x = at::randn({8, 96}), w = at::randn({64, 96}), b = at::randn({64});
  const PackedWeight packed(w);
  ScopedIsa off(PackedIsa::kNone);
  ASSERT_TRUE(off.ok());
  c10::InferenceMode guard;
  EXPECT_TRUE(at::equal(Linear(x, w, &packed, b), Linear(x, w, b)));
  EXPECT_THROW(PackedLinear(x, packed, b), c10::Error);
}

}  // namespace
}  // namespace clipserve
