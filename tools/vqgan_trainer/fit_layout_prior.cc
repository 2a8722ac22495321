// fit-layout-prior: fits a generation::LayoutPrior (which codes of a VQGAN sit next to which in real pictures)
// to the VQGAN's encodings of world scenes, and writes it into the VQGAN's directory, where generation finds it
// (JobOptions::layout_prior_weight, gen-eval --layout_prior).
//
//   build/bin/fit-layout-prior --vqgan=models/shapes-world/vqgan [--count=20000] [--smoothing=0.01]
//                              [--plain_backgrounds]
#include <cstdio>
#include <string>

#include <ATen/ATen.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/generation/layout_prior.h"
#include "server/models/cpu_threads.h"
#include "tools/vqgan_trainer/vqgan_trainer.h"

ABSL_FLAG(std::string, vqgan, "", "VQGAN model directory (config.json, model.safetensors)");
ABSL_FLAG(std::string, out, "", "output file (default: <vqgan>/layout_prior.safetensors)");
ABSL_FLAG(int, count, 20000, "training scenes to encode");
ABSL_FLAG(uint64_t, seed, 1, "training scene seed (< 1000000)");
ABSL_FLAG(double, smoothing, 0.01, "added to every pair count");
ABSL_FLAG(int, eval_count, 1000, "held-out scenes to report the prior's energy on");
ABSL_FLAG(bool, plain_backgrounds, false,
          "fit to scenes on plain backgrounds only (no gradients, no noise), for a prior that favours flat grounds");

namespace clipserve {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "fit-layout-prior: %s\n", std::string(status.message()).c_str());
  return 1;
}

int Run() {
  ConfigureCpuThreads({});
  const std::filesystem::path dir = absl::GetFlag(FLAGS_vqgan);
  if (dir.empty()) {
    std::fprintf(stderr, "fit-layout-prior: --vqgan is required\n");
    return 2;
  }
  std::filesystem::path out = absl::GetFlag(FLAGS_out);
  if (out.empty()) out = dir / generation::LayoutPrior::kFileName;

  vqgan::VqganModel::Options vo;
  vo.model_dir = dir;
  auto model = vqgan::VqganModel::Load(vo);
  if (!model.ok()) return Fail(model.status());
  shapes::SceneSamplerOptions scenes;
  scenes.seed = absl::GetFlag(FLAGS_seed);
  if (absl::GetFlag(FLAGS_plain_backgrounds)) {
    scenes.plain_probability = 1;
    scenes.gradient_probability = 0;
  }
  auto codes = vqgan_trainer::EncodeWorldCodes(**model, scenes, absl::GetFlag(FLAGS_count));
  if (!codes.ok()) return Fail(codes.status());
  auto prior =
      generation::LayoutPrior::Fit(*codes, (*model)->codebook(), {.smoothing = absl::GetFlag(FLAGS_smoothing)});
  if (!prior.ok()) return Fail(prior.status());
  if (absl::Status s = (*prior)->Save(out); !s.ok()) return Fail(s);

  // How the prior tells pictures from noise: its energy on held-out scenes against random codes.
  shapes::SceneSamplerOptions eval_scenes = scenes;
  eval_scenes.split = shapes::Split::kEval;
  eval_scenes.seed = shapes::kFirstEvalSeed;
  auto held_out = vqgan_trainer::EncodeWorldCodes(**model, eval_scenes, absl::GetFlag(FLAGS_eval_count));
  if (!held_out.ok()) return Fail(held_out.status());
  const at::Tensor random = at::randint((*prior)->n_embed(), held_out->sizes(), at::kLong);
  const int used = at::bincount(codes->reshape(-1), {}, (*prior)->n_embed()).gt(0).sum().item<int>();
  std::printf("wrote %s: %lld scenes, %d of %lld codes used, temperature %.4g\n", out.string().c_str(),
              static_cast<long long>(codes->size(0)), used, static_cast<long long>((*prior)->n_embed()),
              (*prior)->temperature());
  std::printf("energy (mean -log P(pair)): held-out scenes %.3f, random codes %.3f\n",
              (*prior)->CodeEnergy(*held_out).mean().item<double>(),
              (*prior)->CodeEnergy(random).mean().item<double>());
  return 0;
}

}  // namespace
}  // namespace clipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("fit-layout-prior --vqgan=DIR [--count=20000] [--smoothing=0.01] [--out=FILE]");
  absl::ParseCommandLine(argc, argv);
  return clipserve::Run();
}
