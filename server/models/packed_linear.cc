#include "server/models/packed_linear.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <ATen/Parallel.h>

#include "server/models/simd_math.h"  // CLIPSERVE_SIMD_X86, <immintrin.h>

namespace clipserve {
namespace {

constexpr int64_t kNr = PackedWeight::kPanelWidth;  // output columns per panel: two AVX-512 registers, four AVX2
constexpr int64_t kKc = 256;   // depth per pass: a 32 × 256 panel slice (32 KiB) stays in L1 across row blocks
// Rows per pass: up to kPackedLinearMaxRows, all rows in one pass (their 512 × 256 slice of x, 512 KiB, stays in
// L2), so every weight slice is streamed from memory once per call. Measured: 192-row passes were 5 % slower at
// 400 rows (each pass streams the weights again).
constexpr int64_t kMc = 512;
constexpr int kMrMax = 12;     // rows per kernel call: 24 accumulators + 2 panel registers + 1 broadcast
constexpr int64_t kLineFloats = 16;  // one 64-byte cache line
// How a call is shared between threads. Few rows: by output panels, so each thread streams only its share of
// the weights (batch 1 is waiting for memory; splitting 50 rows by rows instead made the batch-1 ViT-B/32 image
// tower 47 ms against 36). Many rows: by rows, so each thread reads the input rows that the previous op (layer
// norm, attention, the MLP's first projection) left in its own core's cache; split by panels every thread reads
// all rows, half of them from the other core: measured on the 2-core CI machine, the batch-8 image tower took
// 277–288 ms split by panels against 258–260 ms by rows, while the GEMMs-only loop, whose input nobody writes,
// ran the same either way (docs/benchmarks.md). At 200 rows each thread still has 100 rows of work per weight
// slice, far from the memory bound.
constexpr int64_t kSplitRowsFrom = 200;

#ifdef CLIPSERVE_SIMD_X86

// A kernel's share of the next weight slice, `lines` cache lines from `pf`, prefetched into L2 spread evenly over
// its k loop of kc steps (Step(k) each step), and what is left when there are more lines than steps (a block
// alone on a panel) at once after the loop (Rest()). (Issuing several per step inside the k loop instead, with an
// inner while loop, made the batch-1 tower GEMMs 45 % slower: 44 against 30 ms.)
class SpreadPrefetch {
 public:
  SpreadPrefetch(const float* pf, int64_t lines, int64_t kc)
      : pf_(pf), lines_(lines), every_(lines > 0 ? std::max<int64_t>(1, kc / lines) : kc + 1) {}
  void Step(int64_t k) {
    if (k == next_ && done_ < lines_) {
      _mm_prefetch(reinterpret_cast<const char*>(pf_ + done_ * kLineFloats), _MM_HINT_T1);
      ++done_;
      next_ += every_;
    }
  }
  void Rest() {
    for (; done_ < lines_; ++done_) _mm_prefetch(reinterpret_cast<const char*>(pf_ + done_ * kLineFloats), _MM_HINT_T1);
  }

 private:
  const float* const pf_;
  const int64_t lines_, every_;
  int64_t next_ = 0, done_ = 0;
};

// One row block × one panel over kc depth: c[0..MR) × [0..32) (+)= a[0..MR) × b. On the first pass the
// accumulators start at zero, on later passes from c; on the last pass alpha and beta · bias are applied before
// the store. m0/m1 mask the panel's columns past N. Spread over the k loop, the kernel prefetches `pf_lines`
// cache lines from `pf` into L2: its share of the weight slice the next call will stream (see GemmPanels).
template <int MR, bool kSilu>
__attribute__((target("avx512f"))) void Kernel(const float* a, int64_t lda, const float* b, int64_t kc, float* c,
                                               int64_t ldc, bool first, bool last, const float* bias, float alpha,
                                               float beta, __mmask16 m0, __mmask16 m1, const float* pf,
                                               int64_t pf_lines) {
  __m512 lo[MR], hi[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (first) {
      lo[i] = _mm512_setzero_ps();
      hi[i] = _mm512_setzero_ps();
    } else {
      lo[i] = _mm512_maskz_loadu_ps(m0, c + i * ldc);
      hi[i] = _mm512_maskz_loadu_ps(m1, c + i * ldc + 16);
    }
  }
  SpreadPrefetch prefetch(pf, pf_lines, kc);
  for (int64_t k = 0; k < kc; ++k) {
    prefetch.Step(k);
    const __m512 b0 = _mm512_load_ps(b + k * kNr);
    const __m512 b1 = _mm512_load_ps(b + k * kNr + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * lda + k]);
      lo[i] = _mm512_fmadd_ps(av, b0, lo[i]);
      hi[i] = _mm512_fmadd_ps(av, b1, hi[i]);
    }
  }
  if (last) {
    const __m512 scale = _mm512_set1_ps(alpha);
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias != nullptr) {
      const __m512 bscale = _mm512_set1_ps(beta);
      bias0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, bias), bscale);
      bias1 = _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, bias + 16), bscale);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      lo[i] = _mm512_fmadd_ps(lo[i], scale, bias0);
      hi[i] = _mm512_fmadd_ps(hi[i], scale, bias1);
      if constexpr (kSilu) {
        lo[i] = simd::Silu(lo[i]);
        hi[i] = simd::Silu(hi[i]);
      }
    }
  }
  prefetch.Rest();
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    _mm512_mask_storeu_ps(c + i * ldc, m0, lo[i]);
    _mm512_mask_storeu_ps(c + i * ldc + 16, m1, hi[i]);
  }
}

using KernelFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, bool, bool, const float*,
                          float, float, __mmask16, __mmask16, const float*, int64_t);
// kKernels[silu][rows].
template <bool kSilu>
constexpr std::array<KernelFn, kMrMax + 1> KernelTable() {
  return {nullptr,          Kernel<1, kSilu>,  Kernel<2, kSilu>,  Kernel<3, kSilu>, Kernel<4, kSilu>,
          Kernel<5, kSilu>, Kernel<6, kSilu>,  Kernel<7, kSilu>,  Kernel<8, kSilu>, Kernel<9, kSilu>,
          Kernel<10, kSilu>, Kernel<11, kSilu>, Kernel<12, kSilu>};
}
constexpr std::array<KernelFn, kMrMax + 1> kKernels[2] = {KernelTable<false>(), KernelTable<true>()};

__mmask16 ColumnMask(int64_t columns) {
  return columns >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << columns) - 1);
}

// The AVX2 + FMA kernel, for CPUs without AVX-512 (AMD's before Zen 4, older Intel): the same panels, each
// multiplied as two halves of 16 columns (two ymm registers per row), so a call holds at most 6 rows: 12
// accumulators, 2 panel registers and one broadcast fill the 16 ymm registers. `b` points at the half's first
// column; `cols` (1..16) is how many of its columns exist (masked loads and stores past N, which on AVX2 are
// slow, so only then). Prefetching as the AVX-512 kernel does.
constexpr int kMrMaxAvx2 = 6;

template <int MR, bool kSilu>
__attribute__((target("avx2,fma"))) void KernelAvx2(const float* a, int64_t lda, const float* b, int64_t kc,
                                                    float* c, int64_t ldc, bool first, bool last, const float* bias,
                                                    float alpha, float beta, int64_t cols, const float* pf,
                                                    int64_t pf_lines) {
  const bool full = cols >= 16;
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(cols, 8))), iota);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::max<int64_t>(cols - 8, 0))), iota);
  __m256 lo[MR], hi[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (first) {
      lo[i] = _mm256_setzero_ps();
      hi[i] = _mm256_setzero_ps();
    } else if (full) {
      lo[i] = _mm256_loadu_ps(c + i * ldc);
      hi[i] = _mm256_loadu_ps(c + i * ldc + 8);
    } else {
      lo[i] = _mm256_maskload_ps(c + i * ldc, m0);
      hi[i] = _mm256_maskload_ps(c + i * ldc + 8, m1);
    }
  }
  SpreadPrefetch prefetch(pf, pf_lines, kc);
  for (int64_t k = 0; k < kc; ++k) {
    prefetch.Step(k);
    const __m256 b0 = _mm256_load_ps(b + k * kNr);
    const __m256 b1 = _mm256_load_ps(b + k * kNr + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * lda + k);
      lo[i] = _mm256_fmadd_ps(av, b0, lo[i]);
      hi[i] = _mm256_fmadd_ps(av, b1, hi[i]);
    }
  }
  if (last) {
    const __m256 scale = _mm256_set1_ps(alpha);
    __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
    if (bias != nullptr) {
      const __m256 bscale = _mm256_set1_ps(beta);
      bias0 = _mm256_mul_ps(_mm256_maskload_ps(bias, m0), bscale);
      bias1 = _mm256_mul_ps(_mm256_maskload_ps(bias + 8, m1), bscale);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      lo[i] = _mm256_fmadd_ps(lo[i], scale, bias0);
      hi[i] = _mm256_fmadd_ps(hi[i], scale, bias1);
      if constexpr (kSilu) {
        lo[i] = simd::Silu(lo[i]);
        hi[i] = simd::Silu(hi[i]);
      }
    }
  }
  prefetch.Rest();
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (full) {
      _mm256_storeu_ps(c + i * ldc, lo[i]);
      _mm256_storeu_ps(c + i * ldc + 8, hi[i]);
    } else {
      _mm256_maskstore_ps(c + i * ldc, m0, lo[i]);
      _mm256_maskstore_ps(c + i * ldc + 8, m1, hi[i]);
    }
  }
}

using KernelAvx2Fn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, bool, bool,
                              const float*, float, float, int64_t, const float*, int64_t);
template <bool kSilu>
constexpr std::array<KernelAvx2Fn, kMrMaxAvx2 + 1> KernelAvx2Table() {
  return {nullptr,
          KernelAvx2<1, kSilu>,
          KernelAvx2<2, kSilu>,
          KernelAvx2<3, kSilu>,
          KernelAvx2<4, kSilu>,
          KernelAvx2<5, kSilu>,
          KernelAvx2<6, kSilu>};
}
constexpr std::array<KernelAvx2Fn, kMrMaxAvx2 + 1> kKernelsAvx2[2] = {KernelAvx2Table<false>(),
                                                                      KernelAvx2Table<true>()};

// Panels [p0, p1) of the output for all m rows.
//
// At serving row counts the weights do not stay in cache from one call to the next (ViT-B/32: 340 MB), so each
// panel slice comes from memory, and the hardware prefetcher alone leaves the first row block waiting for it:
// measured on the 2-core CI machine, batch-1 image tower GEMMs took 41 ms with the weights streamed against
// 27 ms with one layer's weights (cache-resident) reused. So while a slice is multiplied, its row blocks prefetch
// the slice that comes next (the next panel at this depth, else the part's first panel one depth further) into
// L2, spread evenly over their k loops: 30 ms, 1.4× faster (docs/benchmarks.md).
//
// With `avx2`, each panel is two halves of 16 columns (KernelAvx2), each half taking its row blocks in turn; the
// next slice's prefetch is spread over all of them.
void GemmPanels(const float* a, int64_t lda, int64_t m, const PackedWeight& w, const float* bias, float alpha,
                float beta, bool silu, bool avx2, float* c, int64_t p0, int64_t p1) {
  const auto& kernels = kKernels[silu ? 1 : 0];
  const auto& kernels_avx2 = kKernelsAvx2[silu ? 1 : 0];
  const int64_t mr_max = avx2 ? kMrMaxAvx2 : kMrMax;
  const int64_t k = w.columns(), n = w.rows();
  for (int64_t k0 = 0; k0 < k; k0 += kKc) {
    const int64_t kc = std::min(kKc, k - k0);
    const bool first = k0 == 0, last = k0 + kc == k;
    // Passes and row blocks of balanced sizes (50 rows: 5 blocks of 10, not 4 × 12 + 2).
    const int64_t passes = (m + kMc - 1) / kMc;
    for (int64_t pass = 0, r0 = 0; pass < passes; ++pass) {
      const int64_t mc = m * (pass + 1) / passes - m * pass / passes;
      const int64_t blocks = (mc + mr_max - 1) / mr_max;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t col = p * kNr, cols = std::min(kNr, n - col);
        const __mmask16 m0 = ColumnMask(cols), m1 = ColumnMask(std::max<int64_t>(cols - 16, 0));
        const float* b = w.panel(p) + k0 * kNr;
        const float* bias_p = bias == nullptr ? nullptr : bias + col;
        const float* next = nullptr;
        int64_t next_lines = 0;  // the next slice's size in cache lines (kc rows of 32 floats: 2 lines each)
        if (p + 1 < p1) {
          next = w.panel(p + 1) + k0 * kNr, next_lines = kc * kNr / kLineFloats;
        } else if (k0 + kc < k) {
          next = w.panel(p0) + (k0 + kc) * kNr, next_lines = std::min(kKc, k - k0 - kc) * kNr / kLineFloats;
        }
        // AVX-512 takes the whole panel per call, AVX2 each 16-column half in turn (KernelAvx2).
        const int halves = avx2 && cols > 16 ? 2 : 1;
        const int64_t calls = halves * blocks;
        for (int half = 0; half < halves; ++half) {
          int64_t r = r0;
          for (int64_t block = 0; block < blocks; ++block) {
            const int64_t rows = mc * (block + 1) / blocks - mc * block / blocks;
            const int64_t call = half * blocks + block;
            const int64_t l0 = next_lines * call / calls, l1 = next_lines * (call + 1) / calls;
            const float* pf = next == nullptr ? nullptr : next + l0 * kLineFloats;
            if (avx2) {
              kernels_avx2[rows](a + r * lda + k0, lda, b + half * 16, kc, c + r * n + col + half * 16, n, first,
                                 last, bias_p == nullptr ? nullptr : bias_p + half * 16, alpha, beta,
                                 std::min<int64_t>(cols - half * 16, 16), pf, l1 - l0);
            } else {
              kernels[rows](a + r * lda + k0, lda, b, kc, c + r * n + col, n, first, last, bias_p, alpha, beta, m0,
                             m1, pf, l1 - l0);
            }
            r += rows;
          }
        }
      }
      r0 += mc;
    }
  }
}

#endif  // CLIPSERVE_SIMD_X86

}  // namespace

PackedWeight::PackedWeight(const at::Tensor& weight) : n_(weight.size(0)), k_(weight.size(1)) {
  TORCH_CHECK(weight.dim() == 2 && weight.is_cpu() && weight.scalar_type() == at::kFloat,
              "PackedWeight expects a float32 CPU matrix, got ", weight.scalar_type(), weight.sizes(), " on ",
              weight.device());
  // [N, K] → [panels, K, 32], zero-padded to a whole number of panels. at::empty is 64-byte aligned, so every
  // panel row is one aligned pair of AVX-512 loads.
  at::Tensor padded = weight.detach();
  const int64_t padded_n = panels() * kPanelWidth;
  if (padded_n != n_) {
    padded = at::zeros({padded_n, k_}, weight.options());
    padded.narrow(0, 0, n_).copy_(weight.detach());
  }
  data_ = padded.view({panels(), kPanelWidth, k_}).permute({0, 2, 1}).contiguous();
}

namespace {

std::atomic<PackedIsa>& CurrentIsa() {
  static std::atomic<PackedIsa> isa{[] {
#ifdef CLIPSERVE_SIMD_X86
    const char* env = std::getenv("CLIPSERVE_PACKED_GEMM");
    if (env != nullptr && std::strcmp(env, "0") == 0) return PackedIsa::kNone;
    if (env != nullptr && std::strcmp(env, "avx2") == 0) {
      return simd::HasAvx2Fma() ? PackedIsa::kAvx2 : PackedIsa::kNone;
    }
    return simd::WidestIsa();
#else
    return PackedIsa::kNone;
#endif
  }()};
  return isa;
}

}  // namespace

PackedIsa PackedGemmIsa() { return CurrentIsa().load(std::memory_order_relaxed); }

bool PackedGemmAvailable() { return PackedGemmIsa() != PackedIsa::kNone; }

int64_t PackedLinearMaxRows() {
  switch (PackedGemmIsa()) {
    case PackedIsa::kNone:
      return 0;
    case PackedIsa::kAvx2:
      return kPackedLinearMaxRowsAvx2;
    case PackedIsa::kAvx512:
      return kPackedLinearMaxRows;
  }
  return 0;
}

bool SetPackedGemmIsa(PackedIsa isa) {
  if (!simd::Supports(isa)) return false;
  CurrentIsa().store(isa, std::memory_order_relaxed);
  return true;
}

at::Tensor PackedLinear(const at::Tensor& x, const PackedWeight& weight, const at::Tensor& bias, double alpha,
                        double beta, Epilogue epilogue) {
  const PackedIsa isa = PackedGemmIsa();
  TORCH_CHECK(isa != PackedIsa::kNone, "PackedLinear: the packed GEMM is not available on this CPU");
  TORCH_CHECK(x.dim() == 2 && x.is_cpu() && x.scalar_type() == at::kFloat && x.size(1) == weight.columns(),
              "PackedLinear expects float32 CPU x [M, ", weight.columns(), "], got ", x.scalar_type(), x.sizes());
  TORCH_CHECK(!bias.defined() || (bias.numel() == weight.rows() && bias.scalar_type() == at::kFloat),
              "PackedLinear: bias must be float32 [", weight.rows(), "]");
#ifdef CLIPSERVE_SIMD_X86
  const at::Tensor a = x.stride(1) == 1 ? x : x.contiguous();
  const at::Tensor b = bias.defined() ? bias.contiguous() : bias;
  const int64_t m = a.size(0), n = weight.rows();
  if (weight.columns() == 0) {  // an empty sum: only the bias term is left
    at::Tensor out = b.defined() ? (b * beta).expand({m, n}).contiguous() : at::zeros({m, n}, a.options());
    return epilogue == Epilogue::kSilu ? at::silu_(out) : out;
  }
  at::Tensor out = at::empty({m, n}, a.options());
  if (m == 0) return out;
  const float* a_ptr = a.data_ptr<float>();
  const float* bias_ptr = b.defined() ? b.data_ptr<float>() : nullptr;
  float* out_ptr = out.data_ptr<float>();
  const int64_t lda = a.stride(0);
  const int64_t panels = weight.panels();
  const bool by_rows = m >= kSplitRowsFrom;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t parts = std::min<int64_t>(threads, by_rows ? (m + kMrMax - 1) / kMrMax : panels);
  const bool avx2 = isa == PackedIsa::kAvx2;
  // Raw pointers only inside the pool: no tensor (and so no autograd or inference-mode state) is touched there.
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      // This part's rows [r0, r1) × panels [p0, p1): a share of one, all of the other.
      const int64_t r0 = by_rows ? m * part / parts : 0, r1 = by_rows ? m * (part + 1) / parts : m;
      const int64_t p0 = by_rows ? 0 : panels * part / parts, p1 = by_rows ? panels : panels * (part + 1) / parts;
      GemmPanels(a_ptr + r0 * lda, lda, r1 - r0, weight, bias_ptr, static_cast<float>(alpha),
                 static_cast<float>(beta), epilogue == Epilogue::kSilu, avx2, out_ptr + r0 * n, p0, p1);
    }
  });
  return out;
#else
  (void)alpha;
  (void)beta;
  (void)epilogue;
  return at::Tensor();
#endif
}

}  // namespace clipserve
