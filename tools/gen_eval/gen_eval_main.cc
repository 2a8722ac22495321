// gen-eval: how well VQGAN+CLIP generation with the shipped models draws what the prompt says, graded by the
// independent OpenCV judge.
//
//   build/bin/gen-eval --models=models/shapes-world [--seeds=8] [--steps=150] [--init=random|grey|white|black|scene]
//                      [--out=DIR] [--json]
//   build/bin/gen-eval --config=configs/default.textproto ...   (the server's models and job settings)
//
// With --config, the models, steps, learning rate, cutouts and smoothness weight are the server config's
// (generation.clip_model, more_clip_models, vqgan_path, job_defaults), and only the flags given override them.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/models/cpu_threads.h"
#include "server/service/config.h"
#include "tools/gen_eval/cutout_flags.h"
#include "tools/gen_eval/gen_eval.h"

ABSL_FLAG(std::string, models, "models/shapes-world", "directory with clip/ and vqgan/");
ABSL_FLAG(std::string, config, "",
          "a server config: its generation models and job settings (the flags given still override the settings)");
ABSL_FLAG(int, seeds, 8, "seeds per prompt (first_seed .. first_seed + N - 1)");
ABSL_FLAG(int, first_seed, 1, "first seed (to split a long evaluation into parts)");
ABSL_FLAG(int, prompts, 6, "how many of the six default prompts");
ABSL_FLAG(std::optional<int>, steps, std::nullopt, "optimisation steps per run (unset: 150, or the config's)");
ABSL_FLAG(int, size, 64, "picture side in pixels (a multiple of the VQGAN's factor)");
// Cutouts per step; the augmentation flags are tools/gen_eval/cutout_flags.h's.
ABSL_FLAG(std::optional<int>, cutn, std::nullopt, "cutouts per step (unset: CutoutOptions' 32, or the config's)");
ABSL_FLAG(std::optional<float>, lr, std::nullopt, "Adam learning rate on the latent (unset: 0.1, or the config's)");
ABSL_FLAG(int, batch_jobs, 8, "runs stepped together per pass");
ABSL_FLAG(std::string, out, "", "write each run's final image here");
ABSL_FLAG(std::optional<float>, smoothness, std::nullopt,
          "weight of the total-variation term (JobOptions::smoothness_weight; unset: 0, or the config's)");
ABSL_FLAG(std::optional<float>, smoothness_final, std::nullopt,
          "the total-variation term's weight at the last step, reached linearly from --smoothness "
          "(JobOptions::smoothness_final_weight; unset: constant)");
ABSL_FLAG(std::optional<float>, noise_final_scale, std::nullopt,
          "the cutouts' noise scales at the last step as a factor of --cut_noise_min/--cut_noise, reached linearly "
          "from 1 (JobOptions::noise_final_scale; unset: 1)");
ABSL_FLAG(double, denoiser, 0,
          "weight of the VQGAN's latent denoiser term (JobOptions::denoiser_weight; needs train-latent-denoiser's "
          "file)");
ABSL_FLAG(double, layout_prior, 0,
          "weight of the VQGAN's layout prior (JobOptions::layout_prior_weight; needs fit-layout-prior's file)");
ABSL_FLAG(double, contrast_shapes, 0,
          "when > 0, the prompt with each other shape joins every run as a negative prompt of weight -W/9");
ABSL_FLAG(std::string, extra_prompts, "",
          "more prompts for every run, e.g. \"a {colour} blob:-0.5\" ({colour}, {shape}, {background} filled in)");
ABSL_FLAG(std::string, init, "random",
          "start picture: random (codes), grey, white, black, or scene (the world's picture of the prompt: a "
          "diagnostic of whether the CLIP keeps a true picture)");
ABSL_FLAG(std::vector<std::string>, more_clips, {},
          "comma-separated CLIP directories that steer beside DIR/clip (an ensemble; GenerationModels::more_clips)");
ABSL_FLAG(bool, json, false, "print one JSON object");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "gen-eval --models=DIR | --config=SERVER_CONFIG [--seeds=8] [--steps=150] [--out=DIR] [--json]");
  absl::ParseCommandLine(argc, argv);
  clipserve::ConfigureCpuThreads({});
  clipserve::gen_eval::GenEvalOptions o;
  const std::string config = absl::GetFlag(FLAGS_config);
  if (!config.empty()) {
    if (absl::GetFlag(FLAGS_models) != absl::GetFlagReflectionHandle(FLAGS_models).DefaultValue() ||
        !absl::GetFlag(FLAGS_more_clips).empty()) {
      std::fprintf(stderr, "gen-eval: --config names the models; give --config or --models/--more_clips\n");
      return 2;
    }
    auto loaded = clipserve::service::LoadServerConfig(config);
    absl::Status status = loaded.status();
    if (status.ok()) status = clipserve::gen_eval::ApplyServerConfig(*loaded, &o);
    if (!status.ok()) {
      std::fprintf(stderr, "gen-eval: --config: %s\n", std::string(status.message()).c_str());
      return 2;
    }
  }
  // The flags given override the defaults (GenEvalOptions') or the config's.
  const auto set = [](const auto& flag, auto* field) {
    if (const auto value = absl::GetFlag(flag)) *field = *value;
  };
  o.models = absl::GetFlag(FLAGS_models);
  o.seeds = absl::GetFlag(FLAGS_seeds);
  o.first_seed = absl::GetFlag(FLAGS_first_seed);
  o.prompts.resize(std::min<size_t>(o.prompts.size(), static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_prompts)))));
  set(FLAGS_steps, &o.steps);
  o.size = absl::GetFlag(FLAGS_size);
  o.cutouts = clipserve::tools::CutoutOptionsFromFlags(o.cutouts);
  set(FLAGS_cutn, &o.cutouts.cutn);
  set(FLAGS_lr, &o.learning_rate);
  set(FLAGS_smoothness, &o.smoothness_weight);
  set(FLAGS_smoothness_final, &o.smoothness_final_weight);
  set(FLAGS_noise_final_scale, &o.noise_final_scale);
  o.layout_prior_weight = static_cast<float>(absl::GetFlag(FLAGS_layout_prior));
  o.denoiser_weight = static_cast<float>(absl::GetFlag(FLAGS_denoiser));
  o.contrast_shapes = static_cast<float>(absl::GetFlag(FLAGS_contrast_shapes));
  o.extra_prompts = absl::GetFlag(FLAGS_extra_prompts);
  o.batch_jobs = absl::GetFlag(FLAGS_batch_jobs);
  o.out_dir = absl::GetFlag(FLAGS_out);
  for (const std::string& dir : absl::GetFlag(FLAGS_more_clips)) o.more_clips.emplace_back(dir);
  const std::string init = absl::GetFlag(FLAGS_init);
  if (init == "grey") {
    o.init_rgb = {0.5f, 0.5f, 0.5f};
  } else if (init == "white") {
    o.init_rgb = {1, 1, 1};
  } else if (init == "black") {
    o.init_rgb = {0, 0, 0};
  } else if (init == "scene") {
    o.init_scene = true;
  } else if (init != "random") {
    std::fprintf(stderr, "gen-eval: --init must be random, grey, white, black or scene\n");
    return 2;
  }
  auto result = clipserve::gen_eval::Evaluate(o);
  if (!result.ok()) {
    std::fprintf(stderr, "gen-eval: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << result->ToJson().dump() << "\n";
  } else {
    for (const auto& r : result->runs) {
      std::printf("%-45s seed %2llu: judged %-7s %-9s %s%s  CLIP reads %-7s %-9s  similarity %.3f -> %.3f\n",
                  r.prompt.c_str(), static_cast<unsigned long long>(r.seed), r.judged_colour.c_str(),
                  r.judged_shape.c_str(), r.colour_ok ? "C" : "-", r.shape_ok ? "S" : "-", r.clip_colour.c_str(),
                  r.clip_shape.c_str(), r.first_similarity, r.last_similarity);
    }
    std::printf(
        "judge: colour %.1f %%, shape %.1f %%; CLIP reads colour %.1f %%, shape %.1f %%; similarity rose in %.1f %% "
        "of %zu runs; %lld job-steps in %.1f s\n",
        100 * result->colour_agreement, 100 * result->shape_agreement, 100 * result->clip_colour_agreement,
        100 * result->clip_shape_agreement, 100 * result->similarity_rose, result->runs.size(),
        static_cast<long long>(result->job_steps), result->seconds);
  }
  return 0;
}
