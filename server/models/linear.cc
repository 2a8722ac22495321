#include "server/models/linear.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/autograd.h>

#include <atomic>

namespace clipserve {
namespace {

// Below this many multiply-adds one call is cheaper than waking the pool.
constexpr int64_t kMinSplitWork = int64_t{1} << 20;

std::atomic<bool> split_under_autograd{true};

at::Tensor PlainLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double alpha,
                       double beta) {
  if (!bias.defined()) return alpha == 1.0 ? at::mm(x, weight.t()) : at::mm(x, weight.t()) * alpha;
  return at::addmm(bias, x, weight.t(), beta, alpha);
}

// Whether an [m, k] · [k, n] product is worth splitting `threads` ways by its n output columns.
bool WorthSplitting(int64_t m, int64_t k, int64_t n, int threads) {
  return threads > 1 && !at::in_parallel_region() && m * k * n >= kMinSplitWork && n >= 2 * threads;
}

// alpha · a [m, k] · bᵀ (b [n, k], any strides BLAS takes) + beta · bias [n] (may be undefined) → [m, n], the
// output columns split across `threads` pool tasks, each one single-threaded BLAS call writing in place.
at::Tensor SplitGemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, double alpha, double beta,
                     int threads) {
  const int64_t m = a.size(0), n = b.size(0);
  at::Tensor out = at::empty({m, n}, a.options());
  const at::Tensor ac = a.contiguous();
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
      const at::Tensor w = b.narrow(0, c0, c1 - c0);
      if (bias.defined()) {
        at::addmm_out(slice, bias.narrow(0, c0, c1 - c0), ac, w.t(), beta, alpha);
      } else {
        at::mm_out(slice, ac, w.t());
        if (alpha != 1.0) slice.mul_(alpha);
      }
    }
  });
  return out;
}

// The split GEMM under autograd, for inputs that need a gradient through weights that do not (generation
// back-propagates into the picture through a frozen CLIP): forward split by output columns, backward
// (grad_x = alpha · grad · W) split by input columns. Weight and bias get no gradient, so this path is taken
// only when they do not require one. Under create_graph the backward is a plain, differentiable mm.
class SplitLinearFunction : public torch::autograd::Function<SplitLinearFunction> {
 public:
  // `bias` by pointer: libtorch 1.13's apply() cannot take an undefined tensor argument (and bias needs no
  // gradient); forward runs within apply(), while *bias is alive.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor* bias, double alpha, double beta) {
    ctx->save_for_backward({weight});
    ctx->saved_data["alpha"] = alpha;
    return SplitGemm(x, weight, *bias, alpha, beta, at::get_num_threads());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor weight = ctx->get_saved_variables()[0];
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const at::Tensor& g = grads[0];
    const int threads = at::get_num_threads();
    // grad_x = alpha · g · W = alpha · g · (Wᵀ)ᵀ: the forward's product with Wᵀ as the weight.
    const bool split = !at::GradMode::is_enabled() && WorthSplitting(g.size(0), g.size(1), weight.size(1), threads);
    const at::Tensor grad_x = split ? SplitGemm(g, weight.t(), at::Tensor(), alpha, 0.0, threads)
                                    : PlainLinear(g, weight.t(), at::Tensor(), alpha, 0.0);
    return {grad_x, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

void SetLinearSplitUnderAutograd(bool enabled) { split_under_autograd.store(enabled, std::memory_order_relaxed); }

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double alpha,
                  double beta) {
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  const int threads = at::get_num_threads();
  if (!x.is_cpu() || !WorthSplitting(m, k, n, threads)) return PlainLinear(x, weight, bias, alpha, beta);
  if (!at::GradMode::is_enabled()) return SplitGemm(x, weight, bias, alpha, beta, threads);
  const bool frozen = !weight.requires_grad() && !(bias.defined() && bias.requires_grad());
  if (frozen && x.requires_grad() && split_under_autograd.load(std::memory_order_relaxed)) {
    return SplitLinearFunction::apply(x, weight, &bias, alpha, beta);
  }
  return PlainLinear(x, weight, bias, alpha, beta);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const PackedWeight* packed, const at::Tensor& bias,
                  double alpha, double beta, Epilogue epilogue) {
  const bool grad = at::GradMode::is_enabled();
  if (packed != nullptr && x.size(0) <= PackedLinearMaxRows() && x.is_cpu() && x.scalar_type() == at::kFloat &&
      !grad) {
    return PackedLinear(x, *packed, bias, alpha, beta, epilogue);
  }
  at::Tensor y = Linear(x, weight, bias, alpha, beta);
  if (epilogue == Epilogue::kSilu) y = grad ? at::silu(y) : at::silu_(y);
  return y;
}

}  // namespace clipserve
