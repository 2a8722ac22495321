// The command-line flags of the cutouts' augmentations, shared by the tools that generate with them (gen-eval),
// train a CLIP on them (train-clip --generation_cutouts) and evaluate a CLIP on them (shapes-eval
// --generation_cutouts), so one experiment can set the same augmentations in all three:
//
//   --cut_augment_probability  --cut_perspective  --cut_perspective_border  --cut_rotation  --cut_erase_max
//   --cut_blur  --cut_noise  --cut_noise_min
//
// Their defaults are generation::CutoutOptions{}'s (the reference's), so the flags and the code cannot drift
// apart; gen-eval --config starts from the server config's settings instead, and the flags given override them.
#pragma once

#include "server/generation/cutouts.h"

namespace clipserve::tools {

// `base` with the flags given on the command line applied (erase_area_min is lowered to erase_area_max when
// that is smaller). cutn and cut_size are left as they are: each tool sets its own.
generation::CutoutOptions CutoutOptionsFromFlags(const generation::CutoutOptions& base = {});

}  // namespace clipserve::tools
