#include "server/models/clip/clip_bundle.h"

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace clipserve::clip {

absl::StatusOr<std::unique_ptr<ClipBundle>> ClipBundle::Load(const ClipBundleOptions& options) {
  auto bundle = std::make_unique<ClipBundle>();
  bundle->dir = options.dir;
  CLIPSERVE_ASSIGN_OR_RETURN(bundle->model,
                             ClipModel::Load({.dir = options.dir,
                                              .dtype = options.dtype,
                                              .device = options.device,
                                              .prepack_cpu_weights = options.prepack_cpu_weights}));
  const auto& config = bundle->model->config();
  CLIPSERVE_ASSIGN_OR_RETURN(bundle->tokenizer,
                             Tokenizer::Create({.vocab_path = options.dir / "vocab.json",
                                                .merges_path = options.dir / "merges.txt",
                                                .context_length = config.text.max_position_embeddings,
                                                .cache_capacity = options.tokenizer_cache_words}));
  if (bundle->tokenizer->vocab_size() != static_cast<size_t>(config.text.vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat(options.dir.string(), ": vocab.json has ",
                                                   bundle->tokenizer->vocab_size(), " tokens but config.json says ",
                                                   config.text.vocab_size));
  }
  CLIPSERVE_ASSIGN_OR_RETURN(bundle->preprocess, LoadPreprocessConfig(options.dir / "preprocessor_config.json"));
  if (bundle->preprocess.crop_height != config.vision.image_size ||
      bundle->preprocess.crop_width != config.vision.image_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.dir.string(), ": preprocessor_config.json crops to ", bundle->preprocess.crop_width, "x",
        bundle->preprocess.crop_height, " but the vision tower takes ", config.vision.image_size, "x",
        config.vision.image_size));
  }
  return bundle;
}

}  // namespace clipserve::clip
