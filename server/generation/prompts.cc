#include "server/generation/prompts.h"

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace clipserve::generation {
namespace {

constexpr char kSyntax[] = "prompts are 'text[:weight[:stop]]' separated by '|'";
constexpr size_t kMaxQuotedBytes = 40;

// The piece as shown in messages: trimmed, cut to kMaxQuotedBytes at a UTF-8 character boundary.
std::string Quote(absl::string_view piece) {
  piece = absl::StripAsciiWhitespace(piece);
  if (piece.size() <= kMaxQuotedBytes) return absl::StrCat("\"", piece, "\"");
  size_t end = kMaxQuotedBytes;
  while (end > 0 && (static_cast<unsigned char>(piece[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat("\"", piece.substr(0, end), "...\"");
}

absl::Status PieceError(absl::string_view field_name, absl::string_view piece, size_t index, size_t count,
                        absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(field_name, ": ", Quote(piece), " (prompt ", index + 1, " of ", count, "): ", problem));
}

// `piece` split from the right into text, weight and stop; only suffixes that parse as floats are taken.
struct SplitPiece {
  absl::string_view text;
  std::optional<float> weight;
  std::optional<float> stop;
};

SplitPiece Split(absl::string_view piece) {
  SplitPiece out{piece, std::nullopt, std::nullopt};
  const size_t last = piece.rfind(':');
  float last_value = 0;
  if (last == absl::string_view::npos || !absl::SimpleAtof(piece.substr(last + 1), &last_value)) return out;
  out.text = piece.substr(0, last);
  out.weight = last_value;
  const size_t second = out.text.rfind(':');
  float second_value = 0;
  if (second == absl::string_view::npos || !absl::SimpleAtof(out.text.substr(second + 1), &second_value)) {
    return out;
  }
  out.text = out.text.substr(0, second);
  out.weight = second_value;
  out.stop = last_value;
  return out;
}

// F.normalize(x, dim=-1): x / max(‖x‖, eps).
at::Tensor Normalize(const at::Tensor& x) { return x / x.norm(2, {-1}, /*keepdim=*/true).clamp_min(1e-12); }

}  // namespace

absl::StatusOr<std::vector<WeightedPrompt>> ParsePrompts(absl::string_view spec, absl::string_view field_name,
                                                         const PromptLimits& limits) {
  if (absl::StripAsciiWhitespace(spec).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field_name, ": ", Quote(spec), " is empty; ", kSyntax));
  }
  const std::vector<absl::string_view> pieces = absl::StrSplit(spec, '|');
  const size_t count = pieces.size();
  if (count > static_cast<size_t>(limits.max_prompts)) {
    return PieceError(field_name, pieces[limits.max_prompts], limits.max_prompts, count,
                      absl::StrCat("too many prompts; at most ", limits.max_prompts, " are allowed"));
  }
  const std::string weight_rule =
      absl::StrCat("a weight is a finite non-zero number with |weight| <= ", limits.max_abs_weight);
  std::vector<WeightedPrompt> prompts;
  prompts.reserve(count);
  bool any_positive = false;
  for (size_t i = 0; i < count; ++i) {
    const absl::string_view piece = pieces[i];
    const SplitPiece split = Split(piece);
    WeightedPrompt prompt;
    prompt.text = std::string(absl::StripAsciiWhitespace(split.text));
    if (prompt.text.empty()) {
      return PieceError(field_name, piece, i, count, absl::StrCat("the text is empty; ", kSyntax));
    }
    if (prompt.text.size() > static_cast<size_t>(limits.max_text_bytes)) {
      return PieceError(
          field_name, piece, i, count,
          absl::StrCat("the text has ", prompt.text.size(), " bytes; at most ", limits.max_text_bytes, " are allowed"));
    }
    if (split.weight.has_value()) {
      const float w = *split.weight;
      if (!std::isfinite(w) || w == 0 || std::fabs(w) > limits.max_abs_weight) {
        return PieceError(field_name, piece, i, count, absl::StrCat("weight ", w, " is not allowed; ", weight_rule));
      }
      prompt.weight = w;
    }
    if (split.stop.has_value()) {
      const float stop = *split.stop;
      // -inf (the default: no stop) is allowed; NaN fails the comparison.
      if (!(stop <= kMaxPromptStop)) {
        return PieceError(field_name, piece, i, count,
                          absl::StrCat("stop ", stop, " is not allowed; a stop is a number <= ", kMaxPromptStop,
                                       " (distances lie in [0, 4.93])"));
      }
      prompt.stop = stop;
    }
    any_positive = any_positive || prompt.weight > 0;
    prompts.push_back(std::move(prompt));
  }
  if (!any_positive) {
    return absl::InvalidArgumentError(
        absl::StrCat(field_name, ": ", Quote(spec),
                     " needs at least one prompt with a positive weight (negative weights only push away)"));
  }
  return prompts;
}

at::Tensor PromptLoss(const at::Tensor& image_embeddings, const at::Tensor& prompt_embedding, float weight,
                      float stop) {
  const at::Tensor u = Normalize(image_embeddings.to(at::kFloat));
  const at::Tensor e = Normalize(prompt_embedding.to(at::kFloat).reshape({1, -1}));
  const at::Tensor d = (u - e).norm(2, {-1}).div(2).clamp_max(1).asin().pow(2).mul(2);
  const float sign = weight > 0 ? 1.0f : (weight < 0 ? -1.0f : 0.0f);
  return (d * sign).clamp_min(stop).mean() * std::fabs(weight);
}

}  // namespace clipserve::generation
