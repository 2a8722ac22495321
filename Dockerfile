# syntax=docker/dockerfile:1
# clipserve, CPU image from Debian 12 packages.
#
#   docker build -t clipserve:cpu .
#   docker run --rm -v /path/to/clip-vit-base-patch32:/model:ro -v "$PWD/images":/images:ro clipserve:cpu \
#       compare --model /model --text "a photo of a cat" --image /images/cat.jpg
#
# Today the image carries the offline `clipctl compare` command; the production issue turns it into the server
# image (non-root, shipped models inside, HEALTHCHECK, and a CUDA variant on an official libtorch 2.x).
# Docker cannot run on the CI machine, so this file is not built in CI.

FROM debian:12 AS build
WORKDIR /src
COPY tools/install-deps.sh tools/install-deps.sh
RUN bash tools/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN bash tools/build.sh -DCLIPSERVE_BUILD_TESTS=OFF -DCLIPSERVE_BUILD_BENCHMARKS=OFF

FROM debian:12
# Runtime libraries only; libopenblas0-pthread replaces the reference BLAS behind libblas.so.3 (~30x faster).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libtorch1.13 libopenblas0-pthread libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 \
      libicu72 libabsl20220623 libspdlog1.10 libfmt9 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home clipserve
COPY --from=build /src/build/bin/clipctl /usr/local/bin/clipctl
USER clipserve
ENTRYPOINT ["clipctl"]
