// The latent denoiser's trainer: its corruptions, and a short run on a tiny VQGAN that learns and loads.
#include "tools/vqgan_trainer/latent_denoiser_trainer.h"

#include <cmath>
#include <filesystem>
#include <set>

#include <ATen/CPUGeneratorImpl.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::vqgan_trainer {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;

// A 4×4 grid of 16 distinct codes (cell r, c has code 4r + c) in a codebook of 32 rows of dimension 3.
struct Grid {
  at::Tensor codes = at::arange(16, at::kLong).view({1, 4, 4});
  at::Tensor codebook = at::randn({32, 3}, at::detail::createCPUGenerator(4));
  // The code each cell of z [1, 3, 4, 4] is exactly a row of.
  at::Tensor CodesOf(const at::Tensor& z) const {
    const at::Tensor cells = z.permute({0, 2, 3, 1}).reshape({-1, 1, 3});
    const at::Tensor match = (cells - codebook.unsqueeze(0)).abs().amax(-1).eq(0);  // [16, 32]
    EXPECT_TRUE(match.any(1).all().item<bool>()) << "a cell is no codebook row";
    return match.to(at::kFloat).argmax(1).view({4, 4});
  }
};

TEST(LatentDenoiserTrainer, WithoutCorruptionTheLatentIsTheCodebookRows) {
  Grid g;
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor z = CorruptLatents(g.codes, g.codebook, {.max_replace = 0, .max_jitter = 0, .max_noise = 0}, gen);
  EXPECT_TRUE(at::equal(g.CodesOf(z), g.codes[0]));
}

TEST(LatentDenoiserTrainer, JitterGivesCellsTheirNeighboursCodes) {
  Grid g;
  at::Generator gen = at::detail::createCPUGenerator(2);
  int changed = 0;
  for (int i = 0; i < 8; ++i) {
    const at::Tensor got =
        g.CodesOf(CorruptLatents(g.codes, g.codebook, {.max_replace = 0, .max_jitter = 1, .max_noise = 0}, gen));
    for (int64_t r = 0; r < 4; ++r) {
      for (int64_t c = 0; c < 4; ++c) {
        const int64_t code = got[r][c].item<int64_t>(), own = 4 * r + c;
        const std::set<int64_t> allowed = {own, own - 4, own + 4, c > 0 ? own - 1 : own, c < 3 ? own + 1 : own};
        EXPECT_TRUE(allowed.count(code)) << "cell " << r << "," << c << " got code " << code;
        changed += code != own;
      }
    }
  }
  EXPECT_GT(changed, 0);
}

TEST(LatentDenoiserTrainer, ReplacementDrawsAnyCodeAndNoiseMovesOffTheRows) {
  Grid g;
  at::Generator gen = at::detail::createCPUGenerator(3);
  int foreign = 0;
  for (int i = 0; i < 8; ++i) {
    const at::Tensor got =
        g.CodesOf(CorruptLatents(g.codes, g.codebook, {.max_replace = 1, .max_jitter = 0, .max_noise = 0}, gen));
    foreign += got.ge(16).sum().item<int>();  // codes the grid does not have
  }
  EXPECT_GT(foreign, 0);
  const at::Tensor noisy =
      CorruptLatents(g.codes, g.codebook, {.max_replace = 0, .max_jitter = 0, .max_noise = 1}, gen);
  const at::Tensor clean =
      CorruptLatents(g.codes, g.codebook, {.max_replace = 0, .max_jitter = 0, .max_noise = 0}, gen);
  EXPECT_GT((noisy - clean).abs().max().item<float>(), 0);
}

// 60 steps on a tiny random VQGAN's codes: the cross-entropy ends below that of a uniform guess, the report's
// accuracies are fractions, and the file loads as a LatentDenoiser for that VQGAN.
TEST(LatentDenoiserTrainer, LearnsAndWritesALoadableDenoiser) {
  vqgan::VqganModel::Options vo;
  vo.config.embed_dim = 8;
  vo.config.n_embed = 32;
  vo.config.ddconfig.ch = 32;
  vo.config.ddconfig.ch_mult = {1, 2};
  vo.config.ddconfig.num_res_blocks = 1;
  vo.config.ddconfig.z_channels = 8;
  vo.config.ddconfig.resolution = 16;
  at::manual_seed(5);
  auto vq = vqgan::VqganModel::Create(vo);
  ASSERT_THAT(vq, IsOk());
  DenoiserTrainOptions o;
  o.out = ::clipserve::testing::ScratchFile("latent_denoiser_train.safetensors");
  o.config.width = 16;
  o.config.dilations = {1, 2};
  o.count = 64;
  o.eval_count = 16;
  o.batch_size = 16;
  o.max_steps = 60;
  auto report = TrainLatentDenoiser(**vq, o);
  ASSERT_THAT(report, IsOk());
  EXPECT_EQ(report->steps, 60);
  EXPECT_LT(report->final_loss, std::log(32.0));
  EXPECT_GT(report->clean_accuracy, 1.0 / 32);
  EXPECT_LE(report->corrupted_accuracy, 1.0);
  auto loaded = generation::LatentDenoiser::Load(o.out);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->config().n_embed, 32);
  EXPECT_EQ((*loaded)->config().embed_dim, 8);
  fs::remove(o.out);

  o.seed = 2'000'000;
  EXPECT_THAT(TrainLatentDenoiser(**vq, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("seed")));
  o.seed = 1;
  o.count = 8;
  EXPECT_THAT(TrainLatentDenoiser(**vq, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch_size")));
}

}  // namespace
}  // namespace clipserve::vqgan_trainer
