#include "server/models/cpu_threads.h"

#include <ATen/Parallel.h>

#include "gtest/gtest.h"

namespace clipserve {
namespace {

// The pools get what was asked for, BlasThreads() reads BLAS's setting back, and the report names the BLAS
// library once: OpenBLAS 0.3.21's configuration string starts with "OpenBLAS 0.3.21" itself, which the report
// used to prefix again ("OpenBLAS OpenBLAS 0.3.21 ..." in every server and trainer start-up line).
TEST(ConfigureCpuThreadsTest, SetsBothPoolsAndNamesTheBlasOnce) {
  const int intra_op_before = at::get_num_threads();
  const CpuThreadReport two = ConfigureCpuThreads({.intra_op_threads = 1, .blas_threads = 2});
  EXPECT_EQ(two.intra_op_threads, 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  if (BlasThreads() < 0) {
    ConfigureCpuThreads({.intra_op_threads = intra_op_before, .blas_threads = 1});
    GTEST_SKIP() << "the BLAS library (" << two.blas << ") offers no thread setting";
  }
  EXPECT_EQ(two.blas_threads, 2);
  EXPECT_EQ(BlasThreads(), 2);
  EXPECT_EQ(two.blas.rfind("OpenBLAS ", 0), 0u) << two.blas;
  EXPECT_EQ(two.blas.find("OpenBLAS OpenBLAS"), std::string::npos) << two.blas;
  const CpuThreadReport one = ConfigureCpuThreads({.intra_op_threads = intra_op_before, .blas_threads = 1});
  EXPECT_EQ(one.blas_threads, 1);
  EXPECT_EQ(BlasThreads(), 1);
  EXPECT_EQ(one.intra_op_threads, intra_op_before);
}

}  // namespace
}  // namespace clipserve
