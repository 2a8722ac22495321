#!/usr/bin/env bash
# The main job, for a new user: installs dependencies, builds, starts the clipserve server on a CLIP model,
# classifies a few images against labels with `clipctl classify`, and stops the server gracefully.
#
# Model: $CLIP_MODEL (a Hugging Face CLIP directory), else the reference fixture model (random weights: the
# answers are real computations but carry no meaning until the shipped models exist). Images: $DEMO_IMAGES.
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
images=$(find "$images_dir" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.webp' -o -name '*.bmp' \) | sort | head -n 3 | paste -sd, -)
if [[ -z "$images" ]]; then
  echo "demo: no images in '$images_dir'; set DEMO_IMAGES to a folder of JPEG/PNG/WebP/BMP files" >&2
  exit 1
fi

log=$(mktemp)
build/bin/clipserve --config=configs/default.textproto --model="clip=$model" --grpc_port=0 --http_port=0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
# The server prints its ports once bound, then loads the model; /readyz turns 200 when it serves.
for _ in $(seq 1 300); do
  grep -q '^clipserve grpc_port=' "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
grpc_port=$(sed -n 's/^clipserve grpc_port=\([0-9]*\).*/\1/p' "$log")
http_port=$(sed -n 's/.*http_port=\([0-9]*\).*/\1/p' "$log" | head -n 1)
for _ in $(seq 1 600); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/readyz" || true) == 200 ]] && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
echo "server ready: gRPC 127.0.0.1:$grpc_port, metrics http://127.0.0.1:$http_port/metrics"
echo
build/bin/clipctl --target="127.0.0.1:$grpc_port" classify --image="$images" \
  --labels="cat,dog,diagram,red circle" --template="a photo of a {}"
echo
kill -TERM $server
wait $server && echo "server stopped cleanly (exit 0)"
trap 'rm -f "$log"' EXIT
