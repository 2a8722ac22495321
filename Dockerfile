# syntax=docker/dockerfile:1
# clipserve server images: gRPC on 8500, HTTP (/metrics, /healthz, /readyz) on 8501, the shipped shapes-world
# models and configs inside, running as user 10001. Two variants, chosen with --target (BuildKit, the default
# builder since Docker 23, builds only the stages a target needs):
#
#   cpu  (the default)  Debian 12's libtorch 1.13 with OpenBLAS; every library from Debian 12 packages.
#   cuda                an official libtorch 2.x with CUDA (download.pytorch.org), built with NVIDIA's CUDA
#                       toolkit for Debian 12; other libraries from Debian 12 packages. Runs on any node whose
#                       NVIDIA driver supports the CUDA version (12.4 by default: driver >= 550).
#
#   docker build --target cpu  -t clipserve:cpu  .
#   docker build --target cuda -t clipserve:cuda .
#   docker build --target cuda -t clipserve:cuda-cu126 \
#       --build-arg CUDA_VERSION=12-6 --build-arg TORCH_CUDA_ARCH_LIST="8.0;9.0" \
#       --build-arg LIBTORCH_URL=https://download.pytorch.org/libtorch/cu126/libtorch-cxx11-abi-shared-with-deps-2.6.0%2Bcu126.zip .
#
#   docker run --rm -p 8500:8500 -p 8501:8501 clipserve:cpu
#   docker run --rm --gpus all -p 8500:8500 -p 8501:8501 clipserve:cuda
#   docker exec CONTAINER clipctl health        # or build/bin/clipctl --target=localhost:8500 health
#
# The entrypoint is the server; arguments replace the default `--config=/etc/clipserve/clipserve.textproto`
# (deploy/base/clipserve.textproto in the cpu image, deploy/overlays/gpu/clipserve.textproto in the cuda image:
# the same files the Kubernetes overlays mount). configs/ is in /opt/clipserve/configs and the models in
# /opt/clipserve/models, so `--config=/opt/clipserve/configs/default.textproto` works too; mount other models
# over /opt/clipserve/models or anywhere and name them with --model=NAME=DIR. Outside Kubernetes, give
# `docker run --cpus=N` a matching `-e CLIPSERVE_INTRA_OP_THREADS=N` (docs/threading.md): a CPU quota does
# not change the core count the server sees.
#
# HEALTHCHECK runs `clipctl health` against localhost:8500 (SERVING once the models are loaded). Docker cannot
# run on the CI machine: tests/deploy/dockerfile_test.py checks this file statically; docs/operations.md has
# the rest.

ARG DEBIAN_IMAGE=debian:12
ARG DEBIAN_SLIM_IMAGE=debian:12-slim

# ---- build stages -------------------------------------------------------------------------------------------

# Compilers and the -dev packages every variant builds with (the serving part of tools/install-deps.sh).
FROM ${DEBIAN_IMAGE} AS build-base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake ninja-build g++ pkg-config ca-certificates curl unzip \
      libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev \
      nlohmann-json3-dev libre2-dev libicu-dev \
      libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev libspdlog-dev libfmt-dev libcivetweb-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# CPU: Debian's libtorch 1.13.
FROM build-base AS build-cpu
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtorch-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCLIPSERVE_BUILD_TESTS=OFF -DCLIPSERVE_BUILD_BENCHMARKS=OFF -DCLIPSERVE_CUDA=OFF \
 && cmake --build build --target clipserve clipctl

# CUDA: NVIDIA's CUDA toolkit for Debian 12 (libtorch's CMake config needs nvcc and the CUDA libraries) and an
# official libtorch with CUDA. TORCH_CUDA_ARCH_LIST: the GPUs to build own kernels for (none can be detected
# during a docker build); 8.0 A100, 8.6 A10/RTX 30, 8.9 L4/L40, 9.0 H100/H200.
FROM build-base AS build-cuda
ARG CUDA_VERSION=12-4
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu124/libtorch-cxx11-abi-shared-with-deps-2.5.1%2Bcu124.zip
ARG LIBTORCH_SHA256=
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"
RUN curl -fsSL -o /tmp/cuda-keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb \
 && rm /tmp/cuda-keyring.deb \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cuda-minimal-build-${CUDA_VERSION} cuda-libraries-dev-${CUDA_VERSION} cuda-nvtx-${CUDA_VERSION} \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" \
 && if [ -n "${LIBTORCH_SHA256}" ]; then echo "${LIBTORCH_SHA256}  /tmp/libtorch.zip" | sha256sum -c -; fi \
 && unzip -q /tmp/libtorch.zip -d /opt \
 && rm /tmp/libtorch.zip \
 && find /opt/libtorch/lib -name '*.a' -delete
ENV PATH=/usr/local/cuda/bin:${PATH} \
    CUDAToolkit_ROOT=/usr/local/cuda \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}
COPY . .
# PyTorch ships fmt headers of its own: the project links spdlog (Debian's fmt 9) before torch so that spdlog's
# fmt comes first (../shared/device/README.md, "fmt clash").
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH=/opt/libtorch -DCLIPSERVE_CUDA=ON \
      -DCLIPSERVE_BUILD_TESTS=OFF -DCLIPSERVE_BUILD_BENCHMARKS=OFF \
 && cmake --build build --target clipserve clipctl
# The CUDA toolkit libraries the binaries link directly (libcudart, libnvrtc, ...), for the runtime stage;
# libtorch's own lib/ goes there whole (it loads some of its libraries at run time).
RUN mkdir -p /stage/cuda-lib \
 && ldd build/bin/clipserve build/bin/clipctl | awk '$3 ~ /^\/usr\/local\/cuda/ {print $3}' | sort -u \
    | xargs -r cp -L -t /stage/cuda-lib/

# ---- runtime stages -------------------------------------------------------------------------------------------

# What both images share: the runtime libraries of gRPC, protobuf, abseil, OpenSSL's libcrypto (the server's
# certificate and token checks), OpenCV, ICU, spdlog and civetweb (the packages owning the binaries' NEEDED
# libraries), the user, the models and the configs.
FROM ${DEBIAN_SLIM_IMAGE} AS runtime-base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libgrpc29 libssl3 libprotobuf32 libabsl20220623 \
      libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 \
      libicu72 libspdlog1.10 libfmt9 libcivetweb1 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 clipserve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin clipserve
COPY configs/ /opt/clipserve/configs/
COPY models/ /opt/clipserve/models/
WORKDIR /opt/clipserve
EXPOSE 8500 8501
STOPSIGNAL SIGTERM

FROM runtime-base AS cuda
COPY --from=build-cuda /opt/libtorch/lib/ /opt/libtorch/lib/
COPY --from=build-cuda /stage/cuda-lib/ /opt/clipserve/lib/
COPY --from=build-cuda /src/build/bin/clipserve /src/build/bin/clipctl /usr/local/bin/
COPY deploy/overlays/gpu/clipserve.textproto /etc/clipserve/clipserve.textproto
# libcuda.so.1 and the other driver libraries come from the node (NVIDIA Container Toolkit / device plugin).
ENV LD_LIBRARY_PATH=/opt/libtorch/lib:/opt/clipserve/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CUDA_CACHE_PATH=/tmp/cuda-cache
RUN ! ldd /usr/local/bin/clipserve /usr/local/bin/clipctl | grep 'not found' | grep -v -e libcuda.so -e libnvidia-ml.so
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["/usr/local/bin/clipctl", "--timeout=3", "health"]
ENTRYPOINT ["/usr/local/bin/clipserve"]
CMD ["--config=/etc/clipserve/clipserve.textproto"]

# The default target: last in the file.
FROM runtime-base AS cpu
# libopenblas0-pthread: Debian's libtorch reaches BLAS through libblas.so.3, which is netlib's reference BLAS
# (~30x slower) unless OpenBLAS provides it (docs/threading.md).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtorch1.13 libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /src/build/bin/clipserve /src/build/bin/clipctl /usr/local/bin/
COPY deploy/base/clipserve.textproto /etc/clipserve/clipserve.textproto
RUN ! ldd /usr/local/bin/clipserve /usr/local/bin/clipctl | grep 'not found' \
 && update-alternatives --query libblas.so.3-x86_64-linux-gnu | grep -q '^Value: .*openblas'
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["/usr/local/bin/clipctl", "--timeout=3", "health"]
ENTRYPOINT ["/usr/local/bin/clipserve"]
CMD ["--config=/etc/clipserve/clipserve.textproto"]
