// The command-line flags of the cutouts' augmentations, shared by the tools that generate with them (gen-eval),
// train a CLIP on them (train-clip --generation_cutouts) and evaluate a CLIP on them (shapes-eval
// --generation_cutouts), so one experiment can set the same augmentations in all three:
//
//   --cut_augment_probability  --cut_perspective  --cut_perspective_border  --cut_rotation  --cut_erase_max
//   --cut_blur  --cut_noise  --cut_noise_min
//
// Their defaults are the server's (generation::CutoutOptions), so the flags and the server cannot drift apart.
#pragma once

#include "server/generation/cutouts.h"

namespace clipserve::tools {

// generation::CutoutOptions{} with the flags applied (erase_area_min is lowered to erase_area_max when
// that is smaller). cutn and cut_size are left as they are: each tool sets its own.
generation::CutoutOptions CutoutOptionsFromFlags();

}  // namespace clipserve::tools
