// safetensors (https://github.com/huggingface/safetensors) reading and writing, without torch.
//
// SafetensorsFile maps a file read-only-shared (MAP_PRIVATE, so a stray write never reaches the file) and
// validates the whole header before anything is handed out: 8-byte little-endian header length within the
// file, a JSON object, for every tensor a supported dtype, a shape whose element count times the dtype size
// equals its byte length (with overflow checks), offsets inside the data section and not overlapping. A
// truncated or hostile file yields an INVALID_ARGUMENT status naming the file, the tensor and the problem; it
// never over-reads. The object is immutable after Open() and safe to share between threads; TensorViews point
// into the mapping and stay valid as long as the SafetensorsFile lives (hold the shared_ptr).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace clipserve {

enum class DType { kF32, kF16, kBF16, kI64, kI32 };

// Bytes per element.
size_t DTypeSize(DType dtype);
// The safetensors spelling: "F32", "F16", "BF16", "I64", "I32".
const char* DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(std::string_view name);

// One tensor inside a SafetensorsFile (or a buffer to write).
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  // "F32[64, 3, 32, 32]"
  std::string DebugString() const;
};

class SafetensorsFile {
 public:
  // Largest JSON header accepted (the format's own reference implementation uses 100 MB).
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(const std::filesystem::path& path);
  // Parses an in-memory copy (used by tests and fuzzers); `origin` names it in error messages.
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> FromBytes(std::string bytes,
                                                                         std::string origin = "<memory>");

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Tensors sorted by name.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorView* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& origin() const { return origin_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse(const std::byte* bytes, size_t size);

  std::string origin_;
  void* mapping_ = nullptr;  // mmap'ed region, or nullptr for FromBytes
  size_t mapping_size_ = 0;
  std::string owned_bytes_;  // FromBytes storage
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Serialises tensors (any order) with optional string metadata. The data section starts 8-byte aligned and
// holds larger dtypes first, so every tensor is aligned for its dtype and can be used in place.
absl::StatusOr<std::string> SerializeSafetensors(absl::Span<const TensorView> tensors,
                                                 const std::map<std::string, std::string>& metadata = {});
// Writes atomically (temporary file + rename).
absl::Status WriteSafetensors(const std::filesystem::path& path, absl::Span<const TensorView> tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace clipserve
