#include "server/models/vqgan/config.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::vqgan {
namespace {

using Json = nlohmann::json;

// Upper bound for every size in the config: far above any real model, low enough that no arithmetic on the
// sizes overflows.
constexpr int64_t kMaxSize = int64_t{1} << 24;
constexpr int64_t kMaxLevels = 16;

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat("VQGAN config: ", field, ": ", problem));
}

absl::StatusOr<const Json*> Member(const Json& object, const std::string& prefix, const char* name) {
  auto it = object.find(name);
  if (it == object.end()) return FieldError(prefix + name, "missing");
  return &*it;
}

absl::StatusOr<int64_t> AsInt(const Json& value, const std::string& field) {
  if (value.is_number_unsigned()) {
    const auto v = value.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return FieldError(field, "out of range");
    return static_cast<int64_t>(v);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  return FieldError(field, absl::StrCat("expected an integer, got ", value.dump()));
}

absl::StatusOr<int64_t> IntField(const Json& object, const std::string& prefix, const char* name) {
  CLIPSERVE_ASSIGN_OR_RETURN(const Json* value, Member(object, prefix, name));
  return AsInt(*value, prefix + name);
}

absl::StatusOr<std::vector<int64_t>> IntListField(const Json& object, const std::string& prefix, const char* name) {
  CLIPSERVE_ASSIGN_OR_RETURN(const Json* value, Member(object, prefix, name));
  const std::string field = prefix + name;
  if (!value->is_array()) return FieldError(field, absl::StrCat("expected a list of integers, got ", value->dump()));
  std::vector<int64_t> out;
  for (size_t i = 0; i < value->size(); ++i) {
    CLIPSERVE_ASSIGN_OR_RETURN(int64_t v, AsInt((*value)[i], absl::StrCat(field, "[", i, "]")));
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<bool> BoolField(const Json& object, const std::string& prefix, const char* name) {
  CLIPSERVE_ASSIGN_OR_RETURN(const Json* value, Member(object, prefix, name));
  if (!value->is_boolean()) return FieldError(prefix + name, absl::StrCat("expected a boolean, got ", value->dump()));
  return value->get<bool>();
}

absl::StatusOr<double> NumberField(const Json& object, const std::string& prefix, const char* name) {
  CLIPSERVE_ASSIGN_OR_RETURN(const Json* value, Member(object, prefix, name));
  if (!value->is_number()) return FieldError(prefix + name, absl::StrCat("expected a number, got ", value->dump()));
  return value->get<double>();
}

absl::Status CheckSize(int64_t value, const char* field) {
  if (value < 1 || value > kMaxSize) {
    return FieldError(field, absl::StrCat("must be in [1, ", kMaxSize, "], got ", value));
  }
  return absl::OkStatus();
}

std::vector<int64_t> Shape(std::initializer_list<int64_t> dims) { return std::vector<int64_t>(dims); }

using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

void AddConv(Shapes& out, const std::string& name, int64_t in, int64_t out_ch, int64_t k) {
  out.emplace_back(name + ".weight", Shape({out_ch, in, k, k}));
  out.emplace_back(name + ".bias", Shape({out_ch}));
}

void AddNorm(Shapes& out, const std::string& name, int64_t channels) {
  out.emplace_back(name + ".weight", Shape({channels}));
  out.emplace_back(name + ".bias", Shape({channels}));
}

void AddResnetBlock(Shapes& out, const std::string& name, int64_t in, int64_t out_ch) {
  AddNorm(out, name + ".norm1", in);
  AddConv(out, name + ".conv1", in, out_ch, 3);
  AddNorm(out, name + ".norm2", out_ch);
  AddConv(out, name + ".conv2", out_ch, out_ch, 3);
  if (in != out_ch) AddConv(out, name + ".nin_shortcut", in, out_ch, 1);
}

void AddAttnBlock(Shapes& out, const std::string& name, int64_t channels) {
  AddNorm(out, name + ".norm", channels);
  for (const char* conv : {".q", ".k", ".v", ".proj_out"}) AddConv(out, name + conv, channels, channels, 1);
}

bool Contains(const std::vector<int64_t>& values, int64_t v) {
  return std::find(values.begin(), values.end(), v) != values.end();
}

}  // namespace

absl::StatusOr<VqganConfig> VqganConfig::FromJson(const Json& json) {
  if (!json.is_object()) return FieldError("<root>", "expected a JSON object");
  VqganConfig config;
  CLIPSERVE_ASSIGN_OR_RETURN(config.embed_dim, IntField(json, "", "embed_dim"));
  CLIPSERVE_ASSIGN_OR_RETURN(config.n_embed, IntField(json, "", "n_embed"));
  CLIPSERVE_ASSIGN_OR_RETURN(const Json* dd, Member(json, "", "ddconfig"));
  if (!dd->is_object()) return FieldError("ddconfig", "expected a JSON object");
  const std::string p = "ddconfig.";
  DdConfig& d = config.ddconfig;
  CLIPSERVE_ASSIGN_OR_RETURN(d.ch, IntField(*dd, p, "ch"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.ch_mult, IntListField(*dd, p, "ch_mult"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.num_res_blocks, IntField(*dd, p, "num_res_blocks"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.attn_resolutions, IntListField(*dd, p, "attn_resolutions"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.z_channels, IntField(*dd, p, "z_channels"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.resolution, IntField(*dd, p, "resolution"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.in_channels, IntField(*dd, p, "in_channels"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.out_ch, IntField(*dd, p, "out_ch"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.double_z, BoolField(*dd, p, "double_z"));
  CLIPSERVE_ASSIGN_OR_RETURN(d.dropout, NumberField(*dd, p, "dropout"));
  CLIPSERVE_RETURN_IF_ERROR(config.Validate());
  return config;
}

absl::StatusOr<VqganConfig> VqganConfig::FromFile(const std::filesystem::path& path) {
  CLIPSERVE_ASSIGN_OR_RETURN(Json json, ReadJsonFile(path));
  auto config = FromJson(json);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat(path.string(), ": ", config.status().message()));
  }
  return config;
}

Json VqganConfig::ToJson() const {
  const DdConfig& d = ddconfig;
  return Json{{"embed_dim", embed_dim},
              {"n_embed", n_embed},
              {"ddconfig",
               {{"ch", d.ch},
                {"ch_mult", d.ch_mult},
                {"num_res_blocks", d.num_res_blocks},
                {"attn_resolutions", d.attn_resolutions},
                {"z_channels", d.z_channels},
                {"resolution", d.resolution},
                {"in_channels", d.in_channels},
                {"out_ch", d.out_ch},
                {"double_z", d.double_z},
                {"dropout", d.dropout}}}};
}

absl::Status VqganConfig::Validate() const {
  const DdConfig& d = ddconfig;
  CLIPSERVE_RETURN_IF_ERROR(CheckSize(embed_dim, "embed_dim"));
  CLIPSERVE_RETURN_IF_ERROR(CheckSize(n_embed, "n_embed"));
  CLIPSERVE_RETURN_IF_ERROR(CheckSize(d.ch, "ddconfig.ch"));
  if (d.ch % 32 != 0) {
    return FieldError("ddconfig.ch", absl::StrCat("must be a multiple of 32 (GroupNorm with 32 groups), got ", d.ch));
  }
  if (d.ch_mult.empty()) return FieldError("ddconfig.ch_mult", "must not be empty");
  if (static_cast<int64_t>(d.ch_mult.size()) > kMaxLevels) {
    return FieldError("ddconfig.ch_mult", absl::StrCat("at most ", kMaxLevels, " levels, got ", d.ch_mult.size()));
  }
  for (size_t i = 0; i < d.ch_mult.size(); ++i) {
    if (d.ch_mult[i] < 1 || d.ch_mult[i] > kMaxSize / d.ch) {
      return FieldError(absl::StrCat("ddconfig.ch_mult[", i, "]"),
                        absl::StrCat("must be in [1, ", kMaxSize / d.ch, "], got ", d.ch_mult[i]));
    }
  }
  CLIPSERVE_RETURN_IF_ERROR(CheckSize(d.num_res_blocks, "ddconfig.num_res_blocks"));
  for (size_t i = 0; i < d.attn_resolutions.size(); ++i) {
    if (d.attn_resolutions[i] < 1) {
      return FieldError(absl::StrCat("ddconfig.attn_resolutions[", i, "]"),
                        absl::StrCat("must be positive, got ", d.attn_resolutions[i]));
    }
  }
  CLIPSERVE_RETURN_IF_ERROR(CheckSize(d.z_channels, "ddconfig.z_channels"));
  CLIPSERVE_RETURN_IF_ERROR(CheckSize(d.resolution, "ddconfig.resolution"));
  CLIPSERVE_RETURN_IF_ERROR(CheckSize(d.in_channels, "ddconfig.in_channels"));
  CLIPSERVE_RETURN_IF_ERROR(CheckSize(d.out_ch, "ddconfig.out_ch"));
  if (d.double_z) {
    return FieldError("ddconfig.double_z",
                      "must be false for a VQModel (quant_conv takes z_channels, a double_z encoder emits twice that)");
  }
  if (!(d.dropout >= 0.0 && d.dropout < 1.0)) {
    return FieldError("ddconfig.dropout", absl::StrCat("must be in [0, 1), got ", d.dropout));
  }
  return absl::OkStatus();
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ParameterShapes(const VqganConfig& config) {
  const DdConfig& d = config.ddconfig;
  const int64_t levels = config.num_levels();
  Shapes out;

  // Encoder.
  AddConv(out, "encoder.conv_in", d.in_channels, d.ch, 3);
  int64_t curr_res = d.resolution;
  int64_t block_in = d.ch;
  for (int64_t i = 0; i < levels; ++i) {
    const std::string level = absl::StrCat("encoder.down.", i);
    block_in = d.ch * (i == 0 ? 1 : d.ch_mult[i - 1]);
    const int64_t block_out = d.ch * d.ch_mult[i];
    for (int64_t b = 0; b < d.num_res_blocks; ++b) {
      AddResnetBlock(out, absl::StrCat(level, ".block.", b), block_in, block_out);
      block_in = block_out;
    }
    if (Contains(d.attn_resolutions, curr_res)) {
      for (int64_t b = 0; b < d.num_res_blocks; ++b) AddAttnBlock(out, absl::StrCat(level, ".attn.", b), block_in);
    }
    if (i != levels - 1) {
      AddConv(out, level + ".downsample.conv", block_in, block_in, 3);
      curr_res /= 2;
    }
  }
  AddResnetBlock(out, "encoder.mid.block_1", block_in, block_in);
  AddAttnBlock(out, "encoder.mid.attn_1", block_in);
  AddResnetBlock(out, "encoder.mid.block_2", block_in, block_in);
  AddNorm(out, "encoder.norm_out", block_in);
  AddConv(out, "encoder.conv_out", block_in, d.double_z ? 2 * d.z_channels : d.z_channels, 3);

  // Decoder: built from the lowest resolution up, listed by level index like taming's `up.insert(0, ...)`.
  block_in = d.ch * d.ch_mult[levels - 1];
  curr_res = d.resolution >> (levels - 1);
  AddConv(out, "decoder.conv_in", d.z_channels, block_in, 3);
  AddResnetBlock(out, "decoder.mid.block_1", block_in, block_in);
  AddAttnBlock(out, "decoder.mid.attn_1", block_in);
  AddResnetBlock(out, "decoder.mid.block_2", block_in, block_in);
  std::vector<Shapes> up(levels);
  for (int64_t i = levels - 1; i >= 0; --i) {
    const std::string level = absl::StrCat("decoder.up.", i);
    const int64_t block_out = d.ch * d.ch_mult[i];
    for (int64_t b = 0; b <= d.num_res_blocks; ++b) {
      AddResnetBlock(up[i], absl::StrCat(level, ".block.", b), block_in, block_out);
      block_in = block_out;
    }
    if (Contains(d.attn_resolutions, curr_res)) {
      for (int64_t b = 0; b <= d.num_res_blocks; ++b) AddAttnBlock(up[i], absl::StrCat(level, ".attn.", b), block_in);
    }
    if (i != 0) {
      AddConv(up[i], level + ".upsample.conv", block_in, block_in, 3);
      curr_res *= 2;
    }
  }
  for (auto& level : up) out.insert(out.end(), level.begin(), level.end());
  AddNorm(out, "decoder.norm_out", block_in);
  AddConv(out, "decoder.conv_out", block_in, d.out_ch, 3);

  out.emplace_back("quantize.embedding.weight", Shape({config.n_embed, config.embed_dim}));
  AddConv(out, "quant_conv", d.z_channels, config.embed_dim, 1);
  AddConv(out, "post_quant_conv", config.embed_dim, d.z_channels, 1);
  return out;
}

}  // namespace clipserve::vqgan
