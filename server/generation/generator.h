// VQGAN+CLIP generation, the optimisation itself (DESIGN.md §5): a Job owns one generation's state (latent z,
// its Adam state, its random generator, its prompts' embeddings), and Step() advances any number of jobs by one
// optimisation step each, sharing the work between them: jobs whose latents have the same shape go through one
// decode → cutouts → CLIP → backward pass together. The losses of the jobs are added, and each job's loss
// depends only on its own latent, so each job's gradient, and therefore its whole run, is what it would be
// alone (up to floating-point differences of batched kernels).
//
//   GenerationModels models{.vqgan = vqgan, .clip = clip};
//   JobOptions o;
//   o.prompts = *ParsePrompts("a red circle", "prompt");
//   o.steps = 100;
//   auto job = Job::Create(models, std::move(o));
//   while (!(*job)->finished()) auto stats = Step(models, {job->get()});
//
// Threads: a Job is used by one thread at a time (the worker running its step, or its owner between steps);
// the models are shared, read-only, by any number of jobs and threads. Step() blocks for the whole pass.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include <ATen/ATen.h>
#include <torch/optim/adam.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/generation/cutouts.h"
#include "server/generation/latent_denoiser.h"
#include "server/generation/layout_prior.h"
#include "server/generation/prompts.h"
#include "server/models/clip/clip_bundle.h"
#include "server/models/vqgan/vqgan.h"

namespace clipserve::generation {

// Optional priors over a VQGAN's latents, fitted to its encodings of real pictures (files in its directory).
struct LatentPriors {
  std::shared_ptr<const LayoutPrior> layout;        // null: jobs cannot ask for layout_prior_weight
  std::shared_ptr<const LatentDenoiser> denoiser;  // null: jobs cannot ask for denoiser_weight

  // The priors a VQGAN directory has (LayoutPrior::kFileName, LatentDenoiser::kFileName), on `device`; a prior
  // whose file is not there stays null. An error for a file that is there and does not load.
  static absl::StatusOr<LatentPriors> Load(const std::filesystem::path& vqgan_dir, at::Device device = at::kCPU);
};

// The two models a generation runs on, on one device, and the VQGAN's priors. Create() freezes their
// parameters (generation needs gradients only for the latent).
struct GenerationModels {
  std::shared_ptr<const vqgan::VqganModel> vqgan;
  std::shared_ptr<const clip::ClipBundle> clip;  // steers; its cutout size, and StepStats::similarity
  LatentPriors priors;
  // More CLIPs that steer beside `clip` (an ensemble, as pixray's list of CLIP models): each embeds the same
  // cutouts (resized to its own input size) and the prompts (through its own tokenizer and text encoder), and
  // the prompts' loss is the mean over all the steering CLIPs. A picture that fools one CLIP into seeing the
  // prompt rarely fools another trained differently. Empty: `clip` alone (the reference).
  std::vector<std::shared_ptr<const clip::ClipBundle>> more_clips;

  // INVALID_ARGUMENT when a model is missing, they sit on different devices, or a prior's codes are not the
  // VQGAN's.
  static absl::StatusOr<GenerationModels> Create(std::shared_ptr<const vqgan::VqganModel> vqgan,
                                                 std::shared_ptr<const clip::ClipBundle> clip,
                                                 LatentPriors priors = {},
                                                 std::vector<std::shared_ptr<const clip::ClipBundle>> more_clips = {});
  // Loads a CLIP directory and a VQGAN directory (float32, on `device`), the VQGAN directory's priors
  // (LatentPriors::Load), and the CLIP directories of `more_clip_dirs`, and calls Create.
  static absl::StatusOr<GenerationModels> Load(const std::filesystem::path& clip_dir,
                                               const std::filesystem::path& vqgan_dir, at::Device device = at::kCPU,
                                               const std::vector<std::filesystem::path>& more_clip_dirs = {});

  // `clip` followed by `more_clips`.
  std::vector<const clip::ClipBundle*> SteeringClips() const;
};

// An image prompt: a picture the result should look like (or, with a negative weight, unlike).
struct ImagePrompt {
  at::Tensor image;  // [3, H, W] float in [0, 1], any size
  float weight = 1;
  float stop = -std::numeric_limits<float>::infinity();
};

// One generation's request, validated by Job::Create.
struct JobOptions {
  std::vector<WeightedPrompt> prompts;  // text prompts (ParsePrompts)
  std::vector<ImagePrompt> image_prompts;
  int width = 64;  // pixels; multiples of the VQGAN's downsampling factor
  int height = 64;
  int steps = 100;
  uint64_t seed = 0;
  float learning_rate = 0.1f;  // Adam on z
  // cut_size is set to the CLIP's image size by Create.
  CutoutOptions cutouts;
  // Optional start image [3, height, width] in [0, 1] (the caller resizes it); undefined: random codes.
  at::Tensor init_image;
  // Weight of ‖z − z_init‖² (mean) / 2 in the loss; 0 disables.
  float init_weight = 0;
  // Weight of a total-variation term on the decoded picture (mean |difference| between vertically and between
  // horizontally adjacent pixels, summed), which favours flat regions with sharp edges (pixray calls such a
  // term smoothness); 0 disables (the reference has none).
  float smoothness_weight = 0;
  // When set, the smoothness term's weight at the last step: the weight moves linearly from smoothness_weight at
  // the first step to this at the last, so that a run can start flat and let outlines grow later (L1 total
  // variation charges perimeter, which favours compact shapes). Unset: smoothness_weight throughout.
  std::optional<float> smoothness_final_weight;
  // When set, the cutouts' noise scales (CutoutOptions::noise_min and noise_max) at the last step, as a factor
  // of the configured ones: the factor moves linearly from 1 at the first step to this at the last, so that
  // the smoothed CLIP's view sharpens as the picture forms (coarse to fine). Unset: 1 throughout.
  std::optional<float> noise_final_scale;
  // Weight of the layout prior's energy (LayoutPrior::Energy of z: how unlike the code layouts of real pictures
  // the latent is); needs GenerationModels::priors.layout; 0 disables (the reference has none).
  float layout_prior_weight = 0;
  // Weight of the denoiser term λ·mean((z − D(z))²)/2, D(z) the latent denoiser's prediction held fixed
  // ("regularisation by denoising": its gradient pulls z towards the nearest layout of real pictures); needs
  // GenerationModels::priors.denoiser; 0 disables (the reference has none).
  float denoiser_weight = 0;
};

// The checks of Job::Create that need no models: steps >= 1, learning_rate in (0, 10], init_weight >= 0,
// smoothness_weight and smoothness_final_weight in [0, 1000], noise_final_scale in [0, 1] and the cutouts
// (ValidateCutoutOptions, with cutouts.cut_size as given).
// INVALID_ARGUMENT naming the field.
absl::Status ValidateJobSettings(const JobOptions& options);

// What one step did for one job.
struct StepStats {
  int step = 0;           // 1-based: the step just done
  float loss = 0;         // total loss of the job at this step (before the update)
  float similarity = 0;   // cosine between CLIP's embedding of the whole image and the positive text prompts
  at::Tensor image;       // the image this step scored, [3, H, W] float in [0, 1], detached, on the CPU
};

class Job {
 public:
  // Validates `options` against the models (INVALID_ARGUMENT naming the field: prompts that do not tokenize or
  // none with a positive weight, a size that is not a positive multiple of the factor, steps < 1, a bad
  // init image or cutout option), embeds the prompts, and draws the start latent from the seed.
  static absl::StatusOr<std::unique_ptr<Job>> Create(const GenerationModels& models, JobOptions options);

  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  const JobOptions& options() const { return options_; }
  int steps_done() const { return steps_done_; }
  bool finished() const { return steps_done_ >= options_.steps; }
  // The smoothness term's weight at the next step (JobOptions::smoothness_final_weight).
  float SmoothnessWeight() const;
  // The cutouts of the next step (JobOptions::noise_final_scale applied).
  CutoutOptions StepCutouts() const;
  // The latent's shape [1, embed_dim, height / f, width / f]: jobs with equal shapes share a pass.
  at::IntArrayRef latent_shape() const { return z_.sizes(); }
  // The image of the current latent (quantised and decoded), [3, H, W] float in [0, 1], on the CPU.
  absl::StatusOr<at::Tensor> Render(const GenerationModels& models) const;

 private:
  friend absl::StatusOr<std::vector<StepStats>> Step(const GenerationModels& models, absl::Span<Job* const> jobs);

  explicit Job(JobOptions options) : options_(std::move(options)) {}

  // `first` at the first step, moving linearly to `last` (when set) at the last.
  float Ramp(float first, const std::optional<float>& last) const;

  // A prompt's target embeddings, normalised, one tensor per steering CLIP (GenerationModels::SteeringClips): one
  // row for a text, one per cutout for an image prompt (the loss is the mean over rows, as the reference does).
  struct Target {
    std::vector<at::Tensor> embeddings;  // [M, D] each
    float weight = 1;
    float stop = 0;
  };

  JobOptions options_;
  at::Tensor z_;       // [1, C, h, w], the optimised leaf
  at::Tensor z_init_;  // the start latent (for init_weight)
  at::Tensor z_min_, z_max_;  // [1, C, 1, 1]: the codebook's range per channel; z is clamped to it
  std::unique_ptr<torch::optim::Adam> adam_;
  at::Generator generator_;  // the job's own randomness (start codes, cutouts)
  std::vector<Target> targets_;
  at::Tensor positive_text_;  // [D] normalised mean of the positive text prompts (for StepStats::similarity)
  int steps_done_ = 0;
};

// One optimisation step of every job in `jobs` (each unfinished, created with these models, and listed once),
// as described at the top. Returns one StepStats per job, in order. INVALID_ARGUMENT for a finished or repeated
// job; INTERNAL for a torch failure (the jobs' state is then unspecified: fail them).
absl::StatusOr<std::vector<StepStats>> Step(const GenerationModels& models, absl::Span<Job* const> jobs);

// clamp(x, lo, hi) whose gradient passes where it moves x back into range (the reference's ClampWithGrad):
// d/dx = 1 inside, and outside only for gradients pointing inwards.
at::Tensor ClampWithGrad(const at::Tensor& x, double lo, double hi);

}  // namespace clipserve::generation
