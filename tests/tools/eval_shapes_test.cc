#include <cstdio>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"
#include "tools/eval/shapes_eval.h"

namespace clipserve::shapes_eval {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;

// The fixture models (random weights) stand in for the shipped ones: the metrics must be well-formed and, for a
// model that knows nothing, near chance.
class ShapesEvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    // One directory per test process (ctest runs these tests as parallel processes).
    dir_ = ::clipserve::testing::ScratchDir("models");
    for (const char* m : {"clip", "vqgan"}) {
      fs::create_directory_symlink(FixtureDir() / m, dir_ / m);
    }
  }
  fs::path dir_;
};

TEST_F(ShapesEvalTest, ReportsEveryMetric) {
  auto r = Evaluate({.models = dir_, .seed = 1'000'000, .count = 80});
  ASSERT_THAT(r, IsOk());
  ASSERT_TRUE(r->zero_shot && r->retrieval && r->vqgan);
  for (double v : {r->zero_shot->colour, r->zero_shot->shape, r->zero_shot->both, r->retrieval->recall_at_1,
                   r->retrieval->recall_at_5, r->vqgan->codebook_used}) {
    EXPECT_GE(v, 0.0);
    EXPECT_LE(v, 1.0);
  }
  EXPECT_LE(r->zero_shot->both, std::min(r->zero_shot->colour, r->zero_shot->shape));
  EXPECT_LE(r->retrieval->recall_at_1, r->retrieval->recall_at_5);
  EXPECT_LT(r->zero_shot->both, 0.2);  // random weights know nothing
  const nlohmann::json j = r->ToJson();
  for (const char* key : {"zero_shot", "retrieval", "vqgan"}) EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_TRUE(j["zero_shot"].contains("both"));
  EXPECT_TRUE(j["vqgan"].contains("psnr_db"));
}

TEST_F(ShapesEvalTest, BreaksShapeAccuracyDownConsistently) {
  constexpr int kCount = 120;
  auto r = Evaluate({.models = dir_, .seed = 1'000'000, .count = kCount});
  ASSERT_THAT(r, IsOk());
  ASSERT_TRUE(r->zero_shot);
  const ZeroShot& z = *r->zero_shot;
  // Errors per true shape (from the confusions) and accuracy per shape must both add up to the overall figure.
  int wrong = 0;
  for (const auto& [shape, counts] : z.shape_confusions) {
    for (const auto& [taken_for, n] : counts) {
      EXPECT_NE(taken_for, shape);
      EXPECT_GT(n, 0);
      wrong += n;
    }
  }
  EXPECT_NEAR(1.0 - static_cast<double>(wrong) / kCount, z.shape, 1e-9);
  EXPECT_FALSE(z.shape_by_shape.empty());
  EXPECT_EQ(z.shape_by_size.size(), 3u) << "small, medium and big all occur in 120 scenes";
  for (const auto& [name, accuracy] : z.shape_by_shape) {
    EXPECT_GE(accuracy, 0.0) << name;
    EXPECT_LE(accuracy, 1.0) << name;
  }
  const nlohmann::json plain = r->ToJson(), full = r->ToJson(/*breakdown=*/true);
  EXPECT_FALSE(plain["zero_shot"].contains("shape_by_shape"));
  EXPECT_TRUE(full["zero_shot"].contains("shape_by_shape"));
  EXPECT_TRUE(full["zero_shot"].contains("shape_by_size"));
  EXPECT_TRUE(full["zero_shot"].contains("shape_confusions"));
}

TEST_F(ShapesEvalTest, IsDeterministic) {
  auto a = Evaluate({.models = dir_, .seed = 1'000'123, .count = 40});
  auto b = Evaluate({.models = dir_, .seed = 1'000'123, .count = 40});
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(a->ToJson().dump(), b->ToJson().dump());
}

TEST_F(ShapesEvalTest, RefusesTrainingSeedsAndMissingModels) {
  EXPECT_THAT(Evaluate({.models = dir_, .seed = 5, .count = 10}),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(Evaluate({.models = "/nonexistent", .seed = 1'000'000, .count = 10}),
              StatusIs(absl::StatusCode::kNotFound, ::testing::_));
}

TEST_F(ShapesEvalTest, GenerationCutoutsAreDeterministicAndValidated) {
  EvalOptions o{.models = dir_, .seed = 1'000'123, .count = 40};
  o.cutouts = generation::CutoutOptions{};
  auto a = Evaluate(o);
  auto b = Evaluate(o);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(a->ToJson().dump(), b->ToJson().dump());
  o.cutouts->perspective_distortion = 2;
  EXPECT_THAT(Evaluate(o), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("perspective")));
}

TEST_F(ShapesEvalTest, AttackIsValidatedAndReported) {
  EvalOptions o{.models = dir_, .seed = 1'000'123, .count = 20};
  o.attack = EvalOptions::Attack{.epsilon = 0, .steps = 10};
  EXPECT_THAT(Evaluate(o), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("epsilon")));
  o.attack = EvalOptions::Attack{.epsilon = 0.03, .steps = 21};
  EXPECT_THAT(Evaluate(o), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("steps")));
  o.attack = EvalOptions::Attack{.epsilon = 0.03, .steps = 2};
  o.cutouts = generation::CutoutOptions{};
  EXPECT_THAT(Evaluate(o), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("do not combine")));
  o.cutouts.reset();
  auto a = Evaluate(o);
  auto b = Evaluate(o);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_EQ(a->ToJson().dump(), b->ToJson().dump()) << "the attack's random start comes from the seed";
  const nlohmann::json j = a->ToJson();
  EXPECT_EQ(j["zero_shot"]["attack"]["steps"], 2);
  EXPECT_FALSE(Evaluate({.models = dir_, .seed = 1'000'123, .count = 20})->ToJson()["zero_shot"].contains("attack"));
}

// The shipped CLIP was trained on clean pictures only: a small PGD attack (8/255, the usual ImageNet radius)
// takes most of what it knows (measured on these 60 scenes: colour and shape both right 0.85 clean, 0.02 under
// attack).
TEST(ShapesEvalShippedTest, AnAttackTakesTheCleanClipsAccuracy) {
  // The CLIP alone (the VQGAN's part does not change with the attack).
  const fs::path models = ::clipserve::testing::ScratchDir("clip-only");
  fs::create_directory_symlink(fs::path(CLIPSERVE_SOURCE_DIR) / "models" / "shapes-world" / "clip", models / "clip");
  EvalOptions o{.models = models, .seed = 1'000'321, .count = 60};
  auto clean = Evaluate(o);
  o.attack = EvalOptions::Attack{.epsilon = 8.0 / 255, .steps = 5};
  auto attacked = Evaluate(o);
  ASSERT_THAT(clean, IsOk());
  ASSERT_THAT(attacked, IsOk());
  std::printf("clean: %s\nattacked: %s\n", clean->ToJson().dump().c_str(), attacked->ToJson().dump().c_str());
  EXPECT_LT(attacked->zero_shot->both, clean->zero_shot->both / 2);
  // Retrieval stays on the clean pictures.
  EXPECT_EQ(attacked->retrieval->recall_at_1, clean->retrieval->recall_at_1);
}

// On the shipped CLIP, which knows the world: the cutouts' augmentations cost it most of its shape accuracy
// (measured on these 120 scenes: shape 0.85 plain, 0.19 through cutouts; docs/generation.md).
TEST(ShapesEvalShippedTest, GenerationCutoutsChangeWhatTheClipSees) {
  const fs::path models = fs::path(CLIPSERVE_SOURCE_DIR) / "models" / "shapes-world";
  EvalOptions o{.models = models, .seed = 1'000'321, .count = 120};
  auto plain = Evaluate(o);
  o.cutouts = generation::CutoutOptions{};
  auto cut = Evaluate(o);
  ASSERT_THAT(plain, IsOk());
  ASSERT_THAT(cut, IsOk());
  std::printf("plain: %s\ncutouts: %s\n", plain->ToJson().dump().c_str(), cut->ToJson().dump().c_str());
  EXPECT_LT(cut->zero_shot->shape, plain->zero_shot->shape - 0.2);
  // The VQGAN part never sees cutouts.
  EXPECT_EQ(cut->vqgan->psnr_db, plain->vqgan->psnr_db);
}

}  // namespace
}  // namespace clipserve::shapes_eval
