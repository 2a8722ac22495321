#include "server/models/clip/preprocess.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::clip {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Pillow's libImaging/Resample.c, 8 bits per channel. Names follow the C source.

// 8 bits for the result, two extra bits for overshoot of the (partly negative) filter, and the sign.
constexpr int kPrecisionBits = 32 - 8 - 2;

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
constexpr double kBicubicSupport = 2.0;

inline uint8_t Clip8(int32_t in) {
  const int32_t v = in >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// precompute_coeffs() + normalize_coeffs_8bpc() for the output indices [first, first + count) only: each output
// index's taps depend on nothing but its own position, so the values equal those of the full table.
struct Coefficients {
  int ksize = 0;
  std::vector<int> xmin;   // first input index of each output index
  std::vector<int> taps;   // number of input indices used
  std::vector<int32_t> k;  // count × ksize fixed-point weights
};

Coefficients PrecomputeCoefficients(int in_size, int out_size, int first, int count) {
  // Pillow passes the box as float; the full image's box is (0, in_size).
  const float in0 = 0.0f;
  const float in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  double filterscale = scale;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = kBicubicSupport * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(count);
  c.taps.resize(count);
  c.k.assign(static_cast<size_t>(count) * c.ksize, 0);
  std::vector<double> kk(c.ksize);
  for (int i = 0; i < count; ++i) {
    const int xx = first + i;
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      const double w = BicubicFilter((x + xmin - center + 0.5) * ss);
      kk[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) kk[x] /= ww;
    }
    int32_t* k = &c.k[static_cast<size_t>(i) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      k[x] = kk[x] < 0 ? static_cast<int32_t>(-0.5 + kk[x] * (1 << kPrecisionBits))
                       : static_cast<int32_t>(0.5 + kk[x] * (1 << kPrecisionBits));
    }
    c.xmin[i] = xmin;
    c.taps[i] = xmax;
  }
  return c;
}

// ImagingResampleHorizontal_8bpc: `rows` rows of `src` (stride in bytes) → `c.xmin.size()` output columns.
template <int C>
void HorizontalPass(const uint8_t* src, size_t src_stride, int rows, const Coefficients& c, uint8_t* dst) {
  const int out_cols = static_cast<int>(c.xmin.size());
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src + y * src_stride;
    uint8_t* out = dst + static_cast<size_t>(y) * out_cols * C;
    for (int xx = 0; xx < out_cols; ++xx) {
      const uint8_t* p = in + static_cast<size_t>(c.xmin[xx]) * C;
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
      const int taps = c.taps[xx];
      int32_t ss[C];
      for (int ch = 0; ch < C; ++ch) ss[ch] = 1 << (kPrecisionBits - 1);
      for (int x = 0; x < taps; ++x) {
        for (int ch = 0; ch < C; ++ch) ss[ch] += p[x * C + ch] * k[x];
      }
      for (int ch = 0; ch < C; ++ch) *out++ = Clip8(ss[ch]);
    }
  }
}

void HorizontalPass(int channels, const uint8_t* src, size_t src_stride, int rows, const Coefficients& c,
                    uint8_t* dst) {
  switch (channels) {
    case 1:
      return HorizontalPass<1>(src, src_stride, rows, c, dst);
    case 3:
      return HorizontalPass<3>(src, src_stride, rows, c, dst);
    default:
      return HorizontalPass<4>(src, src_stride, rows, c, dst);
  }
}

// ImagingResampleVertical_8bpc: row `r` of `src` is input row `src_first_row + r`; `row_bytes` bytes per row.
// Sums taps in the same integer arithmetic as Pillow, one tap row at a time (integer sums are exact).
void VerticalPass(const uint8_t* src, size_t src_stride, int src_first_row, const Coefficients& c, size_t row_bytes,
                  uint8_t* dst) {
  std::vector<int32_t> acc(row_bytes);
  const int out_rows = static_cast<int>(c.xmin.size());
  for (int yy = 0; yy < out_rows; ++yy) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
    for (int y = 0; y < c.taps[yy]; ++y) {
      const uint8_t* row = src + static_cast<size_t>(c.xmin[yy] + y - src_first_row) * src_stride;
      const int32_t w = k[y];
      int32_t* a = acc.data();
      for (size_t i = 0; i < row_bytes; ++i) a[i] += row[i] * w;
    }
    uint8_t* out = dst + static_cast<size_t>(yy) * row_bytes;
    for (size_t i = 0; i < row_bytes; ++i) out[i] = Clip8(acc[i]);
  }
}

// MULDIV255 of libImaging: round(a · b / 255) in integers.
inline uint8_t MulDiv255(uint32_t a, uint32_t b) {
  const uint32_t tmp = a * b + 128;
  return static_cast<uint8_t>(((tmp >> 8) + tmp) >> 8);
}

// rgbA2rgba: RGBA → premultiplied RGBa, `pixels` pixels.
void PremultiplyRow(const uint8_t* in, size_t pixels, uint8_t* out) {
  for (size_t i = 0; i < pixels * 4; i += 4) {
    const uint32_t alpha = in[i + 3];
    out[i] = MulDiv255(in[i], alpha);
    out[i + 1] = MulDiv255(in[i + 1], alpha);
    out[i + 2] = MulDiv255(in[i + 2], alpha);
    out[i + 3] = static_cast<uint8_t>(alpha);
  }
}

// rgba2rgbA: premultiplied RGBa → RGBA, in place.
void Unpremultiply(absl::Span<uint8_t> pixels) {
  for (size_t i = 0; i < pixels.size(); i += 4) {
    const uint32_t alpha = pixels[i + 3];
    if (alpha == 0 || alpha == 255) continue;
    for (int c = 0; c < 3; ++c) {
      const uint32_t v = (255 * uint32_t{pixels[i + c]}) / alpha;
      pixels[i + c] = static_cast<uint8_t>(v > 255 ? 255 : v);
    }
  }
}

enum class Alpha { kAsIs, kPremultiply };

// ImagingResampleInner for `region` of the out_width × out_height result. With Alpha::kPremultiply the 4-channel
// source is premultiplied row by row as it is read (the result stays premultiplied). The caller has validated
// everything.
void ResizeBicubicRegion(const ImageView& src, int out_width, int out_height, const PixelRect& region, Alpha alpha,
                         uint8_t* out) {
  const int ch = src.channels;
  const size_t src_stride = static_cast<size_t>(src.width) * ch;
  const size_t out_row_bytes = static_cast<size_t>(region.width) * ch;
  const bool need_horizontal = out_width != src.width;
  const bool need_vertical = out_height != src.height;
  const bool premultiply = alpha == Alpha::kPremultiply;

  Coefficients vertical;
  int first_row = region.y;
  int last_row = region.y + region.height;
  if (need_vertical) {
    vertical = PrecomputeCoefficients(src.height, out_height, region.y, region.height);
    first_row = INT_MAX;
    last_row = 0;
    for (int i = 0; i < region.height; ++i) {
      first_row = std::min(first_row, vertical.xmin[i]);
      last_row = std::max(last_row, vertical.xmin[i] + vertical.taps[i]);
    }
  }
  const int rows = last_row - first_row;

  // Stage: rows [first_row, last_row) of the horizontally resampled (or premultiplied) image, region columns.
  std::vector<uint8_t> temp;
  const uint8_t* stage = src.pixels.data() + static_cast<size_t>(region.x) * ch;
  size_t stage_stride = src_stride;
  int stage_first_row = 0;
  if (need_horizontal || premultiply) {
    temp.resize(static_cast<size_t>(rows) * out_row_bytes);
    stage = temp.data();
    stage_stride = out_row_bytes;
    stage_first_row = first_row;
  }
  if (need_horizontal) {
    const Coefficients horizontal = PrecomputeCoefficients(src.width, out_width, region.x, region.width);
    const uint8_t* first = src.pixels.data() + first_row * src_stride;
    if (premultiply) {
      std::vector<uint8_t> row(src_stride);
      for (int y = 0; y < rows; ++y) {
        PremultiplyRow(first + y * src_stride, static_cast<size_t>(src.width), row.data());
        HorizontalPass(ch, row.data(), src_stride, 1, horizontal, temp.data() + y * out_row_bytes);
      }
    } else {
      HorizontalPass(ch, first, src_stride, rows, horizontal, temp.data());
    }
  } else if (premultiply) {
    for (int y = 0; y < rows; ++y) {
      PremultiplyRow(src.pixels.data() + (first_row + y) * src_stride + static_cast<size_t>(region.x) * ch,
                     static_cast<size_t>(region.width), temp.data() + y * out_row_bytes);
    }
  }

  if (need_vertical) {
    VerticalPass(stage, stage_stride, stage_first_row, vertical, out_row_bytes, out);
  } else {
    for (int y = 0; y < region.height; ++y) {
      std::memcpy(out + y * out_row_bytes, stage + static_cast<size_t>(region.y + y - stage_first_row) * stage_stride,
                  out_row_bytes);
    }
  }
}

// ImagingScaleAffine (the NEAREST path of Image.resize), for `region` of the result.
void ResizeNearestRegion(const ImageView& src, int out_width, int out_height, const PixelRect& region, uint8_t* out) {
  const int ch = src.channels;
  // _resize(): a[0] = (box[2] - box[0]) / xsize with a float box; a[2] = box[0] = 0.
  const double a0 = static_cast<double>(static_cast<float>(src.width) - 0.0f) / out_width;
  const double a4 = static_cast<double>(static_cast<float>(src.height) - 0.0f) / out_height;
  auto coord = [](double v) { return v < 0.0 ? -1 : static_cast<int>(v); };
  auto table = [&](double step, int first, int count, int in_size) {
    std::vector<int> t(count, -1);
    double o = 0.0 + step * 0.5;
    for (int i = 0; i < first + count; ++i) {
      if (i >= first) {
        const int v = coord(o);
        t[i - first] = v >= 0 && v < in_size ? v : -1;
      }
      o += step;
    }
    return t;
  };
  const std::vector<int> xin = table(a0, region.x, region.width, src.width);
  const std::vector<int> yin = table(a4, region.y, region.height, src.height);
  for (int y = 0; y < region.height; ++y) {
    uint8_t* row = out + static_cast<size_t>(y) * region.width * ch;
    if (yin[y] < 0) {
      std::memset(row, 0, static_cast<size_t>(region.width) * ch);
      continue;
    }
    const uint8_t* in = src.pixels.data() + static_cast<size_t>(yin[y]) * src.width * ch;
    for (int x = 0; x < region.width; ++x) {
      if (xin[x] < 0) {
        std::memset(row + x * ch, 0, ch);
      } else {
        std::memcpy(row + x * ch, in + static_cast<size_t>(xin[x]) * ch, ch);
      }
    }
  }
}

absl::Status CheckResizeArguments(const ImageView& src, int out_width, int out_height, const PixelRect& region,
                                  size_t out_size) {
  CLIPSERVE_RETURN_IF_ERROR(ValidateImageView(src));
  if (out_width <= 0 || out_height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("resize target ", out_width, "x", out_height, ": width and height must be positive"));
  }
  if (region.width <= 0 || region.height <= 0 || region.x < 0 || region.y < 0 || region.x > out_width - region.width ||
      region.y > out_height - region.height) {
    return absl::InvalidArgumentError(absl::StrCat("region ", region.width, "x", region.height, "+", region.x, "+",
                                                   region.y, " is empty or outside the ", out_width, "x", out_height,
                                                   " result"));
  }
  const size_t needed = static_cast<size_t>(region.width) * region.height * src.channels;
  if (out_size != needed) {
    return absl::InvalidArgumentError(absl::StrCat("output buffer has ", out_size, " bytes; ", region.width, "x",
                                                   region.height, "x", src.channels, " needs ", needed));
  }
  return absl::OkStatus();
}

absl::Status BadConfig(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("preprocessor config: ", what));
}

// {"height": h, "width": w} or a bare int.
absl::Status ReadSize(const nlohmann::json& json, const char* key, int* height, int* width) {
  const nlohmann::json& v = json.at(key);
  auto as_int = [&](const nlohmann::json& x, const std::string& name, int* out) -> absl::Status {
    if (!x.is_number_integer()) return BadConfig(absl::StrCat(name, " must be an integer, got ", x.dump()));
    const int64_t value = x.get<int64_t>();
    if (value < 1 || value > 8192) return BadConfig(absl::StrCat(name, " = ", value, " (allowed: 1 to 8192)"));
    *out = static_cast<int>(value);
    return absl::OkStatus();
  };
  if (v.is_object() && v.contains("height") && v.contains("width")) {
    CLIPSERVE_RETURN_IF_ERROR(as_int(v.at("height"), absl::StrCat(key, ".height"), height));
    return as_int(v.at("width"), absl::StrCat(key, ".width"), width);
  }
  CLIPSERVE_RETURN_IF_ERROR(as_int(v, key, height));
  *width = *height;
  return absl::OkStatus();
}

absl::Status ReadTriple(const nlohmann::json& json, const char* key, std::array<float, 3>* out) {
  const nlohmann::json& v = json.at(key);
  if (!v.is_array() || v.size() != 3) {
    return BadConfig(absl::StrCat(key, " must be a list of 3 numbers (R, G, B), got ", v.dump()));
  }
  for (int i = 0; i < 3; ++i) {
    if (!v[i].is_number()) return BadConfig(absl::StrCat(key, "[", i, "] is not a number"));
    (*out)[i] = static_cast<float>(v[i].get<double>());
  }
  return absl::OkStatus();
}

bool FlagIsFalse(const nlohmann::json& json, const char* key) {
  return json.contains(key) && json.at(key).is_boolean() && !json.at(key).get<bool>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

absl::Status ValidatePreprocessConfig(const PreprocessConfig& config) {
  auto in_range = [](int v) { return v >= 1 && v <= 8192; };
  if (!in_range(config.resize_shortest_edge) || !in_range(config.crop_height) || !in_range(config.crop_width)) {
    return BadConfig(absl::StrCat("resize_shortest_edge ", config.resize_shortest_edge, ", crop ", config.crop_height,
                                  "x", config.crop_width, " (each allowed: 1 to 8192)"));
  }
  if (config.crop_height > config.resize_shortest_edge || config.crop_width > config.resize_shortest_edge) {
    return BadConfig(absl::StrCat("crop ", config.crop_height, "x", config.crop_width,
                                  " is larger than the resized shortest edge ", config.resize_shortest_edge,
                                  " (the crop must fit inside the resized image)"));
  }
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(config.mean[c]) || !std::isfinite(config.std[c]) || !(config.std[c] > 0.0f)) {
      return BadConfig(absl::StrCat("channel ", c, ": mean ", config.mean[c], ", std ", config.std[c],
                                    " (mean must be finite, std finite and positive)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PreprocessConfig> PreprocessConfigFromJson(const nlohmann::json& json) {
  if (!json.is_object()) return BadConfig("not a JSON object");
  PreprocessConfig config;
  try {
    if (json.contains("resample") && !(json.at("resample").is_number_integer() && json.at("resample") == 3)) {
      return BadConfig(absl::StrCat("resample = ", json.at("resample").dump(),
                                    " is not supported (only 3, bicubic, as in the CLIP reference)"));
    }
    for (const char* key : {"do_resize", "do_center_crop", "do_rescale"}) {
      if (FlagIsFalse(json, key)) {
        return BadConfig(absl::StrCat(key, " = false is not supported (the CLIP reference always does it)"));
      }
    }
    if (json.contains("rescale_factor")) {
      const auto& f = json.at("rescale_factor");
      if (!f.is_number() || std::abs(f.get<double>() - 1.0 / 255.0) > 1e-9) {
        return BadConfig(absl::StrCat("rescale_factor = ", f.dump(), " is not supported (only 1/255)"));
      }
    }
    if (!json.contains("size")) return BadConfig("missing \"size\" ({\"shortest_edge\": n} or n)");
    const nlohmann::json& size = json.at("size");
    if (size.is_object()) {
      if (!size.contains("shortest_edge")) {
        return BadConfig(absl::StrCat("size = ", size.dump(),
                                      " is not supported (only {\"shortest_edge\": n}: resize the shorter side)"));
      }
      int unused = 0;
      CLIPSERVE_RETURN_IF_ERROR(ReadSize(size, "shortest_edge", &config.resize_shortest_edge, &unused));
    } else {
      int unused = 0;
      CLIPSERVE_RETURN_IF_ERROR(ReadSize(json, "size", &config.resize_shortest_edge, &unused));
    }
    if (json.contains("crop_size")) {
      CLIPSERVE_RETURN_IF_ERROR(ReadSize(json, "crop_size", &config.crop_height, &config.crop_width));
    } else {
      config.crop_height = config.crop_width = config.resize_shortest_edge;
    }
    if (FlagIsFalse(json, "do_normalize")) {
      config.mean = {0.0f, 0.0f, 0.0f};
      config.std = {1.0f, 1.0f, 1.0f};
    } else {
      if (json.contains("image_mean")) CLIPSERVE_RETURN_IF_ERROR(ReadTriple(json, "image_mean", &config.mean));
      if (json.contains("image_std")) CLIPSERVE_RETURN_IF_ERROR(ReadTriple(json, "image_std", &config.std));
    }
  } catch (const nlohmann::json::exception& e) {
    return BadConfig(e.what());
  }
  CLIPSERVE_RETURN_IF_ERROR(ValidatePreprocessConfig(config));
  return config;
}

absl::StatusOr<PreprocessConfig> LoadPreprocessConfig(const std::filesystem::path& path) {
  CLIPSERVE_ASSIGN_OR_RETURN(const nlohmann::json json, ReadJsonFile(path));
  absl::StatusOr<PreprocessConfig> config = PreprocessConfigFromJson(json);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat(path.string(), ": ", config.status().message()));
  }
  return config;
}

size_t PreprocessedSize(const PreprocessConfig& config) {
  return size_t{3} * static_cast<size_t>(std::max(config.crop_height, 0)) *
         static_cast<size_t>(std::max(config.crop_width, 0));
}

absl::StatusOr<std::pair<int, int>> ResizedSizeForShortestEdge(int width, int height, int shortest_edge) {
  if (width <= 0 || height <= 0 || shortest_edge <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resize ", width, "x", height, " to shortest edge ",
                                                   shortest_edge, ": sizes must be positive"));
  }
  const int64_t short_side = std::min(width, height);
  const int64_t long_side = std::max(width, height);
  // Python: int(shortest_edge * long / short); the product is exact and the quotient correctly rounded.
  const double new_long = static_cast<double>(shortest_edge * long_side) / static_cast<double>(short_side);
  if (!(new_long < static_cast<double>(INT_MAX))) {
    return absl::InvalidArgumentError(absl::StrCat("image ", width, "x", height, " has too extreme an aspect ratio: ",
                                                   "its long side would become ", new_long, " pixels"));
  }
  const int long_out = static_cast<int>(new_long);
  if (width <= height) return std::make_pair(shortest_edge, long_out);
  return std::make_pair(long_out, shortest_edge);
}

int CenterCropOffset(int size, int crop) {
  const int d = size - crop;
  const int floor_half = d >= 0 ? d / 2 : -((-d + 1) / 2);
  if (d % 2 == 0) return floor_half;
  return floor_half % 2 == 0 ? floor_half : floor_half + 1;  // x.5 rounds to the even neighbour
}

absl::Status ResizeBicubic(const ImageView& src, int out_width, int out_height, absl::Span<uint8_t> out) {
  const PixelRect all{0, 0, out_width, out_height};
  CLIPSERVE_RETURN_IF_ERROR(CheckResizeArguments(src, out_width, out_height, all, out.size()));
  ResizeBicubicRegion(src, out_width, out_height, all, Alpha::kAsIs, out.data());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> ResizeBicubic(const ImageView& src, int out_width, int out_height) {
  if (out_width <= 0 || out_height <= 0 || src.channels <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("resize target ", out_width, "x", out_height, ": width and height must be positive"));
  }
  std::vector<uint8_t> out(static_cast<size_t>(out_width) * out_height * src.channels);
  CLIPSERVE_RETURN_IF_ERROR(ResizeBicubic(src, out_width, out_height, absl::MakeSpan(out)));
  return out;
}

absl::Status ResizeNearest(const ImageView& src, int out_width, int out_height, absl::Span<uint8_t> out) {
  const PixelRect all{0, 0, out_width, out_height};
  CLIPSERVE_RETURN_IF_ERROR(CheckResizeArguments(src, out_width, out_height, all, out.size()));
  ResizeNearestRegion(src, out_width, out_height, all, out.data());
  return absl::OkStatus();
}

absl::Status PillowResize(const ImageView& src, int out_width, int out_height, const PixelRect& region,
                          absl::Span<uint8_t> out) {
  CLIPSERVE_RETURN_IF_ERROR(CheckResizeArguments(src, out_width, out_height, region, out.size()));
  const int ch = src.channels;
  if (out_width == src.width && out_height == src.height) {  // Image.resize returns a copy
    const size_t row_bytes = static_cast<size_t>(region.width) * ch;
    for (int y = 0; y < region.height; ++y) {
      std::memcpy(out.data() + y * row_bytes,
                  src.pixels.data() + (static_cast<size_t>(region.y + y) * src.width + region.x) * ch, row_bytes);
    }
    return absl::OkStatus();
  }
  if (src.resample == ResampleHint::kNearest) {
    ResizeNearestRegion(src, out_width, out_height, region, out.data());
    return absl::OkStatus();
  }
  if (ch != 4) {
    ResizeBicubicRegion(src, out_width, out_height, region, Alpha::kAsIs, out.data());
    return absl::OkStatus();
  }
  // RGBA → RGBa (rgbA2rgba), resize, RGBa → RGBA (rgba2rgbA).
  ResizeBicubicRegion(src, out_width, out_height, region, Alpha::kPremultiply, out.data());
  Unpremultiply(out);
  return absl::OkStatus();
}

absl::Status Preprocess(const ImageView& image, const PreprocessConfig& config, absl::Span<float> out_chw) {
  CLIPSERVE_RETURN_IF_ERROR(ValidateImageView(image));
  CLIPSERVE_RETURN_IF_ERROR(ValidatePreprocessConfig(config));
  if (out_chw.size() != PreprocessedSize(config)) {
    return absl::InvalidArgumentError(absl::StrCat("output buffer has ", out_chw.size(), " floats; 3x",
                                                   config.crop_height, "x", config.crop_width, " needs ",
                                                   PreprocessedSize(config)));
  }
  CLIPSERVE_ASSIGN_OR_RETURN(const auto resized,
                             ResizedSizeForShortestEdge(image.width, image.height, config.resize_shortest_edge));
  const auto [resized_width, resized_height] = resized;
  const PixelRect crop{CenterCropOffset(resized_width, config.crop_width),
                       CenterCropOffset(resized_height, config.crop_height), config.crop_width, config.crop_height};
  const int ch = image.channels;
  std::vector<uint8_t> pixels(static_cast<size_t>(crop.width) * crop.height * ch);
  CLIPSERVE_RETURN_IF_ERROR(PillowResize(image, resized_width, resized_height, crop, absl::MakeSpan(pixels)));

  // ToTensor (x / 255 in float32) then Normalize ((x - mean) / std in float32), tabulated per channel value.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) lut[c][v] = (static_cast<float>(v) / 255.0f - config.mean[c]) / config.std[c];
  }
  const size_t plane = static_cast<size_t>(crop.width) * crop.height;
  for (int c = 0; c < 3; ++c) {
    float* dst = out_chw.data() + c * plane;
    const float* table = lut[c];
    const uint8_t* src = pixels.data() + (ch == 1 ? 0 : c);
    for (size_t i = 0; i < plane; ++i) dst[i] = table[src[i * ch]];
  }
  return absl::OkStatus();
}

}  // namespace clipserve::clip
