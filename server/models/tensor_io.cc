#include "server/models/tensor_io.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace clipserve {

at::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return at::kFloat;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kI64:
      return at::kLong;
    case DType::kI32:
      return at::kInt;
  }
  return at::kFloat;
}

absl::StatusOr<DType> FromScalarType(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return DType::kF32;
    case at::kHalf:
      return DType::kF16;
    case at::kBFloat16:
      return DType::kBF16;
    case at::kLong:
      return DType::kI64;
    case at::kInt:
      return DType::kI32;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor dtype ", c10::toString(type),
                                                     " cannot be stored (supported: F32, F16, BF16, I64, I32)"));
  }
}

at::Tensor ToTensor(const TensorView& view, const std::shared_ptr<const SafetensorsFile>& file) {
  const auto options = at::TensorOptions().dtype(ToScalarType(view.dtype));
  const auto address = reinterpret_cast<uintptr_t>(view.data);
  if (view.nbytes > 0 && address % DTypeSize(view.dtype) == 0) {
    auto keep = file;  // the deleter owns a reference to the mapping
    return at::from_blob(const_cast<std::byte*>(view.data), view.shape, [keep](void*) {}, options);
  }
  at::Tensor t = at::empty(view.shape, options);
  if (view.nbytes > 0) std::memcpy(t.data_ptr(), view.data, view.nbytes);
  return t;
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensors(const std::filesystem::path& path) {
  CLIPSERVE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  std::map<std::string, at::Tensor> out;
  for (const TensorView& v : file->tensors()) out.emplace(v.name, ToTensor(v, file));
  return out;
}

absl::StatusOr<at::Tensor> FindTensor(const std::map<std::string, at::Tensor>& tensors, const std::string& name,
                                      const std::filesystem::path& path, std::string_view hint) {
  auto it = tensors.find(name);
  if (it != tensors.end()) return it->second;
  const std::string why = hint.empty() ? "" : absl::StrCat(" (", std::string(hint), ")");
  return absl::InvalidArgumentError(absl::StrCat(path.string(), ": no tensor '", name, "'", why));
}

absl::Status SaveTensors(const std::filesystem::path& path,
                         const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;
  std::vector<TensorView> views;
  keep.reserve(tensors.size());
  views.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    CLIPSERVE_ASSIGN_OR_RETURN(DType dtype, FromScalarType(tensor.scalar_type()));
    keep.push_back(tensor.detach().to(at::kCPU).contiguous());
    const at::Tensor& t = keep.back();
    TensorView v;
    v.name = name;
    v.dtype = dtype;
    v.shape = t.sizes().vec();
    v.data = static_cast<const std::byte*>(t.data_ptr());
    v.nbytes = t.nbytes();
    views.push_back(std::move(v));
  }
  return WriteSafetensors(path, views, metadata);
}

}  // namespace clipserve
