// shapes-gen: writes scenes of the shapes world as PNGs, with their captions and labels, for inspection.
//
//   build/bin/shapes-gen --seed=S --count=N [--start=I] [--size=64] [--captions=5] [--split=auto]
//                        [--zoom=1] --out=DIR
//
// Writes DIR/<index>.png (RGB), DIR/captions.jsonl (one object a line: file, index, captions, colour, shape,
// background, background_colours, size, position, rotation_deg) and DIR/sheet.png, a contact sheet of the
// first 64 images (--zoom enlarges them). --split=auto takes the split the seed belongs to (seeds >= 1000000
// are evaluation seeds).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "tools/shapes/world.h"

ABSL_FLAG(uint64_t, seed, 1, "world seed (training seeds < 1000000, evaluation seeds >= 1000000)");
ABSL_FLAG(uint64_t, start, 0, "first index");
ABSL_FLAG(int, count, 16, "number of images");
ABSL_FLAG(int, size, 64, "image side in pixels");
ABSL_FLAG(int, captions, 5, "captions per image (distinct, drawn from the templates)");
ABSL_FLAG(std::string, split, "auto", "train, eval or auto (the seed's split)");
ABSL_FLAG(std::string, out, "", "output directory (created)");
ABSL_FLAG(int, zoom, 1, "contact sheet: each image enlarged this many times (nearest neighbour), 1..8");

namespace clipserve::shapes {
namespace {

namespace fs = std::filesystem;

absl::Status WritePng(const fs::path& path, const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  if (!cv::imwrite(path.string(), bgr)) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

absl::Status Run() {
  const fs::path out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  const int count = absl::GetFlag(FLAGS_count);
  if (count < 0) return absl::InvalidArgumentError("--count must be >= 0");
  SceneSamplerOptions options;
  options.seed = absl::GetFlag(FLAGS_seed);
  options.render.image_size = absl::GetFlag(FLAGS_size);
  const std::string split = absl::GetFlag(FLAGS_split);
  if (split == "auto") {
    options.split = SplitOfSeed(options.seed);
  } else if (split == "train" || split == "eval") {
    options.split = split == "train" ? Split::kTrain : Split::kEval;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--split must be train, eval or auto, got '", split, "'"));
  }
  CLIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<SceneSampler> sampler, SceneSampler::Create(options));

  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", out.string(), ": ", ec.message()));

  const int zoom = absl::GetFlag(FLAGS_zoom);
  if (zoom < 1 || zoom > 8) return absl::InvalidArgumentError("--zoom must be in [1, 8]");
  const int n = options.render.image_size * zoom;
  const int sheet_count = std::min(count, 64);
  const int columns = std::min(sheet_count, 8);
  const int rows = (sheet_count + columns - 1) / std::max(columns, 1);
  constexpr int kGap = 2;
  cv::Mat sheet(std::max(rows, 1) * (n + kGap) + kGap, std::max(columns, 1) * (n + kGap) + kGap, CV_8UC3,
                cv::Scalar(64, 64, 64));

  std::string jsonl;
  const uint64_t start = absl::GetFlag(FLAGS_start);
  for (int i = 0; i < count; ++i) {
    const uint64_t index = start + i;
    const Example e = sampler->Sample(index);
    const std::string file = absl::StrFormat("%06d.png", index);
    CLIPSERVE_RETURN_IF_ERROR(WritePng(out / file, e.image));
    Rng rng = Rng::For(options.seed, index, /*stream=*/100);
    const std::vector<std::string> captions = Captions(e.scene, rng, absl::GetFlag(FLAGS_captions));
    const Background& bg = e.scene.background;
    nlohmann::json bg_colours = {std::string(ColourName(bg.colour))};
    if (bg.kind == BackgroundKind::kGradient) bg_colours.push_back(std::string(ColourName(bg.colour2)));
    const nlohmann::json line = {
        {"file", file},
        {"index", index},
        {"captions", captions},
        {"colour", std::string(ColourName(e.scene.colour))},
        {"shape", std::string(ShapeName(e.scene.shape))},
        {"background", std::string(BackgroundKindName(bg.kind))},
        {"background_colours", bg_colours},
        {"size", std::string(SizeName(e.scene.size))},
        {"position", std::string(PositionName(e.scene.position))},
        {"rotation_deg", e.scene.rotation_deg},
    };
    absl::StrAppend(&jsonl, line.dump(), "\n");
    if (i < sheet_count) {
      const int x = kGap + (i % columns) * (n + kGap), y = kGap + (i / columns) * (n + kGap);
      cv::Mat bgr;
      cv::cvtColor(e.image, bgr, cv::COLOR_RGB2BGR);
      cv::resize(bgr, sheet(cv::Rect(x, y, n, n)), cv::Size(n, n), 0, 0, cv::INTER_NEAREST);
    }
  }
  CLIPSERVE_RETURN_IF_ERROR(WriteFileAtomically(out / "captions.jsonl", jsonl));
  if (sheet_count > 0 && !cv::imwrite((out / "sheet.png").string(), sheet)) {
    return absl::InternalError("cannot write sheet.png");
  }
  std::printf("wrote %d images (%s seed %llu) and captions.jsonl to %s\n", count,
              std::string(SplitName(options.split)).c_str(), static_cast<unsigned long long>(options.seed),
              out.string().c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace clipserve::shapes

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("writes shapes-world scenes as PNGs + captions.jsonl: --seed=S --count=N --out=DIR");
  absl::ParseCommandLine(argc, argv);
  const absl::Status s = clipserve::shapes::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "shapes-gen: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
