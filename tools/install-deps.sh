#!/usr/bin/env bash
# Installs every Debian package that clipserve's build, tests and tools need.
# Idempotent and non-interactive; run as root (or with sudo available).
set -euo pipefail

packages=(
  # toolchain
  cmake ninja-build g++ pkg-config git ca-certificates curl
  # model code
  libtorch-dev
  # Debian's libtorch links libblas.so.3; without this it resolves to netlib's reference BLAS (~30x slower).
  libopenblas0-pthread
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
  nlohmann-json3-dev libre2-dev libicu-dev
  # serving
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libspdlog-dev libfmt-dev libcivetweb-dev
  # tests and benchmarks (prometheus: /usr/bin/promtool, which lints the /metrics exposition in tests)
  libgtest-dev libgmock-dev libbenchmark-dev prometheus
  # tools/convert_taming_vqgan.py and its test (Debian's python3, not a pyenv one)
  python3 python3-torch python3-numpy
  # tests/web: the web demo driven by Playwright in Debian's headless Chromium (with fonts for the screenshot);
  # the TLS tests make their certificates with the openssl CLI
  chromium fonts-liberation fonts-dejavu-core openssl
)

# Node.js and npm (interop tests with a non-C++ gRPC stack): Debian's packages, unless a node is already there.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
# kubectl renders deploy/'s kustomizations in tests/deploy: Debian's (1.20), unless a kubectl is already there
# (Debian's package would clash with another kubectl's /usr/bin/kubectl).
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#packages[@]} packages present"
fi

# Make sure libblas.so.3 points at OpenBLAS (the alternatives system normally does this on install).
blas=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/ {print $2}')
case "$blas" in
  *openblas*) ;;
  *) echo "install-deps: warning: libblas.so.3 resolves to '${blas:-?}', not OpenBLAS" >&2 ;;
esac
