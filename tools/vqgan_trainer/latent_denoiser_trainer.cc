#include "tools/vqgan_trainer/latent_denoiser_trainer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <numeric>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adamw.h>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/models/tensor_io.h"
#include "server/models/vqgan/modules.h"
#include "tools/shapes/world.h"
#include "tools/vqgan_trainer/vqgan_trainer.h"

namespace clipserve::vqgan_trainer {
namespace {

using Clock = std::chrono::steady_clock;

// Per-sample uniform fractions [B, 1, 1] in [0, max).
at::Tensor Fractions(int64_t b, double max, at::Generator& g) { return at::rand({b, 1, 1}, g) * max; }

// Cells replaced by a random code, then cells taking one of their 4-neighbours' codes (edge cells keep theirs
// when the neighbour would be outside).
at::Tensor CorruptCodes(const at::Tensor& codes, int64_t n_embed, const CorruptionOptions& o, at::Generator& g) {
  const int64_t b = codes.size(0), h = codes.size(1), w = codes.size(2);
  at::Tensor c = codes.clone();
  const at::Tensor replace = at::rand({b, h, w}, g) < Fractions(b, o.max_replace, g);
  c = at::where(replace, at::randint(n_embed, {b, h, w}, g, at::kLong), c);
  const at::Tensor jitter = at::rand({b, h, w}, g) < Fractions(b, o.max_jitter, g);
  const at::Tensor direction = at::randint(4, {b, h, w}, g, at::kLong);
  const at::Tensor padded = at::constant_pad_nd(c, {1, 1, 1, 1}, -1);
  const std::array<std::pair<int64_t, int64_t>, 4> offsets = {{{0, 1}, {2, 1}, {1, 0}, {1, 2}}};
  at::Tensor neighbour = c.clone();
  for (int64_t d = 0; d < 4; ++d) {
    const at::Tensor shifted = padded.narrow(1, offsets[d].first, h).narrow(2, offsets[d].second, w);
    neighbour = at::where(direction.eq(d) & shifted.ge(0), shifted, neighbour);
  }
  return at::where(jitter, neighbour, c);
}

}  // namespace

at::Tensor CorruptLatents(const at::Tensor& codes, const at::Tensor& codebook, const CorruptionOptions& options,
                          at::Generator& generator) {
  const at::Tensor e = codebook.detach().to(at::kCPU, at::kFloat);
  const at::Tensor c = CorruptCodes(codes.to(at::kCPU, at::kLong), e.size(0), options, generator);
  const at::Tensor z = vqgan::CodebookRows(e, c);
  const at::Tensor sigma = at::rand({c.size(0), 1, 1, 1}, generator) * options.max_noise;
  return (z + at::randn(z.sizes(), generator) * sigma * e.std(0).view({1, -1, 1, 1})).contiguous();
}

absl::StatusOr<DenoiserTrainReport> TrainLatentDenoiser(const vqgan::VqganModel& model,
                                                        const DenoiserTrainOptions& options) {
  if (options.out.empty()) return absl::InvalidArgumentError("out: required");
  if (options.batch_size < 1 || options.count < options.batch_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("count (", options.count, ") must be at least batch_size (", options.batch_size, ") >= 1"));
  }
  if (options.seed >= shapes::kFirstEvalSeed) {
    return absl::InvalidArgumentError(absl::StrCat("seed must be below ", shapes::kFirstEvalSeed));
  }
  const auto start = Clock::now();
  shapes::SceneSamplerOptions train_scenes;
  train_scenes.seed = options.seed;
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor codes, EncodeWorldCodes(model, train_scenes, options.count));
  shapes::SceneSamplerOptions eval_scenes;
  eval_scenes.split = shapes::Split::kEval;
  eval_scenes.seed = shapes::kFirstEvalSeed;
  CLIPSERVE_ASSIGN_OR_RETURN(at::Tensor eval_codes, EncodeWorldCodes(model, eval_scenes, options.eval_count));
  std::printf("encoded %d + %d scenes in %.1f s\n", options.count, options.eval_count,
              std::chrono::duration<double>(Clock::now() - start).count());

  const at::Tensor codebook = model.codebook().detach().to(at::kCPU, at::kFloat);
  generation::LatentDenoiserConfig config = options.config;
  config.n_embed = codebook.size(0);
  config.embed_dim = codebook.size(1);
  CLIPSERVE_ASSIGN_OR_RETURN(auto denoiser, generation::LatentDenoiser::Create(config, codebook));

  DenoiserTrainReport report;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("training the latent denoiser", [&]() -> absl::Status {
    at::Generator g = at::detail::createCPUGenerator(options.seed);
    generation::LatentDenoiserNet& net = denoiser->module();
    net.train();
    torch::optim::AdamW adam(net.parameters(), torch::optim::AdamWOptions(options.learning_rate).weight_decay(1e-4));
    std::deque<double> recent;
    const auto elapsed_minutes = [&] { return std::chrono::duration<double>(Clock::now() - start).count() / 60; };
    for (int64_t step = 1;; ++step) {
      if (options.max_steps > 0 && step > options.max_steps) break;
      if (options.max_steps == 0 && elapsed_minutes() >= options.minutes) break;
      const at::Tensor index = at::randint(codes.size(0), {options.batch_size}, g, at::kLong);
      const at::Tensor clean = codes.index_select(0, index);
      const at::Tensor z = CorruptLatents(clean, codebook, options.corruption, g);
      const at::Tensor loss = at::cross_entropy_loss(denoiser->Logits(z), clean);
      adam.zero_grad();
      loss.backward();
      adam.step();
      recent.push_back(loss.item<double>());
      if (recent.size() > 50) recent.pop_front();
      report.steps = step;
      if (step % 200 == 0) {
        std::printf("step %lld: loss %.4f (%.1f min)\n", static_cast<long long>(step),
                    std::accumulate(recent.begin(), recent.end(), 0.0) / recent.size(), elapsed_minutes());
        std::fflush(stdout);
      }
    }
    net.eval();
    report.final_loss = recent.empty() ? 0 : std::accumulate(recent.begin(), recent.end(), 0.0) / recent.size();
    at::NoGradGuard no_grad;
    const at::Tensor clean_z = vqgan::CodebookRows(codebook, eval_codes);
    report.clean_accuracy = denoiser->Logits(clean_z).argmax(1).eq(eval_codes).to(at::kFloat).mean().item<double>();
    CorruptionOptions half = options.corruption;
    half.max_replace /= 2;
    half.max_jitter /= 2;
    half.max_noise /= 2;
    at::Generator eval_g = at::detail::createCPUGenerator(shapes::kFirstEvalSeed);
    const at::Tensor corrupted = CorruptLatents(eval_codes, codebook, half, eval_g);
    report.corrupted_accuracy =
        denoiser->Logits(corrupted).argmax(1).eq(eval_codes).to(at::kFloat).mean().item<double>();
    return absl::OkStatus();
  }));
  report.minutes = std::chrono::duration<double>(Clock::now() - start).count() / 60;
  for (auto& p : denoiser->module().parameters()) p.set_requires_grad(false);
  CLIPSERVE_RETURN_IF_ERROR(denoiser->Save(options.out));
  return report;
}

}  // namespace clipserve::vqgan_trainer
