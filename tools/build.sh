#!/usr/bin/env bash
# Configures (CMake + Ninja) and builds clipserve into build/ (override with BUILD_DIR).
# Extra arguments go to cmake's configure step, e.g. tools/build.sh -DCLIPSERVE_SANITIZE=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@"
ninja -C "$build_dir"
