// train-latent-denoiser: trains a generation::LatentDenoiser on a VQGAN's encodings of world scenes and writes
// it into the VQGAN's directory, where generation finds it (JobOptions::denoiser_weight, gen-eval --denoiser).
//
//   build/bin/train-latent-denoiser --vqgan=models/shapes-world/vqgan [--minutes=10] [--count=10000]
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/models/cpu_threads.h"
#include "tools/vqgan_trainer/latent_denoiser_trainer.h"

ABSL_FLAG(std::string, vqgan, "", "VQGAN model directory (config.json, model.safetensors)");
ABSL_FLAG(std::string, out, "", "output file (default: <vqgan>/latent_denoiser.safetensors)");
ABSL_FLAG(double, minutes, 10, "wall-time budget (encoding the scenes included)");
ABSL_FLAG(int64_t, max_steps, 0, "stop after this many steps (0: only the time budget)");
ABSL_FLAG(int, count, 10000, "training scenes to encode");
ABSL_FLAG(int, batch_size, 32, "code grids per step");
ABSL_FLAG(int, width, 64, "hidden channels");
ABSL_FLAG(double, lr, 1e-3, "AdamW learning rate");
ABSL_FLAG(uint64_t, seed, 1, "training seed (< 1000000)");
ABSL_FLAG(double, max_replace, 0.6, "most cells a corruption replaces by random codes (fraction)");
ABSL_FLAG(double, max_jitter, 0.4, "most cells a corruption gives a neighbour's code (fraction)");
ABSL_FLAG(double, max_noise, 1.0, "largest noise a corruption adds (times the codebook's std)");

namespace clipserve {
namespace {

int Run() {
  ConfigureCpuThreads({});
  const std::filesystem::path dir = absl::GetFlag(FLAGS_vqgan);
  if (dir.empty()) {
    std::fprintf(stderr, "train-latent-denoiser: --vqgan is required\n");
    return 2;
  }
  vqgan_trainer::DenoiserTrainOptions o;
  o.out = absl::GetFlag(FLAGS_out);
  if (o.out.empty()) o.out = dir / generation::LatentDenoiser::kFileName;
  o.minutes = absl::GetFlag(FLAGS_minutes);
  o.max_steps = absl::GetFlag(FLAGS_max_steps);
  o.count = absl::GetFlag(FLAGS_count);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.config.width = absl::GetFlag(FLAGS_width);
  o.learning_rate = absl::GetFlag(FLAGS_lr);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.corruption.max_replace = absl::GetFlag(FLAGS_max_replace);
  o.corruption.max_jitter = absl::GetFlag(FLAGS_max_jitter);
  o.corruption.max_noise = absl::GetFlag(FLAGS_max_noise);

  vqgan::VqganModel::Options vo;
  vo.model_dir = dir;
  auto model = vqgan::VqganModel::Load(vo);
  auto report = model.ok() ? vqgan_trainer::TrainLatentDenoiser(**model, o)
                           : absl::StatusOr<vqgan_trainer::DenoiserTrainReport>(model.status());
  if (!report.ok()) {
    std::fprintf(stderr, "train-latent-denoiser: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  std::printf(
      "wrote %s: %lld steps in %.1f min, loss %.4f; held-out cells kept %.1f %% (clean), restored %.1f %% "
      "(corrupted at half the maxima)\n",
      o.out.string().c_str(), static_cast<long long>(report->steps), report->minutes, report->final_loss,
      100 * report->clean_accuracy, 100 * report->corrupted_accuracy);
  return 0;
}

}  // namespace
}  // namespace clipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("train-latent-denoiser --vqgan=DIR [--minutes=10] [--out=FILE]");
  absl::ParseCommandLine(argc, argv);
  return clipserve::Run();
}
