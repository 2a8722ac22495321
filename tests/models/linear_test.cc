// Linear(): the split GEMM paths give what a plain addmm gives, values and gradients.
#include "server/models/linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include "gtest/gtest.h"
#include "tests/testing/tensor_testing.h"

namespace clipserve {
namespace {

using ::clipserve::testing::RelativeError;

// Two pool threads and shapes above the split threshold (130 · 96 · 100 multiply-adds > 2^20).
class LinearTest : public ::testing::Test {
 protected:
  void SetUp() override {
    threads_ = at::get_num_threads();
    at::set_num_threads(2);
    at::manual_seed(3);
    x_ = at::randn({130, 96});
    w_ = at::randn({100, 96}) / 10;
    b_ = at::randn({100});
  }
  void TearDown() override {
    at::set_num_threads(threads_);
    SetLinearSplitUnderAutograd(true);
  }

  // Linear's output and x's gradient for sum(y · r), split under autograd or not.
  std::pair<at::Tensor, at::Tensor> Run(bool split, const at::Tensor& bias, double alpha, double beta) {
    SetLinearSplitUnderAutograd(split);
    const at::Tensor x = x_.clone().requires_grad_(true);
    const at::Tensor y = Linear(x, w_, bias, alpha, beta);
    const at::Tensor r = at::linspace(-1, 1, y.numel()).view(y.sizes());
    (y * r).sum().backward();
    return {y.detach(), x.grad()};
  }

  int threads_ = 1;
  at::Tensor x_, w_, b_;
};

TEST_F(LinearTest, SplitUnderAutogradMatchesAddmmValuesAndGradients) {
  for (const bool with_bias : {true, false}) {
    for (const double alpha : {1.0, 1.702}) {
      const at::Tensor bias = with_bias ? b_ : at::Tensor();
      const auto [y_split, g_split] = Run(true, bias, alpha, 0.5);
      const auto [y_plain, g_plain] = Run(false, bias, alpha, 0.5);
      EXPECT_LE(RelativeError(y_split, y_plain), 1e-6) << "bias " << with_bias << " alpha " << alpha;
      ASSERT_TRUE(g_split.defined());
      EXPECT_LE(RelativeError(g_split, g_plain), 1e-6) << "bias " << with_bias << " alpha " << alpha;
      const at::Tensor expected = with_bias ? at::addmm(b_, x_, w_.t(), 0.5, alpha) : at::mm(x_, w_.t()) * alpha;
      EXPECT_LE(RelativeError(y_split, expected), 1e-6);
    }
  }
}

TEST_F(LinearTest, TrainableWeightsStillGetTheirGradients) {
  const at::Tensor x = x_.clone().requires_grad_(true);
  const at::Tensor w = w_.clone().requires_grad_(true);
  const at::Tensor b = b_.clone().requires_grad_(true);
  Linear(x, w, b).pow(2).sum().backward();
  ASSERT_TRUE(w.grad().defined());
  ASSERT_TRUE(b.grad().defined());
  const at::Tensor y = at::addmm(b_, x_, w_.t());
  EXPECT_LE(RelativeError(w.grad(), 2 * at::mm(y.t(), x_)), 1e-5);
  EXPECT_LE(RelativeError(b.grad(), 2 * y.sum(0)), 1e-5);
  EXPECT_LE(RelativeError(x.grad(), 2 * at::mm(y, w_)), 1e-5);
}

// Second derivatives (create_graph) go through the plain, differentiable backward.
TEST_F(LinearTest, SecondDerivativesThroughTheSplitPath) {
  auto hessian_vector = [&](bool split) {
    SetLinearSplitUnderAutograd(split);
    const at::Tensor x = x_.clone().requires_grad_(true);
    const at::Tensor loss = Linear(x, w_, b_).tanh().sum();
    const at::Tensor g = torch::autograd::grad({loss}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
    (g * g).sum().backward();
    return x.grad();
  };
  const at::Tensor split = hessian_vector(true);
  ASSERT_TRUE(split.defined());
  EXPECT_LE(RelativeError(split, hessian_vector(false)), 1e-5);
}

TEST_F(LinearTest, InferenceSplitMatchesAddmm) {
  at::NoGradGuard no_grad;
  EXPECT_LE(RelativeError(Linear(x_, w_, b_, 2.0, 0.25), at::addmm(b_, x_, w_.t(), 0.25, 2.0)), 1e-6);
}

}  // namespace
}  // namespace clipserve
