// clipctl — clipserve's command-line client.
//
// Until the gRPC server exists (serving-core issue) clipctl has one command, `compare`, which loads a CLIP
// directory in-process and prints how similar each image is to each text:
//
//   clipctl compare --model DIR --text "a photo of a cat" --text "a photo of a dog" --image cat.jpg [--json]
//
// For each image: cosine similarity to every text, and the zero-shot probabilities (softmax over the texts of
// exp(logit_scale)·cosine, as CLIP's classifier computes them).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/models/clip/clip_model.h"
#include "server/models/clip/image_decode.h"
#include "server/models/clip/preprocess.h"
#include "server/models/clip/tokenizer.h"
#include "server/models/cpu_threads.h"
#include "server/models/tensor_io.h"

namespace clipserve {
namespace {

namespace fs = std::filesystem;

constexpr char kUsage[] =
    "usage: clipctl compare --model DIR (--text TEXT)... (--image FILE)... [--json]\n"
    "\n"
    "Embeds every text and image with the CLIP model in DIR (a Hugging Face CLIP directory: config.json,\n"
    "model.safetensors, vocab.json, merges.txt, preprocessor_config.json) and prints, per image, the cosine\n"
    "similarity to each text and the zero-shot probabilities over the texts.\n";

struct CompareArgs {
  fs::path model;
  std::vector<std::string> texts;
  std::vector<fs::path> images;
  bool json = false;
};

absl::StatusOr<CompareArgs> ParseCompareArgs(const std::vector<std::string>& args) {
  CompareArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const std::string& name) -> absl::StatusOr<std::string> {
      const std::string prefix = name + "=";
      if (a.rfind(prefix, 0) == 0) return a.substr(prefix.size());
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat(name, " needs a value"));
      return args[++i];
    };
    if (a == "--json") {
      out.json = true;
    } else if (a == "--model" || a.rfind("--model=", 0) == 0) {
      CLIPSERVE_ASSIGN_OR_RETURN(std::string v, value("--model"));
      out.model = v;
    } else if (a == "--text" || a.rfind("--text=", 0) == 0) {
      CLIPSERVE_ASSIGN_OR_RETURN(std::string v, value("--text"));
      out.texts.push_back(v);
    } else if (a == "--image" || a.rfind("--image=", 0) == 0) {
      CLIPSERVE_ASSIGN_OR_RETURN(std::string v, value("--image"));
      out.images.push_back(v);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument '", a, "'"));
    }
  }
  if (out.model.empty()) return absl::InvalidArgumentError("--model is required");
  if (out.texts.empty() || out.images.empty()) {
    return absl::InvalidArgumentError("give at least one --text and one --image");
  }
  return out;
}

absl::Status Compare(const CompareArgs& args) {
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
    if (!decoded.ok()) return absl::InvalidArgumentError(absl::StrCat(args.images[i].string(), ": ", decoded.status().message()));
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
    std::vector<std::string> images;
    for (const auto& p : args.images) images.push_back(p.string());
    out["images"] = images;
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
    std::cout << out.dump(2) << "\n";
    return absl::OkStatus();
  }
  std::printf("model %s: loaded in %.0f ms; prepared %zu texts and %zu images in %.0f ms; model ran in %.0f ms\n\n",
              args.model.c_str(), absl::ToDoubleMilliseconds(t1 - t0), args.texts.size(), args.images.size(),
              absl::ToDoubleMilliseconds(t2 - t1), absl::ToDoubleMilliseconds(t3 - t2));
  for (int64_t i = 0; i < cosine.size(0); ++i) {
    std::printf("%s\n", args.images[i].c_str());
    std::printf("  %8s  %11s  %s\n", "cosine", "probability", "text");
    for (int64_t j = 0; j < cosine.size(1); ++j) {
      std::printf("  %8.4f  %10.1f%%  %s%s\n", cosine[i][j].item<double>(), 100.0 * probs[i][j].item<double>(),
                  args.texts[j].c_str(), truncated[j] ? "  (truncated to the context length)" : "");
    }
    std::printf("\n");
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace clipserve

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(clipserve::kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] != "compare") {
    std::fprintf(stderr, "clipctl: unknown command '%s'\n\n%s", args[0].c_str(), clipserve::kUsage);
    return 2;
  }
  auto parsed = clipserve::ParseCompareArgs({args.begin() + 1, args.end()});
  if (!parsed.ok()) {
    std::fprintf(stderr, "clipctl: %s\n\n%s", std::string(parsed.status().message()).c_str(), clipserve::kUsage);
    return 2;
  }
  const absl::Status s = clipserve::Compare(*parsed);
  if (!s.ok()) {
    std::fprintf(stderr, "clipctl: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
