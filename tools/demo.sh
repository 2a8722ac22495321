#!/usr/bin/env bash
# The main job, for a new user: installs dependencies, builds, and runs `clipctl compare` on a CLIP model —
# texts against images, cosine similarities and zero-shot probabilities.
# Model: $CLIP_MODEL (a Hugging Face CLIP directory), else the reference fixture model (random weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
model=${CLIP_MODEL:-${CLIPSERVE_FIXTURES:-../shared/fixtures/reference-a}/clip}
images_dir=${DEMO_IMAGES:-$(dirname "$model")/images}
if [[ ! -f "$model/config.json" ]]; then
  echo "demo: no CLIP model at '$model'; set CLIP_MODEL to a Hugging Face CLIP directory" >&2
  exit 1
fi
mapfile -t images < <(find "$images_dir" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.webp' -o -name '*.bmp' \) | sort | head -n 3)
if ((${#images[@]} == 0)); then
  echo "demo: no images in '$images_dir'; set DEMO_IMAGES to a folder of JPEG/PNG/WebP/BMP files" >&2
  exit 1
fi
args=()
for img in "${images[@]}"; do args+=(--image "$img"); done
build/bin/clipctl compare --model "$model" \
  --text "a photo of a cat" --text "a photo of a dog" --text "a diagram" --text "a red circle on a white background" \
  "${args[@]}"
