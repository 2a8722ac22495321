// LayoutPrior: the pair counts and their energies, the soft energy's gradient, saving and loading, bad input.
#include "server/generation/layout_prior.h"

#include <cmath>
#include <filesystem>
#include <string>

#include <ATen/ATen.h>
#include <torch/optim/sgd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/tensor_io.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::generation {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;

// Four codes at the corners of a square of side 2 (nearest-neighbour squared distance 4).
at::Tensor SquareCodebook() { return at::tensor({0.f, 0.f, 2.f, 0.f, 0.f, 2.f, 2.f, 2.f}).view({4, 2}); }

// [N, 4, 4] layouts: the left half code 0 and the right half code 1 (vertical stripes of two codes).
at::Tensor HalvesLayouts(int n) {
  at::Tensor codes = at::zeros({n, 4, 4}, at::kLong);
  codes.narrow(2, 2, 2).fill_(1);
  return codes;
}

fs::path TempFile(const std::string& name) {
  return ::clipserve::testing::ScratchFile(name);
}

TEST(LayoutPriorTest, CodeEnergyIsTheMeanNegativeLogOfTheSmoothedPairFrequencies) {
  auto prior = LayoutPrior::Fit(HalvesLayouts(10), SquareCodebook(), {.smoothing = 0.5});
  ASSERT_THAT(prior, IsOk());
  EXPECT_EQ((*prior)->n_embed(), 4);
  // Only codes 0 and 1 occur; each is 2 from its nearest other code: temperature 4.
  EXPECT_DOUBLE_EQ((*prior)->temperature(), 4.0);
  // Horizontal pairs per layout (4 rows × 3): 4 × (0,0), 4 × (0,1), 4 × (1,1); over 10 layouts 40 each, plus 0.5
  // for each of the 16 pairs: total 128. Vertical pairs (3 × 4 columns): 6 × (0,0), 6 × (1,1) → 60 each, 128.
  const double h00 = 40.5 / 128, h01 = 40.5 / 128, h10 = 0.5 / 128;
  const double v00 = 60.5 / 128, v11 = 60.5 / 128;
  // The fitted layout: horizontal mean over 12 pairs, vertical over 12, then the two averaged.
  const double seen = ((-4 * std::log(h00) - 4 * std::log(h01) - 4 * std::log(h00)) / 12 +
                       (-6 * std::log(v00) - 6 * std::log(v11)) / 12) /
                      2;
  EXPECT_NEAR((*prior)->CodeEnergy(HalvesLayouts(1)).item<double>(), seen, 1e-5);
  // Its mirror image has (1,0) pairs across the middle, which the prior never saw.
  const at::Tensor mirrored = HalvesLayouts(1).flip({2});
  const double unseen =
      ((-8 * std::log(h00) - 4 * std::log(h10)) / 12 + (-6 * std::log(v00) - 6 * std::log(v11)) / 12) / 2;
  EXPECT_NEAR((*prior)->CodeEnergy(mirrored).item<double>(), unseen, 1e-5);
  EXPECT_GT(unseen, seen);
  // A checkerboard of the two codes: every pair is (0,1) or (1,0), vertically never seen.
  const at::Tensor board = (at::arange(4).view({4, 1}) + at::arange(4).view({1, 4})).remainder(2).unsqueeze(0);
  EXPECT_GT((*prior)->CodeEnergy(board).item<double>(), unseen);
}

// Descending the soft energy moves a latent's nearest codes to a layout the prior has seen.
TEST(LayoutPriorTest, DescendingTheEnergyTurnsALayoutIntoOneThePriorKnows) {
  const at::Tensor codebook = SquareCodebook();
  auto prior = LayoutPrior::Fit(HalvesLayouts(10), codebook, {.smoothing = 0.01});
  ASSERT_THAT(prior, IsOk());
  // Start from the left half right and the right half a checkerboard of codes 0 and 1, a little off the codes.
  at::Tensor codes = HalvesLayouts(1);
  codes.narrow(2, 2, 2).copy_((at::arange(4).view({4, 1}) + at::arange(2).view({1, 2})).remainder(2));
  const at::Tensor start = codebook.index_select(0, codes.reshape(-1)).view({1, 4, 4, 2}).permute({0, 3, 1, 2});
  at::Tensor z = (start + 0.1).clone().set_requires_grad(true);
  const double before = (*prior)->Energy(z, codebook).item<double>();
  torch::optim::SGD sgd({z}, torch::optim::SGDOptions(0.5));
  for (int i = 0; i < 200; ++i) {
    sgd.zero_grad();
    const at::Tensor e = (*prior)->Energy(z, codebook).sum();
    e.backward();
    sgd.step();
  }
  EXPECT_LT((*prior)->Energy(z, codebook).item<double>(), before);
  const at::Tensor zf = z.detach().permute({0, 2, 3, 1}).reshape({-1, 2});
  const at::Tensor nearest = std::get<1>(at::cdist(zf, codebook).min(1)).view({1, 4, 4});
  EXPECT_LT((*prior)->CodeEnergy(nearest).item<double>(), (*prior)->CodeEnergy(codes).item<double>());
  // Every row now reads as the data's rows do: 0s, then 1s.
  for (int64_t r = 0; r < 4; ++r) {
    const at::Tensor row = nearest[0][r];
    EXPECT_TRUE(at::equal(row, std::get<0>(row.sort()))) << row;
  }
}

TEST(LayoutPriorTest, SaveAndLoadKeepTheEnergies) {
  auto prior = LayoutPrior::Fit(HalvesLayouts(3), SquareCodebook());
  ASSERT_THAT(prior, IsOk());
  const fs::path path = TempFile("roundtrip.safetensors");
  ASSERT_THAT((*prior)->Save(path), IsOk());
  auto loaded = LayoutPrior::Load(path);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->n_embed(), 4);
  EXPECT_DOUBLE_EQ((*loaded)->temperature(), (*prior)->temperature());
  const at::Tensor z = at::randn({2, 2, 4, 4});
  EXPECT_TRUE(at::allclose((*loaded)->Energy(z, SquareCodebook()), (*prior)->Energy(z, SquareCodebook())));
  fs::remove(path);
}

TEST(LayoutPriorTest, RejectsBadInputAndBadFiles) {
  const at::Tensor codebook = SquareCodebook();
  EXPECT_THAT(LayoutPrior::Fit(HalvesLayouts(1).to(at::kFloat), codebook),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("integers")));
  EXPECT_THAT(LayoutPrior::Fit(at::zeros({1, 1, 4}, at::kLong), codebook),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("h >= 2")));
  EXPECT_THAT(LayoutPrior::Fit(HalvesLayouts(1) + 3, codebook),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[0, 4)")));
  EXPECT_THAT(LayoutPrior::Fit(HalvesLayouts(1), codebook, {.smoothing = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("smoothing")));
  EXPECT_THAT(LayoutPrior::Fit(HalvesLayouts(1), at::zeros({4})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("codebook")));

  const fs::path path = TempFile("bad.safetensors");
  ASSERT_THAT(SaveTensors(path, {{"horizontal", at::ones({4, 4})}, {"temperature", at::ones({1})}}), IsOk());
  EXPECT_THAT(LayoutPrior::Load(path), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'vertical'")));
  ASSERT_THAT(
      SaveTensors(path,
                  {{"horizontal", at::ones({4, 4})}, {"vertical", at::ones({3, 3})}, {"temperature", at::ones({1})}}),
      IsOk());
  EXPECT_THAT(LayoutPrior::Load(path), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[K, K]")));
  fs::remove(path);
  EXPECT_FALSE(LayoutPrior::Load(TempFile("missing.safetensors")).ok());
}

}  // namespace
}  // namespace clipserve::generation
