#!/usr/bin/env bash
# The main job, for a new user: installs dependencies, builds, starts the clipserve server with
# configs/default.textproto (the shipped shapes-world CLIP, models/shapes-world), draws three held-out scenes
# of the shapes world, classifies them over all 80 "colour shape" labels with `clipctl classify`, finds the one a
# caption describes with `clipctl rank`, draws "a red circle on a white background" with `clipctl generate`
# (VQGAN+CLIP, frames streamed into demo-output/), classifies one image again through the HTTP/JSON gateway
# with curl, and stops the server gracefully.
#
# CLIP_MODEL=DIR (a Hugging Face CLIP directory) serves that model too, as "clip"; DEMO_IMAGES=DIR classifies
# the images of DIR instead of drawn scenes; DEMO_KEEP=1 keeps the server running on ports 8500/8501 at the end
# for the web demo at http://localhost:8501/ (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh

work=$(mktemp -d)
extra=()
if [[ -n "${CLIP_MODEL:-}" ]]; then
  [[ -f "$CLIP_MODEL/config.json" ]] || { echo "demo: no CLIP model at '$CLIP_MODEL'" >&2; exit 1; }
  extra+=("--model=clip=$CLIP_MODEL")
fi
if [[ -n "${DEMO_IMAGES:-}" ]]; then
  images=$(find "$DEMO_IMAGES" -maxdepth 1 -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.webp' -o -name '*.bmp' \) | sort | head -n 3 | paste -sd, -)
  [[ -n "$images" ]] || { echo "demo: no images in '$DEMO_IMAGES'" >&2; exit 1; }
else
  # Evaluation seeds (>= 1000000) are never seen in training.
  build/bin/shapes-gen --seed=1000777 --count=3 --out="$work/scenes" >/dev/null
  images="$work/scenes/000000.png,$work/scenes/000001.png,$work/scenes/000002.png"
  echo "held-out scenes (captions from $work/scenes/captions.jsonl):"
  sed -n 's/.*"colour":"\([^"]*\)".*"file":"\([^"]*\)".*"shape":"\([^"]*\)".*/  \2: \1 \3/p' "$work/scenes/captions.jsonl"
fi
labels=""
for colour in red orange yellow green blue purple white black; do
  for shape in circle square triangle star cross heart ring diamond crescent arrow; do
    labels+="${labels:+,}$colour $shape"
  done
done

log="$work/server.log"
ports=(--grpc_port=0 --http_port=0)
[[ "${DEMO_KEEP:-}" == 1 ]] && ports=(--grpc_port=8500 --http_port=8501)
build/bin/clipserve --config=configs/default.textproto "${extra[@]}" "${ports[@]}" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
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
echo "clipctl classify: the 3 most probable of 80 labels for each image"
build/bin/clipctl --target="127.0.0.1:$grpc_port" classify --image="$images" --labels="$labels" \
  --template="a photo of a {}" --top_k=3
echo
if [[ -z "${DEMO_IMAGES:-}" ]]; then
  query=$(sed -n '2s/.*"colour":"\([^"]*\)".*"shape":"\([^"]*\)".*/a photo of a \1 \2/p' "$work/scenes/captions.jsonl")
  echo "clipctl rank: which image is \"$query\"? (000001.png is)"
  build/bin/clipctl --target="127.0.0.1:$grpc_port" rank --query_text="$query" --image="$images"
  echo
fi
out=${DEMO_OUT:-demo-output}
echo "clipctl generate: \"a red circle on a white background\", 64x64, frames every 20 steps into $out/"
build/bin/clipctl --target="127.0.0.1:$grpc_port" generate --prompt="a red circle on a white background" \
  --steps=100 --frame_every=20 --seed=1 --out="$out"
echo
first=${images%%,*}
echo "the same server over HTTP/JSON (docs/api.md): POST /v1/classify with $(basename "$first") as base64"
printf '{"images": [{"encoded": "%s"}], "labels": %s, "template": "a photo of a {}", "top_k": 1}' \
  "$(base64 -w0 "$first")" "$(printf '%s' "$labels" | sed 's/[^,]*/"&"/g; s/^/[/; s/$/]/')" >"$work/classify.json"
curl -s "http://127.0.0.1:$http_port/v1/classify" --data-binary @"$work/classify.json"
echo
echo
if [[ "${DEMO_KEEP:-}" == 1 ]]; then
  echo "web demo: http://localhost:$http_port/ (classify, search, generate in the browser); Ctrl-C stops the server"
  wait $server || true
  exit 0
fi
kill -TERM $server
wait $server && echo "server stopped cleanly (exit 0)"
trap 'rm -rf "$work"' EXIT
