// The architecture of a taming-transformers VQModel, as stored next to the weights in `config.json`:
//   {"embed_dim", "n_embed", "ddconfig": {ch, ch_mult, num_res_blocks, attn_resolutions, z_channels,
//    resolution, in_channels, out_ch, double_z, dropout}}
// (the `model.params` section of taming's YAML). Plain value types; no torch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace clipserve::vqgan {

// taming's `ddconfig` (shared by Encoder and Decoder). Defaults are vqgan_imagenet_f16_16384's.
struct DdConfig {
  int64_t ch = 128;
  std::vector<int64_t> ch_mult = {1, 1, 2, 2, 4};
  int64_t num_res_blocks = 2;
  std::vector<int64_t> attn_resolutions = {16};
  int64_t z_channels = 256;
  int64_t resolution = 256;
  int64_t in_channels = 3;
  int64_t out_ch = 3;
  bool double_z = false;
  double dropout = 0.0;
};

// A whole VQModel: codebook size and width plus the encoder/decoder shape. Defaults are
// vqgan_imagenet_f16_16384's (embed_dim 256, n_embed 16384, f = 16).
struct VqganConfig {
  int64_t embed_dim = 256;
  int64_t n_embed = 16384;
  DdConfig ddconfig;

  // Parses config.json's object. Every field is required; a missing or ill-typed one yields INVALID_ARGUMENT
  // naming it (e.g. "ddconfig.ch_mult[1]"). Unknown fields are ignored. The result is Validate()d.
  static absl::StatusOr<VqganConfig> FromJson(const nlohmann::json& json);
  // Reads and parses a config.json file.
  static absl::StatusOr<VqganConfig> FromFile(const std::filesystem::path& path);
  nlohmann::json ToJson() const;

  // INVALID_ARGUMENT naming the field when the architecture cannot be built: non-positive sizes, channel
  // counts that GroupNorm(32) cannot split (`ch` must be a multiple of 32), an empty `ch_mult`, dropout
  // outside [0, 1), or double_z (VQModel's quant_conv takes z_channels, so a double_z encoder cannot feed it).
  absl::Status Validate() const;

  // Number of encoder/decoder levels, len(ch_mult).
  int64_t num_levels() const { return static_cast<int64_t>(ddconfig.ch_mult.size()); }
  // Image pixels per latent cell along each side: 2^(levels - 1).
  int64_t downsample_factor() const { return int64_t{1} << (num_levels() - 1); }
};

// Every parameter of taming's VQModel for `config`, by state_dict name in taming's registration order
// (encoder.*, decoder.*, quantize.embedding.weight, quant_conv.*, post_quant_conv.*; no loss.*), with its shape.
// Pure arithmetic: used to check a checkpoint before anything is allocated. `config` must be valid.
std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(const VqganConfig& config);

}  // namespace clipserve::vqgan
