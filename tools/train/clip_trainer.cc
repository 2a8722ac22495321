#include "tools/train/clip_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <opencv2/imgproc.hpp>
#include <torch/csrc/autograd/autograd.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/generation/cutouts.h"
#include "server/generation/latent_denoiser.h"
#include "server/models/clip/clip_model.h"
#include "server/models/clip/tokenizer.h"
#include "server/models/vqgan/vqgan.h"
#include "tools/bpe/bpe_trainer.h"

namespace clipserve::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kNumShapes = static_cast<int>(shapes::kShapes.size());

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A Gaussian draw from the world's Rng (Box-Muller).
double Gaussian(shapes::Rng& rng) {
  const double u1 = std::max(rng.Uniform01(), 1e-12);
  const double u2 = rng.Uniform01();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

absl::Status WritePreprocessorConfig(const fs::path& dir, int image_size, const clip::PreprocessConfig& pre) {
  nlohmann::json j;
  j["image_processor_type"] = "CLIPImageProcessor";
  j["do_resize"] = true;
  j["size"] = {{"shortest_edge", image_size}};
  j["resample"] = 3;
  j["do_center_crop"] = true;
  j["crop_size"] = {{"height", image_size}, {"width", image_size}};
  j["do_rescale"] = true;
  j["rescale_factor"] = 1.0 / 255.0;
  j["do_normalize"] = true;
  j["image_mean"] = {pre.mean[0], pre.mean[1], pre.mean[2]};
  j["image_std"] = {pre.std[0], pre.std[1], pre.std[2]};
  j["do_convert_rgb"] = true;
  return WriteFileAtomically(dir / "preprocessor_config.json", j.dump(2) + "\n");
}

// Trains the BPE on world captions and writes it; returns the context length to use.
absl::StatusOr<int> BuildTokenizer(const ClipTrainerOptions& o) {
  CLIPSERVE_ASSIGN_OR_RETURN(auto sampler, shapes::SceneSampler::Create({.split = shapes::Split::kTrain,
                                                                         .seed = o.seed}));
  CLIPSERVE_ASSIGN_OR_RETURN(auto bpe, bpe::BpeTrainer::Create({.vocab_size = o.bpe_vocab_size}));
  std::vector<std::string> corpus;
  for (int i = 0; i < o.bpe_corpus_scenes; ++i) {
    for (std::string& c : shapes::AllCaptions(sampler->SceneAt(static_cast<uint64_t>(i)))) {
      corpus.push_back(std::move(c));
    }
  }
  for (shapes::Colour colour : shapes::kShapeColours) {
    for (shapes::Shape shape : shapes::kShapes) corpus.push_back(shapes::ZeroShotPrompt(colour, shape));
    // Blob captions (only when blobs are trained on, so the tokenizer of the recipes without them is unchanged).
    if (o.blob_fraction > 0) {
      const absl::string_view name = shapes::ColourName(colour);
      corpus.push_back(absl::StrCat("a photo of ", shapes::Article(name), " ", name, " blob"));
    }
  }
  for (const std::string& text : corpus) CLIPSERVE_RETURN_IF_ERROR(bpe->AddText(text));
  CLIPSERVE_ASSIGN_OR_RETURN(bpe::BpeVocabulary vocab, bpe->Train());
  CLIPSERVE_RETURN_IF_ERROR(bpe::WriteBpeVocabulary(vocab, o.out_dir));
  CLIPSERVE_ASSIGN_OR_RETURN(auto tok, clip::Tokenizer::Create({.vocab_path = o.out_dir / "vocab.json",
                                                                .merges_path = o.out_dir / "merges.txt"}));
  size_t longest = 0;
  for (const std::string& text : corpus) {
    CLIPSERVE_ASSIGN_OR_RETURN(clip::TokenizedText t, tok->Tokenize(text));
    longest = std::max(longest, t.ids.size());
  }
  if (o.verbose) {
    std::fprintf(stderr, "tokenizer: %zu tokens (%zu merges) from %zu captions; longest caption %zu tokens\n",
                 vocab.tokens.size(), vocab.merges.size(), corpus.size(), longest);
  }
  return static_cast<int>(longest) + o.context_margin;
}

// A per-channel constant (the preprocessing's mean or std) as [1, 3, 1, 1], to normalise pictures with.
at::Tensor PerChannel(const std::array<float, 3>& v) {
  return at::tensor(std::vector<float>(v.begin(), v.end()), at::kFloat).view({1, 3, 1, 1});
}

struct Batch {
  at::Tensor pixels;  // [B, 3, S, S]
  at::Tensor ids;     // [B, L]
  std::vector<PairFacts> facts;
  at::Tensor adversarial;  // [B] bool: rows adversarial training perturbs (adversarial_epsilon > 0 only)
};

// `reconstructor`: the VQGAN of vqgan_reconstructions (null when that is off).
absl::StatusOr<Batch> MakeTrainBatch(const shapes::SceneSampler& sampler, const clip::Tokenizer& tok,
                                     const clip::PreprocessConfig& pre, const ClipTrainerOptions& o, int64_t step,
                                     const vqgan::VqganModel* reconstructor) {
  const int b = o.batch_size;
  const int s = o.image_size;
  const int l = tok.context_length();
  Batch batch;
  batch.pixels = at::empty({b, 3, s, s}, at::kFloat);
  batch.ids = at::zeros({b, l}, at::kLong);
  batch.facts.resize(b);
  float* px = batch.pixels.data_ptr<float>();
  int64_t* ids = batch.ids.data_ptr<int64_t>();
  // The caption parts that count as targets (none: label-level targets).
  const shapes::CaptionParts target_parts = o.caption_targets ? o.caption_target_parts : shapes::CaptionParts{};
  // The colours of this batch's groups: distinct, drawn from the step's own stream.
  std::vector<shapes::Colour> colours(shapes::kShapeColours.begin(), shapes::kShapeColours.end());
  const int groups = std::clamp(o.colour_groups, 0, static_cast<int>(colours.size()));
  shapes::Rng batch_rng = shapes::Rng::For(o.seed, static_cast<uint64_t>(step), /*stream=*/0x67726f75);
  for (int g = 0; g < groups; ++g) {
    std::swap(colours[g], colours[g + batch_rng.Below(colours.size() - g)]);
  }
  std::vector<int64_t> cutout_rows;  // items that also go through generation's cutouts
  std::vector<int64_t> reconstructed_rows;  // shape pictures replaced by their VQGAN reconstruction
  if (o.adversarial_epsilon > 0) batch.adversarial = at::zeros({b}, at::kBool);
  for (int i = 0; i < b; ++i) {
    const uint64_t index = static_cast<uint64_t>(step) * static_cast<uint64_t>(b) + static_cast<uint64_t>(i);
    cv::Mat image;
    std::string caption;
    std::array<double, 4> bounds = {0.5, 0.5, 0.5, 0.5};  // a field has no shape to keep inside the crop
    if (groups > 0) {
      const int group = i * groups / b;
      const int group_start = (group * b + groups - 1) / groups;  // first i with i * groups / b == group
      const int group_size = ((group + 1) * b + groups - 1) / groups - group_start;
      const int fields = static_cast<int>(o.field_fraction * group_size);
      const int blobs = static_cast<int>(o.blob_fraction * group_size);
      if (i - group_start < fields) {
        CLIPSERVE_ASSIGN_OR_RETURN(shapes::FieldExample f, sampler.SampleField(index, colours[group]));
        batch.facts[i] = {.label = FieldLabelOf(colours[group])};
        image = f.image;
        caption = std::move(f.caption);
      } else if (i - group_start < fields + blobs) {
        CLIPSERVE_ASSIGN_OR_RETURN(shapes::BlobExample f, sampler.SampleBlob(index, colours[group]));
        batch.facts[i] = {.label = BlobLabelOf(colours[group])};
        image = f.image;
        caption = std::move(f.caption);
      } else {
        CLIPSERVE_ASSIGN_OR_RETURN(shapes::Example e, sampler.SampleWithColour(index, colours[group]));
        batch.facts[i] = FactsOf(e, target_parts);
        bounds = shapes::SceneBounds(e.scene);
        image = e.image;
        caption = std::move(e.caption);
        if (reconstructor != nullptr &&
            shapes::Rng::For(o.seed, index, /*stream=*/0x76717263).Bernoulli(o.vqgan_reconstructions)) {
          reconstructed_rows.push_back(i);
        }
      }
    } else {
      shapes::Example e = sampler.Sample(index);
      batch.facts[i] = FactsOf(e, target_parts);
      bounds = shapes::SceneBounds(e.scene);
      image = e.image;
      caption = std::move(e.caption);
    }
    shapes::Rng rng = shapes::Rng::For(o.seed, index, /*stream=*/0x61756721);
    const bool augment = o.augment && rng.Bernoulli(o.augment_probability);
    AugmentAndNormalize(image, bounds, pre, augment, rng, px + static_cast<size_t>(i) * 3 * s * s);
    CLIPSERVE_RETURN_IF_ERROR(
        tok.EncodePadded(caption, clip::Truncation::kTruncate, absl::MakeSpan(ids + i * l, l), nullptr));
    if (o.generation_cutouts > 0 &&
        shapes::Rng::For(o.seed, index, /*stream=*/0x63757473).Bernoulli(o.generation_cutouts)) {
      cutout_rows.push_back(i);
    }
    if (o.adversarial_epsilon > 0 &&
        shapes::Rng::For(o.seed, index, /*stream=*/0x61647673).Bernoulli(o.adversarial_fraction)) {
      batch.adversarial.data_ptr<bool>()[i] = true;
    }
  }
  if (!reconstructed_rows.empty()) {
    at::NoGradGuard no_grad;
    const at::Tensor selected = at::tensor(reconstructed_rows, at::kLong);
    const at::Tensor mean = PerChannel(pre.mean), std = PerChannel(pre.std);
    const at::Tensor raw = batch.pixels.index_select(0, selected) * std + mean;  // [0, 1]
    CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor rec, reconstructor->Reconstruct(raw * 2 - 1));
    batch.pixels.index_copy_(0, selected, (((rec.to(at::kFloat) + 1) / 2).clamp(0, 1) - mean) / std);
  }
  if (!cutout_rows.empty()) {
    at::Generator generator = at::detail::createCPUGenerator(
        shapes::Rng::For(o.seed, static_cast<uint64_t>(step), /*stream=*/0x63757467).Next());
    const at::Tensor selected = at::tensor(cutout_rows, at::kLong);
    batch.pixels.index_copy_(0, selected,
                             generation::AugmentLikeCutouts(batch.pixels.index_select(0, selected), pre.mean,
                                                            pre.std, o.generation_cutout_options, generator));
  }
  return batch;
}

// Appends generation's pictures to the batch as blobs of their prompts' colours (never perturbed adversarially).
absl::Status AppendNegatives(const GenerationNegatives::Negatives& n, const clip::Tokenizer& tok,
                             const clip::PreprocessConfig& pre, Batch& batch) {
  if (n.colours.empty()) return absl::OkStatus();
  const int64_t count = static_cast<int64_t>(n.colours.size());
  const int l = tok.context_length();
  at::Tensor ids = at::zeros({count, l}, at::kLong);
  for (int64_t i = 0; i < count; ++i) {
    CLIPSERVE_RETURN_IF_ERROR(tok.EncodePadded(shapes::BlobCaption(n.colours[i]), clip::Truncation::kReject,
                                               absl::MakeSpan(ids.data_ptr<int64_t>() + i * l, l), nullptr));
    batch.facts.push_back({.label = BlobLabelOf(n.colours[i])});
  }
  const at::Tensor mean = PerChannel(pre.mean), std = PerChannel(pre.std);
  batch.pixels = at::cat({batch.pixels, (n.images.to(at::kFloat) - mean) / std});
  batch.ids = at::cat({batch.ids, ids});
  if (batch.adversarial.defined()) batch.adversarial = at::cat({batch.adversarial, at::zeros({count}, at::kBool)});
  return absl::OkStatus();
}

// Held-out images (normalised by clip::Preprocess itself) and the 80 zero-shot prompts.
struct EvalSet {
  at::Tensor pixels;
  at::Tensor cutout_pixels;  // with generation_cutouts: the same pictures after one generation cutout each
  std::vector<int> labels;
  at::Tensor prompt_ids;  // [colours * shapes, L], row = LabelOf
};

absl::StatusOr<EvalSet> MakeEvalSet(const ClipTrainerOptions& o, const clip::Tokenizer& tok,
                                    const clip::PreprocessConfig& pre) {
  CLIPSERVE_ASSIGN_OR_RETURN(auto sampler,
                             shapes::SceneSampler::Create({.split = shapes::Split::kEval, .seed = o.eval_seed,
                                                           .render = {.image_size = o.image_size}}));
  EvalSet set;
  const int n = o.eval_count;
  const size_t per = clip::PreprocessedSize(pre);
  set.pixels = at::empty({n, 3, pre.crop_height, pre.crop_width}, at::kFloat);
  float* px = set.pixels.data_ptr<float>();
  for (int i = 0; i < n; ++i) {
    shapes::Example e = sampler->Sample(static_cast<uint64_t>(i));
    set.labels.push_back(LabelOf(e.scene.colour, e.scene.shape));
    ImageView view{.pixels = absl::MakeConstSpan(e.image.data, e.image.total() * 3),
                         .width = e.image.cols, .height = e.image.rows, .channels = 3};
    CLIPSERVE_RETURN_IF_ERROR(clip::Preprocess(view, pre, absl::MakeSpan(px + i * per, per)));
  }
  if (o.generation_cutouts > 0) {
    at::NoGradGuard no_grad;
    at::Generator generator = at::detail::createCPUGenerator(o.eval_seed);
    set.cutout_pixels =
        generation::AugmentLikeCutouts(set.pixels, pre.mean, pre.std, o.generation_cutout_options, generator);
  }
  const int l = tok.context_length();
  const int np = static_cast<int>(shapes::kShapeColours.size()) * kNumShapes;
  set.prompt_ids = at::zeros({np, l}, at::kLong);
  int64_t* ids = set.prompt_ids.data_ptr<int64_t>();
  for (shapes::Colour colour : shapes::kShapeColours) {
    for (shapes::Shape shape : shapes::kShapes) {
      const int row = LabelOf(colour, shape);
      CLIPSERVE_RETURN_IF_ERROR(tok.EncodePadded(shapes::ZeroShotPrompt(colour, shape), clip::Truncation::kReject,
                                                 absl::MakeSpan(ids + row * l, l), nullptr));
    }
  }
  return set;
}

// Zero-shot accuracy on `pixels` (the set's images or their cutouts).
EvalResult Evaluate(const clip::ClipModel& model, const EvalSet& set, const at::Tensor& pixels) {
  at::NoGradGuard no_grad;
  at::Tensor text = model.EncodeText(set.prompt_ids);
  text = text / text.norm(2, -1, true);
  EvalResult r;
  const int64_t n = pixels.size(0);
  int colour_ok = 0, shape_ok = 0, both_ok = 0;
  double cosine_sum = 0;
  for (int64_t start = 0; start < n; start += 128) {
    const int64_t end = std::min(n, start + 128);
    at::Tensor img = model.EncodeImage(pixels.slice(0, start, end));
    img = img / img.norm(2, -1, true);
    const at::Tensor cosines = img.matmul(text.t()).contiguous();
    at::Tensor pred = cosines.argmax(1).contiguous();
    const int64_t* p = pred.data_ptr<int64_t>();
    const float* cosine = cosines.data_ptr<float>();
    const int64_t prompts = cosines.size(1);
    for (int64_t i = start; i < end; ++i) {
      const int want = set.labels[i];
      const int got = static_cast<int>(p[i - start]);
      cosine_sum += cosine[(i - start) * prompts + want];
      const bool c = want / kNumShapes == got / kNumShapes;
      const bool s = want % kNumShapes == got % kNumShapes;
      colour_ok += c;
      shape_ok += s;
      both_ok += c && s;
    }
  }
  r.colour = static_cast<double>(colour_ok) / n;
  r.shape = static_cast<double>(shape_ok) / n;
  r.both = static_cast<double>(both_ok) / n;
  r.positive_cosine = cosine_sum / n;
  return r;
}

bool NoDecay(const std::string& name, const at::Tensor& p) {
  return p.dim() < 2 || name.find("token_embedding") != std::string::npos ||
         name.find("position_embedding") != std::string::npos ||
         name.find("class_embedding") != std::string::npos;
}

std::unique_ptr<torch::optim::AdamW> MakeOptimizer(clip::ClipModel& model, const ClipTrainerOptions& o) {
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    (NoDecay(item.key(), item.value()) ? no_decay : decay).push_back(item.value());
  }
  auto base = torch::optim::AdamWOptions(o.lr).betas({0.9, 0.98}).eps(1e-6);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(base).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(base).weight_decay(0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), base);
}

double LearningRate(const ClipTrainerOptions& o, int64_t step, double trained_seconds) {
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / o.warmup_steps;
  double progress = o.max_steps > 0 ? static_cast<double>(step) / o.max_steps : trained_seconds / (o.minutes * 60);
  progress = std::clamp(progress, 0.0, 1.0);
  const double lo = o.lr * o.min_lr_fraction;
  return lo + (o.lr - lo) * 0.5 * (1 + std::cos(M_PI * progress));
}

absl::Status SaveCheckpoint(const clip::ClipModel& model, torch::optim::AdamW& opt, const WeightAverage* average,
                            const fs::path& dir, int64_t step, double trained_seconds) {
  CLIPSERVE_RETURN_IF_ERROR(model.Save(dir));
  try {
    torch::serialize::OutputArchive archive;
    opt.save(archive);
    if (average != nullptr) average->Save(archive);
    archive.write("step", at::tensor(step, at::kLong));
    archive.write("trained_seconds", at::tensor(trained_seconds, at::kDouble));
    const fs::path tmp = dir / "train_state.pt.tmp";
    archive.save_to(tmp.string());
    fs::rename(tmp, dir / "train_state.pt");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("writing ", (dir / "train_state.pt").string(), ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status LoadTrainState(torch::optim::AdamW& opt, WeightAverage* average, const fs::path& dir, int64_t* step,
                            double* seconds) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from((dir / "train_state.pt").string());
    opt.load(archive);
    // A checkpoint written without an average starts one from the resumed weights.
    if (average != nullptr) average->Load(archive);
    at::Tensor s, t;
    archive.read("step", s);
    archive.read("trained_seconds", t);
    *step = s.item<int64_t>();
    *seconds = t.item<double>();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("reading ", (dir / "train_state.pt").string(), ": ", e.what()));
  }
  return absl::OkStatus();
}

// Writes the weight average as a complete CLIP directory: the model's config and the average's weights, and the
// tokenizer and preprocessing files of `from`.
absl::Status SaveAverage(const clip::ClipModel& model, WeightAverage& average, const fs::path& from,
                         const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", dir.string(), ": ", ec.message()));
  average.Swap();
  absl::Status saved = model.Save(dir);
  average.Swap();
  CLIPSERVE_RETURN_IF_ERROR(saved);
  for (const char* name : {"vocab.json", "merges.txt", "preprocessor_config.json"}) {
    fs::copy_file(from / name, dir / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("copying ", (from / name).string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

WeightAverage::WeightAverage(std::vector<at::Tensor> parameters, double decay)
    : parameters_(std::move(parameters)), decay_(decay) {
  at::NoGradGuard no_grad;
  averages_.reserve(parameters_.size());
  for (const at::Tensor& p : parameters_) averages_.push_back(p.detach().clone());
}

void WeightAverage::Update() {
  at::NoGradGuard no_grad;
  ++updates_;
  const double d = std::min(decay_, (1.0 + static_cast<double>(updates_)) / (10.0 + static_cast<double>(updates_)));
  for (size_t i = 0; i < parameters_.size(); ++i) averages_[i].mul_(d).add_(parameters_[i].detach(), 1 - d);
}

void WeightAverage::Swap() {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    at::Tensor held = parameters_[i].detach().clone();
    parameters_[i].copy_(averages_[i]);
    averages_[i].copy_(held);
  }
}

void WeightAverage::Save(torch::serialize::OutputArchive& archive) const {
  archive.write("ema/updates", at::tensor(updates_, at::kLong));
  for (size_t i = 0; i < averages_.size(); ++i) archive.write(absl::StrCat("ema/", i), averages_[i]);
}

bool WeightAverage::Load(torch::serialize::InputArchive& archive) {
  at::Tensor updates;
  if (!archive.try_read("ema/updates", updates)) return false;
  std::vector<at::Tensor> read(averages_.size());
  for (size_t i = 0; i < averages_.size(); ++i) {
    if (!archive.try_read(absl::StrCat("ema/", i), read[i]) || !read[i].sizes().equals(averages_[i].sizes())) {
      return false;
    }
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < averages_.size(); ++i) averages_[i].copy_(read[i]);
  updates_ = updates.item<int64_t>();
  return true;
}

int LabelOf(shapes::Colour colour, shapes::Shape shape) {
  return static_cast<int>(colour) * kNumShapes + static_cast<int>(shape);
}

int FieldLabelOf(shapes::Colour colour) {
  return static_cast<int>(shapes::kBackgroundColours.size()) * kNumShapes + static_cast<int>(colour);
}

int BlobLabelOf(shapes::Colour colour) {
  return FieldLabelOf(shapes::Colour::kGray) + 1 + static_cast<int>(colour);
}

at::Tensor SinCosPositions2d(int grid, int width) {
  TORCH_CHECK(width % 4 == 0, "SinCosPositions2d: width ", width, " is not a multiple of 4");
  const int quarter = width / 4;
  at::Tensor omega = at::arange(quarter, at::kDouble).div(quarter);
  omega = at::pow(10000.0, -omega);                                         // [w/4]
  at::Tensor coord = at::arange(grid, at::kDouble);                          // [g]
  at::Tensor ys = coord.view({grid, 1}).expand({grid, grid}).reshape({-1});  // row of each patch, row-major
  at::Tensor xs = coord.view({1, grid}).expand({grid, grid}).reshape({-1});
  at::Tensor ay = ys.unsqueeze(1) * omega.unsqueeze(0);
  at::Tensor ax = xs.unsqueeze(1) * omega.unsqueeze(0);
  at::Tensor patches = at::cat({ay.sin(), ay.cos(), ax.sin(), ax.cos()}, 1);  // [g*g, w]
  return at::cat({at::zeros({1, width}, at::kDouble), patches}, 0).to(at::kFloat);
}

absl::StatusOr<std::shared_ptr<clip::ClipModel>> RepatchVision(const clip::ClipModel& from, int patch_size) {
  clip::ClipConfig config = from.config();
  const int old_patch = config.vision.patch_size, image = config.vision.image_size;
  if (patch_size < 1 || image % patch_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("patch size ", patch_size, " does not divide the image size ",
                                                   image, " (", old_patch, " now)"));
  }
  config.vision.patch_size = patch_size;
  auto to = clip::ClipModel::CreateRandom(config, /*seed=*/1);
  const int old_grid = image / old_patch, grid = image / patch_size;
  const auto resize = [](const at::Tensor& x, int side) {  // [N, C, h, w] -> [N, C, side, side]
    return side < x.size(2) ? at::adaptive_avg_pool2d(x, {side, side})
                            : at::upsample_bilinear2d(x, {side, side}, /*align_corners=*/false);
  };
  at::NoGradGuard no_grad;
  const auto source = from.named_parameters(/*recurse=*/true);
  for (auto& item : to->named_parameters(/*recurse=*/true)) {
    const at::Tensor& old = source[item.key()];
    if (item.key() == "patch_embedding") {
      const double area = static_cast<double>(old_patch) / patch_size;
      item.value().copy_(resize(old, patch_size) * (area * area));
    } else if (item.key() == "vision_position_embedding") {
      const int64_t width = old.size(1);
      const at::Tensor cells = old.narrow(0, 1, old_grid * old_grid).t().reshape({1, width, old_grid, old_grid});
      const at::Tensor resized = resize(cells, grid).reshape({width, grid * grid}).t();
      item.value().copy_(at::cat({old.narrow(0, 0, 1), resized}, 0));
    } else {
      item.value().copy_(old);
    }
  }
  return to;
}

clip::ClipConfig MakeClipConfig(const ClipTrainerOptions& o, int vocab_size, int context_length, int bos_id,
                                int eos_id) {
  clip::ClipConfig c;
  c.text.hidden_size = o.text_width;
  c.text.intermediate_size = 4 * o.text_width;
  c.text.num_attention_heads = o.text_heads;
  c.text.num_hidden_layers = o.text_layers;
  c.text.hidden_act = clip::Activation::kQuickGelu;
  c.text.vocab_size = vocab_size;
  c.text.max_position_embeddings = context_length;
  c.text.bos_token_id = bos_id;
  c.text.eos_token_id = eos_id;
  c.text.pad_token_id = 0;
  c.vision.hidden_size = o.vision_width;
  c.vision.intermediate_size = 4 * o.vision_width;
  c.vision.num_attention_heads = o.vision_heads;
  c.vision.num_hidden_layers = o.vision_layers;
  c.vision.hidden_act = clip::Activation::kQuickGelu;
  c.vision.image_size = o.image_size;
  c.vision.patch_size = o.patch_size;
  c.projection_dim = o.projection_dim;
  return c;
}

PairFacts FactsOf(const shapes::Example& example, const shapes::CaptionParts& parts) {
  const shapes::Scene& scene = example.scene;
  const shapes::Background& bg = scene.background;
  // Background keys equal exactly when the phrases are equal (BackgroundPhrase: kind and colours; a gradient's
  // direction is not named).
  const int colour2 = bg.kind == shapes::BackgroundKind::kGradient ? static_cast<int>(bg.colour2) : 0;
  PairFacts f;
  f.label = LabelOf(scene.colour, scene.shape);
  f.size = static_cast<int>(scene.size);
  f.background = (static_cast<int>(bg.kind) * 64 + static_cast<int>(bg.colour)) * 64 + colour2;
  f.position = static_cast<int>(scene.position);
  f.named = {.size = parts.size && example.caption_parts.size,
             .background = parts.background && example.caption_parts.background,
             .position = parts.position && example.caption_parts.position};
  return f;
}

at::Tensor CaptionTargets(const std::vector<PairFacts>& facts) {
  const int64_t n = static_cast<int64_t>(facts.size());
  at::Tensor t = at::zeros({n, n}, at::kFloat);
  float* out = t.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const PairFacts& picture = facts[i];
    for (int64_t j = 0; j < n; ++j) {
      const PairFacts& caption = facts[j];
      const bool is_true = picture.label == caption.label &&
                           (!caption.named.size || picture.size == caption.size) &&
                           (!caption.named.background || picture.background == caption.background) &&
                           (!caption.named.position || picture.position == caption.position);
      out[i * n + j] = is_true ? 1.0f : 0.0f;
    }
  }
  return t;
}

at::Tensor ContrastiveLoss(const at::Tensor& logits_per_image, const at::Tensor& targets) {
  const at::Tensor ti = targets / targets.sum(1, /*keepdim=*/true);
  const at::Tensor tt = targets.t() / targets.t().sum(1, /*keepdim=*/true);
  at::Tensor li = -(ti * at::log_softmax(logits_per_image, 1)).sum(1).mean();
  at::Tensor lt = -(tt * at::log_softmax(logits_per_image.t(), 1)).sum(1).mean();
  return 0.5 * (li + lt);
}

at::Tensor AdversarialPixels(const clip::ClipModel& model, const at::Tensor& pixels, const at::Tensor& text_features,
                             const at::Tensor& targets, double scale, const clip::PreprocessConfig& pre,
                             double epsilon, int steps, const at::Tensor& selected, at::Generator generator) {
  const at::Tensor rows = selected.to(at::kBool).nonzero().view({-1});
  if (rows.numel() == 0) return pixels;
  const at::Tensor mean = PerChannel(pre.mean), std = PerChannel(pre.std);
  const at::Tensor radius = epsilon / std;  // ε per channel in normalised units
  const at::Tensor low = -mean / std, high = (1 - mean) / std;
  const double step_size = steps == 1 ? 1.25 : 2.5 / steps;
  const at::Tensor text = text_features.detach();
  const at::Tensor clean = pixels.index_select(0, rows);
  const at::Tensor own = targets.index_select(0, rows);
  const at::Tensor own_targets = own / own.sum(1, /*keepdim=*/true);
  const auto project = [&](const at::Tensor& x) {
    const at::Tensor in_ball = clean + at::minimum(at::maximum(x - clean, -radius), radius);
    return at::minimum(at::maximum(in_ball, low), high);
  };
  at::Tensor x = project(clean + (at::rand(clean.sizes(), generator) * 2 - 1) * radius);
  for (int k = 0; k < steps; ++k) {
    const at::Tensor leaf = x.detach().requires_grad_(true);
    at::Tensor image = model.EncodeImage(leaf);
    image = image / image.norm(2, -1, true);
    // The image → text half of ContrastiveLoss, for these rows against every caption of the batch.
    const at::Tensor loss = -(own_targets * at::log_softmax(scale * image.matmul(text.t()), 1)).sum(1).mean();
    const at::Tensor gradient = torch::autograd::grad({loss}, {leaf})[0];
    x = project(leaf.detach() + step_size * radius * gradient.sign());
  }
  return pixels.index_copy(0, rows, x.detach());
}

void AugmentAndNormalize(const cv::Mat& rgb, const std::array<double, 4>& bounds, const clip::PreprocessConfig& pre,
                         bool augment, shapes::Rng& rng, float* out) {
  const int s = rgb.rows;
  cv::Mat img = rgb;
  float contrast = 1, brightness = 0, noise_sigma = 0;
  if (augment) {
    // Output pixel (u, v) (centred, in output fractions) samples input c + R(angle) * diag(cw, ch) * (u, v).
    const double angle = rng.Uniform(-10.0, 10.0) * M_PI / 180.0;
    const double ca = std::cos(angle), sa = std::sin(angle);
    const double side = rng.Uniform(0.7, 1.1);
    const double ratio = std::exp(rng.Uniform(std::log(0.85), std::log(1 / 0.85)));
    double cw = side * std::sqrt(ratio), ch = side / std::sqrt(ratio);
    // The shape's box seen in the crop's rotated frame: half extents, grown by the margin; the crop is widened
    // to hold it where it would not.
    constexpr double kMargin = 0.02;
    const double hw = (bounds[2] - bounds[0]) / 2, hh = (bounds[3] - bounds[1]) / 2;
    const double rx = std::abs(ca) * hw + std::abs(sa) * hh, ry = std::abs(sa) * hw + std::abs(ca) * hh;
    cw = std::max(cw, 2 * (rx + kMargin * cw) + 1e-6);
    ch = std::max(ch, 2 * (ry + kMargin * ch) + 1e-6);
    // Place the box anywhere inside the crop (in the rotated frame), then the crop centre follows.
    const double fx = cw / 2 - kMargin * cw - rx, fy = ch / 2 - kMargin * ch - ry;
    const double ox = rng.Uniform(-fx, fx), oy = rng.Uniform(-fy, fy);
    const double bx = (bounds[0] + bounds[2]) / 2, by = (bounds[1] + bounds[3]) / 2;
    const double cx = bx - (ca * ox - sa * oy), cy = by - (sa * ox + ca * oy);
    // Inverse map (dst -> src) in pixels.
    cv::Mat m(2, 3, CV_64F);
    m.at<double>(0, 0) = ca * cw;
    m.at<double>(0, 1) = -sa * ch;
    m.at<double>(1, 0) = sa * cw;
    m.at<double>(1, 1) = ca * ch;
    const double half = (s - 1) / 2.0;
    m.at<double>(0, 2) = cx * s - 0.5 - (m.at<double>(0, 0) * half + m.at<double>(0, 1) * half);
    m.at<double>(1, 2) = cy * s - 0.5 - (m.at<double>(1, 0) * half + m.at<double>(1, 1) * half);
    cv::Mat warped;
    cv::warpAffine(rgb, warped, m, cv::Size(s, s), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP, cv::BORDER_REPLICATE);
    img = warped;
    contrast = static_cast<float>(rng.Uniform(0.8, 1.2));
    brightness = static_cast<float>(rng.Uniform(-0.08, 0.08));
    noise_sigma = rng.Bernoulli(0.5) ? static_cast<float>(rng.Uniform(0.0, 0.04)) : 0.f;
  }
  const int plane = s * s;
  for (int y = 0; y < s; ++y) {
    const uint8_t* row = img.ptr<uint8_t>(y);
    for (int x = 0; x < s; ++x) {
      for (int c = 0; c < 3; ++c) {
        float v = row[3 * x + c] / 255.0f;
        if (augment) {
          v = (v - 0.5f) * contrast + 0.5f + brightness;
          if (noise_sigma > 0) v += noise_sigma * static_cast<float>(Gaussian(rng));
          v = std::clamp(v, 0.0f, 1.0f);
        }
        out[c * plane + y * s + x] = (v - pre.mean[c]) / pre.std[c];
      }
    }
  }
}

absl::StatusOr<TrainSummary> TrainClip(const ClipTrainerOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("out_dir is required");
  CLIPSERVE_RETURN_IF_ERROR(shapes::CheckSeed(shapes::Split::kTrain, o.seed));
  CLIPSERVE_RETURN_IF_ERROR(shapes::CheckSeed(shapes::Split::kEval, o.eval_seed));
  if (!(o.field_fraction >= 0 && o.blob_fraction >= 0 && o.field_fraction + o.blob_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("field_fraction and blob_fraction must be >= 0 and sum to <= 1, "
                                                   "got ", o.field_fraction, " and ", o.blob_fraction));
  }
  if (!(o.generation_cutouts >= 0 && o.generation_cutouts <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("generation_cutouts must be in [0, 1], got ", o.generation_cutouts));
  }
  CLIPSERVE_RETURN_IF_ERROR(generation::ValidateCutoutOptions(o.generation_cutout_options));
  if (!(o.vqgan_reconstructions >= 0 && o.vqgan_reconstructions <= 1) || o.generation_negatives_refresh_every < 1) {
    return absl::InvalidArgumentError(absl::StrCat("vqgan_reconstructions must be in [0, 1] and "
                                                   "generation_negatives_refresh_every >= 1, got ",
                                                   o.vqgan_reconstructions, " and ",
                                                   o.generation_negatives_refresh_every));
  }
  if ((o.generation_negatives.chains > 0 || o.vqgan_reconstructions > 0) && o.generation_vqgan_dir.empty()) {
    return absl::InvalidArgumentError("generation negatives and VQGAN reconstructions need a VQGAN directory");
  }
  if (o.generation_negatives.chains > 0 && o.init_from.empty() && !o.resume) {
    return absl::InvalidArgumentError(
        "generation negatives need init_from (or resume): the chains are steered by a CLIP that reads the world");
  }
  if (!(o.adversarial_epsilon >= 0 && o.adversarial_epsilon < 1) || o.adversarial_steps < 1 ||
      o.adversarial_steps > 20 || !(o.adversarial_fraction >= 0 && o.adversarial_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adversarial_epsilon must be in [0, 1), adversarial_steps in [1, 20] and adversarial_fraction in [0, 1], "
        "got ", o.adversarial_epsilon, ", ", o.adversarial_steps, " and ", o.adversarial_fraction));
  }
  if (o.init_patch_size != 0 && (o.init_patch_size < 0 || o.init_from.empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat("init_patch_size (", o.init_patch_size, ") re-patches init_from's ViT: needs init_from and > 0"));
  }
  if (!(o.alignment_weight >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("alignment_weight must be >= 0, got ", o.alignment_weight));
  }
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", o.out_dir.string(), ": ", ec.message()));

  clip::PreprocessConfig pre;
  pre.resize_shortest_edge = pre.crop_height = pre.crop_width = o.image_size;
  std::shared_ptr<clip::ClipModel> model;
  const bool resume = o.resume && fs::exists(o.out_dir / "train_state.pt");
  if (resume) {
    CLIPSERVE_ASSIGN_OR_RETURN(model, clip::ClipModel::Load({.dir = o.out_dir}));
    CLIPSERVE_ASSIGN_OR_RETURN(pre, clip::LoadPreprocessConfig(o.out_dir / "preprocessor_config.json"));
  } else if (!o.init_from.empty()) {
    for (const char* name : {"vocab.json", "merges.txt", "preprocessor_config.json"}) {
      fs::copy_file(o.init_from / name, o.out_dir / name, fs::copy_options::overwrite_existing, ec);
      if (ec) {
        return absl::InvalidArgumentError(
            absl::StrCat("init_from: copying ", (o.init_from / name).string(), ": ", ec.message()));
      }
    }
    CLIPSERVE_ASSIGN_OR_RETURN(model, clip::ClipModel::Load({.dir = o.init_from}));
    CLIPSERVE_ASSIGN_OR_RETURN(pre, clip::LoadPreprocessConfig(o.out_dir / "preprocessor_config.json"));
    if (o.init_patch_size > 0 && o.init_patch_size != model->config().vision.patch_size) {
      CLIPSERVE_ASSIGN_OR_RETURN(model, RepatchVision(*model, o.init_patch_size));
    }
  } else {
    CLIPSERVE_ASSIGN_OR_RETURN(int context, BuildTokenizer(o));
    CLIPSERVE_RETURN_IF_ERROR(WritePreprocessorConfig(o.out_dir, o.image_size, pre));
    CLIPSERVE_ASSIGN_OR_RETURN(auto tok, clip::Tokenizer::Create({.vocab_path = o.out_dir / "vocab.json",
                                                                  .merges_path = o.out_dir / "merges.txt",
                                                                  .context_length = context}));
    model = clip::ClipModel::CreateRandom(
        MakeClipConfig(o, static_cast<int>(tok->vocab_size()), context, tok->sot_id(), tok->eot_id()), o.seed);
  }
  if (!resume && o.init_from.empty() && o.sincos_position_scale > 0) {
    // Start the vision position embeddings from a 2-D sine-cosine table (learnable from there on): patches then
    // know their row and column from the first step instead of discovering the grid, which is what holds shape
    // (a spatial arrangement) at chance for the first several hundred steps of a from-scratch ViT.
    at::NoGradGuard no_grad;
    const int grid = o.image_size / o.patch_size;
    for (auto& item : model->named_parameters(/*recurse=*/true)) {
      if (item.key() == "vision_position_embedding") {
        item.value().copy_(SinCosPositions2d(grid, o.vision_width) * o.sincos_position_scale);
      }
    }
  }
  const clip::ClipConfig& config = model->config();
  CLIPSERVE_ASSIGN_OR_RETURN(
      auto tok, clip::Tokenizer::Create({.vocab_path = o.out_dir / "vocab.json",
                                         .merges_path = o.out_dir / "merges.txt",
                                         .context_length = config.text.max_position_embeddings}));
  ClipTrainerOptions opts = o;
  opts.image_size = config.vision.image_size;
  for (auto& p : model->parameters()) p.set_requires_grad(true);
  model->train();

  auto optimizer = MakeOptimizer(*model, opts);
  std::unique_ptr<WeightAverage> average;
  if (o.ema_decay > 0) average = std::make_unique<WeightAverage>(model->parameters(), o.ema_decay);
  int64_t step = 0;
  double prior_seconds = 0;
  if (resume) {
    CLIPSERVE_RETURN_IF_ERROR(LoadTrainState(*optimizer, average.get(), o.out_dir, &step, &prior_seconds));
  }
  TrainSummary summary;
  summary.start_step = step;

  CLIPSERVE_ASSIGN_OR_RETURN(auto sampler,
                             shapes::SceneSampler::Create({.split = shapes::Split::kTrain, .seed = o.seed,
                                                           .render = {.image_size = opts.image_size}}));
  CLIPSERVE_ASSIGN_OR_RETURN(EvalSet eval_set, MakeEvalSet(opts, *tok, pre));
  std::shared_ptr<const vqgan::VqganModel> generation_vqgan;  // one VQGAN for reconstructions and chains
  if (o.vqgan_reconstructions > 0 || o.generation_negatives.chains > 0) {
    vqgan::VqganModel::Options vo;
    vo.model_dir = o.generation_vqgan_dir;
    CLIPSERVE_ASSIGN_OR_RETURN(generation_vqgan, vqgan::VqganModel::Load(vo));
  }
  const vqgan::VqganModel* reconstructor = o.vqgan_reconstructions > 0 ? generation_vqgan.get() : nullptr;
  std::unique_ptr<GenerationNegatives> negatives;
  if (o.generation_negatives.chains > 0) {
    // The chains' CLIP starts as a copy of the directory the weights came from; Refresh keeps it current.
    CLIPSERVE_ASSIGN_OR_RETURN(generation::LatentPriors priors, generation::LatentPriors::Load(o.generation_vqgan_dir));
    CLIPSERVE_ASSIGN_OR_RETURN(negatives, GenerationNegatives::Create(o.generation_negatives,
                                                                      resume ? o.out_dir : o.init_from,
                                                                      generation_vqgan, o.seed, std::move(priors)));
  }

  if (o.verbose) {
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    std::fprintf(stderr, "model: %.2f M parameters, context %d, vocab %d; %s at step %lld (%.1f min trained)\n",
                 n / 1e6, config.text.max_position_embeddings, config.text.vocab_size,
                 resume ? "resuming" : "starting", static_cast<long long>(step), prior_seconds / 60);
  }
  const fs::path curve_path = o.out_dir / "learning_curve.jsonl";
  std::ofstream curve(curve_path, resume ? std::ios::app : std::ios::trunc);
  if (!curve) return absl::InternalError(absl::StrCat("cannot write ", curve_path.string()));

  const auto run_start = Clock::now();
  auto last_checkpoint = run_start;
  auto window_start = run_start;
  int64_t window_steps = 0;
  double window_loss = 0;
  double last_loss = 0;
  const double budget_s = o.minutes * 60;
  const double max_log_scale = std::log(o.max_logit_scale);
  at::Tensor logit_scale = model->logit_scale();

  auto trained = [&] { return prior_seconds + SecondsSince(run_start); };
  // Evaluates the weights (and the average, into *ema, when there is one) and appends them to the curve.
  auto eval_and_log = [&](double loss, EvalResult* ema) -> EvalResult {
    EvalResult r = Evaluate(*model, eval_set, eval_set.pixels);
    nlohmann::json j = {{"minutes", trained() / 60}, {"step", step},  {"loss", loss},
                        {"colour", r.colour},        {"shape", r.shape}, {"both", r.both},
                        {"positive_cosine", r.positive_cosine}};
    if (o.verbose) {
      std::fprintf(stderr, "eval step %lld (%.1f min): colour %.3f shape %.3f both %.3f cosine %.3f\n",
                   static_cast<long long>(step), trained() / 60, r.colour, r.shape, r.both, r.positive_cosine);
    }
    if (eval_set.cutout_pixels.defined()) {
      const EvalResult c = Evaluate(*model, eval_set, eval_set.cutout_pixels);
      j.update({{"cut_colour", c.colour}, {"cut_shape", c.shape}, {"cut_both", c.both}});
      if (o.verbose) {
        std::fprintf(stderr, "  after generation cutouts: colour %.3f shape %.3f both %.3f\n", c.colour, c.shape,
                     c.both);
      }
    }
    if (average != nullptr) {
      average->Swap();
      const EvalResult a = Evaluate(*model, eval_set, eval_set.pixels);
      average->Swap();
      j.update({{"ema_colour", a.colour}, {"ema_shape", a.shape}, {"ema_both", a.both}});
      if (o.verbose) {
        std::fprintf(stderr, "  weight average: colour %.3f shape %.3f both %.3f\n", a.colour, a.shape, a.both);
      }
      if (ema != nullptr) *ema = a;
    }
    curve << j.dump() << "\n";
    curve.flush();
    return r;
  };

  // The next batch is drawn on another thread while this step computes (drawing and augmenting 128 scenes is a
  // good part of a step on 2 cores); a batch is a pure function of its step, so this changes no result.
  auto draw = [&](int64_t s) {
    return std::async(std::launch::async,
                      [&, s] { return MakeTrainBatch(*sampler, *tok, pre, opts, s, reconstructor); });
  };
  std::future<absl::StatusOr<Batch>> next = draw(step);
  while (trained() < budget_s && (o.max_steps <= 0 || step < o.max_steps)) {
    CLIPSERVE_ASSIGN_OR_RETURN(Batch batch, next.get());
    next = draw(step + 1);
    if (negatives != nullptr) {
      if (step % o.generation_negatives_refresh_every == 0) CLIPSERVE_RETURN_IF_ERROR(negatives->Refresh(*model));
      CLIPSERVE_ASSIGN_OR_RETURN(GenerationNegatives::Negatives n, negatives->Advance());
      CLIPSERVE_RETURN_IF_ERROR(AppendNegatives(n, *tok, pre, batch));
    }
    const double lr = LearningRate(o, step, trained());
    for (auto& group : optimizer->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    at::Tensor targets = CaptionTargets(batch.facts);
    at::Tensor txt = model->EncodeText(batch.ids);
    txt = txt / txt.norm(2, -1, true);
    const at::Tensor scale = logit_scale.exp().clamp_max(o.max_logit_scale);
    if (batch.adversarial.defined()) {
      at::Generator generator = at::detail::createCPUGenerator(
          shapes::Rng::For(o.seed, static_cast<uint64_t>(step), /*stream=*/0x61647667).Next());
      batch.pixels = AdversarialPixels(*model, batch.pixels, txt, targets, scale.item<double>(), pre,
                                       o.adversarial_epsilon, o.adversarial_steps, batch.adversarial, generator);
    }
    at::Tensor img = model->EncodeImage(batch.pixels);
    img = img / img.norm(2, -1, true);
    at::Tensor logits = scale * img.matmul(txt.t());
    at::Tensor loss = ContrastiveLoss(logits, targets);
    if (o.alignment_weight > 0) loss = loss + o.alignment_weight * (1 - (img * txt).sum(1)).mean();
    optimizer->zero_grad();
    loss.backward();
    optimizer->step();
    {
      at::NoGradGuard no_grad;
      logit_scale.clamp_(0, max_log_scale);
    }
    if (average != nullptr) average->Update();
    last_loss = loss.item<double>();
    if (!std::isfinite(last_loss)) {
      return absl::InternalError(absl::StrCat("loss is ", last_loss, " at step ", step));
    }
    summary.losses.push_back(last_loss);
    ++step;
    ++window_steps;
    window_loss += last_loss;
    if (o.verbose && o.log_every > 0 && step % o.log_every == 0) {
      std::fprintf(stderr, "step %lld loss %.4f lr %.2e scale %.1f %.2f steps/s (%.1f min)\n",
                   static_cast<long long>(step), window_loss / window_steps, lr, logit_scale.exp().item<double>(),
                   window_steps / SecondsSince(window_start), trained() / 60);
    }
    if (o.log_every > 0 && step % o.log_every == 0) {
      window_start = Clock::now();
      window_steps = 0;
      window_loss = 0;
    }
    if (o.eval_every > 0 && step % o.eval_every == 0) eval_and_log(last_loss, nullptr);
    if (SecondsSince(last_checkpoint) >= o.checkpoint_minutes * 60) {
      CLIPSERVE_RETURN_IF_ERROR(SaveCheckpoint(*model, *optimizer, average.get(), o.out_dir, step, trained()));
      last_checkpoint = Clock::now();
    }
  }
  const double run_seconds = SecondsSince(run_start);
  summary.steps = step;
  summary.trained_seconds = prior_seconds + run_seconds;
  summary.steps_per_second = (step - summary.start_step) / std::max(run_seconds, 1e-9);
  summary.final_eval = eval_and_log(last_loss, &summary.final_ema_eval);
  CLIPSERVE_RETURN_IF_ERROR(
      SaveCheckpoint(*model, *optimizer, average.get(), o.out_dir, step, summary.trained_seconds));
  if (average != nullptr) CLIPSERVE_RETURN_IF_ERROR(SaveAverage(*model, *average, o.out_dir, o.out_dir / "ema"));
  if (o.verbose) {
    std::fprintf(stderr, "done: %lld steps, %.1f min trained, %.2f steps/s this run\n",
                 static_cast<long long>(step), summary.trained_seconds / 60, summary.steps_per_second);
  }
  return summary;
}

}  // namespace clipserve::train
