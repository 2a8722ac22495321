// train-vqgan: trains (or resumes) the shapes-world VQGAN.
//
//   build/bin/train-vqgan --out=models/shapes-world/vqgan --minutes=60 [--resume] [--seed=1]
//                         [--ch_mult=1,2,4] [--n_embed=512]
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "server/models/cpu_threads.h"
#include "tools/vqgan_trainer/vqgan_trainer.h"

ABSL_FLAG(std::string, out, "", "output directory (config.json, model.safetensors, train_state.*)");
ABSL_FLAG(double, minutes, 60, "wall-time budget");
ABSL_FLAG(int64_t, max_steps, 0, "stop after this many steps (0: only the time budget)");
ABSL_FLAG(uint64_t, seed, 1, "training seed (< 1000000)");
ABSL_FLAG(int, batch_size, 16, "images per step");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate");
ABSL_FLAG(bool, resume, false, "continue from --out");
ABSL_FLAG(std::vector<std::string>, ch_mult, {},
          "channel multipliers per level, comma-separated (default 1,2,4: downsampling factor 2^(levels-1) = 4); "
          "ignored with --resume");
ABSL_FLAG(int, n_embed, 0, "codebook size (default 512); ignored with --resume");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("train-vqgan --out=DIR [--minutes=60] [--resume]");
  absl::ParseCommandLine(argc, argv);
  // Convolutions run on oneDNN over torch's OpenMP pool: the default one-pool policy fits training too.
  const auto threads = clipserve::ConfigureCpuThreads({});
  std::printf("threads: intra-op %d, BLAS %d\n", threads.intra_op_threads, threads.blas_threads);
  clipserve::vqgan_trainer::TrainOptions o;
  o.out = absl::GetFlag(FLAGS_out);
  o.minutes = absl::GetFlag(FLAGS_minutes);
  o.max_steps = absl::GetFlag(FLAGS_max_steps);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.learning_rate = absl::GetFlag(FLAGS_lr);
  o.resume = absl::GetFlag(FLAGS_resume);
  const std::vector<std::string> ch_mult = absl::GetFlag(FLAGS_ch_mult);
  if (!ch_mult.empty()) {
    o.config.ddconfig.ch_mult.clear();
    for (const std::string& m : ch_mult) {
      int64_t value = 0;
      if (!absl::SimpleAtoi(m, &value)) {
        std::fprintf(stderr, "train-vqgan: --ch_mult: '%s' is not an integer (want e.g. 1,2,4,4)\n", m.c_str());
        return 2;
      }
      o.config.ddconfig.ch_mult.push_back(value);
    }
  }
  if (absl::GetFlag(FLAGS_n_embed) != 0) o.config.n_embed = absl::GetFlag(FLAGS_n_embed);
  if (o.out.empty()) {
    std::fprintf(stderr, "train-vqgan: --out is required\n");
    return 2;
  }
  auto report = clipserve::vqgan_trainer::Train(o);
  if (!report.ok()) {
    std::fprintf(stderr, "train-vqgan: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  std::printf("done: %lld steps in %.1f min, loss %.4f, held-out PSNR %.2f dB, codebook used %.0f%%\n",
              static_cast<long long>(report->steps), report->minutes, report->final_loss, report->eval_psnr_db,
              100 * report->codebook_used);
  return 0;
}
