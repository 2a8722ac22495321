// The shipped shapes-world models keep the quality their model cards state: a reduced shapes-eval (200 fresh
// held-out scenes of an evaluation seed) through the server's model code. The run is deterministic; the bars sit
// a few points below what it measures, so a broken loader, tokenizer, preprocessing or checkpoint trips them.
#include <cstdio>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tools/eval/shapes_eval.h"

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

}  // namespace
}  // namespace clipserve::shapes_eval
