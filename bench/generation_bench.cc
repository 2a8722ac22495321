// Generation steps batched across jobs (the generation issue's batching target: aggregate job-steps/s with 4
// concurrent jobs ≥ 2× one job alone, measured side by side in one run):
//   BM_GenerationStep/N — one generation::Step over N jobs (64×64, 32 cutouts each, different prompts and
//                         seeds) with the shipped shapes-world models ($CLIPSERVE_SHAPES_MODELS, else
//                         models/shapes-world of the source tree). Counter job_steps_per_s = N / step time.
//                         $CLIPSERVE_BENCH_DEVICE picks the device ("cuda:0"; default cpu): on a GPU one job's
//                         step leaves the device mostly idle, which is where batching jobs pays.
//   .../split:S          — which CPU kernels under autograd are split across torch's pool: S = 0 none (plain
//                         single-threaded addmm calls and torch's bmm attention, the path before either split),
//                         S = 1 the GEMMs only (Linear()), S = 2 the GEMMs and the attention (SelfAttention()),
//                         as the server runs.
// The CPU thread policy is the server's (ConfigureCpuThreads: torch's pool on every core, BLAS single-threaded).
// Run: build/bin/clipserve_bench --benchmark_filter=GenerationStep
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include "server/generation/generator.h"
#include "server/models/attention.h"
#include "server/models/cpu_threads.h"
#include "server/models/linear.h"

namespace clipserve::generation {
namespace {

const GenerationModels* ShippedModels() {
  static const auto* models = []() -> const GenerationModels* {
    const char* env = std::getenv("CLIPSERVE_SHAPES_MODELS");
    const std::filesystem::path dir = env != nullptr && *env != '\0'
                                          ? std::filesystem::path(env)
                                          : std::filesystem::path(CLIPSERVE_SOURCE_DIR) / "models" / "shapes-world";
    ConfigureCpuThreads({});
    const char* name = std::getenv("CLIPSERVE_BENCH_DEVICE");
    at::Device device = at::kCPU;
    try {
      if (name != nullptr && *name != '\0') device = at::Device(name);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "generation bench: CLIPSERVE_BENCH_DEVICE='%s' is not a device: %s\n", name, e.what());
      return nullptr;
    }
    auto m = GenerationModels::Load(dir / "clip", dir / "vqgan", device);
    if (!m.ok()) std::fprintf(stderr, "generation bench: %s\n", std::string(m.status().message()).c_str());
    return m.ok() ? new GenerationModels(*m) : nullptr;
  }();
  return models;
}

// The split:S argument above.
void SetSplits(int64_t s) {
  SetLinearSplitUnderAutograd(s >= 1);
  SetAttentionSplitUnderAutograd(s >= 2);
}

void BM_GenerationStep(benchmark::State& state) {
  const GenerationModels* models = ShippedModels();
  if (models == nullptr) {
    state.SkipWithError("cannot load the shapes-world models (the reason is on stderr; CLIPSERVE_SHAPES_MODELS, CLIPSERVE_BENCH_DEVICE)");
    return;
  }
  const int n = static_cast<int>(state.range(0));
  SetSplits(state.range(1));
  static const char* kPrompts[] = {"a red circle", "a blue square on a yellow background", "a green triangle",
                                   "a yellow star", "a purple heart", "a white cross on a red background",
                                   "an orange ring", "a black arrow"};
  std::vector<std::unique_ptr<Job>> jobs;
  std::vector<Job*> raw;
  for (int i = 0; i < n; ++i) {
    JobOptions o;
    o.prompts = {{.text = kPrompts[i % 8]}};
    o.width = o.height = 64;
    o.steps = 1 << 30;
    o.seed = static_cast<uint64_t>(i + 1);
    o.cutouts.cutn = 32;
    auto job = Job::Create(*models, std::move(o));
    if (!job.ok()) {
      state.SkipWithError(std::string(job.status().message()).c_str());
      return;
    }
    raw.push_back(job->get());
    jobs.push_back(std::move(job).value());
  }
  for (auto _ : state) {
    auto stats = Step(*models, raw);
    if (!stats.ok()) {
      state.SkipWithError(std::string(stats.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(stats->data());
  }
  state.counters["job_steps_per_s"] =
      benchmark::Counter(static_cast<double>(n) * state.iterations(), benchmark::Counter::kIsRate);
  SetSplits(2);
}
BENCHMARK(BM_GenerationStep)
    ->ArgNames({"jobs", "split"})
    ->ArgsProduct({{1, 4, 8}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(5.0);

}  // namespace
}  // namespace clipserve::generation

namespace clipserve::generation {
namespace {

// The parts of one step for one job, to see where its time goes.
void BM_GenerationCutouts(benchmark::State& state) {
  const at::Tensor x = at::rand({1, 3, 64, 64}).set_requires_grad(true);
  at::Generator g = at::detail::createCPUGenerator(1);
  CutoutOptions o;
  o.cutn = 32;
  o.cut_size = 64;
  for (auto _ : state) {
    at::Tensor c = MakeCutouts(x, o, g);
    c.sum().backward();
    benchmark::DoNotOptimize(c.data_ptr());
  }
}
BENCHMARK(BM_GenerationCutouts)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_GenerationClipForwardBackward(benchmark::State& state) {
  const GenerationModels* models = ShippedModels();
  if (models == nullptr) return state.SkipWithError("no shapes-world models");
  const simd::Isa softmax_before = AttentionSoftmaxIsa();
  if (state.range(1) >= 0 && !SetAttentionSoftmaxIsa(static_cast<simd::Isa>(state.range(1)))) {
    return state.SkipWithError("this CPU does not run the softmax's kernel family");
  }
  state.SetLabel(std::string("softmax ") + simd::IsaName(AttentionSoftmaxIsa()));
  const at::Tensor x = at::rand({32, 3, 64, 64}).set_requires_grad(true);
  SetSplits(state.range(0));
  for (auto _ : state) {
    at::Tensor e = models->clip->model->EncodeImage(x);
    e.sum().backward();
    benchmark::DoNotOptimize(e.data_ptr());
  }
  SetSplits(2);
  SetAttentionSoftmaxIsa(softmax_before);
}
// softmax: attention's softmax kernel family (-1 the widest this CPU runs, as the server; 0 expf, 1 AVX2,
// 2 AVX-512), compared at the server's split.
BENCHMARK(BM_GenerationClipForwardBackward)
    ->ArgNames({"split", "softmax"})
    ->Args({0, -1})
    ->Args({1, -1})
    ->Args({2, -1})
    ->Args({2, 0})
    ->Args({2, 1})
    ->Args({2, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_GenerationVqganForwardBackward(benchmark::State& state) {
  const GenerationModels* models = ShippedModels();
  if (models == nullptr) return state.SkipWithError("no shapes-world models");
  const at::Tensor z = at::randn({1, models->vqgan->config().embed_dim, 16, 16}).set_requires_grad(true);
  for (auto _ : state) {
    auto q = models->vqgan->module().Quantize(z, vqgan::QuantizeGradient::kStraightThrough);
    at::Tensor x = models->vqgan->module().Decode(q.z_q);
    x.sum().backward();
    benchmark::DoNotOptimize(x.data_ptr());
  }
}
BENCHMARK(BM_GenerationVqganForwardBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace clipserve::generation
