#include "tools/gen_eval/gen_eval.h"

#include <chrono>
#include <memory>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/common/status_macros.h"
#include "server/generation/prompts.h"
#include "server/models/clip/clip_bundle.h"
#include "server/models/vqgan/vqgan.h"
#include "server/service/generation_defaults.h"
#include "tools/eval/shapes_eval.h"
#include "tools/judge/judge.h"

namespace clipserve::gen_eval {

std::string Prompt::Text() const { return TextWithShape(shape); }

std::string Prompt::TextWithShape(shapes::Shape other) const {
  return shapes::ScenePrompt(colour, other, background);
}

std::vector<Prompt> DefaultPrompts() {
  using shapes::Colour;
  using shapes::Shape;
  return {{Colour::kRed, Shape::kCircle, Colour::kWhite},   {Colour::kBlue, Shape::kSquare, Colour::kYellow},
          {Colour::kGreen, Shape::kTriangle, Colour::kBlack}, {Colour::kYellow, Shape::kStar, Colour::kBlue},
          {Colour::kPurple, Shape::kHeart, Colour::kWhite},  {Colour::kWhite, Shape::kCross, Colour::kRed}};
}

nlohmann::json GenEvalResult::ToJson() const {
  nlohmann::json runs_json = nlohmann::json::array();
  for (const Run& r : runs) {
    runs_json.push_back({{"prompt", r.prompt},
                         {"seed", r.seed},
                         {"judged_colour", r.judged_colour},
                         {"judged_shape", r.judged_shape},
                         {"colour_ok", r.colour_ok},
                         {"shape_ok", r.shape_ok},
                         {"clip_colour", r.clip_colour},
                         {"clip_shape", r.clip_shape},
                         {"first_similarity", r.first_similarity},
                         {"last_similarity", r.last_similarity}});
  }
  return {{"colour_agreement", colour_agreement},
          {"shape_agreement", shape_agreement},
          {"similarity_rose", similarity_rose},
          {"clip_colour_agreement", clip_colour_agreement},
          {"clip_shape_agreement", clip_shape_agreement},
          {"runs", runs_json},
          {"seconds", seconds},
          {"job_steps", job_steps}};
}

namespace {

// The world's picture of a prompt (GenEvalOptions::init_scene) as [3, size, size] floats in [0, 1].
absl::StatusOr<at::Tensor> PromptPicture(const Prompt& p, int size) {
  shapes::Scene scene;
  scene.shape = p.shape;
  scene.colour = p.colour;
  scene.rgb = shapes::ColourRgb(p.colour);
  scene.background.colour = p.background;
  scene.background.rgb = shapes::ColourRgb(p.background);
  CLIPSERVE_ASSIGN_OR_RETURN(shapes::Rendering r, shapes::Render(scene, {.image_size = size}));
  return at::from_blob(r.image.data, {size, size, 3}, at::kByte).permute({2, 0, 1}).to(at::kFloat).div(255);
}

}  // namespace

absl::Status ApplyServerConfig(const ::clipserve::v1::config::ServerConfig& config, GenEvalOptions* options) {
  const ::clipserve::v1::config::GenerationConfig& g = config.generation();
  if (g.vqgan_path().empty()) return absl::InvalidArgumentError("the server config has no generation.vqgan_path");
  const auto dir = [&config](const std::string& name) -> absl::StatusOr<std::filesystem::path> {
    for (const auto& m : config.models()) {
      if (m.name() == name) return std::filesystem::path(m.path());
    }
    return absl::InvalidArgumentError(absl::StrCat("the server config serves no model '", name, "'"));
  };
  CLIPSERVE_ASSIGN_OR_RETURN(options->clip_dir, dir(g.clip_model()));
  options->vqgan_dir = g.vqgan_path();
  options->more_clips.clear();
  for (const std::string& name : g.more_clip_models()) {
    CLIPSERVE_ASSIGN_OR_RETURN(options->more_clips.emplace_back(), dir(name));
  }
  const generation::JobOptions j = service::JobDefaultsFromConfig(g);
  options->steps = j.steps;
  options->learning_rate = j.learning_rate;
  options->cutouts = j.cutouts;
  options->smoothness_weight = j.smoothness_weight;
  return absl::OkStatus();
}

absl::StatusOr<GenEvalResult> Evaluate(const GenEvalOptions& o) {
  if (o.seeds < 1 || o.first_seed < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("seeds and first_seed must be at least 1, got ", o.seeds, " and ", o.first_seed));
  }
  if (!(o.contrast_shapes >= 0 && o.contrast_shapes <= 100)) {
    return absl::InvalidArgumentError(absl::StrCat("contrast_shapes must be in [0, 100], got ", o.contrast_shapes));
  }
  CLIPSERVE_ASSIGN_OR_RETURN(generation::GenerationModels models,
                             generation::GenerationModels::Load(o.clip_dir.empty() ? o.models / "clip" : o.clip_dir,
                                                                o.vqgan_dir.empty() ? o.models / "vqgan" : o.vqgan_dir,
                                                                at::kCPU,
                                                                o.more_clips));
  struct Pending {
    Run run;
    const Prompt* prompt;
    std::unique_ptr<generation::Job> job;
  };
  std::vector<Pending> all;
  for (const Prompt& p : o.prompts) {
    for (int seed = o.first_seed; seed < o.first_seed + o.seeds; ++seed) {
      generation::JobOptions j;
      // The prompt, and any extra prompts, as a request would spell them.
      const std::string spec =
          o.extra_prompts.empty()
              ? p.Text()
              : absl::StrCat(p.Text(), " | ",
                             absl::StrReplaceAll(o.extra_prompts,
                                                 {{"{colour}", shapes::ColourName(p.colour)},
                                                  {"{shape}", shapes::ShapeName(p.shape)},
                                                  {"{background}", shapes::ColourName(p.background)}}));
      CLIPSERVE_ASSIGN_OR_RETURN(j.prompts, generation::ParsePrompts(spec, "extra_prompts"));
      if (o.contrast_shapes > 0) {
        const float weight = -o.contrast_shapes / static_cast<float>(shapes::kShapes.size() - 1);
        for (const shapes::Shape other : shapes::kShapes) {
          if (other != p.shape) j.prompts.push_back({.text = p.TextWithShape(other), .weight = weight});
        }
      }
      j.width = j.height = o.size;
      j.steps = o.steps;
      j.seed = static_cast<uint64_t>(seed);
      j.learning_rate = o.learning_rate;
      j.smoothness_weight = o.smoothness_weight;
      j.smoothness_final_weight = o.smoothness_final_weight;
      j.noise_final_scale = o.noise_final_scale;
      j.layout_prior_weight = o.layout_prior_weight;
      j.denoiser_weight = o.denoiser_weight;
      j.cutouts = o.cutouts;
      if (o.init_scene) {
        CLIPSERVE_ASSIGN_OR_RETURN(j.init_image, PromptPicture(p, o.size));
      } else if (o.init_rgb.size() == 3) {
        j.init_image = at::tensor(o.init_rgb).view({3, 1, 1}).expand({3, o.size, o.size}).contiguous();
      }
      CLIPSERVE_ASSIGN_OR_RETURN(auto job, generation::Job::Create(models, std::move(j)));
      all.push_back({Run{.prompt = p.Text(), .seed = static_cast<uint64_t>(seed)}, &p, std::move(job)});
    }
  }
  GenEvalResult result;
  const auto start = std::chrono::steady_clock::now();
  for (size_t first = 0; first < all.size(); first += static_cast<size_t>(o.batch_jobs)) {
    const size_t last = std::min(all.size(), first + static_cast<size_t>(o.batch_jobs));
    std::vector<generation::Job*> jobs;
    for (size_t i = first; i < last; ++i) jobs.push_back(all[i].job.get());
    for (int step = 0; step < o.steps; ++step) {
      CLIPSERVE_ASSIGN_OR_RETURN(std::vector<generation::StepStats> stats, generation::Step(models, jobs));
      result.job_steps += static_cast<int64_t>(jobs.size());
      for (size_t k = 0; k < stats.size(); ++k) {
        Run& run = all[first + k].run;
        if (step == 0) run.first_similarity = stats[k].similarity;
        run.last_similarity = stats[k].similarity;
      }
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int colour_ok = 0, shape_ok = 0, rose = 0, clip_colour_ok = 0, clip_shape_ok = 0;
  std::vector<cv::Mat> finals;
  if (!o.out_dir.empty()) std::filesystem::create_directories(o.out_dir);
  // A contact sheet: one row per prompt, one column per seed, enlarged 3×.
  constexpr int kZoom = 3;
  cv::Mat sheet(static_cast<int>(o.prompts.size()) * o.size * kZoom, o.seeds * o.size * kZoom, CV_8UC3,
                cv::Scalar(0, 0, 0));
  for (size_t i = 0; i < all.size(); ++i) {
    Pending& p = all[i];
    CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor image, p.job->Render(models));
    const at::Tensor hwc = image.mul(255).round().clamp(0, 255).to(at::kByte).permute({1, 2, 0}).contiguous();
    const cv::Mat rgb(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3, hwc.data_ptr<uint8_t>());
    finals.push_back(rgb.clone());
    const judge::Judgement j = judge::JudgeImage(rgb);
    Run& run = p.run;
    if (j.found) {
      run.judged_colour = std::string(shapes::ColourName(j.colour));
      run.judged_shape = std::string(shapes::ShapeName(j.shape));
      run.colour_ok = j.colour == p.prompt->colour;
      run.shape_ok = j.shape == p.prompt->shape;
    }
    colour_ok += run.colour_ok;
    shape_ok += run.shape_ok;
    rose += run.last_similarity > run.first_similarity;
    if (!o.out_dir.empty()) {
      cv::Mat bgr;
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
      const int prompt_index = static_cast<int>(i) / o.seeds;
      cv::imwrite((o.out_dir / absl::StrCat(prompt_index, "_", run.seed, ".png")).string(), bgr);
      cv::Mat big;
      cv::resize(bgr, big, {o.size * kZoom, o.size * kZoom}, 0, 0, cv::INTER_NEAREST);
      big.copyTo(sheet(cv::Rect((static_cast<int>(i) % o.seeds) * o.size * kZoom, prompt_index * o.size * kZoom,
                                o.size * kZoom, o.size * kZoom)));
    }
    result.runs.push_back(run);
  }
  if (!o.out_dir.empty()) cv::imwrite((o.out_dir / "sheet.png").string(), sheet);
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<shapes_eval::Label> read, shapes_eval::ZeroShotLabels(*models.clip, finals));
  for (size_t i = 0; i < all.size(); ++i) {
    Run& run = result.runs[i];
    run.clip_colour = std::string(shapes::ColourName(read[i].colour));
    run.clip_shape = std::string(shapes::ShapeName(read[i].shape));
    run.clip_colour_ok = read[i].colour == all[i].prompt->colour;
    run.clip_shape_ok = read[i].shape == all[i].prompt->shape;
    clip_colour_ok += run.clip_colour_ok;
    clip_shape_ok += run.clip_shape_ok;
  }
  const double n = static_cast<double>(std::max<size_t>(1, all.size()));
  result.colour_agreement = colour_ok / n;
  result.shape_agreement = shape_ok / n;
  result.similarity_rose = rose / n;
  result.clip_colour_agreement = clip_colour_ok / n;
  result.clip_shape_agreement = clip_shape_ok / n;
  return result;
}

}  // namespace clipserve::gen_eval
