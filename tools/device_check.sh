#!/usr/bin/env bash
# The prepared script for a session that is lent the GPU machine (15 minutes of device time, all tries
# together): one call builds clipserve there against its official CUDA libtorch 2.x and measures what only a
# GPU can show. Follows ../shared/device/README.md (Debian 12 packages carried in .device/, its fmt trap).
#
#   here:  bash ../shared/device/fetch-debs.sh                  # -> .device/ (git-ignored, ~33 MB)
#   then:  the device tool's `run` with carry [".device"], timeout_s 540, and the command
#          bash tools/device_check.sh
#
# Writes to $OUT (the device tool brings it back): cmake.log, build.log, tests.log (the model-code tests, CPU
# code paths built against libtorch 2.x: the compat-header check), generation_bench.json (BM_GenerationStep
# 1/4/8 jobs on cuda:0 and on the CPU cores there, side by side: the batching target), nvidia-smi.txt.
# Not yet run on a GPU machine: the first session with one should expect to fix a step and rerun.
set -uo pipefail
out=${OUT:-/tmp/device-out}
mkdir -p "$out"
start=$(date +%s)
step() { echo "[$(( $(date +%s) - start )) s] $*" | tee -a "$out/steps.log"; }

nvidia-smi >"$out/nvidia-smi.txt" 2>&1
step "setup"
bash .device/setup.sh >"$out/setup.log" 2>&1 || { step "setup failed"; tail -20 "$out/setup.log"; exit 1; }
# shellcheck disable=SC1091
source /opt/deps/env.sh

step "configure"
cmake -S . -B /tmp/b -G Ninja -DCMAKE_BUILD_TYPE=Release -DCLIPSERVE_CUDA=ON -DCLIPSERVE_WERROR=OFF \
  >"$out/cmake.log" 2>&1 || { step "configure failed"; tail -40 "$out/cmake.log"; exit 1; }
step "build"
cmake --build /tmp/b -j "$(nproc)" >"$out/build.log" 2>&1 || { step "build failed"; grep -m 20 -B2 -A8 'error' "$out/build.log"; exit 1; }

step "model tests"
fixtures=${CLIPSERVE_FIXTURES:-$PWD/shared/fixtures/reference-a}
[[ -d $fixtures ]] && export CLIPSERVE_FIXTURES=$fixtures
ctest --test-dir /tmp/b -R 'ClipModel|Tokenizer|Preprocess|Vqgan|Safetensors|Generator' -j 8 --timeout 120 \
  >"$out/tests.log" 2>&1
tail -5 "$out/tests.log"

step "generation batching on cuda:0 and on the CPU"
for device in cuda:0 cpu; do
  CLIPSERVE_BENCH_DEVICE=$device /tmp/b/bin/clipserve_bench --benchmark_filter='BM_GenerationStep/jobs:[0-9]+/split:2' \
    --benchmark_format=json --benchmark_out="$out/generation_bench_${device%%:*}.json" >"$out/bench_${device%%:*}.log" 2>&1
  grep -h -o '"name": "BM_GenerationStep[^"]*"\|"job_steps_per_s": [0-9.e+]*' "$out/generation_bench_${device%%:*}.json" \
    | paste - - | sed "s/^/$device /"
done
step "done"
