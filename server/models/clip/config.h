// The Hugging Face CLIP configuration (config.json of a `CLIPModel` directory) as clipserve uses it.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace clipserve::clip {

enum class Activation { kQuickGelu, kGelu };

const char* ActivationName(Activation act);

// Shared by both towers: a stack of pre-LayerNorm transformer blocks.
struct TowerConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_attention_heads = 0;
  int num_hidden_layers = 0;
  Activation hidden_act = Activation::kQuickGelu;
  double layer_norm_eps = 1e-5;
};

struct TextConfig : TowerConfig {
  int vocab_size = 49408;
  int max_position_embeddings = 77;
  // 2 in legacy configs, meaning "pool at argmax(ids)"; otherwise pool at the first position holding this id.
  int eos_token_id = 49407;
  int bos_token_id = 49406;
  int pad_token_id = 1;
};

struct VisionConfig : TowerConfig {
  int image_size = 0;
  int patch_size = 0;
  int num_channels = 3;
};

// Parsed and validated config. The fields that fix the architecture (sizes, layers, heads, image and patch
// size, projection_dim) are required; the others take transformers' defaults when absent, as transformers does.
struct ClipConfig {
  TextConfig text;
  VisionConfig vision;
  int projection_dim = 0;
  double logit_scale_init_value = 2.6592;

  // `origin` names the source in error messages (a path, usually).
  static absl::StatusOr<ClipConfig> FromJson(const nlohmann::json& json, const std::string& origin);
  static absl::StatusOr<ClipConfig> Load(const std::filesystem::path& config_json);
  // Writes the transformers layout (model_type, text_config, vision_config, ...).
  nlohmann::json ToJson() const;

  bool legacy_eos_pooling() const { return text.eos_token_id == 2; }
  int num_patches_per_side() const { return vision.image_size / vision.patch_size; }
};

}  // namespace clipserve::clip
