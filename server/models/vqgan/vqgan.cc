#include "server/models/vqgan/vqgan.h"

#include <c10/core/InferenceMode.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/models/tensor_io.h"

namespace clipserve::vqgan {
namespace {

constexpr char kConfigFile[] = "config.json";
constexpr char kWeightsFile[] = "model.safetensors";
constexpr size_t kMaxNamesInError = 8;

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

// "a, b, c (and 5 more)"
std::string NameList(const std::vector<std::string>& names) {
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kMaxNamesInError));
  std::string out = absl::StrJoin(shown, ", ");
  if (names.size() > shown.size()) absl::StrAppend(&out, " (and ", names.size() - shown.size(), " more)");
  return out;
}

absl::Status CheckDType(at::ScalarType dtype) {
  if (dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("VQGAN: dtype must be float32, float16 or bfloat16, got ", std::string(c10::toString(dtype))));
}

// Compares a checkpoint's tensors with the architecture's parameters; INVALID_ARGUMENT listing every problem.
absl::Status CheckStateDict(const VqganConfig& config, const std::map<std::string, at::Tensor>& tensors,
                            const std::string& origin) {
  std::vector<std::string> missing, unknown, wrong_shape, wrong_dtype;
  std::set<std::string> expected_names;
  for (const auto& [name, shape] : ParameterShapes(config)) {
    expected_names.insert(name);
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
      continue;
    }
    const at::Tensor& t = it->second;
    if (t.sizes() != at::IntArrayRef(shape)) {
      wrong_shape.push_back(absl::StrCat(name, " is ", ShapeString(t.sizes()), ", expected ", ShapeString(shape)));
    } else if (!at::isFloatingType(t.scalar_type())) {
      wrong_dtype.push_back(absl::StrCat(name, " (", std::string(c10::toString(t.scalar_type())), ")"));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (expected_names.count(name) == 0 && name.rfind("loss.", 0) != 0) unknown.push_back(name);
  }
  if (missing.empty() && unknown.empty() && wrong_shape.empty() && wrong_dtype.empty()) return absl::OkStatus();

  std::vector<std::string> problems;
  if (!missing.empty()) problems.push_back(absl::StrCat("missing keys: ", NameList(missing)));
  if (!unknown.empty()) problems.push_back(absl::StrCat("unknown keys: ", NameList(unknown)));
  if (!wrong_shape.empty()) problems.push_back(absl::StrCat("wrong shapes: ", NameList(wrong_shape)));
  if (!wrong_dtype.empty()) problems.push_back(absl::StrCat("not floating point: ", NameList(wrong_dtype)));
  return absl::InvalidArgumentError(
      absl::StrCat(origin, ": checkpoint does not match its config (embed_dim ", config.embed_dim, ", n_embed ",
                   config.n_embed, ", ch ", config.ddconfig.ch, ", ch_mult ", ShapeString(config.ddconfig.ch_mult),
                   ", num_res_blocks ", config.ddconfig.num_res_blocks, "): ", absl::StrJoin(problems, "; ")));
}

// Runs `fn` with torch errors turned into INTERNAL and, when asked, under c10::InferenceMode.
template <typename Fn>
absl::Status RunTorch(GradMode mode, const char* context, Fn&& fn) {
  return CatchTorchErrors(context, [&]() -> absl::Status {
    std::optional<c10::InferenceMode> guard;
    if (mode == GradMode::kInferenceMode) guard.emplace();
    fn();
    return absl::OkStatus();
  });
}

absl::Status CheckFloatInput(const at::Tensor& t, const char* what) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat("VQGAN: ", what, " is undefined"));
  if (!at::isFloatingType(t.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("VQGAN: ", what, " must be floating point, got ", std::string(c10::toString(t.scalar_type()))));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<VqganModel>> VqganModel::Create(const Options& options) {
  CLIPSERVE_RETURN_IF_ERROR(options.config.Validate());
  CLIPSERVE_RETURN_IF_ERROR(CheckDType(options.dtype));
  std::shared_ptr<VqModel> module;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("VQGAN: building the model", [&]() -> absl::Status {
    module = std::make_shared<VqModel>(options.config);
    module->to(options.device, options.dtype);
    module->eval();
    return absl::OkStatus();
  }));
  return std::unique_ptr<VqganModel>(new VqganModel(options.config, std::move(module), options.dtype, options.device));
}

absl::StatusOr<std::unique_ptr<VqganModel>> VqganModel::Load(const Options& options) {
  CLIPSERVE_RETURN_IF_ERROR(CheckDType(options.dtype));
  CLIPSERVE_ASSIGN_OR_RETURN(VqganConfig config, VqganConfig::FromFile(options.model_dir / kConfigFile));
  const std::filesystem::path weights_path = options.model_dir / kWeightsFile;
  CLIPSERVE_ASSIGN_OR_RETURN(auto tensors, LoadTensors(weights_path));
  CLIPSERVE_RETURN_IF_ERROR(CheckStateDict(config, tensors, weights_path.string()));

  std::shared_ptr<VqModel> module;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("VQGAN: loading " + weights_path.string(), [&]() -> absl::Status {
    module = std::make_shared<VqModel>(config);
    {
      at::NoGradGuard no_grad;
      for (auto& item : module->named_parameters()) item.value().copy_(tensors.at(item.key()));
    }
    tensors.clear();  // releases the mapping before the dtype/device copy
    module->to(options.device, options.dtype);
    module->eval();
    return absl::OkStatus();
  }));
  return std::unique_ptr<VqganModel>(
      new VqganModel(std::move(config), std::move(module), options.dtype, options.device));
}

absl::Status VqganModel::Save(const std::filesystem::path& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("VQGAN: cannot create ", dir.string(), ": ", ec.message()));
  CLIPSERVE_RETURN_IF_ERROR(WriteFileAtomically(dir / kConfigFile, config_.ToJson().dump(2) + "\n"));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("VQGAN: saving", [&]() -> absl::Status {
    for (const auto& item : module_->named_parameters()) tensors.emplace_back(item.key(), item.value().detach());
    return absl::OkStatus();
  }));
  return SaveTensors(dir / kWeightsFile, tensors, {{"format", "pt"}});
}

at::Tensor VqganModel::ToModel(const at::Tensor& t) const { return t.to(device_, dtype_); }

absl::Status VqganModel::CheckLatent(const at::Tensor& z, const char* what) const {
  CLIPSERVE_RETURN_IF_ERROR(CheckFloatInput(z, what));
  if (z.dim() != 4 || z.size(0) < 1 || z.size(1) != config_.embed_dim || z.size(2) < 1 || z.size(3) < 1) {
    return absl::InvalidArgumentError(absl::StrCat("VQGAN: ", what, " must be [B, ", config_.embed_dim,
                                                   ", h, w] with B, h, w >= 1, got ", ShapeString(z.sizes())));
  }
  return absl::OkStatus();
}

absl::StatusOr<EncodeResult> VqganModel::Encode(const at::Tensor& x, GradMode mode) const {
  CLIPSERVE_RETURN_IF_ERROR(CheckFloatInput(x, "image"));
  const int64_t f = downsample_factor();
  if (x.dim() != 4 || x.size(0) < 1 || x.size(1) != config_.ddconfig.in_channels || x.size(2) < f || x.size(3) < f ||
      x.size(2) % f != 0 || x.size(3) % f != 0) {
    return absl::InvalidArgumentError(absl::StrCat("VQGAN: image must be [B, ", config_.ddconfig.in_channels,
                                                   ", H, W] with B >= 1 and H, W positive multiples of ", f, ", got ",
                                                   ShapeString(x.sizes())));
  }
  EncodeResult result;
  CLIPSERVE_RETURN_IF_ERROR(RunTorch(mode, "VQGAN encode", [&] {
    result.h = module_->EncodeToLatent(ToModel(x));
    Quantized q = module_->Quantize(result.h, QuantizeGradient::kCodebook);
    result.indices = std::move(q.indices);
    result.z_q = std::move(q.z_q);
  }));
  return result;
}

absl::StatusOr<Quantized> VqganModel::Quantize(const at::Tensor& z, QuantizeGradient gradient, GradMode mode) const {
  CLIPSERVE_RETURN_IF_ERROR(CheckLatent(z, "latent"));
  Quantized result;
  CLIPSERVE_RETURN_IF_ERROR(
      RunTorch(mode, "VQGAN quantize", [&] { result = module_->Quantize(ToModel(z), gradient); }));
  return result;
}

absl::StatusOr<at::Tensor> VqganModel::Decode(const at::Tensor& z_q, GradMode mode) const {
  CLIPSERVE_RETURN_IF_ERROR(CheckLatent(z_q, "latent"));
  at::Tensor image;
  CLIPSERVE_RETURN_IF_ERROR(RunTorch(mode, "VQGAN decode", [&] { image = module_->Decode(ToModel(z_q)); }));
  return image;
}

absl::StatusOr<at::Tensor> VqganModel::DecodeCodes(const at::Tensor& indices, GradMode mode) const {
  if (!indices.defined() || indices.dim() != 3 || indices.numel() == 0 ||
      !at::isIntegralType(indices.scalar_type(), /*includeBool=*/false)) {
    return absl::InvalidArgumentError(
        absl::StrCat("VQGAN: codes must be a non-empty integer tensor [B, h, w], got ",
                     indices.defined()
                         ? absl::StrCat(std::string(c10::toString(indices.scalar_type())), ShapeString(indices.sizes()))
                         : std::string("an undefined tensor")));
  }
  int64_t lo = 0, hi = 0;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("VQGAN codes", [&]() -> absl::Status {
    lo = indices.min().item<int64_t>();
    hi = indices.max().item<int64_t>();
    return absl::OkStatus();
  }));
  if (lo < 0 || hi >= config_.n_embed) {
    return absl::InvalidArgumentError(
        absl::StrCat("VQGAN: codes must be in [0, ", config_.n_embed, "), got values in [", lo, ", ", hi, "]"));
  }
  at::Tensor image;
  CLIPSERVE_RETURN_IF_ERROR(
      RunTorch(mode, "VQGAN decode codes", [&] { image = module_->DecodeCodes(indices.to(device_)); }));
  return image;
}

absl::StatusOr<at::Tensor> VqganModel::Reconstruct(const at::Tensor& x, GradMode mode) const {
  CLIPSERVE_ASSIGN_OR_RETURN(EncodeResult encoded, Encode(x, mode));
  return Decode(encoded.z_q, mode);
}

}  // namespace clipserve::vqgan
