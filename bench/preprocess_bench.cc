// Image decoding + CLIP preprocessing throughput, one image per iteration on one thread (items/s = images/s).
//   build/bin/clipserve_bench --benchmark_filter=BM_Image
// Fixture images come from CLIPSERVE_FIXTURES (default: the configure-time fixture directory).
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "server/common/file_util.h"
#include "server/models/clip/image_decode.h"
#include "server/models/clip/preprocess.h"

namespace clipserve::clip {
namespace {

std::filesystem::path FixtureDir() {
  if (const char* env = std::getenv("CLIPSERVE_FIXTURES"); env != nullptr && *env != '\0') return env;
  return CLIPSERVE_DEFAULT_FIXTURES;
}

struct Input {
  std::string bytes;
  PreprocessConfig config;
  std::string error;
};

Input Load(const std::string& image) {
  Input input;
  auto bytes = ReadFileToString(FixtureDir() / "images" / image);
  auto config = LoadPreprocessConfig(FixtureDir() / "clip" / "preprocessor_config.json");
  if (!bytes.ok() || !config.ok()) {
    input.error = std::string(!bytes.ok() ? bytes.status().message() : config.status().message());
    return input;
  }
  input.bytes = *std::move(bytes);
  input.config = *config;
  return input;
}

absl::Span<const uint8_t> AsBytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// What a worker does per image: decode the request bytes, then fill its slice of the batch.
void BM_ImageDecodeAndPreprocess(benchmark::State& state, const std::string& image) {
  const Input input = Load(image);
  if (!input.error.empty()) {
    state.SkipWithError(input.error.c_str());
    return;
  }
  std::vector<float> out(PreprocessedSize(input.config));
  for (auto _ : state) {
    auto decoded = DecodeImage(AsBytes(input.bytes));
    if (!decoded.ok() || !Preprocess(*decoded, input.config, absl::MakeSpan(out)).ok()) {
      state.SkipWithError("decode or preprocess failed");
      return;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_ImageDecode(benchmark::State& state, const std::string& image) {
  const Input input = Load(image);
  if (!input.error.empty()) {
    state.SkipWithError(input.error.c_str());
    return;
  }
  for (auto _ : state) {
    auto decoded = DecodeImage(AsBytes(input.bytes));
    benchmark::DoNotOptimize(decoded);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_ImagePreprocess(benchmark::State& state, const std::string& image) {
  const Input input = Load(image);
  auto decoded = input.error.empty() ? DecodeImage(AsBytes(input.bytes)) : absl::InternalError(input.error);
  if (!decoded.ok()) {
    state.SkipWithError(std::string(decoded.status().message()).c_str());
    return;
  }
  std::vector<float> out(PreprocessedSize(input.config));
  for (auto _ : state) {
    benchmark::DoNotOptimize(Preprocess(*decoded, input.config, absl::MakeSpan(out)));
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK_CAPTURE(BM_ImageDecodeAndPreprocess, jpeg_640x480, std::string("wide_640x480.jpg"));
BENCHMARK_CAPTURE(BM_ImageDecodeAndPreprocess, png_1000x200_grey, std::string("gray_1000x200.png"));
BENCHMARK_CAPTURE(BM_ImageDecodeAndPreprocess, png_300x500_rgba, std::string("tall_300x500.png"));
BENCHMARK_CAPTURE(BM_ImageDecode, jpeg_640x480, std::string("wide_640x480.jpg"));
BENCHMARK_CAPTURE(BM_ImageDecode, png_1000x200_grey, std::string("gray_1000x200.png"));
BENCHMARK_CAPTURE(BM_ImageDecode, png_300x500_rgba, std::string("tall_300x500.png"));
BENCHMARK_CAPTURE(BM_ImagePreprocess, jpeg_640x480, std::string("wide_640x480.jpg"));
BENCHMARK_CAPTURE(BM_ImagePreprocess, png_1000x200_grey, std::string("gray_1000x200.png"));
BENCHMARK_CAPTURE(BM_ImagePreprocess, png_300x500_rgba, std::string("tall_300x500.png"));

// A 12-megapixel photo-sized input (downscale by 13.4: up to 54 taps per output pixel), synthesised once.
void BM_ImagePreprocess12MpRgb(benchmark::State& state) {
  const int width = 4000;
  const int height = 3000;
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);
  const PreprocessConfig config;
  std::vector<float> out(PreprocessedSize(config));
  const ImageView view{rgb, width, height, 3, ResampleHint::kBicubic};
  for (auto _ : state) benchmark::DoNotOptimize(Preprocess(view, config, absl::MakeSpan(out)));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ImagePreprocess12MpRgb)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace clipserve::clip
