// VQGAN decode throughput (CPU, float32, c10::InferenceMode), at batch 1 and 4:
//   BM_VqganDecode_Fixture   — the reference fixture model ($CLIPSERVE_FIXTURES, else the configured default;
//                              tiny, mostly framework overhead), latent at its config resolution.
//   BM_VqganDecode_ImagenetF16 — the vqgan_imagenet_f16_16384 architecture (random weights; same cost as the
//                              real checkpoint) decoding an 8×8 latent to 128×128 pixels.
//   BM_VqganDecodeBackward_ImagenetF16 — the same plus the backward pass to the latent (one generation step's
//                              VQGAN share, batch 1 only).
// Run: build/bin/clipserve_bench --benchmark_filter=Vqgan
#include <benchmark/benchmark.h>
#include <torch/autograd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "server/models/vqgan/vqgan.h"

namespace clipserve::vqgan {
namespace {

constexpr int64_t kImagenetLatent = 8;

const VqganModel* FixtureModel() {
  static const auto* model = [] {
    VqganModel::Options options;
    const char* env = std::getenv("CLIPSERVE_FIXTURES");
    options.model_dir =
        std::filesystem::path(env != nullptr && *env != '\0' ? env : CLIPSERVE_DEFAULT_FIXTURES) / "vqgan";
    auto loaded = VqganModel::Load(options);
    return loaded.ok() ? loaded->release() : nullptr;
  }();
  return model;
}

const VqganModel* ImagenetModel() {
  static const auto* model = [] {
    VqganModel::Options options;  // the default config is vqgan_imagenet_f16_16384's
    auto created = VqganModel::Create(options);
    return created.ok() ? created->release() : nullptr;
  }();
  return model;
}

void RunDecode(benchmark::State& state, const VqganModel* model, int64_t latent) {
  if (model == nullptr) {
    state.SkipWithError("model unavailable (fixtures missing?)");
    return;
  }
  const int64_t batch = state.range(0);
  const at::Tensor z_q = at::randn({batch, model->config().embed_dim, latent, latent});
  for (auto _ : state) {
    auto image = model->Decode(z_q, GradMode::kInferenceMode);
    if (!image.ok()) {
      state.SkipWithError(std::string(image.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(image->data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

void BM_VqganDecode_Fixture(benchmark::State& state) {
  const VqganModel* model = FixtureModel();
  const int64_t latent = model ? model->config().ddconfig.resolution / model->downsample_factor() : 1;
  RunDecode(state, model, latent);
}
BENCHMARK(BM_VqganDecode_Fixture)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_VqganDecode_ImagenetF16(benchmark::State& state) { RunDecode(state, ImagenetModel(), kImagenetLatent); }
BENCHMARK(BM_VqganDecode_ImagenetF16)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_VqganDecodeBackward_ImagenetF16(benchmark::State& state) {
  const VqganModel* model = ImagenetModel();
  if (model == nullptr) {
    state.SkipWithError("model unavailable");
    return;
  }
  const at::Tensor z =
      at::randn({state.range(0), model->config().embed_dim, kImagenetLatent, kImagenetLatent}).requires_grad_(true);
  for (auto _ : state) {
    auto image = model->Decode(z, GradMode::kAutograd);
    if (!image.ok()) {
      state.SkipWithError(std::string(image.status().message()).c_str());
      return;
    }
    auto grads = torch::autograd::grad({image->sum()}, {z});
    benchmark::DoNotOptimize(grads[0].data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_VqganDecodeBackward_ImagenetF16)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace clipserve::vqgan
