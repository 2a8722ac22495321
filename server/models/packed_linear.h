// Inference projections with weights packed once, ahead of time, for clipserve's own GEMM kernels (AVX-512, or
// AVX2 + FMA on CPUs without it).
//
// Linear() hands every projection to BLAS, which re-packs the whole weight matrix on every call. For the row
// counts of interactive serving (a batch-1 ViT-B/32 image is 50 rows) that packing costs as much as the
// multiply itself: measured in bench/clip_bench.cc, OpenBLAS reaches 44 % of its square-sgemm speed on the
// batch-1 image tower's GEMMs. A PackedWeight holds the matrix already in the kernel's layout (32-column
// panels, k-major), so a call only streams it.
//
// Used on CPU float32 without autograd (inference), where the CPU has AVX-512F or AVX2 with FMA; everything else
// (autograd, CUDA, other dtypes, older CPUs, CLIPSERVE_PACKED_GEMM=0) takes Linear(). The packed copy is a
// second copy of the weights: packing is opt-in per model (ClipModelOptions::prepack_cpu_weights).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "server/models/simd_math.h"

namespace clipserve {

// The kernel's layout of a weight [N, K]: ceil(N / 32) panels, each K rows of 32 floats (zero-padded past N).
class PackedWeight {
 public:
  // weight: float32 CPU [N, K]. The packed copy does not follow later changes to `weight`.
  explicit PackedWeight(const at::Tensor& weight);

  int64_t rows() const { return n_; }      // N: output features
  int64_t columns() const { return k_; }   // K: input features
  const float* panel(int64_t p) const { return data_.data_ptr<float>() + p * k_ * kPanelWidth; }
  int64_t panels() const { return (n_ + kPanelWidth - 1) / kPanelWidth; }

  static constexpr int64_t kPanelWidth = 32;

 private:
  int64_t n_, k_;
  at::Tensor data_;
};

// Above this many rows BLAS's own packing is amortised and OpenBLAS's kernel is as fast or faster (ViT-B/32 image
// tower GEMMs on the 2-core AVX-512 CI machine: packed 1.8× faster at 50 rows, ~5 % faster at 400, at 1,600
// 4 % slower with one pass over all rows and even with 192-row passes; docs/benchmarks.md), so Linear() hands
// larger inputs to BLAS even when a packed copy exists.
constexpr int64_t kPackedLinearMaxRows = 512;
// The AVX2 kernel's limit: one ViT-B/32 MLP projection (768 → 3072) on the 2-core AVX2 machine (EPYC, no
// AVX-512), packed against BLAS: 2.9× faster at 1 row, 2.1× at 12, 1.27× at 50, even at 100, 0.79× at 200
// (`BM_ProjectionRows`); whole towers with a limit of 96: batch-1 image (50 rows) 1.05×, a 77-token text 0.91×
// (docs/benchmarks.md). Its 6-row, 16-column blocks reuse each loaded weight half as often as the AVX-512
// kernel's 12 × 32, so BLAS overtakes it sooner.
constexpr int64_t kPackedLinearMaxRowsAvx2 = 64;
// The row limit of the kernel PackedGemmIsa() names (0 where none runs).
int64_t PackedLinearMaxRows();

// What a projection applies to its result before storing it. kSilu: silu(y) = y · sigmoid(y), which with
// alpha = beta = 1.702 on fc1 and 1/1.702 on fc2 gives CLIP's quick_gelu (clip_model.cc).
enum class Epilogue { kNone, kSilu };

// The kernel family PackedLinear runs. At start-up: AVX-512F where the CPU has it, else AVX2 with FMA, else none;
// CLIPSERVE_PACKED_GEMM=0 turns the packed path off and CLIPSERVE_PACKED_GEMM=avx2 picks AVX2 on an AVX-512 CPU
// (to measure it there). Both families read the same PackedWeight layout.
using PackedIsa = simd::Isa;
PackedIsa PackedGemmIsa();
inline const char* PackedIsaName(PackedIsa isa) { return simd::IsaName(isa); }  // "none", "avx2", "avx512"

// True when this process can run the packed kernel: PackedGemmIsa() is not kNone.
bool PackedGemmAvailable();

// Tests and benchmarks: run `isa` from now on; false (and no change) where this CPU cannot. Models are prepacked
// only while the packed GEMM is available, so turning it off (kNone) under a prepacked model sends that model's
// projections to BLAS.
bool SetPackedGemmIsa(PackedIsa isa);

// y = epilogue(alpha · x · Wᵀ + beta · b) for x float32 CPU [M, K] (any row stride, unit column stride), bias
// [N] or undefined; the epilogue runs in registers before the store. Shares the work over torch's intra-op pool
// (by output panels below 200 rows, by rows from 200; one part when called inside a parallel region).
// Requires PackedGemmAvailable().
at::Tensor PackedLinear(const at::Tensor& x, const PackedWeight& weight, const at::Tensor& bias, double alpha = 1.0,
                        double beta = 1.0, Epilogue epilogue = Epilogue::kNone);

}  // namespace clipserve
