#include "server/generation/prompts.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::generation {
namespace {

using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr float kNoStop = -std::numeric_limits<float>::infinity();

TEST(ParsePromptsTest, PlainTextGetsDefaultWeightAndStop) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto prompts, ParsePrompts("a red circle", "prompt"));
  ASSERT_EQ(prompts.size(), 1u);
  EXPECT_EQ(prompts[0].text, "a red circle");
  EXPECT_EQ(prompts[0].weight, 1.0f);
  EXPECT_EQ(prompts[0].stop, kNoStop);
}

TEST(ParsePromptsTest, ReadsWeightAndStop) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto prompts, ParsePrompts("a star:2:-0.3", "prompt"));
  ASSERT_EQ(prompts.size(), 1u);
  EXPECT_EQ(prompts[0].text, "a star");
  EXPECT_EQ(prompts[0].weight, 2.0f);
  EXPECT_EQ(prompts[0].stop, -0.3f);
}

TEST(ParsePromptsTest, SplitsOnBarsAndKeepsNegativeWeights) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto prompts, ParsePrompts("a red circle:1 | a blue background:-0.5", "prompt"));
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0].text, "a red circle");
  EXPECT_EQ(prompts[0].weight, 1.0f);
  EXPECT_EQ(prompts[1].text, "a blue background");
  EXPECT_EQ(prompts[1].weight, -0.5f);
  EXPECT_EQ(prompts[1].stop, kNoStop);
}

TEST(ParsePromptsTest, KeepsColonsWhoseSuffixIsNotANumber) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto prompts, ParsePrompts("a photo: nice | note:b:2 | ends with:", "prompt"));
  ASSERT_EQ(prompts.size(), 3u);
  EXPECT_EQ(prompts[0].text, "a photo: nice");
  EXPECT_EQ(prompts[0].weight, 1.0f);
  EXPECT_EQ(prompts[1].text, "note:b");
  EXPECT_EQ(prompts[1].weight, 2.0f);
  EXPECT_EQ(prompts[1].stop, kNoStop);
  EXPECT_EQ(prompts[2].text, "ends with:");
}

TEST(ParsePromptsTest, TrimsWhitespaceAroundTextAndNumbers) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto prompts, ParsePrompts("  a  cat \t:  2 : 0.5 |\n dog  ", "prompt"));
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0].text, "a  cat");
  EXPECT_EQ(prompts[0].weight, 2.0f);
  EXPECT_EQ(prompts[0].stop, 0.5f);
  EXPECT_EQ(prompts[1].text, "dog");
}

TEST(ParsePromptsTest, AcceptsExplicitMinusInfinityStop) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto prompts, ParsePrompts("a:1:-inf", "prompt"));
  ASSERT_EQ(prompts.size(), 1u);
  EXPECT_EQ(prompts[0].stop, kNoStop);
}

TEST(ParsePromptsTest, AcceptsLimitsAtTheirBounds) {
  const std::string eight = "a|b|c|d|e|f|g|h:-100";
  EXPECT_THAT(ParsePrompts(eight, "prompt"), IsOk());
  EXPECT_THAT(ParsePrompts(std::string(1000, 'x') + ":100:5", "prompt"), IsOk());
}

struct BadSpec {
  std::string spec;
  std::string piece;    // how the offending piece appears in the message
  std::string allowed;  // what the message says is allowed
};

class ParsePromptsRejectionTest : public ::testing::TestWithParam<BadSpec> {};

TEST_P(ParsePromptsRejectionTest, IsInvalidArgumentNamingFieldAndPiece) {
  const BadSpec& bad = GetParam();
  EXPECT_THAT(ParsePrompts(bad.spec, "text_prompts"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("text_prompts"), HasSubstr(bad.piece), HasSubstr(bad.allowed))));
}

INSTANTIATE_TEST_SUITE_P(
    ParsePromptsTest, ParsePromptsRejectionTest,
    ::testing::Values(BadSpec{"", "\"\" is empty", "text[:weight[:stop]]"},
                      BadSpec{"  \t ", "\"\" is empty", "text[:weight[:stop]]"},
                      BadSpec{"a|", "\"\" (prompt 2 of 2)", "text is empty"},
                      BadSpec{"a||b", "\"\" (prompt 2 of 3)", "text is empty"},
                      BadSpec{":2", "\":2\"", "text is empty"}, BadSpec{"a:0", "\"a:0\"", "non-zero"},
                      BadSpec{"a:nan", "\"a:nan\"", "finite"}, BadSpec{"a:inf", "\"a:inf\"", "finite"},
                      BadSpec{"a:1e50", "\"a:1e50\"", "finite"},
                      BadSpec{"b | a:-101", "\"a:-101\" (prompt 2 of 2)", "|weight| <= 100"},
                      BadSpec{"a:1:6", "\"a:1:6\"", "<= 5"}, BadSpec{"a:1:nan", "\"a:1:nan\"", "<= 5"},
                      BadSpec{"p1|p2|p3|p4|p5|p6|p7|p8|p9", "\"p9\" (prompt 9 of 9)", "at most 8"},
                      BadSpec{std::string(1001, 'y'), "\"" + std::string(40, 'y') + "...\"", "at most 1000"},
                      BadSpec{"a:-1 | b:-2", "\"a:-1 | b:-2\"", "positive weight"}));

TEST(ParsePromptsTest, TruncatesQuotedPieceAtCharacterBoundary) {
  std::string text = "x";
  for (int i = 0; i < 600; ++i) text += "\xc3\xa9";  // é: byte 40 is the second byte of a character
  std::string expected = "\"x";
  for (int i = 0; i < 19; ++i) expected += "\xc3\xa9";
  expected += "...\"";
  EXPECT_THAT(ParsePrompts(text, "prompt"),
              StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(expected), HasSubstr("bytes"))));
}

TEST(ParsePromptsTest, AppliesCustomLimits) {
  PromptLimits limits;
  limits.max_prompts = 2;
  limits.max_text_bytes = 3;
  limits.max_abs_weight = 10;
  EXPECT_THAT(ParsePrompts("a|b", "prompt", limits), IsOk());
  EXPECT_THAT(ParsePrompts("a|b|c", "prompt", limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 2")));
  EXPECT_THAT(ParsePrompts("abcd", "prompt", limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 3")));
  EXPECT_THAT(ParsePrompts("a:11", "prompt", limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("|weight| <= 10")));
}

constexpr double kPi = 3.14159265358979323846;

float Value(const at::Tensor& t) { return t.item<float>(); }

TEST(PromptLossTest, MatchesHandComputationOnUnnormalisedInputs) {
  // Normalised: u0 = (1, 0) is a quarter turn from e = (0, 1): ‖u0 − e‖ = √2, d = 2·asin(√2/2)² = π²/8;
  // u1 = (0, 1) equals e: d = 0. Mean π²/16, times the weight 2.
  const at::Tensor u = at::tensor({3.0f, 0.0f, 0.0f, 0.5f}).view({2, 2});
  const at::Tensor e = at::tensor({0.0f, 2.0f});
  const at::Tensor loss = PromptLoss(u, e, 2, kNoStop);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_EQ(loss.scalar_type(), at::kFloat);
  EXPECT_NEAR(Value(loss), 2 * kPi * kPi / 16, 1e-5);
}

TEST(PromptLossTest, IsZeroWhenImageEmbeddingEqualsPrompt) {
  const at::Tensor e = at::tensor({0.3f, -1.2f, 0.5f, 2.0f});
  EXPECT_NEAR(Value(PromptLoss(e.view({1, 4}).repeat({3, 1}), e, 1, kNoStop)), 0, 1e-6);
}

TEST(PromptLossTest, NegativeWeightFlipsTheSign) {
  at::manual_seed(3);
  const at::Tensor u = at::randn({5, 8});
  const at::Tensor e = at::randn({8});
  const float pull = Value(PromptLoss(u, e, 2, kNoStop));
  EXPECT_GT(pull, 0);
  EXPECT_NEAR(Value(PromptLoss(u, e, -2, kNoStop)), -pull, 1e-6);
  EXPECT_NEAR(Value(PromptLoss(u, e, 0.5, kNoStop)), pull / 4, 1e-6);
}

TEST(PromptLossTest, StopClampsDistanceAndItsGradient) {
  // d = π²/8 ≈ 1.234 for both cutouts.
  const at::Tensor u = at::tensor({1.0f, 0.0f, 1.0f, 0.0f}).view({2, 2}).requires_grad_(true);
  const at::Tensor e = at::tensor({0.0f, 1.0f});
  const double d = kPi * kPi / 8;

  // Pulling: below the stop nothing changes.
  const at::Tensor pull = PromptLoss(u, e, 3, 2);
  EXPECT_NEAR(Value(pull), 3 * 2, 1e-5);
  pull.backward();
  EXPECT_EQ(u.grad().abs().sum().item<float>(), 0);
  EXPECT_NEAR(Value(PromptLoss(u, e, 3, 1)), 3 * d, 1e-5);

  // Pushing: once sign(w)·d = −d is below the stop, the push has done its job.
  u.mutable_grad() = at::Tensor();
  const at::Tensor push = PromptLoss(u, e, -1, -0.5);
  EXPECT_NEAR(Value(push), -0.5, 1e-6);
  push.backward();
  EXPECT_EQ(u.grad().abs().sum().item<float>(), 0);
  EXPECT_NEAR(Value(PromptLoss(u, e, -1, -2)), -d, 1e-5);
}

TEST(PromptLossTest, GradientIsFiniteAndNonZero) {
  at::manual_seed(4);
  const at::Tensor u = at::randn({6, 16}).requires_grad_(true);
  const at::Tensor e = at::randn({16});
  PromptLoss(u, e, 1.5, kNoStop).backward();
  ASSERT_TRUE(u.grad().defined());
  EXPECT_TRUE(u.grad().isfinite().all().item<bool>());
  EXPECT_GT(u.grad().abs().sum().item<float>(), 0);
}

}  // namespace
}  // namespace clipserve::generation
