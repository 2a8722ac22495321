#include "server/models/clip/clip_model.h"

#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/models/tensor_io.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tensor_testing.h"

namespace clipserve::clip {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::RelativeError;
using ::clipserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Every parity check runs twice: with BLAS (Linear()) and with the packed CPU GEMM (packed_linear.h), which
// inference takes once the model is prepacked.
class ClipParityTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    if (GetParam() && !PackedGemmAvailable()) GTEST_SKIP() << "no AVX-512F (or CLIPSERVE_PACKED_GEMM=0)";
    auto model = ClipModel::Load({.dir = FixtureDir() / "clip", .prepack_cpu_weights = GetParam()});
    ASSERT_THAT(model, IsOk());
    model_ = *model;
    ASSERT_EQ(model_->prepacked(), GetParam());
    auto expected = LoadTensors(FixtureDir() / "clip_expected.safetensors");
    ASSERT_THAT(expected, IsOk());
    expected_ = *expected;
  }
  const at::Tensor& Expected(const std::string& name) { return expected_.at(name); }

  std::shared_ptr<ClipModel> model_;
  std::map<std::string, at::Tensor> expected_;
};

TEST_P(ClipParityTest, TextEmbedsMatchReference) {
  c10::InferenceMode guard;
  at::Tensor ours = model_->EncodeText(Expected("input_ids"));
  CLIPSERVE_EXPECT_RELATIVE_ERROR_LE(ours, Expected("text_embeds"), 1e-4);
}

TEST_P(ClipParityTest, TextEmbedsDoNotDependOnBatchCompanions) {
  // Each text alone (its own, shorter computed length) must give the batch result.
  c10::InferenceMode guard;
  const at::Tensor ids = Expected("input_ids");
  at::Tensor batch = model_->EncodeText(ids);
  for (int64_t i = 0; i < ids.size(0); ++i) {
    at::Tensor one = model_->EncodeText(ids.narrow(0, i, 1));
    EXPECT_LE(RelativeError(one, batch.narrow(0, i, 1)), 1e-5) << "text " << i;
  }
}

TEST_P(ClipParityTest, ImageEmbedsMatchReference) {
  c10::InferenceMode guard;
  at::Tensor ours = model_->EncodeImage(Expected("pixel_values"));
  CLIPSERVE_EXPECT_RELATIVE_ERROR_LE(ours, Expected("image_embeds"), 1e-4);
}

TEST_P(ClipParityTest, LogitsMatchReference) {
  c10::InferenceMode guard;
  at::Tensor logits =
      model_->LogitsPerImage(model_->EncodeImage(Expected("pixel_values")), model_->EncodeText(Expected("input_ids")));
  CLIPSERVE_EXPECT_RELATIVE_ERROR_LE(logits, Expected("logits_per_image"), 1e-4);
}

TEST_P(ClipParityTest, GradientThroughVisionTowerMatchesReference) {
  at::Tensor pixels = Expected("pixel_values").narrow(0, 0, 1).clone().requires_grad_(true);
  at::Tensor text = model_->EncodeText(Expected("input_ids").narrow(0, 0, 1));
  at::Tensor image = model_->EncodeImage(pixels);
  at::Tensor cos = at::cosine_similarity(image, text, 1).sum();
  EXPECT_LE(RelativeError(cos.reshape({1}), Expected("cos_image0_text0").reshape({1})), 1e-4);
  cos.backward();
  ASSERT_TRUE(pixels.grad().defined());
  CLIPSERVE_EXPECT_RELATIVE_ERROR_LE(pixels.grad(), Expected("grad_pixel_cos_image0_text0"), 1e-3);
}

TEST_P(ClipParityTest, BFloat16WeightsStayClose) {
  if (GetParam()) GTEST_SKIP() << "bfloat16 models are never packed: the Blas variant is this test";
  auto model = ClipModel::Load({.dir = FixtureDir() / "clip", .dtype = at::kBFloat16});
  ASSERT_THAT(model, IsOk());
  EXPECT_EQ((*model)->dtype(), at::kBFloat16);
  c10::InferenceMode guard;
  at::Tensor image = (*model)->EncodeImage(Expected("pixel_values"));
  at::Tensor text = (*model)->EncodeText(Expected("input_ids"));
  EXPECT_EQ(image.scalar_type(), at::kFloat);
  EXPECT_LE(RelativeError(image, Expected("image_embeds")), 5e-2);
  EXPECT_LE(RelativeError(text, Expected("text_embeds")), 5e-2);
}

TEST_P(ClipParityTest, SaveThenLoadRoundTrips) {
  const fs::path dir = ::clipserve::testing::ScratchFile(GetParam() ? "roundtrip_packed" : "roundtrip_blas");
  ASSERT_THAT(model_->Save(dir), IsOk());
  auto again = ClipModel::Load({.dir = dir, .prepack_cpu_weights = GetParam()});
  ASSERT_THAT(again, IsOk());
  c10::InferenceMode guard;
  EXPECT_EQ(RelativeError((*again)->EncodeImage(Expected("pixel_values")), Expected("image_embeds")),
            RelativeError(model_->EncodeImage(Expected("pixel_values")), Expected("image_embeds")));
}

INSTANTIATE_TEST_SUITE_P(Gemm, ClipParityTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Packed" : "Blas"; });

TEST(ClipPrepackTest, ChangingWeightsDropsThePackedCopies) {
  CLIPSERVE_REQUIRE_FIXTURES();
  if (!PackedGemmAvailable()) GTEST_SKIP() << "no AVX-512F (or CLIPSERVE_PACKED_GEMM=0)";
  auto model = ClipModel::Load({.dir = FixtureDir() / "clip", .prepack_cpu_weights = true});
  ASSERT_THAT(model, IsOk());
  ASSERT_TRUE((*model)->prepacked());
  // Loading weights must drop the packed copies, or inference would go on using the old weights through them.
  auto weights = LoadTensors(FixtureDir() / "clip" / "model.safetensors");
  ASSERT_THAT(weights, IsOk());
  ASSERT_THAT((*model)->LoadWeights(*weights, "again"), IsOk());
  EXPECT_FALSE((*model)->prepacked());
  EXPECT_TRUE((*model)->PrepackForInference());
  (*model)->ConvertTo(at::kCPU, at::kBFloat16);
  EXPECT_FALSE((*model)->prepacked());
  EXPECT_FALSE((*model)->PrepackForInference()) << "only float32 models are packed";
}

// Copies the fixture model directory and lets a test damage it.
class ClipLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    dir_ = ::clipserve::testing::ScratchDir("loader");
    fs::copy_file(FixtureDir() / "clip" / "config.json", dir_ / "config.json");
    auto weights = LoadTensors(FixtureDir() / "clip" / "model.safetensors");
    ASSERT_THAT(weights, IsOk());
    weights_ = *weights;
  }
  void TearDown() override { fs::remove_all(dir_); }
  void WriteWeights() {
    std::vector<std::pair<std::string, at::Tensor>> list(weights_.begin(), weights_.end());
    ASSERT_THAT(SaveTensors(dir_ / "model.safetensors", list), IsOk());
  }
  absl::StatusOr<std::shared_ptr<ClipModel>> Load() { return ClipModel::Load({.dir = dir_}); }

  fs::path dir_;
  std::map<std::string, at::Tensor> weights_;
};

TEST_F(ClipLoaderTest, LoadsAnIntactCopy) {
  WriteWeights();
  EXPECT_THAT(Load(), IsOk());
}

TEST_F(ClipLoaderTest, RejectsMissingWeightNamingIt) {
  weights_.erase("vision_model.encoder.layers.1.mlp.fc2.bias");
  WriteWeights();
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("missing weights"), HasSubstr("vision_model.encoder.layers.1.mlp.fc2.bias"))));
}

TEST_F(ClipLoaderTest, RejectsUnknownWeightNamingIt) {
  weights_["text_model.encoder.layers.0.self_attn.extra.weight"] = at::zeros({2});
  WriteWeights();
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("unknown weights"), HasSubstr("self_attn.extra.weight"))));
}

TEST_F(ClipLoaderTest, IgnoresPositionIdsBuffers) {
  weights_["text_model.embeddings.position_ids"] = at::arange(10).view({1, 10});
  WriteWeights();
  EXPECT_THAT(Load(), IsOk());
}

TEST_F(ClipLoaderTest, RejectsWrongShapeNamingIt) {
  auto& w = weights_.at("visual_projection.weight");
  w = at::zeros({w.size(0) + 1, w.size(1)});
  WriteWeights();
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("wrong shape"), HasSubstr("visual_projection.weight"))));
}

TEST_F(ClipLoaderTest, RejectsTruncatedWeightsFile) {
  WriteWeights();
  const auto size = fs::file_size(dir_ / "model.safetensors");
  fs::resize_file(dir_ / "model.safetensors", size / 2);
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
}

TEST_F(ClipLoaderTest, RejectsConfigWithMissingField) {
  WriteWeights();
  auto config = ReadJsonFile(dir_ / "config.json");
  ASSERT_THAT(config, IsOk());
  (*config)["vision_config"].erase("patch_size");
  std::ofstream(dir_ / "config.json") << config->dump();
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vision_config.patch_size is missing")));
}

TEST_F(ClipLoaderTest, RejectsUnsupportedActivation) {
  WriteWeights();
  auto config = ReadJsonFile(dir_ / "config.json");
  ASSERT_THAT(config, IsOk());
  (*config)["text_config"]["hidden_act"] = "relu";
  std::ofstream(dir_ / "config.json") << config->dump();
  EXPECT_THAT(Load(), StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr("text_config.hidden_act"), HasSubstr("quick_gelu, gelu"))));
}

TEST(ClipModelTest, GeluAndModernEosPoolingWork) {
  // A config with the other activation and the modern EOS rule: pooling at the first EOS, whatever follows.
  ClipConfig c;
  c.text.hidden_size = c.vision.hidden_size = 32;
  c.text.intermediate_size = c.vision.intermediate_size = 64;
  c.text.num_attention_heads = c.vision.num_attention_heads = 2;
  c.text.num_hidden_layers = c.vision.num_hidden_layers = 1;
  c.text.hidden_act = c.vision.hidden_act = Activation::kGelu;
  c.text.vocab_size = 100;
  c.text.max_position_embeddings = 16;
  c.text.eos_token_id = 99;
  c.vision.image_size = 32;
  c.vision.patch_size = 16;
  c.projection_dim = 8;
  auto model = ClipModel::CreateRandom(c, 7);
  c10::InferenceMode guard;
  at::Tensor a = at::tensor({98, 5, 6, 99, 0, 0, 0, 0}, at::kLong).view({1, 8});
  at::Tensor b = at::tensor({98, 5, 6, 99, 42, 99, 3, 1}, at::kLong).view({1, 8});
  EXPECT_LE(RelativeError(model->EncodeText(a), model->EncodeText(b)), 1e-6);
  at::Tensor c2 = at::tensor({98, 5, 7, 99, 0, 0, 0, 0}, at::kLong).view({1, 8});
  EXPECT_GT(RelativeError(model->EncodeText(c2), model->EncodeText(a)), 1e-3);
  EXPECT_EQ(model->EncodeImage(at::randn({2, 3, 32, 32})).sizes(), (at::IntArrayRef{2, 8}));
}

}  // namespace
}  // namespace clipserve::clip
