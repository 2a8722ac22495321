// CLIP tower throughput for a ViT-B/32-shaped model with random weights (no file needed), beside a 1024²
// sgemm measured in the same run so the towers can be reported as a fraction of the machine's GEMM rate.
//
//   build/bin/clipserve_bench --benchmark_filter='Sgemm|ClipImage|ClipText'
//
// The tower FLOP/s are compared with the best of the BM_Sgemm1024 variants (docs/benchmarks.md).
#include <benchmark/benchmark.h>

#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "server/models/clip/clip_model.h"
#include "server/models/cpu_threads.h"
#include "server/models/linear.h"

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

// The machine's 1024² sgemm rate, the yardstick for the towers. Two ways, both reported; the better one is the
// baseline: OpenBLAS threading one GEMM over every core itself (its best case for a large square GEMM), and
// clipserve's Linear() splitting it over torch's pool with single-threaded BLAS (what the towers run).
void BM_Sgemm1024(benchmark::State& state) {
  Model();
  const bool blas_threads = state.range(0) == 0;
  if (blas_threads) ConfigureCpuThreads({.intra_op_threads = 1, .blas_threads = AvailableCores()});
  const at::Tensor a = at::randn({1024, 1024}), b = at::randn({1024, 1024});
  c10::InferenceMode guard;
  at::Tensor c = at::empty({1024, 1024});
  for (auto _ : state) {
    if (blas_threads) {
      at::mm_out(c, a, b.t());
    } else {
      c = Linear(a, b, at::Tensor());
    }
    benchmark::DoNotOptimize(c.data_ptr());
  }
  if (blas_threads) ConfigureCpuThreads({});
  state.SetLabel(blas_threads ? "OpenBLAS threads" : "Linear() over torch's pool");
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * 1024 * 1024 * 1024 * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Sgemm1024)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// Only the GEMMs of the ViT-B/32 image tower (12 blocks × qkv, out, fc1, fc2 with distinct weights, so they
// stream from memory as in the tower), at the tower's row counts: the ceiling the whole tower can reach.
void BM_ClipImageTowerGemmsOnly(benchmark::State& state) {
  Model();
  const int64_t rows = state.range(0) * 50, d = 768, inner = 3072;
  struct Weights {
    at::Tensor w, b;
  };
  std::vector<Weights> weights;
  for (int layer = 0; layer < 12; ++layer) {
    weights.push_back({at::randn({3 * d, d}), at::randn({3 * d})});
    weights.push_back({at::randn({d, d}), at::randn({d})});
    weights.push_back({at::randn({inner, d}), at::randn({inner})});
    weights.push_back({at::randn({d, inner}), at::randn({d})});
  }
  const at::Tensor x_d = at::randn({rows, d}), x_inner = at::randn({rows, inner});
  c10::InferenceMode guard;
  for (auto _ : state) {
    for (const auto& [w, b] : weights) benchmark::DoNotOptimize(Linear(w.size(1) == d ? x_d : x_inner, w, b).data_ptr());
  }
  const double flops = 12.0 * 2 * rows * (3 * d * d + d * d + 2 * d * inner);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ClipImageTowerGemmsOnly)->Arg(1)->Arg(8)->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

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
