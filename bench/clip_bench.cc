// CLIP tower throughput for a ViT-B/32-shaped model with random weights (no file needed), beside a 1024²
// sgemm measured in the same run so the towers can be reported as a fraction of the machine's GEMM rate.
//
//   build/bin/clipserve_bench --benchmark_filter='Sgemm|ClipImage|ClipText'
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "server/models/clip/clip_model.h"
#include "server/models/cpu_threads.h"

namespace clipserve::clip {
namespace {

// FLOPs of one forward pass as used in the issue (multiply-add = 2 FLOPs).
constexpr double kVitB32ImageFlops = 8.82e9;   // per 224² image
constexpr double kVitB32TextFlops = 5.96e9;    // per 77-token text

ClipConfig VitB32Config() {
  ClipConfig c;
  c.text.hidden_size = 512;
  c.text.intermediate_size = 2048;
  c.text.num_attention_heads = 8;
  c.text.num_hidden_layers = 12;
  c.vision.hidden_size = 768;
  c.vision.intermediate_size = 3072;
  c.vision.num_attention_heads = 12;
  c.vision.num_hidden_layers = 12;
  c.vision.image_size = 224;
  c.vision.patch_size = 32;
  c.projection_dim = 512;
  return c;
}

const ClipModel& Model() {
  static const auto* model = [] {
    ConfigureCpuThreads({});
    return new std::shared_ptr<ClipModel>(ClipModel::CreateRandom(VitB32Config(), 1));
  }();
  return **model;
}

void BM_Sgemm1024(benchmark::State& state) {
  Model();  // same thread configuration as the towers
  const at::Tensor a = at::randn({1024, 1024}), b = at::randn({1024, 1024});
  at::Tensor c = at::empty({1024, 1024});
  for (auto _ : state) {
    at::mm_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * 1024 * 1024 * 1024 * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Sgemm1024)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

void BM_ClipImageTower(benchmark::State& state) {
  const ClipModel& model = Model();
  const int64_t batch = state.range(0);
  const at::Tensor pixels = at::randn({batch, 3, 224, 224});
  c10::InferenceMode guard;
  for (auto _ : state) benchmark::DoNotOptimize(model.EncodeImage(pixels).data_ptr());
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["GFLOP/s"] =
      benchmark::Counter(kVitB32ImageFlops * batch * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ClipImageTower)->Arg(1)->Arg(8)->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

// Texts of `len` tokens (SOT, words, EOT, zero padding to 77). At len = 77 this is the full-context cost the
// FLOP figure refers to; shorter texts show what computing only up to the last EOS saves.
void BM_ClipTextTower(benchmark::State& state) {
  const ClipModel& model = Model();
  const int64_t batch = state.range(0), len = state.range(1);
  at::Tensor ids = at::zeros({batch, 77}, at::kLong);
  ids.narrow(1, 1, len - 2).random_(1, 49000);
  ids.select(1, 0).fill_(49406);
  ids.select(1, len - 1).fill_(49407);
  c10::InferenceMode guard;
  for (auto _ : state) benchmark::DoNotOptimize(model.EncodeText(ids).data_ptr());
  state.SetItemsProcessed(state.iterations() * batch);
  if (len == 77) {
    state.counters["GFLOP/s"] =
        benchmark::Counter(kVitB32TextFlops * batch * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  }
}
BENCHMARK(BM_ClipTextTower)
    ->Args({1, 77})
    ->Args({8, 77})
    ->Args({32, 77})
    ->Args({8, 12})
    ->Args({32, 12})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(3.0);

}  // namespace
}  // namespace clipserve::clip
