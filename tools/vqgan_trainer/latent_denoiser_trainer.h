// Training of a generation::LatentDenoiser for a VQGAN: the VQGAN encodes world scenes to code grids; each step
// corrupts a batch of them the ways a generation's latent goes wrong — cells replaced by random codes, cells
// taking a neighbour's code (ragged edges), Gaussian noise on the latent — and teaches the network, by
// cross-entropy, the clean code of every cell.
#pragma once

#include <cstdint>
#include <filesystem>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "server/generation/latent_denoiser.h"
#include "server/models/vqgan/vqgan.h"

namespace clipserve::vqgan_trainer {

struct CorruptionOptions {
  double max_replace = 0.6;  // each sample replaces a fraction U(0, max_replace) of its cells by random codes
  double max_jitter = 0.4;   // ... and gives a fraction U(0, max_jitter) of them a random 4-neighbour's code
  double max_noise = 1.0;    // ... and adds noise of standard deviation U(0, max_noise) × the codebook's std
};

// The corrupted latents [B, embed_dim, h, w] (float32) for clean codes [B, h, w], drawn from `generator`.
at::Tensor CorruptLatents(const at::Tensor& codes, const at::Tensor& codebook, const CorruptionOptions& options,
                          at::Generator& generator);

struct DenoiserTrainOptions {
  std::filesystem::path out;                // the file to write (LatentDenoiser::Save)
  generation::LatentDenoiserConfig config;  // embed_dim and n_embed are taken from the VQGAN
  CorruptionOptions corruption;
  int count = 10000;  // training scenes encoded once, at the start
  double minutes = 10;
  int64_t max_steps = 0;  // 0: only the time budget
  int batch_size = 32;
  double learning_rate = 1e-3;
  uint64_t seed = 1;
  int eval_count = 500;  // held-out scenes for the report
};

struct DenoiserTrainReport {
  int64_t steps = 0;
  double minutes = 0;
  double final_loss = 0;          // mean cross-entropy of the last 50 steps
  double clean_accuracy = 0;      // held-out cells whose clean latent it maps to its own code
  double corrupted_accuracy = 0;  // held-out cells it restores from a corruption at half the maxima
};

absl::StatusOr<DenoiserTrainReport> TrainLatentDenoiser(const vqgan::VqganModel& model,
                                                        const DenoiserTrainOptions& options);

}  // namespace clipserve::vqgan_trainer
