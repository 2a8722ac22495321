// The shapes world: a procedural generator of simple scenes (one coloured shape on a plain, gradient or noisy
// background) with captions, used to train and evaluate the small CLIP and VQGAN that clipserve ships
// (issue 4). No torch here: images are 8-bit RGB `cv::Mat`s that the trainers turn into tensors themselves.
//
//   auto sampler = SceneSampler::Create({.split = Split::kTrain, .seed = 7});
//   Example e = (*sampler)->Sample(123);   // e.scene, e.image (64x64 RGB), e.caption
//
// Determinism. Everything is a pure function of (seed, index): scenes are drawn with `Rng`, a counter-based
// generator whose uniform draws are computed here from raw 64-bit outputs (no std::*_distribution, whose
// algorithms differ between standard libraries), and `Render` is a pure function of the scene. Backgrounds are
// computed in integer arithmetic; the shape is filled with cv::fillPoly (integer scanlines, no antialiasing) at
// `supersample`x resolution and box-averaged down in integer arithmetic, so the only floating point in an image
// is the polygon geometry (sin/cos, then rounded to 1/64 canvas pixel). Same seed and index: same bytes.
//
// Seeds. Training seeds are < kFirstEvalSeed (1,000,000), evaluation seeds are >= kFirstEvalSeed; a
// SceneSampler is created for a `Split` and refuses a seed of the other split, so held-out images can never be
// drawn from a training stream.
//
// Drawing. Antialiasing is by supersampling: the shape's coverage is rasterised at `supersample` (default 4)
// times the image size and averaged over each output pixel (17 coverage levels at 4x), then the shape colour
// is blended over the background with that coverage. Shapes are flat-filled.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <opencv2/core.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace clipserve::shapes {

// ---------------------------------------------------------------------------------------------------------------
// Random numbers

// SplitMix64 (a counter-based generator: the state is a counter, each output a strong 64-bit mix of it). The
// same seed gives the same sequence on every machine and standard library. Not thread-safe; cheap to copy.
class Rng {
 public:
  explicit Rng(uint64_t state) : state_(state) {}
  // The generator for item `index` of stream `stream` under `seed`; distinct (seed, index, stream) triples give
  // independent sequences.
  static Rng For(uint64_t seed, uint64_t index, uint64_t stream);

  uint64_t Next();
  // Uniform in [0, n), unbiased (rejection sampling); n must be > 0.
  uint64_t Below(uint64_t n);
  // Uniform in [lo, hi] (inclusive); requires lo <= hi.
  int UniformInt(int lo, int hi);
  // Uniform in [0, 1), 53 random bits.
  double Uniform01();
  // Uniform in [lo, hi).
  double Uniform(double lo, double hi);
  bool Bernoulli(double p);

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary of the world. Each enum has a table listing all its values (k<Name>s) and a function giving the
// canonical label string (the word used in captions and in evaluation labels).

// Every shape is drawn normalised so that its unrotated bounding box is a square of side `extent` (the longer
// side for shapes that are not as wide as tall). Rotation (uniform in ±max_rotation_deg, see ShapeMaxRotation)
// is only applied where it cannot make the shape look like another one: circle and ring never rotate (it would
// not show); square, diamond and cross rotate ±12° (45° turns a square into a diamond and a cross into an X);
// triangle, star, heart, crescent and arrow rotate ±20°.
enum class Shape : uint8_t {
  kCircle,
  kSquare,
  kTriangle,  // equilateral, pointing up
  kStar,      // five points
  kCross,     // a plus sign
  kHeart,
  kRing,      // annulus, inner radius 0.6 of the outer
  kDiamond,   // rhombus, taller than wide (3:4), a vertex up
  kCrescent,  // a moon, horns to the right
  kArrow,     // pointing up
};
inline constexpr std::array<Shape, 10> kShapes = {Shape::kCircle,   Shape::kSquare, Shape::kTriangle, Shape::kStar,
                                                  Shape::kCross,    Shape::kHeart,  Shape::kRing,     Shape::kDiamond,
                                                  Shape::kCrescent, Shape::kArrow};

// Named colours. The first eight are shape colours (the colour labels); gray is used only for backgrounds.
enum class Colour : uint8_t { kRed, kOrange, kYellow, kGreen, kBlue, kPurple, kWhite, kBlack, kGray };
inline constexpr std::array<Colour, 8> kShapeColours = {Colour::kRed,   Colour::kOrange, Colour::kYellow,
                                                        Colour::kGreen, Colour::kBlue,   Colour::kPurple,
                                                        Colour::kWhite, Colour::kBlack};
inline constexpr std::array<Colour, 9> kBackgroundColours = {Colour::kRed,   Colour::kOrange, Colour::kYellow,
                                                             Colour::kGreen, Colour::kBlue,   Colour::kPurple,
                                                             Colour::kWhite, Colour::kBlack,  Colour::kGray};

// plain: one colour. gradient: linear between two colours in one of 8 directions. noise: one colour with
// per-pixel gray grain of ±noise_amplitude.
enum class BackgroundKind : uint8_t { kPlain, kGradient, kNoise };
inline constexpr std::array<BackgroundKind, 3> kBackgroundKinds = {BackgroundKind::kPlain, BackgroundKind::kGradient,
                                                                   BackgroundKind::kNoise};

enum class SizeClass : uint8_t { kSmall, kMedium, kBig };
inline constexpr std::array<SizeClass, 3> kSizeClasses = {SizeClass::kSmall, SizeClass::kMedium, SizeClass::kBig};

// Where the shape's bounding box sits: the centre, or pushed towards a side or corner (at least
// SceneSamplerOptions::min_offset from the centre along each named axis).
enum class Position : uint8_t {
  kCenter,
  kTopLeft,
  kTop,
  kTopRight,
  kLeft,
  kRight,
  kBottomLeft,
  kBottom,
  kBottomRight,
};
inline constexpr std::array<Position, 9> kPositions = {
    Position::kCenter, Position::kTopLeft,    Position::kTop,    Position::kTopRight,   Position::kLeft,
    Position::kRight,  Position::kBottomLeft, Position::kBottom, Position::kBottomRight};

struct Rgb {
  uint8_t r = 0;
  uint8_t g = 0;
  uint8_t b = 0;
  friend bool operator==(const Rgb& a, const Rgb& b) { return a.r == b.r && a.g == b.g && a.b == b.b; }
  friend bool operator!=(const Rgb& a, const Rgb& b) { return !(a == b); }
};

// Canonical label strings: "circle", "red", "gradient", "small", "top left" (American spelling: "gray",
// "center").
absl::string_view ShapeName(Shape shape);
absl::string_view ColourName(Colour colour);
absl::string_view BackgroundKindName(BackgroundKind kind);
absl::string_view SizeName(SizeClass size);
absl::string_view PositionName(Position position);
// The inverse of the above for shapes and colours (exact match); nullopt for an unknown name.
std::optional<Shape> ShapeFromName(absl::string_view name);
std::optional<Colour> ColourFromName(absl::string_view name);

// The colour's reference RGB (scenes jitter it by up to ±colour_jitter per channel).
Rgb ColourRgb(Colour colour);
// ± degrees of rotation a scene may give the shape (0 for circle and ring).
double ShapeMaxRotation(Shape shape);
// Euclidean distance in RGB space.
double ColourDistance(Rgb a, Rgb b);

// ---------------------------------------------------------------------------------------------------------------
// Scenes

struct Background {
  BackgroundKind kind = BackgroundKind::kPlain;
  // plain, noise: the colour. gradient: the colour at the start of the gradient.
  Colour colour = Colour::kWhite;
  Rgb rgb;
  // gradient only: the colour at its end (differs from `colour`).
  Colour colour2 = Colour::kWhite;
  Rgb rgb2;
  // gradient only: 0..7, the direction the gradient runs from `colour` to `colour2`: 0 left to right, then
  // 45° steps clockwise on screen (1 top left to bottom right, 2 top to bottom, ...).
  int gradient_direction = 0;
  // noise only: per-pixel gray offset uniform in [-noise_amplitude, noise_amplitude], drawn from noise_seed.
  int noise_amplitude = 0;
  uint64_t noise_seed = 0;
};

// One scene: everything needed to render the image and write its captions. Coordinates are fractions of the
// image side (x to the right, y down), so one scene renders at any image size.
struct Scene {
  Shape shape = Shape::kCircle;
  Colour colour = Colour::kRed;
  Rgb rgb = ColourRgb(Colour::kRed);  // the jittered shape colour actually drawn
  Background background;
  SizeClass size = SizeClass::kMedium;
  double extent = 0.5;  // side of the shape's unrotated bounding box / image side
  Position position = Position::kCenter;
  double center_x = 0.5;  // centre of the unrotated bounding box / image side
  double center_y = 0.5;
  double rotation_deg = 0;  // clockwise on screen, about the centre
};

// The axis-aligned box the rotated shape occupies: {x0, y0, x1, y1}, fractions of the image side.
std::array<double, 4> SceneBounds(const Scene& scene);

// ---------------------------------------------------------------------------------------------------------------
// Rendering

struct RenderOptions {
  int image_size = 64;  // square images; 8..2048
  int supersample = 4;  // 1..16; coverage levels per pixel: supersample^2 + 1
};

struct Rendering {
  cv::Mat image;  // CV_8UC3, RGB order, continuous, image_size x image_size
  cv::Mat alpha;  // CV_8UC1: the shape's coverage of each pixel, 0 (background) .. 255 (shape)
};

// Draws `scene`. INVALID_ARGUMENT for out-of-range options or scene fields. Thread-safe.
absl::StatusOr<Rendering> Render(const Scene& scene, const RenderOptions& options);

// ---------------------------------------------------------------------------------------------------------------
// Captions

// How often each optional part appears in a sampled caption: "[prefix ]a [size ]<colour> <shape>[ on <background>]
// [ <position>]". Prefixes ("a photo of", "a picture of", "an image of", "a drawing of", "a rendering of") are
// drawn with probability `prefix`, evenly among themselves. Colour and shape are always present.
struct CaptionOptions {
  double prefix = 0.6;
  double size = 0.35;
  double background = 0.35;
  double position = 0.3;
};

// The zero-shot prompt for a label pair, as evaluation uses it: "a photo of a red circle", "a photo of an
// orange heart".
std::string ZeroShotPrompt(Colour colour, Shape shape);
// A prompt in the form generation is asked for: "a red circle on a white background" (gen-eval's prompts, and
// the prompts of train-clip's generation negatives).
std::string ScenePrompt(Colour colour, Shape shape, Colour background);
// A blob's caption without a prefix: "a red blob", "an orange blob" (SampleBlob; also generation's pictures
// that CLIP training rejects as blobs).
std::string BlobCaption(Colour colour);
// Which of the optional parts a caption names (colour and shape it always names).
struct CaptionParts {
  bool size = false;
  bool background = false;
  bool position = false;
};

// One caption for `scene` drawn from the templates, e.g. "a small blue star on a black background", "a photo
// of a big yellow square in the top left", "an orange heart"; `parts` (optional) receives what it names.
std::string Caption(const Scene& scene, Rng& rng, const CaptionOptions& options = {}, CaptionParts* parts = nullptr);
// Up to `count` distinct captions drawn as by Caption (fewer only if the templates cannot give more).
std::vector<std::string> Captions(const Scene& scene, Rng& rng, int count, const CaptionOptions& options = {});
// Every caption the templates can give for `scene`, in a fixed order (the corpus for the tokenizer's BPE).
// Contains ZeroShotPrompt(scene.colour, scene.shape).
std::vector<std::string> AllCaptions(const Scene& scene);
// "a" or "an" for the word (or phrase) that follows it.
absl::string_view Article(absl::string_view next_word);

// ---------------------------------------------------------------------------------------------------------------
// Sampling

enum class Split { kTrain, kEval };
// Training seeds are [0, kFirstEvalSeed); evaluation seeds are [kFirstEvalSeed, 2^64).
inline constexpr uint64_t kFirstEvalSeed = 1'000'000;
// OK when `seed` belongs to `split`, else INVALID_ARGUMENT naming the convention.
absl::Status CheckSeed(Split split, uint64_t seed);
// The split a seed belongs to.
Split SplitOfSeed(uint64_t seed);
absl::string_view SplitName(Split split);

struct SceneSamplerOptions {
  Split split = Split::kTrain;
  uint64_t seed = 0;  // must belong to `split`
  RenderOptions render;
  CaptionOptions captions;
  // Shapes and colours to draw from, uniformly; empty means all (kShapes, kShapeColours). Gray is not a shape
  // colour.
  std::vector<Shape> shapes;
  std::vector<Colour> colours;
  // Range of Scene::extent for each size class (which is drawn uniformly).
  std::array<double, 2> small_extent = {0.32, 0.40};
  std::array<double, 2> medium_extent = {0.46, 0.56};
  std::array<double, 2> big_extent = {0.62, 0.76};
  // Probability of Position::kCenter; the other eight positions share the rest evenly.
  double center_probability = 0.3;
  // Off-centre shapes are moved at least this far (fraction of the image side) from the centre along each
  // named axis, and every shape is kept `margin` inside the image; a shape too big for both is shrunk to fit
  // (with the defaults only big shapes off the centre are, to no less than 0.56).
  double min_offset = 0.12;
  double margin = 0.03;
  // Multiplies each shape's ShapeMaxRotation; 0 draws every shape upright.
  double rotation_scale = 1.0;
  // Each RGB channel of a shape or background colour is its reference value ± up to this.
  int colour_jitter = 10;
  // No background pixel (gradients and noise included) is closer than this to the shape's RGB, so a background
  // never uses the shape's colour name (same-named colours are at most 2 * colour_jitter * sqrt(3) apart) and
  // low-contrast pairs (orange on yellow) never occur. Backgrounds are redrawn until they fit.
  double min_colour_distance = 100;
  // Background kind probabilities before that redrawing (noise gets the rest; with the defaults the realised
  // mix is about 48 % plain, 26 % gradient, 26 % noise).
  double plain_probability = 0.45;
  double gradient_probability = 0.3;
  int noise_amplitude = 12;
};

// A picture with no shape in it: a plain or noisy field of one colour, and a caption that names only that
// ("a red background", "a photo of a noisy blue background"). Trainers mix fields into batches as negatives
// of the shape captions of their colour, so that "a red circle" needs a circle and not just red.
struct FieldExample {
  Background background;  // kPlain or kNoise; background.colour is a shape colour
  cv::Mat image;          // CV_8UC3 RGB, render.image_size square
  std::string caption;
};

// A blob: a random lump of a shape colour that is none of the world's shapes (its BestShapeOverlap is below
// kMaxBlobOverlap), 0.45–1.4 of the picture (so it may run off it), half of them with a soft edge and half with
// a grainy fill, on a world background, captioned "a red blob" ("[prefix ]a <colour> blob"). Generation
// steered by a CLIP that has seen only the ten shapes satisfies it with such lumps (bumps where a star has
// points, a notch where a heart has its cleft); trainers mix blobs into batches as negatives of the shape
// captions of their colour, so that a lump does not pass for a shape.
struct BlobExample {
  Background background;
  cv::Mat image;  // CV_8UC3 RGB, render.image_size square
  std::string caption;
  double overlap = 0;  // BestShapeOverlap of the blob
};
inline constexpr double kMaxBlobOverlap = 0.7;

// How much a silhouette (coverage 0..255, CV_8UC1) looks like one of the world's shapes: the best IoU between
// it and a shape's silhouette (at the rotations scenes use, in 5° steps), each cropped to its
// bounding box and resized to the same square. A rendered world shape scores about 0.9 or more; 0 for an empty
// picture.
double BestShapeOverlap(const cv::Mat& alpha);

// A scene, its image and one caption.
struct Example {
  Scene scene;
  cv::Mat image;  // CV_8UC3 RGB, render.image_size square
  std::string caption;
  CaptionParts caption_parts;  // what `caption` names besides colour and shape
};

// Draws scenes of one split and seed by index: random access, every result a pure function of (options,
// index). Immutable after Create, so its const methods may be called from any number of threads at once;
// none blocks.
class SceneSampler {
 public:
  // INVALID_ARGUMENT for a seed of the other split or for out-of-range options.
  static absl::StatusOr<std::unique_ptr<SceneSampler>> Create(const SceneSamplerOptions& options);

  // The scene at `index`.
  Scene SceneAt(uint64_t index) const;
  // The scene at `index`, its image and a caption (drawn from its own stream, so also fixed by the index).
  Example Sample(uint64_t index) const;
  // A scene drawn like SceneAt(index) but with the given label pair (which need not be in options.shapes /
  // options.colours; INVALID_ARGUMENT for gray). Its randomness is its own stream, not SceneAt(index)'s.
  absl::StatusOr<Scene> SceneWithLabels(uint64_t index, Colour colour, Shape shape) const;
  // An example drawn like Sample(index) but with the given shape colour (which need not be in
  // options.colours; INVALID_ARGUMENT for gray); shape and the rest are drawn as usual. Its randomness is a
  // stream of its own. Trainers use it for batches whose items share a colour, so only shape tells them apart.
  absl::StatusOr<Example> SampleWithColour(uint64_t index, Colour colour) const;
  // A blob (see BlobExample) of `colour` (a shape colour; INVALID_ARGUMENT for gray). A stream of its own.
  absl::StatusOr<BlobExample> SampleBlob(uint64_t index, Colour colour) const;
  // A field (see FieldExample) of `colour` (a shape colour; INVALID_ARGUMENT for gray), plain or noisy with
  // equal odds, and a caption ("[prefix ]a [noisy ]<colour> background"). A stream of its own.
  absl::StatusOr<FieldExample> SampleField(uint64_t index, Colour colour) const;
  // `count` examples whose (colour, shape) pairs all differ, drawn from the sampler's shapes and colours (the
  // retrieval test: a caption against images that each have another label pair). Group `group` of a stream of
  // its own: it shares no scene with SceneAt. INVALID_ARGUMENT if count exceeds the number of pairs.
  absl::StatusOr<std::vector<Example>> DistinctPairs(uint64_t group, int count) const;

  const SceneSamplerOptions& options() const { return options_; }
  // The shapes and colours drawn from (the options', or all).
  const std::vector<Shape>& shapes() const { return shapes_; }
  const std::vector<Colour>& colours() const { return colours_; }

 private:
  explicit SceneSampler(const SceneSamplerOptions& options);
  Scene Draw(Rng& rng, std::optional<Colour> colour, std::optional<Shape> shape) const;
  Background DrawBackground(Rng& rng, Rgb shape_rgb) const;
  Example MakeExample(const Scene& scene, Rng& caption_rng) const;

  SceneSamplerOptions options_;
  std::vector<Shape> shapes_;
  std::vector<Colour> colours_;
};

}  // namespace clipserve::shapes
