#include "server/generation/generator.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/models/tensor_io.h"

namespace clipserve::generation {
namespace {

struct ClampWithGradFunction : public torch::autograd::Function<ClampWithGradFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, double lo, double hi) {
    ctx->saved_data["lo"] = lo;
    ctx->saved_data["hi"] = hi;
    ctx->save_for_backward({x});
    return x.clamp(lo, hi);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const double lo = ctx->saved_data["lo"].toDouble(), hi = ctx->saved_data["hi"].toDouble();
    const at::Tensor& g = grad_out[0];
    // Keep the gradient where it would move x into range (or x is in range already).
    const at::Tensor keep = (g * (x - x.clamp(lo, hi))).ge(0);
    return {g * keep, at::Tensor(), at::Tensor()};
  }
};

at::Tensor Normalized(const at::Tensor& t) { return t / t.norm(2, -1, /*keepdim=*/true).clamp_min(1e-12); }

// CLIP's Normalize on [N, 3, S, S] pixels in [0, 1].
at::Tensor ClipNormalize(const at::Tensor& pixels, const clip::PreprocessConfig& pre) {
  const at::Tensor mean = at::tensor(std::vector<float>(pre.mean.begin(), pre.mean.end()), pixels.options());
  const at::Tensor std = at::tensor(std::vector<float>(pre.std.begin(), pre.std.end()), pixels.options());
  return (pixels - mean.view({1, 3, 1, 1})) / std.view({1, 3, 1, 1});
}

// [N, 3, H, W] → [N, 3, S, S]: area averaging when shrinking, bilinear when growing.
at::Tensor ResizeSquare(const at::Tensor& x, int64_t s) {
  if (x.size(2) == s && x.size(3) == s) return x;
  if (x.size(2) >= s && x.size(3) >= s) return at::adaptive_avg_pool2d(x, {s, s});
  return at::upsample_bilinear2d(x, {s, s}, /*align_corners=*/false);
}

// A CLIP's embeddings of [N, 3, S, S] pixels in [0, 1] (resized to its input size where S is not).
at::Tensor EmbedPixels(const clip::ClipBundle& clip, const at::Tensor& pixels) {
  return clip.model->EncodeImage(ClipNormalize(ResizeSquare(pixels, clip.image_size()), clip.preprocess));
}

std::string Quoted(const std::string& text) {
  return absl::StrCat("'", text.size() > 40 ? text.substr(0, 40) + "..." : text, "'");
}

// What a loss term's weight needs besides its range: whether the VQGAN's prior it uses is there (`what` and
// `file` name that prior for the error).
struct TermNeeds {
  bool present = true;
  const char* what = nullptr;  // "a layout prior"
  const char* file = nullptr;  // its file in the VQGAN's directory
};

// A loss term's weight: in [0, 1000], and > 0 only where what the term needs is there. INVALID_ARGUMENT naming
// the field otherwise.
absl::Status CheckTermWeight(const char* field, float weight, const TermNeeds& needs = {}) {
  if (!(weight >= 0 && weight <= 1000)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", weight, " must be in [0, 1000]"));
  }
  if (weight > 0 && !needs.present) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", weight, " needs ", needs.what,
                                                   ", and the VQGAN has none (", needs.file, " in its directory)"));
  }
  return absl::OkStatus();
}

}  // namespace

at::Tensor ClampWithGrad(const at::Tensor& x, double lo, double hi) { return ClampWithGradFunction::apply(x, lo, hi); }

absl::StatusOr<LatentPriors> LatentPriors::Load(const std::filesystem::path& vqgan_dir, at::Device device) {
  LatentPriors priors;
  if (std::filesystem::exists(vqgan_dir / LayoutPrior::kFileName)) {
    CLIPSERVE_ASSIGN_OR_RETURN(priors.layout, LayoutPrior::Load(vqgan_dir / LayoutPrior::kFileName, device));
  }
  if (std::filesystem::exists(vqgan_dir / LatentDenoiser::kFileName)) {
    CLIPSERVE_ASSIGN_OR_RETURN(priors.denoiser, LatentDenoiser::Load(vqgan_dir / LatentDenoiser::kFileName, device));
  }
  return priors;
}

absl::StatusOr<GenerationModels> GenerationModels::Create(
    std::shared_ptr<const vqgan::VqganModel> vqgan, std::shared_ptr<const clip::ClipBundle> clip, LatentPriors priors,
    std::vector<std::shared_ptr<const clip::ClipBundle>> more_clips) {
  if (vqgan == nullptr || clip == nullptr || clip->model == nullptr) {
    return absl::InvalidArgumentError("generation needs a VQGAN and a CLIP model");
  }
  for (size_t i = 0; i <= more_clips.size(); ++i) {
    const clip::ClipBundle* c = i == 0 ? clip.get() : more_clips[i - 1].get();
    if (c == nullptr || c->model == nullptr) return absl::InvalidArgumentError("more_clips: a CLIP model is missing");
    if (vqgan->device() != c->model->device()) {
      return absl::InvalidArgumentError(absl::StrCat("the VQGAN is on ", vqgan->device().str(), " and a CLIP on ",
                                                     c->model->device().str(), "; generation needs one device"));
    }
  }
  const int64_t n_embed = vqgan->config().n_embed;
  if (priors.layout != nullptr && priors.layout->n_embed() != n_embed) {
    return absl::InvalidArgumentError(absl::StrCat("the layout prior is for ", priors.layout->n_embed(),
                                                   " codes and the VQGAN has ", n_embed));
  }
  const int64_t embed_dim = vqgan->config().embed_dim;
  if (priors.denoiser != nullptr &&
      (priors.denoiser->config().n_embed != n_embed || priors.denoiser->config().embed_dim != embed_dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the latent denoiser is for ", priors.denoiser->config().n_embed, " codes of dimension ",
        priors.denoiser->config().embed_dim, " and the VQGAN has ", n_embed, " of ", embed_dim));
  }
  // Only the latent is optimised: no parameter gradients (which would also race between concurrent jobs).
  for (auto& p : vqgan->module().parameters()) p.set_requires_grad(false);
  for (auto& p : clip->model->parameters()) p.set_requires_grad(false);
  for (auto& c : more_clips) {
    for (auto& p : c->model->parameters()) p.set_requires_grad(false);
  }
  return GenerationModels{std::move(vqgan), std::move(clip), std::move(priors), std::move(more_clips)};
}

std::vector<const clip::ClipBundle*> GenerationModels::SteeringClips() const {
  std::vector<const clip::ClipBundle*> all = {clip.get()};
  for (const auto& c : more_clips) all.push_back(c.get());
  return all;
}

absl::StatusOr<GenerationModels> GenerationModels::Load(const std::filesystem::path& clip_dir,
                                                        const std::filesystem::path& vqgan_dir, at::Device device,
                                                        const std::vector<std::filesystem::path>& more_clip_dirs) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<clip::ClipBundle> clip,
                             clip::ClipBundle::Load({.dir = clip_dir, .device = device}));
  vqgan::VqganModel::Options vo;
  vo.model_dir = vqgan_dir;
  vo.device = device;
  CLIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<vqgan::VqganModel> vq, vqgan::VqganModel::Load(vo));
  CLIPSERVE_ASSIGN_OR_RETURN(LatentPriors priors, LatentPriors::Load(vqgan_dir, device));
  std::vector<std::shared_ptr<const clip::ClipBundle>> more_clips;
  for (const std::filesystem::path& dir : more_clip_dirs) {
    CLIPSERVE_ASSIGN_OR_RETURN(more_clips.emplace_back(), clip::ClipBundle::Load({.dir = dir, .device = device}));
  }
  return Create(std::move(vq), std::move(clip), std::move(priors), std::move(more_clips));
}

absl::Status ValidateJobSettings(const JobOptions& options) {
  if (options.steps < 1) return absl::InvalidArgumentError(absl::StrCat("steps: ", options.steps, " must be >= 1"));
  if (!(options.learning_rate > 0 && options.learning_rate <= 10)) {
    return absl::InvalidArgumentError(absl::StrCat("learning_rate: ", options.learning_rate, " must be in (0, 10]"));
  }
  if (!(options.init_weight >= 0 && std::isfinite(options.init_weight))) {
    return absl::InvalidArgumentError(absl::StrCat("init_weight: ", options.init_weight, " must be >= 0"));
  }
  CLIPSERVE_RETURN_IF_ERROR(CheckTermWeight("smoothness_weight", options.smoothness_weight));
  if (options.smoothness_final_weight.has_value()) {
    CLIPSERVE_RETURN_IF_ERROR(CheckTermWeight("smoothness_final_weight", *options.smoothness_final_weight));
  }
  if (options.noise_final_scale.has_value() &&
      !(*options.noise_final_scale >= 0 && *options.noise_final_scale <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise_final_scale: ", *options.noise_final_scale, " must be in [0, 1]"));
  }
  return ValidateCutoutOptions(options.cutouts);
}

absl::StatusOr<std::unique_ptr<Job>> Job::Create(const GenerationModels& models, JobOptions options) {
  const int64_t f = models.vqgan->downsample_factor();
  for (const auto& [name, value] : {std::pair<const char*, int>{"width", options.width}, {"height", options.height}}) {
    if (value < f || value % f != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": ", value, " is not a positive multiple of the VQGAN's factor ", f));
    }
  }
  options.cutouts.cut_size = models.clip->image_size();
  CLIPSERVE_RETURN_IF_ERROR(ValidateJobSettings(options));
  CLIPSERVE_RETURN_IF_ERROR(
      CheckTermWeight("layout_prior_weight", options.layout_prior_weight,
                      {models.priors.layout != nullptr, "a layout prior", LayoutPrior::kFileName}));
  CLIPSERVE_RETURN_IF_ERROR(
      CheckTermWeight("denoiser_weight", options.denoiser_weight,
                      {models.priors.denoiser != nullptr, "a latent denoiser", LatentDenoiser::kFileName}));
  bool positive = false;
  for (const WeightedPrompt& p : options.prompts) positive |= p.weight > 0;
  for (const ImagePrompt& p : options.image_prompts) positive |= p.weight > 0;
  if (!positive) return absl::InvalidArgumentError("prompt: at least one prompt needs a positive weight");
  for (size_t i = 0; i < options.image_prompts.size(); ++i) {
    const at::Tensor& img = options.image_prompts[i].image;
    if (!img.defined() || img.dim() != 3 || img.size(0) != 3 || img.size(1) < 1 || img.size(2) < 1) {
      return absl::InvalidArgumentError(absl::StrCat("image_prompts[", i, "]: expected a [3, H, W] image"));
    }
  }
  if (options.init_image.defined() &&
      (options.init_image.dim() != 3 || options.init_image.size(0) != 3 ||
       options.init_image.size(1) != options.height || options.init_image.size(2) != options.width)) {
    return absl::InvalidArgumentError(absl::StrCat("init_image: expected [3, ", options.height, ", ", options.width,
                                                   "] (the output size)"));
  }
  // Token ids of the text prompts for each steering CLIP; a text too long for a CLIP is the caller's error.
  const std::vector<const clip::ClipBundle*> clips = models.SteeringClips();
  std::vector<at::Tensor> ids;
  for (const clip::ClipBundle* c : clips) {
    const clip::Tokenizer& tok = *c->tokenizer;
    const int64_t context = tok.context_length();
    ids.push_back(at::zeros({static_cast<int64_t>(options.prompts.size()), context}, at::kLong));
    for (size_t i = 0; i < options.prompts.size(); ++i) {
      const absl::Status s =
          tok.EncodePadded(options.prompts[i].text, clip::Truncation::kReject,
                           absl::MakeSpan(ids.back().data_ptr<int64_t>() + i * context, context), nullptr);
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt ", i + 1, " ", Quoted(options.prompts[i].text), ": ", s.message()));
      }
    }
  }

  auto job = std::unique_ptr<Job>(new Job(std::move(options)));
  const JobOptions& o = job->options_;
  const at::Device device = models.vqgan->device();
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("starting a generation", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    job->generator_ = at::detail::createCPUGenerator(o.seed);
    vqgan::VqModel& vq = models.vqgan->module();
    const at::Tensor codebook = vq.codebook().detach();
    const int64_t c = codebook.size(1), h = o.height / f, w = o.width / f;
    at::Tensor z;
    if (o.init_image.defined()) {
      const at::Tensor x = o.init_image.unsqueeze(0).to(device, models.vqgan->dtype()).clamp(0, 1) * 2 - 1;
      z = vq.Quantize(vq.EncodeToLatent(x), vqgan::QuantizeGradient::kCodebook).z_q;
    } else {
      const at::Tensor codes = at::randint(codebook.size(0), {h * w}, job->generator_, at::kLong).to(device);
      z = codebook.index_select(0, codes).view({1, h, w, c}).permute({0, 3, 1, 2});
    }
    job->z_ = z.to(at::kFloat).contiguous().clone().set_requires_grad(true);
    job->z_init_ = job->z_.detach().clone();
    job->z_min_ = std::get<0>(codebook.min(0)).to(at::kFloat).view({1, c, 1, 1});
    job->z_max_ = std::get<0>(codebook.max(0)).to(at::kFloat).view({1, c, 1, 1});
    job->adam_ = std::make_unique<torch::optim::Adam>(std::vector<at::Tensor>{job->z_},
                                                       torch::optim::AdamOptions(o.learning_rate));

    std::vector<at::Tensor> texts;  // [prompts, D] per steering CLIP
    for (size_t c = 0; c < clips.size(); ++c) {
      texts.push_back(Normalized(clips[c]->model->EncodeText(ids[c].to(device))).to(at::kFloat));
    }
    at::Tensor positive_sum = at::zeros({texts[0].size(1)}, texts[0].options());
    for (size_t i = 0; i < o.prompts.size(); ++i) {
      Target t{.weight = o.prompts[i].weight, .stop = o.prompts[i].stop};
      for (const at::Tensor& text : texts) t.embeddings.push_back(text[static_cast<int64_t>(i)].unsqueeze(0));
      job->targets_.push_back(std::move(t));
      if (o.prompts[i].weight > 0) positive_sum += texts[0][static_cast<int64_t>(i)];
    }
    for (const ImagePrompt& p : o.image_prompts) {
      const at::Tensor img = p.image.unsqueeze(0).to(device, at::kFloat).clamp(0, 1);
      const at::Tensor cuts = MakeCutouts(img, o.cutouts, job->generator_);
      Target t{.weight = p.weight, .stop = p.stop};
      for (const clip::ClipBundle* c : clips) t.embeddings.push_back(Normalized(EmbedPixels(*c, cuts)).to(at::kFloat));
      if (p.weight > 0 && o.prompts.empty()) positive_sum += Normalized(t.embeddings[0].mean(0));
      job->targets_.push_back(std::move(t));
    }
    job->positive_text_ = Normalized(positive_sum);
    return absl::OkStatus();
  }));
  return job;
}

absl::StatusOr<at::Tensor> Job::Render(const GenerationModels& models) const {
  at::Tensor image;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("rendering a generation", [&]() -> absl::Status {
    c10::InferenceMode guard;
    vqgan::VqModel& vq = models.vqgan->module();
    const at::Tensor z = z_.detach().to(models.vqgan->dtype());
    const at::Tensor x = vq.Decode(vq.Quantize(z, vqgan::QuantizeGradient::kCodebook).z_q);
    image = x[0].to(at::kFloat).add(1).div(2).clamp(0, 1).to(at::kCPU).contiguous();
    return absl::OkStatus();
  }));
  return image;
}

float Job::Ramp(float first, const std::optional<float>& last) const {
  if (!last.has_value() || options_.steps < 2) return first;
  const float t = static_cast<float>(steps_done_) / static_cast<float>(options_.steps - 1);
  return first + (*last - first) * t;
}

float Job::SmoothnessWeight() const { return Ramp(options_.smoothness_weight, options_.smoothness_final_weight); }

CutoutOptions Job::StepCutouts() const {
  CutoutOptions c = options_.cutouts;
  const float scale = Ramp(1, options_.noise_final_scale);
  c.noise_min *= scale;
  c.noise_max *= scale;
  return c;
}

absl::StatusOr<std::vector<StepStats>> Step(const GenerationModels& models, absl::Span<Job* const> jobs) {
  std::set<const Job*> seen;
  for (const Job* job : jobs) {
    if (job == nullptr || job->finished() || !seen.insert(job).second) {
      return absl::InvalidArgumentError("Step: every job must be unfinished and listed once");
    }
  }
  // Jobs whose latents have the same shape share a pass.
  std::map<std::vector<int64_t>, std::vector<size_t>> groups;
  for (size_t i = 0; i < jobs.size(); ++i) groups[jobs[i]->z_.sizes().vec()].push_back(i);

  std::vector<StepStats> stats(jobs.size());
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("a generation step", [&]() -> absl::Status {
    vqgan::VqModel& vq = models.vqgan->module();
    const std::vector<const clip::ClipBundle*> clips = models.SteeringClips();
    for (const auto& [shape, members] : groups) {
      std::vector<at::Tensor> zs;
      for (size_t i : members) zs.push_back(jobs[i]->z_);
      const at::Tensor z = at::cat(zs, 0);
      const at::Tensor z_q = vq.Quantize(z.to(models.vqgan->dtype()), vqgan::QuantizeGradient::kStraightThrough).z_q;
      const at::Tensor x = ClampWithGrad(vq.Decode(z_q).to(at::kFloat).add(1).div(2), 0, 1);

      std::vector<at::Tensor> cuts;
      std::vector<int64_t> counts;
      for (size_t k = 0; k < members.size(); ++k) {
        Job& job = *jobs[members[k]];
        cuts.push_back(MakeCutouts(x.narrow(0, static_cast<int64_t>(k), 1), job.StepCutouts(), job.generator_));
        counts.push_back(cuts.back().size(0));
      }
      const at::Tensor all_cuts = at::cat(cuts, 0);
      std::vector<at::Tensor> embeddings;  // per steering CLIP
      for (const clip::ClipBundle* c : clips) embeddings.push_back(EmbedPixels(*c, all_cuts).to(at::kFloat));
      at::Tensor layout_energy;  // [members], when a member asks for it
      at::Tensor denoised;       // [members, C, h, w], when a member asks for it
      for (size_t i : members) {
        if (jobs[i]->options_.layout_prior_weight > 0 && !layout_energy.defined()) {
          layout_energy = models.priors.layout->Energy(z, models.vqgan->codebook());
        }
        if (jobs[i]->options_.denoiser_weight > 0 && !denoised.defined()) {
          denoised = models.priors.denoiser->Denoise(z, models.vqgan->codebook());
        }
      }

      at::Tensor similarity;
      {
        at::NoGradGuard no_grad;
        const at::Tensor whole = Normalized(EmbedPixels(*models.clip, x.detach()).to(at::kFloat));
        std::vector<at::Tensor> positives;
        for (size_t i : members) positives.push_back(jobs[i]->positive_text_);
        similarity = (whole * at::stack(positives, 0)).sum(-1).to(at::kCPU);
      }

      at::Tensor total;
      int64_t offset = 0;
      for (size_t k = 0; k < members.size(); ++k) {
        Job& job = *jobs[members[k]];
        at::Tensor loss = at::zeros({}, embeddings[0].options());
        for (size_t c = 0; c < clips.size(); ++c) {
          const at::Tensor e = embeddings[c].narrow(0, offset, counts[k]);
          for (const Job::Target& t : job.targets_) {
            const at::Tensor& rows = t.embeddings[c];
            at::Tensor sum = at::zeros({}, e.options());
            for (int64_t r = 0; r < rows.size(0); ++r) sum = sum + PromptLoss(e, rows[r], t.weight, t.stop);
            loss = loss + sum / static_cast<double>(rows.size(0) * static_cast<int64_t>(clips.size()));
          }
        }
        offset += counts[k];
        if (job.options_.init_weight > 0) {
          loss = loss + (job.z_ - job.z_init_).pow(2).mean() * (job.options_.init_weight / 2.0);
        }
        const float smoothness = job.SmoothnessWeight();
        if (smoothness > 0) {
          const at::Tensor xk = x.narrow(0, static_cast<int64_t>(k), 1);
          const int64_t h = xk.size(2), w = xk.size(3);
          const at::Tensor tv = (xk.narrow(2, 1, h - 1) - xk.narrow(2, 0, h - 1)).abs().mean() +
                                (xk.narrow(3, 1, w - 1) - xk.narrow(3, 0, w - 1)).abs().mean();
          loss = loss + tv * smoothness;
        }
        if (job.options_.layout_prior_weight > 0) {
          loss = loss + layout_energy[static_cast<int64_t>(k)] * job.options_.layout_prior_weight;
        }
        if (job.options_.denoiser_weight > 0) {
          const at::Tensor target = denoised.narrow(0, static_cast<int64_t>(k), 1);
          loss = loss + (job.z_ - target).pow(2).mean() * (job.options_.denoiser_weight / 2.0);
        }
        total = total.defined() ? total + loss : loss;
        StepStats& s = stats[members[k]];
        s.loss = loss.item<float>();
        s.similarity = similarity[static_cast<int64_t>(k)].item<float>();
        s.image = x[static_cast<int64_t>(k)].detach().to(at::kCPU).contiguous();
      }
      for (size_t i : members) jobs[i]->adam_->zero_grad();
      total.backward();
      at::NoGradGuard no_grad;
      for (size_t i : members) {
        Job& job = *jobs[i];
        job.adam_->step();
        job.z_.copy_(at::max(at::min(job.z_, job.z_max_), job.z_min_));
        stats[i].step = ++job.steps_done_;
      }
    }
    return absl::OkStatus();
  }));
  return stats;
}

}  // namespace clipserve::generation
