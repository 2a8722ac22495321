// Bridges server/common/safetensors (torch-free) and torch tensors.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/common/safetensors.h"

namespace clipserve {

at::ScalarType ToScalarType(DType dtype);
absl::StatusOr<DType> FromScalarType(at::ScalarType type);

// A CPU tensor over the view's bytes. Zero-copy when the data is aligned for its dtype (the tensor then keeps
// `file` alive and must be treated as read-only); otherwise a copy.
at::Tensor ToTensor(const TensorView& view, const std::shared_ptr<const SafetensorsFile>& file);

// Opens a safetensors file and returns every tensor by name (zero-copy where possible).
absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensors(const std::filesystem::path& path);

// The tensor `name` of `tensors` (as LoadTensors returned them from `path`); INVALID_ARGUMENT "PATH: no tensor
// 'NAME'" when it has none, followed by " (" + `hint` + ")" when a hint is given.
absl::StatusOr<at::Tensor> FindTensor(const std::map<std::string, at::Tensor>& tensors, const std::string& name,
                                      const std::filesystem::path& path, std::string_view hint = {});

// Writes named tensors (moved to CPU, made contiguous) as safetensors.
absl::Status SaveTensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

// Catches torch's c10::Error (and std::exception) from `fn` and turns it into an INTERNAL status (or the
// given code) carrying `context`; c10::OutOfMemoryError becomes RESOURCE_EXHAUSTED. Model code calls torch
// through this at its public boundary.
template <typename Fn>
absl::Status CatchTorchErrors(std::string_view context, Fn&& fn, absl::StatusCode code = absl::StatusCode::kInternal);

}  // namespace clipserve

#include "server/models/tensor_io_inl.h"
