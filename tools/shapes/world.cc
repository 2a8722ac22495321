#include "tools/shapes/world.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <opencv2/imgproc.hpp>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace clipserve::shapes {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Tables

struct ShapeEntry {
  const char* name;
  double max_rotation_deg;
};
// Indexed by Shape.
constexpr ShapeEntry kShapeTable[] = {
    {"circle", 0}, {"square", 12}, {"triangle", 20}, {"star", 20},     {"cross", 12},
    {"heart", 20}, {"ring", 0},    {"diamond", 12},  {"crescent", 20}, {"arrow", 20},
};
static_assert(sizeof(kShapeTable) / sizeof(kShapeTable[0]) == kShapes.size());

struct ColourEntry {
  const char* name;
  Rgb rgb;
};
// Indexed by Colour. Saturated, far apart: the closest pair (orange, yellow) is 92 apart in RGB.
constexpr ColourEntry kColourTable[] = {
    {"red", {220, 30, 30}},     {"orange", {255, 135, 0}}, {"yellow", {250, 225, 20}},
    {"green", {30, 160, 50}},   {"blue", {30, 80, 230}},   {"purple", {145, 45, 200}},
    {"white", {245, 245, 245}}, {"black", {20, 20, 20}},   {"gray", {128, 128, 128}},
};
static_assert(sizeof(kColourTable) / sizeof(kColourTable[0]) == kBackgroundColours.size());

constexpr const char* kBackgroundKindNames[] = {"plain", "gradient", "noise"};
constexpr const char* kSizeNames[] = {"small", "medium", "big"};
constexpr const char* kPositionNames[] = {"center", "top left",    "top",    "top right",   "left",
                                          "right",  "bottom left", "bottom", "bottom right"};
// Position -> direction of the offset from the centre (x right, y down).
constexpr int kPositionDx[] = {0, -1, 0, 1, -1, 1, -1, 0, 1};
constexpr int kPositionDy[] = {0, -1, -1, -1, 0, 0, 1, 1, 1};
// How captions say where the shape is.
constexpr const char* kPositionPhrases[] = {"in the center",      "in the top left", "at the top",
                                            "in the top right",   "on the left",     "on the right",
                                            "in the bottom left", "at the bottom",   "in the bottom right"};
// How captions say the size (all are used; one is drawn).
const std::vector<std::vector<const char*>>& SizeWords() {
  static const auto* words = new std::vector<std::vector<const char*>>{{"small"}, {"medium-sized"}, {"big", "large"}};
  return *words;
}
constexpr const char* kPrefixes[] = {"a photo of", "a picture of", "an image of", "a drawing of", "a rendering of"};

// Gradient direction -> (dx, dy), 45° steps clockwise on screen from "left to right".
constexpr int kGradientDx[] = {1, 1, 0, -1, -1, -1, 0, 1};
constexpr int kGradientDy[] = {0, 1, 1, 1, 0, -1, -1, -1};

// Streams of Rng::For(seed, index, stream).
constexpr uint64_t kSceneStream = 1;
constexpr uint64_t kCaptionStream = 2;
constexpr uint64_t kLabelledStream = 3;
constexpr uint64_t kPairsStream = 4;
constexpr uint64_t kColourStream = 5;
constexpr uint64_t kColourCaptionStream = 6;
constexpr uint64_t kFieldStream = 7;
constexpr uint64_t kBlobStream = 8;

constexpr double kPi = 3.14159265358979323846;

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// ---------------------------------------------------------------------------------------------------------------
// Geometry: each shape as contours in unit coordinates, its unrotated bounding box centred on the origin with
// half-side 1 (the longer side). Holes are drawn after the filled contours, erasing.

struct Contour {
  std::vector<cv::Point2d> points;
  bool hole = false;
};
using Outline = std::vector<Contour>;

std::vector<cv::Point2d> Circle(double cx, double cy, double r, int n) {
  std::vector<cv::Point2d> p;
  p.reserve(n);
  for (int i = 0; i < n; ++i) {
    const double a = 2 * kPi * i / n;
    p.emplace_back(cx + r * std::cos(a), cy + r * std::sin(a));
  }
  return p;
}

// Points on the circle (cx, cy, r) from angle a0 to a1 (radians, y down), n + 1 points including both ends.
void Arc(double cx, double cy, double r, double a0, double a1, int n, std::vector<cv::Point2d>* out) {
  for (int i = 0; i <= n; ++i) {
    const double a = a0 + (a1 - a0) * i / n;
    out->emplace_back(cx + r * std::cos(a), cy + r * std::sin(a));
  }
}

Outline RawOutline(Shape shape) {
  constexpr int kRound = 96;  // vertices of a full circle
  switch (shape) {
    case Shape::kCircle:
      return {{Circle(0, 0, 1, kRound)}};
    case Shape::kSquare:
      return {{{{-1, -1}, {1, -1}, {1, 1}, {-1, 1}}}};
    case Shape::kTriangle: {
      std::vector<cv::Point2d> p;
      for (int i = 0; i < 3; ++i) {
        const double a = -kPi / 2 + 2 * kPi * i / 3;
        p.emplace_back(std::cos(a), std::sin(a));
      }
      return {{p}};
    }
    case Shape::kStar: {
      std::vector<cv::Point2d> p;
      for (int i = 0; i < 10; ++i) {
        const double a = -kPi / 2 + kPi * i / 5;
        const double r = i % 2 == 0 ? 1.0 : 0.45;
        p.emplace_back(r * std::cos(a), r * std::sin(a));
      }
      return {{p}};
    }
    case Shape::kCross: {
      constexpr double w = 0.32;  // half-width of an arm
      const std::vector<cv::Point2d> p = {{-w, -1}, {w, -1}, {w, -w}, {1, -w}, {1, w},   {w, w},
                                          {w, 1},   {-w, 1}, {-w, w}, {-1, w}, {-1, -w}, {-w, -w}};
      return {{p}};
    }
    case Shape::kHeart: {
      std::vector<cv::Point2d> p;
      for (int i = 0; i < kRound; ++i) {
        const double t = 2 * kPi * i / kRound;
        const double s = std::sin(t);
        p.emplace_back(16 * s * s * s,
                       -(13 * std::cos(t) - 5 * std::cos(2 * t) - 2 * std::cos(3 * t) - std::cos(4 * t)));
      }
      return {{p}};
    }
    case Shape::kRing:
      return {{Circle(0, 0, 1, kRound)}, {Circle(0, 0, 0.6, kRound), /*hole=*/true}};
    case Shape::kDiamond:
      return {{{{0, -1}, {0.75, 0}, {0, 1}, {-0.75, 0}}}};
    case Shape::kCrescent: {
      // The unit circle minus a circle of radius 0.8 centred 0.5 to the right: the outer arc through the
      // left side, then the inner arc back.
      constexpr double d = 0.5;
      constexpr double r = 0.8;
      const double ix = (1 - r * r + d * d) / (2 * d);
      const double iy = std::sqrt(1 - ix * ix);
      const double outer = std::atan2(iy, ix);
      const double inner = std::atan2(iy, ix - d);
      std::vector<cv::Point2d> p;
      Arc(0, 0, 1, outer, 2 * kPi - outer, 64, &p);
      Arc(d, 0, r, 2 * kPi - inner, inner, 48, &p);
      return {{p}};
    }
    case Shape::kArrow:
      return {{{{0, -1}, {0.85, -0.1}, {0.3, -0.1}, {0.3, 1}, {-0.3, 1}, {-0.3, -0.1}, {-0.85, -0.1}}}};
  }
  return {};
}

Outline Normalise(Outline outline) {
  double x0 = 1e9, x1 = -1e9, y0 = 1e9, y1 = -1e9;
  for (const Contour& c : outline) {
    if (c.hole) continue;
    for (const cv::Point2d& p : c.points) {
      x0 = std::min(x0, p.x), x1 = std::max(x1, p.x);
      y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
    }
  }
  const double cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const double scale = 2 / std::max(x1 - x0, y1 - y0);
  for (Contour& c : outline) {
    for (cv::Point2d& p : c.points) p = {(p.x - cx) * scale, (p.y - cy) * scale};
  }
  return outline;
}

const Outline& UnitOutline(Shape shape) {
  static const auto* outlines = [] {
    auto* v = new std::vector<Outline>;
    for (Shape s : kShapes) v->push_back(Normalise(RawOutline(s)));
    return v;
  }();
  return (*outlines)[static_cast<size_t>(shape)];
}

cv::Point2d Rotate(cv::Point2d p, double cos_a, double sin_a) {
  return {p.x * cos_a - p.y * sin_a, p.x * sin_a + p.y * cos_a};
}

// Half-extents (x, y) of the shape rotated by `rotation_deg`, in unit coordinates.
std::pair<double, double> RotatedHalfExtents(Shape shape, double rotation_deg) {
  const double a = rotation_deg * kPi / 180;
  const double c = std::cos(a), s = std::sin(a);
  double hx = 0, hy = 0;
  for (const Contour& contour : UnitOutline(shape)) {
    if (contour.hole) continue;
    for (const cv::Point2d& p : contour.points) {
      const cv::Point2d q = Rotate(p, c, s);
      hx = std::max(hx, std::abs(q.x));
      hy = std::max(hy, std::abs(q.y));
    }
  }
  return {hx, hy};
}

// ---------------------------------------------------------------------------------------------------------------
// Drawing

uint8_t Clamp255(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

void DrawBackground(const Background& bg, cv::Mat* image) {
  const int n = image->rows;
  switch (bg.kind) {
    case BackgroundKind::kPlain:
      image->setTo(cv::Scalar(bg.rgb.r, bg.rgb.g, bg.rgb.b));
      return;
    case BackgroundKind::kNoise: {
      Rng rng = Rng::For(bg.noise_seed, 0, 0);
      const int a = bg.noise_amplitude;
      for (int y = 0; y < n; ++y) {
        uint8_t* row = image->ptr<uint8_t>(y);
        for (int x = 0; x < n; ++x) {
          const int v = rng.UniformInt(-a, a);
          row[3 * x + 0] = Clamp255(bg.rgb.r + v);
          row[3 * x + 1] = Clamp255(bg.rgb.g + v);
          row[3 * x + 2] = Clamp255(bg.rgb.b + v);
        }
      }
      return;
    }
    case BackgroundKind::kGradient: {
      // Exact integer interpolation: p runs over [-m, m] along the direction, weight of rgb2 = (p + m) / 2m.
      const int dx = kGradientDx[bg.gradient_direction], dy = kGradientDy[bg.gradient_direction];
      const int64_t m = int64_t{std::abs(dx) + std::abs(dy)} * (n - 1);
      const int64_t den = 2 * m;
      const auto lerp = [&](int c1, int c2, int64_t w) {
        return static_cast<uint8_t>((c1 * (den - w) + c2 * w + m) / den);
      };
      for (int y = 0; y < n; ++y) {
        uint8_t* row = image->ptr<uint8_t>(y);
        for (int x = 0; x < n; ++x) {
          const int64_t w = dx * int64_t{2 * x + 1 - n} + dy * int64_t{2 * y + 1 - n} + m;
          row[3 * x + 0] = lerp(bg.rgb.r, bg.rgb2.r, w);
          row[3 * x + 1] = lerp(bg.rgb.g, bg.rgb2.g, w);
          row[3 * x + 2] = lerp(bg.rgb.b, bg.rgb2.b, w);
        }
      }
      return;
    }
  }
}

// The coverage, 0..255, at image_size of `outline` (unit coordinates) placed as a scene places its shape
// (extent, centre, rotation): rasterised at image_size * supersample, then box-averaged.
cv::Mat DrawOutlineAlpha(const Outline& outline, const Scene& scene, const RenderOptions& options) {
  const int n = options.image_size, ss = options.supersample;
  const int big = n * ss;
  cv::Mat canvas = cv::Mat::zeros(big, big, CV_8UC1);
  constexpr int kShift = 6;  // fixed-point fraction bits of the polygon vertices
  const double a = scene.rotation_deg * kPi / 180;
  const double c = std::cos(a), s = std::sin(a);
  const double r = scene.extent * n / 2;  // output pixels per unit
  const double cx = scene.center_x * n, cy = scene.center_y * n;
  for (bool holes : {false, true}) {
    for (const Contour& contour : outline) {
      if (contour.hole != holes) continue;
      std::vector<cv::Point> pts;
      pts.reserve(contour.points.size());
      for (const cv::Point2d& p : contour.points) {
        const cv::Point2d q = Rotate(p, c, s);
        // Image coordinate u (pixel i covers [i, i+1)) -> canvas pixel-centre coordinate u * ss - 0.5.
        const double u = (cx + r * q.x) * ss - 0.5, v = (cy + r * q.y) * ss - 0.5;
        pts.emplace_back(static_cast<int>(std::lround(u * (1 << kShift))),
                         static_cast<int>(std::lround(v * (1 << kShift))));
      }
      const cv::Point* ptr = pts.data();
      const int count = static_cast<int>(pts.size());
      cv::fillPoly(canvas, &ptr, &count, 1, cv::Scalar(holes ? 0 : 255), cv::LINE_8, kShift);
    }
  }
  if (ss == 1) return canvas;
  cv::Mat alpha(n, n, CV_8UC1);
  const int cells = ss * ss;
  std::vector<int> sums(n);
  for (int y = 0; y < n; ++y) {
    std::fill(sums.begin(), sums.end(), 0);
    for (int j = 0; j < ss; ++j) {
      const uint8_t* row = canvas.ptr<uint8_t>(y * ss + j);
      for (int x = 0; x < n; ++x) {
        for (int i = 0; i < ss; ++i) sums[x] += row[x * ss + i];
      }
    }
    uint8_t* out = alpha.ptr<uint8_t>(y);
    for (int x = 0; x < n; ++x) out[x] = static_cast<uint8_t>((sums[x] + cells / 2) / cells);
  }
  return alpha;
}

// The scene's background with `alpha` filled in the scene's colour.
Rendering Composite(const Scene& scene, cv::Mat alpha, const RenderOptions& options) {
  const int n = options.image_size;
  Rendering out;
  out.image.create(n, n, CV_8UC3);
  DrawBackground(scene.background, &out.image);
  out.alpha = std::move(alpha);
  const int fg[3] = {scene.rgb.r, scene.rgb.g, scene.rgb.b};
  for (int y = 0; y < n; ++y) {
    uint8_t* px = out.image.ptr<uint8_t>(y);
    const uint8_t* al = out.alpha.ptr<uint8_t>(y);
    for (int x = 0; x < n; ++x) {
      const int w = al[x];
      if (w == 0) continue;
      for (int ch = 0; ch < 3; ++ch) {
        px[3 * x + ch] = static_cast<uint8_t>((px[3 * x + ch] * (255 - w) + fg[ch] * w + 127) / 255);
      }
    }
  }
  return out;
}

Rendering RenderUnchecked(const Scene& scene, const RenderOptions& options) {
  return Composite(scene, DrawOutlineAlpha(UnitOutline(scene.shape), scene, options), options);
}

// ---------------------------------------------------------------------------------------------------------------
// Blobs

// A random lump: radius 1 + Σ a_k cos(kθ + φ_k) over k = 2..6, one of k = 2..4 at least 0.12 (plus, for half of
// them, a rough edge of k = 7..12), stretched along x, then normalised like the shapes' outlines.
Outline BlobOutline(Rng& rng) {
  std::array<double, 11> amplitude{}, phase{};
  for (int k = 2; k <= 12; ++k) {
    const double scale = k <= 6 ? 0.35 / std::pow(k - 1, 0.7) : 0.04;
    amplitude[k - 2] = k <= 6 || rng.Bernoulli(0.5) ? rng.Uniform(0, scale) : 0.0;
    phase[k - 2] = rng.Uniform(0, 2 * kPi);
  }
  // One of k = 2..4 at least 0.12, so that the lump is never nearly round.
  double& dominant = amplitude[rng.Below(3)];
  dominant = std::max(dominant, rng.Uniform(0.12, 0.3));
  const double stretch = rng.Uniform(0.75, 1.33);
  constexpr int kPoints = 128;
  std::vector<cv::Point2d> p;
  p.reserve(kPoints);
  for (int i = 0; i < kPoints; ++i) {
    const double t = 2 * kPi * i / kPoints;
    double r = 1;
    for (int k = 2; k <= 12; ++k) r += amplitude[k - 2] * std::cos(k * t + phase[k - 2]);
    r = std::max(r, 0.25);
    p.emplace_back(stretch * r * std::cos(t), r * std::sin(t));
  }
  return Normalise({{p}});
}

constexpr int kMaskSide = 32;

// `alpha` (coverage 0..255) thresholded at half, cropped to its bounding box and resized to kMaskSide square
// (nearest); empty if nothing is covered.
cv::Mat BoxMask(const cv::Mat& alpha) {
  cv::Mat binary = alpha > 127;
  const cv::Rect box = cv::boundingRect(binary);
  if (box.area() == 0) return {};
  cv::Mat mask;
  cv::resize(binary(box), mask, {kMaskSide, kMaskSide}, 0, 0, cv::INTER_NEAREST);
  return mask;
}

// Box masks of every shape at the rotations scenes use (5° steps within each shape's limit).
const std::vector<cv::Mat>& ShapeBoxMasks() {
  static const auto* masks = [] {
    auto* v = new std::vector<cv::Mat>;
    for (Shape shape : kShapes) {
      for (double angle = -20; angle <= 20; angle += 5) {
        if (std::fabs(angle) > ShapeMaxRotation(shape)) continue;
        Scene scene;
        scene.shape = shape;
        scene.extent = 0.7;
        scene.rotation_deg = angle;
        v->push_back(BoxMask(DrawOutlineAlpha(UnitOutline(shape), scene, {.image_size = 128})));
      }
    }
    return v;
  }();
  return *masks;
}

}  // namespace

double BestShapeOverlap(const cv::Mat& alpha) {
  const cv::Mat mask = BoxMask(alpha);
  if (mask.empty()) return 0;
  double best = 0;
  for (const cv::Mat& m : ShapeBoxMasks()) {
    const double both = cv::countNonZero(mask & m), either = cv::countNonZero(mask | m);
    best = std::max(best, either > 0 ? both / either : 0.0);
  }
  return best;
}

namespace {

absl::Status CheckRenderOptions(const RenderOptions& o) {
  if (o.image_size < 8 || o.image_size > 2048) {
    return absl::InvalidArgumentError(absl::StrCat("image_size must be in [8, 2048], got ", o.image_size));
  }
  if (o.supersample < 1 || o.supersample > 16) {
    return absl::InvalidArgumentError(absl::StrCat("supersample must be in [1, 16], got ", o.supersample));
  }
  if (int64_t{o.image_size} * o.supersample > 8192) {
    return absl::InvalidArgumentError("image_size * supersample must be at most 8192");
  }
  return absl::OkStatus();
}

template <typename E, size_t N>
bool InTable(E e, const std::array<E, N>& table) {
  return std::find(table.begin(), table.end(), e) != table.end();
}

absl::Status CheckScene(const Scene& s) {
  const Background& bg = s.background;
  if (!InTable(s.shape, kShapes) || !InTable(s.colour, kBackgroundColours) || !InTable(bg.kind, kBackgroundKinds) ||
      !InTable(bg.colour, kBackgroundColours) || !InTable(bg.colour2, kBackgroundColours) ||
      !InTable(s.size, kSizeClasses) || !InTable(s.position, kPositions)) {
    return absl::InvalidArgumentError("scene has an enum value out of range");
  }
  if (!(s.extent > 0 && s.extent <= 4) || !std::isfinite(s.center_x) || !std::isfinite(s.center_y) ||
      std::abs(s.center_x) > 4 || std::abs(s.center_y) > 4 || !std::isfinite(s.rotation_deg)) {
    return absl::InvalidArgumentError(
        "scene geometry out of range (extent in (0, 4], centre in [-4, 4], finite rotation)");
  }
  if (bg.gradient_direction < 0 || bg.gradient_direction > 7) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradient_direction must be in [0, 7], got ", bg.gradient_direction));
  }
  if (bg.noise_amplitude < 0 || bg.noise_amplitude > 127) {
    return absl::InvalidArgumentError(absl::StrCat("noise_amplitude must be in [0, 127], got ", bg.noise_amplitude));
  }
  return absl::OkStatus();
}

// Distance from `p` to the segment [a, b] in RGB space.
double SegmentDistance(Rgb p, Rgb a, Rgb b) {
  const double ax = a.r, ay = a.g, az = a.b;
  const double dx = b.r - ax, dy = b.g - ay, dz = b.b - az;
  const double px = p.r - ax, py = p.g - ay, pz = p.b - az;
  const double len2 = dx * dx + dy * dy + dz * dz;
  const double t = len2 > 0 ? std::clamp((px * dx + py * dy + pz * dz) / len2, 0.0, 1.0) : 0.0;
  const double ex = px - t * dx, ey = py - t * dy, ez = pz - t * dz;
  return std::sqrt(ex * ex + ey * ey + ez * ez);
}

Rgb Jitter(Rgb rgb, int jitter, Rng& rng) {
  return {Clamp255(rgb.r + rng.UniformInt(-jitter, jitter)), Clamp255(rgb.g + rng.UniformInt(-jitter, jitter)),
          Clamp255(rgb.b + rng.UniformInt(-jitter, jitter))};
}

// ---------------------------------------------------------------------------------------------------------------
// Captions

std::string WithArticle(const std::string& phrase) { return absl::StrCat(Article(phrase), " ", phrase); }

std::string BackgroundPhrase(const Background& bg) {
  switch (bg.kind) {
    case BackgroundKind::kPlain:
      return absl::StrCat("on ", WithArticle(absl::StrCat(ColourName(bg.colour), " background")));
    case BackgroundKind::kGradient:
      return absl::StrCat(
          "on ", WithArticle(absl::StrCat(ColourName(bg.colour), " and ", ColourName(bg.colour2), " gradient")));
    case BackgroundKind::kNoise:
      return absl::StrCat("on a noisy ", ColourName(bg.colour), " background");
  }
  return "";
}

// "[prefix ]a [size ]colour shape[ background][ position]"; empty parts are left out.
std::string ComposeCaption(const Scene& scene, const char* prefix, const char* size_word, bool background,
                           bool position) {
  std::string noun = absl::StrCat(ColourName(scene.colour), " ", ShapeName(scene.shape));
  if (size_word != nullptr) noun = absl::StrCat(size_word, " ", noun);
  std::string caption = WithArticle(noun);
  if (prefix != nullptr) caption = absl::StrCat(prefix, " ", caption);
  if (background) absl::StrAppend(&caption, " ", BackgroundPhrase(scene.background));
  if (position) absl::StrAppend(&caption, " ", kPositionPhrases[static_cast<int>(scene.position)]);
  return caption;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Rng

Rng Rng::For(uint64_t seed, uint64_t index, uint64_t stream) {
  return Rng(Mix64(Mix64(Mix64(seed + 0x9e3779b97f4a7c15ULL) ^ index) + stream));
}

uint64_t Rng::Next() {
  state_ += 0x9e3779b97f4a7c15ULL;
  return Mix64(state_);
}

uint64_t Rng::Below(uint64_t n) {
  // Reject the lowest (2^64 mod n) values so that every residue is equally likely.
  const uint64_t threshold = (0 - n) % n;
  while (true) {
    const uint64_t x = Next();
    if (x >= threshold) return x % n;
  }
}

int Rng::UniformInt(int lo, int hi) {
  return lo + static_cast<int>(Below(static_cast<uint64_t>(int64_t{hi} - lo) + 1));
}

double Rng::Uniform01() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

double Rng::Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform01(); }

bool Rng::Bernoulli(double p) { return Uniform01() < p; }

// ---------------------------------------------------------------------------------------------------------------
// Tables

absl::string_view ShapeName(Shape shape) { return kShapeTable[static_cast<int>(shape)].name; }
absl::string_view ColourName(Colour colour) { return kColourTable[static_cast<int>(colour)].name; }
absl::string_view BackgroundKindName(BackgroundKind kind) { return kBackgroundKindNames[static_cast<int>(kind)]; }
absl::string_view SizeName(SizeClass size) { return kSizeNames[static_cast<int>(size)]; }
absl::string_view PositionName(Position position) { return kPositionNames[static_cast<int>(position)]; }

std::optional<Shape> ShapeFromName(absl::string_view name) {
  for (Shape s : kShapes) {
    if (ShapeName(s) == name) return s;
  }
  return std::nullopt;
}

std::optional<Colour> ColourFromName(absl::string_view name) {
  for (Colour c : kBackgroundColours) {
    if (ColourName(c) == name) return c;
  }
  return std::nullopt;
}

Rgb ColourRgb(Colour colour) { return kColourTable[static_cast<int>(colour)].rgb; }
double ShapeMaxRotation(Shape shape) { return kShapeTable[static_cast<int>(shape)].max_rotation_deg; }

double ColourDistance(Rgb a, Rgb b) {
  const double dr = a.r - b.r, dg = a.g - b.g, db = a.b - b.b;
  return std::sqrt(dr * dr + dg * dg + db * db);
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

std::array<double, 4> SceneBounds(const Scene& scene) {
  const auto [hx, hy] = RotatedHalfExtents(scene.shape, scene.rotation_deg);
  const double half_w = hx * scene.extent / 2, half_h = hy * scene.extent / 2;
  return {scene.center_x - half_w, scene.center_y - half_h, scene.center_x + half_w, scene.center_y + half_h};
}

absl::StatusOr<Rendering> Render(const Scene& scene, const RenderOptions& options) {
  CLIPSERVE_RETURN_IF_ERROR(CheckRenderOptions(options));
  CLIPSERVE_RETURN_IF_ERROR(CheckScene(scene));
  return RenderUnchecked(scene, options);
}

// ---------------------------------------------------------------------------------------------------------------
// Captions

absl::string_view Article(absl::string_view next_word) {
  // Enough for this world's vocabulary (no "hour", no "unicorn").
  const bool vowel = !next_word.empty() &&
                     absl::string_view("aeiou").find(absl::ascii_tolower(next_word[0])) != absl::string_view::npos;
  return vowel ? "an" : "a";
}

std::string ZeroShotPrompt(Colour colour, Shape shape) {
  return absl::StrCat("a photo of ", WithArticle(absl::StrCat(ColourName(colour), " ", ShapeName(shape))));
}

std::string ScenePrompt(Colour colour, Shape shape, Colour background) {
  return absl::StrCat(WithArticle(absl::StrCat(ColourName(colour), " ", ShapeName(shape))), " on ",
                      WithArticle(absl::StrCat(ColourName(background), " background")));
}

std::string BlobCaption(Colour colour) { return WithArticle(absl::StrCat(ColourName(colour), " blob")); }

std::string Caption(const Scene& scene, Rng& rng, const CaptionOptions& options, CaptionParts* parts) {
  const char* prefix = nullptr;
  if (rng.Bernoulli(options.prefix)) prefix = kPrefixes[rng.Below(std::size(kPrefixes))];
  const char* size_word = nullptr;
  if (rng.Bernoulli(options.size)) {
    const auto& words = SizeWords()[static_cast<int>(scene.size)];
    size_word = words[rng.Below(words.size())];
  }
  const bool background = rng.Bernoulli(options.background);
  const bool position = rng.Bernoulli(options.position);
  if (parts != nullptr) *parts = {.size = size_word != nullptr, .background = background, .position = position};
  return ComposeCaption(scene, prefix, size_word, background, position);
}

std::vector<std::string> Captions(const Scene& scene, Rng& rng, int count, const CaptionOptions& options) {
  std::vector<std::string> out;
  for (int tries = 0; static_cast<int>(out.size()) < count && tries < 20 * count; ++tries) {
    std::string c = Caption(scene, rng, options);
    if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(std::move(c));
  }
  return out;
}

std::vector<std::string> AllCaptions(const Scene& scene) {
  std::vector<const char*> prefixes = {nullptr};
  prefixes.insert(prefixes.end(), std::begin(kPrefixes), std::end(kPrefixes));
  std::vector<const char*> sizes = {nullptr};
  const auto& words = SizeWords()[static_cast<int>(scene.size)];
  sizes.insert(sizes.end(), words.begin(), words.end());
  std::vector<std::string> out;
  for (const char* prefix : prefixes) {
    for (const char* size : sizes) {
      for (bool background : {false, true}) {
        for (bool position : {false, true}) out.push_back(ComposeCaption(scene, prefix, size, background, position));
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Seeds

absl::Status CheckSeed(Split split, uint64_t seed) {
  if (SplitOfSeed(seed) == split) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("seed ", seed, " is not ", split == Split::kTrain ? "a training" : "an evaluation",
                   " seed: training seeds are < ", kFirstEvalSeed, ", evaluation seeds are >= ", kFirstEvalSeed,
                   " (train and evaluation images must never overlap)"));
}

Split SplitOfSeed(uint64_t seed) { return seed < kFirstEvalSeed ? Split::kTrain : Split::kEval; }

absl::string_view SplitName(Split split) { return split == Split::kTrain ? "train" : "eval"; }

// ---------------------------------------------------------------------------------------------------------------
// SceneSampler

absl::StatusOr<std::unique_ptr<SceneSampler>> SceneSampler::Create(const SceneSamplerOptions& o) {
  CLIPSERVE_RETURN_IF_ERROR(CheckSeed(o.split, o.seed));
  CLIPSERVE_RETURN_IF_ERROR(CheckRenderOptions(o.render));
  for (Shape s : o.shapes) {
    if (!InTable(s, kShapes)) return absl::InvalidArgumentError("shapes: value out of range");
  }
  for (Colour c : o.colours) {
    if (!InTable(c, kShapeColours)) {
      return absl::InvalidArgumentError("colours: only kShapeColours may be shape colours (gray is background only)");
    }
  }
  const auto prob = [](double p) { return p >= 0 && p <= 1; };
  const CaptionOptions& cap = o.captions;
  if (!prob(cap.prefix) || !prob(cap.size) || !prob(cap.background) || !prob(cap.position)) {
    return absl::InvalidArgumentError("caption probabilities must be in [0, 1]");
  }
  if (!prob(o.center_probability) || !prob(o.plain_probability) || !prob(o.gradient_probability) ||
      o.plain_probability + o.gradient_probability > 1) {
    return absl::InvalidArgumentError(
        "center, plain and gradient probabilities must be in [0, 1], plain + gradient at most 1");
  }
  for (const auto& range : {o.small_extent, o.medium_extent, o.big_extent}) {
    if (!(range[0] > 0 && range[0] <= range[1] && range[1] <= 0.9)) {
      return absl::InvalidArgumentError("extent ranges must satisfy 0 < lo <= hi <= 0.9");
    }
  }
  if (!(o.margin >= 0 && o.min_offset >= 0 && o.margin + o.min_offset <= 0.4)) {
    return absl::InvalidArgumentError("margin and min_offset must be >= 0, margin + min_offset at most 0.4");
  }
  if (!(o.rotation_scale >= 0 && o.rotation_scale <= 4)) {
    return absl::InvalidArgumentError("rotation_scale must be in [0, 4]");
  }
  if (o.colour_jitter < 0 || o.colour_jitter > 40 || o.noise_amplitude < 0 || o.noise_amplitude > 40) {
    return absl::InvalidArgumentError("colour_jitter and noise_amplitude must be in [0, 40]");
  }
  if (!(o.min_colour_distance >= 0 && o.min_colour_distance <= 150)) {
    return absl::InvalidArgumentError("min_colour_distance must be in [0, 150]");
  }
  return std::unique_ptr<SceneSampler>(new SceneSampler(o));
}

SceneSampler::SceneSampler(const SceneSamplerOptions& options) : options_(options) {
  shapes_ = options.shapes.empty() ? std::vector<Shape>(kShapes.begin(), kShapes.end()) : options.shapes;
  colours_ =
      options.colours.empty() ? std::vector<Colour>(kShapeColours.begin(), kShapeColours.end()) : options.colours;
}

Background SceneSampler::DrawBackground(Rng& rng, Rgb shape_rgb) const {
  const SceneSamplerOptions& o = options_;
  const double min_distance = o.min_colour_distance;
  const auto any_colour = [&] { return kBackgroundColours[rng.Below(kBackgroundColours.size())]; };
  for (int attempt = 0; attempt < 64; ++attempt) {
    Background bg;
    const double u = rng.Uniform01();
    bg.kind = u < o.plain_probability                            ? BackgroundKind::kPlain
              : u < o.plain_probability + o.gradient_probability ? BackgroundKind::kGradient
                                                                 : BackgroundKind::kNoise;
    bg.colour = any_colour();
    bg.rgb = Jitter(ColourRgb(bg.colour), o.colour_jitter, rng);
    bool ok = false;
    switch (bg.kind) {
      case BackgroundKind::kPlain:
        ok = ColourDistance(bg.rgb, shape_rgb) >= min_distance;
        break;
      case BackgroundKind::kNoise:
        bg.noise_amplitude = o.noise_amplitude;
        // Gray grain moves a pixel by at most amplitude * sqrt(3).
        ok = ColourDistance(bg.rgb, shape_rgb) - o.noise_amplitude * std::sqrt(3.0) >= min_distance;
        break;
      case BackgroundKind::kGradient: {
        do {
          bg.colour2 = any_colour();
        } while (bg.colour2 == bg.colour);
        bg.rgb2 = Jitter(ColourRgb(bg.colour2), o.colour_jitter, rng);
        bg.gradient_direction = static_cast<int>(rng.Below(8));
        // Pixels are rounded points of the segment: allow one unit for the rounding.
        ok = SegmentDistance(shape_rgb, bg.rgb, bg.rgb2) - 1 >= min_distance;
        break;
      }
    }
    if (ok) {
      bg.noise_seed = rng.Next();
      return bg;
    }
  }
  // Unreachable in practice (a fitting plain colour is drawn with high probability each attempt); black or
  // white, whichever is farther, is always at least 190 away from any shape colour.
  Background bg;
  const Rgb white = ColourRgb(Colour::kWhite), black = ColourRgb(Colour::kBlack);
  bg.colour = ColourDistance(white, shape_rgb) >= ColourDistance(black, shape_rgb) ? Colour::kWhite : Colour::kBlack;
  bg.rgb = ColourRgb(bg.colour);
  return bg;
}

Scene SceneSampler::Draw(Rng& rng, std::optional<Colour> colour, std::optional<Shape> shape) const {
  const SceneSamplerOptions& o = options_;
  Scene scene;
  scene.shape = shape ? *shape : shapes_[rng.Below(shapes_.size())];
  scene.colour = colour ? *colour : colours_[rng.Below(colours_.size())];
  scene.rgb = Jitter(ColourRgb(scene.colour), o.colour_jitter, rng);
  scene.size = kSizeClasses[rng.Below(kSizeClasses.size())];
  const std::array<double, 2>& range = scene.size == SizeClass::kSmall    ? o.small_extent
                                       : scene.size == SizeClass::kMedium ? o.medium_extent
                                                                          : o.big_extent;
  double extent = rng.Uniform(range[0], range[1]);
  const double max_rotation = ShapeMaxRotation(scene.shape) * o.rotation_scale;
  scene.rotation_deg = max_rotation > 0 ? rng.Uniform(-max_rotation, max_rotation) : 0.0;
  scene.position = rng.Bernoulli(o.center_probability) ? Position::kCenter : kPositions[1 + rng.Below(8)];

  // Place the rotated shape: off-centre along each named axis by at least min_offset, inside the margin.
  const auto [hx, hy] = RotatedHalfExtents(scene.shape, scene.rotation_deg);
  const int dirs[2] = {kPositionDx[static_cast<int>(scene.position)], kPositionDy[static_cast<int>(scene.position)]};
  const double half[2] = {hx, hy};
  for (int axis = 0; axis < 2; ++axis) {
    const double free = 0.5 - o.margin - (dirs[axis] != 0 ? o.min_offset : 0);
    extent = std::min(extent, 2 * free / half[axis]);
  }
  scene.extent = extent;
  double centre[2];
  for (int axis = 0; axis < 2; ++axis) {
    const double room = std::max(0.0, 0.5 - o.margin - half[axis] * extent / 2);
    if (dirs[axis] == 0) {
      const double jitter = std::min(0.04, room);
      centre[axis] = 0.5 + rng.Uniform(-jitter, jitter);
    } else {
      // Towards the far end of the room, so that "top left" is plainly top left.
      const double lo = std::min(room, std::max(o.min_offset, 0.6 * room));
      centre[axis] = 0.5 + dirs[axis] * rng.Uniform(lo, room);
    }
  }
  scene.center_x = centre[0];
  scene.center_y = centre[1];
  scene.background = DrawBackground(rng, scene.rgb);
  return scene;
}

Scene SceneSampler::SceneAt(uint64_t index) const {
  Rng rng = Rng::For(options_.seed, index, kSceneStream);
  return Draw(rng, std::nullopt, std::nullopt);
}

Example SceneSampler::MakeExample(const Scene& scene, Rng& caption_rng) const {
  Example e;
  e.scene = scene;
  e.image = RenderUnchecked(scene, options_.render).image;
  e.caption = Caption(scene, caption_rng, options_.captions, &e.caption_parts);
  return e;
}

Example SceneSampler::Sample(uint64_t index) const {
  Rng caption_rng = Rng::For(options_.seed, index, kCaptionStream);
  return MakeExample(SceneAt(index), caption_rng);
}

absl::StatusOr<Scene> SceneSampler::SceneWithLabels(uint64_t index, Colour colour, Shape shape) const {
  if (!InTable(colour, kShapeColours) || !InTable(shape, kShapes)) {
    return absl::InvalidArgumentError("SceneWithLabels: not a shape colour or not a shape");
  }
  Rng rng = Rng::For(options_.seed, index, kLabelledStream);
  return Draw(rng, colour, shape);
}

absl::StatusOr<Example> SceneSampler::SampleWithColour(uint64_t index, Colour colour) const {
  if (!InTable(colour, kShapeColours)) return absl::InvalidArgumentError("SampleWithColour: not a shape colour");
  Rng rng = Rng::For(options_.seed, index, kColourStream);
  Rng caption_rng = Rng::For(options_.seed, index, kColourCaptionStream);
  return MakeExample(Draw(rng, colour, std::nullopt), caption_rng);
}

absl::StatusOr<FieldExample> SceneSampler::SampleField(uint64_t index, Colour colour) const {
  if (!InTable(colour, kShapeColours)) return absl::InvalidArgumentError("SampleField: not a shape colour");
  Rng rng = Rng::For(options_.seed, index, kFieldStream);
  FieldExample f;
  f.background.colour = colour;
  f.background.rgb = Jitter(ColourRgb(colour), options_.colour_jitter, rng);
  if (rng.Bernoulli(0.5)) {
    f.background.kind = BackgroundKind::kNoise;
    f.background.noise_amplitude = options_.noise_amplitude;
    f.background.noise_seed = rng.Next();
  }
  const int n = options_.render.image_size;
  f.image = cv::Mat(n, n, CV_8UC3);
  clipserve::shapes::DrawBackground(f.background, &f.image);
  const bool noisy = f.background.kind == BackgroundKind::kNoise;
  std::string phrase = absl::StrCat(noisy ? "noisy " : "", ColourName(colour), " background");
  f.caption = WithArticle(phrase);
  if (rng.Bernoulli(options_.captions.prefix)) {
    f.caption = absl::StrCat(kPrefixes[rng.Below(std::size(kPrefixes))], " ", f.caption);
  }
  return f;
}

absl::StatusOr<BlobExample> SceneSampler::SampleBlob(uint64_t index, Colour colour) const {
  if (!InTable(colour, kShapeColours)) return absl::InvalidArgumentError("SampleBlob: not a shape colour");
  Rng rng = Rng::For(options_.seed, index, kBlobStream);
  // A scene of this colour gives the background, the jittered colour and a placement; the blob replaces its
  // shape, larger and freer than the world's shapes (generation's lumps often fill the frame and run off it).
  Scene scene = Draw(rng, colour, std::nullopt);
  scene.extent = rng.Uniform(0.45, 1.4);
  scene.center_x = rng.Uniform(0.3, 0.7);
  scene.center_y = rng.Uniform(0.3, 0.7);
  scene.rotation_deg = rng.Uniform(-180, 180);
  BlobExample b;
  cv::Mat alpha;
  for (int attempt = 0;; ++attempt) {
    alpha = DrawOutlineAlpha(BlobOutline(rng), scene, options_.render);
    b.overlap = BestShapeOverlap(alpha);
    // Drawn until it is none of the world's shapes (a few draws; the bound only guarantees an end).
    if (b.overlap < kMaxBlobOverlap || attempt == 255) break;
  }
  // Half of them with a soft edge, half with a grainy fill, as generation's lumps have; world shapes have
  // neither.
  if (rng.Bernoulli(0.5)) {
    const double sigma = rng.Uniform(0.8, 2.0) * options_.render.image_size / 64;
    cv::GaussianBlur(alpha, alpha, {0, 0}, sigma, sigma, cv::BORDER_REPLICATE);
  }
  const bool grainy = rng.Bernoulli(0.5);
  const uint64_t grain_seed = rng.Next();
  b.background = scene.background;
  b.image = Composite(scene, alpha, options_.render).image;
  if (grainy) {
    Rng grain = Rng::For(grain_seed, 0, 0);
    for (int y = 0; y < b.image.rows; ++y) {
      uint8_t* px = b.image.ptr<uint8_t>(y);
      const uint8_t* al = alpha.ptr<uint8_t>(y);
      for (int x = 0; x < b.image.cols; ++x) {
        const int offset = (grain.UniformInt(-24, 24) * al[x] + 127) / 255;
        for (int ch = 0; ch < 3; ++ch) px[3 * x + ch] = Clamp255(px[3 * x + ch] + offset);
      }
    }
  }
  b.caption = BlobCaption(colour);
  if (rng.Bernoulli(options_.captions.prefix)) {
    b.caption = absl::StrCat(kPrefixes[rng.Below(std::size(kPrefixes))], " ", b.caption);
  }
  return b;
}

absl::StatusOr<std::vector<Example>> SceneSampler::DistinctPairs(uint64_t group, int count) const {
  std::vector<std::pair<Colour, Shape>> pairs;
  for (Colour c : colours_) {
    for (Shape s : shapes_) {
      if (std::find(pairs.begin(), pairs.end(), std::make_pair(c, s)) == pairs.end()) pairs.emplace_back(c, s);
    }
  }
  if (count < 0 || count > static_cast<int>(pairs.size())) {
    return absl::InvalidArgumentError(absl::StrCat("DistinctPairs: count must be in [0, ", pairs.size(),
                                                   "] (the colour x shape pairs), got ", count));
  }
  Rng rng = Rng::For(options_.seed, group, kPairsStream);
  std::vector<Example> out;
  out.reserve(count);
  for (int i = 0; i < count; ++i) {
    // Partial Fisher-Yates: pairs[i] is a uniform pick among those not yet taken.
    std::swap(pairs[i], pairs[i + rng.Below(pairs.size() - i)]);
    Rng scene_rng(rng.Next());
    Rng caption_rng(rng.Next());
    out.push_back(MakeExample(Draw(scene_rng, pairs[i].first, pairs[i].second), caption_rng));
  }
  return out;
}

}  // namespace clipserve::shapes
