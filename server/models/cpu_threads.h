// CPU runtime configuration for model execution: torch's intra-op pool, the BLAS library's own threads, and
// the allocator's treatment of large blocks.
//
// Debian's libtorch hands every GEMM to libblas.so.3 (OpenBLAS once tools/install-deps.sh has run), which can
// parallelise each GEMM with its own pthreads, while torch's intra-op pool (OpenMP) parallelises everything
// else. Two pools busy-waiting on the same cores oversubscribe them (measured: OpenMP 2 threads on top of
// OpenBLAS made ViT-B/32 batch-1 inference 3x slower on 2 cores). clipserve's policy (docs/threading.md): ONE
// pool. Torch's intra-op pool gets the cores, BLAS runs single-threaded, and Linear() (linear.h) splits each
// inference GEMM across the pool itself. Call once at start-up, before any model runs.
#pragma once

#include <string>

namespace clipserve {

struct CpuThreadOptions {
  // Threads for torch's intra-op pool (element-wise ops and, through Linear(), inference GEMMs).
  // 0 = the number of cores available to the process.
  int intra_op_threads = 0;
  // Threads BLAS may use inside one GEMM. 0 = 1. Training, whose GEMMs run under autograd and are not split
  // by Linear(), does better with intra_op_threads = 1 and blas_threads = cores.
  int blas_threads = 0;
  // glibc serves allocations above its mmap threshold with fresh mmaps, so every large activation tensor of a
  // forward pass page-faults in zeroed pages again (measured: ViT-B/32 batch 8, 5-8 % of the time). Allocations
  // below this size come from the heap and freed memory is kept for reuse (trim threshold 2x this). 0 leaves
  // glibc's defaults.
  size_t malloc_mmap_threshold_bytes = size_t{256} << 20;
};

struct CpuThreadReport {
  int intra_op_threads = 0;
  int blas_threads = 0;   // -1 when the BLAS library offers no way to set or read it
  std::string blas;       // "OpenBLAS 0.3.21 ..." or "unknown (reference BLAS?)"
};

// Fields left at 0 are taken from the environment variables CLIPSERVE_INTRA_OP_THREADS and
// CLIPSERVE_BLAS_THREADS when set, else from the defaults above.
CpuThreadReport ConfigureCpuThreads(const CpuThreadOptions& options);

// The threads BLAS may use inside one GEMM now (OpenBLAS's openblas_get_num_threads), or -1 when the BLAS library
// offers no way to read it.
int BlasThreads();

// Cores this process may run on (sched_getaffinity; honours cgroup cpusets and taskset).
int AvailableCores();

}  // namespace clipserve
