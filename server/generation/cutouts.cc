#include "server/generation/cutouts.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace clipserve::generation {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Columns of the per-cutout uniform draw, each U[0, 1).
enum Column : int64_t {
  kSize,
  kOffsetX,
  kOffsetY,
  kAffineApply,
  kAngle,
  kTranslateX,
  kTranslateY,
  kShear,
  kPerspectiveApply,
  kCorners,  // 8 columns: (x, y) of the four corners
  kJitterApply = kCorners + 8,
  kBrightness,
  kContrast,
  kSaturation,
  kHue,
  kEraseApply,
  kEraseArea,
  kEraseAspect,
  kEraseY,
  kEraseX,
  kNoise,
  kColumns,
};
static_assert(kColumns == 28, "cutouts.h documents 28 uniforms per cutout");

// U(-1, 1) from U(0, 1).
double Symmetric(double u) { return 2 * u - 1; }

// randint(0, n) from U(0, 1).
int64_t RandInt(double u, int64_t n) { return std::min(static_cast<int64_t>(u * static_cast<double>(n)), n - 1); }

// Applies `fn(subset, rows)` to the rows of `batch` listed in `rows`, leaving the other rows as they are
// (bit-exact: no identity transform is run on them). Differentiable w.r.t. `batch`.
template <typename Fn>
at::Tensor ApplyToRows(const at::Tensor& batch, const std::vector<int64_t>& rows, Fn&& fn) {
  if (rows.empty()) return batch;
  if (static_cast<int64_t>(rows.size()) == batch.size(0)) return fn(batch, rows);
  const at::Tensor index = at::tensor(rows, at::kLong).to(batch.device());
  return batch.index_copy(0, index, fn(batch.index_select(0, index), rows));
}

// A CPU double tensor → `like`'s device and dtype.
at::Tensor Like(const at::Tensor& cpu_double, const at::Tensor& like) {
  return cpu_double.to(like.device(), like.scalar_type());
}

// The homography (row-major 3x3, h[8] = 1) with dst_k ≅ H·src_k for four point pairs: the 8x8 linear system
// of torchvision/kornia get_perspective_transform, by Gaussian elimination with partial pivoting in double.
// The identity when the system is singular (degenerate quadrilateral).
std::array<double, 9> Homography(const std::array<std::array<double, 2>, 4>& src,
                                 const std::array<std::array<double, 2>, 4>& dst) {
  double a[8][9] = {};
  for (int k = 0; k < 4; ++k) {
    const double x = src[k][0], y = src[k][1], u = dst[k][0], v = dst[k][1];
    const double r0[9] = {x, y, 1, 0, 0, 0, -u * x, -u * y, u};
    const double r1[9] = {0, 0, 0, x, y, 1, -v * x, -v * y, v};
    std::copy(r0, r0 + 9, a[2 * k]);
    std::copy(r1, r1 + 9, a[2 * k + 1]);
  }
  for (int col = 0; col < 8; ++col) {
    int pivot = col;
    for (int r = col + 1; r < 8; ++r) {
      if (std::fabs(a[r][col]) > std::fabs(a[pivot][col])) pivot = r;
    }
    if (std::fabs(a[pivot][col]) < 1e-12) return {1, 0, 0, 0, 1, 0, 0, 0, 1};
    std::swap(a[pivot], a[col]);
    for (int r = 0; r < 8; ++r) {
      if (r == col) continue;
      const double f = a[r][col] / a[col][col];
      for (int c = col; c < 9; ++c) a[r][c] -= f * a[col][c];
    }
  }
  std::array<double, 9> h;
  for (int i = 0; i < 8; ++i) h[i] = a[i][8] / a[i][i];
  h[8] = 1;
  return h;
}

// 3x3 inverse by cofactors (row-major); `m` is known to be invertible.
std::array<double, 9> Inverse3(const std::array<double, 9>& m) {
  const double c00 = m[4] * m[8] - m[5] * m[7], c01 = m[5] * m[6] - m[3] * m[8], c02 = m[3] * m[7] - m[4] * m[6];
  const double det = m[0] * c00 + m[1] * c01 + m[2] * c02;
  return {c00 / det, (m[2] * m[7] - m[1] * m[8]) / det, (m[1] * m[5] - m[2] * m[4]) / det,
          c01 / det, (m[0] * m[8] - m[2] * m[6]) / det, (m[2] * m[3] - m[0] * m[5]) / det,
          c02 / det, (m[1] * m[6] - m[0] * m[7]) / det, (m[0] * m[4] - m[1] * m[3]) / det};
}

// Crop + resample (the reference's classic MakeCutouts): pooling when the crop is at least cut_size, bilinear
// upsampling when it is smaller.
at::Tensor Crops(const at::Tensor& x, const CutoutOptions& o, const at::TensorAccessor<double, 2>& u) {
  const int64_t batch = x.size(0), height = x.size(2), width = x.size(3), s = o.cut_size;
  const int64_t max_size = std::min(height, width);
  const int64_t min_size = std::min(max_size, s);
  std::vector<at::Tensor> cutouts;
  cutouts.reserve(batch * o.cutn);
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor image = x.narrow(0, b, 1);
    for (int64_t i = 0; i < o.cutn; ++i) {
      const auto r = u[b * o.cutn + i];
      // int(rand^cut_pow · (max − min) + min), as the reference.
      const double fraction = std::pow(r[kSize], static_cast<double>(o.cut_pow));
      const int64_t size =
          std::min(max_size, min_size + static_cast<int64_t>(fraction * static_cast<double>(max_size - min_size)));
      const int64_t ox = RandInt(r[kOffsetX], width - size + 1);
      const int64_t oy = RandInt(r[kOffsetY], height - size + 1);
      const at::Tensor crop = image.narrow(2, oy, size).narrow(3, ox, size);
      cutouts.push_back(size >= s ? at::adaptive_avg_pool2d(crop, {s, s})
                                  : at::upsample_bilinear2d(crop, {s, s}, /*align_corners=*/false));
    }
  }
  return at::cat(cutouts, 0);
}

// kornia RandomAffine(degrees, translate, shear (x only), scale, padding border) in normalised coordinates
// (align_corners false; for a square image the centre is the origin and both axes have the same scale).
// `scales` holds each row's scale (empty: 1).
at::Tensor Affine(const at::Tensor& batch, const std::vector<int64_t>& rows, const CutoutOptions& o,
                  const at::TensorAccessor<double, 2>& u, const std::vector<double>& scales) {
  const int64_t n = static_cast<int64_t>(rows.size()), s = batch.size(2);
  at::Tensor theta = at::empty({n, 2, 3}, at::kDouble);
  auto t = theta.accessor<double, 3>();
  for (int64_t k = 0; k < n; ++k) {
    const auto r = u[rows[k]];
    const double angle = Symmetric(r[kAngle]) * o.rotation_degrees * kPi / 180;
    const double shear = std::tan(Symmetric(r[kShear]) * o.shear_degrees * kPi / 180);
    // Normalised coordinates span 2 per side, so a translation of `translate`·side is 2·translate.
    const double tx = 2 * o.translate * Symmetric(r[kTranslateX]);
    const double ty = 2 * o.translate * Symmetric(r[kTranslateY]);
    const double c = std::cos(angle), sn = std::sin(angle);
    // Forward map p ↦ m·A·p + t with A = rotation · x-shear (det 1) and m the scale; the grid needs the inverse.
    const double a00 = c, a01 = c * shear - sn, a10 = sn, a11 = sn * shear + c;
    const double m = scales.empty() ? 1.0 : scales[static_cast<size_t>(rows[k])];
    const double i00 = a11 / m, i01 = -a01 / m, i10 = -a10 / m, i11 = a00 / m;
    t[k][0][0] = i00;
    t[k][0][1] = i01;
    t[k][0][2] = -(i00 * tx + i01 * ty);
    t[k][1][0] = i10;
    t[k][1][1] = i11;
    t[k][1][2] = -(i10 * tx + i11 * ty);
  }
  const at::Tensor grid =
      at::affine_grid_generator(Like(theta, batch), {n, batch.size(1), s, s}, /*align_corners=*/false);
  return at::grid_sampler(batch, grid, /*interpolation_mode=*/0, /*padding_mode=*/1, /*align_corners=*/false);
}

// kornia RandomPerspective(distortion): corners (pixel centres at the image's edges, align_corners true) move
// inwards by U(0, distortion·side/2) pixels in x and y; the output at the moved corners samples the input at
// the original corners; zero padding (or border padding, perspective_border_padding).
at::Tensor Perspective(const at::Tensor& batch, const std::vector<int64_t>& rows, const CutoutOptions& o,
                       const at::TensorAccessor<double, 2>& u) {
  const int64_t n = static_cast<int64_t>(rows.size()), s = batch.size(2);
  // distortion·side/2 pixels in normalised units (2 per side − 1 pixel).
  const double factor =
      s > 1 ? o.perspective_distortion * static_cast<double>(s) / static_cast<double>(s - 1) : o.perspective_distortion;
  constexpr std::array<std::array<double, 2>, 4> kStart = {{{-1, -1}, {1, -1}, {1, 1}, {-1, 1}}};
  constexpr std::array<std::array<double, 2>, 4> kInwards = {{{1, 1}, {-1, 1}, {-1, -1}, {1, -1}}};
  at::Tensor h = at::empty({n, 3, 3}, at::kDouble);
  double* hp = h.data_ptr<double>();
  for (int64_t k = 0; k < n; ++k) {
    const auto r = u[rows[k]];
    std::array<std::array<double, 2>, 4> end;
    for (int c = 0; c < 4; ++c) {
      for (int d = 0; d < 2; ++d) end[c][d] = kStart[c][d] + factor * r[kCorners + 2 * c + d] * kInwards[c][d];
    }
    // Output point → input point: the map from the moved corners to the original ones.
    const std::array<double, 9> m = Homography(end, kStart);
    std::copy(m.begin(), m.end(), hp + 9 * k);
  }
  const at::Tensor hf = h.to(batch.device(), at::kFloat);
  const at::Tensor coords = at::linspace(-1, 1, s, at::TensorOptions().dtype(at::kFloat).device(batch.device()));
  const at::Tensor gx = coords.view({1, 1, s});
  const at::Tensor gy = coords.view({1, s, 1});
  auto entry = [&](int i, int j) { return hf.select(1, i).select(1, j).view({n, 1, 1}); };
  const at::Tensor px = entry(0, 0) * gx + entry(0, 1) * gy + entry(0, 2);
  const at::Tensor py = entry(1, 0) * gx + entry(1, 1) * gy + entry(1, 2);
  at::Tensor pw = entry(2, 0) * gx + entry(2, 1) * gy + entry(2, 2);
  // Points on (or beyond) the homography's vanishing line land far outside the image: keep them finite and
  // outside, where zero padding applies (a coordinate of ±3 is at least one pixel outside for s ≥ 2).
  pw = at::where(pw.abs() < 1e-6, at::full_like(pw, 1e-6), pw);
  const at::Tensor grid = at::stack({px / pw, py / pw}, -1).clamp(-3, 3).to(batch.scalar_type());
  return at::grid_sampler(batch, grid, /*interpolation_mode=*/0, /*padding_mode=*/o.perspective_border_padding ? 1 : 0,
                          /*align_corners=*/true);
}

// torchvision's rgb_to_grayscale, [n, 1, s, s].
at::Tensor Gray(const at::Tensor& rgb) {
  return rgb.select(1, 0).mul(0.2989).add(rgb.select(1, 1), 0.587).add(rgb.select(1, 2), 0.114).unsqueeze(1);
}

// ColorJitter with torchvision's operations in a fixed order (brightness, contrast, saturation, hue), each
// clamped to [0, 1]. The hue shift rotates the chroma plane of YIQ (a linear map; torchvision and kornia go
// through HSV, which is close for small shifts).
at::Tensor Jitter(const at::Tensor& batch, const std::vector<int64_t>& rows, const CutoutOptions& o,
                  const at::TensorAccessor<double, 2>& u) {
  const int64_t n = static_cast<int64_t>(rows.size());
  auto factors = [&](Column column, float range) {
    at::Tensor f = at::empty({n, 1, 1, 1}, at::kDouble);
    for (int64_t k = 0; k < n; ++k) {
      f.data_ptr<double>()[k] = std::max(0.0, 1 + range * Symmetric(u[rows[k]][column]));
    }
    return Like(f, batch);
  };
  at::Tensor y = (batch * factors(kBrightness, o.brightness)).clamp(0, 1);
  const at::Tensor contrast = factors(kContrast, o.contrast);
  const at::Tensor mean = Gray(y).mean({1, 2, 3}, /*keepdim=*/true);
  y = (contrast * y + (1 - contrast) * mean).clamp(0, 1);
  const at::Tensor saturation = factors(kSaturation, o.saturation);
  y = (saturation * y + (1 - saturation) * Gray(y)).clamp(0, 1);
  if (o.hue > 0) {
    constexpr std::array<double, 9> kYiq = {0.299, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312};
    const std::array<double, 9> inverse = Inverse3(kYiq);
    at::Tensor m = at::empty({n, 3, 3}, at::kDouble);
    auto ma = m.accessor<double, 3>();
    for (int64_t k = 0; k < n; ++k) {
      const double angle = 2 * kPi * o.hue * Symmetric(u[rows[k]][kHue]);
      const double c = std::cos(angle), sn = std::sin(angle);
      // rotation of (I, Q), then back: inverse · R · kYiq.
      const std::array<double, 9> r = {1, 0, 0, 0, c, -sn, 0, sn, c};
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
          double sum = 0;
          for (int a = 0; a < 3; ++a) {
            for (int b = 0; b < 3; ++b) sum += inverse[3 * i + a] * r[3 * a + b] * kYiq[3 * b + j];
          }
          ma[k][i][j] = sum;
        }
      }
    }
    const int64_t s = batch.size(2);
    y = at::bmm(Like(m, y), y.reshape({n, 3, s * s})).view({n, 3, s, s}).clamp(0, 1);
  }
  return y;
}

// kornia RandomErasing(scale, ratio, value): one rectangle per selected cutout.
at::Tensor Erase(const at::Tensor& batch, const std::vector<int64_t>& rows, const CutoutOptions& o,
                 const at::TensorAccessor<double, 2>& u) {
  const int64_t total = batch.size(0), s = batch.size(2);
  at::Tensor bounds = at::zeros({4, total}, at::kLong);  // y0, y1, x0, x1; empty for unselected rows
  auto bd = bounds.accessor<int64_t, 2>();
  const double log_lo = std::log(static_cast<double>(o.erase_aspect_min));
  const double log_hi = std::log(static_cast<double>(o.erase_aspect_max));
  for (const int64_t row : rows) {
    const auto r = u[row];
    const double area =
        (o.erase_area_min + (o.erase_area_max - o.erase_area_min) * r[kEraseArea]) * static_cast<double>(s * s);
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * r[kEraseAspect]);
    const int64_t h = std::clamp<int64_t>(std::llround(std::sqrt(area * aspect)), 1, s);
    const int64_t w = std::clamp<int64_t>(std::llround(std::sqrt(area / aspect)), 1, s);
    const int64_t y0 = RandInt(r[kEraseY], s - h + 1), x0 = RandInt(r[kEraseX], s - w + 1);
    bd[0][row] = y0;
    bd[1][row] = y0 + h;
    bd[2][row] = x0;
    bd[3][row] = x0 + w;
  }
  const at::Tensor b = bounds.to(batch.device());
  const at::Tensor idx = at::arange(s, at::TensorOptions().dtype(at::kLong).device(batch.device()));
  const at::Tensor ys = idx.view({1, 1, s, 1}), xs = idx.view({1, 1, 1, s});
  auto bound = [&](int i) { return b.select(0, i).view({total, 1, 1, 1}); };
  const at::Tensor mask =
      ys.ge(bound(0)).logical_and(ys.lt(bound(1))).logical_and(xs.ge(bound(2))).logical_and(xs.lt(bound(3)));
  return batch.masked_fill(mask, o.erase_value);
}

// Separable Gaussian blur of each row of `batch` [n, 3, s, s] with its own sigma (pixels; below 1e-3 the row
// is left as it is, up to rounding), reflect padding so that the edges do not darken.
at::Tensor Blur(const at::Tensor& batch, const std::vector<double>& sigmas, double sigma_max) {
  const int64_t n = batch.size(0), s = batch.size(2);
  const int64_t radius = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(3 * sigma_max)), 0, s - 1);
  if (radius == 0) return batch;
  const int64_t k = 2 * radius + 1;
  at::Tensor kernels = at::zeros({n, k}, at::kDouble);
  auto ka = kernels.accessor<double, 2>();
  for (int64_t row = 0; row < n; ++row) {
    const double sigma = sigmas[row];
    if (sigma < 1e-3) {
      ka[row][radius] = 1;
      continue;
    }
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += ka[row][i] = std::exp(-0.5 * std::pow((i - radius) / sigma, 2));
    for (int64_t i = 0; i < k; ++i) ka[row][i] /= sum;
  }
  // One group per (row, channel): [n·3, 1, k, 1] down the columns, then [n·3, 1, 1, k] along the rows.
  const at::Tensor w = Like(kernels, batch).repeat_interleave(3, 0);
  at::Tensor x = batch.reshape({1, n * 3, s, s});
  const std::vector<int64_t> one = {1, 1}, none = {0, 0};
  x = at::conv2d(at::reflection_pad2d(x, {0, 0, radius, radius}), w.view({n * 3, 1, k, 1}), {}, one, none, one, n * 3);
  x = at::conv2d(at::reflection_pad2d(x, {radius, radius, 0, 0}), w.view({n * 3, 1, 1, k}), {}, one, none, one, n * 3);
  return x.view({n, 3, s, s});
}

}  // namespace

absl::Status ValidateCutoutOptions(const CutoutOptions& options) {
  const CutoutOptions& o = options;
  for (const auto& [name, value, lo, hi] : std::vector<std::tuple<const char*, double, double, double>>{
           {"cutn", o.cutn, 1, 4096},
           {"cut_size", o.cut_size, 1, 4096},
           {"cut_pow", o.cut_pow, 0, 100},
           {"augment_probability", o.augment_probability, 0, 1},
           {"noise_max", o.noise_max, 0, 1},
           {"brightness", o.brightness, 0, 1},
           {"contrast", o.contrast, 0, 1},
           {"saturation", o.saturation, 0, 1},
           {"hue", o.hue, 0, 0.5},
           {"rotation_degrees", o.rotation_degrees, 0, 180},
           {"translate", o.translate, 0, 1},
           {"shear_degrees", o.shear_degrees, 0, 45},
           {"affine_scale_min", o.affine_scale_min, 0.1, 1},
           {"perspective_distortion", o.perspective_distortion, 0, 1},
           {"erase_area_max", o.erase_area_max, 0, 1},
           {"erase_aspect_max", o.erase_aspect_max, 0, 100},
           {"erase_value", o.erase_value, 0, 1},
           {"blur_sigma_max", o.blur_sigma_max, 0, 64},
       }) {
    if (!(value >= lo && value <= hi)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cutout option ", name, " is ", value, "; allowed range is [", lo, ", ", hi, "]"));
    }
  }
  // The lower ends of the erasing ranges: positive (a zero area or aspect is degenerate), at most the upper.
  for (const auto& [name, value, hi, hi_name] : std::vector<std::tuple<const char*, double, double, const char*>>{
           {"erase_area_min", o.erase_area_min, o.erase_area_max, "erase_area_max"},
           {"erase_aspect_min", o.erase_aspect_min, o.erase_aspect_max, "erase_aspect_max"},
       }) {
    if (!(value > 0 && value <= hi)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cutout option ", name, " is ", value, "; allowed range is (0, ", hi_name, " = ", hi, "]"));
    }
  }
  if (!(o.noise_min >= 0 && o.noise_min <= o.noise_max)) {
    return absl::InvalidArgumentError(absl::StrCat("cutout option noise_min is ", o.noise_min,
                                                   "; allowed range is [0, noise_max = ", o.noise_max, "]"));
  }
  return absl::OkStatus();
}

at::Tensor MakeCutouts(const at::Tensor& image, const CutoutOptions& options, at::Generator& generator) {
  const CutoutOptions& o = options;
  TORCH_CHECK(image.dim() == 4 && image.size(1) == 3, "MakeCutouts expects [B, 3, H, W], got ", image.sizes());
  TORCH_CHECK(at::isFloatingType(image.scalar_type()), "MakeCutouts expects a floating image, got ",
              image.scalar_type());
  // libtorch 1.13 has no CPU kernels for adaptive pooling (half) and grid sampling (half, bfloat16).
  const bool upcast =
      image.device().is_cpu() && (image.scalar_type() == at::kHalf || image.scalar_type() == at::kBFloat16);
  const at::Tensor x = upcast ? image.to(at::kFloat) : image;
  const int64_t total = x.size(0) * o.cutn;
  const at::TensorOptions on_generator = at::TensorOptions().device(generator.device());
  const at::Tensor uniforms = at::rand({total, kColumns}, generator, on_generator.dtype(at::kDouble)).cpu();
  const auto u = uniforms.accessor<double, 2>();

  // The rest of the randomness, in the documented order, before anything is applied.
  at::Tensor noise;
  if (o.noise_max > 0) {
    noise = at::randn({total, 3, o.cut_size, o.cut_size}, generator, on_generator.dtype(at::kFloat));
  }
  const bool blur = o.augment && o.blur_sigma_max > 0;
  at::Tensor blur_uniforms;  // [total, 2] when `blur`
  if (blur) blur_uniforms = at::rand({total, 2}, generator, on_generator.dtype(at::kDouble)).cpu();
  std::vector<double> scales;  // empty: 1
  if (o.augment && o.affine_scale_min < 1) {
    const at::Tensor su = at::rand({total}, generator, on_generator.dtype(at::kDouble)).cpu();
    for (int64_t row = 0; row < total; ++row) {
      scales.push_back(o.affine_scale_min + (1 - o.affine_scale_min) * su.data_ptr<double>()[row]);
    }
  }

  at::Tensor batch = Crops(x, o, u);
  if (o.augment) {
    auto selected = [&](Column column) {
      std::vector<int64_t> rows;
      for (int64_t row = 0; row < total; ++row) {
        if (u[row][column] < o.augment_probability) rows.push_back(row);
      }
      return rows;
    };
    batch = ApplyToRows(batch, selected(kAffineApply), [&](const at::Tensor& t, const std::vector<int64_t>& rows) {
      return Affine(t, rows, o, u, scales);
    });
    batch = ApplyToRows(batch, selected(kPerspectiveApply), [&](const at::Tensor& t, const std::vector<int64_t>& rows) {
      return Perspective(t, rows, o, u);
    });
    batch = ApplyToRows(batch, selected(kJitterApply),
                        [&](const at::Tensor& t, const std::vector<int64_t>& rows) { return Jitter(t, rows, o, u); });
    const std::vector<int64_t> erased = selected(kEraseApply);
    if (!erased.empty()) batch = Erase(batch, erased, o, u);
  }
  // The blur before the noise: the noise stays sharp.
  if (blur) {
    const auto bu = blur_uniforms.accessor<double, 2>();
    std::vector<int64_t> rows;
    for (int64_t row = 0; row < total; ++row) {
      if (bu[row][0] < o.augment_probability) rows.push_back(row);
    }
    batch = ApplyToRows(batch, rows, [&](const at::Tensor& t, const std::vector<int64_t>& selected) {
      std::vector<double> sigmas;
      sigmas.reserve(selected.size());
      for (const int64_t row : selected) sigmas.push_back(o.blur_sigma_max * bu[row][1]);
      return Blur(t, sigmas, o.blur_sigma_max);
    });
  }
  if (o.noise_max > 0) {
    at::Tensor scale = at::empty({total, 1, 1, 1}, at::kDouble);
    for (int64_t row = 0; row < total; ++row) {
      scale.data_ptr<double>()[row] = o.noise_min + (o.noise_max - o.noise_min) * u[row][kNoise];
    }
    batch = batch + Like(scale, batch) * noise.to(batch.device(), batch.scalar_type());
  }
  return upcast ? batch.to(image.scalar_type()) : batch;
}

at::Tensor AugmentLikeCutouts(const at::Tensor& normalized, const std::array<float, 3>& mean,
                              const std::array<float, 3>& std, CutoutOptions options, at::Generator& generator) {
  TORCH_CHECK(normalized.dim() == 4 && normalized.size(1) == 3 && normalized.size(2) == normalized.size(3),
              "AugmentLikeCutouts expects square [B, 3, S, S] pictures, got ", normalized.sizes());
  options.cutn = 1;
  options.cut_size = static_cast<int>(normalized.size(2));
  const at::TensorOptions like = normalized.options();
  const at::Tensor m = at::tensor(std::vector<float>(mean.begin(), mean.end()), like).view({1, 3, 1, 1});
  const at::Tensor s = at::tensor(std::vector<float>(std.begin(), std.end()), like).view({1, 3, 1, 1});
  return (MakeCutouts(normalized * s + m, options, generator) - m) / s;
}

}  // namespace clipserve::generation
