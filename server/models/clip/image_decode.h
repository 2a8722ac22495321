// Image decoding for the inference path: JPEG, PNG, WebP and BMP bytes (untrusted, from the network) to 8-bit
// pixels, with the limits checked on the header before anything large is allocated.
//
// The pixels are what Pillow's Image.open() would hold, in the sense that matters for CLIP parity: channels
// 1 (grey, Pillow "L"/"1"), 3 (RGB) or 4 (RGBA with straight alpha, Pillow "RGBA"/"LA"), and a resample hint
// telling whether Pillow would resize this image with NEAREST ("P" palette and "1" bilevel images) instead of the
// requested filter. Decoding is OpenCV's (cv::imdecode); the container walk, limits, colour-order conversion and
// EXIF orientation are ours. Every function here is thread-safe, allocation-bounded by DecodeOptions, and
// returns absl::Status instead of throwing. Nothing here includes torch.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace clipserve {

enum class ImageFormat { kRaw, kJpeg, kPng, kWebp, kBmp };

// "raw", "JPEG", "PNG", "WebP", "BMP".
absl::string_view ImageFormatName(ImageFormat format);

// How Pillow resizes an image of this kind: Image.resize() forces NEAREST for modes "P" (palette) and "1"
// (bilevel) whatever filter is asked for, and the CLIP reference resizes the image as opened.
enum class ResampleHint { kBicubic, kNearest };

struct DecodeOptions {
  // Larger inputs are rejected before they are parsed.
  uint64_t max_encoded_bytes = uint64_t{64} << 20;
  // Width × height read from the header; larger images are rejected before decoding (nothing is allocated).
  uint64_t max_pixels = 40'000'000;
  // false: ignore the EXIF orientation tag, as the OpenAI reference does (parity). true: rotate/flip the pixels
  // as Pillow's ImageOps.exif_transpose would (JPEG APP1 "Exif", PNG eXIf and WebP EXIF chunks are read).
  bool apply_exif_orientation = false;
};

// A borrowed, tightly packed, row-major 8-bit image: `pixels.size() == width * height * channels`, channels
// interleaved in R,G,B(,A) order (1 = grey, 3 = RGB, 4 = RGBA with straight alpha).
struct ImageView {
  absl::Span<const uint8_t> pixels;
  int width = 0;
  int height = 0;
  int channels = 0;
  ResampleHint resample = ResampleHint::kBicubic;
};

// INVALID_ARGUMENT unless `view` is consistent (positive size, channels 1/3/4, buffer size matches).
absl::Status ValidateImageView(const ImageView& view);

// An owned decoded image (see ImageView for the layout).
struct DecodedImage {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;
  ImageFormat format = ImageFormat::kRaw;
  ResampleHint resample = ResampleHint::kBicubic;
  // The EXIF orientation found in the file (1..8; 1 when absent or invalid), whether or not it was applied.
  int exif_orientation = 1;

  ImageView view() const { return ImageView{pixels, width, height, channels, resample}; }
};

// What the container headers say, read without decoding any pixel data.
struct ImageInfo {
  ImageFormat format = ImageFormat::kRaw;
  int width = 0;
  int height = 0;
  // Channels DecodeImage will return (1, 3 or 4); 4 only when Pillow would open the image with an alpha band.
  int channels = 0;
  ResampleHint resample = ResampleHint::kBicubic;
  int exif_orientation = 1;
};

// Sniffs the format from the magic bytes, reads the dimensions from the header (PNG IHDR, JPEG SOFn, WebP
// VP8/VP8L/VP8X, BMP info header) and walks the container far enough to reject truncated files (PNG chunks up
// to IEND, JPEG markers and scans up to EOI, the RIFF size, the BMP pixel array). INVALID_ARGUMENT, saying what
// is wrong and what is allowed, for empty, unknown, zero-sized, truncated or over-limit inputs.
absl::StatusOr<ImageInfo> ProbeImage(absl::Span<const uint8_t> bytes, const DecodeOptions& options = {});

// ProbeImage, then cv::imdecode(IMREAD_UNCHANGED), then conversion to the layout of ImageView:
// - BGR(A) → RGB(A); 16-bit samples → 8-bit by keeping the high byte (what Pillow does for 16-bit RGB(A) and
//   LA PNGs; for 16-bit grey Pillow opens mode "I" and saturates at 255 when converting to RGB — we keep the
//   high byte instead, a deliberate deviation);
// - a PNG tRNS chunk (colour key or palette transparency) is not an alpha band for Pillow's resize: dropped;
// - palette PNGs and BMPs and 1-bit grey PNGs are expanded to RGB/grey and marked ResampleHint::kNearest.
// CMYK JPEGs are converted by libjpeg/OpenCV, which may differ slightly from Pillow's CMYK→RGB conversion.
absl::StatusOr<DecodedImage> DecodeImage(absl::Span<const uint8_t> bytes, const DecodeOptions& options = {});

// Already-decoded pixels (e.g. raw RGB uint8 H×W×3 from a request) as a DecodedImage, checked against the
// same pixel limit. `channels` is 1, 3 or 4 in the ImageView layout.
absl::StatusOr<DecodedImage> ImageFromPixels(absl::Span<const uint8_t> pixels, int width, int height, int channels,
                                             const DecodeOptions& options = {});

}  // namespace clipserve
