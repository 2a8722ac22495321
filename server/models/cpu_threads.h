// CPU thread configuration for model execution: torch's intra-op pool and the BLAS library's own threads.
//
// Debian's libtorch hands every GEMM to libblas.so.3 (OpenBLAS once tools/install-deps.sh has run), and OpenBLAS
// parallelises each GEMM with its own pthreads. Torch's intra-op pool parallelises the element-wise ops
// around them. Both pools busy-wait on the same cores, so running both wide oversubscribes the machine
// (measured: OpenMP 2 threads on top of OpenBLAS made ViT-B/32 batch-1 inference 3x slower on 2 cores).
// clipserve's policy (docs/threading.md): GEMMs are where the time goes, so BLAS gets the cores and torch's
// intra-op pool gets one thread per worker. Call once at start-up, before any model runs.
#pragma once

#include <string>

namespace clipserve {

struct CpuThreadOptions {
  // Threads for torch's intra-op pool (element-wise ops, layer norms, softmax). 0 = 1.
  int intra_op_threads = 0;
  // Threads for BLAS GEMMs. 0 = the number of cores available to the process.
  int blas_threads = 0;
};

struct CpuThreadReport {
  int intra_op_threads = 0;
  int blas_threads = 0;   // -1 when the BLAS library offers no way to set or read it
  std::string blas;       // "OpenBLAS 0.3.21 ..." or "unknown (reference BLAS?)"
};

CpuThreadReport ConfigureCpuThreads(const CpuThreadOptions& options);

// Cores this process may run on (sched_getaffinity; honours cgroup cpusets and taskset).
int AvailableCores();

}  // namespace clipserve
