#include "tools/judge/judge.h"

#include <algorithm>
#include <array>
#include <limits>
#include <vector>

#include <opencv2/imgproc.hpp>

namespace clipserve::judge {
namespace {

constexpr int kTemplateSide = 32;

// The subject mask cropped to its bounding box and resized to a square, as 0/1 floats.
cv::Mat Normalised(const cv::Mat& mask) {
  std::vector<cv::Point> points;
  cv::findNonZero(mask, points);
  const cv::Rect box = cv::boundingRect(points);
  cv::Mat crop;
  cv::resize(mask(box), crop, cv::Size(kTemplateSide, kTemplateSide), 0, 0, cv::INTER_AREA);
  cv::Mat out;
  crop.convertTo(out, CV_32F, 1.0 / 255);
  return out;
}

struct Template {
  shapes::Shape shape;
  cv::Mat mask;
};

// Centred silhouettes of every shape at the rotations the world draws (±20° in 5° steps; none for the round
// ones), normalised as the subject is.
const std::vector<Template>& Templates() {
  static const auto* templates = [] {
    auto* t = new std::vector<Template>();
    for (shapes::Shape shape : shapes::kShapes) {
      const bool round = shape == shapes::Shape::kCircle || shape == shapes::Shape::kRing;
      for (int angle = round ? 0 : -20; angle <= (round ? 0 : 20); angle += 5) {
        shapes::Scene scene;
        scene.shape = shape;
        scene.extent = 0.7;
        scene.center_x = scene.center_y = 0.5;
        scene.rotation_deg = angle;
        absl::StatusOr<shapes::Rendering> r = shapes::Render(scene, {.image_size = 128});
        if (r.ok()) t->push_back({shape, Normalised(r->alpha > 127)});
      }
    }
    return t;
  }();
  return *templates;
}

double Iou(const cv::Mat& a, const cv::Mat& b) {
  const double inter = cv::sum(cv::min(a, b))[0];
  const double uni = cv::sum(cv::max(a, b))[0];
  return uni > 0 ? inter / uni : 0;
}

double Distance(const cv::Vec3d& a, const shapes::Rgb& b) {
  const double dr = a[0] - b.r, dg = a[1] - b.g, db = a[2] - b.b;
  return std::sqrt(dr * dr + dg * dg + db * db);
}

// Median of each channel over the pixels where mask != 0.
cv::Vec3d Median(const cv::Mat& rgb, const cv::Mat& mask) {
  std::array<std::vector<uint8_t>, 3> values;
  for (int y = 0; y < rgb.rows; ++y) {
    const cv::Vec3b* row = rgb.ptr<cv::Vec3b>(y);
    const uint8_t* m = mask.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x) {
      if (m[x] == 0) continue;
      for (int c = 0; c < 3; ++c) values[c].push_back(row[x][c]);
    }
  }
  cv::Vec3d out;
  for (int c = 0; c < 3; ++c) {
    auto& v = values[c];
    if (v.empty()) return out;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    out[c] = v[v.size() / 2];
  }
  return out;
}

}  // namespace

Judgement JudgeImage(const cv::Mat& rgb, const JudgeOptions& options) {
  Judgement j;
  if (rgb.empty() || rgb.type() != CV_8UC3) return j;
  // The background as a plane per channel (plain and noisy backgrounds are flat, gradients linear), fitted by
  // least squares to the border pixels, where the world never draws a shape.
  const int w = rgb.cols, h = rgb.rows;
  std::vector<cv::Point> border;
  for (int x = 0; x < w; ++x) border.insert(border.end(), {{x, 0}, {x, h - 1}});
  for (int y = 1; y + 1 < h; ++y) border.insert(border.end(), {{0, y}, {w - 1, y}});
  cv::Mat a(static_cast<int>(border.size()), 3, CV_64F), b(static_cast<int>(border.size()), 3, CV_64F);
  for (size_t i = 0; i < border.size(); ++i) {
    const int r = static_cast<int>(i);
    a.at<double>(r, 0) = 1;
    a.at<double>(r, 1) = border[i].x / static_cast<double>(w);
    a.at<double>(r, 2) = border[i].y / static_cast<double>(h);
    const cv::Vec3b& p = rgb.at<cv::Vec3b>(border[i]);
    for (int c = 0; c < 3; ++c) b.at<double>(r, c) = p[c];
  }
  cv::Mat plane;  // 3 x 3: rows (1, x, y), columns R, G, B
  cv::solve(a, b, plane, cv::DECOMP_SVD);

  cv::Mat foreground(rgb.size(), CV_8U);
  for (int y = 0; y < h; ++y) {
    const cv::Vec3b* row = rgb.ptr<cv::Vec3b>(y);
    uint8_t* f = foreground.ptr<uint8_t>(y);
    for (int x = 0; x < w; ++x) {
      double d2 = 0;
      for (int c = 0; c < 3; ++c) {
        const double bg = plane.at<double>(0, c) + plane.at<double>(1, c) * x / w + plane.at<double>(2, c) * y / h;
        d2 += (row[x][c] - bg) * (row[x][c] - bg);
      }
      f[x] = std::sqrt(d2) > options.foreground_distance ? 255 : 0;
    }
  }
  cv::morphologyEx(foreground, foreground, cv::MORPH_OPEN, cv::getStructuringElement(cv::MORPH_ELLIPSE, {3, 3}));

  cv::Mat labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(foreground, labels, stats, centroids, 8);
  int best = 0, best_area = 0;
  for (int i = 1; i < n; ++i) {
    if (stats.at<int>(i, cv::CC_STAT_AREA) > best_area) {
      best_area = stats.at<int>(i, cv::CC_STAT_AREA);
      best = i;
    }
  }
  j.area_fraction = static_cast<double>(best_area) / (rgb.rows * rgb.cols);
  if (best == 0 || j.area_fraction < options.min_area_fraction) return j;
  const cv::Mat subject = labels == best;
  j.found = true;

  const cv::Vec3d colour = Median(rgb, subject);
  double nearest = std::numeric_limits<double>::infinity();
  for (shapes::Colour c : shapes::kShapeColours) {
    const double d = Distance(colour, shapes::ColourRgb(c));
    if (d < nearest) {
      nearest = d;
      j.colour = c;
    }
  }
  const cv::Mat normalised = Normalised(subject);
  for (const Template& t : Templates()) {
    const double iou = Iou(normalised, t.mask);
    if (iou > j.shape_iou) {
      j.shape_iou = iou;
      j.shape = t.shape;
    }
  }
  return j;
}

}  // namespace clipserve::judge
