#include "server/models/cpu_threads.h"

#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include <ATen/Parallel.h>

namespace clipserve {

int AvailableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

int BlasThreads() {
  using GetThreads = int (*)();
  static const auto get_threads = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get_threads != nullptr ? get_threads() : -1;
}

namespace {

// A positive integer from the environment, else 0.
int EnvThreads(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end != v && *end == '\0' && n > 0 && n <= 1024) ? static_cast<int>(n) : 0;
}

}  // namespace

CpuThreadReport ConfigureCpuThreads(const CpuThreadOptions& requested) {
  CpuThreadOptions options = requested;
  if (options.intra_op_threads <= 0) options.intra_op_threads = EnvThreads("CLIPSERVE_INTRA_OP_THREADS");
  if (options.blas_threads <= 0) options.blas_threads = EnvThreads("CLIPSERVE_BLAS_THREADS");
  CpuThreadReport report;
  report.intra_op_threads = options.intra_op_threads > 0 ? options.intra_op_threads : AvailableCores();
  at::set_num_threads(report.intra_op_threads);

  // OpenBLAS is reached through libblas.so.3 (Debian alternatives), so its extensions are looked up at run time.
  using SetThreads = void (*)(int);
  using GetConfig = char* (*)();
  auto set_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  auto get_config = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  const int blas = options.blas_threads > 0 ? options.blas_threads : 1;
  if (set_threads != nullptr) set_threads(blas);
  report.blas_threads = BlasThreads();
  if (get_config != nullptr) {
    // Recent OpenBLAS releases start their configuration string with "OpenBLAS <version>" themselves.
    const std::string config = get_config();
    report.blas = config.rfind("OpenBLAS", 0) == 0 ? config : "OpenBLAS " + config;
  } else {
    report.blas = "unknown (not OpenBLAS; netlib's reference BLAS is ~30x slower)";
  }
  if (options.malloc_mmap_threshold_bytes > 0) {
    const auto threshold = static_cast<int>(std::min<size_t>(options.malloc_mmap_threshold_bytes, size_t{1} << 30));
    mallopt(M_MMAP_THRESHOLD, threshold);
    mallopt(M_TRIM_THRESHOLD, 2 * threshold);
  }
  return report;
}

}  // namespace clipserve
