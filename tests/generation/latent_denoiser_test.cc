// LatentDenoiser: shapes, the prediction's form, saving and loading, bad configs and files.
#include "server/generation/latent_denoiser.h"

#include <filesystem>
#include <string>

#include <ATen/ATen.h>

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

LatentDenoiserConfig Small() { return {.embed_dim = 4, .n_embed = 16, .width = 8, .dilations = {1, 2}}; }

fs::path TempFile(const std::string& name) {
  return ::clipserve::testing::ScratchFile(name);
}

TEST(LatentDenoiserTest, PredictsCodebookRowsForEveryCell) {
  at::manual_seed(1);
  const at::Tensor codebook = at::randn({16, 4});
  auto d = LatentDenoiser::Create(Small(), codebook);
  ASSERT_THAT(d, IsOk());
  const at::Tensor z = at::randn({2, 4, 5, 7}, at::kDouble);  // any float dtype
  EXPECT_EQ((*d)->Logits(z).sizes(), (std::vector<int64_t>{2, 16, 5, 7}));
  const at::Tensor out = (*d)->Denoise(z, codebook);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 4, 5, 7}));
  EXPECT_FALSE(out.requires_grad());
  // Every cell is exactly the codebook row of its most likely code.
  const at::Tensor codes = (*d)->Logits(z).argmax(1);
  const at::Tensor cells = out.permute({0, 2, 3, 1}).reshape({-1, 4});
  EXPECT_TRUE(at::equal(cells, codebook.index_select(0, codes.reshape(-1))));
}

TEST(LatentDenoiserTest, SaveAndLoadKeepTheNetwork) {
  at::manual_seed(2);
  const at::Tensor codebook = at::randn({16, 4}) * 3 + 1;
  auto d = LatentDenoiser::Create(Small(), codebook);
  ASSERT_THAT(d, IsOk());
  const fs::path path = TempFile("roundtrip.safetensors");
  ASSERT_THAT((*d)->Save(path), IsOk());
  auto loaded = LatentDenoiser::Load(path);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ((*loaded)->config().width, 8);
  EXPECT_EQ((*loaded)->config().dilations, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ((*loaded)->config().n_embed, 16);
  const at::Tensor z = at::randn({1, 4, 6, 6});
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose((*loaded)->Logits(z), (*d)->Logits(z)));
  fs::remove(path);
}

TEST(LatentDenoiserTest, RejectsBadConfigsAndFiles) {
  const at::Tensor codebook = at::randn({16, 4});
  LatentDenoiserConfig c = Small();
  c.dilations = {};
  EXPECT_THAT(LatentDenoiser::Create(c, codebook), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("config")));
  c = Small();
  c.dilations = {0};
  EXPECT_THAT(LatentDenoiser::Create(c, codebook), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dilation")));
  EXPECT_THAT(LatentDenoiser::Create(Small(), at::randn({16, 5})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[16, 4]")));

  auto d = LatentDenoiser::Create(Small(), codebook);
  ASSERT_THAT(d, IsOk());
  const fs::path path = TempFile("bad.safetensors");
  ASSERT_THAT((*d)->Save(path), IsOk());
  auto tensors = LoadTensors(path);
  ASSERT_THAT(tensors, IsOk());
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (const auto& [name, t] : *tensors) {
    if (name != "blocks.1.weight") kept.emplace_back(name, t.clone());
  }
  const fs::path broken = TempFile("broken.safetensors");
  ASSERT_THAT(SaveTensors(broken, kept), IsOk());
  EXPECT_THAT(LatentDenoiser::Load(broken),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'blocks.1.weight'")));
  kept.emplace_back("blocks.1.weight", at::zeros({8, 8, 1, 1}));
  ASSERT_THAT(SaveTensors(broken, kept), IsOk());
  EXPECT_THAT(LatentDenoiser::Load(broken), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("wrong shape")));
  fs::remove(path);
  fs::remove(broken);
}

}  // namespace
}  // namespace clipserve::generation
