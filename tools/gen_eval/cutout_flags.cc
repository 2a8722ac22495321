#include "tools/gen_eval/cutout_flags.h"

#include <algorithm>
#include <optional>

#include "absl/flags/flag.h"

// Unset (the default), a flag keeps the base's value (CutoutOptionsFromFlags): generation::CutoutOptions{}'s, or
// with gen-eval --config the config's job_defaults'.
ABSL_FLAG(std::optional<float>, cut_augment_probability, std::nullopt,
          "probability of each cutout augmentation (affine, perspective, jitter, erasing)");
ABSL_FLAG(std::optional<float>, cut_perspective, std::nullopt,
          "perspective distortion of the cutouts (0: none)");
ABSL_FLAG(std::optional<bool>, cut_perspective_border, std::nullopt,
          "perspective pads with the picture's edge pixels instead of black (the reference pads with black)");
ABSL_FLAG(std::optional<float>, cut_rotation, std::nullopt,
          "rotation range of the cutouts, degrees");
ABSL_FLAG(std::optional<float>, cut_scale_min, std::nullopt,
          "smallest affine scale of the cutouts (scale ~ U(cut_scale_min, 1); 1: none, as the reference)");
ABSL_FLAG(std::optional<float>, cut_erase_max, std::nullopt,
          "largest erased area, as a fraction of a cutout (0.001: next to nothing)");
ABSL_FLAG(std::optional<float>, cut_noise, std::nullopt,
          "largest noise scale of the cutouts: each gets scale · randn, scale ~ U(cut_noise_min, cut_noise)");
ABSL_FLAG(std::optional<float>, cut_noise_min, std::nullopt,
          "smallest noise scale of the cutouts (the reference: 0; above 0 every cutout is a noisy copy)");
ABSL_FLAG(std::optional<float>, cut_blur, std::nullopt,
          "largest Gaussian blur sigma of the cutouts, pixels (0: no blur, the reference has none)");

namespace clipserve::tools {
namespace {

// Sets *field to the flag's value when the flag has one.
template <typename T>
void Override(const absl::Flag<std::optional<T>>& flag, T* field) {
  if (const std::optional<T> value = absl::GetFlag(flag)) *field = *value;
}

}  // namespace

generation::CutoutOptions CutoutOptionsFromFlags(const generation::CutoutOptions& base) {
  generation::CutoutOptions o = base;
  Override(FLAGS_cut_augment_probability, &o.augment_probability);
  Override(FLAGS_cut_perspective, &o.perspective_distortion);
  Override(FLAGS_cut_perspective_border, &o.perspective_border_padding);
  Override(FLAGS_cut_rotation, &o.rotation_degrees);
  Override(FLAGS_cut_scale_min, &o.affine_scale_min);
  Override(FLAGS_cut_erase_max, &o.erase_area_max);
  o.erase_area_min = std::min(o.erase_area_min, o.erase_area_max);
  Override(FLAGS_cut_blur, &o.blur_sigma_max);
  Override(FLAGS_cut_noise, &o.noise_max);
  Override(FLAGS_cut_noise_min, &o.noise_min);
  return o;
}

}  // namespace clipserve::tools
