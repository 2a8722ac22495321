// clipctl's generation verbs: `generate` starts a VQGAN+CLIP job and follows its stream (a live progress line on
// stderr, frames and the final image into --out, then a summary or one JSON object), `watch` follows a job again,
// `cancel` cancels one and `generations` lists them. Ctrl-C while following a stream cancels the call (the
// server then cancels a `generate` job that is not detached) and exits 130.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/commands.h"
#include "clipserve/v1/clipserve.pb.h"

namespace clipserve::client {

// generate, watch, cancel, generations.
std::vector<Verb> GenerationVerbs();

// The exit code of a stream stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
inline constexpr int kInterruptedExitCode = 130;

// The pieces of the verbs' output, for tests.

// "256x256" -> {256, 256}; a usage error naming `flag` for anything else ("64x", "0x64", "big").
absl::StatusOr<std::pair<uint32_t, uint32_t>> ParseSize(absl::string_view flag, absl::string_view value);

// The file extension of a frame without the dot: from its format ("png", "jpg", "webp"); for an unspecified
// format, from the bytes' signature, else "png".
std::string FrameExtension(const v1::Frame& frame);

// "frame_0037.png": the step zero-padded to four digits (more when larger), so that names sort by step.
std::string FrameFileName(uint32_t step, const v1::Frame& frame);

// A short duration: "0s", "18s", "2m05s", "1h02m".
std::string FormatShortDuration(double seconds);

// "step 37/100 [=======>            ] loss 0.812 sim 0.291 3.4 steps/s ETA 18s". The rate is the job's average
// (step / elapsed seconds); without it, "-- steps/s ETA --". `total_steps` 0 (unknown) drops "/N" and the bar.
std::string FormatProgressLine(const v1::GenerationProgress& progress, uint32_t total_steps);

// "queued: position 2 (job gen-3-0a1b2c3d)".
std::string FormatQueuedLine(const v1::GenerationAccepted& accepted);

// `generations`' table (job, state, step, queue, watchers, detach, age, prompt); "no generations" when empty.
std::string FormatGenerations(const v1::ListGenerationsResponse& response, absl::Time now);

// GENERATION_STATE_RUNNING -> "running".
std::string GenerationStateName(v1::GenerationState state);

}  // namespace clipserve::client
