// `clipctl compare`: the offline command. Loads a CLIP directory in-process (no server) and prints how similar
// each image is to each text: cosine similarity and the zero-shot probabilities (softmax over the texts of
// exp(logit_scale)·cosine, as CLIP's classifier computes them).
//
//   clipctl compare --model DIR --text "a photo of a cat" --text "a photo of a dog" --image cat.jpg [--json]
#pragma once

#include "client/commands.h"

namespace clipserve::client {

// The compare verb, for RunClipctl. It is not part of clipserve_client: it links the model code (torch).
Verb CompareVerb();

}  // namespace clipserve::client
