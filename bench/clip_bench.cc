// CLIP tower throughput for a ViT-B/32-shaped model with random weights (no file needed), beside a 1024²
// sgemm measured in the same run so the towers can be reported as a fraction of the machine's GEMM rate.
//
//   build/bin/clipserve_bench --benchmark_filter='Sgemm|ClipImage|ClipText'
//
// The tower FLOP/s are compared with the best of the BM_Sgemm1024 variants (docs/benchmarks.md).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "server/models/attention.h"
#include "server/models/clip/clip_model.h"
#include "server/models/cpu_threads.h"
#include "server/models/linear.h"
#include "server/models/packed_linear.h"

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

std::shared_ptr<ClipModel> MakeModel(bool packed) {
  ConfigureCpuThreads({});
  std::shared_ptr<ClipModel> model = ClipModel::CreateRandom(VitB32Config(), 1);
  if (packed) model->PrepackForInference();
  return model;
}

// The same random ViT-B/32 as it comes (BLAS through Linear()) or prepacked for the packed CPU GEMM
// (packed_linear.h; what the server runs on AVX-512 machines). Each is built on first use only.
const ClipModel& Model(bool packed = false) {
  if (packed) {
    static const auto* model = new std::shared_ptr<ClipModel>(MakeModel(true));
    return **model;
  }
  static const auto* model = new std::shared_ptr<ClipModel>(MakeModel(false));
  return **model;
}

// Skips a packed variant where the packed GEMM cannot run; returns whether the benchmark should go on.
bool PackedVariantRuns(benchmark::State& state, bool packed) {
  if (packed && !PackedGemmAvailable()) {
    state.SkipWithError("packed GEMM unavailable (no AVX-512F, or CLIPSERVE_PACKED_GEMM=0)");
    return false;
  }
  state.SetLabel(packed ? "packed GEMM" : "BLAS");
  return true;
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

// One ViT-B/32 MLP projection (fc1: 768 → 3072, bias, silu epilogue) at R rows through each GEMM path: BLAS
// (Linear() over torch's pool; `kernel:0`), the packed GEMM's AVX2 kernel (`kernel:1`) and its AVX-512 kernel
// (`kernel:2`; each skipped where the CPU lacks it). Eight distinct weight matrices (75 MB) take turns, so the
// weights stream from memory as in a tower. Where each path wins decides each kernel's row limit
// (PackedLinearMaxRows()).
void BM_ProjectionRows(benchmark::State& state) {
  Model();
  const int64_t rows = state.range(0);
  const int kernel = static_cast<int>(state.range(1));
  const PackedIsa before = PackedGemmIsa();
  if (kernel > 0 && !SetPackedGemmIsa(kernel == 1 ? PackedIsa::kAvx2 : PackedIsa::kAvx512)) {
    state.SkipWithError("this CPU cannot run that kernel");
    return;
  }
  constexpr int kWeights = 8;
  std::vector<at::Tensor> weights, biases;
  std::vector<std::unique_ptr<PackedWeight>> packed;
  for (int i = 0; i < kWeights; ++i) {
    weights.push_back(at::randn({3072, 768}) * 0.03);
    biases.push_back(at::randn({3072}));
    packed.push_back(std::make_unique<PackedWeight>(weights.back()));
  }
  const at::Tensor x = at::randn({rows, 768});
  c10::InferenceMode guard;
  int i = 0;
  for (auto _ : state) {
    const at::Tensor y = kernel == 0 ? Linear(x, weights[i], nullptr, biases[i], 1.702, 1.702, Epilogue::kSilu)
                                     : PackedLinear(x, *packed[i], biases[i], 1.702, 1.702, Epilogue::kSilu);
    benchmark::DoNotOptimize(y.data_ptr());
    i = (i + 1) % kWeights;
  }
  SetPackedGemmIsa(before);
  state.SetLabel(kernel == 0 ? "BLAS" : kernel == 1 ? "packed AVX2" : "packed AVX-512");
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * rows * 768 * 3072 * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ProjectionRows)
    ->ArgsProduct({{1, 12, 50, 100, 200, 400}, {0, 1, 2}})
    ->ArgNames({"rows", "kernel"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(1.0);

// Image batches 1, 8 and 32, each through BLAS (packed:0) and the packed GEMM (packed:1).
void ImageBatchesOnBothPaths(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{1, 8, 32}, {0, 1}})->ArgNames({"batch", "packed"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

// Only the GEMMs of the ViT-B/32 image tower (12 blocks × qkv, out, fc1, fc2 with distinct weights, so they
// stream from memory as in the tower), at the tower's row counts: the ceiling the whole tower can reach.
void BM_ClipImageTowerGemmsOnly(benchmark::State& state) {
  Model();
  const bool packed = state.range(1) != 0;
  if (!PackedVariantRuns(state, packed)) return;
  const int64_t rows = state.range(0) * 50, d = 768, inner = 3072;
  struct Weights {
    at::Tensor w, b;
    std::unique_ptr<PackedWeight> p;
  };
  std::vector<Weights> weights;
  for (int layer = 0; layer < 12; ++layer) {
    weights.push_back({at::randn({3 * d, d}), at::randn({3 * d}), nullptr});
    weights.push_back({at::randn({d, d}), at::randn({d}), nullptr});
    weights.push_back({at::randn({inner, d}), at::randn({inner}), nullptr});
    weights.push_back({at::randn({d, inner}), at::randn({d}), nullptr});
  }
  if (packed) {
    for (auto& w : weights) w.p = std::make_unique<PackedWeight>(w.w);
  }
  const at::Tensor x_d = at::randn({rows, d}), x_inner = at::randn({rows, inner});
  c10::InferenceMode guard;
  for (auto _ : state) {
    for (const auto& [w, b, p] : weights) {
      benchmark::DoNotOptimize(Linear(w.size(1) == d ? x_d : x_inner, w, p.get(), b).data_ptr());
    }
  }
  const double flops = 12.0 * 2 * rows * (3 * d * d + d * d + 2 * d * inner);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ClipImageTowerGemmsOnly)->Apply(ImageBatchesOnBothPaths)->MinTime(2.0);

void BM_ClipImageTower(benchmark::State& state) {
  const bool packed = state.range(1) != 0;
  if (!PackedVariantRuns(state, packed)) return;
  const ClipModel& model = Model(packed);
  const int64_t batch = state.range(0);
  const at::Tensor pixels = at::randn({batch, 3, 224, 224});
  c10::InferenceMode guard;
  for (auto _ : state) benchmark::DoNotOptimize(model.EncodeImage(pixels).data_ptr());
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["GFLOP/s"] =
      benchmark::Counter(kVitB32ImageFlops * batch * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ClipImageTower)->Apply(ImageBatchesOnBothPaths)->MinTime(3.0);

// The non-GEMM work of one ViT-B/32 image block at the tower's row counts, one op per variant: what the tower
// spends beside its projections (op 0: both LayerNorms, 1: silu over the MLP activations, 2: both residual
// adds, 3: attention over the fused qkv rows).
void BM_ClipImageBlockOps(benchmark::State& state) {
  ConfigureCpuThreads({});
  const int64_t batch = state.range(0), rows = batch * 50, d = 768, inner = 3072;
  const int op = static_cast<int>(state.range(1));
  const at::Tensor x = at::randn({rows, d}), w = at::ones({d}), b = at::zeros({d});
  const at::Tensor h = at::randn({rows, inner});
  at::Tensor r = at::randn({rows, d});
  const at::Tensor qkv = at::randn({rows, 3 * d});
  c10::InferenceMode guard;
  for (auto _ : state) {
    switch (op) {
      case 0:
        benchmark::DoNotOptimize(at::layer_norm(x, {d}, w, b, 1e-5).data_ptr());
        benchmark::DoNotOptimize(at::layer_norm(x, {d}, w, b, 1e-5).data_ptr());
        break;
      case 1:
        benchmark::DoNotOptimize(at::silu(h).data_ptr());
        break;
      case 2:
        benchmark::DoNotOptimize(r.add_(x).data_ptr());
        benchmark::DoNotOptimize(r.add_(x).data_ptr());
        break;
      default:
        benchmark::DoNotOptimize(SelfAttention(qkv, batch, 50, 12, false).data_ptr());
    }
  }
  static const char* const kNames[] = {"layer_norm x2", "silu", "add x2", "attention"};
  state.SetLabel(kNames[op]);
}
BENCHMARK(BM_ClipImageBlockOps)
    ->ArgsProduct({{1, 8}, {0, 1, 2, 3}})
    ->ArgNames({"batch", "op"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(1.0);

// Inference attention per softmax kernel family (isa: 0 portable expf, 1 AVX2, 2 AVX-512; a family this CPU lacks
// is skipped), 8 sequences as ViT-B/32 has them: an image's 50 tokens in 12 heads of 64, a full-context text's 77
// (causal) in 8 heads of 64; `whole` 0 the softmax alone over the score matrices (copied in fresh each iteration,
// the same copy for every family), 1 the whole SelfAttention.
void BM_AttentionSoftmax(benchmark::State& state) {
  const int len = static_cast<int>(state.range(0));
  const auto isa = static_cast<simd::Isa>(state.range(1));
  const bool whole = state.range(2) != 0, causal = len == 77;
  const simd::Isa before = AttentionSoftmaxIsa();
  if (!SetAttentionSoftmaxIsa(isa)) {
    state.SkipWithError("this CPU does not run the kernel family");
    return;
  }
  constexpr int kBatch = 8;
  const int heads = causal ? 8 : 12;
  const at::Tensor scores = at::randn({kBatch * heads, len, len}) * 3.0;
  const at::Tensor qkv = at::randn({kBatch * len, 3 * heads * 64});
  std::vector<float> work(scores.numel());
  c10::InferenceMode guard;
  for (auto _ : state) {
    if (whole) {
      benchmark::DoNotOptimize(SelfAttention(qkv, kBatch, len, heads, causal).data_ptr());
    } else {
      std::copy_n(scores.data_ptr<float>(), scores.numel(), work.data());
      for (int m = 0; m < kBatch * heads; ++m) AttentionSoftmaxRows(work.data() + m * len * len, len, causal);
      benchmark::DoNotOptimize(work.data());
    }
  }
  state.SetLabel(simd::IsaName(isa));
  SetAttentionSoftmaxIsa(before);
}
BENCHMARK(BM_AttentionSoftmax)
    ->ArgsProduct({{50, 77}, {0, 1, 2}, {0, 1}})
    ->ArgNames({"tokens", "isa", "whole"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(0.5);

// Attention forward and backward under autograd (training; generation back-propagating into the picture), 8
// sequences of 12 heads of 64, at ViT-B/32's, ViT-B/16's and ViT-L/14's token counts, with BLAS on one thread
// (the server's default) and on every core (trainers). From 65 tokens at this head size OpenBLAS threads each
// per-head GEMM; those calls then run one after another rather than from every pool thread at once
// (server/models/attention.cc), which queued them for OpenBLAS's thread server.
void BM_SelfAttentionUnderAutograd(benchmark::State& state) {
  const int64_t len = state.range(0), batch = 8, heads = 12, d = 768;
  ConfigureCpuThreads({.blas_threads = static_cast<int>(state.range(1))});
  const at::Tensor qkv = at::randn({batch * len, 3 * d}).requires_grad_(true);
  const at::Tensor upstream = at::randn({batch * len, d});
  for (auto _ : state) {
    SelfAttention(qkv, batch, len, heads, false).backward(upstream);
    benchmark::DoNotOptimize(qkv.grad().data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  ConfigureCpuThreads({});
}
BENCHMARK(BM_SelfAttentionUnderAutograd)
    ->ArgsProduct({{50, 197, 257}, {1, 2}})
    ->ArgNames({"tokens", "blas_threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(1.0);

// Texts of `len` tokens (SOT, words, EOT, zero padding to 77). At len = 77 this is the full-context cost the
// FLOP figure refers to; shorter texts show what computing only up to the last EOS saves.
void BM_ClipTextTower(benchmark::State& state) {
  const bool packed = state.range(2) != 0;
  if (!PackedVariantRuns(state, packed)) return;
  const ClipModel& model = Model(packed);
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
    ->ArgsProduct({{1, 8, 32}, {77}, {0, 1}})
    ->ArgsProduct({{8, 32}, {12}, {0, 1}})
    ->ArgNames({"batch", "tokens", "packed"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(3.0);

}  // namespace
}  // namespace clipserve::clip
