#include "server/models/clip/config.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::clip {
namespace {

// Reads typed fields from one JSON object and reports problems as "<origin>: <path>.<field> ...".
class FieldReader {
 public:
  FieldReader(const nlohmann::json& obj, std::string origin, std::string prefix)
      : obj_(obj), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

  absl::Status Int(const char* name, int* out, bool required, int min_value = 1) const {
    const auto it = obj_.find(name);
    if (it == obj_.end() || it->is_null()) return required ? Missing(name) : absl::OkStatus();
    if (!it->is_number_integer()) return Bad(name, "must be an integer");
    const int64_t v = it->get<int64_t>();
    if (v < min_value || v > (int64_t{1} << 30)) {
      return Bad(name, absl::StrCat("is ", v, ", must be at least ", min_value));
    }
    *out = static_cast<int>(v);
    return absl::OkStatus();
  }

  absl::Status Double(const char* name, double* out) const {
    const auto it = obj_.find(name);
    if (it == obj_.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_number()) return Bad(name, "must be a number");
    *out = it->get<double>();
    return absl::OkStatus();
  }

  absl::Status Act(const char* name, Activation* out) const {
    const auto it = obj_.find(name);
    if (it == obj_.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_string()) return Bad(name, "must be a string");
    const std::string v = it->get<std::string>();
    if (v == "quick_gelu") {
      *out = Activation::kQuickGelu;
    } else if (v == "gelu") {
      *out = Activation::kGelu;
    } else {
      return Bad(name, absl::StrCat("is '", v, "'; supported: quick_gelu, gelu"));
    }
    return absl::OkStatus();
  }

  absl::Status Missing(const char* name) const {
    return absl::InvalidArgumentError(absl::StrCat(origin_, ": required field ", prefix_, name, " is missing"));
  }
  absl::Status Bad(const char* name, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(origin_, ": field ", prefix_, name, " ", what));
  }

 private:
  const nlohmann::json& obj_;
  std::string origin_;
  std::string prefix_;
};

absl::Status ReadTower(const FieldReader& r, TowerConfig* t) {
  CLIPSERVE_RETURN_IF_ERROR(r.Int("hidden_size", &t->hidden_size, /*required=*/true));
  CLIPSERVE_RETURN_IF_ERROR(r.Int("intermediate_size", &t->intermediate_size, /*required=*/true));
  CLIPSERVE_RETURN_IF_ERROR(r.Int("num_attention_heads", &t->num_attention_heads, /*required=*/true));
  CLIPSERVE_RETURN_IF_ERROR(r.Int("num_hidden_layers", &t->num_hidden_layers, /*required=*/true));
  CLIPSERVE_RETURN_IF_ERROR(r.Act("hidden_act", &t->hidden_act));
  CLIPSERVE_RETURN_IF_ERROR(r.Double("layer_norm_eps", &t->layer_norm_eps));
  if (t->hidden_size % t->num_attention_heads != 0) {
    return r.Bad("hidden_size", absl::StrCat("(", t->hidden_size, ") is not divisible by num_attention_heads (",
                                             t->num_attention_heads, ")"));
  }
  if (!(t->layer_norm_eps > 0)) return r.Bad("layer_norm_eps", "must be positive");
  return absl::OkStatus();
}

}  // namespace

const char* ActivationName(Activation act) { return act == Activation::kGelu ? "gelu" : "quick_gelu"; }

absl::StatusOr<ClipConfig> ClipConfig::FromJson(const nlohmann::json& json, const std::string& origin) {
  if (!json.is_object()) return absl::InvalidArgumentError(absl::StrCat(origin, ": config is not a JSON object"));
  ClipConfig c;
  FieldReader top(json, origin, "");
  for (const char* section : {"text_config", "vision_config"}) {
    const auto it = json.find(section);
    if (it == json.end() || !it->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": required object ", section, " is missing"));
    }
  }
  const auto& tj = json["text_config"];
  const auto& vj = json["vision_config"];
  FieldReader tr(tj, origin, "text_config.");
  FieldReader vr(vj, origin, "vision_config.");
  CLIPSERVE_RETURN_IF_ERROR(ReadTower(tr, &c.text));
  CLIPSERVE_RETURN_IF_ERROR(tr.Int("vocab_size", &c.text.vocab_size, /*required=*/false));
  CLIPSERVE_RETURN_IF_ERROR(tr.Int("max_position_embeddings", &c.text.max_position_embeddings, /*required=*/false));
  CLIPSERVE_RETURN_IF_ERROR(tr.Int("eos_token_id", &c.text.eos_token_id, /*required=*/false, /*min_value=*/0));
  CLIPSERVE_RETURN_IF_ERROR(tr.Int("bos_token_id", &c.text.bos_token_id, /*required=*/false, /*min_value=*/0));
  CLIPSERVE_RETURN_IF_ERROR(tr.Int("pad_token_id", &c.text.pad_token_id, /*required=*/false, /*min_value=*/0));
  CLIPSERVE_RETURN_IF_ERROR(ReadTower(vr, &c.vision));
  CLIPSERVE_RETURN_IF_ERROR(vr.Int("image_size", &c.vision.image_size, /*required=*/true));
  CLIPSERVE_RETURN_IF_ERROR(vr.Int("patch_size", &c.vision.patch_size, /*required=*/true));
  CLIPSERVE_RETURN_IF_ERROR(vr.Int("num_channels", &c.vision.num_channels, /*required=*/false));
  CLIPSERVE_RETURN_IF_ERROR(top.Int("projection_dim", &c.projection_dim, /*required=*/true));
  CLIPSERVE_RETURN_IF_ERROR(top.Double("logit_scale_init_value", &c.logit_scale_init_value));
  if (c.vision.image_size % c.vision.patch_size != 0) {
    return vr.Bad("image_size", absl::StrCat("(", c.vision.image_size, ") is not a multiple of patch_size (",
                                             c.vision.patch_size, ")"));
  }
  if (c.text.eos_token_id >= c.text.vocab_size) {
    return tr.Bad("eos_token_id", absl::StrCat("(", c.text.eos_token_id, ") is outside the vocabulary (",
                                               c.text.vocab_size, ")"));
  }
  return c;
}

absl::StatusOr<ClipConfig> ClipConfig::Load(const std::filesystem::path& config_json) {
  CLIPSERVE_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(config_json));
  return FromJson(j, config_json.string());
}

nlohmann::json ClipConfig::ToJson() const {
  auto tower = [](const TowerConfig& t) {
    return nlohmann::json{{"hidden_size", t.hidden_size},
                          {"intermediate_size", t.intermediate_size},
                          {"num_attention_heads", t.num_attention_heads},
                          {"num_hidden_layers", t.num_hidden_layers},
                          {"hidden_act", ActivationName(t.hidden_act)},
                          {"layer_norm_eps", t.layer_norm_eps}};
  };
  nlohmann::json tj = tower(text);
  tj["model_type"] = "clip_text_model";
  tj["vocab_size"] = text.vocab_size;
  tj["max_position_embeddings"] = text.max_position_embeddings;
  tj["eos_token_id"] = text.eos_token_id;
  tj["bos_token_id"] = text.bos_token_id;
  tj["pad_token_id"] = text.pad_token_id;
  tj["projection_dim"] = projection_dim;
  nlohmann::json vj = tower(vision);
  vj["model_type"] = "clip_vision_model";
  vj["image_size"] = vision.image_size;
  vj["patch_size"] = vision.patch_size;
  vj["num_channels"] = vision.num_channels;
  vj["projection_dim"] = projection_dim;
  return nlohmann::json{{"architectures", {"CLIPModel"}},
                        {"model_type", "clip"},
                        {"projection_dim", projection_dim},
                        {"logit_scale_init_value", logit_scale_init_value},
                        {"text_config", tj},
                        {"vision_config", vj}};
}

}  // namespace clipserve::clip
