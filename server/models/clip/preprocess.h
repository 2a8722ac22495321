// CLIP image preprocessing, pixel-exact to the OpenAI reference (`clip._transform` on a PIL image):
//   Resize(n, BICUBIC) → CenterCrop → convert("RGB") → ToTensor() → Normalize(mean, std)
// written as CHW float32 into a caller-provided buffer, so a worker can fill a batch tensor in place.
//
// The resampler is a re-implementation of Pillow's libImaging/Resample.c (8-bit fixed point, horizontal pass
// then vertical pass), so for 8-bit images the resized pixels are bit-identical to Pillow's, and of
// Image.resize()'s mode rules (premultiplied alpha for RGBA, NEAREST for palette images). Only the pixels
// inside the crop are computed; they equal the corresponding pixels of the full resize.
//
// Everything here is a pure function of its arguments: thread-safe, no shared state, no torch. Errors are
// INVALID_ARGUMENT statuses; nothing throws.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json_fwd.hpp"
#include "server/models/clip/image_decode.h"

namespace clipserve::clip {

// What preprocessor_config.json specifies (Hugging Face CLIPImageProcessor / OpenAI CLIP); the defaults are
// OpenAI CLIP's at 224 px.
struct PreprocessConfig {
  int resize_shortest_edge = 224;
  int crop_height = 224;
  int crop_width = 224;
  std::array<float, 3> mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std = {0.26862954f, 0.26130258f, 0.27577711f};
};

// INVALID_ARGUMENT unless sizes are in [1, 8192], the crop fits in the resized image (crop ≤ shortest edge),
// and mean/std are finite with std > 0.
absl::Status ValidatePreprocessConfig(const PreprocessConfig& config);

// Parses a preprocessor_config.json object: `size` ({"shortest_edge": n} or a bare int), `crop_size`
// ({"height", "width"} or a bare int), `image_mean`, `image_std`. Options the reference pipeline cannot
// express are rejected with a message naming them: resample other than 3 (bicubic), do_resize /
// do_center_crop false, rescale_factor other than 1/255. do_normalize false gives mean 0, std 1.
absl::StatusOr<PreprocessConfig> PreprocessConfigFromJson(const nlohmann::json& json);
absl::StatusOr<PreprocessConfig> LoadPreprocessConfig(const std::filesystem::path& path);

// Floats written by Preprocess: 3 · crop_height · crop_width.
size_t PreprocessedSize(const PreprocessConfig& config);

// Decoded pixels → normalised CHW float32 (`out_chw.size()` must equal PreprocessedSize(config)). Grey images
// are replicated to three channels, alpha is used for the premultiplied resize and then dropped.
absl::Status Preprocess(const ImageView& image, const PreprocessConfig& config, absl::Span<float> out_chw);
inline absl::Status Preprocess(const DecodedImage& image, const PreprocessConfig& config, absl::Span<float> out_chw) {
  return Preprocess(image.view(), config, out_chw);
}

// ---- Pillow-compatible building blocks (also used by generation and tools) ----

// torchvision Resize(int) on a PIL image: the shorter side becomes `shortest_edge`, the longer one
// int(shortest_edge · long / short) (truncated). INVALID_ARGUMENT when the long side would not fit an int.
absl::StatusOr<std::pair<int, int>> ResizedSizeForShortestEdge(int width, int height, int shortest_edge);

// torchvision CenterCrop offset: int(round((size - crop) / 2.0)) with Python's round (ties to even).
int CenterCropOffset(int size, int crop);

// A rectangle of output pixels.
struct PixelRect {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
};

// Pillow's ImagingResample(BICUBIC) on the bands as they are (no alpha handling: what Pillow does for modes
// "L", "RGB" and the premultiplied "RGBa"). `out` is out_height × out_width × channels. Bit-exact to Pillow.
absl::Status ResizeBicubic(const ImageView& src, int out_width, int out_height, absl::Span<uint8_t> out);
absl::StatusOr<std::vector<uint8_t>> ResizeBicubic(const ImageView& src, int out_width, int out_height);

// Pillow's Image.resize(size, NEAREST) (the affine-scale fast path). Bit-exact to Pillow.
absl::Status ResizeNearest(const ImageView& src, int out_width, int out_height, absl::Span<uint8_t> out);

// Pillow's Image.resize(size, BICUBIC) with its mode rules: a copy when the size does not change; NEAREST when
// `src.resample` is kNearest (palette / bilevel images); for 4 channels the RGBA → RGBa (premultiply) →
// resize → RGBA round trip. Computes only `region` of the resized image into `out` (region.height ×
// region.width × channels); the values equal those of the full resize.
absl::Status PillowResize(const ImageView& src, int out_width, int out_height, const PixelRect& region,
                          absl::Span<uint8_t> out);

}  // namespace clipserve::clip
