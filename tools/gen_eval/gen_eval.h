// Quality of VQGAN+CLIP generation with the shipped shapes-world models, graded by the independent OpenCV judge
// (tools/judge), not by the CLIP that steers it: prompts "a {colour} {shape} on a {background} background" ×
// seeds, run through the server's own generation code (generation::Job / Step, all runs batched together), and
// for each run whether the picture shows the prompt's colour and shape and whether CLIP's similarity to the
// prompt rose.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "clipserve/v1/config.pb.h"
#include "server/generation/generator.h"
#include "tools/shapes/world.h"

namespace clipserve::gen_eval {

struct Prompt {
  shapes::Colour colour;
  shapes::Shape shape;
  shapes::Colour background;
  std::string Text() const;  // "a red circle on a white background"
  // The same prompt with another shape: "a red square on a white background".
  std::string TextWithShape(shapes::Shape other) const;
};

// The six prompts of the acceptance check: distinct colours and shapes, backgrounds far from the shape colour.
std::vector<Prompt> DefaultPrompts();

struct GenEvalOptions {
  std::filesystem::path models;  // with clip/ and vqgan/ (models/shapes-world)
  // When set, the steering CLIP and the VQGAN directories instead of models/clip and models/vqgan.
  std::filesystem::path clip_dir, vqgan_dir;
  // CLIP directories that steer beside models/clip (GenerationModels::more_clips); the judge's CLIP readings
  // and the similarity are still models/clip's.
  std::vector<std::filesystem::path> more_clips;
  std::vector<Prompt> prompts = DefaultPrompts();
  int seeds = 8;  // seeds first_seed .. first_seed + seeds - 1 per prompt
  int first_seed = 1;
  int steps = 150;
  int size = 64;
  // Cutouts of every run (cut_size is the CLIP's, set by Job::Create); the defaults are the server's.
  generation::CutoutOptions cutouts;
  float learning_rate = 0.1f;
  float smoothness_weight = 0;  // JobOptions::smoothness_weight
  std::optional<float> smoothness_final_weight;  // JobOptions::smoothness_final_weight
  std::optional<float> noise_final_scale;        // JobOptions::noise_final_scale
  // JobOptions::layout_prior_weight; > 0 needs the layout prior in models/vqgan (fit-layout-prior).
  float layout_prior_weight = 0;
  // JobOptions::denoiser_weight; > 0 needs the latent denoiser in models/vqgan (train-latent-denoiser).
  float denoiser_weight = 0;
  // Contrast against the other shapes: when > 0, every run also gets the prompt with each of the other nine
  // shapes (same colour and background) as a negative prompt of weight −contrast_shapes / 9. What the prompts
  // share (colour, background) then cancels in the loss and what is left pulls towards the prompt's shape and
  // away from the others. 0 (the default): the prompt alone.
  float contrast_shapes = 0;
  // More prompts for every run, in the server's prompt syntax ("text:weight:stop | ..."; generation/prompts.h),
  // with {colour}, {shape} and {background} replaced by the run's prompt's words, e.g. "a {colour} blob:-0.5".
  // They join the run's prompt as if the request had said "<prompt> | <extra_prompts>". Empty: none.
  std::string extra_prompts;
  int batch_jobs = 8;  // runs stepped together per pass
  // Start picture: empty = random codes (the reference's default); otherwise every run starts from this plain
  // RGB colour (values in [0, 1]), encoded by the VQGAN, e.g. {0.5, 0.5, 0.5} for grey.
  std::vector<float> init_rgb;
  // A diagnostic start instead: each run starts from the world's own picture of its prompt (the shape, medium
  // size, centred and upright, in the prompt's colour on a plain ground of the prompt's background). Whether the
  // optimisation keeps it or turns it into something else tells whether the steering CLIP prefers the true
  // picture to what it draws from random codes. Overrides init_rgb.
  bool init_scene = false;
  // Optional: each final image as <prompt index>_<seed>.png, and sheet.png (rows: prompts, columns: seeds).
  std::filesystem::path out_dir;
};

// The server's generation settings from a loaded server config (service::LoadServerConfig): the steering CLIP
// (generation.clip_model's directory), generation.more_clip_models, the VQGAN, and generation.job_defaults'
// steps, learning rate, cutouts and smoothness weight. INVALID_ARGUMENT when the config has no generation.
absl::Status ApplyServerConfig(const ::clipserve::v1::config::ServerConfig& config, GenEvalOptions* options);

struct Run {
  std::string prompt;
  uint64_t seed = 0;
  std::string judged_colour, judged_shape;  // "" when the judge found nothing
  bool colour_ok = false, shape_ok = false;
  // The steering CLIP's own zero-shot reading of the final picture (no cutouts): a picture it takes for the
  // prompt's shape while the judge does not is the adversarial failure; one it does not is an optimisation
  // that did not get there.
  std::string clip_colour, clip_shape;
  bool clip_colour_ok = false, clip_shape_ok = false;
  float first_similarity = 0, last_similarity = 0;
};

struct GenEvalResult {
  std::vector<Run> runs;
  double colour_agreement = 0;  // share of runs whose picture shows the prompt's colour
  double shape_agreement = 0;
  double similarity_rose = 0;   // share of runs whose final similarity exceeds the first
  double clip_colour_agreement = 0;  // share of runs whose final picture the CLIP reads as the prompt's colour
  double clip_shape_agreement = 0;
  double seconds = 0;
  int64_t job_steps = 0;
  nlohmann::json ToJson() const;
};

absl::StatusOr<GenEvalResult> Evaluate(const GenEvalOptions& options);

}  // namespace clipserve::gen_eval
