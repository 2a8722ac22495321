// A prior over the layout of a VQGAN's codes: how often each pair of codes sits side by side (and one above the
// other) in the VQGAN's encodings of real pictures. Generation can add its energy to the loss
// (JobOptions::layout_prior_weight) so that the latent keeps to code layouts real pictures have — flat grounds,
// whole edges — instead of any arrangement that satisfies the CLIP. The reference has no such term; it is
// this project's (docs/generation.md, "Quality").
//
//   at::Tensor codes = ...;  // [N, h, w] code indices of N encoded pictures
//   auto prior = LayoutPrior::Fit(codes, vqgan.codebook(), {.smoothing = 0.01});
//   prior->Save(vqgan_dir / LayoutPrior::kFileName);
//   ...
//   at::Tensor e = prior->Energy(z, vqgan.codebook());  // [B], differentiable w.r.t. z
//
// Immutable after Fit or Load; Energy may be called from any number of threads at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <utility>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"

namespace clipserve::generation {

struct LayoutPriorOptions {
  // Added to every pair's count before normalising, so that pairs never seen keep a finite (large) energy.
  double smoothing = 0.01;
};

class LayoutPrior {
 public:
  // The prior's file inside a VQGAN model directory (GenerationModels::Load reads it when present).
  static constexpr const char* kFileName = "layout_prior.safetensors";

  // Counts the horizontal and vertical neighbour pairs of `codes` ([N, h, w] integers in [0, n_embed), h and w
  // >= 2). `codebook` [n_embed, embed_dim] sets the soft assignment's temperature: the mean squared distance
  // from each code that occurs in `codes` to its nearest other code. INVALID_ARGUMENT for bad shapes or indices.
  static absl::StatusOr<std::unique_ptr<LayoutPrior>> Fit(const at::Tensor& codes, const at::Tensor& codebook,
                                                          const LayoutPriorOptions& options = {});
  // Reads a file written by Save, onto `device`. INVALID_ARGUMENT when it lacks a tensor or shapes disagree.
  static absl::StatusOr<std::unique_ptr<LayoutPrior>> Load(const std::filesystem::path& path,
                                                           at::Device device = at::kCPU);
  absl::Status Save(const std::filesystem::path& path) const;

  int64_t n_embed() const { return horizontal_.size(0); }
  double temperature() const { return temperature_; }

  // The mean over neighbour pairs (horizontal and vertical) of −log P(pair), where each position's code is the
  // soft assignment softmax(−‖z − e_k‖² / temperature) over the codebook: [B] for z [B, embed_dim, h, w]
  // (h, w >= 2; w or h of 1 contribute no pairs in that direction). Differentiable w.r.t. z.
  at::Tensor Energy(const at::Tensor& z, const at::Tensor& codebook) const;
  // The same for hard codes [B, h, w]: the mean −log P(pair) of the pairs that occur (for reporting).
  at::Tensor CodeEnergy(const at::Tensor& codes) const;

 private:
  LayoutPrior(at::Tensor horizontal, at::Tensor vertical, double temperature)
      : horizontal_(std::move(horizontal)), vertical_(std::move(vertical)), temperature_(temperature) {}

  at::Tensor horizontal_;  // [K, K] joint probability of (left, right), sums to 1
  at::Tensor vertical_;    // [K, K] joint probability of (above, below), sums to 1
  double temperature_;
};

}  // namespace clipserve::generation
