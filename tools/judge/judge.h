// An independent judge of generated shapes-world pictures, written with OpenCV only (no CLIP, nothing learnt):
// what colour and which shape does a picture show? Generation's quality checks use it so that the model that
// steers generation is not also the one that grades it.
//
//   Judgement j = JudgeImage(rgb);   // j.colour == Colour::kRed, j.shape == Shape::kCircle, ...
//
// Method. The background is a plane per colour channel fitted by least squares to the image's one-pixel border
// (plain, noisy and linear-gradient backgrounds all fit); the foreground is every pixel farther than
// `foreground_distance` (RGB) from it, cleaned by a morphological opening; the subject is the largest
// connected foreground component (holes kept, so a ring stays a ring). Its colour is the world colour nearest to
// the component's median RGB. Its shape is the world shape whose silhouette (at the rotations the world uses,
// ±20°), cropped to its bounding box and resized like the subject's, overlaps it best (IoU) — crops, not Hu
// moments, so that a diamond is not a turned square. Thread-safe; the templates are drawn once.
#pragma once

#include <optional>

#include <opencv2/core.hpp>

#include "tools/shapes/world.h"

namespace clipserve::judge {

struct JudgeOptions {
  double foreground_distance = 60;  // RGB distance from the background estimate
  double min_area_fraction = 0.01;  // a subject smaller than this share of the image is "nothing"
};

struct Judgement {
  bool found = false;  // a subject was found at all
  shapes::Colour colour = shapes::Colour::kRed;
  shapes::Shape shape = shapes::Shape::kCircle;
  double shape_iou = 0;       // overlap with the chosen shape's template
  double area_fraction = 0;   // the subject's share of the image
};

// `rgb`: CV_8UC3 in RGB order, any size.
Judgement JudgeImage(const cv::Mat& rgb, const JudgeOptions& options = {});

}  // namespace clipserve::judge
