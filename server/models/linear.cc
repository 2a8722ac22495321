#include "server/models/linear.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

namespace clipserve {
namespace {

// Below this many multiply-adds one call is cheaper than waking the pool.
constexpr int64_t kMinSplitWork = int64_t{1} << 20;

at::Tensor PlainLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double alpha,
                       double beta) {
  if (!bias.defined()) return alpha == 1.0 ? at::mm(x, weight.t()) : at::mm(x, weight.t()) * alpha;
  return at::addmm(bias, x, weight.t(), beta, alpha);
}

}  // namespace

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double alpha,
                  double beta) {
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  const int threads = at::get_num_threads();
  const bool split = threads > 1 && x.is_cpu() && !at::GradMode::is_enabled() && !at::in_parallel_region() &&
                     m * k * n >= kMinSplitWork && n >= 2 * threads;
  if (!split) return PlainLinear(x, weight, bias, alpha, beta);

  at::Tensor out = at::empty({m, n}, x.options());
  const at::Tensor xc = x.contiguous();
  // Pool threads do not inherit this thread's inference mode; without it, writing into `out` (an inference
  // tensor) would be refused.
  const at::ThreadLocalState state;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t part = begin; part < end; ++part) {
      // Column ranges rounded to 16 floats (one AVX-512 register) so parts start on vector boundaries.
      const int64_t c0 = (n * part / threads) & ~int64_t{15};
      const int64_t c1 = part + 1 == threads ? n : (n * (part + 1) / threads) & ~int64_t{15};
      if (c1 <= c0) continue;
      at::Tensor slice = out.narrow(1, c0, c1 - c0);
      const at::Tensor w = weight.narrow(0, c0, c1 - c0);
      if (bias.defined()) {
        at::addmm_out(slice, bias.narrow(0, c0, c1 - c0), xc, w.t(), beta, alpha);
      } else {
        at::mm_out(slice, xc, w.t());
        if (alpha != 1.0) slice.mul_(alpha);
      }
    }
  });
  return out;
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const PackedWeight* packed, const at::Tensor& bias,
                  double alpha, double beta, Epilogue epilogue) {
  const bool grad = at::GradMode::is_enabled();
  if (packed != nullptr && x.size(0) <= kPackedLinearMaxRows && x.is_cpu() && x.scalar_type() == at::kFloat && !grad) {
    return PackedLinear(x, *packed, bias, alpha, beta, epilogue);
  }
  at::Tensor y = Linear(x, weight, bias, alpha, beta);
  if (epilogue == Epilogue::kSilu) y = grad ? at::silu(y) : at::silu_(y);
  return y;
}

}  // namespace clipserve
