// The shipped shapes-world models keep the quality their model cards state: a reduced shapes-eval (200 fresh
// held-out scenes of an evaluation seed) through the server's model code. The run is deterministic; the bars sit
// a few points below what it measures, so a broken loader, tokenizer, preprocessing or checkpoint trips them.
#include <cstdio>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tools/eval/shapes_eval.h"
#include "tools/shapes/world.h"

namespace clipserve::shapes_eval {
namespace {

using ::clipserve::testing::IsOk;

// Measured on these 200 scenes: colour 0.99, shape 0.87, both 0.865, recall@1 0.915, recall@5 0.995, PSNR 27.23 dB,
// codebook 0.98 (1,000 scenes: MODEL_CARD.md). The bars sit a few points below; shape and both at the shipped-models
// issue's targets (80 and 75 %).
constexpr double kMinColour = 0.95;
constexpr double kMinShape = 0.80;
constexpr double kMinBoth = 0.78;
constexpr double kMinRecallAt1 = 0.85;
constexpr double kMinRecallAt5 = 0.95;
constexpr double kMinPsnrDb = 26.0;
constexpr double kMinCodebookUsed = 0.90;

TEST(ShippedModelsTest, KeepTheirMeasuredQuality) {
  const std::filesystem::path models = std::filesystem::path(CLIPSERVE_SOURCE_DIR) / "models" / "shapes-world";
  auto r = Evaluate({.models = models, .seed = 1'000'777, .count = 200});
  ASSERT_THAT(r, IsOk());
  ASSERT_TRUE(r->zero_shot && r->retrieval && r->vqgan) << r->ToJson().dump();
  std::printf("shipped models, 200 held-out scenes: %s\n", r->ToJson().dump().c_str());
  EXPECT_GE(r->zero_shot->colour, kMinColour);
  EXPECT_GE(r->zero_shot->shape, kMinShape);
  EXPECT_GE(r->zero_shot->both, kMinBoth);
  EXPECT_GE(r->retrieval->recall_at_1, kMinRecallAt1);
  EXPECT_GE(r->retrieval->recall_at_5, kMinRecallAt5);
  EXPECT_GE(r->vqgan->psnr_db, kMinPsnrDb);
  EXPECT_GE(r->vqgan->codebook_used, kMinCodebookUsed);
}

// ZeroShotLabels (gen-eval's reading of its pictures by the CLIP) is the zero-shot classification of Evaluate:
// on the same held-out scenes it gives the same accuracies.
TEST(ShippedModelsTest, ZeroShotLabelsReadPicturesAsEvaluateDoes) {
  const std::filesystem::path models = std::filesystem::path(CLIPSERVE_SOURCE_DIR) / "models" / "shapes-world";
  constexpr int kCount = 60;
  constexpr uint64_t kSeed = 1'000'555;
  auto evaluated = Evaluate({.models = models, .seed = kSeed, .count = kCount});
  ASSERT_THAT(evaluated, IsOk());
  ASSERT_TRUE(evaluated->zero_shot);
  auto bundle = clip::ClipBundle::Load({.dir = models / "clip"});
  ASSERT_THAT(bundle, IsOk());
  auto sampler = shapes::SceneSampler::Create({.split = shapes::Split::kEval, .seed = kSeed});
  ASSERT_THAT(sampler, IsOk());
  std::vector<cv::Mat> images;
  std::vector<shapes::Scene> scenes;
  for (int i = 0; i < kCount; ++i) {
    shapes::Example e = (*sampler)->Sample(static_cast<uint64_t>(i));
    images.push_back(e.image);
    scenes.push_back(e.scene);
  }
  auto labels = ZeroShotLabels(**bundle, images);
  ASSERT_THAT(labels, IsOk());
  ASSERT_EQ(labels->size(), images.size());
  int colour = 0, shape = 0;
  for (int i = 0; i < kCount; ++i) {
    colour += (*labels)[i].colour == scenes[i].colour;
    shape += (*labels)[i].shape == scenes[i].shape;
  }
  EXPECT_DOUBLE_EQ(static_cast<double>(colour) / kCount, evaluated->zero_shot->colour);
  EXPECT_DOUBLE_EQ(static_cast<double>(shape) / kCount, evaluated->zero_shot->shape);
  EXPECT_GE(shape, kCount * 3 / 4);
  auto none = ZeroShotLabels(**bundle, {});
  ASSERT_THAT(none, IsOk());
  EXPECT_TRUE(none->empty());
}

}  // namespace
}  // namespace clipserve::shapes_eval
