// make-random-clip: writes a Hugging Face CLIP directory with randomly initialised weights, for load tests and
// benchmarks of architectures whose real checkpoints cannot be downloaded here.
//
//   build/bin/make-random-clip --arch=vit-b-32 --tokenizer_from=DIR --out=DIR [--seed=N]
//
// --arch: vit-b-32, vit-b-16, vit-l-14 or vit-l-14-336 (OpenAI's shapes). The tokenizer files (vocab.json,
// merges.txt) and preprocessor_config.json are copied from --tokenizer_from (any CLIP directory with the
// OpenAI vocabulary, e.g. the reference fixture model); their image size is rewritten to the architecture's.
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/models/clip/clip_model.h"

ABSL_FLAG(std::string, arch, "vit-b-32", "vit-b-32, vit-b-16, vit-l-14 or vit-l-14-336");
ABSL_FLAG(std::string, tokenizer_from, "", "CLIP directory to copy vocab.json, merges.txt, preprocessor_config.json from");
ABSL_FLAG(std::string, out, "", "output directory");
ABSL_FLAG(uint64_t, seed, 1, "random seed");

namespace clipserve {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<clip::ClipConfig> ArchConfig(const std::string& arch) {
  clip::ClipConfig c;
  c.text.hidden_size = 512;
  c.text.intermediate_size = 2048;
  c.text.num_attention_heads = 8;
  c.text.num_hidden_layers = 12;
  c.projection_dim = 512;
  c.vision.num_hidden_layers = 12;
  c.vision.image_size = 224;
  if (arch == "vit-b-32" || arch == "vit-b-16") {
    c.vision.hidden_size = 768;
    c.vision.intermediate_size = 3072;
    c.vision.num_attention_heads = 12;
    c.vision.patch_size = arch == "vit-b-32" ? 32 : 16;
  } else if (arch == "vit-l-14" || arch == "vit-l-14-336") {
    c.text.hidden_size = 768;
    c.text.intermediate_size = 3072;
    c.text.num_attention_heads = 12;
    c.projection_dim = 768;
    c.vision.hidden_size = 1024;
    c.vision.intermediate_size = 4096;
    c.vision.num_attention_heads = 16;
    c.vision.num_hidden_layers = 24;
    c.vision.patch_size = 14;
    c.vision.image_size = arch == "vit-l-14" ? 224 : 336;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --arch '", arch, "'; use vit-b-32, vit-b-16, vit-l-14 or vit-l-14-336"));
  }
  return c;
}

absl::Status Run() {
  const fs::path out = absl::GetFlag(FLAGS_out);
  const fs::path from = absl::GetFlag(FLAGS_tokenizer_from);
  if (out.empty() || from.empty()) return absl::InvalidArgumentError("--out and --tokenizer_from are required");
  CLIPSERVE_ASSIGN_OR_RETURN(clip::ClipConfig config, ArchConfig(absl::GetFlag(FLAGS_arch)));
  auto model = clip::ClipModel::CreateRandom(config, absl::GetFlag(FLAGS_seed));
  CLIPSERVE_RETURN_IF_ERROR(model->Save(out));
  for (const char* name : {"vocab.json", "merges.txt"}) {
    std::error_code ec;
    fs::copy_file(from / name, out / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("copying ", (from / name).string(), ": ", ec.message()));
  }
  CLIPSERVE_ASSIGN_OR_RETURN(nlohmann::json pre, ReadJsonFile(from / "preprocessor_config.json"));
  pre["size"] = {{"shortest_edge", config.vision.image_size}};
  pre["crop_size"] = {{"height", config.vision.image_size}, {"width", config.vision.image_size}};
  return WriteFileAtomically(out / "preprocessor_config.json", pre.dump(2) + "\n");
}

}  // namespace
}  // namespace clipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("writes a CLIP directory with random weights: --arch=vit-b-32 --tokenizer_from=DIR --out=DIR");
  absl::ParseCommandLine(argc, argv);
  const absl::Status s = clipserve::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "make-random-clip: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("wrote %s\n", absl::GetFlag(FLAGS_out).c_str());
  return 0;
}
