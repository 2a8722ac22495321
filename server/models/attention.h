// Multi-head self-attention over a fused QKV projection, shared by the CLIP towers.
//
// qkv is [B·L, 3·D] (the output of one GEMM: q | k | v, each split into `heads` heads of D/heads columns);
// the result is [B·L, D] with heads side by side, ready for the output projection. On CUDA (and where BLAS's
// sgemm_ is not exported) it is torch's scaled-dot-product attention (torch_compat.h). For CPU inference it
// runs one task per (batch, head) on torch's intra-op pool, reading q, k and v in place from the qkv buffer and
// writing each head's output in place: no reshape copies and none of bmm's per-matrix bookkeeping, which
// together cost more than the attention arithmetic at CLIP's sequence lengths (50 image tokens, ≤ 77 text
// tokens). The per-head GEMMs go straight to BLAS (sgemm_, when the BLAS library exports it) to skip torch's
// per-op overhead. Under autograd, when qkv needs a gradient (generation back-propagating into the picture,
// training), the same tasks run the forward, keeping each head's softmax, and the backward; torch's bmm path
// there runs one matrix at a time on one core.
#pragma once

#include <ATen/ATen.h>

#include "server/models/simd_math.h"

namespace clipserve {

at::Tensor SelfAttention(const at::Tensor& qkv, int64_t batch, int64_t len, int64_t heads, bool causal);

// Process-wide switch for the autograd path above (default on), so that benchmarks and tests can run both
// paths side by side in one process.
void SetAttentionSplitUnderAutograd(bool enabled);

// The CPU path's softmax: each row of a len × len row-major matrix, in place (AVX-512 or AVX2 where the CPU has
// it); with `causal`, entries j > i become 0. Reads and writes only the matrix. Exposed for its tests.
void AttentionSoftmaxRows(float* s, int len, bool causal);

// The kernel family of that softmax: the widest this CPU runs. Tests and benchmarks may pick another (kNone: the
// portable expf loop); false (and no change) where this CPU cannot run it.
simd::Isa AttentionSoftmaxIsa();
bool SetAttentionSoftmaxIsa(simd::Isa isa);

}  // namespace clipserve
