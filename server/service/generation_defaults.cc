#include "server/service/generation_defaults.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace clipserve::service {

generation::JobOptions JobDefaultsFromConfig(const ::clipserve::v1::config::GenerationConfig& g) {
  const ::clipserve::v1::config::GenerationJobDefaults& d = g.job_defaults();
  generation::JobOptions j;
  generation::CutoutOptions& c = j.cutouts;
  // Unset steps and cutn are the reference's, or the config's limit when that is lower (a server limited to 8
  // cutouts runs 8 when a request asks for none, rather than refusing it).
  if (d.has_steps()) {
    j.steps = static_cast<int>(std::min<uint32_t>(d.steps(), 1 << 30));
  } else if (g.max_steps() > 0) {
    j.steps = static_cast<int>(std::min<uint32_t>(j.steps, g.max_steps()));
  }
  if (d.has_learning_rate()) j.learning_rate = d.learning_rate();
  if (d.has_cutn()) {
    c.cutn = static_cast<int>(std::min<uint32_t>(d.cutn(), 1 << 20));
  } else if (g.max_cutn() > 0) {
    c.cutn = static_cast<int>(std::min<uint32_t>(c.cutn, g.max_cutn()));
  }
  if (d.has_cut_pow()) c.cut_pow = d.cut_pow();
  if (d.has_smoothness_weight()) j.smoothness_weight = d.smoothness_weight();
  if (d.has_augment_probability()) c.augment_probability = d.augment_probability();
  if (d.has_perspective_distortion()) c.perspective_distortion = d.perspective_distortion();
  if (d.has_perspective_border_padding()) c.perspective_border_padding = d.perspective_border_padding();
  if (d.has_rotation_degrees()) c.rotation_degrees = d.rotation_degrees();
  if (d.has_affine_scale_min()) c.affine_scale_min = d.affine_scale_min();
  if (d.has_erase_area_max()) {
    c.erase_area_max = d.erase_area_max();
    c.erase_area_min = std::min(c.erase_area_min, c.erase_area_max);
  }
  if (d.has_noise_min()) c.noise_min = d.noise_min();
  if (d.has_noise_max()) c.noise_max = d.noise_max();
  if (d.has_blur_sigma_max()) c.blur_sigma_max = d.blur_sigma_max();
  return j;
}

absl::Status ValidateJobDefaults(const ::clipserve::v1::config::GenerationConfig& g) {
  const generation::JobOptions j = JobDefaultsFromConfig(g);
  const auto bad = [](const std::string& message) {
    // The generation messages start with the field ("steps: ...", "cutout option noise_min is ...").
    absl::string_view m = message;
    absl::ConsumePrefix(&m, "cutout option ");
    return absl::InvalidArgumentError(absl::StrCat("config field generation.job_defaults.", m));
  };
  if (j.steps < 1 || j.steps > static_cast<int>(g.max_steps())) {
    return bad(absl::StrCat("steps: ", j.steps, "; use 1 to max_steps (", g.max_steps(), ")"));
  }
  if (j.cutouts.cutn < 1 || j.cutouts.cutn > static_cast<int>(g.max_cutn())) {
    return bad(absl::StrCat("cutn: ", j.cutouts.cutn, "; use 1 to max_cutn (", g.max_cutn(), ")"));
  }
  const absl::Status status = generation::ValidateJobSettings(j);
  if (!status.ok()) return bad(std::string(status.message()));
  return absl::OkStatus();
}

}  // namespace clipserve::service
