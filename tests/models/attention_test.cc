#include "server/models/attention.h"

#include <tuple>

#include <c10/core/InferenceMode.h>

#include "gtest/gtest.h"
#include "tests/testing/tensor_testing.h"

namespace clipserve {
namespace {

using ::clipserve::testing::RelativeError;

// (batch, len, heads, head dim, causal)
class SelfAttentionTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>> {};

// The inference path (per-head BLAS calls and clipserve's own softmax) against the autograd path (torch's
// scaled-dot-product attention) on the same fused qkv rows; lengths around the 16-wide vector steps.
TEST_P(SelfAttentionTest, InferencePathMatchesTorch) {
  const auto [batch, len, heads, hd, causal] = GetParam();
  at::manual_seed(batch * 1000 + len * 10 + heads);
  const at::Tensor qkv = at::randn({batch * len, 3 * heads * hd}) * 2.0;
  const at::Tensor reference = SelfAttention(qkv.requires_grad_(true), batch, len, heads, causal).detach();
  at::Tensor fast;
  {
    c10::InferenceMode guard;
    fast = SelfAttention(qkv.detach(), batch, len, heads, causal);
  }
  ASSERT_EQ(fast.sizes(), reference.sizes());
  EXPECT_LE(RelativeError(fast, reference), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SelfAttentionTest,
                         ::testing::Values(std::make_tuple(1, 1, 1, 8, false), std::make_tuple(2, 15, 2, 16, false),
                                           std::make_tuple(2, 16, 2, 16, true), std::make_tuple(3, 17, 4, 8, true),
                                           std::make_tuple(8, 50, 12, 64, false),
                                           std::make_tuple(2, 77, 8, 64, true), std::make_tuple(1, 33, 3, 5, false)));

}  // namespace
}  // namespace clipserve
