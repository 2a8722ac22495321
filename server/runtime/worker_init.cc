#include <ATen/Parallel.h>

#include "server/models/tensor_io.h"
#include "server/runtime/clip_runtime.h"

namespace clipserve::runtime {

absl::Status InitWorkerThread(const WorkerContext& context, int intra_op_threads) {
  return CatchTorchErrors("initialising worker " + context.device.ToString(), [&] {
    if (intra_op_threads > 0) at::set_num_threads(intra_op_threads);
    if (context.device.kind == Device::Kind::kCuda && !at::hasCUDA()) {
      return absl::FailedPreconditionError("a CUDA worker was requested but this build or machine has no CUDA");
    }
    return absl::OkStatus();
  });
}

}  // namespace clipserve::runtime
