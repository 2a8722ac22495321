// The OpenCV judge of generated pictures, checked on the world's own drawings (whose labels are known): it must
// name colour and shape of held-out scenes reliably before it can grade generation.
#include "tools/judge/judge.h"

#include <cstdio>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::judge {
namespace {

TEST(JudgeTest, NamesColourAndShapeOfHeldOutScenes) {
  auto sampler = shapes::SceneSampler::Create({.split = shapes::Split::kEval, .seed = 1'000'321});
  ASSERT_TRUE(sampler.ok());
  const int n = 400;
  int colour = 0, shape = 0, found = 0;
  std::map<std::string, int> confusions;
  for (int i = 0; i < n; ++i) {
    const shapes::Example e = (*sampler)->Sample(static_cast<uint64_t>(i));
    const Judgement j = JudgeImage(e.image);
    found += j.found;
    colour += j.found && j.colour == e.scene.colour;
    shape += j.found && j.shape == e.scene.shape;
    if (j.found && j.shape != e.scene.shape) {
      ++confusions[std::string(shapes::ShapeName(e.scene.shape)) + "->" + std::string(shapes::ShapeName(j.shape))];
    }
  }
  std::string summary;
  for (const auto& [k, v] : confusions) summary += k + ":" + std::to_string(v) + " ";
  std::printf("judge on %d held-out scenes: found %d, colour %d, shape %d; shape confusions: %s\n", n, found, colour,
              shape, summary.c_str());
  EXPECT_GE(found, n * 98 / 100);
  EXPECT_GE(colour, n * 95 / 100);
  EXPECT_GE(shape, n * 95 / 100) << summary;
}

TEST(JudgeTest, APlainImageShowsNothing) {
  const cv::Mat plain(64, 64, CV_8UC3, cv::Scalar(40, 90, 200));
  EXPECT_FALSE(JudgeImage(plain).found);
  EXPECT_FALSE(JudgeImage(cv::Mat()).found);
}

TEST(JudgeTest, ADiamondIsNotASquare) {
  for (shapes::Shape s : {shapes::Shape::kSquare, shapes::Shape::kDiamond, shapes::Shape::kRing,
                          shapes::Shape::kCircle}) {
    shapes::Scene scene;
    scene.shape = s;
    scene.colour = shapes::Colour::kBlue;
    scene.rgb = shapes::ColourRgb(shapes::Colour::kBlue);
    scene.background.colour = shapes::Colour::kWhite;
    scene.background.rgb = shapes::ColourRgb(shapes::Colour::kWhite);
    scene.extent = 0.6;
    auto r = shapes::Render(scene, {.image_size = 64});
    ASSERT_TRUE(r.ok());
    const Judgement j = JudgeImage(r->image);
    ASSERT_TRUE(j.found);
    EXPECT_EQ(j.shape, s) << shapes::ShapeName(s) << " judged " << shapes::ShapeName(j.shape);
    EXPECT_EQ(j.colour, shapes::Colour::kBlue);
  }
}

}  // namespace
}  // namespace clipserve::judge
