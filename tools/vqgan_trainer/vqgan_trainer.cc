#include "tools/vqgan_trainer/vqgan_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/models/tensor_io.h"
#include "server/models/vqgan/vqgan.h"
#include "tools/shapes/world.h"

namespace clipserve::vqgan_trainer {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A batch of world images as [B, 3, S, S] in [−1, 1].
at::Tensor Batch(const shapes::SceneSampler& sampler, uint64_t first, int count, int size) {
  at::Tensor x = at::empty({count, 3, size, size});
  for (int i = 0; i < count; ++i) {
    const cv::Mat img = sampler.Sample(first + static_cast<uint64_t>(i)).image;
    x[i].copy_(at::from_blob(img.data, {size, size, 3}, at::kByte).permute({2, 0, 1}).to(at::kFloat));
  }
  return x.div_(127.5).sub_(1.0);
}

at::Tensor EdgeL1(const at::Tensor& a, const at::Tensor& b) {
  auto dx = [](const at::Tensor& t) { return t.narrow(3, 1, t.size(3) - 1) - t.narrow(3, 0, t.size(3) - 1); };
  auto dy = [](const at::Tensor& t) { return t.narrow(2, 1, t.size(2) - 1) - t.narrow(2, 0, t.size(2) - 1); };
  return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean();
}

struct EvalStats {
  double psnr_db = 0;
  double codebook_used = 0;
};

EvalStats Evaluate(vqgan::VqModel& module, const vqgan::VqganConfig& config, const shapes::SceneSampler& eval,
                   int count) {
  c10::InferenceMode guard;
  const int size = static_cast<int>(config.ddconfig.resolution);
  double psnr = 0;
  at::Tensor used = at::zeros({config.n_embed}, at::kLong);
  for (int start = 0; start < count; start += 32) {
    const int n = std::min(32, count - start);
    const at::Tensor x = Batch(eval, static_cast<uint64_t>(start), n, size);
    const auto q = module.Quantize(module.EncodeToLatent(x), vqgan::QuantizeGradient::kCodebook);
    const at::Tensor y = module.Decode(q.z_q).clamp(-1, 1);
    const at::Tensor mse = ((y - x) / 2).pow(2).mean({1, 2, 3}).clamp_min(1e-10);
    psnr += (-10.0 * at::log10(mse)).sum().item<double>();
    used.index_fill_(0, q.indices.flatten(), 1);
  }
  return {psnr / count, used.sum().item<double>() / static_cast<double>(config.n_embed)};
}

// The held-out scenes every evaluation draws, the first `count` of them, at `size` pixels.
absl::StatusOr<std::unique_ptr<shapes::SceneSampler>> EvalSampler(int size) {
  shapes::SceneSamplerOptions o;
  o.split = shapes::Split::kEval;
  o.seed = shapes::kFirstEvalSeed;
  o.render.image_size = size;
  return shapes::SceneSampler::Create(o);
}

void DefaultLog(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

}  // namespace

vqgan::VqganConfig TrainOptions::DefaultConfig() {
  vqgan::VqganConfig c;
  c.embed_dim = 32;
  c.n_embed = 512;
  c.ddconfig.ch = 32;
  c.ddconfig.ch_mult = {1, 2, 4};  // f = 4: a 64 px image is a 16×16 grid of codes
  c.ddconfig.num_res_blocks = 1;
  c.ddconfig.attn_resolutions = {};
  c.ddconfig.z_channels = 64;
  c.ddconfig.resolution = 64;
  return c;
}

absl::StatusOr<TrainReport> Train(const TrainOptions& options) {
  const auto log = options.log ? options.log : DefaultLog;
  CLIPSERVE_RETURN_IF_ERROR(shapes::CheckSeed(shapes::Split::kTrain, options.seed));
  std::error_code ec;
  fs::create_directories(options.out, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat(options.out.string(), ": ", ec.message()));

  std::unique_ptr<vqgan::VqganModel> model;
  int64_t step = 0;
  double prior_minutes = 0;  // trained in earlier runs of a resumed training
  const fs::path state_path = options.out / "train_state.pt";
  const fs::path progress_path = options.out / "train_state.json";
  if (options.resume && fs::exists(options.out / "config.json")) {
    vqgan::VqganModel::Options o;
    o.model_dir = options.out;
    CLIPSERVE_ASSIGN_OR_RETURN(model, vqgan::VqganModel::Load(o));
    CLIPSERVE_ASSIGN_OR_RETURN(nlohmann::json progress, ReadJsonFile(progress_path));
    step = progress.value("step", int64_t{0});
    prior_minutes = progress.value("minutes", 0.0);
  } else {
    // The initial weights come from torch's default generator, which libtorch seeds at random per process:
    // seeded here, so that a run is repeatable.
    at::manual_seed(options.seed);
    vqgan::VqganModel::Options o;
    o.config = options.config;
    CLIPSERVE_ASSIGN_OR_RETURN(model, vqgan::VqganModel::Create(o));
  }
  const vqgan::VqganConfig config = model->config();
  const int size = static_cast<int>(config.ddconfig.resolution);
  if (size % config.downsample_factor() != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ddconfig.resolution %d (the training pictures' side) must be a multiple of the downsampling factor %d "
        "(2^(levels-1), %d levels in ch_mult)",
        size, config.downsample_factor(), config.num_levels()));
  }

  shapes::SceneSamplerOptions train_options;
  train_options.split = shapes::Split::kTrain;
  train_options.seed = options.seed;
  train_options.render.image_size = size;
  CLIPSERVE_ASSIGN_OR_RETURN(auto sampler, shapes::SceneSampler::Create(train_options));
  CLIPSERVE_ASSIGN_OR_RETURN(auto eval_sampler, EvalSampler(size));

  // Dead-code restarts draw from torch's generator: seeded, so a run is repeatable (a resumed run continues with
  // a generator seeded from the step instead).
  at::manual_seed(options.seed * 1000003 + static_cast<uint64_t>(step));
  TrainReport report;
  absl::Status status = CatchTorchErrors("training the VQGAN", [&]() -> absl::Status {
    vqgan::VqModel& module = model->module();
    module.train();
    torch::optim::AdamW optimizer(module.parameters(),
                                  torch::optim::AdamWOptions(options.learning_rate).betas({0.5, 0.9}).weight_decay(0));
    if (options.resume && fs::exists(state_path)) torch::load(optimizer, state_path.string());
    at::Tensor usage = at::zeros({config.n_embed}, at::kLong);
    std::ofstream curve(options.out / "learning_curve.jsonl", std::ios::app);
    const auto start = Clock::now();
    auto last_checkpoint = start;
    // Minutes trained in total, earlier runs of a resumed training included.
    auto minutes = [&](Clock::time_point t) {
      return prior_minutes + std::chrono::duration<double>(t - start).count() / 60.0;
    };
    auto save = [&]() -> absl::Status {
      CLIPSERVE_RETURN_IF_ERROR(model->Save(options.out));
      torch::save(optimizer, state_path.string());
      return WriteFileAtomically(progress_path,
                                 nlohmann::json{{"step", step}, {"minutes", minutes(Clock::now())}}.dump() + "\n");
    };
    double loss_sum = 0;
    int loss_count = 0;
    while (true) {
      const double elapsed = minutes(Clock::now());
      if (elapsed >= options.minutes || (options.max_steps > 0 && step >= options.max_steps)) break;
      // Warm-up, then cosine decay down to 10 % over max_steps if given, else over the time budget.
      const double progress = std::min(1.0, options.max_steps > 0 ? static_cast<double>(step) / options.max_steps
                                                                  : elapsed / options.minutes);
      double lr = options.learning_rate * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * progress)));
      if (step < options.warmup_steps) lr *= static_cast<double>(step + 1) / options.warmup_steps;
      for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);

      const at::Tensor x = Batch(*sampler, static_cast<uint64_t>(step) * options.batch_size, options.batch_size, size);
      const at::Tensor h = module.EncodeToLatent(x);
      const auto q = module.Quantize(h, vqgan::QuantizeGradient::kCodebook);  // gradient reaches the codebook
      const at::Tensor z = h + (q.z_q - h).detach();                           // straight-through to the encoder
      const at::Tensor y = module.Decode(z);
      const at::Tensor recon = (y - x).abs().mean() + (y - x).pow(2).mean() + options.edge_weight * EdgeL1(y, x);
      const at::Tensor vq = (q.z_q - h.detach()).pow(2).mean() + options.beta * (q.z_q.detach() - h).pow(2).mean();
      const at::Tensor loss = recon + vq;
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      ++step;
      loss_sum += loss.item<double>();
      ++loss_count;
      usage.index_add_(0, q.indices.flatten(), at::ones({q.indices.numel()}, at::kLong));

      if (options.restart_every > 0 && step % options.restart_every == 0) {
        // Codes no latent chose since the last restart move onto random latents of this batch.
        at::NoGradGuard no_grad;
        const at::Tensor dead = (usage == 0).nonzero().flatten();
        if (dead.numel() > 0) {
          const at::Tensor flat = h.detach().permute({0, 2, 3, 1}).reshape({-1, config.embed_dim});
          const at::Tensor pick = at::randint(flat.size(0), {dead.numel()}, at::kLong);
          const at::Tensor codebook = module.codebook();
          codebook.index_copy_(0, dead, flat.index_select(0, pick) + 0.01 * at::randn({dead.numel(), config.embed_dim}));
        }
        log(absl::StrFormat("step %d: restarted %d dead codes of %d", step, dead.numel(), config.n_embed));
        usage.zero_();
      }
      if (step % options.eval_every == 0) {
        module.eval();
        const EvalStats e = Evaluate(module, config, *eval_sampler, options.eval_count);
        module.train();
        const double m = minutes(Clock::now());
        const double mean_loss = loss_sum / std::max(1, loss_count);
        log(absl::StrFormat("step %d  %.1f min  loss %.4f  lr %.2e  held-out PSNR %.2f dB  codebook used %.0f%%",
                            step, m, mean_loss, lr, e.psnr_db, 100 * e.codebook_used));
        curve << nlohmann::json{{"step", step}, {"minutes", m}, {"loss", mean_loss}, {"psnr_db", e.psnr_db},
                                {"codebook_used", e.codebook_used}}
                     .dump()
              << "\n";
        curve.flush();
        report.final_loss = mean_loss;
        loss_sum = 0;
        loss_count = 0;
      }
      if (minutes(Clock::now()) - minutes(last_checkpoint) >= options.checkpoint_minutes) {
        CLIPSERVE_RETURN_IF_ERROR(save());
        last_checkpoint = Clock::now();
      }
    }
    module.eval();
    const EvalStats e = Evaluate(module, config, *eval_sampler, options.eval_count);
    report.eval_psnr_db = e.psnr_db;
    report.codebook_used = e.codebook_used;
    report.steps = step;
    report.minutes = minutes(Clock::now());
    if (loss_count > 0) report.final_loss = loss_sum / loss_count;
    return save();
  });
  if (!status.ok()) return status;
  return report;
}

absl::StatusOr<double> HeldOutPsnr(const vqgan::VqganModel& model, int count) {
  if (count < 1) return absl::InvalidArgumentError(absl::StrCat("count must be at least 1, got ", count));
  CLIPSERVE_ASSIGN_OR_RETURN(auto sampler, EvalSampler(static_cast<int>(model.config().ddconfig.resolution)));
  double psnr = 0;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("evaluating the VQGAN", [&]() -> absl::Status {
    psnr = Evaluate(model.module(), model.config(), *sampler, count).psnr_db;
    return absl::OkStatus();
  }));
  return psnr;
}

absl::StatusOr<at::Tensor> EncodeWorldCodes(const vqgan::VqganModel& model, shapes::SceneSamplerOptions scenes,
                                            int count) {
  if (count < 1) return absl::InvalidArgumentError(absl::StrCat("count must be at least 1, got ", count));
  const int size = static_cast<int>(model.config().ddconfig.resolution);
  scenes.render.image_size = size;
  CLIPSERVE_ASSIGN_OR_RETURN(auto sampler, shapes::SceneSampler::Create(scenes));
  std::vector<at::Tensor> codes;
  constexpr int kBatch = 128;
  for (int first = 0; first < count; first += kBatch) {
    const int n = std::min(kBatch, count - first);
    at::Tensor x;
    CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("drawing world scenes", [&]() -> absl::Status {
      x = Batch(*sampler, static_cast<uint64_t>(first), n, size);
      return absl::OkStatus();
    }));
    CLIPSERVE_ASSIGN_OR_RETURN(vqgan::EncodeResult e, model.Encode(x, vqgan::GradMode::kInferenceMode));
    codes.push_back(e.indices.to(at::kCPU));
  }
  return at::cat(codes, 0);
}

}  // namespace clipserve::vqgan_trainer
