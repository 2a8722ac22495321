#include "server/models/attention.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "server/models/cpu_threads.h"
#include "server/models/simd_math.h"
#include "server/models/torch_compat.h"

namespace clipserve {
namespace {

// Fortran BLAS sgemm, resolved at run time: libtorch reaches it through libblas.so.3 on Debian (OpenBLAS);
// builds whose BLAS is hidden inside libtorch (official MKL builds) do not export it and take the torch path.
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                         const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                         const float* beta, float* c, const int* ldc);

SgemmFn Sgemm() {
  static const SgemmFn fn = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "sgemm_"));
  return fn;
}

// Runs f(begin, end) over the per-(batch, head) tasks [0, tasks), whose GEMMs are len × len × hd, on torch's pool.
// OpenBLAS parallelises a GEMM with its own threads when m·n·k exceeds 65,536 × GEMM_MULTITHREAD_THRESHOLD (4 by
// default): from 65 tokens at head size 64, 91 at 32. Such calls made from several pool threads at once queue for
// its one thread server and spin (BM_SelfAttentionUnderAutograd, 197 tokens: 7.5x slower than with BLAS on one
// thread). So when BLAS may use several threads (trainers; a server configured so) and would use them here, the
// tasks run one after another on the calling thread and BLAS parallelises each of their GEMMs.
template <typename F>
void ForEachHeadTask(int64_t tasks, int64_t len, int64_t hd, const F& f) {
  constexpr int64_t kOpenBlasThreadedGemmMnk = int64_t{65536} * 4;
  if (len * len * hd > kOpenBlasThreadedGemmMnk && BlasThreads() > 1) {
    f(int64_t{0}, tasks);
  } else {
    at::parallel_for(0, tasks, 1, f);
  }
}

// Row-wise softmax of a len × len row-major matrix, in place; with `causal`, entries j > i are masked.
void SoftmaxRowsScalar(float* s, int len, bool causal) {
  for (int i = 0; i < len; ++i) {
    float* row = s + static_cast<ptrdiff_t>(i) * len;
    const int n = causal ? i + 1 : len;
    float max = row[0];
    for (int j = 1; j < n; ++j) max = std::max(max, row[j]);
    float sum = 0.0f;
    for (int j = 0; j < n; ++j) {
      row[j] = std::exp(row[j] - max);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < n; ++j) row[j] *= inv;
    for (int j = n; j < len; ++j) row[j] = 0.0f;
  }
}

#ifdef CLIPSERVE_SIMD_X86
// Horizontal max and sum of a vector register's lanes (__m256 or __m512), through memory (GCC 12's
// _mm512_reduce_* trip -Wmaybe-uninitialized in its own header).
template <typename V>
float HorizontalMax(const V& v) {
  float lanes[sizeof(V) / sizeof(float)];
  std::memcpy(lanes, &v, sizeof(V));
  return *std::max_element(std::begin(lanes), std::end(lanes));
}
template <typename V>
float HorizontalSum(const V& v) {
  float lanes[sizeof(V) / sizeof(float)];
  std::memcpy(lanes, &v, sizeof(V));
  float sum = 0.0f;
  for (float x : lanes) sum += x;
  return sum;
}

// SoftmaxRowsScalar, 16 entries at a time (simd::Exp). A batch-8 ViT-B/32 block takes 240,000 exponentials;
// through scalar expf they were most of its attention time.
__attribute__((target("avx512f"))) void SoftmaxRowsAvx512(float* s, int len, bool causal) {
  for (int i = 0; i < len; ++i) {
    float* row = s + static_cast<ptrdiff_t>(i) * len;
    const int n = causal ? i + 1 : len;
    auto mask = [n](int j) {
      return n - j >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - j)) - 1);
    };
    __m512 max = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    // Masked loads throughout: the last row's tail may end at the end of the buffer (a plain 16-wide load read
    // up to 60 bytes past it).
    for (int j = 0; j < n; j += 16) {
      const __mmask16 m = mask(j);
      max = _mm512_mask_max_ps(max, m, max, _mm512_maskz_loadu_ps(m, row + j));
    }
    const __m512 row_max = _mm512_set1_ps(HorizontalMax(max));
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
      const __mmask16 m = mask(j);
      const __m512 e = simd::Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), row_max));
      sum = _mm512_mask_add_ps(sum, m, sum, e);
      _mm512_mask_storeu_ps(row + j, m, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / HorizontalSum(sum));
    for (int j = 0; j < n; j += 16) {
      const __mmask16 m = mask(j);
      _mm512_mask_storeu_ps(row + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + j), inv));
    }
    for (int j = n; j < len; ++j) row[j] = 0.0f;
  }
}

// SoftmaxRowsAvx512 for CPUs without AVX-512: 8 entries at a time, the tail of a row through AVX2's masked
// loads and stores (vmaskmovps, which do not touch the masked-off memory).
__attribute__((target("avx2,fma"))) void SoftmaxRowsAvx2(float* s, int len, bool causal) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int i = 0; i < len; ++i) {
    float* row = s + static_cast<ptrdiff_t>(i) * len;
    const int n = causal ? i + 1 : len;
    const int full = n - n % 8;
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - full), lane);
    const __m256 tail_mask = _mm256_castsi256_ps(tail);
    __m256 max = neg_inf;
    for (int j = 0; j < full; j += 8) max = _mm256_max_ps(max, _mm256_loadu_ps(row + j));
    if (full < n) max = _mm256_max_ps(max, _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(row + full, tail), tail_mask));
    const __m256 row_max = _mm256_set1_ps(HorizontalMax(max));
    __m256 sum = _mm256_setzero_ps();
    for (int j = 0; j < full; j += 8) {
      const __m256 e = simd::Exp(_mm256_sub_ps(_mm256_loadu_ps(row + j), row_max));
      sum = _mm256_add_ps(sum, e);
      _mm256_storeu_ps(row + j, e);
    }
    if (full < n) {
      const __m256 e =
          _mm256_and_ps(simd::Exp(_mm256_sub_ps(_mm256_maskload_ps(row + full, tail), row_max)), tail_mask);
      sum = _mm256_add_ps(sum, e);
      _mm256_maskstore_ps(row + full, tail, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / HorizontalSum(sum));
    for (int j = 0; j < full; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), inv));
    if (full < n) _mm256_maskstore_ps(row + full, tail, _mm256_mul_ps(_mm256_maskload_ps(row + full, tail), inv));
    for (int j = n; j < len; ++j) row[j] = 0.0f;
  }
}
#endif

// One (batch, head): out[L, hd] (row stride ldo) = softmax(scale · q kᵀ) v, where q, k, v are [L, hd] with row
// stride ldqkv. Row-major matrices are handed to column-major BLAS as their transposes.
void AttendOneHead(SgemmFn sgemm, const float* q, const float* k, const float* v, int ldqkv, float* out, int ldo,
                   int len, int hd, float scale, bool causal, float* scores) {
  const float zero = 0.0f, one = 1.0f;
  // scoresᵀ (column-major) = kᶜᵀ · qᶜ, i.e. scores (row-major) = q · kᵀ.
  sgemm("T", "N", &len, &len, &hd, &scale, k, &ldqkv, q, &ldqkv, &zero, scores, &len);
  AttentionSoftmaxRows(scores, len, causal);
  // outᵀ (column-major) = vᶜ · scoresᶜ, i.e. out (row-major) = scores · v.
  sgemm("N", "N", &hd, &len, &len, &one, v, &ldqkv, scores, &len, &zero, out, &ldo);
}

at::Tensor TorchAttention(const at::Tensor& qkv, int64_t batch, int64_t len, int64_t heads, bool causal) {
  const int64_t d = qkv.size(1) / 3, hd = d / heads;
  at::Tensor t = qkv.view({batch, len, 3, heads, hd}).permute({2, 0, 3, 1, 4});
  at::Tensor out = torch_compat::ScaledDotProductAttention(t[0], t[1], t[2], causal);
  return out.transpose(1, 2).reshape({batch * len, d});
}

// Forward for every (batch, head) on torch's pool. `probs`, when given, receives each head's softmax matrix
// ([batch · heads, len, len], row-major), kept for the backward; otherwise a per-thread scratch holds it.
at::Tensor AttendAllHeads(SgemmFn sgemm, const at::Tensor& qkv, int64_t batch, int64_t len, int64_t heads, bool causal,
                          float* probs) {
  const int64_t d = qkv.size(1) / 3, hd = d / heads;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  at::Tensor out = at::empty({batch * len, d}, qkv.options());
  const float* in = qkv.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int ld_in = static_cast<int>(3 * d), ld_out = static_cast<int>(d);
  // Raw pointers only from here on: the pool threads touch no tensors, so no autograd or inference-mode state
  // is involved.
  ForEachHeadTask(batch * heads, len, hd, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;
    if (probs == nullptr) scratch.resize(static_cast<size_t>(len * len));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / heads, h = task % heads;
      const float* rows = in + b * len * ld_in;
      AttendOneHead(sgemm, rows + h * hd, rows + d + h * hd, rows + 2 * d + h * hd, ld_in,
                    dst + b * len * ld_out + h * hd, ld_out, static_cast<int>(len), static_cast<int>(hd), scale, causal,
                    probs != nullptr ? probs + task * len * len : scratch.data());
    }
  });
  return out;
}

// The gradient of one (batch, head), all matrices row-major as in AttendOneHead: with P = softmax(S),
// S = scale · q kᵀ and out = P v, given g = d out ([L, hd], stride ldg):
//   dv = Pᵀ g,  dP = g vᵀ,  dS = P ∘ (dP − rowsum(dP ∘ P)),  dq = scale · dS k,  dk = scale · dSᵀ q.
// dq, dk, dv are written (not added) with row stride ldqkv; `work` holds L × L floats. Masked entries have
// P = 0, so their dS is 0 too.
void AttendOneHeadBackward(SgemmFn sgemm, const float* q, const float* k, const float* v, int ldqkv, const float* p,
                           const float* g, int ldg, float* dq, float* dk, float* dv, int len, int hd, float scale,
                           float* work) {
  const float zero = 0.0f, one = 1.0f;
  // dvᵀ (column-major) = gᶜ · Pᶜᵀ.
  sgemm("N", "T", &hd, &len, &len, &one, g, &ldg, p, &len, &zero, dv, &ldqkv);
  // dPᵀ (column-major) = vᶜᵀ · gᶜ.
  sgemm("T", "N", &len, &len, &hd, &one, v, &ldqkv, g, &ldg, &zero, work, &len);
  for (int i = 0; i < len; ++i) {
    const float* pr = p + static_cast<ptrdiff_t>(i) * len;
    float* w = work + static_cast<ptrdiff_t>(i) * len;
    float dot = 0.0f;
    for (int j = 0; j < len; ++j) dot += w[j] * pr[j];
    for (int j = 0; j < len; ++j) w[j] = pr[j] * (w[j] - dot);
  }
  // dqᵀ (column-major) = kᶜ · dSᶜ;  dkᵀ = qᶜ · dSᶜᵀ.
  sgemm("N", "N", &hd, &len, &len, &scale, k, &ldqkv, work, &len, &zero, dq, &ldqkv);
  sgemm("N", "T", &hd, &len, &len, &scale, q, &ldqkv, work, &len, &zero, dk, &ldqkv);
}

// SelfAttention under autograd on the CPU: the inference path's per-(batch, head) tasks forward, keeping the
// softmax matrices, and the same split backward. Under create_graph the backward recomputes the attention
// with torch ops and differentiates that, so higher derivatives stay correct.
class SplitAttentionFunction : public torch::autograd::Function<SplitAttentionFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& qkv, int64_t batch, int64_t len,
                            int64_t heads, bool causal) {
    at::Tensor probs = at::empty({batch * heads, len, len}, qkv.options());
    at::Tensor out = AttendAllHeads(Sgemm(), qkv, batch, len, heads, causal, probs.data_ptr<float>());
    ctx->save_for_backward({qkv, probs});
    ctx->saved_data["batch"] = batch;
    ctx->saved_data["len"] = len;
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["causal"] = causal;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& qkv = saved[0];
    const at::Tensor& probs = saved[1];
    const int64_t batch = ctx->saved_data["batch"].toInt(), len = ctx->saved_data["len"].toInt();
    const int64_t heads = ctx->saved_data["heads"].toInt();
    const bool causal = ctx->saved_data["causal"].toBool();
    const torch::autograd::variable_list none(4);
    if (at::GradMode::is_enabled()) {
      const at::Tensor out = TorchAttention(qkv, batch, len, heads, causal);
      torch::autograd::variable_list result = torch::autograd::grad({out}, {qkv}, {grads[0]}, /*retain_graph=*/true,
                                                                    /*create_graph=*/true);
      result.insert(result.end(), none.begin(), none.end());
      return result;
    }
    const at::Tensor g = grads[0].contiguous();
    const int64_t d = qkv.size(1) / 3, hd = d / heads;
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
    at::Tensor dqkv = at::empty_like(qkv);
    const float* in = qkv.data_ptr<float>();
    const float* p = probs.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    float* dst = dqkv.data_ptr<float>();
    const SgemmFn sgemm = Sgemm();
    const int ld = static_cast<int>(3 * d), ldg = static_cast<int>(d);
    ForEachHeadTask(batch * heads, len, hd, [&](int64_t begin, int64_t end) {
      thread_local std::vector<float> work;
      work.resize(static_cast<size_t>(len * len));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / heads, h = task % heads;
        const float* rows = in + b * len * ld + h * hd;
        float* drows = dst + b * len * ld + h * hd;
        AttendOneHeadBackward(sgemm, rows, rows + d, rows + 2 * d, ld, p + task * len * len,
                              gp + b * len * ldg + h * hd, ldg, drows, drows + d, drows + 2 * d, static_cast<int>(len),
                              static_cast<int>(hd), scale, work.data());
      }
    });
    torch::autograd::variable_list result{dqkv};
    result.insert(result.end(), none.begin(), none.end());
    return result;
  }
};

std::atomic<bool> split_under_autograd{true};
std::atomic<simd::Isa>& SoftmaxIsa() {
  static std::atomic<simd::Isa> isa{simd::WidestIsa()};
  return isa;
}

}  // namespace

void SetAttentionSplitUnderAutograd(bool enabled) { split_under_autograd.store(enabled, std::memory_order_relaxed); }

at::Tensor SelfAttention(const at::Tensor& qkv, int64_t batch, int64_t len, int64_t heads, bool causal) {
  const SgemmFn sgemm = Sgemm();
  if (sgemm == nullptr || !qkv.is_cpu() || qkv.scalar_type() != at::kFloat || !qkv.is_contiguous()) {
    return TorchAttention(qkv, batch, len, heads, causal);
  }
  if (!at::GradMode::is_enabled()) return AttendAllHeads(sgemm, qkv, batch, len, heads, causal, nullptr);
  if (qkv.requires_grad() && split_under_autograd.load(std::memory_order_relaxed)) {
    return SplitAttentionFunction::apply(qkv, batch, len, heads, causal);
  }
  return TorchAttention(qkv, batch, len, heads, causal);
}

void AttentionSoftmaxRows(float* s, int len, bool causal) {
  switch (SoftmaxIsa().load(std::memory_order_relaxed)) {
#ifdef CLIPSERVE_SIMD_X86
    case simd::Isa::kAvx512:
      return SoftmaxRowsAvx512(s, len, causal);
    case simd::Isa::kAvx2:
      return SoftmaxRowsAvx2(s, len, causal);
#endif
    default:
      return SoftmaxRowsScalar(s, len, causal);
  }
}

simd::Isa AttentionSoftmaxIsa() { return SoftmaxIsa().load(std::memory_order_relaxed); }

bool SetAttentionSoftmaxIsa(simd::Isa isa) {
  if (!simd::Supports(isa)) return false;
  SoftmaxIsa().store(isa, std::memory_order_relaxed);
  return true;
}

}  // namespace clipserve
