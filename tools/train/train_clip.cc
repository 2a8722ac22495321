// train-clip: trains the shapes-world CLIP (see clip_trainer.h) into a Hugging Face CLIP directory.
//
//   build/bin/train-clip --out=DIR --minutes=M [--seed=S] [--resume] [--max_steps=N] [--batch=B] ...
//
// --minutes is the total training time across resumed runs (the cosine schedule spans it); --resume continues
// from DIR/train_state.pt. Progress goes to stderr, the zero-shot learning curve to DIR/learning_curve.jsonl.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "server/models/cpu_threads.h"
#include "tools/gen_eval/cutout_flags.h"
#include "tools/train/clip_trainer.h"

ABSL_FLAG(std::string, out, "", "output CLIP directory (checkpoints and learning_curve.jsonl too)");
ABSL_FLAG(double, minutes, 20, "total training minutes (across resumes)");
ABSL_FLAG(uint64_t, seed, 1, "training-world seed (< 1000000) and model init seed");
ABSL_FLAG(bool, resume, false, "continue from DIR/train_state.pt");
ABSL_FLAG(int64_t, max_steps, 0, "stop after this many steps and run the schedule over them (0: time only)");
ABSL_FLAG(int, batch, 128, "batch size");
ABSL_FLAG(double, lr, 2e-3, "peak learning rate");
ABSL_FLAG(int, warmup_steps, 100, "linear warm-up steps");
ABSL_FLAG(int, vision_width, 192, "ViT width");
ABSL_FLAG(int, vision_layers, 6, "ViT layers");
ABSL_FLAG(int, vision_heads, 6, "ViT heads");
ABSL_FLAG(int, patch, 8, "ViT patch size");
ABSL_FLAG(int, text_width, 128, "text transformer width");
ABSL_FLAG(int, text_layers, 4, "text transformer layers");
ABSL_FLAG(int, text_heads, 4, "text transformer heads");
ABSL_FLAG(int, projection_dim, 128, "embedding size");
ABSL_FLAG(int, eval_every, 100, "zero-shot evaluation every N steps");
ABSL_FLAG(int, eval_count, 256, "held-out images per evaluation");
ABSL_FLAG(double, checkpoint_minutes, 5, "checkpoint interval");
ABSL_FLAG(bool, augment, true, "strong image augmentations");
ABSL_FLAG(double, augment_probability, 0.85, "share of each batch that is augmented");
ABSL_FLAG(int, colour_groups, 4, "same-colour groups per batch (hard negatives on shape; 0: independent draws)");
ABSL_FLAG(double, field_fraction, 0,
          "fraction of each colour group that is shapeless fields of the group's colour (\"a red background\")");
ABSL_FLAG(double, blob_fraction, 0,
          "fraction of each colour group that is blobs: lumps of the group's colour that are none of the shapes "
          "(\"a red blob\"), negatives of the shape captions");
ABSL_FLAG(double, sincos_position_scale, 0,
          "vision position embeddings start from a 2-D sine-cosine table times this (0: N(0, 0.02))");
ABSL_FLAG(bool, caption_targets, false,
          "positives are the pictures a caption is true of (size, background, position where named), not the label");
ABSL_FLAG(std::vector<std::string>, caption_target_parts, std::vector<std::string>({"size", "background", "position"}),
          "with --caption_targets: the parts of a caption that count (comma-separated: size, background, position)");
ABSL_FLAG(double, ema_decay, 0,
          "> 0: also keep an exponential moving average of the weights (this decay per step), written to DIR/ema");
ABSL_FLAG(std::string, init_from, "",
          "fine-tune: start from this CLIP directory's weights, tokenizer and architecture (fresh optimiser and "
          "schedule; the model flags are ignored)");
ABSL_FLAG(int, init_patch, 0,
          "with --init_from: fine-tune its ViT re-patched to this patch size (weights resized; 0: keep its own)");
ABSL_FLAG(double, generation_cutouts, 0,
          "share of each batch that also goes through generation's cutout augmentations (perspective, erasing, ...; "
          "--cut_* flags, defaults: the server's)");
ABSL_FLAG(double, adversarial_epsilon, 0,
          "adversarial training: perturb pictures within this L-infinity radius in [0, 1] pixel units (8/255 = "
          "0.0314) towards a higher loss before training on them (0: off)");
ABSL_FLAG(int, adversarial_steps, 1, "signed-gradient steps of the adversarial perturbation (1: fast, random start)");
ABSL_FLAG(double, adversarial_fraction, 1, "share of every batch that is perturbed");
ABSL_FLAG(int, generation_negatives, 0,
          "> 0: run this many VQGAN+CLIP generations steered by a copy of the CLIP being trained and add their "
          "pictures to every batch as \"a <colour> blob\" (needs --init_from or --resume and --generation_vqgan)");
ABSL_FLAG(std::string, generation_vqgan, "models/shapes-world/vqgan",
          "the VQGAN of --generation_negatives and --vqgan_reconstructions");
ABSL_FLAG(int, generation_negative_steps, 40, "steps of each generation before it restarts with a new prompt");
ABSL_FLAG(int, generation_negative_min_steps, 10, "a generation's picture is a negative from this step on");
ABSL_FLAG(int, generation_negative_cutn, 8, "cutouts per step of those generations");
ABSL_FLAG(double, generation_negative_denoiser, 0,
          "denoiser weight of those generations (needs latent_denoiser.safetensors in --generation_vqgan; 0: off)");
ABSL_FLAG(int, generation_negative_refresh_every, 10, "training steps between copies of the weights into their CLIP");
ABSL_FLAG(double, vqgan_reconstructions, 0,
          "share of the shape pictures replaced by their reconstruction through --generation_vqgan (0: off)");
ABSL_FLAG(double, alignment_weight, 0,
          "> 0: also pull every picture's embedding towards its own caption's (this weight times the mean of 1 - "
          "cosine), so that the world's pictures sit near the best cosine a caption can get (0: off)");
ABSL_FLAG(int, intra_op_threads, 1, "torch intra-op threads (training: 1)");
ABSL_FLAG(int, blas_threads, 0, "BLAS threads (0: all cores)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("train-clip --out=DIR --minutes=M [--seed=S] [--resume]");
  absl::ParseCommandLine(argc, argv);
  const int blas = absl::GetFlag(FLAGS_blas_threads);
  clipserve::CpuThreadReport threads = clipserve::ConfigureCpuThreads(
      {.intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads),
       .blas_threads = blas > 0 ? blas : clipserve::AvailableCores()});
  std::fprintf(stderr, "threads: intra-op %d, BLAS %d (%s)\n", threads.intra_op_threads, threads.blas_threads,
               threads.blas.c_str());
  clipserve::train::ClipTrainerOptions o;
  o.out_dir = absl::GetFlag(FLAGS_out);
  o.minutes = absl::GetFlag(FLAGS_minutes);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.resume = absl::GetFlag(FLAGS_resume);
  o.max_steps = absl::GetFlag(FLAGS_max_steps);
  o.batch_size = absl::GetFlag(FLAGS_batch);
  o.lr = absl::GetFlag(FLAGS_lr);
  o.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  o.vision_width = absl::GetFlag(FLAGS_vision_width);
  o.vision_layers = absl::GetFlag(FLAGS_vision_layers);
  o.vision_heads = absl::GetFlag(FLAGS_vision_heads);
  o.patch_size = absl::GetFlag(FLAGS_patch);
  o.text_width = absl::GetFlag(FLAGS_text_width);
  o.text_layers = absl::GetFlag(FLAGS_text_layers);
  o.text_heads = absl::GetFlag(FLAGS_text_heads);
  o.projection_dim = absl::GetFlag(FLAGS_projection_dim);
  o.eval_every = absl::GetFlag(FLAGS_eval_every);
  o.eval_count = absl::GetFlag(FLAGS_eval_count);
  o.checkpoint_minutes = absl::GetFlag(FLAGS_checkpoint_minutes);
  o.augment = absl::GetFlag(FLAGS_augment);
  o.augment_probability = absl::GetFlag(FLAGS_augment_probability);
  o.colour_groups = absl::GetFlag(FLAGS_colour_groups);
  o.field_fraction = absl::GetFlag(FLAGS_field_fraction);
  o.blob_fraction = absl::GetFlag(FLAGS_blob_fraction);
  o.caption_targets = absl::GetFlag(FLAGS_caption_targets);
  o.caption_target_parts = {};
  for (const std::string& part : absl::GetFlag(FLAGS_caption_target_parts)) {
    if (part == "size") {
      o.caption_target_parts.size = true;
    } else if (part == "background") {
      o.caption_target_parts.background = true;
    } else if (part == "position") {
      o.caption_target_parts.position = true;
    } else if (!part.empty()) {
      std::fprintf(stderr, "train-clip: --caption_target_parts: unknown part \"%s\" (allowed: size, background, position)\n",
                   part.c_str());
      return 2;
    }
  }
  o.sincos_position_scale = absl::GetFlag(FLAGS_sincos_position_scale);
  o.ema_decay = absl::GetFlag(FLAGS_ema_decay);
  o.init_from = absl::GetFlag(FLAGS_init_from);
  o.init_patch_size = absl::GetFlag(FLAGS_init_patch);
  o.generation_cutouts = absl::GetFlag(FLAGS_generation_cutouts);
  o.generation_cutout_options = clipserve::tools::CutoutOptionsFromFlags();
  o.adversarial_epsilon = absl::GetFlag(FLAGS_adversarial_epsilon);
  o.adversarial_steps = absl::GetFlag(FLAGS_adversarial_steps);
  o.adversarial_fraction = absl::GetFlag(FLAGS_adversarial_fraction);
  o.generation_negatives.chains = absl::GetFlag(FLAGS_generation_negatives);
  o.generation_vqgan_dir = absl::GetFlag(FLAGS_generation_vqgan);
  o.generation_negatives.chain_steps = absl::GetFlag(FLAGS_generation_negative_steps);
  o.generation_negatives.min_steps = absl::GetFlag(FLAGS_generation_negative_min_steps);
  o.generation_negatives.cutouts = o.generation_cutout_options;
  o.generation_negatives.cutouts.cutn = absl::GetFlag(FLAGS_generation_negative_cutn);
  o.generation_negatives.denoiser_weight = static_cast<float>(absl::GetFlag(FLAGS_generation_negative_denoiser));
  o.generation_negatives_refresh_every = absl::GetFlag(FLAGS_generation_negative_refresh_every);
  o.vqgan_reconstructions = absl::GetFlag(FLAGS_vqgan_reconstructions);
  o.alignment_weight = absl::GetFlag(FLAGS_alignment_weight);
  if (o.ema_decay < 0 || o.ema_decay >= 1) {
    std::fprintf(stderr, "train-clip: --ema_decay must be in [0, 1), got %g\n", o.ema_decay);
    return 2;
  }
  auto summary = clipserve::train::TrainClip(o);
  if (!summary.ok()) {
    std::fprintf(stderr, "train-clip: %s\n", summary.status().ToString().c_str());
    return 1;
  }
  std::printf("{\"steps\": %lld, \"minutes\": %.2f, \"steps_per_s\": %.3f, \"colour\": %.4f, \"shape\": %.4f, "
              "\"both\": %.4f, \"positive_cosine\": %.4f",
              static_cast<long long>(summary->steps), summary->trained_seconds / 60, summary->steps_per_second,
              summary->final_eval.colour, summary->final_eval.shape, summary->final_eval.both,
              summary->final_eval.positive_cosine);
  if (o.ema_decay > 0) {
    const auto& a = summary->final_ema_eval;
    std::printf(", \"ema_colour\": %.4f, \"ema_shape\": %.4f, \"ema_both\": %.4f", a.colour, a.shape, a.both);
  }
  std::printf("}\n");
  return 0;
}
