#include "tools/train/generation_negatives.h"

#include <filesystem>
#include <set>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/generation/latent_denoiser.h"
#include "server/models/clip/clip_model.h"
#include "server/models/cpu_threads.h"

namespace clipserve::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const fs::path kModels = fs::path(CLIPSERVE_SOURCE_DIR) / "models" / "shapes-world";

GenerationNegativeOptions SmallOptions() {
  GenerationNegativeOptions o;
  o.chains = 2;
  o.chain_steps = 4;
  o.min_steps = 2;
  o.cutouts.cutn = 2;
  return o;
}

class GenerationNegativesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ConfigureCpuThreads({.intra_op_threads = 1, .blas_threads = AvailableCores()});
    auto loaded = vqgan::VqganModel::Load({.model_dir = kModels / "vqgan"});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    vqgan_ = std::move(*loaded);
  }
  static void TearDownTestSuite() { vqgan_.reset(); }

  static absl::StatusOr<std::unique_ptr<GenerationNegatives>> Create(const GenerationNegativeOptions& options,
                                                                     uint64_t seed,
                                                                     generation::LatentPriors priors = {}) {
    return GenerationNegatives::Create(options, kModels / "clip", vqgan_, seed, std::move(priors));
  }

  static std::shared_ptr<const vqgan::VqganModel> vqgan_;
};

std::shared_ptr<const vqgan::VqganModel> GenerationNegativesTest::vqgan_;

TEST_F(GenerationNegativesTest, ChainsGivePicturesFromMinStepsOnAndRestart) {
  auto chains = Create(SmallOptions(), /*seed=*/5);
  ASSERT_TRUE(chains.ok()) << chains.status();
  // First runs are staggered: 3 and 4 steps; later runs 4. Pictures count from a chain's step 2 on.
  const std::vector<size_t> expected = {0, 2, 2, 1, 1, 2, 2};
  std::set<shapes::Colour> allowed(shapes::kShapeColours.begin(), shapes::kShapeColours.end());
  for (size_t call = 0; call < expected.size(); ++call) {
    auto n = (*chains)->Advance();
    ASSERT_TRUE(n.ok()) << n.status();
    ASSERT_EQ(n->colours.size(), expected[call]) << "call " << call;
    for (shapes::Colour c : n->colours) EXPECT_TRUE(allowed.count(c));
    if (expected[call] == 0) {
      EXPECT_FALSE(n->images.defined());
      continue;
    }
    ASSERT_EQ(n->images.sizes(), (at::IntArrayRef{static_cast<int64_t>(expected[call]), 3, 64, 64}));
    EXPECT_GE(n->images.min().item<float>(), 0);
    EXPECT_LE(n->images.max().item<float>(), 1);
  }
}

TEST_F(GenerationNegativesTest, SameSeedSamePictures) {
  auto a = Create(SmallOptions(), /*seed=*/9);
  auto b = Create(SmallOptions(), /*seed=*/9);
  ASSERT_TRUE(a.ok() && b.ok());
  for (int i = 0; i < 3; ++i) {
    auto na = (*a)->Advance();
    auto nb = (*b)->Advance();
    ASSERT_TRUE(na.ok() && nb.ok());
    ASSERT_EQ(na->colours, nb->colours);
    if (na->images.defined()) {
      EXPECT_TRUE(at::allclose(na->images, nb->images, 1e-5, 1e-6));
    }
  }
}

// The chains take the options' cutouts and denoiser weight: each changes their pictures (same seed), and a
// denoiser weight without a denoiser is refused.
TEST_F(GenerationNegativesTest, ChainsUseTheirCutoutsAndDenoiser) {
  auto pictures = [](const GenerationNegativeOptions& options, generation::LatentPriors priors) -> at::Tensor {
    auto chains = Create(options, /*seed=*/3, std::move(priors));
    EXPECT_TRUE(chains.ok()) << chains.status();
    if (!chains.ok()) return {};
    at::Tensor last;
    for (int i = 0; i < 3; ++i) {
      auto n = (*chains)->Advance();
      EXPECT_TRUE(n.ok()) << n.status();
      if (n.ok() && n->images.defined()) last = n->images;
    }
    return last;
  };
  at::manual_seed(4);
  auto denoiser = generation::LatentDenoiser::Create(
      {.embed_dim = vqgan_->config().embed_dim, .n_embed = vqgan_->config().n_embed, .width = 8, .dilations = {1}},
      vqgan_->codebook());
  ASSERT_TRUE(denoiser.ok()) << denoiser.status();
  const generation::LatentPriors priors{.denoiser = std::move(denoiser).value()};

  const at::Tensor plain = pictures(SmallOptions(), priors);
  ASSERT_TRUE(plain.defined());
  EXPECT_TRUE(at::allclose(pictures(SmallOptions(), priors), plain, 1e-5, 1e-6));
  GenerationNegativeOptions denoised = SmallOptions();
  denoised.denoiser_weight = 50;
  EXPECT_FALSE(at::allclose(pictures(denoised, priors), plain, 1e-3, 1e-3));
  GenerationNegativeOptions border = SmallOptions();
  border.cutouts.perspective_border_padding = true;
  border.cutouts.augment_probability = 1;
  EXPECT_FALSE(at::allclose(pictures(border, priors), plain, 1e-3, 1e-3));

  auto no_denoiser = Create(denoised, /*seed=*/3);
  EXPECT_EQ(no_denoiser.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_denoiser.status().message(), HasSubstr("denoiser_weight"));
}

TEST_F(GenerationNegativesTest, RefreshCopiesTheTrainedWeights) {
  auto chains = Create(SmallOptions(), /*seed=*/1);
  ASSERT_TRUE(chains.ok()) << chains.status();
  auto trained = clip::ClipModel::Load({.dir = kModels / "clip"});
  ASSERT_TRUE(trained.ok()) << trained.status();
  {
    at::NoGradGuard no_grad;
    for (auto& p : (*trained)->parameters()) p.add_(0.25);
  }
  const at::Tensor pixels = at::rand({1, 3, 64, 64});
  at::NoGradGuard no_grad;
  EXPECT_FALSE(at::allclose((*chains)->clip().EncodeImage(pixels), (*trained)->EncodeImage(pixels)));
  ASSERT_TRUE((*chains)->Refresh(**trained).ok());
  EXPECT_TRUE(at::allclose((*chains)->clip().EncodeImage(pixels), (*trained)->EncodeImage(pixels), 1e-5, 1e-6));
  // Refreshing still leaves the chains' CLIP frozen: generation needs gradients for the latent only.
  for (const auto& p : (*chains)->clip().parameters()) EXPECT_FALSE(p.requires_grad());
}

TEST_F(GenerationNegativesTest, RefreshRejectsAnotherArchitecture) {
  auto chains = Create(SmallOptions(), /*seed=*/1);
  ASSERT_TRUE(chains.ok()) << chains.status();
  clip::ClipConfig config = (*chains)->clip().config();
  config.vision.hidden_size /= 2;
  config.vision.intermediate_size /= 2;
  auto other = clip::ClipModel::CreateRandom(config, /*seed=*/1);
  const absl::Status status = (*chains)->Refresh(*other);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(GenerationNegativesTest, BadOptionsAreInvalidArguments) {
  std::vector<GenerationNegativeOptions> bad(5, SmallOptions());
  bad[0].chains = 0;
  bad[1].chain_steps = 0;
  bad[2].min_steps = 4;  // not below chain_steps
  bad[3].cutouts.cutn = 0;
  bad[4].learning_rate = 0;
  for (size_t i = 0; i < bad.size(); ++i) {
    auto chains = Create(bad[i], /*seed=*/1);
    EXPECT_EQ(chains.status().code(), absl::StatusCode::kInvalidArgument) << i;
    EXPECT_THAT(chains.status().message(), HasSubstr("generation negatives")) << i;
  }
  auto no_vqgan = GenerationNegatives::Create(SmallOptions(), kModels / "clip", nullptr, /*seed=*/1);
  EXPECT_EQ(no_vqgan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_vqgan.status().message(), HasSubstr("VQGAN"));
}

}  // namespace
}  // namespace clipserve::train
