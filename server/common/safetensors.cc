#include "server/common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

constexpr char kMetadataKey[] = "__metadata__";

absl::Status Invalid(const std::string& origin, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": invalid safetensors file: ", what));
}

// n * m without overflow; false when it would overflow.
bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI64:
      return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI64:
      return "I64";
    case DType::kI32:
      return "I32";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32}) {
    if (name == DTypeName(d)) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype '", std::string(name), "' (supported: F32, F16, BF16, I64, I32)"));
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::DebugString() const {
  return absl::StrCat(DTypeName(dtype), "[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(const std::filesystem::path& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->origin_ = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(file->origin_, ": no such file"));
    return absl::InvalidArgumentError(absl::StrCat(file->origin_, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(file->origin_, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    // MAP_PRIVATE + PROT_WRITE: tensors that alias the mapping may be written by mistake without touching the
    // file (copy-on-write); the loaders copy weights out anyway.
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(file->origin_, ": mmap failed: ", std::strerror(err)));
    }
    file->mapping_ = m;
    file->mapping_size_ = size;
  }
  ::close(fd);
  CLIPSERVE_RETURN_IF_ERROR(file->Parse(static_cast<const std::byte*>(file->mapping_), size));
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::FromBytes(std::string bytes,
                                                                                   std::string origin) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->origin_ = std::move(origin);
  file->owned_bytes_ = std::move(bytes);
  CLIPSERVE_RETURN_IF_ERROR(file->Parse(reinterpret_cast<const std::byte*>(file->owned_bytes_.data()),
                                        file->owned_bytes_.size()));
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorView& t, std::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

absl::Status SafetensorsFile::Parse(const std::byte* bytes, size_t size) {
  if (size < 8) return Invalid(origin_, absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);
  if (header_len > kMaxHeaderBytes) {
    return Invalid(origin_, absl::StrCat("header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return Invalid(origin_, absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                         size, " bytes; truncated?)"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header =
      nlohmann::json::parse(header_begin, header_begin + header_len, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return Invalid(origin_, "header is not valid JSON");
  if (!header.is_object()) return Invalid(origin_, "header is not a JSON object");

  const std::byte* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  tensors_.clear();
  tensors_.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      if (!entry.is_object()) return Invalid(origin_, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return Invalid(origin_, absl::StrCat("__metadata__ value for '", k, "' is not a string"));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!entry.is_object()) return Invalid(origin_, absl::StrCat(where, " is not an object"));
    const auto dtype_it = entry.find("dtype");
    const auto shape_it = entry.find("shape");
    const auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return Invalid(origin_, absl::StrCat(where, ": missing or non-string 'dtype'"));
    }
    if (shape_it == entry.end() || !shape_it->is_array()) {
      return Invalid(origin_, absl::StrCat(where, ": missing or non-array 'shape'"));
    }
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return Invalid(origin_, absl::StrCat(where, ": 'data_offsets' must be an array of two integers"));
    }
    TensorView view;
    view.name = name;
    auto dtype = ParseDType(dtype_it->get<std::string>());
    if (!dtype.ok()) return Invalid(origin_, absl::StrCat(where, ": ", dtype.status().message()));
    view.dtype = *dtype;
    uint64_t numel = 1;
    for (const auto& d : *shape_it) {
      if (!d.is_number_unsigned()) return Invalid(origin_, absl::StrCat(where, ": shape entries must be non-negative integers"));
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || !CheckedMul(numel, dim, &numel)) {
        return Invalid(origin_, absl::StrCat(where, ": shape element count overflows"));
      }
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : *offsets_it) {
      if (!o.is_number_unsigned()) return Invalid(origin_, absl::StrCat(where, ": data_offsets must be non-negative integers"));
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end) return Invalid(origin_, absl::StrCat(where, ": data_offsets [", begin, ", ", end, "] are reversed"));
    if (end > data_size) {
      return Invalid(origin_, absl::StrCat(where, ": data_offsets [", begin, ", ", end,
                                           "] run past the end of the data section (", data_size,
                                           " bytes; truncated?)"));
    }
    uint64_t expected = 0;
    if (!CheckedMul(numel, DTypeSize(view.dtype), &expected)) {
      return Invalid(origin_, absl::StrCat(where, ": byte size overflows"));
    }
    if (expected != end - begin) {
      return Invalid(origin_, absl::StrCat(where, ": ", view.DebugString(), " needs ", expected,
                                           " bytes but data_offsets span ", end - begin));
    }
    view.data = data + begin;
    view.nbytes = end - begin;
    tensors_.push_back(std::move(view));
  }
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorView& a, const TensorView& b) { return a.name < b.name; });
  spans.reserve(tensors_.size());
  for (const TensorView& t : tensors_) {
    const uint64_t begin = static_cast<uint64_t>(t.data - data);
    spans.push_back({begin, begin + t.nbytes, &t.name});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end) {
      return Invalid(origin_, absl::StrCat("tensors '", *spans[i - 1].name, "' and '", *spans[i].name,
                                           "' overlap in the data section"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SerializeSafetensors(absl::Span<const TensorView> tensors,
                                                 const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorView*> sorted;
  for (const TensorView& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TensorView* a, const TensorView* b) { return a->name < b->name; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i - 1]->name == sorted[i]->name) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", sorted[i]->name, "'"));
    }
  }
  // Data in order of decreasing element size keeps every tensor aligned to its dtype without holes (the
  // format forbids holes), so readers can use it in place.
  std::stable_sort(sorted.begin(), sorted.end(), [](const TensorView* a, const TensorView* b) {
    return DTypeSize(a->dtype) > DTypeSize(b->dtype);
  });
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const TensorView& t = *sorted[i];
    if (t.name == kMetadataKey) return absl::InvalidArgumentError("a tensor may not be named __metadata__");
    if (static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype) != t.nbytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': ", t.DebugString(), " does not match its ", t.nbytes, " bytes"));
    }
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string json = header.dump();
  // Pad the header with spaces so that the data section starts 8-byte aligned (the format allows it).
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  const uint64_t len = json.size();
  out.append(reinterpret_cast<const char*>(&len), 8);
  out += json;
  for (const TensorView* t : sorted) out.append(reinterpret_cast<const char*>(t->data), t->nbytes);
  return out;
}

absl::Status WriteSafetensors(const std::filesystem::path& path, absl::Span<const TensorView> tensors,
                              const std::map<std::string, std::string>& metadata) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(tensors, metadata));
  return WriteFileAtomically(path, bytes);
}

}  // namespace clipserve
