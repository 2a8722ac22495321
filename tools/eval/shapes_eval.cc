#include "tools/eval/shapes_eval.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <set>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/models/clip/clip_bundle.h"
#include "server/models/tensor_io.h"
#include "server/models/vqgan/vqgan.h"
#include "tools/shapes/world.h"
#include "tools/train/clip_trainer.h"

namespace clipserve::shapes_eval {
namespace {

namespace fs = std::filesystem;

// The server's preprocessing of one rendered RGB image, written into `out` (3·S·S floats).
absl::Status PreprocessInto(const cv::Mat& rgb, const clip::PreprocessConfig& config, float* out) {
  ImageView view;
  view.pixels = absl::MakeConstSpan(rgb.data, rgb.total() * rgb.elemSize());
  view.width = rgb.cols;
  view.height = rgb.rows;
  view.channels = 3;
  return clip::Preprocess(view, config, absl::MakeSpan(out, clip::PreprocessedSize(config)));
}

// The preprocessed pixels [n, 3, S, S] of images[start, start + n).
absl::StatusOr<at::Tensor> Pixels(const clip::ClipBundle& bundle, const std::vector<cv::Mat>& images, size_t start,
                                  size_t n) {
  const auto& pre = bundle.preprocess;
  at::Tensor pixels = at::empty({static_cast<int64_t>(n), 3, pre.crop_height, pre.crop_width});
  for (size_t i = 0; i < n; ++i) {
    CLIPSERVE_RETURN_IF_ERROR(PreprocessInto(images[start + i], pre, pixels[i].data_ptr<float>()));
  }
  return pixels;
}

// Unit image embeddings of `images`, in batches; with `cutouts`, of the pictures after generation's cutout
// augmentations (drawn from `generator`).
absl::StatusOr<at::Tensor> EmbedImages(const clip::ClipBundle& bundle, const std::vector<cv::Mat>& images,
                                       int batch_size, const std::optional<generation::CutoutOptions>& cutouts,
                                       at::Generator& generator) {
  const auto& pre = bundle.preprocess;
  std::vector<at::Tensor> parts;
  for (size_t start = 0; start < images.size(); start += batch_size) {
    const size_t n = std::min(images.size() - start, static_cast<size_t>(batch_size));
    CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor pixels, Pixels(bundle, images, start, n));
    if (cutouts.has_value()) pixels = generation::AugmentLikeCutouts(pixels, pre.mean, pre.std, *cutouts, generator);
    parts.push_back(bundle.model->EncodeImage(pixels));
  }
  at::Tensor all = at::cat(parts);
  return all / all.norm(2, -1, true);
}

// Unit text embeddings of `texts`.
absl::StatusOr<at::Tensor> EmbedTexts(const clip::ClipBundle& bundle, const std::vector<std::string>& texts) {
  const int ctx = bundle.context_length();
  at::Tensor ids = at::zeros({static_cast<int64_t>(texts.size()), ctx}, at::kLong);
  for (size_t i = 0; i < texts.size(); ++i) {
    CLIPSERVE_RETURN_IF_ERROR(bundle.tokenizer->EncodePadded(
        texts[i], clip::Truncation::kTruncate, {ids[i].data_ptr<int64_t>(), static_cast<size_t>(ctx)}, nullptr));
  }
  at::Tensor t = bundle.model->EncodeText(ids);
  return t / t.norm(2, -1, true);
}

// The zero-shot classes: every (colour, shape) pair, colour-major, and its prompt shapes::ZeroShotPrompt.
struct ZeroShotClasses {
  std::vector<Label> pairs;
  std::vector<std::string> prompts;

  ZeroShotClasses(const std::vector<shapes::Colour>& colours, const std::vector<shapes::Shape>& shapes) {
    for (shapes::Colour c : colours) {
      for (shapes::Shape s : shapes) {
        pairs.push_back({c, s});
        prompts.push_back(shapes::ZeroShotPrompt(c, s));
      }
    }
  }
  int64_t IndexOf(const Label& l) const {
    const auto it = std::find_if(pairs.begin(), pairs.end(),
                                 [&](const Label& p) { return p.colour == l.colour && p.shape == l.shape; });
    return it - pairs.begin();
  }
  // For unit image embeddings [N, D] and the prompts' unit embeddings [P, D]: each image's nearest pair.
  std::vector<Label> Nearest(const at::Tensor& image, const at::Tensor& text) const {
    const at::Tensor predicted = at::mm(image, text.t()).argmax(1).contiguous();
    const int64_t* p = predicted.data_ptr<int64_t>();
    std::vector<Label> labels;
    for (int64_t i = 0; i < predicted.size(0); ++i) labels.push_back(pairs[p[i]]);
    return labels;
  }
};

// Zero-shot classification (call inside inference mode and CatchTorchErrors): for each picture, the pair among
// colours × shapes whose prompt shapes::ZeroShotPrompt is nearest to it; the pictures are embedded as
// EmbedImages does (with `cutouts`, after generation's cutout augmentations drawn from `generator`).
absl::StatusOr<std::vector<Label>> PredictLabels(const clip::ClipBundle& bundle, const std::vector<cv::Mat>& images,
                                                 const std::vector<shapes::Colour>& colours,
                                                 const std::vector<shapes::Shape>& shapes, int batch_size,
                                                 const std::optional<generation::CutoutOptions>& cutouts,
                                                 at::Generator& generator) {
  if (images.empty()) return std::vector<Label>{};
  const ZeroShotClasses classes(colours, shapes);
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor text, EmbedTexts(bundle, classes.prompts));
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor image, EmbedImages(bundle, images, batch_size, cutouts, generator));
  return classes.Nearest(image, text);
}

// PredictLabels on the pictures after a PGD attack (EvalOptions::attack) against each one's true pair, `truth`.
// Call under no-grad, outside inference mode (the attack turns autograd on for itself), inside CatchTorchErrors.
absl::StatusOr<std::vector<Label>> AttackedLabels(const clip::ClipBundle& bundle, const std::vector<cv::Mat>& images,
                                                  const std::vector<Label>& truth,
                                                  const std::vector<shapes::Colour>& colours,
                                                  const std::vector<shapes::Shape>& shapes, int batch_size,
                                                  const EvalOptions::Attack& attack, at::Generator& generator) {
  if (images.empty()) return std::vector<Label>{};
  const ZeroShotClasses classes(colours, shapes);
  CLIPSERVE_ASSIGN_OR_RETURN(const at::Tensor text, EmbedTexts(bundle, classes.prompts));
  const double scale = bundle.model->logit_scale().exp().item<double>();
  std::vector<at::Tensor> parts;
  for (size_t start = 0; start < images.size(); start += batch_size) {
    const size_t n = std::min(images.size() - start, static_cast<size_t>(batch_size));
    CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor pixels, Pixels(bundle, images, start, n));
    at::Tensor targets = at::zeros({static_cast<int64_t>(n), text.size(0)});
    for (size_t i = 0; i < n; ++i) targets[static_cast<int64_t>(i)][classes.IndexOf(truth[start + i])] = 1;
    at::Tensor moved;
    {
      at::AutoGradMode grad(true);
      moved = train::AdversarialPixels(*bundle.model, pixels, text, targets, scale, bundle.preprocess,
                                       attack.epsilon, attack.steps, at::ones({static_cast<int64_t>(n)}, at::kBool),
                                       generator);
    }
    parts.push_back(bundle.model->EncodeImage(moved));
  }
  const at::Tensor image = at::cat(parts);
  return classes.Nearest(image / image.norm(2, -1, true), text);
}

absl::StatusOr<shapes::SceneSampler*> MakeSampler(uint64_t seed, int image_size,
                                                   std::unique_ptr<shapes::SceneSampler>* holder) {
  shapes::SceneSamplerOptions o;
  o.split = shapes::Split::kEval;
  o.seed = seed;
  o.render.image_size = image_size;
  CLIPSERVE_ASSIGN_OR_RETURN(*holder, shapes::SceneSampler::Create(o));
  return holder->get();
}

absl::Status EvaluateClip(const EvalOptions& options, EvalResult* result) {
  if (options.cutouts.has_value()) CLIPSERVE_RETURN_IF_ERROR(generation::ValidateCutoutOptions(*options.cutouts));
  if (options.attack.has_value()) {
    const EvalOptions::Attack& a = *options.attack;
    if (!(a.epsilon > 0 && a.epsilon < 1) || a.steps < 1 || a.steps > 20) {
      return absl::InvalidArgumentError(absl::StrCat("attack: epsilon must be in (0, 1) and steps in [1, 20], got ",
                                                     a.epsilon, " and ", a.steps));
    }
    if (options.cutouts.has_value()) {
      return absl::InvalidArgumentError("attack and generation cutouts do not combine: measure one at a time");
    }
  }
  CLIPSERVE_ASSIGN_OR_RETURN(auto bundle, clip::ClipBundle::Load({.dir = options.models / "clip"}));
  std::unique_ptr<shapes::SceneSampler> holder;
  CLIPSERVE_ASSIGN_OR_RETURN(shapes::SceneSampler * sampler,
                             MakeSampler(options.seed, bundle->image_size(), &holder));
  return CatchTorchErrors("evaluating the CLIP", [&]() -> absl::Status {
    // An attack needs autograd, so it runs without inference mode (and embeds under no-grad).
    std::optional<c10::InferenceMode> inference;
    std::optional<at::NoGradGuard> no_grad;
    if (options.attack.has_value()) {
      no_grad.emplace();
    } else {
      inference.emplace();
    }
    // Zero-shot: one prompt per (colour, shape) pair, the normal prompt path; colour and shape accuracy are
    // the marginals of the joint prediction.
    std::vector<cv::Mat> images;
    std::vector<shapes::Scene> scenes;
    for (int i = 0; i < options.count; ++i) {
      shapes::Example e = sampler->Sample(static_cast<uint64_t>(i));
      images.push_back(e.image);
      scenes.push_back(e.scene);
    }
    at::Generator generator = at::detail::createCPUGenerator(options.seed);
    std::vector<Label> predicted;
    if (options.attack.has_value()) {
      std::vector<Label> truth;
      for (const shapes::Scene& scene : scenes) truth.push_back({scene.colour, scene.shape});
      CLIPSERVE_ASSIGN_OR_RETURN(predicted, AttackedLabels(*bundle, images, truth, sampler->colours(),
                                                           sampler->shapes(), options.batch_size, *options.attack,
                                                           generator));
      result->attack = options.attack;
    } else {
      CLIPSERVE_ASSIGN_OR_RETURN(predicted, PredictLabels(*bundle, images, sampler->colours(), sampler->shapes(),
                                                          options.batch_size, options.cutouts, generator));
    }
    ZeroShot z;
    std::map<std::string, int> shape_total, size_total;
    for (int i = 0; i < options.count; ++i) {
      const shapes::Colour c = predicted[i].colour;
      const shapes::Shape s = predicted[i].shape;
      const shapes::Scene& scene = scenes[i];
      const std::string shape(shapes::ShapeName(scene.shape)), size(shapes::SizeName(scene.size));
      const bool shape_right = s == scene.shape;
      z.colour += c == scene.colour;
      z.shape += shape_right;
      z.both += c == scene.colour && shape_right;
      ++shape_total[shape];
      ++size_total[size];
      z.shape_by_shape[shape] += shape_right;
      z.shape_by_size[size] += shape_right;
      if (!shape_right) ++z.shape_confusions[shape][std::string(shapes::ShapeName(s))];
    }
    z.colour /= options.count;
    z.shape /= options.count;
    z.both /= options.count;
    for (auto& [name, right] : z.shape_by_shape) right /= shape_total[name];
    for (auto& [name, right] : z.shape_by_size) right /= size_total[name];
    result->zero_shot = z;

    // Retrieval: each image's own caption against the 40 images of its group, whose (colour, shape) pairs all
    // differ; a hit when the caption's image ranks first (top 5).
    constexpr int kGroup = 40;
    const int groups = std::max(1, options.count / kGroup);
    Retrieval r;
    int queries = 0;
    for (int g = 0; g < groups; ++g) {
      CLIPSERVE_ASSIGN_OR_RETURN(std::vector<shapes::Example> group, sampler->DistinctPairs(g, kGroup));
      std::vector<cv::Mat> group_images;
      std::vector<std::string> captions;
      for (auto& e : group) {
        group_images.push_back(e.image);
        captions.push_back(e.caption);
      }
      CLIPSERVE_ASSIGN_OR_RETURN(
          at::Tensor gi, EmbedImages(*bundle, group_images, options.batch_size, options.cutouts, generator));
      CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor gt, EmbedTexts(*bundle, captions));
      const at::Tensor scores = at::mm(gt, gi.t());  // [captions, images]
      for (int q = 0; q < kGroup; ++q) {
        const float own = scores[q][q].item<float>();
        const int64_t better = (scores[q] > own).sum().item<int64_t>();
        r.recall_at_1 += better < 1;
        r.recall_at_5 += better < 5;
        ++queries;
      }
    }
    r.recall_at_1 /= queries;
    r.recall_at_5 /= queries;
    result->retrieval = r;
    return absl::OkStatus();
  });
}

absl::Status EvaluateVqgan(const EvalOptions& options, EvalResult* result) {
  vqgan::VqganModel::Options o;
  o.model_dir = options.models / "vqgan";
  CLIPSERVE_ASSIGN_OR_RETURN(auto model, vqgan::VqganModel::Load(o));
  const int size = static_cast<int>(model->config().ddconfig.resolution);
  std::unique_ptr<shapes::SceneSampler> holder;
  CLIPSERVE_ASSIGN_OR_RETURN(shapes::SceneSampler * sampler, MakeSampler(options.seed, size, &holder));
  double mse_db_sum = 0;
  std::set<int64_t> used;
  for (int start = 0; start < options.count; start += options.batch_size) {
    const int n = std::min(options.count - start, options.batch_size);
    at::Tensor x = at::empty({n, 3, size, size});
    for (int i = 0; i < n; ++i) {
      const cv::Mat img = sampler->Sample(static_cast<uint64_t>(start + i)).image;
      at::Tensor hwc = at::from_blob(img.data, {size, size, 3}, at::kByte).to(at::kFloat);
      x[i].copy_(hwc.permute({2, 0, 1}).div(127.5).sub(1.0));
    }
    CLIPSERVE_ASSIGN_OR_RETURN(auto encoded, model->Encode(x, vqgan::GradMode::kInferenceMode));
    CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor y, model->Decode(encoded.z_q, vqgan::GradMode::kInferenceMode));
    // PSNR per image on [0, 1] pixels, averaged in dB.
    const at::Tensor mse = ((y.clamp(-1, 1) - x) / 2).pow(2).mean({1, 2, 3});
    mse_db_sum += (-10.0 * at::log10(mse.clamp_min(1e-10))).sum().item<double>();
    const at::Tensor idx = encoded.indices.flatten().to(at::kLong).contiguous();
    const int64_t* p = idx.data_ptr<int64_t>();
    used.insert(p, p + idx.numel());
  }
  result->vqgan = Reconstruction{mse_db_sum / options.count,
                                 static_cast<double>(used.size()) / static_cast<double>(model->config().n_embed)};
  return absl::OkStatus();
}

}  // namespace

nlohmann::json EvalResult::ToJson(bool breakdown) const {
  nlohmann::json j;
  j["zero_shot"] = zero_shot ? nlohmann::json{{"colour", zero_shot->colour}, {"shape", zero_shot->shape},
                                              {"both", zero_shot->both}}
                             : nlohmann::json(nullptr);
  if (zero_shot && breakdown) {
    j["zero_shot"]["shape_by_shape"] = zero_shot->shape_by_shape;
    j["zero_shot"]["shape_by_size"] = zero_shot->shape_by_size;
    j["zero_shot"]["shape_confusions"] = zero_shot->shape_confusions;
  }
  if (zero_shot && attack) j["zero_shot"]["attack"] = {{"epsilon", attack->epsilon}, {"steps", attack->steps}};
  j["retrieval"] = retrieval ? nlohmann::json{{"recall_at_1", retrieval->recall_at_1},
                                              {"recall_at_5", retrieval->recall_at_5}}
                             : nlohmann::json(nullptr);
  j["vqgan"] = vqgan ? nlohmann::json{{"psnr_db", vqgan->psnr_db}, {"codebook_used", vqgan->codebook_used}}
                     : nlohmann::json(nullptr);
  return j;
}

absl::StatusOr<EvalResult> Evaluate(const EvalOptions& options) {
  if (options.count < 1 || options.batch_size < 1) {
    return absl::InvalidArgumentError("count and batch_size must be positive");
  }
  CLIPSERVE_RETURN_IF_ERROR(shapes::CheckSeed(shapes::Split::kEval, options.seed));
  const bool has_clip = fs::exists(options.models / "clip" / "config.json");
  const bool has_vqgan = fs::exists(options.models / "vqgan" / "config.json");
  if (!has_clip && !has_vqgan) {
    return absl::NotFoundError(absl::StrCat(options.models.string(), " holds neither clip/ nor vqgan/"));
  }
  EvalResult result;
  if (has_clip) CLIPSERVE_RETURN_IF_ERROR(EvaluateClip(options, &result));
  if (has_vqgan) CLIPSERVE_RETURN_IF_ERROR(EvaluateVqgan(options, &result));
  return result;
}

absl::StatusOr<std::vector<Label>> ZeroShotLabels(const clip::ClipBundle& bundle, const std::vector<cv::Mat>& rgb) {
  std::vector<Label> labels;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("reading pictures with the CLIP", [&]() -> absl::Status {
    c10::InferenceMode guard;
    at::Generator unused = at::detail::createCPUGenerator(0);  // no cutouts: nothing is drawn
    CLIPSERVE_ASSIGN_OR_RETURN(
        labels, PredictLabels(bundle, rgb, {shapes::kShapeColours.begin(), shapes::kShapeColours.end()},
                              {shapes::kShapes.begin(), shapes::kShapes.end()}, 50, std::nullopt, unused));
    return absl::OkStatus();
  }));
  return labels;
}

}  // namespace clipserve::shapes_eval
