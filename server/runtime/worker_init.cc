#include <ATen/Parallel.h>

#if defined(CLIPSERVE_WITH_CUDA)
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "server/models/tensor_io.h"
#include "server/runtime/clip_runtime.h"

namespace clipserve::runtime {

absl::Status InitWorkerThread(const WorkerContext& context, int intra_op_threads) {
  return CatchTorchErrors("initialising worker " + context.device.ToString(), [&] {
    if (intra_op_threads > 0) at::set_num_threads(intra_op_threads);
    if (context.device.kind != Device::Kind::kCuda) return absl::OkStatus();
#if defined(CLIPSERVE_WITH_CUDA)
    if (!at::hasCUDA()) return absl::FailedPreconditionError("a CUDA worker was requested but no GPU is visible");
    // Each worker owns a stream from torch's pool and makes it current for its thread: the batches of
    // different instances on one GPU overlap instead of serialising on the default stream.
    const auto index = static_cast<c10::DeviceIndex>(context.device.index);
    c10::cuda::set_device(index);
    c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index));
    return absl::OkStatus();
#else
    return absl::FailedPreconditionError("a CUDA worker was requested but clipserve was built without CUDA");
#endif
  });
}

}  // namespace clipserve::runtime
