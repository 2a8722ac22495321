#include "tests/testing/scratch_dir.h"
#include "tools/train/clip_trainer.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <opencv2/imgproc.hpp>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "server/models/clip/clip_bundle.h"
#include "server/models/cpu_threads.h"

namespace clipserve::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

ClipTrainerOptions TinyOptions(const fs::path& dir) {
  ClipTrainerOptions o;
  o.out_dir = dir;
  o.minutes = 5;
  o.max_steps = 20;
  o.vision_width = 32;
  o.vision_layers = 1;
  o.vision_heads = 2;
  o.patch_size = 16;
  o.text_width = 32;
  o.text_layers = 1;
  o.text_heads = 2;
  o.projection_dim = 32;
  o.bpe_vocab_size = 600;
  o.bpe_corpus_scenes = 50;
  o.batch_size = 32;
  o.field_fraction = 0.125;  // one field per colour group of 8: the field path runs too
  o.sincos_position_scale = 0.5;
  o.caption_targets = true;  // and caption-level targets
  o.ema_decay = 0.9;         // and the weight average
  o.lr = 3e-3;
  o.warmup_steps = 2;
  o.eval_every = 10;
  o.eval_count = 32;
  o.verbose = false;
  return o;
}

// A path for a run's output directory, which the trainer creates; removed with the process's scratch root.
fs::path TempDir(const std::string& name) { return ::clipserve::testing::ScratchFile(name); }

// Trains a tiny CLIP into `dir` for `steps` steps, without a weight average: the base of the fine-tuning tests.
absl::Status TrainTinyBase(const fs::path& dir, int64_t steps) {
  ClipTrainerOptions o = TinyOptions(dir);
  o.max_steps = steps;
  o.ema_decay = 0;
  return TrainClip(o).status();
}

// A fine-tune of `steps` steps from the CLIP in `base` into `dir`, without a weight average.
ClipTrainerOptions FineTuneOptions(const fs::path& base, const fs::path& dir, int64_t steps) {
  ClipTrainerOptions f = TinyOptions(dir);
  f.init_from = base;
  f.ema_decay = 0;
  f.max_steps = steps;
  return f;
}

std::vector<nlohmann::json> ReadCurve(const fs::path& dir) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(dir / "learning_curve.jsonl");
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

double Mean(const std::vector<double>& v, size_t from, size_t to) {
  return std::accumulate(v.begin() + from, v.begin() + to, 0.0) / static_cast<double>(to - from);
}

class TrainClipTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ConfigureCpuThreads({.intra_op_threads = 1, .blas_threads = AvailableCores()}); }
};

PairFacts LabelOnly(int label) { return {.label = label}; }

TEST_F(TrainClipTest, LabelTargetsForHandMadeBatch) {
  // Labels: a, b, a, c, a, captions naming only the label → every a caption is true of every a picture.
  const at::Tensor t =
      CaptionTargets({LabelOnly(7), LabelOnly(3), LabelOnly(7), LabelOnly(11), LabelOnly(7)});
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{5, 5}));
  const std::vector<std::vector<float>> want = {
      {1, 0, 1, 0, 1}, {0, 1, 0, 0, 0}, {1, 0, 1, 0, 1}, {0, 0, 0, 1, 0}, {1, 0, 1, 0, 1}};
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 5; ++j) EXPECT_FLOAT_EQ(t[i][j].item<float>(), want[i][j]) << i << "," << j;
  }
  // Perfect logits give a lower loss than uniform ones; uniform logits give log(B); perfect ones leave the
  // spread over each a's three positives: (3 · log 3) / 5.
  const at::Tensor perfect = 50.0 * t, uniform = at::zeros({5, 5});
  EXPECT_LT(ContrastiveLoss(perfect, t).item<double>(), ContrastiveLoss(uniform, t).item<double>());
  EXPECT_NEAR(ContrastiveLoss(uniform, t).item<double>(), std::log(5.0), 1e-5);
  EXPECT_NEAR(ContrastiveLoss(perfect, t).item<double>(), (3 * std::log(3.0)) / 5, 1e-4);
}

// A caption naming a background is true only of pictures with that background; one naming nothing more is true
// of every picture of its label. The relation is not symmetric, and the loss normalises each direction.
TEST_F(TrainClipTest, CaptionTargetsFollowWhatEachCaptionNames) {
  PairFacts white{.label = 7, .size = 1, .background = 100, .position = 0};
  PairFacts blue = white;
  blue.background = 200;
  PairFacts plain_caption = blue;  // a red circle on blue, captioned "a red circle"
  PairFacts white_caption = white;  // a red circle on white, captioned "... on a white background"
  white_caption.named.background = true;
  PairFacts big_caption = white;  // captioned "a big red circle": true of both (same size class)
  big_caption.named.size = true;
  PairFacts other_size = blue;  // a small red circle on blue, captioned "a small red circle"
  other_size.size = 0;
  other_size.named.size = true;
  const at::Tensor t = CaptionTargets({plain_caption, white_caption, big_caption, other_size});
  const std::vector<std::vector<float>> want = {
      // captions: plain, white bg, big, small
      {1, 0, 1, 0},  // picture 0: big red circle on blue
      {1, 1, 1, 0},  // picture 1: big red circle on white
      {1, 1, 1, 0},  // picture 2: big red circle on white
      {1, 0, 0, 1},  // picture 3: small red circle on blue
  };
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(t[i][j].item<float>(), want[i][j]) << i << "," << j;
  }
  // Logits that score exactly the true pairs beat logits that score every same-label pair alike.
  const at::Tensor exact = 50.0 * t, label_only = at::full({4, 4}, 50.0);
  EXPECT_LT(ContrastiveLoss(exact, t).item<double>(), ContrastiveLoss(label_only, t).item<double>());
}

// FactsOf reads the example's caption parts, and only those it is asked to.
TEST_F(TrainClipTest, FactsOfAWorldExample) {
  auto sampler = shapes::SceneSampler::Create({.seed = 5});
  ASSERT_TRUE(sampler.ok());
  int with_background = 0;
  for (uint64_t i = 0; i < 200; ++i) {
    const shapes::Example e = (*sampler)->Sample(i);
    const PairFacts f = FactsOf(e, {.size = true, .background = true, .position = true});
    EXPECT_EQ(f.label, LabelOf(e.scene.colour, e.scene.shape));
    EXPECT_EQ(f.named.background, e.caption_parts.background);
    EXPECT_EQ(f.named.size, e.caption_parts.size);
    EXPECT_EQ(f.named.position, e.caption_parts.position);
    with_background += f.named.background ? 1 : 0;
    const PairFacts plain = FactsOf(e, {});
    EXPECT_FALSE(plain.named.background || plain.named.size || plain.named.position);
    const PairFacts background = FactsOf(e, {.background = true});
    EXPECT_EQ(background.named.background, e.caption_parts.background);
    EXPECT_FALSE(background.named.size || background.named.position);
  }
  EXPECT_GT(with_background, 30);  // captions name the background 35 % of the time
}

TEST_F(TrainClipTest, LabelsAreDistinctPerPair) {
  EXPECT_EQ(LabelOf(shapes::Colour::kRed, shapes::Shape::kCircle), 0);
  EXPECT_NE(LabelOf(shapes::Colour::kOrange, shapes::Shape::kCircle),
            LabelOf(shapes::Colour::kRed, shapes::Shape::kArrow));
}

TEST_F(TrainClipTest, FieldLabelsComeAfterEveryPairLabel) {
  int largest_pair = 0;
  for (shapes::Colour c : shapes::kShapeColours) {
    for (shapes::Shape s : shapes::kShapes) largest_pair = std::max(largest_pair, LabelOf(c, s));
  }
  std::set<int> fields;
  for (shapes::Colour c : shapes::kShapeColours) {
    EXPECT_GT(FieldLabelOf(c), largest_pair);
    fields.insert(FieldLabelOf(c));
  }
  EXPECT_EQ(fields.size(), shapes::kShapeColours.size());
}

TEST_F(TrainClipTest, BlobLabelsComeAfterEveryFieldLabel) {
  std::set<int> blobs;
  for (shapes::Colour c : shapes::kShapeColours) {
    for (shapes::Colour field : shapes::kBackgroundColours) EXPECT_GT(BlobLabelOf(c), FieldLabelOf(field));
    blobs.insert(BlobLabelOf(c));
  }
  EXPECT_EQ(blobs.size(), shapes::kShapeColours.size());
}

TEST_F(TrainClipTest, BlobsJoinTheBatchesAndTheVocabulary) {
  const fs::path with = TempDir("blobs"), without = TempDir("noblobs");
  ClipTrainerOptions o = TinyOptions(with);
  o.max_steps = 2;
  o.ema_decay = 0;
  o.blob_fraction = 0.25;  // two blobs per colour group of 8, after its field
  o.bpe_vocab_size = 1024;  // room for every word of the world (the BPE stops when words are whole)
  auto a = TrainClip(o);
  ASSERT_TRUE(a.ok()) << a.status();
  // The BPE learnt the word from the blob captions in its corpus.
  std::ifstream vocab(with / "vocab.json");
  EXPECT_THAT(std::string(std::istreambuf_iterator<char>(vocab), {}), HasSubstr("\"blob</w>\""));
  o.out_dir = without;
  o.blob_fraction = 0;
  auto b = TrainClip(o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(a->losses[0], b->losses[0]);
  std::ifstream plain_vocab(without / "vocab.json");
  EXPECT_THAT(std::string(std::istreambuf_iterator<char>(plain_vocab), {}), Not(HasSubstr("\"blob</w>\"")));
  for (double blobs : {-0.1, 0.9}) {  // 0.9 + the field fraction 0.125 > 1
    o.blob_fraction = blobs;
    EXPECT_EQ(TrainClip(o).status().code(), absl::StatusCode::kInvalidArgument) << blobs;
  }
  for (const fs::path& dir : {with, without}) fs::remove_all(dir);
}

TEST_F(TrainClipTest, SinCosPositionsMatchTheFormula) {
  const int grid = 4, width = 8;  // two frequencies: 1 and 10000^(-1/2) = 0.01
  at::Tensor t = SinCosPositions2d(grid, width);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{1 + grid * grid, width}));
  EXPECT_EQ(t[0].abs().sum().item<float>(), 0.f);  // the class token
  auto a = t.accessor<float, 2>();
  for (int r = 0; r < grid; ++r) {
    for (int c = 0; c < grid; ++c) {
      const int row = 1 + r * grid + c;
      const double w[2] = {1.0, 0.01};
      for (int k = 0; k < 2; ++k) {
        EXPECT_NEAR(a[row][k], std::sin(r * w[k]), 1e-6);
        EXPECT_NEAR(a[row][2 + k], std::cos(r * w[k]), 1e-6);
        EXPECT_NEAR(a[row][4 + k], std::sin(c * w[k]), 1e-6);
        EXPECT_NEAR(a[row][6 + k], std::cos(c * w[k]), 1e-6);
      }
    }
  }
  EXPECT_ANY_THROW(SinCosPositions2d(4, 6));
}

// Re-patching for a finer (8 -> 4) or coarser (8 -> 16) token grid keeps every other weight and the text tower's
// output, keeps what a flat patch gives each token (the kernel's per-channel sums) and the class token's
// position, resizes the grid's positions, and refuses a size that does not divide the picture.
TEST_F(TrainClipTest, RepatchingResizesThePatchAndPositionEmbeddingsOnly) {
  ClipTrainerOptions o;
  auto from = clip::ClipModel::CreateRandom(MakeClipConfig(o, 600, 16, 598, 599), /*seed=*/7);
  const auto parameters = [](const clip::ClipModel& m) {
    std::map<std::string, at::Tensor> out;
    for (const auto& item : m.named_parameters(/*recurse=*/true)) out[item.key()] = item.value().detach();
    return out;
  };
  const auto old = parameters(*from);
  const at::Tensor ids = at::randint(1, 598, {2, 16}, at::kLong);
  for (const int patch : {4, 16}) {
    SCOPED_TRACE(patch);
    auto to = RepatchVision(*from, patch);
    ASSERT_TRUE(to.ok()) << to.status();
    EXPECT_EQ((*to)->config().vision.patch_size, patch);
    const auto now = parameters(**to);
    ASSERT_EQ(now.size(), old.size());
    const int grid = 64 / patch;
    for (const auto& [name, value] : now) {
      if (name == "patch_embedding") {
        EXPECT_EQ(value.sizes(), (std::vector<int64_t>{192, 3, patch, patch}));
        EXPECT_TRUE(at::allclose(value.sum({2, 3}), old.at(name).sum({2, 3}), 1e-4, 1e-5));
      } else if (name == "vision_position_embedding") {
        EXPECT_EQ(value.sizes(), (std::vector<int64_t>{1 + grid * grid, 192}));
        EXPECT_TRUE(at::equal(value[0], old.at(name)[0]));
        EXPECT_FALSE(value.narrow(0, 1, grid * grid).isnan().any().item<bool>());
      } else {
        EXPECT_TRUE(at::equal(value, old.at(name))) << name;
      }
    }
    c10::InferenceMode guard;
    EXPECT_TRUE(at::equal((*to)->EncodeText(ids), from->EncodeText(ids)));
    EXPECT_EQ((*to)->EncodeImage(at::randn({2, 3, 64, 64})).sizes(), (std::vector<int64_t>{2, 128}));
  }
  EXPECT_EQ(RepatchVision(*from, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RepatchVision(*from, 0).status().code(), absl::StatusCode::kInvalidArgument);
  ClipTrainerOptions no_init = TinyOptions(TempDir("unused"));
  no_init.init_patch_size = 4;
  EXPECT_EQ(TrainClip(no_init).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TrainClipTest, AugmentationWithoutAugmentEqualsPreprocess) {
  auto sampler = shapes::SceneSampler::Create({.split = shapes::Split::kEval, .seed = shapes::kFirstEvalSeed});
  ASSERT_TRUE(sampler.ok());
  shapes::Example e = (*sampler)->Sample(3);
  clip::PreprocessConfig pre;
  pre.resize_shortest_edge = pre.crop_height = pre.crop_width = 64;
  std::vector<float> ours(3 * 64 * 64), theirs(3 * 64 * 64), augmented(3 * 64 * 64);
  shapes::Rng rng(1);
  AugmentAndNormalize(e.image, shapes::SceneBounds(e.scene), pre, /*augment=*/false, rng, ours.data());
  ImageView view{.pixels = absl::MakeConstSpan(e.image.data, e.image.total() * 3), .width = 64,
                       .height = 64, .channels = 3};
  ASSERT_TRUE(clip::Preprocess(view, pre, absl::MakeSpan(theirs)).ok());
  for (size_t i = 0; i < ours.size(); ++i) ASSERT_NEAR(ours[i], theirs[i], 1e-5) << i;
  AugmentAndNormalize(e.image, shapes::SceneBounds(e.scene), pre, /*augment=*/true, rng, augmented.data());
  EXPECT_NE(augmented, ours);
}

// A crop must never cut the shape (a cut circle is not a circle any more): augmenting a white-on-black mask of
// the shape leaves the output's one-pixel frame black, and the shape's area within what zoom allows.
TEST_F(TrainClipTest, AugmentationKeepsTheWholeShape) {
  auto sampler = shapes::SceneSampler::Create({.split = shapes::Split::kTrain, .seed = 4});
  ASSERT_TRUE(sampler.ok());
  clip::PreprocessConfig pre;
  pre.resize_shortest_edge = pre.crop_height = pre.crop_width = 64;
  std::vector<float> out(3 * 64 * 64);
  for (uint64_t i = 0; i < 300; ++i) {
    const shapes::Scene scene = (*sampler)->SceneAt(i);
    auto r = shapes::Render(scene, {.image_size = 64});
    ASSERT_TRUE(r.ok());
    cv::Mat mask;
    cv::cvtColor(r->alpha, mask, cv::COLOR_GRAY2RGB);
    shapes::Rng rng = shapes::Rng::For(4, i, 99);
    AugmentAndNormalize(mask, shapes::SceneBounds(scene), pre, /*augment=*/true, rng, out.data());
    int border_hits = 0, area = 0;
    for (int y = 0; y < 64; ++y) {
      for (int x = 0; x < 64; ++x) {
        const bool on = out[y * 64 + x] * pre.std[0] + pre.mean[0] > 0.5;
        area += on;
        border_hits += on && (x == 0 || y == 0 || x == 63 || y == 63);
      }
    }
    const int original = cv::countNonZero(r->alpha > 127);
    EXPECT_EQ(border_hits, 0) << "scene " << i;
    EXPECT_GT(area, original / 3) << "scene " << i;
    EXPECT_LT(area, original * 3) << "scene " << i;
  }
}

TEST_F(TrainClipTest, WeightAverageFollowsTheWarmedUpDecay) {
  at::Tensor w = at::tensor({1.0f, 2.0f});
  at::Tensor v = at::tensor({-4.0f});
  WeightAverage average({w, v}, /*decay=*/0.5);
  EXPECT_TRUE(at::equal(average.averages()[0], w));
  w.copy_(at::tensor({3.0f, 6.0f}));
  v.fill_(8.0f);
  average.Update();  // first update: d = min(0.5, 2 / 11)
  const double d1 = 2.0 / 11;
  EXPECT_EQ(average.updates(), 1);
  EXPECT_NEAR(average.averages()[0][0].item<double>(), d1 * 1 + (1 - d1) * 3, 1e-6);
  EXPECT_NEAR(average.averages()[0][1].item<double>(), d1 * 2 + (1 - d1) * 6, 1e-6);
  EXPECT_NEAR(average.averages()[1][0].item<double>(), d1 * -4 + (1 - d1) * 8, 1e-6);
  for (int i = 0; i < 20; ++i) average.Update();  // (1 + n) / (10 + n) passes 0.5 at n = 8: d = 0.5 from there
  w.fill_(0.0f);
  const double before = average.averages()[0][0].item<double>();
  average.Update();
  EXPECT_NEAR(average.averages()[0][0].item<double>(), 0.5 * before, 1e-6);
  EXPECT_EQ(average.updates(), 22);

  // Swap exchanges parameters and averages; a second swap restores both.
  const at::Tensor avg = average.averages()[0].clone();
  average.Swap();
  EXPECT_TRUE(at::equal(w, avg));
  EXPECT_TRUE(at::equal(average.averages()[0], at::zeros({2})));
  average.Swap();
  EXPECT_TRUE(at::equal(w, at::zeros({2})));
  EXPECT_TRUE(at::equal(average.averages()[0], avg));
}

TEST_F(TrainClipTest, WeightAverageRoundTripsThroughACheckpoint) {
  const fs::path path = TempDir("ema_archive");
  at::Tensor w = at::tensor({1.0f, 2.0f});
  WeightAverage saved({w}, 0.9);
  w.fill_(5.0f);
  saved.Update();
  saved.Update();
  {
    torch::serialize::OutputArchive archive;
    saved.Save(archive);
    archive.save_to(path.string());
  }
  at::Tensor u = at::tensor({7.0f, 7.0f});
  WeightAverage loaded({u}, 0.9);
  torch::serialize::InputArchive archive;
  archive.load_from(path.string());
  ASSERT_TRUE(loaded.Load(archive));
  EXPECT_EQ(loaded.updates(), 2);
  EXPECT_TRUE(at::equal(loaded.averages()[0], saved.averages()[0]));
  // An average of other shapes (another model) or an archive without one is refused and changes nothing.
  at::Tensor other = at::zeros({3});
  WeightAverage mismatched({other}, 0.9);
  EXPECT_FALSE(mismatched.Load(archive));
  EXPECT_EQ(mismatched.updates(), 0);
  {
    torch::serialize::OutputArchive empty;
    empty.write("step", at::tensor(int64_t{3}));
    empty.save_to(path.string());
  }
  torch::serialize::InputArchive without;
  without.load_from(path.string());
  EXPECT_FALSE(loaded.Load(without));
  EXPECT_EQ(loaded.updates(), 2);
  fs::remove(path);
}

TEST_F(TrainClipTest, TrainsLoadsThroughBundleAndResumes) {
  const fs::path dir = TempDir("run");
  ClipTrainerOptions o = TinyOptions(dir);
  auto first = TrainClip(o);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->steps, 20);
  ASSERT_EQ(first->losses.size(), 20u);
  EXPECT_LT(Mean(first->losses, 15, 20), Mean(first->losses, 0, 5));
  for (const char* f : {"config.json", "model.safetensors", "vocab.json", "merges.txt", "preprocessor_config.json",
                        "train_state.pt", "learning_curve.jsonl"}) {
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  }
  // Evaluations at steps 10, 20 and the final one.
  std::vector<nlohmann::json> curve = ReadCurve(dir);
  ASSERT_GE(curve.size(), 2u);
  for (const auto& row : curve) {
    for (const char* key : {"minutes", "step", "loss", "colour", "shape", "both", "ema_colour", "ema_shape",
                            "ema_both"}) {
      EXPECT_TRUE(row.contains(key)) << key;
    }
  }
  // The weight average is a second complete directory that the server loads, with weights of its own.
  {
    auto trained = clip::ClipBundle::Load({.dir = dir});
    auto averaged = clip::ClipBundle::Load({.dir = dir / "ema"});
    ASSERT_TRUE(trained.ok()) << trained.status();
    ASSERT_TRUE(averaged.ok()) << averaged.status();
    at::NoGradGuard no_grad;
    const at::Tensor pixels = at::rand({2, 3, 64, 64});
    const at::Tensor a = (*trained)->model->EncodeImage(pixels), b = (*averaged)->model->EncodeImage(pixels);
    EXPECT_EQ(a.sizes(), b.sizes());
    EXPECT_FALSE(at::allclose(a, b));
  }

  // The server's loader takes the directory as it is.
  auto bundle = clip::ClipBundle::Load({.dir = dir});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  const clip::ClipConfig& config = (*bundle)->model->config();
  EXPECT_EQ(config.text.vocab_size, static_cast<int>((*bundle)->tokenizer->vocab_size()));
  EXPECT_EQ(config.text.eos_token_id, (*bundle)->tokenizer->eot_id());
  EXPECT_FALSE(config.legacy_eos_pooling());
  EXPECT_EQ((*bundle)->image_size(), 64);
  EXPECT_EQ((*bundle)->preprocess.crop_height, 64);
  EXPECT_EQ((*bundle)->preprocess.resize_shortest_edge, 64);
  const int l = (*bundle)->context_length();
  EXPECT_LE(l, 77);
  EXPECT_EQ(l, config.text.max_position_embeddings);
  for (shapes::Colour colour : shapes::kShapeColours) {
    for (shapes::Shape shape : shapes::kShapes) {
      std::vector<int64_t> ids(l);
      const std::string prompt = shapes::ZeroShotPrompt(colour, shape);
      ASSERT_TRUE((*bundle)->tokenizer->EncodePadded(prompt, clip::Truncation::kReject, absl::MakeSpan(ids), nullptr)
                      .ok())
          << prompt;
      auto encoded = (*bundle)->tokenizer->Encode(prompt);
      ASSERT_TRUE(encoded.ok());
      EXPECT_EQ((*bundle)->tokenizer->Decode(*encoded), prompt + " ");
    }
  }
  {
    at::NoGradGuard no_grad;
    at::Tensor f = (*bundle)->model->EncodeImage(at::zeros({2, 3, 64, 64}));
    EXPECT_EQ(f.sizes(), (at::IntArrayRef{2, 32}));
  }

  // Resume: continues from step 20 to 30 with the optimizer state; the curve is appended to.
  o.resume = true;
  o.max_steps = 30;
  auto second = TrainClip(o);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->start_step, 20);
  EXPECT_EQ(second->steps, 30);
  EXPECT_EQ(second->losses.size(), 10u);
  EXPECT_GT(ReadCurve(dir).size(), curve.size());
  EXPECT_EQ(ReadCurve(dir).back()["step"], 30);
  // Resumed losses continue from where training was, not from a fresh model's.
  EXPECT_LT(Mean(second->losses, 0, 10), Mean(first->losses, 0, 5));
  // The average continued too: the checkpoint counts all 30 updates.
  {
    torch::serialize::InputArchive archive;
    archive.load_from((dir / "train_state.pt").string());
    at::Tensor updates;
    ASSERT_TRUE(archive.try_read("ema/updates", updates));
    EXPECT_EQ(updates.item<int64_t>(), 30);
  }
  fs::remove_all(dir);
}

TEST_F(TrainClipTest, FineTunesFromADirectoryWithGenerationCutouts) {
  const fs::path base = TempDir("base"), tuned = TempDir("tuned"), plain = TempDir("plain");
  ASSERT_TRUE(TrainTinyBase(base, 4).ok());

  // From the base's weights, tokenizer and architecture (the model options are ignored), with half of every
  // batch through generation's cutouts; a learning rate too small to move the weights.
  ClipTrainerOptions f = FineTuneOptions(base, tuned, 2);
  f.vision_width = 64;
  f.bpe_vocab_size = 700;
  f.generation_cutouts = 0.5;
  f.lr = 1e-12;
  f.eval_every = 1;
  auto run = TrainClip(f);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->start_step, 0);
  EXPECT_EQ(run->steps, 2);
  for (const char* name : {"vocab.json", "merges.txt", "preprocessor_config.json"}) {
    std::ifstream a(base / name), b(tuned / name);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}))
        << name;
  }
  auto before = clip::ClipBundle::Load({.dir = base});
  auto after = clip::ClipBundle::Load({.dir = tuned});
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ((*after)->model->config().vision.hidden_size, 32);
  {
    at::NoGradGuard no_grad;
    const at::Tensor pixels = at::rand({2, 3, 64, 64});
    EXPECT_TRUE(at::allclose((*before)->model->EncodeImage(pixels), (*after)->model->EncodeImage(pixels), 1e-4,
                             1e-5));
  }
  // The evaluation scores the held-out pictures after a generation cutout too.
  for (const auto& row : ReadCurve(tuned)) {
    for (const char* key : {"cut_colour", "cut_shape", "cut_both"}) EXPECT_TRUE(row.contains(key)) << key;
  }
  // The cutouts change what the model is trained on: the same fine-tune without them has other losses.
  f.out_dir = plain;
  f.generation_cutouts = 0;
  auto without = TrainClip(f);
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_NE(without->losses[0], run->losses[0]);
  EXPECT_FALSE(ReadCurve(plain).front().contains("cut_shape"));

  f.generation_cutouts = 1.5;
  EXPECT_EQ(TrainClip(f).status().code(), absl::StatusCode::kInvalidArgument);
  f.generation_cutouts = 0.5;
  f.generation_cutout_options.perspective_distortion = 2;
  EXPECT_EQ(TrainClip(f).status().code(), absl::StatusCode::kInvalidArgument);
  f.generation_cutout_options = {};
  f.generation_cutouts = 0;
  f.init_from = base / "missing";
  EXPECT_EQ(TrainClip(f).status().code(), absl::StatusCode::kInvalidArgument);
  for (const fs::path& dir : {base, tuned, plain}) fs::remove_all(dir);
}

TEST_F(TrainClipTest, AlignmentPullsPicturesTowardsTheirCaptions) {
  const fs::path base = TempDir("align_base"), plain = TempDir("align_plain"), aligned = TempDir("align_on");
  ASSERT_TRUE(TrainTinyBase(base, 10).ok());

  // The same fine-tune from the same weights, with and without the alignment term: the curve reports the mean
  // cosine of the held-out pictures with their own prompts, and the term raises it.
  ClipTrainerOptions f = FineTuneOptions(base, plain, 10);
  auto without = TrainClip(f);
  ASSERT_TRUE(without.ok()) << without.status();
  f.out_dir = aligned;
  f.alignment_weight = 5;
  auto with = TrainClip(f);
  ASSERT_TRUE(with.ok()) << with.status();
  const double cosine_without = without->final_eval.positive_cosine, cosine_with = with->final_eval.positive_cosine;
  EXPECT_GT(cosine_with, cosine_without + 0.05) << "without " << cosine_without << ", with " << cosine_with;
  EXPECT_LE(cosine_with, 1.0);
  for (const auto& row : ReadCurve(aligned)) EXPECT_TRUE(row.contains("positive_cosine"));

  f.alignment_weight = -1;
  EXPECT_EQ(TrainClip(f).status().code(), absl::StatusCode::kInvalidArgument);
  for (const fs::path& dir : {base, plain, aligned}) fs::remove_all(dir);
}

TEST_F(TrainClipTest, AdversarialPixelsStayInTheBallAndRaiseTheLoss) {
  const ClipTrainerOptions o = TinyOptions(TempDir("unused"));
  auto model = clip::ClipModel::CreateRandom(MakeClipConfig(o, 600, 16, 598, 599), /*seed=*/7);
  for (auto& p : model->parameters()) p.set_requires_grad(true);
  clip::PreprocessConfig pre;
  const int64_t b = 6;
  at::manual_seed(3);
  const at::Tensor mean = at::tensor(std::vector<float>(pre.mean.begin(), pre.mean.end())).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor(std::vector<float>(pre.std.begin(), pre.std.end())).view({1, 3, 1, 1});
  const at::Tensor pixels = (at::rand({b, 3, 64, 64}) - mean) / std;
  at::Tensor text = at::randn({b, 32});
  text = text / text.norm(2, -1, true);
  const at::Tensor targets = at::eye(b);
  const at::Tensor selected = at::tensor(std::vector<int64_t>{1, 1, 0, 1, 1, 0}).to(at::kBool);
  const double eps = 8.0 / 255, scale = 20;
  at::Generator generator = at::detail::createCPUGenerator(11);
  const at::Tensor adversarial =
      AdversarialPixels(*model, pixels, text, targets, scale, pre, eps, /*steps=*/3, selected, generator);

  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined() && p.grad().abs().sum().item<float>() > 0);
  EXPECT_FALSE(adversarial.requires_grad());
  const at::Tensor moved = ((adversarial - pixels) * std).abs();  // in [0, 1] pixel units
  EXPECT_LE(moved.max().item<float>(), eps + 1e-5);
  EXPECT_GT(moved.max().item<float>(), eps * 0.9);
  for (int64_t row : {2, 5}) EXPECT_TRUE(at::equal(adversarial[row], pixels[row])) << row;
  const at::Tensor raw = adversarial * std + mean;
  EXPECT_GE(raw.min().item<float>(), -1e-5);
  EXPECT_LE(raw.max().item<float>(), 1 + 1e-5);

  at::NoGradGuard no_grad;
  const auto loss_of = [&](const at::Tensor& x) {
    at::Tensor image = model->EncodeImage(x);
    image = image / image.norm(2, -1, true);
    return ContrastiveLoss(scale * image.matmul(text.t()), targets).item<double>();
  };
  // Random noise of the same size barely moves the loss; the adversarial perturbation raises it.
  const at::Tensor noise = (at::randint(0, 2, pixels.sizes()).to(at::kFloat) * 2 - 1) * eps / std *
                           selected.to(at::kFloat).view({-1, 1, 1, 1});
  const double clean = loss_of(pixels), noisy = loss_of(pixels + noise), attacked = loss_of(adversarial);
  EXPECT_GT(attacked, clean + 5 * std::abs(noisy - clean)) << clean << " " << noisy << " " << attacked;
}

TEST_F(TrainClipTest, AdversarialTrainingTrainsOnPerturbedPictures) {
  const fs::path adv = TempDir("adv"), plain = TempDir("adv_plain");
  ClipTrainerOptions o = TinyOptions(plain);
  o.max_steps = 2;
  o.ema_decay = 0;
  auto without = TrainClip(o);
  ASSERT_TRUE(without.ok()) << without.status();
  o.out_dir = adv;
  o.adversarial_epsilon = 8.0 / 255;
  o.adversarial_steps = 2;
  o.adversarial_fraction = 0.5;
  auto with = TrainClip(o);
  ASSERT_TRUE(with.ok()) << with.status();
  ASSERT_EQ(with->losses.size(), 2u);
  // Same batches and weights; half of the first batch perturbed towards a higher loss.
  EXPECT_GT(with->losses[0], without->losses[0]);

  for (auto [eps, steps, fraction] : {std::tuple{-0.1, 1, 1.0}, {1.0, 1, 1.0}, {0.03, 0, 1.0}, {0.03, 21, 1.0},
                                      {0.03, 1, 1.5}}) {
    o.adversarial_epsilon = eps;
    o.adversarial_steps = steps;
    o.adversarial_fraction = fraction;
    const absl::Status status = TrainClip(o).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << eps << " " << steps << " " << fraction;
    EXPECT_THAT(status.message(), HasSubstr("adversarial"));
  }
  for (const fs::path& dir : {adv, plain}) fs::remove_all(dir);
}

TEST_F(TrainClipTest, GenerationNegativesAndReconstructionsJoinTheBatches) {
  const fs::path base = TempDir("gn_base"), with_dir = TempDir("gn_with"), plain = TempDir("gn_plain");
  ASSERT_TRUE(TrainTinyBase(base, 2).ok());
  ClipTrainerOptions f = FineTuneOptions(base, plain, 2);
  f.blob_fraction = 0.125;
  auto without = TrainClip(f);
  ASSERT_TRUE(without.ok()) << without.status();

  f.out_dir = with_dir;
  f.generation_negatives = {.chains = 2,
                            .chain_steps = 3,
                            .min_steps = 0,
                            .cutouts = {.cutn = 2}};
  f.generation_negatives_refresh_every = 1;
  f.generation_vqgan_dir = fs::path(CLIPSERVE_SOURCE_DIR) / "models" / "shapes-world" / "vqgan";
  f.vqgan_reconstructions = 0.5;
  auto with = TrainClip(f);
  ASSERT_TRUE(with.ok()) << with.status();
  ASSERT_EQ(with->losses.size(), 2u);
  EXPECT_TRUE(std::isfinite(with->losses[0]));
  // Same weights and scenes; two more pictures and half the shapes through the VQGAN change the first loss.
  EXPECT_NE(with->losses[0], without->losses[0]);
  f.vqgan_reconstructions = 0;
  auto negatives_only = TrainClip(f);
  ASSERT_TRUE(negatives_only.ok()) << negatives_only.status();
  EXPECT_NE(negatives_only->losses[0], without->losses[0]);

  ClipTrainerOptions bad = f;
  bad.init_from.clear();
  EXPECT_THAT(TrainClip(bad).status().message(), HasSubstr("init_from"));
  bad = f;
  bad.generation_vqgan_dir.clear();
  EXPECT_EQ(TrainClip(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = f;
  bad.vqgan_reconstructions = 1.5;
  EXPECT_EQ(TrainClip(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = f;
  bad.generation_negatives_refresh_every = 0;
  EXPECT_EQ(TrainClip(bad).status().code(), absl::StatusCode::kInvalidArgument);
  for (const fs::path& dir : {base, with_dir, plain}) fs::remove_all(dir);
}

}  // namespace
}  // namespace clipserve::train
