// The shapes world: determinism, seed splits, drawing, captions and the distinct-pairs groups.
#include <algorithm>
#include <cstring>
#include <opencv2/imgproc.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tools/shapes/world.h"

namespace clipserve::shapes {
namespace {

using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::Contains;
using ::testing::HasSubstr;

std::unique_ptr<SceneSampler> MakeSampler(SceneSamplerOptions options = {}) {
  auto sampler = SceneSampler::Create(options);
  EXPECT_THAT(sampler, IsOk());
  return sampler.ok() ? std::move(sampler).value() : nullptr;
}

bool SameBytes(const cv::Mat& a, const cv::Mat& b) {
  return a.rows == b.rows && a.cols == b.cols && a.type() == b.type() && a.isContinuous() && b.isContinuous() &&
         std::memcmp(a.data, b.data, a.total() * a.elemSize()) == 0;
}

Rgb PixelAt(const cv::Mat& image, int y, int x) {
  const uint8_t* p = image.ptr<uint8_t>(y) + 3 * x;
  return {p[0], p[1], p[2]};
}

std::string Describe(const Scene& s) {
  return absl::StrCat(ColourName(s.colour), " ", ShapeName(s.shape), " (", SizeName(s.size), ", ",
                      PositionName(s.position), ", ", BackgroundKindName(s.background.kind), ")");
}

// Bounding box of the pixels the shape covers at all.
cv::Rect AlphaBox(const cv::Mat& alpha) {
  std::vector<cv::Point> points;
  cv::findNonZero(alpha, points);
  return points.empty() ? cv::Rect() : cv::boundingRect(points);
}

TEST(RngTest, MatchesSplitMix64ReferenceValues) {
  // SplitMix64's published first output for state 0, and Rng::For's mixing of (seed, index, stream), computed
  // independently (Python): fixing them keeps every machine's world the same.
  Rng zero(0);
  EXPECT_EQ(zero.Next(), 0xe220a8397b1dcdafULL);
  Rng rng = Rng::For(1, 2, 3);
  EXPECT_EQ(rng.Next(), 0xbfac9ab21638028fULL);
  EXPECT_EQ(rng.Next(), 0x7f0492b9b7eccff1ULL);
  EXPECT_EQ(rng.Next(), 0x5425d2a24b45a76bULL);
}

TEST(RngTest, UniformDrawsStayInRangeAndCoverIt) {
  Rng rng(42);
  std::set<int> seen;
  for (int i = 0; i < 2000; ++i) {
    const int v = rng.UniformInt(-3, 3);
    ASSERT_GE(v, -3);
    ASSERT_LE(v, 3);
    seen.insert(v);
    const double u = rng.Uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
  EXPECT_EQ(seen.size(), 7u);
  EXPECT_NE(Rng::For(1, 2, 3).Next(), Rng::For(1, 3, 2).Next());
}

TEST(LabelsTest, NamesAreUniqueAndRoundTrip) {
  std::set<std::string> names;
  for (Shape s : kShapes) {
    EXPECT_EQ(ShapeFromName(ShapeName(s)), s);
    names.insert(std::string(ShapeName(s)));
  }
  EXPECT_EQ(names.size(), kShapes.size());
  names.clear();
  for (Colour c : kBackgroundColours) {
    EXPECT_EQ(ColourFromName(ColourName(c)), c);
    names.insert(std::string(ColourName(c)));
  }
  EXPECT_EQ(names.size(), kBackgroundColours.size());
  EXPECT_EQ(ShapeFromName("blob"), std::nullopt);
  EXPECT_EQ(ColourFromName("Red"), std::nullopt);
  EXPECT_EQ(PositionName(Position::kTopLeft), "top left");
  EXPECT_EQ(ShapeMaxRotation(Shape::kCircle), 0);
  EXPECT_EQ(ShapeMaxRotation(Shape::kRing), 0);
  EXPECT_GT(ShapeMaxRotation(Shape::kStar), 0);
}

TEST(LabelsTest, ShapeColoursAreFarApart) {
  for (Colour a : kShapeColours) {
    for (Colour b : kShapeColours) {
      if (a == b) continue;
      EXPECT_GE(ColourDistance(ColourRgb(a), ColourRgb(b)), 90) << ColourName(a) << " " << ColourName(b);
    }
  }
}

TEST(SplitTest, SeedsBelongToExactlyOneSplit) {
  EXPECT_THAT(CheckSeed(Split::kTrain, 0), IsOk());
  EXPECT_THAT(CheckSeed(Split::kTrain, kFirstEvalSeed - 1), IsOk());
  EXPECT_THAT(CheckSeed(Split::kEval, kFirstEvalSeed), IsOk());
  EXPECT_THAT(CheckSeed(Split::kTrain, kFirstEvalSeed),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("training seeds are < 1000000")));
  EXPECT_THAT(CheckSeed(Split::kEval, 7),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an evaluation seed")));
  EXPECT_EQ(SplitOfSeed(999'999), Split::kTrain);
  EXPECT_EQ(SplitOfSeed(1'000'000), Split::kEval);
}

TEST(SceneSamplerTest, RefusesASeedOfTheOtherSplit) {
  EXPECT_THAT(SceneSampler::Create({.split = Split::kTrain, .seed = 1'000'000}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a training seed")));
  EXPECT_THAT(SceneSampler::Create({.split = Split::kEval, .seed = 5}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an evaluation seed")));
  EXPECT_THAT(SceneSampler::Create({.split = Split::kEval, .seed = 1'000'005}), IsOk());
}

TEST(SceneSamplerTest, RejectsBadOptions) {
  EXPECT_THAT(SceneSampler::Create({.render = {.image_size = 4}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("image_size")));
  EXPECT_THAT(SceneSampler::Create({.colours = {Colour::kGray}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gray")));
  EXPECT_THAT(SceneSampler::Create({.plain_probability = 0.8, .gradient_probability = 0.5}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("plain + gradient")));
  EXPECT_THAT(SceneSampler::Create({.big_extent = {0.8, 0.7}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("extent")));
  auto sampler = MakeSampler();
  EXPECT_THAT(sampler->SceneWithLabels(0, Colour::kGray, Shape::kStar),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shape colour")));
}

TEST(SceneSamplerTest, SameSeedAndIndexGiveIdenticalExamples) {
  auto a = MakeSampler({.seed = 17});
  auto b = MakeSampler({.seed = 17});
  for (uint64_t i : {0ull, 1ull, 2ull, 99ull, 123456789ull}) {
    const Example x = a->Sample(i);
    const Example y = b->Sample(i);
    EXPECT_TRUE(SameBytes(x.image, y.image)) << i;
    EXPECT_EQ(x.caption, y.caption);
    EXPECT_EQ(Describe(x.scene), Describe(y.scene));
    EXPECT_EQ(x.scene.rotation_deg, y.scene.rotation_deg);
    // Random access: asking again, out of order, changes nothing.
    EXPECT_TRUE(SameBytes(a->Sample(i).image, x.image));
  }
}

TEST(SceneSamplerTest, DifferentIndicesAndSeedsGiveDifferentImages) {
  auto a = MakeSampler({.seed = 17});
  auto b = MakeSampler({.seed = 18});
  std::vector<cv::Mat> images;
  for (uint64_t i = 0; i < 20; ++i) images.push_back(a->Sample(i).image);
  for (size_t i = 0; i < images.size(); ++i) {
    for (size_t j = i + 1; j < images.size(); ++j) EXPECT_FALSE(SameBytes(images[i], images[j])) << i << " " << j;
    EXPECT_FALSE(SameBytes(images[i], b->Sample(i).image)) << i;
  }
}

TEST(SceneSamplerTest, DrawsEveryShapeColourBackgroundSizeAndPosition) {
  auto sampler = MakeSampler();
  std::set<int> shapes, colours, kinds, sizes, positions;
  for (uint64_t i = 0; i < 2000; ++i) {
    const Scene s = sampler->SceneAt(i);
    shapes.insert(static_cast<int>(s.shape));
    colours.insert(static_cast<int>(s.colour));
    kinds.insert(static_cast<int>(s.background.kind));
    sizes.insert(static_cast<int>(s.size));
    positions.insert(static_cast<int>(s.position));
  }
  EXPECT_EQ(shapes.size(), kShapes.size());
  EXPECT_EQ(colours.size(), kShapeColours.size());
  EXPECT_EQ(kinds.size(), kBackgroundKinds.size());
  EXPECT_EQ(sizes.size(), kSizeClasses.size());
  EXPECT_EQ(positions.size(), kPositions.size());
}

TEST(SceneSamplerTest, RestrictsToTheChosenShapesAndColours) {
  auto sampler = MakeSampler({.shapes = {Shape::kStar, Shape::kHeart}, .colours = {Colour::kBlue}});
  for (uint64_t i = 0; i < 100; ++i) {
    const Scene s = sampler->SceneAt(i);
    EXPECT_TRUE(s.shape == Shape::kStar || s.shape == Shape::kHeart);
    EXPECT_EQ(s.colour, Colour::kBlue);
  }
}

// Every colour x shape: the shape's pixels are there, in the shape's colour, where the scene puts it, and no
// background pixel comes near the shape colour.
TEST(RenderTest, EveryColourAndShapeIsDrawnWhereTheSceneSays) {
  auto sampler = MakeSampler();
  const int n = 64;
  uint64_t index = 0;
  for (Colour colour : kShapeColours) {
    for (Shape shape : kShapes) {
      auto scene = sampler->SceneWithLabels(index++, colour, shape);
      ASSERT_THAT(scene, IsOk());
      auto r = Render(*scene, {.image_size = n});
      ASSERT_THAT(r, IsOk());
      const std::string what = Describe(*scene);
      // Rotated by at most 20°, a shape stays inside a box 1.45 times its unrotated box, about the same centre.
      const double half = scene->extent * n / 2 * 1.45 + 1;
      const double cx = scene->center_x * n, cy = scene->center_y * n;
      int near_shape = 0;
      for (int y = 0; y < n; ++y) {
        for (int x = 0; x < n; ++x) {
          const Rgb p = PixelAt(r->image, y, x);
          const int a = r->alpha.at<uint8_t>(y, x);
          const bool inside = std::abs(x + 0.5 - cx) <= half && std::abs(y + 0.5 - cy) <= half;
          if (a > 0) {
            ASSERT_TRUE(inside) << what << " covers (" << x << ", " << y << ")";
          }
          if (a == 255) {
            ASSERT_EQ(p, scene->rgb) << what;
          }
          if (a == 0) {
            ASSERT_GE(ColourDistance(p, scene->rgb), sampler->options().min_colour_distance) << what;
          }
          if (ColourDistance(p, scene->rgb) < 40) ++near_shape;
        }
      }
      const double box = scene->extent * n * scene->extent * n;
      EXPECT_GE(near_shape, 0.2 * box) << what << ": " << near_shape << " pixels in the shape's colour";
    }
  }
}

TEST(RenderTest, ShapesAreDistinctSilhouettes) {
  const int n = 64;
  std::vector<cv::Mat> masks;
  for (Shape shape : kShapes) {
    Scene scene;
    scene.shape = shape;
    scene.extent = 0.6;
    auto r = Render(scene, {.image_size = n});
    ASSERT_THAT(r, IsOk());
    masks.push_back(r->alpha >= 128);
  }
  for (size_t i = 0; i < masks.size(); ++i) {
    for (size_t j = i + 1; j < masks.size(); ++j) {
      const double inter = cv::countNonZero(masks[i] & masks[j]);
      const double uni = cv::countNonZero(masks[i] | masks[j]);
      EXPECT_LT(inter / uni, 0.85) << ShapeName(kShapes[i]) << " vs " << ShapeName(kShapes[j]);
    }
  }
}

TEST(RenderTest, BackgroundsNeverComeNearTheShapeColour) {
  auto sampler = MakeSampler({.seed = 3});
  const double min_distance = sampler->options().min_colour_distance;
  for (uint64_t i = 0; i < 300; ++i) {
    const Scene scene = sampler->SceneAt(i);
    EXPECT_NE(scene.background.colour, scene.colour) << Describe(scene);
    if (scene.background.kind == BackgroundKind::kGradient) {
      EXPECT_NE(scene.background.colour2, scene.colour) << Describe(scene);
    }
    auto r = Render(scene, sampler->options().render);
    ASSERT_THAT(r, IsOk());
    double closest = 1e9;
    for (int y = 0; y < r->image.rows; ++y) {
      for (int x = 0; x < r->image.cols; ++x) {
        if (r->alpha.at<uint8_t>(y, x) == 0)
          closest = std::min(closest, ColourDistance(PixelAt(r->image, y, x), scene.rgb));
      }
    }
    ASSERT_GE(closest, min_distance) << i << ": " << Describe(scene);
  }
}

TEST(RenderTest, PositionsAndSizesMatchTheirNames) {
  auto sampler = MakeSampler({.seed = 5});
  const SceneSamplerOptions& o = sampler->options();
  const int n = o.render.image_size;
  for (uint64_t i = 0; i < 300; ++i) {
    const Scene s = sampler->SceneAt(i);
    const std::string what = Describe(s);
    const auto& range = s.size == SizeClass::kSmall    ? o.small_extent
                        : s.size == SizeClass::kMedium ? o.medium_extent
                                                       : o.big_extent;
    EXPECT_LE(s.extent, range[1]) << what;
    // Only big shapes off the centre are shrunk, and they stay bigger than any medium one would start.
    EXPECT_GE(s.extent, s.size == SizeClass::kBig ? o.medium_extent[0] + 0.05 : range[0]) << what;
    auto r = Render(s, o.render);
    ASSERT_THAT(r, IsOk());
    const cv::Rect box = AlphaBox(r->alpha);
    ASSERT_GT(box.area(), 0) << what;
    const double dx = (box.x + box.width / 2.0) / n - 0.5, dy = (box.y + box.height / 2.0) / n - 0.5;
    const std::string name(PositionName(s.position));
    const auto side = [&](double d, bool negative, bool positive) {
      if (negative) return d < -0.08;
      if (positive) return d > 0.08;
      return std::abs(d) < 0.08;
    };
    EXPECT_TRUE(side(dx, absl::StrContains(name, "left"), absl::StrContains(name, "right"))) << what << " dx " << dx;
    EXPECT_TRUE(side(dy, absl::StrContains(name, "top"), absl::StrContains(name, "bottom"))) << what << " dy " << dy;
  }
}

TEST(RenderTest, SceneBoundsHoldTheShapeTightly) {
  auto sampler = MakeSampler({.seed = 6});
  const int n = sampler->options().render.image_size;
  for (uint64_t i = 0; i < 200; ++i) {
    const Scene s = sampler->SceneAt(i);
    auto r = Render(s, sampler->options().render);
    ASSERT_THAT(r, IsOk());
    const cv::Rect box = AlphaBox(r->alpha);
    const auto [x0, y0, x1, y1] = SceneBounds(s);
    // Every covered pixel touches the bounds (pixel x spans [x, x + 1)), and the bounds are not much larger
    // than the covered box (a crescent's bite or a rotated star's tips leave some room on one side).
    constexpr double kEps = 0.05;  // supersampling rounds edges to 1/8 pixel
    EXPECT_GT(box.x + 1 + kEps, x0 * n) << Describe(s);
    EXPECT_GT(box.y + 1 + kEps, y0 * n) << Describe(s);
    EXPECT_LT(box.x + box.width - 1 - kEps, x1 * n) << Describe(s);
    EXPECT_LT(box.y + box.height - 1 - kEps, y1 * n) << Describe(s);
    EXPECT_LE((x1 - x0) * (y1 - y0) * n * n, 1.6 * box.area()) << Describe(s);
  }
}

TEST(RenderTest, RespectsTheImageSize) {
  auto sampler = MakeSampler({.seed = 9});
  const Scene scene = sampler->SceneAt(4);
  double coverage[2];
  int k = 0;
  for (int size : {64, 96}) {
    auto r = Render(scene, {.image_size = size});
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->image.rows, size);
    EXPECT_EQ(r->image.cols, size);
    EXPECT_EQ(r->image.type(), CV_8UC3);
    EXPECT_TRUE(r->image.isContinuous());
    EXPECT_EQ(r->alpha.rows, size);
    EXPECT_EQ(r->alpha.type(), CV_8UC1);
    coverage[k++] = cv::sum(r->alpha)[0] / (255.0 * size * size);
  }
  EXPECT_NEAR(coverage[0], coverage[1], 0.01) << "the same scene covers the same fraction at any size";
  auto big = MakeSampler({.seed = 9, .render = {.image_size = 96}});
  EXPECT_EQ(big->Sample(0).image.rows, 96);
  EXPECT_THAT(Render(scene, {.image_size = 64, .supersample = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("supersample")));
  Scene broken = scene;
  broken.background.gradient_direction = 8;
  EXPECT_THAT(Render(broken, {}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gradient_direction")));
}

TEST(CaptionTest, ArticlesAndPrompts) {
  EXPECT_EQ(Article("orange"), "an");
  EXPECT_EQ(Article("arrow"), "an");
  EXPECT_EQ(Article("heart"), "a");
  EXPECT_EQ(Article("red circle"), "a");
  EXPECT_EQ(ZeroShotPrompt(Colour::kRed, Shape::kCircle), "a photo of a red circle");
  EXPECT_EQ(ZeroShotPrompt(Colour::kOrange, Shape::kHeart), "a photo of an orange heart");
  EXPECT_EQ(ScenePrompt(Colour::kRed, Shape::kCircle, Colour::kWhite), "a red circle on a white background");
  EXPECT_EQ(ScenePrompt(Colour::kOrange, Shape::kArrow, Colour::kOrange), "an orange arrow on an orange background");
}

TEST(CaptionTest, TemplatesGiveTheExpectedSentences) {
  Scene scene;
  scene.shape = Shape::kSquare;
  scene.colour = Colour::kYellow;
  scene.size = SizeClass::kBig;
  scene.position = Position::kTopLeft;
  scene.background.colour = Colour::kBlack;
  std::vector<std::string> all = AllCaptions(scene);
  EXPECT_THAT(all, Contains("a yellow square"));
  EXPECT_THAT(all, Contains("a big yellow square in the top left"));
  EXPECT_THAT(all, Contains("a photo of a large yellow square on a black background in the top left"));
  EXPECT_THAT(all, Contains("a drawing of a yellow square on a black background"));
  EXPECT_THAT(all, Contains("a photo of a yellow square"));
  scene.colour = Colour::kOrange;
  scene.shape = Shape::kHeart;
  scene.background = {.kind = BackgroundKind::kGradient, .colour = Colour::kBlue, .colour2 = Colour::kWhite};
  all = AllCaptions(scene);
  EXPECT_THAT(all, Contains("an orange heart"));
  EXPECT_THAT(all, Contains("an image of an orange heart on a blue and white gradient"));
  scene.background = {.kind = BackgroundKind::kNoise, .colour = Colour::kOrange};
  scene.colour = Colour::kBlue;
  EXPECT_THAT(AllCaptions(scene), Contains("a blue heart on a noisy orange background"));
}

// An example's caption parts say exactly which optional phrases its caption holds.
TEST(CaptionTest, CaptionPartsMatchTheCaption) {
  auto sampler = MakeSampler({.seed = 13});
  int named[3] = {0, 0, 0};
  for (uint64_t i = 0; i < 300; ++i) {
    const Example e = sampler->Sample(i);
    const std::string& c = e.caption;
    const bool background = absl::StrContains(c, " background") || absl::StrContains(c, " gradient");
    const bool position = absl::StrContains(c, " in the ") || absl::StrContains(c, " at the ") ||
                          absl::StrContains(c, " on the left") || absl::StrContains(c, " on the right");
    const bool size = absl::StrContains(c, "small ") || absl::StrContains(c, "medium-sized ") ||
                      absl::StrContains(c, "big ") || absl::StrContains(c, "large ");
    EXPECT_EQ(e.caption_parts.background, background) << c;
    EXPECT_EQ(e.caption_parts.position, position) << c;
    EXPECT_EQ(e.caption_parts.size, size) << c;
    named[0] += size, named[1] += background, named[2] += position;
  }
  for (int n : named) EXPECT_GT(n, 50);  // each part is named in 30-35 % of captions
}

// Every "a"/"an" is followed by a word of the right kind.
void ExpectGrammatical(const std::string& caption) {
  const std::vector<std::string> words = absl::StrSplit(caption, ' ');
  for (size_t i = 0; i < words.size(); ++i) {
    ASSERT_FALSE(words[i].empty()) << "double space in '" << caption << "'";
    if (words[i] != "a" && words[i] != "an") continue;
    ASSERT_LT(i + 1, words.size()) << caption;
    EXPECT_EQ(words[i], Article(words[i + 1])) << "'" << caption << "'";
  }
}

TEST(CaptionTest, EveryCaptionNamesColourAndShapeGrammatically) {
  auto sampler = MakeSampler({.seed = 11});
  std::set<std::string> distinct;
  for (uint64_t i = 0; i < 200; ++i) {
    const Scene scene = sampler->SceneAt(i);
    const std::string label = absl::StrCat(ColourName(scene.colour), " ", ShapeName(scene.shape));
    const std::vector<std::string> all = AllCaptions(scene);
    EXPECT_THAT(all, Contains(ZeroShotPrompt(scene.colour, scene.shape)));
    Rng rng = Rng::For(11, i, 0);
    std::vector<std::string> drawn = Captions(scene, rng, 4);
    EXPECT_EQ(drawn.size(), 4u);
    drawn.push_back(sampler->Sample(i).caption);
    for (const std::string& c : drawn) EXPECT_THAT(all, Contains(c));
    for (const std::string& c : all) {
      EXPECT_THAT(c, HasSubstr(label));
      ExpectGrammatical(c);
      distinct.insert(c);
    }
  }
  EXPECT_GT(distinct.size(), 2000u);
}

TEST(SceneSamplerTest, SampleWithColourFixesTheColourAndIsDeterministic) {
  auto sampler = MakeSampler({.seed = 12});
  std::set<Shape> shapes_seen;
  for (uint64_t i = 0; i < 60; ++i) {
    auto a = sampler->SampleWithColour(i, Colour::kGreen);
    auto b = sampler->SampleWithColour(i, Colour::kGreen);
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    EXPECT_EQ(a->scene.colour, Colour::kGreen);
    EXPECT_TRUE(absl::StrContains(a->caption, "green")) << a->caption;
    EXPECT_TRUE(SameBytes(a->image, b->image));
    EXPECT_EQ(a->caption, b->caption);
    shapes_seen.insert(a->scene.shape);
  }
  EXPECT_EQ(shapes_seen.size(), kShapes.size());
  EXPECT_THAT(sampler->SampleWithColour(0, Colour::kGray),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a shape colour")));
}

TEST(SceneSamplerTest, FieldsAreOneColourWithNoShapeAndNameOnlyTheColour) {
  auto sampler = MakeSampler({.seed = 12});
  int noisy = 0;
  for (uint64_t i = 0; i < 40; ++i) {
    auto a = sampler->SampleField(i, Colour::kBlue);
    auto b = sampler->SampleField(i, Colour::kBlue);
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    EXPECT_TRUE(SameBytes(a->image, b->image));
    EXPECT_EQ(a->caption, b->caption);
    EXPECT_EQ(a->background.colour, Colour::kBlue);
    EXPECT_TRUE(absl::EndsWith(a->caption, "blue background")) << a->caption;
    for (absl::string_view word : absl::StrSplit(a->caption, ' ')) {
      EXPECT_FALSE(ShapeFromName(word).has_value()) << a->caption;  // "a rendering of ..." names no ring
    }
    // Every pixel is the jittered blue, moved by at most the gray grain of a noisy field.
    const bool is_noisy = a->background.kind == BackgroundKind::kNoise;
    noisy += is_noisy;
    const int tolerance = is_noisy ? a->background.noise_amplitude : 0;
    const Rgb want = a->background.rgb;
    for (int y = 0; y < a->image.rows; ++y) {
      for (int x = 0; x < a->image.cols; ++x) {
        const cv::Vec3b p = a->image.at<cv::Vec3b>(y, x);
        ASSERT_LE(std::abs(p[0] - want.r), tolerance);
        ASSERT_LE(std::abs(p[1] - want.g), tolerance);
        ASSERT_LE(std::abs(p[2] - want.b), tolerance);
      }
    }
  }
  EXPECT_GT(noisy, 5);
  EXPECT_LT(noisy, 35);
  EXPECT_THAT(sampler->SampleField(0, Colour::kGray),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a shape colour")));
}

TEST(BestShapeOverlapTest, WorldShapesScoreHighBlobsLowEmptyZero) {
  auto sampler = MakeSampler({.seed = 13});
  double lowest_shape = 1;
  for (uint64_t i = 0; i < 200; ++i) {
    auto r = Render(sampler->SceneAt(i), sampler->options().render);
    ASSERT_THAT(r, IsOk());
    lowest_shape = std::min(lowest_shape, BestShapeOverlap(r->alpha));
  }
  std::printf("lowest BestShapeOverlap of 200 world shapes: %.3f\n", lowest_shape);
  EXPECT_GE(lowest_shape, 0.75);
  EXPECT_GT(lowest_shape, kMaxBlobOverlap);
  EXPECT_EQ(BestShapeOverlap(cv::Mat::zeros(64, 64, CV_8UC1)), 0);
}

TEST(SceneSamplerTest, BlobsAreLumpsOfTheColourThatAreNoneOfTheShapes) {
  auto sampler = MakeSampler({.seed = 14});
  for (uint64_t i = 0; i < 60; ++i) {
    auto a = sampler->SampleBlob(i, Colour::kRed);
    auto b = sampler->SampleBlob(i, Colour::kRed);
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    EXPECT_TRUE(SameBytes(a->image, b->image));
    EXPECT_EQ(a->caption, b->caption);
    EXPECT_TRUE(absl::EndsWith(a->caption, "a red blob")) << a->caption;
    EXPECT_LT(a->overlap, kMaxBlobOverlap);
    EXPECT_NE(a->background.colour, Colour::kRed);
    // The blob covers a real part of the picture in (about) the shape colour.
    int red = 0;
    for (int y = 0; y < a->image.rows; ++y) {
      for (int x = 0; x < a->image.cols; ++x) {
        const cv::Vec3b p = a->image.at<cv::Vec3b>(y, x);
        red += ColourDistance({p[0], p[1], p[2]}, ColourRgb(Colour::kRed)) < 60;  // jitter and grain
      }
    }
    EXPECT_GT(red, a->image.total() / 20) << i;
  }
  EXPECT_FALSE(SameBytes(sampler->SampleBlob(0, Colour::kRed)->image, sampler->SampleBlob(1, Colour::kRed)->image));
  EXPECT_THAT(sampler->SampleBlob(0, Colour::kGray),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a shape colour")));
}

TEST(DistinctPairsTest, FortyImagesWithAllDifferentLabelPairs) {
  auto sampler = MakeSampler({.split = Split::kEval, .seed = 1'000'001});
  auto group = sampler->DistinctPairs(7, 40);
  ASSERT_THAT(group, IsOk());
  ASSERT_EQ(group->size(), 40u);
  std::set<std::pair<Colour, Shape>> pairs;
  for (const Example& e : *group) {
    pairs.insert({e.scene.colour, e.scene.shape});
    EXPECT_EQ(e.image.rows, 64);
    EXPECT_THAT(e.caption, HasSubstr(absl::StrCat(ColourName(e.scene.colour), " ", ShapeName(e.scene.shape))));
  }
  EXPECT_EQ(pairs.size(), 40u);
  // Deterministic, and another group is another draw.
  auto again = sampler->DistinctPairs(7, 40);
  ASSERT_THAT(again, IsOk());
  auto other = sampler->DistinctPairs(8, 40);
  ASSERT_THAT(other, IsOk());
  for (int i = 0; i < 40; ++i) EXPECT_TRUE(SameBytes((*group)[i].image, (*again)[i].image));
  EXPECT_FALSE(SameBytes((*group)[0].image, (*other)[0].image));
  // All 80 pairs fit; 81 do not.
  EXPECT_THAT(sampler->DistinctPairs(0, 80), IsOk());
  EXPECT_THAT(sampler->DistinctPairs(0, 81), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pairs")));
}

}  // namespace
}  // namespace clipserve::shapes
