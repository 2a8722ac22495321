#include "server/models/clip/image_decode.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/common/status_macros.h"

namespace clipserve {
namespace {

constexpr absl::string_view kSupported = "supported: JPEG, PNG, WebP, BMP";

absl::Status Invalid(absl::string_view format, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(format, ": ", what));
}

uint32_t Be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t Be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint32_t Le16(const uint8_t* p) { return uint32_t{p[0]} | (uint32_t{p[1]} << 8); }
uint32_t Le24(const uint8_t* p) { return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16); }
uint32_t Le32(const uint8_t* p) { return Le24(p) | (uint32_t{p[3]} << 24); }

bool StartsWith(absl::Span<const uint8_t> bytes, absl::string_view magic, size_t offset = 0) {
  return bytes.size() >= offset + magic.size() && std::memcmp(bytes.data() + offset, magic.data(), magic.size()) == 0;
}

// Dimensions and pixel limit, checked as soon as a header has been read.
absl::Status CheckDimensions(absl::string_view format, uint64_t width, uint64_t height, const DecodeOptions& options) {
  if (width == 0 || height == 0) {
    return Invalid(format, absl::StrCat("the header says the image is ", width, "x", height,
                                        "; a zero-sized image cannot be processed"));
  }
  const uint64_t pixels = width * height;  // both < 2^32: no overflow
  if (pixels > options.max_pixels || width > INT_MAX || height > INT_MAX) {
    return Invalid(format,
                   absl::StrCat("the image is ", width, "x", height, " = ", pixels, " pixels, more than the limit of ",
                                options.max_pixels, " pixels (DecodeOptions::max_pixels)"));
  }
  return absl::OkStatus();
}

// EXIF orientation from a TIFF structure ("Exif\0\0" prefix optional): 1..8, 1 when absent or malformed.
int ParseExifOrientation(absl::Span<const uint8_t> exif) {
  if (StartsWith(exif, absl::string_view("Exif\0\0", 6))) exif.remove_prefix(6);
  if (exif.size() < 8) return 1;
  const bool little = StartsWith(exif, "II");
  if (!little && !StartsWith(exif, "MM")) return 1;
  const uint8_t* p = exif.data();
  auto u16 = [&](size_t at) { return little ? Le16(p + at) : Be16(p + at); };
  auto u32 = [&](size_t at) { return little ? Le32(p + at) : Be32(p + at); };
  if (u16(2) != 42) return 1;
  const uint64_t ifd = u32(4);
  if (ifd + 2 > exif.size()) return 1;
  const uint32_t count = u16(ifd);
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t entry = ifd + 2 + uint64_t{12} * i;
    if (entry + 12 > exif.size()) return 1;
    if (u16(entry) != 0x0112) continue;
    const uint32_t type = u16(entry + 2);
    uint32_t value = 0;
    if (type == 3) {  // SHORT
      value = u16(entry + 8);
    } else if (type == 4) {  // LONG
      value = u32(entry + 8);
    } else {
      return 1;
    }
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

// ---------------------------------------------------------------------------------------------------------------
// PNG: signature, IHDR, then every chunk up to IEND must lie inside the data.

absl::StatusOr<ImageInfo> ProbePng(absl::Span<const uint8_t> b, const DecodeOptions& options) {
  constexpr absl::string_view kPng = "PNG";
  if (b.size() < 33) return Invalid(kPng, absl::StrCat("truncated: ", b.size(), " bytes cannot hold the IHDR header"));
  if (Be32(b.data() + 8) != 13 || !StartsWith(b, "IHDR", 12)) {
    return Invalid(kPng, "corrupt: the first chunk is not a 13-byte IHDR");
  }
  const uint32_t width = Be32(b.data() + 16);
  const uint32_t height = Be32(b.data() + 20);
  const int depth = b[24];
  const int color_type = b[25];
  CLIPSERVE_RETURN_IF_ERROR(CheckDimensions(kPng, width, height, options));
  ImageInfo info;
  info.format = ImageFormat::kPng;
  info.width = static_cast<int>(width);
  info.height = static_cast<int>(height);
  bool depth_ok = false;
  switch (color_type) {
    case 0:  // grey
      depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
      info.channels = 1;
      // Pillow opens 1-bit grey as mode "1", which Image.resize() resamples with NEAREST.
      if (depth == 1) info.resample = ResampleHint::kNearest;
      break;
    case 2:  // RGB
      depth_ok = depth == 8 || depth == 16;
      info.channels = 3;
      break;
    case 3:  // palette: Pillow mode "P", resized with NEAREST, converted to RGB (transparency dropped)
      depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8;
      info.channels = 3;
      info.resample = ResampleHint::kNearest;
      break;
    case 4:  // grey + alpha: Pillow "LA" (premultiplied resize); we hold it as RGBA
    case 6:  // RGBA
      depth_ok = depth == 8 || depth == 16;
      info.channels = 4;
      break;
    default:
      return Invalid(kPng, absl::StrCat("corrupt: colour type ", color_type, " (allowed: 0, 2, 3, 4, 6)"));
  }
  if (!depth_ok) {
    return Invalid(kPng, absl::StrCat("corrupt: bit depth ", depth, " is not allowed for colour type ", color_type));
  }
  bool has_data = false;
  uint64_t pos = 8;
  while (true) {
    if (pos + 12 > b.size()) {
      return Invalid(kPng, absl::StrCat("truncated: the data ends at byte ", b.size(),
                                        " before the IEND chunk (incomplete file?)"));
    }
    const uint64_t length = Be32(b.data() + pos);
    const std::string type(reinterpret_cast<const char*>(b.data() + pos + 4), 4);
    if (length > 0x7fffffffu || pos + 12 + length > b.size()) {
      return Invalid(kPng, absl::StrCat("truncated: chunk '", type, "' at byte ", pos, " declares ", length,
                                        " bytes, past the end of the data (", b.size(), " bytes)"));
    }
    if (type == "IDAT") has_data = true;
    if (type == "eXIf" && info.exif_orientation == 1) {
      info.exif_orientation = ParseExifOrientation(b.subspan(pos + 8, length));
    }
    if (type == "IEND") break;
    pos += 12 + length;
  }
  if (!has_data) return Invalid(kPng, "corrupt: no IDAT chunk (no image data)");
  return info;
}

// ---------------------------------------------------------------------------------------------------------------
// JPEG: walk the markers (and the entropy-coded scans) from SOI to EOI; the first SOFn gives the size.

bool IsJpegSof(int marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

absl::StatusOr<ImageInfo> ProbeJpeg(absl::Span<const uint8_t> b, const DecodeOptions& options) {
  constexpr absl::string_view kJpeg = "JPEG";
  const uint8_t* p = b.data();
  const size_t n = b.size();
  ImageInfo info;
  info.format = ImageFormat::kJpeg;
  bool have_frame = false;
  bool have_scan = false;
  bool have_exif = false;
  size_t pos = 2;
  while (true) {
    if (pos >= n) {
      return Invalid(kJpeg, have_scan ? "truncated: no end-of-image marker (incomplete file?)"
                                      : "truncated: the data ends before the image data");
    }
    if (p[pos] != 0xFF) {
      return Invalid(kJpeg, absl::StrCat("corrupt: expected a marker at byte ", pos));
    }
    while (pos < n && p[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) return Invalid(kJpeg, "truncated: the data ends inside a marker");
    const int marker = p[pos++];
    if (marker == 0xD9) {  // EOI
      if (!have_frame || !have_scan) return Invalid(kJpeg, "corrupt: end-of-image before any image data");
      break;
    }
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // TEM, RSTn: no length
    if (marker == 0xD8 || marker == 0x00) {
      return Invalid(kJpeg, absl::StrCat("corrupt: unexpected marker 0xFF", absl::Hex(marker), " at byte ", pos - 2));
    }
    if (pos + 2 > n) return Invalid(kJpeg, "truncated: the data ends inside a segment header");
    const size_t length = Be16(p + pos);
    if (length < 2) return Invalid(kJpeg, absl::StrCat("corrupt: segment length ", length, " at byte ", pos));
    if (pos + length > n) {
      return Invalid(kJpeg, absl::StrCat("truncated: the segment at byte ", pos - 2, " declares ", length,
                                         " bytes, past the end of the data (", n, " bytes)"));
    }
    const uint8_t* seg = p + pos + 2;
    const size_t seg_len = length - 2;
    if (IsJpegSof(marker) && !have_frame) {
      if (seg_len < 6) return Invalid(kJpeg, "corrupt: frame header too short");
      const int precision = seg[0];
      const uint32_t height = Be16(seg + 1);
      const uint32_t width = Be16(seg + 3);
      if (height == 0 && width != 0) {
        return Invalid(kJpeg, "the frame header gives height 0 (DNL-defined height is not supported)");
      }
      CLIPSERVE_RETURN_IF_ERROR(CheckDimensions(kJpeg, width, height, options));
      if (precision != 8) {
        return Invalid(kJpeg, absl::StrCat(precision, "-bit samples are not supported (only 8-bit JPEG)"));
      }
      info.width = static_cast<int>(width);
      info.height = static_cast<int>(height);
      info.channels = seg[5] == 1 ? 1 : 3;
      have_frame = true;
    } else if (marker == 0xE1 && !have_exif && seg_len >= 6 && std::memcmp(seg, "Exif\0\0", 6) == 0) {
      // Pillow keeps the first APP1 Exif segment.
      have_exif = true;
      info.exif_orientation = ParseExifOrientation(absl::MakeConstSpan(seg, seg_len));
    }
    pos += length;
    if (marker == 0xDA) {  // SOS: skip the entropy-coded data up to the next real marker
      if (!have_frame) return Invalid(kJpeg, "corrupt: scan before the frame header");
      have_scan = true;
      while (true) {
        const void* ff = pos < n ? std::memchr(p + pos, 0xFF, n - pos) : nullptr;
        if (ff == nullptr || static_cast<const uint8_t*>(ff) + 1 >= p + n) {
          return Invalid(kJpeg,
                         "truncated: the data ends inside the compressed image data, with no "
                         "end-of-image marker (incomplete file?)");
        }
        pos = static_cast<size_t>(static_cast<const uint8_t*>(ff) - p);
        const int next = p[pos + 1];
        if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
          pos += 2;  // stuffed byte or restart marker
        } else if (next == 0xFF) {
          pos += 1;  // fill byte
        } else {
          break;  // a marker: back to the segment walk
        }
      }
    }
  }
  if (!have_frame) return Invalid(kJpeg, "corrupt: no frame header");
  return info;
}

// ---------------------------------------------------------------------------------------------------------------
// WebP: RIFF container; the first chunk (VP8, VP8L or VP8X) gives the size.

absl::StatusOr<ImageInfo> ProbeWebp(absl::Span<const uint8_t> b, const DecodeOptions& options) {
  constexpr absl::string_view kWebp = "WebP";
  if (b.size() < 20) return Invalid(kWebp, "truncated: the data ends inside the first chunk header");
  const uint64_t riff_end = uint64_t{Le32(b.data() + 4)} + 8;
  if (riff_end > b.size()) {
    return Invalid(kWebp, absl::StrCat("truncated: the RIFF header declares ", riff_end, " bytes, only ", b.size(),
                                       " present (incomplete file?)"));
  }
  if (riff_end < 20) return Invalid(kWebp, "corrupt: RIFF container too small for an image chunk");
  const uint8_t* p = b.data();
  const uint64_t chunk_size = Le32(p + 16);
  if (20 + chunk_size > riff_end) {
    return Invalid(kWebp, "truncated: the first chunk runs past the end of the RIFF container");
  }
  const uint8_t* payload = p + 20;
  ImageInfo info;
  info.format = ImageFormat::kWebp;
  uint64_t width = 0;
  uint64_t height = 0;
  bool alpha = false;
  if (StartsWith(b, "VP8 ", 12)) {
    if (chunk_size < 10) return Invalid(kWebp, "corrupt: VP8 chunk too small");
    if (payload[3] != 0x9d || payload[4] != 0x01 || payload[5] != 0x2a) {
      return Invalid(kWebp, "corrupt: missing VP8 start code (not a key frame?)");
    }
    width = Le16(payload + 6) & 0x3fff;
    height = Le16(payload + 8) & 0x3fff;
  } else if (StartsWith(b, "VP8L", 12)) {
    if (chunk_size < 5 || payload[0] != 0x2f) return Invalid(kWebp, "corrupt: bad VP8L header");
    const uint32_t bits = Le32(payload + 1);
    width = (bits & 0x3fff) + 1;
    height = ((bits >> 14) & 0x3fff) + 1;
    alpha = (bits >> 28) & 1;
  } else if (StartsWith(b, "VP8X", 12)) {
    if (chunk_size < 10) return Invalid(kWebp, "corrupt: VP8X chunk too small");
    const int flags = payload[0];
    if (flags & 0x02) return Invalid(kWebp, "animated WebP is not supported (only still images)");
    alpha = (flags & 0x10) != 0;
    width = uint64_t{Le24(payload + 4)} + 1;
    height = uint64_t{Le24(payload + 7)} + 1;
    // Look for an EXIF chunk among the following ones.
    uint64_t pos = 20 + chunk_size + (chunk_size & 1);
    while (pos + 8 <= riff_end) {
      const uint64_t size = Le32(p + pos + 4);
      if (pos + 8 + size > riff_end) return Invalid(kWebp, "truncated: a chunk runs past the end of the data");
      if (StartsWith(b, "EXIF", pos)) {
        info.exif_orientation = ParseExifOrientation(b.subspan(pos + 8, size));
        break;
      }
      pos += 8 + size + (size & 1);
    }
  } else {
    return Invalid(kWebp, "corrupt: the first chunk is not VP8, VP8L or VP8X");
  }
  CLIPSERVE_RETURN_IF_ERROR(CheckDimensions(kWebp, width, height, options));
  info.width = static_cast<int>(width);
  info.height = static_cast<int>(height);
  info.channels = alpha ? 4 : 3;
  return info;
}

// ---------------------------------------------------------------------------------------------------------------
// BMP: file header + core (12-byte) or info (≥ 40-byte) header; palette rules follow Pillow's BmpImagePlugin.

absl::StatusOr<ImageInfo> ProbeBmp(absl::Span<const uint8_t> b, const DecodeOptions& options) {
  constexpr absl::string_view kBmp = "BMP";
  const uint8_t* p = b.data();
  if (b.size() < 18) return Invalid(kBmp, "truncated: the data ends inside the file header");
  const uint64_t pixel_offset = Le32(p + 10);
  const uint64_t header_size = Le32(p + 14);
  int64_t width = 0;
  int64_t height = 0;
  int bpp = 0;
  uint32_t compression = 0;
  uint64_t colors = 0;
  uint64_t palette_entry = 4;
  if (header_size == 12) {
    if (b.size() < 26) return Invalid(kBmp, "truncated: the data ends inside the bitmap header");
    width = Le16(p + 18);
    height = Le16(p + 20);
    bpp = static_cast<int>(Le16(p + 24));
    palette_entry = 3;
  } else if (header_size >= 40 && header_size <= 1024) {
    if (b.size() < 14 + 40) return Invalid(kBmp, "truncated: the data ends inside the bitmap header");
    width = static_cast<int32_t>(Le32(p + 18));
    height = static_cast<int32_t>(Le32(p + 22));
    bpp = static_cast<int>(Le16(p + 28));
    compression = Le32(p + 30);
    colors = Le32(p + 46);
  } else {
    return Invalid(kBmp, absl::StrCat("unsupported bitmap header size ", header_size, " (allowed: 12, 40 and up)"));
  }
  if (width < 0) return Invalid(kBmp, absl::StrCat("corrupt: negative width ", width));
  if (height < 0) height = -height;  // top-down rows
  CLIPSERVE_RETURN_IF_ERROR(
      CheckDimensions(kBmp, static_cast<uint64_t>(width), static_cast<uint64_t>(height), options));
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32) {
    return Invalid(kBmp, absl::StrCat(bpp, " bits per pixel is not supported (allowed: 1, 4, 8, 16, 24, 32)"));
  }
  if (compression > 3) {
    return Invalid(kBmp,
                   absl::StrCat("compression ", compression, " is not supported (allowed: none, RLE, bitfields)"));
  }
  ImageInfo info;
  info.format = ImageFormat::kBmp;
  info.width = static_cast<int>(width);
  info.height = static_cast<int>(height);
  info.channels = 3;
  if (compression == 0 || compression == 3) {
    const uint64_t stride = (static_cast<uint64_t>(width) * bpp + 31) / 32 * 4;
    const uint64_t needed = pixel_offset + stride * static_cast<uint64_t>(height);
    if (needed > b.size()) {
      return Invalid(kBmp, absl::StrCat("truncated: the pixel array needs ", needed, " bytes, only ", b.size(),
                                        " present (incomplete file?)"));
    }
  }
  if (bpp <= 8) {
    if (colors == 0) colors = uint64_t{1} << bpp;
    if (colors > 256) return Invalid(kBmp, absl::StrCat("corrupt: palette of ", colors, " colours"));
    const uint64_t palette_at = 14 + header_size;
    if (palette_at + colors * palette_entry > b.size()) return Invalid(kBmp, "truncated: the palette is incomplete");
    // Pillow: an all-grey palette equal to its index (or black/white for 2 colours) is "L" / "1", else "P".
    bool greyscale = true;
    bool all_grey = true;
    for (uint64_t i = 0; i < colors; ++i) {
      const uint8_t* e = p + palette_at + i * palette_entry;
      const int expected = colors == 2 ? (i == 0 ? 0 : 255) : static_cast<int>(i);
      if (e[0] != expected || e[1] != expected || e[2] != expected) greyscale = false;
      if (e[0] != e[1] || e[1] != e[2]) all_grey = false;
    }
    info.channels = all_grey ? 1 : 3;  // what OpenCV returns
    const bool mode_l = greyscale && colors != 2;
    info.resample = mode_l ? ResampleHint::kBicubic : ResampleHint::kNearest;
  } else if (bpp == 32 && compression == 3 && header_size >= 56 && b.size() >= 14 + 56) {
    // Bitfields with a non-zero alpha mask: Pillow opens RGBA ("BGRA"); OpenCV returns four channels.
    if (Le32(p + 14 + 52) != 0) info.channels = 4;
  }
  return info;
}

// ---------------------------------------------------------------------------------------------------------------

// One row of OpenCV samples (uint8_t, or uint16_t reduced to the high byte) in BGR(A)/grey order → `channels`
// packed RGB(A)/grey samples.
template <typename T, int kSrc>
void ConvertRow(const T* in, int width, int channels, uint8_t* dst) {
  auto v = [&](int i) { return static_cast<uint8_t>(sizeof(T) == 1 ? in[i] : in[i] >> 8); };
  for (int x = 0; x < width; ++x, in += kSrc) {
    if (channels == 1) {
      *dst++ = v(0);  // grey, possibly expanded to BGR(A) by the decoder
    } else if (kSrc == 1) {
      dst[0] = dst[1] = dst[2] = v(0);
      dst += 3;
      if (channels == 4) *dst++ = 255;
    } else {
      dst[0] = v(2);
      dst[1] = v(1);
      dst[2] = v(0);
      dst += 3;
      if (channels == 4) *dst++ = kSrc == 4 ? v(3) : 255;
    }
  }
}

template <typename T>
void ConvertRow(const T* in, int src_channels, int width, int channels, uint8_t* dst) {
  switch (src_channels) {
    case 1:
      return ConvertRow<T, 1>(in, width, channels, dst);
    case 3:
      return ConvertRow<T, 3>(in, width, channels, dst);
    default:
      return ConvertRow<T, 4>(in, width, channels, dst);
  }
}

// cv::Mat (8- or 16-bit, 1/3/4 channels in OpenCV's BGR(A) order) → tightly packed RGB(A)/grey with
// `channels` channels, 16-bit samples reduced to their high byte.
absl::Status ConvertToPacked(const cv::Mat& mat, int channels, DecodedImage* out) {
  const int src_channels = mat.channels();
  const bool wide = mat.depth() == CV_16U;
  if ((mat.depth() != CV_8U && !wide) || (src_channels != 1 && src_channels != 3 && src_channels != 4)) {
    return absl::InternalError(absl::StrCat("decoder returned an unsupported pixel type ", mat.type()));
  }
  out->width = mat.cols;
  out->height = mat.rows;
  out->channels = channels;
  out->pixels.resize(static_cast<size_t>(mat.cols) * mat.rows * channels);
  const size_t row_bytes = static_cast<size_t>(mat.cols) * channels;
  for (int y = 0; y < mat.rows; ++y) {
    uint8_t* dst = out->pixels.data() + y * row_bytes;
    if (wide) {
      ConvertRow(mat.ptr<uint16_t>(y), src_channels, mat.cols, channels, dst);
    } else if (src_channels == 1 && channels == 1) {
      std::memcpy(dst, mat.ptr<uint8_t>(y), row_bytes);
    } else {
      ConvertRow(mat.ptr<uint8_t>(y), src_channels, mat.cols, channels, dst);
    }
  }
  return absl::OkStatus();
}

// Pillow's ImageOps.exif_transpose for orientations 2..8.
void ApplyOrientation(int orientation, DecodedImage* image) {
  if (orientation < 2 || orientation > 8) return;
  const int w = image->width;
  const int h = image->height;
  const int c = image->channels;
  // Source pixel of output (ox, oy): sx = mx[0]·ox + mx[1]·oy + mx[2]·(w − 1), sy = my[0]·ox + my[1]·oy + my[2]·(h −
  // 1).
  struct Mapping {
    int mx[3];
    int my[3];
  };
  static constexpr Mapping kMappings[9] = {
      {{1, 0, 0}, {0, 1, 0}},    // 0: unused
      {{1, 0, 0}, {0, 1, 0}},    // 1: identity
      {{-1, 0, 1}, {0, 1, 0}},   // 2: FLIP_LEFT_RIGHT
      {{-1, 0, 1}, {0, -1, 1}},  // 3: ROTATE_180
      {{1, 0, 0}, {0, -1, 1}},   // 4: FLIP_TOP_BOTTOM
      {{0, 1, 0}, {1, 0, 0}},    // 5: TRANSPOSE
      {{0, 1, 0}, {-1, 0, 1}},   // 6: ROTATE_270 (90° clockwise)
      {{0, -1, 1}, {-1, 0, 1}},  // 7: TRANSVERSE
      {{0, -1, 1}, {1, 0, 0}},   // 8: ROTATE_90 (90° counter-clockwise)
  };
  const Mapping& m = kMappings[orientation];
  const bool swap = orientation >= 5;
  const int out_w = swap ? h : w;
  const int out_h = swap ? w : h;
  std::vector<uint8_t> out(image->pixels.size());
  uint8_t* dst = out.data();
  for (int oy = 0; oy < out_h; ++oy) {
    for (int ox = 0; ox < out_w; ++ox) {
      const int sx = m.mx[0] * ox + m.mx[1] * oy + m.mx[2] * (w - 1);
      const int sy = m.my[0] * ox + m.my[1] * oy + m.my[2] * (h - 1);
      const uint8_t* s = &image->pixels[(static_cast<size_t>(sy) * w + sx) * c];
      dst = std::copy(s, s + c, dst);
    }
  }
  image->pixels = std::move(out);
  image->width = out_w;
  image->height = out_h;
}

}  // namespace

absl::string_view ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kRaw:
      return "raw";
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kWebp:
      return "WebP";
    case ImageFormat::kBmp:
      return "BMP";
  }
  return "unknown";
}

absl::Status ValidateImageView(const ImageView& view) {
  if (view.width <= 0 || view.height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("image is ", view.width, "x", view.height, "; width and height must be positive"));
  }
  if (view.channels != 1 && view.channels != 3 && view.channels != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("image has ", view.channels, " channels; allowed: 1 (grey), 3 (RGB), 4 (RGBA)"));
  }
  const uint64_t expected = uint64_t{static_cast<uint32_t>(view.width)} * static_cast<uint32_t>(view.height) *
                            static_cast<uint32_t>(view.channels);
  if (view.pixels.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("image buffer has ", view.pixels.size(), " bytes; ", view.width, "x",
                                                   view.height, "x", view.channels, " needs ", expected));
  }
  return absl::OkStatus();
}

absl::StatusOr<ImageInfo> ProbeImage(absl::Span<const uint8_t> bytes, const DecodeOptions& options) {
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat("empty image data; ", kSupported));
  if (bytes.size() > options.max_encoded_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("image data is ", bytes.size(), " bytes, more than the limit of ",
                                                   options.max_encoded_bytes, " (DecodeOptions::max_encoded_bytes)"));
  }
  if (StartsWith(bytes, "\x89PNG\r\n\x1a\n")) return ProbePng(bytes, options);
  if (StartsWith(bytes, "\xff\xd8\xff")) return ProbeJpeg(bytes, options);
  if (StartsWith(bytes, "RIFF") && StartsWith(bytes, "WEBP", 8)) return ProbeWebp(bytes, options);
  if (StartsWith(bytes, "BM")) return ProbeBmp(bytes, options);
  // A prefix of a signature: too short to tell, but most likely a cut-off file.
  for (const absl::string_view magic : {absl::string_view("\x89PNG\r\n\x1a\n"), absl::string_view("RIFF")}) {
    if (bytes.size() < magic.size() + 8 &&
        std::memcmp(bytes.data(), magic.data(), std::min(bytes.size(), magic.size())) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("truncated: ", bytes.size(), " bytes are too few to hold an image header; ", kSupported));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("not an image (unrecognised leading bytes); ", kSupported));
}

absl::StatusOr<DecodedImage> DecodeImage(absl::Span<const uint8_t> bytes, const DecodeOptions& options) {
  CLIPSERVE_ASSIGN_OR_RETURN(const ImageInfo info, ProbeImage(bytes, options));
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("image data is ", bytes.size(), " bytes; at most ", INT_MAX));
  }
  const absl::string_view name = ImageFormatName(info.format);
  cv::Mat mat;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<uint8_t*>(bytes.data()));
    mat = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": cannot decode: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": cannot decode: ", e.what()));
  }
  if (mat.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": cannot decode ", info.width, "x", info.height, " image: corrupt or unsupported data"));
  }
  if (mat.cols != info.width || mat.rows != info.height) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": header says ", info.width, "x", info.height,
                                                   " but the decoder produced ", mat.cols, "x", mat.rows));
  }
  DecodedImage image;
  image.format = info.format;
  image.resample = info.resample;
  image.exif_orientation = info.exif_orientation;
  // Channel count: the container's idea of the mode, except where OpenCV knows better (JPEG colour transforms,
  // BMP palettes are reported as OpenCV expands them).
  int channels = info.channels;
  if (info.format == ImageFormat::kJpeg || info.format == ImageFormat::kBmp) {
    channels = std::min(mat.channels(), info.channels == 4 ? 4 : 3);
    if (mat.channels() == 1) channels = 1;
  }
  CLIPSERVE_RETURN_IF_ERROR(ConvertToPacked(mat, channels, &image));
  if (options.apply_exif_orientation) ApplyOrientation(info.exif_orientation, &image);
  return image;
}

absl::StatusOr<DecodedImage> ImageFromPixels(absl::Span<const uint8_t> pixels, int width, int height, int channels,
                                             const DecodeOptions& options) {
  if (width > 0 && height > 0) {
    CLIPSERVE_RETURN_IF_ERROR(
        CheckDimensions("raw pixels", static_cast<uint64_t>(width), static_cast<uint64_t>(height), options));
  }
  const ImageView view{pixels, width, height, channels, ResampleHint::kBicubic};
  CLIPSERVE_RETURN_IF_ERROR(ValidateImageView(view));
  DecodedImage image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  image.pixels.assign(pixels.begin(), pixels.end());
  return image;
}

}  // namespace clipserve
