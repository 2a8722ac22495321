// The text-prompt syntax of VQGAN+CLIP generation (Crowson / nerdyrodent VQGAN-CLIP; DESIGN.md §5):
//   "a red circle:1 | a blue background:-0.5"      "a star:2:-0.3"
// Prompts are separated by '|'; each is `text[:weight[:stop]]` with weight 1 and stop −inf by default. A negative
// weight pushes the image away from the text. The stop bounds the signed spherical distance from below (see
// PromptLoss below): once `sign(weight)·distance` is under it, the prompt stops pulling (or pushing).
//
// Also the loss of one prompt (PromptLoss). Pure functions: thread-safe, no state. ParsePrompts never throws;
// PromptLoss throws c10::Error on torch failures (callers convert at their boundary).
#pragma once

#include <ATen/ATen.h>

#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace clipserve::generation {

struct WeightedPrompt {
  std::string text;
  float weight = 1;
  float stop = -std::numeric_limits<float>::infinity();
};

struct PromptLimits {
  int max_prompts = 8;
  // Bytes of one prompt's text, after trimming.
  int max_text_bytes = 1000;
  float max_abs_weight = 100;
};

// The largest stop accepted: the spherical distance 2·asin(‖û − ê‖/2)² of two unit vectors lies in
// [0, 2·(π/2)²] ≈ [0, 4.93], so a larger stop would switch the prompt off entirely.
inline constexpr float kMaxPromptStop = 5;

// Parses `spec`. Each '|'-separated piece is split from the right on ':' at most twice; a suffix counts as a
// number only when all of it (blanks around it aside) parses as a float (absl::SimpleAtof), so "a photo: nice"
// keeps its colon in the text, while "ratio 16:9" reads as text "ratio 16" with weight 9 (as the reference
// does). Texts are trimmed of ASCII whitespace. Checking that `spec` is valid UTF-8 is the caller's job.
//
// INVALID_ARGUMENT, with a message that names `field_name`, the offending piece (quoted, truncated to about 40
// bytes at a UTF-8 character boundary) and what is allowed, for: an empty spec; an empty text in any piece
// ("a|", ":2"); more than `limits.max_prompts` pieces; a text longer than `limits.max_text_bytes`; a weight
// that is 0, NaN, infinite or larger in magnitude than `limits.max_abs_weight`; a stop that is NaN or above
// kMaxPromptStop (−inf is allowed: it is the default); no piece with a positive weight.
absl::StatusOr<std::vector<WeightedPrompt>> ParsePrompts(absl::string_view spec, absl::string_view field_name,
                                                         const PromptLimits& limits = {});

// Spherical distance loss of one prompt against the embeddings of an image's cutouts. Both inputs are
// L2-normalised here (F.normalize, eps 1e-12), so raw embeddings may be passed: image_embeddings [N, D],
// prompt_embedding [D] (or [1, D]). With û, ê the normalised vectors:
//   d    = 2·asin(min(‖û − ê‖/2, 1))²                      per cutout, in [0, π²/2]
//   loss = |weight| · mean(max(sign(weight)·d, stop))
// A positive weight pulls the image towards the prompt until d < stop; a negative one pushes it away until
// d > −stop (e.g. "text:-1:-0.5" stops pushing once d > 0.5). Where the max picks `stop` no gradient flows,
// which is the reference's gradient (it uses replace_grad to report the unclamped value; we report the value
// we differentiate). With stop = −inf this is |w|·mean(d)·sign(w). Returns a float32 scalar, differentiable
// w.r.t. image_embeddings (and prompt_embedding). Inputs of any float dtype are computed in float32.
at::Tensor PromptLoss(const at::Tensor& image_embeddings, const at::Tensor& prompt_embedding, float weight, float stop);

}  // namespace clipserve::generation
