// The server's settings for generation jobs (config field generation.job_defaults): what a Generate request
// leaves unset, and the cutouts' augmentations. Shared by the server and gen-eval --config, so that the quality
// measured is that of the settings served.
#pragma once

#include "absl/status/status.h"
#include "clipserve/v1/config.pb.h"
#include "server/generation/generator.h"

namespace clipserve::service {

// generation::JobOptions{} with the set fields of `g.job_defaults()` applied (erase_area_min is lowered to
// erase_area_max when that is smaller). Unset steps and cutn are lowered to max_steps and max_cutn when those
// are set and smaller. Prompts, size and seed are left as they are.
generation::JobOptions JobDefaultsFromConfig(const ::clipserve::v1::config::GenerationConfig& g);

// INVALID_ARGUMENT naming the field (generation.job_defaults.<field>) when the defaults are not a valid job's:
// steps outside [1, max_steps], cutn outside [1, max_cutn], or what generation::ValidateJobSettings rejects.
// Needs max_steps and max_cutn filled in.
absl::Status ValidateJobDefaults(const ::clipserve::v1::config::GenerationConfig& g);

}  // namespace clipserve::service
