#include "server/common/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve {
namespace {

using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;

// A file with a known header, built by hand so the tests control every byte.
std::string Build(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t len = header.size();
  std::memcpy(out.data(), &len, 8);
  out += header;
  out.append(data_bytes, '\x01');
  return out;
}

TEST(Safetensors, RoundTripsEveryDtype) {
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000};
  std::vector<uint16_t> bf16 = {0x3f80};
  std::vector<int64_t> i64 = {1, -2, 3};
  std::vector<int32_t> i32 = {49406, 49407};
  auto view = [](std::string name, DType d, std::vector<int64_t> shape, const void* p, size_t n) {
    TensorView v;
    v.name = std::move(name);
    v.dtype = d;
    v.shape = std::move(shape);
    v.data = static_cast<const std::byte*>(p);
    v.nbytes = n;
    return v;
  };
  std::vector<TensorView> views = {
      view("w.f32", DType::kF32, {2, 3}, f32.data(), 24), view("a.f16", DType::kF16, {2}, f16.data(), 4),
      view("b.bf16", DType::kBF16, {1}, bf16.data(), 2), view("ids", DType::kI64, {3}, i64.data(), 24),
      view("scalar", DType::kI32, {2}, i32.data(), 8)};
  auto bytes = SerializeSafetensors(views, {{"format", "pt"}});
  ASSERT_THAT(bytes, IsOk());
  auto file = SafetensorsFile::FromBytes(*bytes);
  ASSERT_THAT(file, IsOk());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  ASSERT_EQ((*file)->tensors().size(), 5u);
  const TensorView* w = (*file)->Find("w.f32");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::kF32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(w->data, f32.data(), 24), 0);
  // The writer aligns the data section to 8 bytes, so every tensor can be used in place.
  for (const TensorView& t : (*file)->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % DTypeSize(t.dtype), 0u) << t.name;
  }
  EXPECT_EQ((*file)->Find("missing"), nullptr);
  EXPECT_EQ(std::memcmp((*file)->Find("ids")->data, i64.data(), 24), 0);
}

TEST(Safetensors, OpensAMappedFile) {
  const auto path = ::clipserve::testing::ScratchFile("mapped.safetensors");
  std::vector<float> values(1000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  TensorView v;
  v.name = "x";
  v.shape = {10, 100};
  v.data = reinterpret_cast<const std::byte*>(values.data());
  v.nbytes = values.size() * 4;
  ASSERT_THAT(WriteSafetensors(path, {&v, 1}), IsOk());
  auto file = SafetensorsFile::Open(path);
  ASSERT_THAT(file, IsOk());
  const float* data = reinterpret_cast<const float*>((*file)->Find("x")->data);
  EXPECT_EQ(data[999], 999.0f);
}

TEST(Safetensors, MissingFileIsNotFound) {
  EXPECT_THAT(SafetensorsFile::Open("/nonexistent/model.safetensors"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no such file")));
}

TEST(Safetensors, RejectsFileShorterThanHeaderLength) {
  EXPECT_THAT(SafetensorsFile::FromBytes("abc"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("8-byte")));
  EXPECT_THAT(SafetensorsFile::FromBytes(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("8-byte")));
}

TEST(Safetensors, RejectsHeaderLengthPastEndOfFile) {
  std::string bytes = Build(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  bytes.resize(20);  // truncated inside the header
  EXPECT_THAT(SafetensorsFile::FromBytes(bytes),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("runs past the end of the file")));
}

TEST(Safetensors, RejectsHugeHeaderLength) {
  std::string bytes(16, '\0');
  const uint64_t len = ~uint64_t{0};
  std::memcpy(bytes.data(), &len, 8);
  EXPECT_THAT(SafetensorsFile::FromBytes(bytes), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST(Safetensors, RejectsMalformedHeaders) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{not json", "not valid JSON"},
      {"[1,2]", "not a JSON object"},
      {R"({"x":3})", "is not an object"},
      {R"({"x":{"shape":[1],"data_offsets":[0,4]}})", "'dtype'"},
      {R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", "unsupported dtype 'F64'"},
      {R"({"x":{"dtype":"F32","data_offsets":[0,4]}})", "'shape'"},
      {R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "non-negative"},
      {R"({"x":{"dtype":"F32","shape":[1]}})", "data_offsets"},
      {R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "data_offsets"},
      {R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "reversed"},
      {R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "needs 8 bytes but data_offsets span 4"},
      {R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})", "overflows"},
      {R"({"__metadata__":{"a":1}})", "not a string"},
  };
  for (const auto& [header, message] : cases) {
    EXPECT_THAT(SafetensorsFile::FromBytes(Build(header, 16)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
        << header;
  }
}

TEST(Safetensors, RejectsOffsetsOutOfRange) {
  EXPECT_THAT(SafetensorsFile::FromBytes(Build(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("run past the end of the data section")));
  EXPECT_THAT(SafetensorsFile::FromBytes(
                  Build(R"({"x":{"dtype":"I64","shape":[1],"data_offsets":[18446744073709551608,18446744073709551615]}})", 8)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x")));
}

TEST(Safetensors, RejectsOverlappingTensors) {
  EXPECT_THAT(SafetensorsFile::FromBytes(Build(
                  R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  16)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overlap")));
}

TEST(Safetensors, TruncatedRealFileIsRejectedAtEveryLength) {
  std::vector<float> values(64, 1.0f);
  TensorView a, b;
  a.name = "a";
  a.shape = {8, 8};
  a.data = reinterpret_cast<const std::byte*>(values.data());
  a.nbytes = 256;
  b = a;
  b.name = "b";
  auto bytes = SerializeSafetensors(std::vector<TensorView>{a, b});
  ASSERT_THAT(bytes, IsOk());
  for (size_t n = 0; n < bytes->size(); n += 7) {
    EXPECT_THAT(SafetensorsFile::FromBytes(bytes->substr(0, n)), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_))
        << "length " << n;
  }
  EXPECT_THAT(SafetensorsFile::FromBytes(*bytes), IsOk());
}

TEST(Safetensors, ZeroSizedTensorsAreFine) {
  auto file = SafetensorsFile::FromBytes(
      Build(R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})", 4));
  ASSERT_THAT(file, IsOk());
  EXPECT_EQ((*file)->Find("e")->numel(), 0);
  EXPECT_EQ((*file)->Find("s")->numel(), 1);
}

TEST(Safetensors, WriterRejectsInconsistentViews) {
  float x = 0;
  TensorView v;
  v.name = "x";
  v.shape = {2};
  v.data = reinterpret_cast<const std::byte*>(&x);
  v.nbytes = 4;
  EXPECT_THAT(SerializeSafetensors({&v, 1}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not match")));
  std::vector<TensorView> dup = {v, v};
  dup[0].shape = dup[1].shape = {1};
  EXPECT_THAT(SerializeSafetensors(dup), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
}

}  // namespace
}  // namespace clipserve
