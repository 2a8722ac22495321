#include "server/models/attention.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>

#include "gtest/gtest.h"
#include "server/models/cpu_threads.h"
#include "tests/testing/tensor_testing.h"

namespace clipserve {
namespace {

using ::clipserve::testing::RelativeError;

// (batch, len, heads, head dim, causal)
class SelfAttentionTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>> {};

// Torch's scaled-dot-product attention under autograd (the path SetAttentionSplitUnderAutograd(false) takes).
at::Tensor TorchPath(const at::Tensor& qkv, int64_t batch, int64_t len, int64_t heads, bool causal) {
  SetAttentionSplitUnderAutograd(false);
  at::Tensor out = SelfAttention(qkv, batch, len, heads, causal);
  SetAttentionSplitUnderAutograd(true);
  return out;
}

// The inference path (per-head BLAS calls and clipserve's own softmax) against torch's scaled-dot-product
// attention on the same fused qkv rows; lengths around the 16-wide vector steps.
TEST_P(SelfAttentionTest, InferencePathMatchesTorch) {
  const auto [batch, len, heads, hd, causal] = GetParam();
  at::manual_seed(batch * 1000 + len * 10 + heads);
  const at::Tensor qkv = at::randn({batch * len, 3 * heads * hd}) * 2.0;
  const at::Tensor reference = TorchPath(qkv.clone().requires_grad_(true), batch, len, heads, causal).detach();
  at::Tensor fast;
  {
    c10::InferenceMode guard;
    fast = SelfAttention(qkv.detach(), batch, len, heads, causal);
  }
  ASSERT_EQ(fast.sizes(), reference.sizes());
  EXPECT_LE(RelativeError(fast, reference), 1e-5);
}

// The autograd path (the same per-head tasks, forward and backward) against torch's: values and the gradient
// of a random upstream gradient with respect to every q, k and v entry.
TEST_P(SelfAttentionTest, AutogradPathMatchesTorch) {
  const auto [batch, len, heads, hd, causal] = GetParam();
  at::manual_seed(batch * 1000 + len * 10 + heads + 1);
  const at::Tensor qkv = at::randn({batch * len, 3 * heads * hd}) * 2.0;
  const at::Tensor upstream = at::randn({batch * len, heads * hd});
  const at::Tensor a = qkv.clone().requires_grad_(true), b = qkv.clone().requires_grad_(true);
  const at::Tensor split = SelfAttention(a, batch, len, heads, causal);
  const at::Tensor torch = TorchPath(b, batch, len, heads, causal);
  ASSERT_NE(split.grad_fn(), nullptr);
  EXPECT_NE(split.grad_fn()->name(), torch.grad_fn()->name());  // the two paths really differ
  EXPECT_LE(RelativeError(split.detach(), torch.detach()), 1e-5);
  split.backward(upstream);
  torch.backward(upstream);
  EXPECT_LE(RelativeError(a.grad(), b.grad()), 1e-5);
}

// Under create_graph the gradient stays differentiable: second derivatives equal torch's.
TEST_P(SelfAttentionTest, SecondDerivativesMatchTorch) {
  const auto [batch, len, heads, hd, causal] = GetParam();
  at::manual_seed(batch * 1000 + len * 10 + heads + 2);
  const at::Tensor qkv = at::randn({batch * len, 3 * heads * hd});
  const at::Tensor upstream = at::randn({batch * len, heads * hd});
  auto second = [&](bool split) {
    const at::Tensor x = qkv.clone().requires_grad_(true);
    const at::Tensor out =
        split ? SelfAttention(x, batch, len, heads, causal) : TorchPath(x, batch, len, heads, causal);
    const at::Tensor g = torch::autograd::grad({(out * upstream).sum()}, {x}, {}, true, true)[0];
    return torch::autograd::grad({g.pow(2).sum()}, {x})[0];
  };
  // allclose, not RelativeError: at length 1 the output is v and both second derivatives are zero.
  EXPECT_TRUE(at::allclose(second(true), second(false), 1e-4, 1e-5));
}

INSTANTIATE_TEST_SUITE_P(Shapes, SelfAttentionTest,
                         ::testing::Values(std::make_tuple(1, 1, 1, 8, false), std::make_tuple(2, 15, 2, 16, false),
                                           std::make_tuple(2, 16, 2, 16, true), std::make_tuple(3, 17, 4, 8, true),
                                           std::make_tuple(8, 50, 12, 64, false), std::make_tuple(2, 77, 8, 64, true),
                                           std::make_tuple(1, 33, 3, 5, false)));

// With BLAS allowed several threads (trainers; a server configured so), the per-head tasks run one after another so
// that OpenBLAS's threaded GEMMs are not called from several pool threads at once (which queues them for its one
// thread server: a patch-4 ViT's training step ran 3.6x slower). That path's values and gradients against torch's,
// at a length whose per-head GEMMs OpenBLAS does thread (len² · head size above its 262,144 threshold).
TEST(SelfAttentionBlasThreadsTest, SerialTasksUnderThreadedBlasMatchTorch) {
  const int intra_op_before = at::get_num_threads(), blas_before = BlasThreads();
  ConfigureCpuThreads({.intra_op_threads = 2, .blas_threads = 2});
  const int64_t batch = 2, len = 197, heads = 3, hd = 64;
  at::manual_seed(7);
  const at::Tensor qkv = at::randn({batch * len, 3 * heads * hd});
  const at::Tensor upstream = at::randn({batch * len, heads * hd});
  const at::Tensor a = qkv.clone().requires_grad_(true), b = qkv.clone().requires_grad_(true);
  const at::Tensor split = SelfAttention(a, batch, len, heads, false);
  const at::Tensor torch = TorchPath(b, batch, len, heads, false);
  at::Tensor inference;
  {
    c10::InferenceMode guard;
    inference = SelfAttention(qkv, batch, len, heads, false);
  }
  split.backward(upstream);
  torch.backward(upstream);
  ConfigureCpuThreads({.intra_op_threads = intra_op_before, .blas_threads = std::max(blas_before, 1)});
  EXPECT_LE(RelativeError(split.detach(), torch.detach()), 1e-5);
  EXPECT_LE(RelativeError(inference, torch.detach()), 1e-5);
  EXPECT_LE(RelativeError(a.grad(), b.grad()), 1e-5);
}

// The softmax reads nothing outside its matrix, held here in a buffer of exactly its size. Under the sanitizer
// build (-DCLIPSERVE_SANITIZE=address) a read past the end fails the test: the max pass loaded 16 floats for a
// row's tail, past the buffer's end on the last row. (Optimised builds fold that load into a masked vmaxps,
// which suppresses the fault, so only ASan saw it; unfolded, it could cross into an unmapped page.) Values
// against torch's softmax, for lengths around the 16-wide vector steps.
// Every kernel family runs (each where the CPU has it), at lengths around the 8- and 16-wide steps.
class AttentionSoftmaxRowsTest : public ::testing::TestWithParam<simd::Isa> {
 protected:
  void SetUp() override {
    if (!SetAttentionSoftmaxIsa(GetParam())) GTEST_SKIP() << "this CPU does not run " << simd::IsaName(GetParam());
  }
  void TearDown() override { SetAttentionSoftmaxIsa(before_); }

 private:
  const simd::Isa before_ = AttentionSoftmaxIsa();
};

TEST_P(AttentionSoftmaxRowsTest, StaysInsideTheMatrixAndMatchesTorch) {
  for (const int len : {1, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 50, 77}) {
    for (const bool causal : {false, true}) {
      const at::Tensor scores = at::randn({len, len}) * 3.0;
      std::vector<float> s(scores.data_ptr<float>(), scores.data_ptr<float>() + scores.numel());

      AttentionSoftmaxRows(s.data(), len, causal);

      const at::Tensor masked =
          causal ? scores.masked_fill(at::ones({len, len}, at::kBool).triu(1), -INFINITY) : scores;
      const at::Tensor expected = at::softmax(masked, 1);
      const at::Tensor got = at::from_blob(s.data(), {len, len}, at::kFloat).clone();
      EXPECT_TRUE(at::allclose(got, expected, 1e-5, 1e-6)) << "len " << len << " causal " << causal;
    }
  }
}

// Scores far below a row's maximum (a masked or saturated logit): their weight is (next to) 0 and the row still
// sums to 1, in every family — AVX2's Exp stops at e^-87 rather than reaching 0.
TEST_P(AttentionSoftmaxRowsTest, FarBelowTheMaximumWeighsNothing) {
  const int len = 19;
  std::vector<float> s(len * len, -1e4f);
  for (int i = 0; i < len; ++i) s[i * len + i] = 0.0f;

  AttentionSoftmaxRows(s.data(), len, false);

  for (int i = 0; i < len; ++i) {
    EXPECT_FLOAT_EQ(s[i * len + i], 1.0f) << "row " << i;
    for (int j = 0; j < len; ++j) {
      if (j == i) continue;
      EXPECT_LT(s[i * len + j], 1e-30f) << "row " << i << " column " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, AttentionSoftmaxRowsTest,
                         ::testing::Values(simd::Isa::kNone, simd::Isa::kAvx2, simd::Isa::kAvx512),
                         [](const ::testing::TestParamInfo<simd::Isa>& info) { return simd::IsaName(info.param); });

}  // namespace
}  // namespace clipserve
