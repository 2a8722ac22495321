#include "server/models/clip/clip_model.h"

#include <algorithm>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/container/modulelist.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/models/attention.h"
#include "server/models/linear.h"
#include "server/models/packed_linear.h"
#include "server/models/tensor_io.h"

namespace clipserve::clip {
namespace {

constexpr double kQuickGeluScale = 1.702;

// One pre-LayerNorm transformer block: x += attn(ln1(x)); x += fc2(act(fc1(ln2(x)))). Activations are kept
// as 2-D [B·L, D] so every projection is a single GEMM with the bias fused (addmm).
class Block : public torch::nn::Module {
 public:
  explicit Block(const TowerConfig& c)
      : d_(c.hidden_size), heads_(c.num_attention_heads), act_(c.hidden_act), eps_(c.layer_norm_eps) {
    const int64_t d = c.hidden_size, inner = c.intermediate_size;
    ln1_w = register_parameter("ln1_w", at::ones({d}));
    ln1_b = register_parameter("ln1_b", at::zeros({d}));
    qkv_w = register_parameter("qkv_w", at::zeros({3 * d, d}));
    qkv_b = register_parameter("qkv_b", at::zeros({3 * d}));
    out_w = register_parameter("out_w", at::zeros({d, d}));
    out_b = register_parameter("out_b", at::zeros({d}));
    ln2_w = register_parameter("ln2_w", at::ones({d}));
    ln2_b = register_parameter("ln2_b", at::zeros({d}));
    fc1_w = register_parameter("fc1_w", at::zeros({inner, d}));
    fc1_b = register_parameter("fc1_b", at::zeros({inner}));
    fc2_w = register_parameter("fc2_w", at::zeros({d, inner}));
    fc2_b = register_parameter("fc2_b", at::zeros({d}));
  }

  // x: [B·L, D] → [B·L, D].
  at::Tensor Forward(const at::Tensor& x, int64_t batch, int64_t len, bool causal) const {
    const bool inplace = !at::GradMode::is_enabled();
    at::Tensor h = at::layer_norm(x, {d_}, ln1_w, ln1_b, eps_);
    at::Tensor attn = SelfAttention(Linear(h, qkv_w, qkv_p_.get(), qkv_b), batch, len, heads_, causal);
    at::Tensor y = Linear(attn, out_w, out_p_.get(), out_b);
    at::Tensor r = inplace ? y.add_(x) : y + x;
    h = at::layer_norm(r, {d_}, ln2_w, ln2_b, eps_);
    if (act_ == Activation::kQuickGelu) {
      // quick_gelu(h) = h·sigmoid(1.702h) = silu(1.702h) / 1.702: the two scalings ride on the GEMMs' alpha,
      // leaving silu, which the packed kernel applies before its store (one element-wise pass elsewhere).
      h = Linear(h, fc1_w, fc1_p_.get(), fc1_b, kQuickGeluScale, kQuickGeluScale, Epilogue::kSilu);
      y = Linear(h, fc2_w, fc2_p_.get(), fc2_b, 1.0 / kQuickGeluScale);
    } else {
      h = at::gelu(Linear(h, fc1_w, fc1_p_.get(), fc1_b));
      y = Linear(h, fc2_w, fc2_p_.get(), fc2_b);
    }
    return inplace ? y.add_(r) : y + r;
  }

  void AppendNamed(const std::string& prefix, std::vector<std::pair<std::string, at::Tensor>>* out) const {
    const int64_t d = d_;
    auto add = [&](const std::string& name, const at::Tensor& t) { out->emplace_back(prefix + name, t); };
    add("self_attn.q_proj.weight", qkv_w.narrow(0, 0, d));
    add("self_attn.q_proj.bias", qkv_b.narrow(0, 0, d));
    add("self_attn.k_proj.weight", qkv_w.narrow(0, d, d));
    add("self_attn.k_proj.bias", qkv_b.narrow(0, d, d));
    add("self_attn.v_proj.weight", qkv_w.narrow(0, 2 * d, d));
    add("self_attn.v_proj.bias", qkv_b.narrow(0, 2 * d, d));
    add("self_attn.out_proj.weight", out_w);
    add("self_attn.out_proj.bias", out_b);
    add("layer_norm1.weight", ln1_w);
    add("layer_norm1.bias", ln1_b);
    add("mlp.fc1.weight", fc1_w);
    add("mlp.fc1.bias", fc1_b);
    add("mlp.fc2.weight", fc2_w);
    add("mlp.fc2.bias", fc2_b);
    add("layer_norm2.weight", ln2_w);
    add("layer_norm2.bias", ln2_b);
  }

  // transformers' CLIP init (std per projection), biases zero, LayerNorms identity.
  void InitRandom(int num_layers, at::Generator& gen) {
    at::NoGradGuard no_grad;
    const double d = static_cast<double>(d_);
    const double in_std = std::pow(d, -0.5) * std::pow(2.0 * num_layers, -0.5);
    qkv_w.normal_(0.0, in_std, gen);
    out_w.normal_(0.0, std::pow(d, -0.5), gen);
    fc1_w.normal_(0.0, std::pow(2.0 * d, -0.5), gen);
    fc2_w.normal_(0.0, in_std, gen);
  }

  // Packed copies of the four projections for CPU inference (packed_linear.h); empty unless Prepack() ran.
  void Prepack() {
    qkv_p_ = std::make_unique<PackedWeight>(qkv_w);
    out_p_ = std::make_unique<PackedWeight>(out_w);
    fc1_p_ = std::make_unique<PackedWeight>(fc1_w);
    fc2_p_ = std::make_unique<PackedWeight>(fc2_w);
  }
  void DropPacked() { qkv_p_.reset(), out_p_.reset(), fc1_p_.reset(), fc2_p_.reset(); }

  at::Tensor ln1_w, ln1_b, qkv_w, qkv_b, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;

 private:
  std::unique_ptr<PackedWeight> qkv_p_, out_p_, fc1_p_, fc2_p_;
  int64_t d_;
  int64_t heads_;
  Activation act_;
  double eps_;
};

}  // namespace

// A stack of Blocks.
class ClipModel::Tower : public torch::nn::Module {
 public:
  explicit Tower(const TowerConfig& c) {
    for (int i = 0; i < c.num_hidden_layers; ++i) {
      blocks_.push_back(register_module(absl::StrCat("layer", i), std::make_shared<Block>(c)));
    }
  }
  at::Tensor Forward(at::Tensor x, int64_t batch, int64_t len, bool causal) const {
    for (const auto& b : blocks_) x = b->Forward(x, batch, len, causal);
    return x;
  }
  void AppendNamed(const std::string& prefix, std::vector<std::pair<std::string, at::Tensor>>* out) const {
    for (size_t i = 0; i < blocks_.size(); ++i) blocks_[i]->AppendNamed(absl::StrCat(prefix, i, "."), out);
  }
  void InitRandom(at::Generator& gen) {
    for (auto& b : blocks_) b->InitRandom(static_cast<int>(blocks_.size()), gen);
  }
  void Prepack() {
    for (auto& b : blocks_) b->Prepack();
  }
  void DropPacked() {
    for (auto& b : blocks_) b->DropPacked();
  }

 private:
  std::vector<std::shared_ptr<Block>> blocks_;
};

ClipModel::ClipModel(const ClipConfig& config) : config_(config) {
  const auto& t = config.text;
  const auto& v = config.vision;
  const int64_t grid = config.num_patches_per_side();
  text_ = register_module("text", std::make_shared<Tower>(t));
  vision_ = register_module("vision", std::make_shared<Tower>(v));
  token_embedding_ = register_parameter("token_embedding", at::zeros({t.vocab_size, t.hidden_size}));
  text_position_embedding_ =
      register_parameter("text_position_embedding", at::zeros({t.max_position_embeddings, t.hidden_size}));
  text_final_ln_w_ = register_parameter("text_final_ln_w", at::ones({t.hidden_size}));
  text_final_ln_b_ = register_parameter("text_final_ln_b", at::zeros({t.hidden_size}));
  class_embedding_ = register_parameter("class_embedding", at::zeros({v.hidden_size}));
  patch_embedding_ =
      register_parameter("patch_embedding", at::zeros({v.hidden_size, v.num_channels, v.patch_size, v.patch_size}));
  vision_position_embedding_ =
      register_parameter("vision_position_embedding", at::zeros({grid * grid + 1, v.hidden_size}));
  pre_ln_w_ = register_parameter("pre_ln_w", at::ones({v.hidden_size}));
  pre_ln_b_ = register_parameter("pre_ln_b", at::zeros({v.hidden_size}));
  post_ln_w_ = register_parameter("post_ln_w", at::ones({v.hidden_size}));
  post_ln_b_ = register_parameter("post_ln_b", at::zeros({v.hidden_size}));
  text_projection_ = register_parameter("text_projection", at::zeros({config.projection_dim, t.hidden_size}));
  visual_projection_ = register_parameter("visual_projection", at::zeros({config.projection_dim, v.hidden_size}));
  logit_scale_ = register_parameter("logit_scale", at::full({}, config.logit_scale_init_value));
}

std::shared_ptr<ClipModel> ClipModel::CreateRandom(const ClipConfig& config, uint64_t seed) {
  std::shared_ptr<ClipModel> m(new ClipModel(config));
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::NoGradGuard no_grad;
  const double dt = config.text.hidden_size, dv = config.vision.hidden_size;
  m->token_embedding_.normal_(0.0, 0.02, gen);
  m->text_position_embedding_.normal_(0.0, 0.01, gen);
  m->class_embedding_.normal_(0.0, std::pow(dv, -0.5), gen);
  m->patch_embedding_.normal_(0.0, 0.02, gen);
  m->vision_position_embedding_.normal_(0.0, 0.02, gen);
  m->text_projection_.normal_(0.0, std::pow(dt, -0.5), gen);
  m->visual_projection_.normal_(0.0, std::pow(dv, -0.5), gen);
  m->text_->InitRandom(gen);
  m->vision_->InitRandom(gen);
  return m;
}

absl::StatusOr<std::shared_ptr<ClipModel>> ClipModel::Load(const ClipModelOptions& options) {
  CLIPSERVE_ASSIGN_OR_RETURN(ClipConfig config, ClipConfig::Load(options.dir / "config.json"));
  const auto weights_path = options.dir / "model.safetensors";
  CLIPSERVE_ASSIGN_OR_RETURN(auto weights, LoadTensors(weights_path));
  std::shared_ptr<ClipModel> model(new ClipModel(config));
  CLIPSERVE_RETURN_IF_ERROR(model->LoadWeights(weights, weights_path.string()));
  CLIPSERVE_RETURN_IF_ERROR(CatchTorchErrors(absl::StrCat("moving ", options.dir.string(), " to ",
                                                          options.device.str(), "/", c10::toString(options.dtype)),
                                             [&] {
                                               model->ConvertTo(options.device, options.dtype);
                                               if (options.prepack_cpu_weights) model->PrepackForInference();
                                               return absl::OkStatus();
                                             }));
  return model;
}

std::vector<std::pair<std::string, at::Tensor>> ClipModel::NamedWeights() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("text_model.embeddings.token_embedding.weight", token_embedding_);
  out.emplace_back("text_model.embeddings.position_embedding.weight", text_position_embedding_);
  text_->AppendNamed("text_model.encoder.layers.", &out);
  out.emplace_back("text_model.final_layer_norm.weight", text_final_ln_w_);
  out.emplace_back("text_model.final_layer_norm.bias", text_final_ln_b_);
  out.emplace_back("vision_model.embeddings.class_embedding", class_embedding_);
  out.emplace_back("vision_model.embeddings.patch_embedding.weight", patch_embedding_);
  out.emplace_back("vision_model.embeddings.position_embedding.weight", vision_position_embedding_);
  out.emplace_back("vision_model.pre_layrnorm.weight", pre_ln_w_);
  out.emplace_back("vision_model.pre_layrnorm.bias", pre_ln_b_);
  vision_->AppendNamed("vision_model.encoder.layers.", &out);
  out.emplace_back("vision_model.post_layernorm.weight", post_ln_w_);
  out.emplace_back("vision_model.post_layernorm.bias", post_ln_b_);
  out.emplace_back("text_projection.weight", text_projection_);
  out.emplace_back("visual_projection.weight", visual_projection_);
  out.emplace_back("logit_scale", logit_scale_);
  return out;
}

absl::Status ClipModel::LoadWeights(const std::map<std::string, at::Tensor>& weights, const std::string& origin) {
  const auto named = NamedWeights();
  std::map<std::string, at::Tensor> expected(named.begin(), named.end());
  std::vector<std::string> unknown, missing, wrong_shape;
  for (const auto& [name, tensor] : weights) {
    if (absl::EndsWith(name, ".position_ids")) continue;  // buffers of older exports
    auto it = expected.find(name);
    if (it == expected.end()) {
      unknown.push_back(name);
      continue;
    }
    const bool scalar_ok = name == "logit_scale" && tensor.numel() == 1;
    if (!scalar_ok && tensor.sizes() != it->second.sizes()) {
      wrong_shape.push_back(absl::StrCat(name, " (expected ", c10::str(it->second.sizes()), ", found ",
                                         c10::str(tensor.sizes()), ")"));
    }
    if (!at::isFloatingType(tensor.scalar_type())) {
      wrong_shape.push_back(absl::StrCat(name, " (dtype ", c10::toString(tensor.scalar_type()), ", expected a float)"));
    }
  }
  for (const auto& [name, unused] : expected) {
    if (weights.find(name) == weights.end()) missing.push_back(name);
  }
  auto list = [](const std::vector<std::string>& names) {
    constexpr size_t kShown = 8;
    std::string s = absl::StrJoin(names.begin(), names.begin() + std::min(names.size(), kShown), ", ");
    if (names.size() > kShown) absl::StrAppend(&s, ", ... (", names.size(), " in all)");
    return s;
  };
  std::vector<std::string> problems;
  if (!missing.empty()) problems.push_back(absl::StrCat("missing weights: ", list(missing)));
  if (!unknown.empty()) problems.push_back(absl::StrCat("unknown weights: ", list(unknown)));
  if (!wrong_shape.empty()) problems.push_back(absl::StrCat("wrong shape or dtype: ", list(wrong_shape)));
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": does not match the CLIP config: ", absl::StrJoin(problems, "; ")));
  }
  DropPacked();
  return CatchTorchErrors(origin, [&] {
    at::NoGradGuard no_grad;
    for (auto& [name, dst] : expected) dst.copy_(weights.at(name).reshape(dst.sizes()));
    return absl::OkStatus();
  });
}

absl::Status ClipModel::Save(const std::filesystem::path& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat(dir.string(), ": cannot create: ", ec.message()));
  CLIPSERVE_RETURN_IF_ERROR(SaveTensors(dir / "model.safetensors", NamedWeights(), {{"format", "pt"}}));
  return WriteFileAtomically(dir / "config.json", config_.ToJson().dump(2) + "\n");
}

bool ClipModel::PrepackForInference() {
  DropPacked();
  if (!device_.is_cpu() || dtype_ != at::kFloat || !PackedGemmAvailable()) return false;
  text_->Prepack();
  vision_->Prepack();
  patch_packed_ = std::make_unique<PackedWeight>(patch_embedding_.view({patch_embedding_.size(0), -1}));
  return true;
}

void ClipModel::DropPacked() {
  text_->DropPacked();
  vision_->DropPacked();
  patch_packed_.reset();
}

void ClipModel::ConvertTo(at::Device device, at::ScalarType dtype) {
  DropPacked();
  at::NoGradGuard no_grad;
  for (auto& p : parameters()) p.set_data(p.to(device, dtype));
  device_ = device;
  dtype_ = dtype;
}

at::Tensor ClipModel::EncodeText(const at::Tensor& ids) const {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, "EncodeText expects int64 ids [B, L], got ",
              ids.scalar_type(), ids.sizes());
  const auto& c = config_.text;
  TORCH_CHECK(ids.size(1) >= 1 && ids.size(1) <= c.max_position_embeddings, "EncodeText: sequence length ",
              ids.size(1), " is outside [1, ", c.max_position_embeddings, "]");
  const int64_t batch = ids.size(0), d = c.hidden_size;
  at::Tensor tokens = ids.to(device_);
  // Pooling position: argmax of the ids for legacy configs (EOT has the highest id), else the first EOS.
  at::Tensor pos = config_.legacy_eos_pooling() ? tokens.argmax(-1) : tokens.eq(c.eos_token_id).to(at::kInt).argmax(-1);
  // Causal attention: the state at `pos` depends on tokens [0, pos] only, so later positions are not computed.
  const int64_t len = batch == 0 ? 1 : pos.max().item<int64_t>() + 1;
  tokens = tokens.narrow(1, 0, len);
  at::Tensor x = token_embedding_.index_select(0, tokens.reshape({-1})).view({batch, len, d});
  x = (x + text_position_embedding_.narrow(0, 0, len)).view({batch * len, d});
  x = text_->Forward(x, batch, len, /*causal=*/true);
  at::Tensor pooled = x.view({batch, len, d}).index({at::arange(batch, pos.options().dtype(at::kLong)), pos.to(at::kLong)});
  pooled = at::layer_norm(pooled, {d}, text_final_ln_w_, text_final_ln_b_, c.layer_norm_eps);
  return Linear(pooled, text_projection_, at::Tensor()).to(at::kFloat);
}

at::Tensor ClipModel::EncodeImage(const at::Tensor& pixels) const {
  const auto& c = config_.vision;
  TORCH_CHECK(pixels.dim() == 4 && pixels.size(1) == c.num_channels && pixels.size(2) == c.image_size &&
                  pixels.size(3) == c.image_size,
              "EncodeImage expects pixels [B, ", c.num_channels, ", ", c.image_size, ", ", c.image_size, "], got ",
              pixels.sizes());
  const int64_t batch = pixels.size(0), d = c.hidden_size, p = c.patch_size, g = config_.num_patches_per_side();
  const int64_t tokens = g * g + 1;
  at::Tensor x = pixels.to(device_, dtype_);
  // The patch convolution has stride = kernel: it is one GEMM over non-overlapping patches.
  x = x.view({batch, c.num_channels, g, p, g, p}).permute({0, 2, 4, 1, 3, 5}).reshape({batch * g * g, -1});
  x = Linear(x, patch_embedding_.view({d, -1}), patch_packed_.get(), at::Tensor()).view({batch, g * g, d});
  x = at::cat({class_embedding_.view({1, 1, d}).expand({batch, 1, d}), x}, 1) + vision_position_embedding_;
  x = at::layer_norm(x.view({batch * tokens, d}), {d}, pre_ln_w_, pre_ln_b_, c.layer_norm_eps);
  x = vision_->Forward(x, batch, tokens, /*causal=*/false);
  at::Tensor pooled = x.view({batch, tokens, d}).select(1, 0);
  pooled = at::layer_norm(pooled, {d}, post_ln_w_, post_ln_b_, c.layer_norm_eps);
  return Linear(pooled, visual_projection_, at::Tensor()).to(at::kFloat);
}

at::Tensor ClipModel::LogitsPerImage(const at::Tensor& image_features, const at::Tensor& text_features) const {
  at::Tensor img = image_features / image_features.norm(2, -1, /*keepdim=*/true);
  at::Tensor txt = text_features / text_features.norm(2, -1, /*keepdim=*/true);
  return logit_scale_.to(at::kFloat).exp() * at::mm(img, txt.t());
}

}  // namespace clipserve::clip
