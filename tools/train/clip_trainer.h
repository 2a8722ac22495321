// The shapes-world CLIP trainer (issue 4, item 3): trains the server's own clip::ClipModel (libtorch autograd, no
// second copy of the architecture) contrastively on fresh scenes from tools/shapes, and writes a Hugging Face
// CLIP directory (config.json, model.safetensors, vocab.json, merges.txt, preprocessor_config.json) that
// clip::ClipBundle::Load serves as is.
//
//   ClipTrainerOptions options{.out_dir = "/tmp/shapes-clip", .minutes = 20};
//   absl::StatusOr<TrainSummary> summary = TrainClip(options);
//
// Steps. (1) A byte-level BPE is trained on world captions (training seeds only, plus the zero-shot prompts) and
// written to out_dir; the context length is the longest corpus caption's token count plus a margin. (2) A
// random ClipModel is created from the options. (3) AdamW with warm-up and cosine decay on batches of fresh
// samples with strong geometric / photometric augmentations (no hue change: colour is a label) and label-level
// soft targets. (4) A zero-shot evaluation on held-out evaluation seeds through the normal prompt path is
// appended to out_dir/learning_curve.jsonl every `eval_every` steps. (5) Checkpoints (model via
// ClipModel::Save, optimizer state + step + trained time in out_dir/train_state.pt) every
// `checkpoint_minutes` and at the end; `resume` continues from them.
//
// Budget. `minutes` is the TOTAL training time across resumed runs (the cosine schedule runs over it), unless
// `max_steps` > 0, in which case the schedule runs over max_steps and training stops there (or at `minutes`,
// whichever is first).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/serialize/archive.h>

#include "absl/status/statusor.h"
#include "server/generation/cutouts.h"
#include "server/models/clip/clip_model.h"
#include "server/models/clip/config.h"
#include "server/models/clip/preprocess.h"
#include "tools/shapes/world.h"
#include "tools/train/generation_negatives.h"

namespace clipserve::train {

struct ClipTrainerOptions {
  std::filesystem::path out_dir;
  double minutes = 20;  // total training time (across resumes)
  int64_t max_steps = 0;  // 0: bounded by time only
  uint64_t seed = 1;  // training-world seed (< shapes::kFirstEvalSeed) and model init seed
  bool resume = false;
  // Fine-tuning: start from the weights of this CLIP directory (with its tokenizer, preprocessing and
  // architecture, which are copied to out_dir; the model and tokenizer options below are then ignored) instead
  // of a random model. The optimiser and the schedule start afresh. Not used when resuming.
  std::filesystem::path init_from;
  // With init_from: the ViT's patch size to fine-tune at (0: init_from's). RepatchVision resizes the weights.
  int init_patch_size = 0;

  // Model.
  int image_size = 64;
  int patch_size = 8;
  int vision_width = 192;
  int vision_layers = 6;
  int vision_heads = 6;
  int text_width = 128;
  int text_layers = 4;
  int text_heads = 4;
  int projection_dim = 128;
  int context_margin = 4;  // max_position_embeddings = longest caption tokens + margin

  // Tokenizer.
  int bpe_vocab_size = 1024;
  int bpe_corpus_scenes = 3000;

  // Optimisation.
  int batch_size = 128;
  double lr = 2e-3;
  double min_lr_fraction = 0.02;  // the cosine decays to lr * this
  int warmup_steps = 100;
  double weight_decay = 0.05;
  double max_logit_scale = 100;  // exp(logit_scale) is clamped to this
  bool augment = true;
  double augment_probability = 0.85;  // the rest of the batch is seen as drawn
  // Each batch is `colour_groups` groups whose items share one shape colour (distinct colours per group), so
  // that most negatives of an item differ from it only in shape: colour is learnt in a few hundred steps, and
  // after that only same-coloured negatives carry a gradient. 0: every item drawn independently.
  int colour_groups = 4;
  // This fraction of each colour group (rounded down) is fields: plain or noisy pictures of the group's colour
  // with no shape, captioned "a red background" (shapes::SceneSampler::SampleField), each colour one label of
  // its own. They are negatives of every shape caption of that colour, so colour alone cannot match "a red
  // circle": generation steered by this CLIP must draw the shape, not fill the picture with red.
  double field_fraction = 0;
  // This fraction of each colour group (rounded down, after the fields) is blobs: random lumps of the group's
  // colour that are none of the ten shapes, captioned "a red blob" (shapes::SceneSampler::SampleBlob), each
  // colour one label of its own. They are negatives of every shape caption of that colour, so that a lump with
  // bumps does not pass for a star: generation steered by a CLIP trained without them draws such lumps, which
  // that CLIP reads as the prompt's shape and the judge does not (docs/generation.md). fields + blobs ≤ 1.
  double blob_fraction = 0;
  // > 0: the vision position embeddings start from a 2-D sine-cosine table times this (see SinCosPositions2d);
  // 0: from N(0, 0.02) as transformers initialises them.
  double sincos_position_scale = 0;
  // true: a caption is a positive for every picture it is true of — colour and shape, and also the size,
  // background and position when it names them (CaptionTargets) — so "a red circle on a white background" is a
  // negative for a red circle on blue, and the towers must learn backgrounds, sizes and positions. false: every
  // pair with the same (colour, shape) label is a positive, whatever else the caption says.
  bool caption_targets = false;
  // With caption_targets: the parts of a caption that count. Augmentation moves and zooms the shape, so size and
  // position named by a caption are often false of the augmented picture; the background survives it.
  shapes::CaptionParts caption_target_parts = {.size = true, .background = true, .position = true};
  // > 0: also keep an exponential moving average of the weights (WeightAverage, this decay per step), evaluate it
  // beside the trained weights (the curve's ema_* keys) and write it at the end as a second complete CLIP
  // directory, out_dir/ema. 0: no average.
  double ema_decay = 0;
  // This share of the batch (drawn per item) then also goes through generation's cutout augmentations
  // (generation::AugmentLikeCutouts with the server's defaults: affine, perspective 0.7, colour jitter without
  // hue, erasing up to a third of the picture, noise), so that the CLIP keeps its shape knowledge on what
  // VQGAN+CLIP generation shows it: a CLIP trained without them names the shape of 21 % of such pictures
  // (87 % of plain ones), and its gradients then steer generation towards the colour only. With a share > 0 the
  // evaluation also scores the held-out images after one such augmentation (the curve's cut_* keys).
  double generation_cutouts = 0;
  // The augmentations of those cutouts (cutn and cut_size are set by the trainer).
  generation::CutoutOptions generation_cutout_options;
  // Adversarial training (Madry et al. 2018): this share of every batch (drawn per item) is replaced by the
  // picture moved, within an L-infinity ball of `adversarial_epsilon` (in [0, 1] pixel units, per channel), in
  // the direction that most raises the contrastive loss against the batch's captions, found by
  // `adversarial_steps` signed-gradient steps from a random start (one step: Wong et al. 2020's fast variant).
  // A model trained so that small pixel changes cannot move its reading has gradients that look like the
  // classes (Santurkar et al. 2019): generation's gradients then draw shapes rather than whatever small
  // changes this CLIP happens to read as a shape. 0: off.
  double adversarial_epsilon = 0;
  int adversarial_steps = 1;
  double adversarial_fraction = 1;
  // Generation's own pictures as negatives (GenerationNegatives): with chains > 0, that many VQGAN+CLIP
  // generations on the VQGAN of `generation_vqgan_dir`, steered by a copy of this CLIP (refreshed every
  // `generation_negatives_refresh_every` steps), take one step per training step, and their pictures join every
  // batch captioned "a <prompt colour> blob". Needs init_from or resume (a CLIP that already reads the world).
  // The chains depend on the run's history, so a resumed run does not repeat an uninterrupted one exactly.
  GenerationNegativeOptions generation_negatives;
  int generation_negatives_refresh_every = 10;
  // This share of the shape pictures (drawn per item) is replaced by its reconstruction through the VQGAN of
  // `generation_vqgan_dir` (loaded once, shared with the chains), caption unchanged, so that the VQGAN's look
  // alone does not mark a picture as one of the chains' negatives. 0: off.
  double vqgan_reconstructions = 0;
  std::filesystem::path generation_vqgan_dir;  // the VQGAN of both (models/shapes-world/vqgan)
  // > 0: the loss also pulls every picture's embedding towards its own caption's, this weight times the mean of
  // 1 − cos(picture, caption). The contrastive loss alone is satisfied once a caption beats the batch's others by
  // a margin, which leaves the world's pictures well below the best cosine a caption can get (a mean of 0.870 for
  // the shipped CLIP): generation climbs past them to pictures unlike the world's (docs/generation.md, "Does the
  // CLIP prefer the true picture?"). The term brings them near 1 (0.964 after 30 minutes at weight 2); generation
  // still draws lumps with it (the twenty-first run, docs/shipped-models.md). 0: off.
  double alignment_weight = 0;

  // Logging, evaluation, checkpoints.
  int log_every = 25;
  int eval_every = 100;  // also at the end; 0: only at the end
  int eval_count = 256;
  uint64_t eval_seed = shapes::kFirstEvalSeed + 17;
  double checkpoint_minutes = 5;
  bool verbose = true;  // progress lines on stderr
};

struct EvalResult {
  double colour = 0;
  double shape = 0;
  double both = 0;
  double positive_cosine = 0;  // mean cosine of a picture with its own zero-shot prompt
};

struct TrainSummary {
  int64_t start_step = 0;  // step the run started from (> 0 after resume)
  int64_t steps = 0;       // total steps done (across resumes)
  double trained_seconds = 0;
  double steps_per_second = 0;  // this run
  std::vector<double> losses;   // per step of this run
  EvalResult final_eval;
  EvalResult final_ema_eval;  // of the weight average (ema_decay > 0 only)
};

// An exponential moving average of a set of parameters (Polyak averaging): after each optimizer step
// average = d * average + (1 - d) * parameter with d = min(decay, (1 + n) / (10 + n)) for the n-th update, so the
// first updates do not keep the random initial weights. Training steps move the weights noisily; the average is
// often the better model at the end of a run.
class WeightAverage {
 public:
  // Starts the average at the parameters' current values.
  WeightAverage(std::vector<at::Tensor> parameters, double decay);

  void Update();
  // Exchanges the parameters' values with the averages (twice restores them): evaluate or save the average
  // through the model that owns the parameters.
  void Swap();

  int64_t updates() const { return updates_; }
  const std::vector<at::Tensor>& averages() const { return averages_; }

  // The averages and the update count under "ema/" in a training checkpoint.
  void Save(torch::serialize::OutputArchive& archive) const;
  // Reads them back; false (and nothing changed) if the archive has no average, as one written without it.
  bool Load(torch::serialize::InputArchive& archive);

 private:
  std::vector<at::Tensor> parameters_;
  std::vector<at::Tensor> averages_;
  double decay_;
  int64_t updates_ = 0;
};

// Runs the whole pipeline described above.
absl::StatusOr<TrainSummary> TrainClip(const ClipTrainerOptions& options);

// The model configuration the options describe (vocab_size / context / special ids as given).
clip::ClipConfig MakeClipConfig(const ClipTrainerOptions& options, int vocab_size, int context_length,
                                int bos_id, int eos_id);

// What a training pair says: the picture's label and attributes, and which attributes its caption names.
struct PairFacts {
  int label = 0;          // LabelOf / FieldLabelOf
  int size = -1;          // the picture's size class, background phrase and position (-1: none, as a field)
  int background = -1;
  int position = -1;
  shapes::CaptionParts named;  // what the caption names besides the label
};
// The facts of a world example; the caption counts as naming only those of its parts that `parts` allows
// (none: the label only).
PairFacts FactsOf(const shapes::Example& example, const shapes::CaptionParts& parts);

// T[i][j] = 1 when caption j is true of picture i: same label, and the same size, background and position
// wherever caption j names them; else 0. Every caption is true of its own picture (T[i][i] = 1). Not symmetric
// in general ("a red circle" is true of a red circle on blue; "a red circle on a white background" is not).
at::Tensor CaptionTargets(const std::vector<PairFacts>& facts);

// Soft cross-entropy of image/text logits [B, B], both directions: image i against the captions true of it,
// caption j against the pictures it is true of. `targets` [B, B] is > 0 where caption j is true of picture i
// (CaptionTargets); each direction's rows are normalised to sum to 1.
at::Tensor ContrastiveLoss(const at::Tensor& logits_per_image, const at::Tensor& targets);

// The adversarial pictures of adversarial training: every row of `pixels` (normalised by `pre`) where
// `selected` [B] bool is true moves, by `steps` signed-gradient steps of 2.5 ε / steps (1.25 ε for one step)
// from a uniform random start in the ε-ball, to raise its image → text cross-entropy against the batch's
// captions (`text_features` [B, P], normalised, held fixed; `targets` [B, B] as for ContrastiveLoss; logits
// `scale` · cosine); each step is projected back into the ε-ball (ε in [0, 1] pixel units, divided by the
// channel's std) and into the pixel range [0, 1]. Other rows are returned as given. Leaves no gradient on the
// model's parameters; the result is detached.
at::Tensor AdversarialPixels(const clip::ClipModel& model, const at::Tensor& pixels, const at::Tensor& text_features,
                             const at::Tensor& targets, double scale, const clip::PreprocessConfig& pre,
                             double epsilon, int steps, const at::Tensor& selected, at::Generator generator);

// The label id of a (colour, shape) pair: colour * kShapes.size() + shape.
int LabelOf(shapes::Colour colour, shapes::Shape shape);
// The label id of a field (a picture of one colour and no shape): past every LabelOf.
int FieldLabelOf(shapes::Colour colour);
// The label id of a blob (a lump of one colour that is none of the shapes): past every FieldLabelOf.
int BlobLabelOf(shapes::Colour colour);

// The 2-D sine-cosine position table of MAE for a grid x grid ViT of the given width (a multiple of 4), with a
// zero row first for the class token: [1 + grid * grid, width]; patch (row r, column c) gets
// sin(r w_k), cos(r w_k), sin(c w_k), cos(c w_k) for w_k = 10000^(-k / (width / 4)).
at::Tensor SinCosPositions2d(int grid, int width);

// `from` with its ViT re-patched to `patch_size` (FlexiViT-style), for fine-tuning at a finer or coarser token
// grid: every weight copied except the patch embedding, resized to patch_size² by area averaging (finer) or
// bilinearly (coarser) and scaled by (old / new)² so that a flat patch gives each token the embedding it gave
// before, and the grid's position embeddings, resized bilinearly (the class token's row kept). INVALID_ARGUMENT
// unless patch_size divides the image size.
absl::StatusOr<std::shared_ptr<clip::ClipModel>> RepatchVision(const clip::ClipModel& from, int patch_size);

// Strong augmentation of an 8-bit RGB image that never changes what a caption says about it: a random resized
// crop (side 0.7-1.1 of the image, aspect 0.85-1.18, zooming out as well as in) rotated by up to ±10° and
// placed anywhere that keeps the whole shape (`bounds`, {x0, y0, x1, y1} in image fractions, as
// shapes::SceneBounds gives) at least 2 % inside the output, so a crop never cuts a shape into another one;
// brightness/contrast jitter applied equally to all channels (no hue change: colour is a label); Gaussian
// noise. Then ToTensor + Normalize as clip::Preprocess does, written CHW into `out` (3 * S * S floats). With
// `augment` false only the normalisation (equal to clip::Preprocess at identity resize).
void AugmentAndNormalize(const cv::Mat& rgb, const std::array<double, 4>& bounds, const clip::PreprocessConfig& pre,
                         bool augment, shapes::Rng& rng, float* out);

}  // namespace clipserve::train
