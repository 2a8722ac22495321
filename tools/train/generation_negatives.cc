#include "tools/train/generation_negatives.h"

#include <string>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/generation/prompts.h"
#include "server/models/clip/clip_bundle.h"
#include "server/models/vqgan/vqgan.h"

namespace clipserve::train {

absl::StatusOr<std::unique_ptr<GenerationNegatives>> GenerationNegatives::Create(
    const GenerationNegativeOptions& options, const std::filesystem::path& clip_dir,
    std::shared_ptr<const vqgan::VqganModel> vqgan, uint64_t seed, generation::LatentPriors priors) {
  const GenerationNegativeOptions& o = options;
  if (o.chains < 1 || o.chain_steps < 1 || o.min_steps < 0 || o.min_steps >= o.chain_steps || o.cutouts.cutn < 1 ||
      !(o.learning_rate > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generation negatives need chains >= 1, chain_steps >= 1, 0 <= min_steps < chain_steps, cutn >= 1 and a "
        "positive learning rate; got ", o.chains, ", ", o.chain_steps, ", ", o.min_steps, ", ", o.cutouts.cutn, ", ",
        o.learning_rate));
  }
  if (vqgan == nullptr) return absl::InvalidArgumentError("generation negatives need a VQGAN");
  auto out = std::unique_ptr<GenerationNegatives>(new GenerationNegatives(options, seed));
  // The chains' CLIP is a second model that Refresh overwrites; its weights are not prepacked, since they change.
  CLIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<clip::ClipBundle> bundle,
                             clip::ClipBundle::Load({.dir = clip_dir, .prepack_cpu_weights = false}));
  out->clip_ = std::move(bundle);
  if (out->clip_->image_size() % vqgan->downsample_factor() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("the CLIP's image size ", out->clip_->image_size(),
                                                   " is not a multiple of the VQGAN's factor ",
                                                   vqgan->downsample_factor()));
  }
  CLIPSERVE_ASSIGN_OR_RETURN(out->models_,
                             generation::GenerationModels::Create(vqgan, out->clip_, std::move(priors)));
  // Staggered first runs, so that chains reach min_steps (and restart) at different training steps.
  out->chains_.resize(o.chains);
  for (int i = 0; i < o.chains; ++i) {
    const int steps = o.min_steps + 1 + (o.chain_steps - o.min_steps - 1) * (i + 1) / o.chains;
    CLIPSERVE_RETURN_IF_ERROR(out->Start(out->chains_[i], steps));
  }
  return out;
}

absl::Status GenerationNegatives::Start(Chain& chain, int steps) {
  // A prompt as gen-eval writes them, "a red star on a blue background", drawn from the chain's own stream.
  shapes::Rng rng = shapes::Rng::For(seed_, started_, /*stream=*/0x6e656773);
  const shapes::Colour colour = shapes::kShapeColours[rng.Below(shapes::kShapeColours.size())];
  const shapes::Shape shape = shapes::kShapes[rng.Below(shapes::kShapes.size())];
  shapes::Colour background = colour;
  while (background == colour) background = shapes::kBackgroundColours[rng.Below(shapes::kBackgroundColours.size())];
  const std::string text = shapes::ScenePrompt(colour, shape, background);
  generation::JobOptions j;
  CLIPSERVE_ASSIGN_OR_RETURN(j.prompts, generation::ParsePrompts(text, "prompt"));
  j.width = j.height = clip_->image_size();
  j.steps = steps;
  j.seed = rng.Next();
  j.learning_rate = options_.learning_rate;
  j.cutouts = options_.cutouts;
  j.denoiser_weight = options_.denoiser_weight;
  CLIPSERVE_ASSIGN_OR_RETURN(chain.job, generation::Job::Create(models_, std::move(j)));
  chain.colour = colour;
  ++started_;
  return absl::OkStatus();
}

absl::Status GenerationNegatives::Refresh(const clip::ClipModel& model) {
  at::NoGradGuard no_grad;
  const auto from = model.named_parameters(/*recurse=*/true);
  auto to = clip_->model->named_parameters(/*recurse=*/true);
  if (from.size() != to.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the trained CLIP has ", from.size(), " parameters, the chains' ", to.size()));
  }
  for (const auto& item : from) {
    at::Tensor* target = to.find(item.key());
    if (target == nullptr || !target->sizes().equals(item.value().sizes())) {
      return absl::InvalidArgumentError(absl::StrCat("the chains' CLIP has no parameter ", item.key(),
                                                     " of the trained one's shape"));
    }
    target->copy_(item.value());
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerationNegatives::Negatives> GenerationNegatives::Advance() {
  std::vector<generation::Job*> jobs;
  for (Chain& chain : chains_) {
    if (chain.job->finished()) CLIPSERVE_RETURN_IF_ERROR(Start(chain, options_.chain_steps));
    jobs.push_back(chain.job.get());
  }
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<generation::StepStats> stats, generation::Step(models_, jobs));
  Negatives out;
  std::vector<at::Tensor> images;
  for (size_t i = 0; i < chains_.size(); ++i) {
    if (stats[i].step < options_.min_steps) continue;
    images.push_back(stats[i].image);
    out.colours.push_back(chains_[i].colour);
  }
  if (!images.empty()) out.images = at::stack(images);
  return out;
}

}  // namespace clipserve::train
