#include "client/compare.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/images.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/models/clip/clip_model.h"
#include "server/models/clip/image_decode.h"
#include "server/models/clip/preprocess.h"
#include "server/models/clip/tokenizer.h"
#include "server/models/cpu_threads.h"
#include "server/models/tensor_io.h"

namespace clipserve::client {
namespace {

namespace fs = std::filesystem;

struct CompareArgs {
  fs::path model;
  std::vector<std::string> texts;
  std::vector<std::string> images;
  bool json = false;
};

VerbSpec CompareSpec() {
  return {"compare",
          "--model=DIR (--text=TEXT)... (--image=FILE[,FILE...])... [--json]",
          "offline: embed texts and images with a local CLIP directory (no server)",
          "Embeds every text and image with the CLIP model in DIR (a Hugging Face CLIP directory: config.json,\n"
          "model.safetensors, vocab.json, merges.txt, preprocessor_config.json) and prints, per image, the cosine\n"
          "similarity to each text and the zero-shot probabilities over the texts. Images are files, directories\n"
          "or glob patterns.",
          {{"model", FlagType::kValue, "DIR", "the CLIP directory (this verb runs the model in-process)"},
           {"text", FlagType::kList, "TEXT", "a text (repeatable)"},
           {"image", FlagType::kCsv, "FILE[,FILE...]", "images: files, directories or globs (repeatable)"}}};
}

absl::Status Compare(const CompareArgs& args, std::ostream& os) {
  ConfigureCpuThreads({});
  const absl::Time t0 = absl::Now();
  CLIPSERVE_ASSIGN_OR_RETURN(auto model, clip::ClipModel::Load({.dir = args.model}));
  CLIPSERVE_ASSIGN_OR_RETURN(auto tokenizer,
                             clip::Tokenizer::Create({.vocab_path = args.model / "vocab.json",
                                                      .merges_path = args.model / "merges.txt",
                                                      .context_length = model->config().text.max_position_embeddings}));
  CLIPSERVE_ASSIGN_OR_RETURN(auto pre, clip::LoadPreprocessConfig(args.model / "preprocessor_config.json"));
  const absl::Time t1 = absl::Now();

  const int64_t ctx = tokenizer->context_length();
  at::Tensor ids = at::zeros({static_cast<int64_t>(args.texts.size()), ctx}, at::kLong);
  std::vector<bool> truncated(args.texts.size());
  for (size_t i = 0; i < args.texts.size(); ++i) {
    bool cut = false;
    CLIPSERVE_RETURN_IF_ERROR(tokenizer->EncodePadded(args.texts[i], clip::Truncation::kTruncate,
                                                      {ids[i].data_ptr<int64_t>(), static_cast<size_t>(ctx)}, &cut));
    truncated[i] = cut;
  }
  const size_t per_image = clip::PreprocessedSize(pre);
  at::Tensor pixels = at::empty({static_cast<int64_t>(args.images.size()), 3, pre.crop_height, pre.crop_width});
  for (size_t i = 0; i < args.images.size(); ++i) {
    CLIPSERVE_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(args.images[i], uint64_t{64} << 20));
    auto decoded = DecodeImage({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    if (!decoded.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(args.images[i], ": ", decoded.status().message()));
    }
    CLIPSERVE_RETURN_IF_ERROR(clip::Preprocess(*decoded, pre, {pixels[i].data_ptr<float>(), per_image}));
  }
  const absl::Time t2 = absl::Now();

  at::Tensor cosine, probs;
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors("running the model", [&] {
    c10::InferenceMode guard;
    at::Tensor text = model->EncodeText(ids);
    at::Tensor image = model->EncodeImage(pixels);
    at::Tensor logits = model->LogitsPerImage(image, text);
    cosine = logits / model->logit_scale().exp();
    probs = logits.softmax(-1);
    return absl::OkStatus();
  }));
  const absl::Time t3 = absl::Now();

  if (args.json) {
    nlohmann::json out;
    out["model"] = args.model.string();
    out["texts"] = args.texts;
    out["images"] = args.images;
    out["truncated"] = truncated;
    for (int64_t i = 0; i < cosine.size(0); ++i) {
      std::vector<double> c, p;
      for (int64_t j = 0; j < cosine.size(1); ++j) {
        c.push_back(cosine[i][j].item<double>());
        p.push_back(probs[i][j].item<double>());
      }
      out["cosine"].push_back(c);
      out["probabilities"].push_back(p);
    }
    out["timing_ms"] = {{"load", absl::ToDoubleMilliseconds(t1 - t0)},
                        {"prepare", absl::ToDoubleMilliseconds(t2 - t1)},
                        {"model", absl::ToDoubleMilliseconds(t3 - t2)}};
    os << out.dump(2) << "\n";
    return absl::OkStatus();
  }
  os << absl::StrFormat(
      "model %s: loaded in %.0f ms; prepared %d texts and %d images in %.0f ms; model ran in %.0f ms\n\n",
      args.model.string(), absl::ToDoubleMilliseconds(t1 - t0), args.texts.size(), args.images.size(),
      absl::ToDoubleMilliseconds(t2 - t1), absl::ToDoubleMilliseconds(t3 - t2));
  for (int64_t i = 0; i < cosine.size(0); ++i) {
    os << args.images[i] << "\n";
    os << absl::StrFormat("  %8s  %11s  %s\n", "cosine", "probability", "text");
    for (int64_t j = 0; j < cosine.size(1); ++j) {
      os << absl::StrFormat("  %8.4f  %10.1f%%  %s%s\n", cosine[i][j].item<double>(),
                            100.0 * probs[i][j].item<double>(), args.texts[j],
                            truncated[j] ? "  (truncated to the context length)" : "");
    }
    os << "\n";
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RunCompare(const Args& args, Context& ctx) {
  CompareArgs c;
  c.model = args.Get("model");
  c.texts = args.GetList("text");
  c.json = ctx.json();
  if (c.model.empty()) return UsageError("--model=DIR is required");
  if (c.texts.empty() || !args.Has("image")) return UsageError("give at least one --text and one --image");
  CLIPSERVE_ASSIGN_OR_RETURN(c.images, ExpandImagePaths(args.GetList("image")));
  CLIPSERVE_RETURN_IF_ERROR(Compare(c, ctx.out()));
  return 0;
}

}  // namespace

Verb CompareVerb() { return {CompareSpec(), RunCompare}; }

}  // namespace clipserve::client
