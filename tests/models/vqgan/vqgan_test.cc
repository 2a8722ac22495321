// Parity of clipserve::vqgan against taming-transformers (fixtures made with the reference code), plus the
// loader's rejections and the Status boundary. Every shape and option comes from the fixture set.
#include "server/models/vqgan/vqgan.h"

#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/models/tensor_io.h"
#include "server/models/vqgan/config.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::vqgan {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::filesystem::path ModelDir() { return FixtureDir() / "vqgan"; }
std::filesystem::path ExpectedPath() { return FixtureDir() / "vqgan_expected.safetensors"; }

double RelativeError(const at::Tensor& ours, const at::Tensor& ref, const char* name) {
  const at::Tensor o = ours.detach().to(at::kDouble).cpu();
  const at::Tensor r = ref.to(at::kDouble);
  EXPECT_EQ(o.sizes(), r.sizes()) << name;
  if (o.sizes() != r.sizes()) return 1e9;
  const double err = (o - r).norm().item<double>() / r.norm().item<double>();
  std::printf("[ parity ] %-24s relative error %.3e\n", name, err);
  ::testing::Test::RecordProperty(std::string("rel_err_") + name, std::to_string(err));
  return err;
}

// A writable copy of the fixture model (tensors and config.json) that tests modify before saving.
struct ModelCopy {
  std::map<std::string, at::Tensor> tensors;
  nlohmann::json config;

  static ModelCopy FromFixture() {
    ModelCopy copy;
    auto tensors = LoadTensors(ModelDir() / "model.safetensors");
    EXPECT_THAT(tensors, IsOk());
    for (auto& [name, t] : *tensors) copy.tensors[name] = t.clone();
    auto config = ReadJsonFile(ModelDir() / "config.json");
    EXPECT_THAT(config, IsOk());
    copy.config = *config;
    return copy;
  }

  std::filesystem::path Write(const std::string& name) const {
    const auto dir = ::clipserve::testing::ScratchDir(name);
    std::ofstream(dir / "config.json") << config.dump(2);
    std::vector<std::pair<std::string, at::Tensor>> list(tensors.begin(), tensors.end());
    EXPECT_THAT(SaveTensors(dir / "model.safetensors", list), IsOk());
    return dir;
  }
};

absl::StatusOr<std::unique_ptr<VqganModel>> LoadFrom(const std::filesystem::path& dir,
                                                     at::ScalarType dtype = at::kFloat) {
  VqganModel::Options options;
  options.model_dir = dir;
  options.dtype = dtype;
  return VqganModel::Load(options);
}

// Load() whose error, if any, is printed: the messages are part of the interface.
absl::StatusOr<std::unique_ptr<VqganModel>> LoadAndReport(const std::filesystem::path& dir) {
  auto model = LoadFrom(dir);
  if (!model.ok()) std::printf("[ message ] %s\n", model.status().ToString().c_str());
  return model;
}

class VqganParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(model_, LoadFrom(ModelDir()));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(expected_, LoadTensors(ExpectedPath()));
  }

  const at::Tensor& Expected(const std::string& name) const { return expected_.at(name); }

  std::unique_ptr<VqganModel> model_;
  std::map<std::string, at::Tensor> expected_;
};

TEST_F(VqganParityTest, Encode_MatchesTaming) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(EncodeResult encoded,
                                 model_->Encode(Expected("encode_input"), GradMode::kInferenceMode));
  EXPECT_LE(RelativeError(encoded.h, Expected("encode_h"), "encode_h"), 1e-4);
  EXPECT_LE(RelativeError(encoded.z_q, Expected("encode_zq"), "encode_zq"), 1e-4);
  ASSERT_EQ(encoded.indices.scalar_type(), at::kLong);
  ASSERT_EQ(encoded.indices.sizes(), Expected("encode_indices").sizes());
  const int64_t mismatches = encoded.indices.ne(Expected("encode_indices")).sum().item<int64_t>();
  std::printf("[ parity ] %-24s %lld of %lld differ\n", "encode_indices", static_cast<long long>(mismatches),
              static_cast<long long>(encoded.indices.numel()));
  EXPECT_EQ(mismatches, 0);

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor reconstruction, model_->Decode(encoded.z_q, GradMode::kInferenceMode));
  EXPECT_LE(RelativeError(reconstruction, Expected("encode_reconstruction"), "encode_reconstruction"), 1e-4);
}

TEST_F(VqganParityTest, Reconstruct_EqualsDecodeOfEncode) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor reconstruction,
                                 model_->Reconstruct(Expected("encode_input"), GradMode::kInferenceMode));
  EXPECT_LE(RelativeError(reconstruction, Expected("encode_reconstruction"), "reconstruct"), 1e-4);
}

TEST_F(VqganParityTest, DecodeCodes_MatchesTaming) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor image, model_->DecodeCodes(Expected("codes"), GradMode::kInferenceMode));
  EXPECT_TRUE(image.is_inference());
  EXPECT_LE(RelativeError(image, Expected("decode_codes_output"), "decode_codes_output"), 1e-4);
}

TEST_F(VqganParityTest, Decode_GradientMatchesTaming) {
  const at::Tensor z = Expected("grad_z").clone().requires_grad_(true);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor image, model_->Decode(z));
  EXPECT_LE(RelativeError(image, Expected("grad_output"), "grad_output"), 1e-4);
  ASSERT_TRUE(image.requires_grad());
  const at::Tensor loss = (image * Expected("grad_weights")).sum();
  const auto grads = torch::autograd::grad({loss}, {z});
  EXPECT_LE(RelativeError(grads[0], Expected("grad_dz"), "grad_dz"), 1e-3);
}

TEST_F(VqganParityTest, InferenceModeAndAutogradAgree) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor a, model_->DecodeCodes(Expected("codes"), GradMode::kInferenceMode));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor b, model_->DecodeCodes(Expected("codes"), GradMode::kAutograd));
  EXPECT_FALSE(b.is_inference());
  EXPECT_TRUE(at::allclose(a, b.detach(), 1e-6, 1e-6));
}

TEST_F(VqganParityTest, Quantize_StraightThroughPassesGradientToLatent) {
  const at::Tensor z = Expected("encode_h").clone().requires_grad_(true);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Quantized st, model_->Quantize(z, QuantizeGradient::kStraightThrough));
  EXPECT_TRUE(at::equal(st.indices, Expected("encode_indices")));
  EXPECT_LE(RelativeError(st.z_q, Expected("encode_zq"), "quantize_st_zq"), 1e-4);
  const at::Tensor weights = at::randn(z.sizes(), at::TensorOptions().dtype(at::kFloat));
  const auto grads = torch::autograd::grad({(st.z_q * weights).sum()}, {z});
  EXPECT_TRUE(at::allclose(grads[0], weights));

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(Quantized plain, model_->Quantize(z, QuantizeGradient::kCodebook));
  EXPECT_TRUE(at::equal(plain.indices, st.indices));
  // Exact codebook rows; the gradient goes to the codebook, not to z.
  const at::Tensor rows = model_->codebook().index({plain.indices.flatten()});
  EXPECT_TRUE(at::equal(plain.z_q.permute({0, 2, 3, 1}).reshape({-1, model_->config().embed_dim}), rows));
  const auto codebook_grad =
      torch::autograd::grad({plain.z_q.sum()}, {model_->codebook()}, /*grad_outputs=*/{}, /*retain_graph=*/true,
                            /*create_graph=*/false, /*allow_unused=*/true);
  EXPECT_TRUE(codebook_grad[0].defined());
  const auto z_grad = torch::autograd::grad({plain.z_q.sum()}, {z}, {}, false, false, /*allow_unused=*/true);
  EXPECT_FALSE(z_grad[0].defined());
}

TEST_F(VqganParityTest, Accessors_FollowConfig) {
  const VqganConfig& config = model_->config();
  EXPECT_EQ(model_->downsample_factor(), int64_t{1} << (config.ddconfig.ch_mult.size() - 1));
  EXPECT_EQ(model_->codebook().sizes(), (std::vector<int64_t>{config.n_embed, config.embed_dim}));
  EXPECT_EQ(Expected("encode_input").size(2) / model_->downsample_factor(), Expected("encode_indices").size(1));
}

TEST_F(VqganParityTest, RejectsBadInputs) {
  const at::Tensor x = Expected("encode_input");
  const int64_t f = model_->downsample_factor();
  EXPECT_THAT(model_->Encode(x.narrow(1, 0, x.size(1) - 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("image")));
  EXPECT_THAT(model_->Encode(x[0]), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("image")));
  if (f > 1) {
    EXPECT_THAT(model_->Encode(x.narrow(2, 0, x.size(2) - 1)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("multiples")));
  }
  const at::Tensor z = Expected("encode_zq");
  EXPECT_THAT(model_->Decode(at::cat({z, z}, 1)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("latent")));
  EXPECT_THAT(model_->Decode(Expected("codes")), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("floating")));
  const at::Tensor codes = Expected("codes").clone();
  codes.view(-1)[0] = model_->config().n_embed;
  EXPECT_THAT(model_->DecodeCodes(codes), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("codes")));
  codes.view(-1)[0] = -1;
  EXPECT_THAT(model_->DecodeCodes(codes), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("codes")));
  EXPECT_THAT(model_->DecodeCodes(z), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("integer")));
}

TEST(VqganConfigTest, ParameterShapes_MatchFixtureKeys) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(VqganConfig config, VqganConfig::FromFile(ModelDir() / "config.json"));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto tensors, LoadTensors(ModelDir() / "model.safetensors"));
  std::map<std::string, std::vector<int64_t>> fixture;
  for (const auto& [name, t] : tensors) {
    if (name.rfind("loss.", 0) != 0) fixture[name] = t.sizes().vec();
  }
  const auto shapes = ParameterShapes(config);
  const std::map<std::string, std::vector<int64_t>> ours(shapes.begin(), shapes.end());
  EXPECT_EQ(ours, fixture);
}

// Architectures unlike the fixture's: several attention levels, an odd resolution (the encoder floors while
// halving, the decoder derives its lowest resolution by integer division), one level only.
std::vector<VqganConfig> OtherConfigs() {
  std::vector<VqganConfig> configs;
  VqganConfig a;
  a.embed_dim = 4;
  a.n_embed = 10;
  a.ddconfig.ch = 32;
  a.ddconfig.ch_mult = {1, 2, 2, 1};
  a.ddconfig.num_res_blocks = 2;
  a.ddconfig.attn_resolutions = {33, 4};
  a.ddconfig.resolution = 33;
  a.ddconfig.z_channels = 6;
  a.ddconfig.in_channels = 1;
  a.ddconfig.out_ch = 2;
  configs.push_back(a);
  VqganConfig b = a;
  b.ddconfig.ch_mult = {2};
  b.ddconfig.num_res_blocks = 1;
  b.ddconfig.attn_resolutions = {};
  configs.push_back(b);
  return configs;
}

TEST(VqganConfigTest, ModuleParameterNamesAreTamingKeys) {
  for (const VqganConfig& config : OtherConfigs()) {
    ASSERT_THAT(config.Validate(), IsOk());
    VqModel module(config);
    std::vector<std::pair<std::string, std::vector<int64_t>>> actual;
    for (const auto& item : module.named_parameters()) actual.emplace_back(item.key(), item.value().sizes().vec());
    EXPECT_EQ(actual, ParameterShapes(config));
    EXPECT_TRUE(module.named_buffers().is_empty());
  }
}

TEST(VqganConfigTest, OtherArchitecturesRun) {
  for (const VqganConfig& config : OtherConfigs()) {
    VqganModel::Options options;
    options.config = config;
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto model, VqganModel::Create(options));
    const int64_t f = model->downsample_factor();
    const at::Tensor x = at::rand({2, config.ddconfig.in_channels, 2 * f, 3 * f}) * 2 - 1;
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(EncodeResult encoded, model->Encode(x, GradMode::kInferenceMode));
    EXPECT_EQ(encoded.indices.sizes(), (std::vector<int64_t>{2, 2, 3}));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor image, model->Decode(encoded.z_q, GradMode::kInferenceMode));
    EXPECT_EQ(image.sizes(), (std::vector<int64_t>{2, config.ddconfig.out_ch, 2 * f, 3 * f}));
  }
}

TEST(VqganConfigTest, MissingOrIllTypedFieldIsNamed) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(nlohmann::json json, ReadJsonFile(ModelDir() / "config.json"));
  ASSERT_THAT(VqganConfig::FromJson(json), IsOk());
  for (const char* field : {"embed_dim", "n_embed", "ddconfig"}) {
    nlohmann::json copy = json;
    copy.erase(field);
    EXPECT_THAT(VqganConfig::FromJson(copy),
                StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(field), HasSubstr("missing"))));
  }
  for (const char* field : {"ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "resolution",
                            "in_channels", "out_ch", "double_z", "dropout"}) {
    nlohmann::json copy = json;
    copy["ddconfig"].erase(field);
    EXPECT_THAT(VqganConfig::FromJson(copy),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(std::string("ddconfig.") + field), HasSubstr("missing"))));
    copy["ddconfig"][field] = "x";
    EXPECT_THAT(VqganConfig::FromJson(copy),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(std::string("ddconfig.") + field)));
  }
  nlohmann::json copy = json;
  copy["ddconfig"]["ch_mult"] = {1, 2.5};
  EXPECT_THAT(VqganConfig::FromJson(copy),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ddconfig.ch_mult[1]")));
}

TEST(VqganConfigTest, ValidateRejectsUnbuildableArchitectures) {
  VqganConfig config;
  ASSERT_THAT(config.Validate(), IsOk());
  auto check = [](VqganConfig c, const char* field) {
    EXPECT_THAT(c.Validate(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field))) << field;
  };
  VqganConfig c = config;
  c.ddconfig.ch = 48;
  check(c, "ddconfig.ch");
  c = config;
  c.ddconfig.ch_mult = {};
  check(c, "ddconfig.ch_mult");
  c = config;
  c.ddconfig.ch_mult[2] = 0;
  check(c, "ddconfig.ch_mult[2]");
  c = config;
  c.n_embed = 0;
  check(c, "n_embed");
  c = config;
  c.embed_dim = -1;
  check(c, "embed_dim");
  c = config;
  c.ddconfig.num_res_blocks = 0;
  check(c, "num_res_blocks");
  c = config;
  c.ddconfig.double_z = true;
  check(c, "double_z");
  c = config;
  c.ddconfig.dropout = 1.0;
  check(c, "dropout");
  EXPECT_EQ(config.downsample_factor(), 16);
}

TEST(VqganLoadTest, SkipsLossKeysAndRoundTripsThroughSave) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto model, LoadFrom(ModelDir()));
  const auto dir = ::clipserve::testing::ScratchFile("saved");
  ASSERT_THAT(model->Save(dir), IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto saved, LoadTensors(dir / "model.safetensors"));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto original, LoadTensors(ModelDir() / "model.safetensors"));
  size_t compared = 0;
  for (const auto& [name, t] : original) {
    if (name.rfind("loss.", 0) == 0) {
      EXPECT_EQ(saved.count(name), 0u) << name;
      continue;
    }
    ASSERT_EQ(saved.count(name), 1u) << name;
    EXPECT_TRUE(at::equal(saved.at(name), t)) << name;
    ++compared;
  }
  EXPECT_EQ(compared, saved.size());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto reloaded, LoadFrom(dir));
  EXPECT_EQ(reloaded->config().ToJson(), model->config().ToJson());
}

TEST(VqganLoadTest, CreateSaveLoadReproducesOutputs) {
  VqganModel::Options options;
  options.config = OtherConfigs()[0];
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto model, VqganModel::Create(options));
  const auto dir = ::clipserve::testing::ScratchFile("created");
  ASSERT_THAT(model->Save(dir), IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto loaded, LoadFrom(dir));
  const at::Tensor codes = at::randint(options.config.n_embed, {1, 2, 2}, at::TensorOptions().dtype(at::kLong));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor a, model->DecodeCodes(codes, GradMode::kInferenceMode));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor b, loaded->DecodeCodes(codes, GradMode::kInferenceMode));
  EXPECT_TRUE(at::equal(a, b));
}

TEST(VqganLoadTest, RejectsWrongCodebookSize) {
  CLIPSERVE_REQUIRE_FIXTURES();
  ModelCopy copy = ModelCopy::FromFixture();
  copy.config["n_embed"] = copy.config["n_embed"].get<int64_t>() + 1;
  EXPECT_THAT(LoadAndReport(copy.Write("n_embed_config")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("wrong shapes"), HasSubstr("quantize.embedding.weight"))));

  copy = ModelCopy::FromFixture();
  at::Tensor& codebook = copy.tensors.at("quantize.embedding.weight");
  codebook = codebook.narrow(0, 0, codebook.size(0) - 1).clone();
  EXPECT_THAT(LoadAndReport(copy.Write("n_embed_weights")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("quantize.embedding.weight")));
}

TEST(VqganLoadTest, RejectsMissingDecoderBlock) {
  CLIPSERVE_REQUIRE_FIXTURES();
  ModelCopy copy = ModelCopy::FromFixture();
  const std::string prefix = "decoder.up.0.block.1.";
  std::vector<std::string> removed;
  for (auto it = copy.tensors.begin(); it != copy.tensors.end();) {
    if (it->first.rfind(prefix, 0) == 0) {
      removed.push_back(it->first);
      it = copy.tensors.erase(it);
    } else {
      ++it;
    }
  }
  ASSERT_FALSE(removed.empty());
  EXPECT_THAT(LoadAndReport(copy.Write("missing_block")),
              StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("missing keys"), HasSubstr(removed[0]))));
}

TEST(VqganLoadTest, RejectsUnknownKeyButNotLossKeys) {
  CLIPSERVE_REQUIRE_FIXTURES();
  ModelCopy copy = ModelCopy::FromFixture();
  copy.tensors["loss.perceptual_loss.extra"] = at::zeros({2});
  ASSERT_THAT(LoadFrom(copy.Write("loss_key")), IsOk());
  copy.tensors["decoder.up.0.block.7.conv1.weight"] = at::zeros({2});
  EXPECT_THAT(LoadAndReport(copy.Write("unknown_key")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unknown keys"), HasSubstr("decoder.up.0.block.7.conv1.weight"))));
}

TEST(VqganLoadTest, RejectsIntegerWeights) {
  CLIPSERVE_REQUIRE_FIXTURES();
  ModelCopy copy = ModelCopy::FromFixture();
  at::Tensor& bias = copy.tensors.at("quant_conv.bias");
  bias = bias.to(at::kLong);
  EXPECT_THAT(LoadAndReport(copy.Write("int_weights")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("quant_conv.bias")));
}

TEST(VqganLoadTest, RejectsConfigWithMissingField) {
  CLIPSERVE_REQUIRE_FIXTURES();
  ModelCopy copy = ModelCopy::FromFixture();
  copy.config["ddconfig"].erase("attn_resolutions");
  EXPECT_THAT(LoadAndReport(copy.Write("config_missing_field")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("config.json"), HasSubstr("ddconfig.attn_resolutions"))));
}

TEST(VqganLoadTest, RejectsTruncatedSafetensors) {
  CLIPSERVE_REQUIRE_FIXTURES();
  const auto dir = ModelCopy::FromFixture().Write("truncated");
  const auto path = dir / "model.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  EXPECT_THAT(LoadAndReport(dir), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model.safetensors")));
}

TEST(VqganLoadTest, MissingDirectoryIsNotFound) {
  EXPECT_THAT(LoadFrom("/nonexistent/vqgan"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("config.json")));
}

TEST(VqganLoadTest, RejectsUnsupportedDType) {
  VqganModel::Options options;
  options.config = OtherConfigs()[1];
  options.dtype = at::kDouble;
  EXPECT_THAT(VqganModel::Create(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dtype")));
}

// How far a reduced-precision network may drift from the float32 reference, calibrated on this platform: the
// error of one 3×3 convolution at the model's widest channel count (libtorch 1.13's CPU bfloat16 convolution
// accumulates in bfloat16: about 3 % per layer at 64 channels, against 0.3 % when accumulating in float32), grown
// as a random walk over the network's convolutions, doubled for margin. A wrong weight or a skipped layer gives
// an error of order 1 however the platform rounds.
class ReducedPrecisionBound {
 public:
  ReducedPrecisionBound(VqModel& module, at::ScalarType dtype) : module_(module) {
    int64_t widest = 0;
    for (const auto& item : module.named_modules()) {
      if (auto* conv = item.value()->as<torch::nn::Conv2d>()) {
        widest = std::max(widest, conv->options.in_channels());
      }
    }
    at::manual_seed(0);
    const at::Tensor x = at::randn({2, widest, 16, 16}).to(dtype);
    const at::Tensor w = (at::randn({widest, widest, 3, 3}) / std::sqrt(9.0 * widest)).to(dtype);
    const at::Tensor exact = at::conv2d(x.to(at::kDouble), w.to(at::kDouble), {}, 1, 1);
    const at::Tensor rounded = at::conv2d(x, w, {}, 1, 1).to(at::kDouble);
    per_conv_ = ((rounded - exact).norm() / exact.norm()).item<double>();
    std::printf("[ bound  ] one 3x3 convolution over %ld channels in %s: relative error %.3e\n",
                static_cast<long>(widest), c10::toString(dtype), per_conv_);
  }

  // Bound for the part of the network whose parameter names start with `prefix` ("encoder.", "decoder.").
  double For(const std::string& prefix) const {
    int64_t convs = 0;
    for (const auto& item : module_.named_modules()) {
      if (item.key().rfind(prefix, 0) == 0 && item.value()->as<torch::nn::Conv2d>() != nullptr) ++convs;
    }
    const double bound = std::max(0.05, 2.0 * per_conv_ * std::sqrt(static_cast<double>(convs)));
    std::printf("[ bound  ] %-9s %ld convolutions: relative error bound %.3e\n", prefix.c_str(),
                static_cast<long>(convs), bound);
    return bound;
  }

 private:
  VqModel& module_;
  double per_conv_ = 0.0;
};

// bfloat16 runs on CPU (8 mantissa bits; see ReducedPrecisionBound for how much error that is allowed); float16
// either runs (libtorch 2.x) or fails cleanly with INTERNAL (1.13 has no CPU half convolution), never with an
// exception.
TEST(VqganLoadTest, ReducedPrecisionOnCpu) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto expected, LoadTensors(ExpectedPath()));
  const at::Tensor& codes = expected.at("codes");
  const at::Tensor& reference = expected.at("decode_codes_output");

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto bf16, LoadFrom(ModelDir(), at::kBFloat16));
  EXPECT_EQ(bf16->codebook().scalar_type(), at::kBFloat16);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(at::Tensor image, bf16->DecodeCodes(codes, GradMode::kInferenceMode));
  EXPECT_EQ(image.scalar_type(), at::kBFloat16);
  const ReducedPrecisionBound bound(bf16->module(), at::kBFloat16);
  EXPECT_LE(RelativeError(image, reference, "bf16_decode_codes"), bound.For("decoder."));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(EncodeResult encoded,
                                 bf16->Encode(expected.at("encode_input"), GradMode::kInferenceMode));
  EXPECT_EQ(encoded.indices.scalar_type(), at::kLong);
  EXPECT_LE(RelativeError(encoded.h, expected.at("encode_h"), "bf16_encode_h"), bound.For("encoder."));

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto fp16, LoadFrom(ModelDir(), at::kHalf));
  auto half_image = fp16->DecodeCodes(codes, GradMode::kInferenceMode);
  if (half_image.ok()) {
    const ReducedPrecisionBound half_bound(fp16->module(), at::kHalf);
    EXPECT_LE(RelativeError(*half_image, reference, "fp16_decode_codes"), half_bound.For("decoder."));
  } else {
    std::printf("[ note   ] float16 on CPU: %s\n", half_image.status().ToString().c_str());
    EXPECT_THAT(half_image, StatusIs(absl::StatusCode::kInternal, Not(HasSubstr("Exception raised"))));
  }
}

TEST(VqganTrainingTest, ModuleIsTrainable) {
  VqganModel::Options options;
  options.config = OtherConfigs()[1];
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto model, VqganModel::Create(options));
  VqModel& module = model->module();
  module.train();
  const int64_t f = model->downsample_factor();
  const at::Tensor x = at::rand({1, options.config.ddconfig.in_channels, 2 * f, 2 * f});
  const at::Tensor h = module.EncodeToLatent(x);
  const Quantized q = module.Quantize(h, QuantizeGradient::kStraightThrough);
  const at::Tensor loss = (module.Decode(q.z_q) - x.narrow(1, 0, 1)).pow(2).mean();
  loss.backward();
  size_t with_grad = 0, total = 0;
  for (const auto& item : module.named_parameters()) {
    ++total;
    if (item.value().grad().defined()) {
      ++with_grad;
    } else {
      EXPECT_EQ(item.key(), "quantize.embedding.weight");  // straight-through: no codebook gradient
    }
  }
  EXPECT_EQ(with_grad, total - 1);
}

}  // namespace
}  // namespace clipserve::vqgan
