// Training of the shipped shapes-world VQGAN: the taming VQ autoencoder (server/models/vqgan, the same code
// the server runs) learned on fresh world images, with a reconstruction loss (L1 + MSE + an edge term for
// sharpness), the codebook and commitment losses of VectorQuantizer2, and dead-code restarts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/models/vqgan/config.h"
#include "server/models/vqgan/vqgan.h"
#include "tools/shapes/world.h"

namespace clipserve::vqgan_trainer {

struct TrainOptions {
  std::filesystem::path out;
  // The architecture (used when not resuming).
  vqgan::VqganConfig config = DefaultConfig();
  uint64_t seed = 1;  // a training seed (< shapes::kFirstEvalSeed)
  int batch_size = 16;
  double learning_rate = 1e-3;
  int warmup_steps = 100;
  // Stop after this much training time or this many steps (0 = no step limit), whichever comes first; both
  // count from the start of the training, earlier runs of a resumed one included. The learning-rate schedule
  // runs over max_steps when it is set, else over the time.
  double minutes = 60;
  int64_t max_steps = 0;
  double beta = 0.25;          // commitment weight
  double edge_weight = 0.5;    // L1 between image gradients
  int restart_every = 100;     // steps between dead-code restarts (0 disables)
  double checkpoint_minutes = 5;
  int eval_every = 200;        // steps between held-out evaluations
  int eval_count = 64;
  bool resume = false;
  // Progress lines (default: stdout).
  std::function<void(const std::string&)> log;

  static vqgan::VqganConfig DefaultConfig();
};

struct TrainReport {
  int64_t steps = 0;
  double minutes = 0;
  double final_loss = 0;
  double eval_psnr_db = 0;
  double codebook_used = 0;
};

// Trains (or resumes) into options.out: config.json + model.safetensors (loadable by VqganModel::Load),
// train_state.pt (optimizer and step), learning_curve.jsonl (one line per evaluation).
absl::StatusOr<TrainReport> Train(const TrainOptions& options);

// Mean PSNR (dB) of `model`'s reconstructions of the first `count` held-out world scenes at its resolution:
// the evaluation Train() logs and reports (TrainReport::eval_psnr_db with count = eval_count).
absl::StatusOr<double> HeldOutPsnr(const vqgan::VqganModel& model, int count);

// The code indices [count, h, w] (int64, CPU) of `model`'s encodings of world scenes 0 .. count − 1 of the
// sampler `scenes` (its render.image_size is set to the model's resolution): the data a generation::LayoutPrior
// is fitted to (fit-layout-prior).
absl::StatusOr<at::Tensor> EncodeWorldCodes(const vqgan::VqganModel& model, shapes::SceneSamplerOptions scenes,
                                            int count);

}  // namespace clipserve::vqgan_trainer
