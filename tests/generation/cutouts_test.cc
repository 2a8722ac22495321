#include "server/generation/cutouts.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/autograd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::generation {
namespace {

using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

CutoutOptions Small() {
  CutoutOptions o;
  o.cutn = 6;
  o.cut_size = 16;
  return o;
}

CutoutOptions Plain() {
  CutoutOptions o = Small();
  o.augment = false;
  o.noise_max = 0;
  return o;
}

at::Tensor Image(uint64_t seed, int64_t batch = 1, int64_t size = 32) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::rand({batch, 3, size, size}, gen);
}

at::Tensor Cutouts(const at::Tensor& x, const CutoutOptions& o, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return MakeCutouts(x, o, gen);
}

TEST(MakeCutoutsTest, ReturnsImageMajorCutoutsOfCutSize) {
  const at::Tensor x = at::cat({at::zeros({1, 3, 32, 24}), at::ones({1, 3, 32, 24})}, 0);
  const at::Tensor out = Cutouts(x, Plain(), 1);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{2 * 6, 3, 16, 16}));
  EXPECT_TRUE(at::equal(out.narrow(0, 0, 6), at::zeros({6, 3, 16, 16})));
  EXPECT_TRUE(at::equal(out.narrow(0, 6, 6), at::ones({6, 3, 16, 16})));
}

TEST(MakeCutoutsTest, SameSeedGivesSameCutoutsAndOtherSeedDifferentOnes) {
  const at::Tensor x = Image(1);
  const at::Tensor a = Cutouts(x, Small(), 42);
  EXPECT_TRUE(at::equal(a, Cutouts(x, Small(), 42)));
  EXPECT_FALSE(at::equal(a, Cutouts(x, Small(), 43)));
  EXPECT_FALSE(at::equal(Cutouts(x, Plain(), 42), Cutouts(x, Plain(), 43)));
}

TEST(MakeCutoutsTest, DependsOnlyOnTheJobsGenerator) {
  const at::Tensor x = Image(2);
  at::manual_seed(1);
  const at::Tensor alone = Cutouts(x, Small(), 7);

  // Another job with its own generator, and a different global seed, in between.
  at::manual_seed(2);
  at::Generator other = at::detail::createCPUGenerator(99);
  MakeCutouts(Image(3), Small(), other);
  at::manual_seed(12345);
  EXPECT_TRUE(at::equal(alone, Cutouts(x, Small(), 7)));
}

TEST(MakeCutoutsTest, AdvancesGeneratorByTheSameAmountWhateverTheProbability) {
  const at::Tensor x = Image(4);
  CutoutOptions never = Small();
  never.augment_probability = 0;
  never.noise_max = 0;
  // With probability 0 every augmentation is skipped: exactly the crops, as with augment off.
  EXPECT_TRUE(at::equal(Cutouts(x, never, 5), Cutouts(x, Plain(), 5)));
}

TEST(MakeCutoutsTest, FullSizeCutoutWithoutAugmentationIsTheImage) {
  const at::Tensor x = Image(5);
  CutoutOptions o = Plain();
  o.cut_size = 32;
  o.cut_pow = 0.3f;
  const at::Tensor out = Cutouts(x, o, 9);
  ASSERT_EQ(out.size(0), 6);
  for (int64_t i = 0; i < out.size(0); ++i) EXPECT_TRUE(at::equal(out[i], x[0])) << "cutout " << i;
}

TEST(MakeCutoutsTest, NoiseScalesAreDrawnBetweenNoiseMinAndNoiseMax) {
  const at::Tensor x = Image(5);
  CutoutOptions o = Plain();
  o.cutn = 64;
  o.cut_size = 32;
  o.noise_min = 0.3f;
  o.noise_max = 0.5f;
  const at::Tensor noise = Cutouts(x, o, 9) - x;
  double lowest = 1, highest = 0;
  for (int64_t i = 0; i < noise.size(0); ++i) {
    const double sigma = noise[i].std().item<double>();  // 3 072 draws: within ~4 % of the cutout's scale
    lowest = std::min(lowest, sigma);
    highest = std::max(highest, sigma);
  }
  EXPECT_GT(lowest, 0.3 * 0.85);
  EXPECT_LT(highest, 0.5 * 1.15);
  EXPECT_GT(highest - lowest, 0.1);  // the scale varies over the range, not pinned to one end
  // The same draws as without the floor, only rescaled: noise_min = noise_max pins every scale, and each
  // cutout's noise points the same way as before.
  o.noise_min = o.noise_max = 0.4f;
  const at::Tensor pinned = Cutouts(x, o, 9) - x;
  for (int64_t i = 0; i < pinned.size(0); ++i) {
    EXPECT_NEAR(pinned[i].std().item<double>(), 0.4, 0.4 * 0.15);
    const double cosine =
        (pinned[i] * noise[i]).sum().item<double>() / (pinned[i].norm() * noise[i].norm()).item<double>();
    EXPECT_NEAR(cosine, 1.0, 1e-5) << "cutout " << i;
  }
}

TEST(MakeCutoutsTest, UpsamplesWhenTheImageIsSmallerThanCutSize) {
  CutoutOptions o = Plain();
  o.cut_size = 48;
  const at::Tensor out = Cutouts(at::full({1, 3, 32, 32}, 0.25f), o, 3);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{6, 3, 48, 48}));
  EXPECT_TRUE(at::allclose(out, at::full_like(out, 0.25f)));
}

TEST(MakeCutoutsTest, ZeroMagnitudeAugmentationsKeepTheCrop) {
  // Every augmentation runs but with ranges of zero: the affine and perspective grids are the identity, the
  // jitter factors 1, the erased rectangle a single pixel.
  CutoutOptions o = Small();
  o.augment_probability = 1;
  o.noise_max = 0;
  o.rotation_degrees = o.translate = o.shear_degrees = o.perspective_distortion = 0;
  o.brightness = o.contrast = o.saturation = 0;
  o.erase_area_min = o.erase_area_max = 1e-6f;
  o.erase_value = 1;
  const at::Tensor x = Image(6) * 0.5;
  const at::Tensor crops = Cutouts(x, Plain(), 11);
  const at::Tensor out = Cutouts(x, o, 11);
  const at::Tensor differs = (out - crops).abs().gt(1e-4);
  EXPECT_TRUE(differs.sum({1, 2, 3}).eq(3).all().item<bool>()) << differs.sum({1, 2, 3});
}

TEST(MakeCutoutsTest, AugmentationsChangeTheCrops) {
  CutoutOptions o = Small();
  o.augment_probability = 1;
  o.noise_max = 0;
  const at::Tensor x = Image(7);
  const at::Tensor changed = (Cutouts(x, o, 13) - Cutouts(x, Plain(), 13)).abs().amax({1, 2, 3});
  EXPECT_TRUE(changed.gt(1e-3).all().item<bool>()) << changed;
}

// Perspective alone on a picture of one colour: zero padding shows black around the distorted picture (its
// frame becomes an outline), border padding carries the picture's edge outwards, so the colour stays.
TEST(MakeCutoutsTest, PerspectiveBorderPaddingKeepsThePicturesEdgeColour) {
  CutoutOptions o = Small();
  o.augment_probability = 1;
  o.noise_max = 0;
  o.rotation_degrees = o.translate = o.shear_degrees = 0;
  o.brightness = o.contrast = o.saturation = 0;
  o.erase_area_min = o.erase_area_max = 1e-6f;
  o.erase_value = 0.6f;  // the one erased pixel has the picture's colour
  o.perspective_distortion = 1;
  const at::Tensor x = at::full({1, 3, 32, 32}, 0.6f);
  const at::Tensor zeros = Cutouts(x, o, 21);
  EXPECT_TRUE(zeros.lt(0.3).any(/*dim=*/1).flatten(1).any(1).all().item<bool>()) << "every cutout has black";
  o.perspective_border_padding = true;
  const at::Tensor border = Cutouts(x, o, 21);
  EXPECT_LT((border - 0.6).abs().max().item<float>(), 1e-4);
}

// The blur's uniforms are drawn after everything else, and the affine scale's after those: with the augmentations
// selected for no cutout the cutouts are those of a run without them, bit for bit (and so are jobs that never
// asked for them).
TEST(MakeCutoutsTest, BlurAndAffineScaleDrawAfterEverythingElse) {
  CutoutOptions o = Small();
  o.augment_probability = 0;
  const at::Tensor x = Image(11);
  const at::Tensor without = Cutouts(x, o, 23);
  o.blur_sigma_max = 3;
  EXPECT_TRUE(at::equal(Cutouts(x, o, 23), without));
  o.affine_scale_min = 0.5f;
  EXPECT_TRUE(at::equal(Cutouts(x, o, 23), without));
}

// Affine alone with scale ~ U(0.5, 1) and nothing else: a centred white square on black shrinks by each cutout's
// scale, and a white left edge is carried outwards by the border padding, so the cutout's left column stays white.
TEST(MakeCutoutsTest, AffineScaleShrinksThePictureAndCarriesItsEdgeOutwards) {
  CutoutOptions o;
  o.cutn = 8;
  o.cut_size = 32;
  o.augment_probability = 1;
  o.noise_max = 0;
  o.rotation_degrees = o.translate = o.shear_degrees = o.perspective_distortion = 0;
  o.brightness = o.contrast = o.saturation = 0;
  o.erase_area_min = o.erase_area_max = 1e-6f;
  at::Tensor square = at::zeros({1, 3, 32, 32});
  square.narrow(2, 8, 16).narrow(3, 8, 16).fill_(1);
  const at::Tensor same = Cutouts(square, o, 31).mean({1, 2, 3});
  EXPECT_TRUE(same.sub(0.25).abs().lt(0.01).all().item<bool>()) << same;
  o.affine_scale_min = 0.5f;
  const at::Tensor shrunk = Cutouts(square, o, 31).mean({1, 2, 3});
  // The square's area is 0.25 · scale², each cutout with its own scale.
  EXPECT_TRUE(shrunk.lt(0.255).all().item<bool>()) << shrunk;
  EXPECT_TRUE(shrunk.gt(0.25 * 0.5 * 0.5 - 0.01).all().item<bool>()) << shrunk;
  EXPECT_GT((shrunk.max() - shrunk.min()).item<float>(), 0.05f) << shrunk;

  o.erase_value = 1;  // the one erased pixel is white too
  at::Tensor edge = at::zeros({1, 3, 32, 32});
  edge.narrow(3, 0, 4).fill_(1);
  const at::Tensor left = Cutouts(edge, o, 37).narrow(3, 0, 1);
  EXPECT_GT(left.min().item<float>(), 0.99f);
}

// Blur alone: a picture of one colour stays that colour (reflect padding, normalised kernels); a random picture
// gets smoother, keeps its mean, and every cutout's sigma is its own.
TEST(MakeCutoutsTest, BlurSmoothsEachCutoutAndKeepsFlatPicturesFlat) {
  CutoutOptions o = Plain();
  o.augment = true;
  o.augment_probability = 1;
  o.rotation_degrees = o.translate = o.shear_degrees = o.perspective_distortion = 0;
  o.brightness = o.contrast = o.saturation = 0;
  o.erase_area_min = o.erase_area_max = 1e-6f;
  o.erase_value = 0.4f;
  o.blur_sigma_max = 4;
  EXPECT_LT((Cutouts(at::full({1, 3, 32, 32}, 0.4f), o, 25) - 0.4f).abs().max().item<float>(), 1e-5);

  o.cut_size = 32;
  o.erase_value = 0;
  const at::Tensor x = Image(12);
  const at::Tensor plain = Cutouts(x, Plain(), 25).narrow(0, 0, 1);  // a full-size crop is the picture
  const at::Tensor blurred = Cutouts(x, o, 25);
  auto variation = [](const at::Tensor& t) {
    return (t.narrow(3, 1, t.size(3) - 1) - t.narrow(3, 0, t.size(3) - 1)).abs().mean({1, 2, 3});
  };
  const at::Tensor tv = variation(blurred);
  EXPECT_TRUE(tv.lt(variation(plain).item<float>()).all().item<bool>()) << tv;
  EXPECT_GT((tv.max() - tv.min()).item<float>(), 1e-3) << "one sigma per cutout";
  EXPECT_TRUE((blurred.mean({1, 2, 3}) - plain.mean()).abs().lt(0.02).all().item<bool>());
}

TEST(MakeCutoutsTest, GradientsReachTheImageThroughAugmentations) {
  for (float probability : {0.7f, 1.0f}) {
    CutoutOptions o = Small();
    o.augment_probability = probability;
    o.hue = 0.1f;
    o.blur_sigma_max = 2;
    const at::Tensor x = Image(8, 2).requires_grad_(true);
    const at::Tensor out = Cutouts(x, o, 17);
    (out * at::linspace(0.5, 1.5, out.numel()).view(out.sizes())).sum().backward();
    ASSERT_TRUE(x.grad().defined());
    EXPECT_TRUE(x.grad().isfinite().all().item<bool>()) << "p = " << probability;
    // Every image gets gradient.
    EXPECT_TRUE(x.grad().abs().sum({1, 2, 3}).gt(0).all().item<bool>()) << "p = " << probability;
  }
}

TEST(MakeCutoutsTest, ValuesStayFiniteUnderExtremeOptions) {
  CutoutOptions o = Small();
  o.cutn = 16;
  o.augment_probability = 1;
  o.rotation_degrees = 180;
  o.translate = 1;
  o.shear_degrees = 45;
  o.perspective_distortion = 1;
  o.brightness = o.contrast = o.saturation = 1;
  o.hue = 0.5;
  o.erase_area_max = 1;
  o.erase_aspect_max = 100;
  o.noise_max = 1;
  o.blur_sigma_max = 64;  // a radius beyond the cutout is cut to it
  for (float cut_pow : {0.0f, 1.0f, 100.0f}) {
    o.cut_pow = cut_pow;
    const at::Tensor out = Cutouts(Image(9, 1, 24), o, 19);
    EXPECT_TRUE(out.isfinite().all().item<bool>()) << "cut_pow " << cut_pow;
  }
}

TEST(MakeCutoutsTest, ProcessesReducedPrecisionImagesOnCpu) {
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    CutoutOptions o = Small();
    o.augment_probability = 1;
    const at::Tensor x = Image(10).to(dtype).requires_grad_(true);
    const at::Tensor out = Cutouts(x, o, 21);
    EXPECT_EQ(out.scalar_type(), dtype);
    EXPECT_TRUE(out.isfinite().all().item<bool>()) << dtype;
    out.sum().backward();
    EXPECT_GT(x.grad().abs().sum().item<float>(), 0) << dtype;
  }
}

TEST(AugmentLikeCutoutsTest, WithoutAugmentationOrNoiseReturnsTheNormalisedPictures) {
  const std::array<float, 3> mean = {0.5f, 0.4f, 0.3f}, std = {0.2f, 0.25f, 0.3f};
  const at::Tensor x = Image(3, /*batch=*/4, /*size=*/24) * 2 - 1;
  CutoutOptions o = Plain();  // cutn and cut_size are replaced by 1 and the pictures' side
  at::Generator gen = at::detail::createCPUGenerator(5);
  const at::Tensor out = AugmentLikeCutouts(x, mean, std, o, gen);
  ASSERT_EQ(out.sizes(), x.sizes());
  EXPECT_TRUE(at::allclose(out, x, /*rtol=*/0, /*atol=*/1e-5));
}

TEST(AugmentLikeCutoutsTest, AugmentsInPixelSpaceAndNormalisesAgain) {
  const std::array<float, 3> mean = {0.5f, 0.4f, 0.3f}, std = {0.2f, 0.25f, 0.3f};
  const at::Tensor pixels = Image(4, /*batch=*/8, /*size=*/24);
  const at::Tensor m = at::tensor(std::vector<float>(mean.begin(), mean.end())).view({1, 3, 1, 1});
  const at::Tensor s = at::tensor(std::vector<float>(std.begin(), std.end())).view({1, 3, 1, 1});
  const at::Tensor normalized = (pixels - m) / s;
  CutoutOptions o;  // the server's defaults
  at::Generator a = at::detail::createCPUGenerator(9), b = at::detail::createCPUGenerator(9);
  const at::Tensor out = AugmentLikeCutouts(normalized, mean, std, o, a);
  ASSERT_EQ(out.sizes(), normalized.sizes());
  EXPECT_FALSE(at::allclose(out, normalized, 0, 1e-3));
  // Exactly MakeCutouts on the un-normalised pictures, one full-size cutout each, normalised again.
  o.cutn = 1;
  o.cut_size = 24;
  EXPECT_TRUE(at::allclose(out, (MakeCutouts(pixels, o, b) - m) / s, 1e-4, 1e-4));
}

TEST(ValidateCutoutOptionsTest, AcceptsDefaults) { EXPECT_THAT(ValidateCutoutOptions({}), IsOk()); }

TEST(ValidateCutoutOptionsTest, RejectsOutOfRangeFieldsNamingThem) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::pair<std::string, std::function<void(CutoutOptions&)>> cases[] = {
      {"cutn", [](CutoutOptions& o) { o.cutn = 0; }},
      {"cut_size", [](CutoutOptions& o) { o.cut_size = 5000; }},
      {"cut_pow", [](CutoutOptions& o) { o.cut_pow = -1; }},
      {"augment_probability", [](CutoutOptions& o) { o.augment_probability = 1.5f; }},
      {"noise_max", [&](CutoutOptions& o) { o.noise_max = nan; }},
      {"hue", [](CutoutOptions& o) { o.hue = 0.6f; }},
      {"rotation_degrees", [](CutoutOptions& o) { o.rotation_degrees = -1; }},
      {"shear_degrees", [](CutoutOptions& o) { o.shear_degrees = 60; }},
      {"affine_scale_min", [](CutoutOptions& o) { o.affine_scale_min = 0.05f; }},
      {"affine_scale_min", [](CutoutOptions& o) { o.affine_scale_min = 1.5f; }},
      {"perspective_distortion", [](CutoutOptions& o) { o.perspective_distortion = 2; }},
      {"erase_area_min", [](CutoutOptions& o) { o.erase_area_min = 0; }},
      {"erase_area_min", [](CutoutOptions& o) { o.erase_area_min = 0.5f; }},
      {"erase_aspect_min", [&](CutoutOptions& o) { o.erase_aspect_min = nan; }},
      {"erase_value", [](CutoutOptions& o) { o.erase_value = 2; }},
      {"blur_sigma_max", [](CutoutOptions& o) { o.blur_sigma_max = -1; }},
      {"blur_sigma_max", [&](CutoutOptions& o) { o.blur_sigma_max = nan; }},
      {"noise_min", [](CutoutOptions& o) { o.noise_min = 0.2f; }},
      {"noise_min", [](CutoutOptions& o) { o.noise_min = -0.1f; }},
      {"noise_min", [&](CutoutOptions& o) { o.noise_min = nan; }},
  };
  for (const auto& [field, mutate] : cases) {
    CutoutOptions o;
    mutate(o);
    EXPECT_THAT(ValidateCutoutOptions(o),
                StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(field), HasSubstr("allowed range"))));
  }
}

}  // namespace
}  // namespace clipserve::generation
