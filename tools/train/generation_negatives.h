// Generation's own pictures as negatives for CLIP training: a set of persistent VQGAN+CLIP generations
// ("chains"), steered by a copy of the CLIP being trained, each advanced one optimisation step per training step.
// Their current pictures join the batch captioned "a red blob" (the prompt's colour; BlobLabelOf), so the CLIP
// learns to reject exactly the lumps that generation with it draws — the lumps it would otherwise read as the
// prompt's shape (docs/generation.md, "Quality") — and, as it is refreshed, the chains move on to whatever it
// accepts next. Real pictures keep their true captions, so a real star stays a star.
//
//   CLIPSERVE_ASSIGN_OR_RETURN(auto chains, GenerationNegatives::Create(options, clip_dir, vqgan, seed));
//   each step: chains->Refresh(model) (every few steps); auto neg = chains->Advance(); append neg to the batch
//
// Single-threaded: one trainer owns it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "server/generation/generator.h"
#include "server/models/clip/clip_model.h"
#include "server/models/vqgan/vqgan.h"
#include "tools/shapes/world.h"

namespace clipserve::train {

struct GenerationNegativeOptions {
  int chains = 0;  // generations running at once (0: none)
  int chain_steps = 40;  // a chain restarts from new random codes and a new prompt after this many steps
  int min_steps = 10;    // its picture is a negative from this step on (before: still mostly the random start)
  float learning_rate = 0.1f;
  // The chains' cutouts (cut_size is the CLIP's): the augmentations of the generation the CLIP is being trained
  // for, and fewer of them per step than a request's, as the chains step once per training step.
  generation::CutoutOptions cutouts = {.cutn = 8};
  // JobOptions::denoiser_weight of the chains (needs `priors.denoiser` in Create): with it on they draw the
  // clean lumps that generation with the denoiser draws, and the CLIP learns to reject those.
  float denoiser_weight = 0;
};

class GenerationNegatives {
 public:
  // `clip_dir`: a CLIP directory with the architecture, tokenizer and preprocessing of the trained model (its
  // weights are replaced by Refresh). `vqgan`: the VQGAN the chains run on (shared: the trainer's VQGAN
  // reconstructions use the same one; its const methods are thread-safe); `priors`: that VQGAN's latent priors.
  // INVALID_ARGUMENT for bad options, a null VQGAN, a CLIP image size that is not a multiple of the VQGAN's
  // factor, or a denoiser weight without a denoiser.
  static absl::StatusOr<std::unique_ptr<GenerationNegatives>> Create(
      const GenerationNegativeOptions& options, const std::filesystem::path& clip_dir,
      std::shared_ptr<const vqgan::VqganModel> vqgan, uint64_t seed, generation::LatentPriors priors = {});

  // Copies the trained weights into the chains' CLIP (same architecture). Prompts of running chains keep the
  // embeddings they were created with until they restart.
  absl::Status Refresh(const clip::ClipModel& model);

  struct Negatives {
    at::Tensor images;  // [N, 3, S, S] float in [0, 1], S = the CLIP's image size; N ≤ chains
    std::vector<shapes::Colour> colours;  // the prompt colour of each
  };
  // One optimisation step of every chain (restarting finished ones first); the pictures of the chains that have
  // done at least min_steps steps.
  absl::StatusOr<Negatives> Advance();

  // The chains' CLIP (for tests).
  const clip::ClipModel& clip() const { return *clip_->model; }

 private:
  struct Chain {
    std::unique_ptr<generation::Job> job;
    shapes::Colour colour = shapes::Colour::kRed;
  };
  GenerationNegatives(GenerationNegativeOptions options, uint64_t seed) : options_(std::move(options)), seed_(seed) {}
  absl::Status Start(Chain& chain, int steps);

  GenerationNegativeOptions options_;
  uint64_t seed_;
  uint64_t started_ = 0;  // chains started so far: the index of the next one's prompt and seed
  std::shared_ptr<clip::ClipBundle> clip_;
  generation::GenerationModels models_;
  std::vector<Chain> chains_;
};

}  // namespace clipserve::train
