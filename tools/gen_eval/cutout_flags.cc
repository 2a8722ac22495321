#include "tools/gen_eval/cutout_flags.h"

#include <algorithm>

#include "absl/flags/flag.h"

namespace {
const clipserve::generation::CutoutOptions kServerCutouts;
}  // namespace

ABSL_FLAG(float, cut_augment_probability, kServerCutouts.augment_probability,
          "probability of each cutout augmentation (affine, perspective, jitter, erasing)");
ABSL_FLAG(float, cut_perspective, kServerCutouts.perspective_distortion,
          "perspective distortion of the cutouts (0: none)");
ABSL_FLAG(bool, cut_perspective_border, kServerCutouts.perspective_border_padding,
          "perspective pads with the picture's edge pixels instead of black (the reference pads with black)");
ABSL_FLAG(float, cut_rotation, kServerCutouts.rotation_degrees, "rotation range of the cutouts, degrees");
ABSL_FLAG(float, cut_erase_max, kServerCutouts.erase_area_max,
          "largest erased area, as a fraction of a cutout (0.001: next to nothing)");
ABSL_FLAG(float, cut_noise, kServerCutouts.noise_max,
          "largest noise scale of the cutouts: each gets scale · randn, scale ~ U(cut_noise_min, cut_noise)");
ABSL_FLAG(float, cut_noise_min, kServerCutouts.noise_min,
          "smallest noise scale of the cutouts (the reference: 0; above 0 every cutout is a noisy copy)");
ABSL_FLAG(float, cut_blur, kServerCutouts.blur_sigma_max,
          "largest Gaussian blur sigma of the cutouts, pixels (0: no blur, the reference has none)");

namespace clipserve::tools {

generation::CutoutOptions CutoutOptionsFromFlags() {
  generation::CutoutOptions o;
  o.augment_probability = absl::GetFlag(FLAGS_cut_augment_probability);
  o.perspective_distortion = absl::GetFlag(FLAGS_cut_perspective);
  o.perspective_border_padding = absl::GetFlag(FLAGS_cut_perspective_border);
  o.rotation_degrees = absl::GetFlag(FLAGS_cut_rotation);
  o.erase_area_max = absl::GetFlag(FLAGS_cut_erase_max);
  o.erase_area_min = std::min(o.erase_area_min, o.erase_area_max);
  o.blur_sigma_max = absl::GetFlag(FLAGS_cut_blur);
  o.noise_max = absl::GetFlag(FLAGS_cut_noise);
  o.noise_min = absl::GetFlag(FLAGS_cut_noise_min);
  return o;
}

}  // namespace clipserve::tools
