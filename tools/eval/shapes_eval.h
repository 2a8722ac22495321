// Evaluation of the shipped shapes-world models on fresh held-out scenes (evaluation seeds only), through
// the same code paths the server uses: ClipBundle (tokenizer + model + preprocessing) and VqganModel.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include <opencv2/core/mat.hpp>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/generation/cutouts.h"
#include "server/models/clip/clip_bundle.h"
#include "tools/shapes/world.h"

namespace clipserve::shapes_eval {

struct EvalOptions {
  // A directory with clip/ and/or vqgan/ (models/shapes-world).
  std::filesystem::path models;
  // An evaluation seed (≥ shapes::kFirstEvalSeed).
  uint64_t seed = 1'000'000;
  // Held-out images for zero-shot classification and reconstruction; retrieval uses count/40 groups of 40.
  int count = 1000;
  int batch_size = 50;
  // Set: every picture the CLIP sees (zero-shot and retrieval) first goes through generation's cutout
  // augmentations with these options (generation::AugmentLikeCutouts, drawn from `seed`): how much of its
  // knowledge survives what VQGAN+CLIP generation shows it.
  std::optional<generation::CutoutOptions> cutouts;
  // Set: zero-shot accuracy under attack (robust accuracy). Every picture is first moved by a PGD attack —
  // train::AdversarialPixels, adversarial training's own: `steps` signed-gradient steps within an L-infinity ball
  // of `epsilon` pixel units (in (0, 1)), from a random start drawn from `seed` — that raises the cross-entropy
  // of its true (colour, shape) prompt among the colours × shapes prompts. Retrieval stays on the clean
  // pictures. Does not combine with `cutouts`.
  struct Attack {
    double epsilon = 8.0 / 255;
    int steps = 10;
  };
  std::optional<Attack> attack;
};

struct ZeroShot {
  double colour = 0, shape = 0, both = 0;
  // Where shape accuracy is lost: accuracy per true shape and per size class (keys: world names), and for each
  // true shape the counts of the wrong shapes it was taken for.
  std::map<std::string, double> shape_by_shape, shape_by_size;
  std::map<std::string, std::map<std::string, int>> shape_confusions;
};
struct Retrieval {
  double recall_at_1 = 0, recall_at_5 = 0;
};
struct Reconstruction {
  double psnr_db = 0;
  double codebook_used = 0;  // fraction of codebook entries used by the encoded images
};

struct EvalResult {
  std::optional<ZeroShot> zero_shot;    // absent without clip/; under attack when EvalOptions::attack is set
  std::optional<Retrieval> retrieval;   // absent without clip/
  std::optional<Reconstruction> vqgan;  // absent without vqgan/
  std::optional<EvalOptions::Attack> attack;  // the attack zero_shot was measured under
  // {"zero_shot": {...}, "retrieval": {...}, "vqgan": {...}} with null for what is absent. zero_shot holds
  // colour, shape and both, and with `breakdown` also shape_by_shape, shape_by_size and shape_confusions; under
  // an attack, also "attack": {"epsilon", "steps"}.
  nlohmann::json ToJson(bool breakdown = false) const;
};

absl::StatusOr<EvalResult> Evaluate(const EvalOptions& options);

// The CLIP's zero-shot reading of arbitrary pictures (RGB, CV_8UC3, any size; the server's preprocessing, no
// cutouts): for each, the (colour, shape) pair of the world whose prompt shapes::ZeroShotPrompt is nearest.
struct Label {
  shapes::Colour colour;
  shapes::Shape shape;
};
absl::StatusOr<std::vector<Label>> ZeroShotLabels(const clip::ClipBundle& bundle, const std::vector<cv::Mat>& rgb);

}  // namespace clipserve::shapes_eval
