// y = alpha · x · Wᵀ + beta · b, the projection every transformer block is made of, done the fastest way the
// current thread configuration allows.
//
// On CPU without autograd, with torch's intra-op pool wider than one thread, the output columns are split
// across the pool and each part is one single-threaded BLAS call writing in place into its slice of the
// result. clipserve runs BLAS single-threaded and lets torch's pool own the cores (see cpu_threads.h): then
// the GEMMs and the element-wise ops around them share one set of threads and never oversubscribe, and small
// GEMMs (batch-1 ViT: 50 rows) run close to two single-core GEMMs in parallel instead of OpenBLAS's own, much
// less efficient, split. Under autograd the same split serves an input that needs a gradient through weights
// that do not (generation back-propagating into the picture through a frozen CLIP): forward by output columns,
// backward (grad_x = alpha · grad · W) by input columns. Elsewhere (CUDA, trainable weights) it is a plain addmm.
#pragma once

#include <ATen/ATen.h>

#include "server/models/packed_linear.h"

namespace clipserve {

// x [M, K], weight [N, K], bias [N] (may be undefined) → [M, N].
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double alpha = 1.0,
                  double beta = 1.0);

// epilogue(alpha · x · Wᵀ + beta · b): through `packed` (a packed copy of `weight`, packed_linear.h), with the
// epilogue fused into its kernel, when it is given, the call is CPU float32 inference and x has at most
// PackedLinearMaxRows() rows; through `weight` and a separate element-wise pass otherwise (in place unless grad
// mode is on).
at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const PackedWeight* packed, const at::Tensor& bias,
                  double alpha = 1.0, double beta = 1.0, Epilogue epilogue = Epilogue::kNone);

// Process-wide switch for the autograd split above (default on), so that benchmarks and tests can run both
// paths side by side in one process.
void SetLinearSplitUnderAutograd(bool enabled);

}  // namespace clipserve
