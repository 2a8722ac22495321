#include "server/service/config.h"

#include <filesystem>
#include <fstream>

#include <google/protobuf/text_format.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::service {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;

// A directory that looks like a model (config.json present) for path validation.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per test process (ScratchDir is per pid): ctest runs the tests of this file as parallel
    // processes, and a shared directory let one test's SetUp truncate a config.json while another test was
    // reading it.
    dir_ = ::clipserve::testing::ScratchDir("config");
    fs::create_directories(dir_ / "m1");
    fs::create_directories(dir_ / "m2");
    std::ofstream(dir_ / "m1" / "config.json") << "{}";
    fs::create_directories(dir_ / "vq");
    std::ofstream(dir_ / "vq" / "config.json") << R"({"embed_dim": 8, "n_embed": 64, "ddconfig": {}})";
    std::ofstream(dir_ / "m2" / "config.json") << "{}";
  }
  absl::StatusOr<ServerConfig> Parse(const std::string& text) { return ParseServerConfig(text, "test.textproto", dir_); }
  fs::path dir_;
};

TEST_F(ConfigTest, FillsDefaults) {
  auto c = Parse(R"(models { name: "a" path: "m1" })");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->grpc_port(), 8500u);
  EXPECT_EQ(c->http_port(), 8501u);
  EXPECT_EQ(c->listen_address(), "0.0.0.0");
  const ModelConfig& m = c->models(0);
  EXPECT_TRUE(m.default_());
  EXPECT_EQ(m.path(), (dir_ / "m1").string());
  EXPECT_EQ(m.device(), "cpu");
  EXPECT_EQ(m.dtype(), "float32");
  EXPECT_EQ(m.instances(), 1u);
  EXPECT_EQ(m.text_cache_entries(), 10000u);
  EXPECT_EQ(m.text_lane().max_batch_size(), 32u);
  EXPECT_EQ(m.text_lane().max_queue_delay_us(), 2000u);
  EXPECT_EQ(m.image_lane().max_queue_size(), 1024u);
  EXPECT_EQ(c->limits().max_items_per_request(), 256u);
  EXPECT_EQ(c->logging().format(), "text");
}

TEST_F(ConfigTest, PortZeroAndDelayZeroAreKept) {
  auto c = Parse(R"(grpc_port: 0 http_port: 0 models { name: "a" path: "m1" text_lane { max_queue_delay_us: 0 } })");
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->grpc_port(), 0u);
  EXPECT_EQ(c->http_port(), 0u);
  EXPECT_EQ(c->models(0).text_lane().max_queue_delay_us(), 0u);
}

TEST_F(ConfigTest, SyntaxErrorNamesTheLine) {
  EXPECT_THAT(Parse("models {\n name: \"a\"\n bogus_field: 3 }"),
              StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("test.textproto"), HasSubstr("line 3"),
                                                                 HasSubstr("bogus_field"))));
}

TEST_F(ConfigTest, InvalidValuesNameTheField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "models: at least one model"},
      {R"(models { name: "a b" path: "m1" })", "models[0].name"},
      {R"(models { name: "a" })", "models[0].path: is required"},
      {R"(models { name: "a" path: "nope" })", "is not a model directory"},
      {R"(models { name: "a" path: "vq" })", "is a VQGAN directory"},
      {R"(models { name: "a" path: "m1" } models { name: "a" path: "m2" })", "models[1].name: 'a' is used"},
      {R"(models { name: "a" path: "m1" device: "tpu" })", "models[0].device"},
      {R"(models { name: "a" path: "m1" dtype: "int8" })", "models[0].dtype"},
      {R"(models { name: "a" path: "m1" text_lane { max_batch_size: 5000 } })", "models[0].text_lane.max_batch_size"},
      {R"(models { name: "a" path: "m1" image_lane { max_batch_size: 8 preferred_batch_sizes: [4, 16] } })",
       "models[0].image_lane.preferred_batch_sizes"},
      {R"(models { name: "a" path: "m1" text_lane { max_batch_size: 64 max_queue_size: 10 } })",
       "models[0].text_lane.max_queue_size"},
      {R"(models { name: "a" path: "m1" text_lane { priority_levels: 2 default_priority: 3 } })",
       "models[0].text_lane.default_priority"},
      {R"(models { name: "a" path: "m1" default: true } models { name: "b" path: "m2" default: true })",
       "more than one model"},
      {R"(grpc_port: 70000 models { name: "a" path: "m1" })", "grpc_port"},
      {R"(logging { format: "xml" } models { name: "a" path: "m1" })", "logging.format"},
      {R"(limits { max_image_bytes: 100 max_message_bytes: 10 } models { name: "a" path: "m1" })",
       "limits.max_image_bytes"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "m1" })", "generation.vqgan_path"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" clip_model: "b" })",
       "generation.clip_model: 'b'"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" max_active_jobs: 0 })",
       "generation.max_active_jobs"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" max_side: 128 default_side: 256 })",
       "generation.default_side"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" step_lane { max_queue_size: 2 max_batch_size: 1 } })",
       "generation.step_lane.max_queue_size"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" more_clip_models: "b" })",
       "generation.more_clip_models[0]: 'b' is not a served model"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" more_clip_models: "a" })",
       "generation.more_clip_models[0]: 'a' is clip_model already"},
      {R"(models { name: "a" path: "m1" } models { name: "b" path: "m2" }
          generation { vqgan_path: "vq" clip_model: "a" more_clip_models: ["b", "b"] })",
       "generation.more_clip_models[1]: 'b' is listed twice"},
      {R"(models { name: "a" path: "m1" } models { name: "b" path: "m2" device: "cuda:0" }
          generation { vqgan_path: "vq" clip_model: "a" more_clip_models: "b" })",
       "'b' is on cuda:0 and clip_model 'a' on cpu"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" job_defaults { steps: 0 } })",
       "generation.job_defaults.steps: 0; use 1 to max_steps (1000)"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" max_steps: 50 job_defaults { steps: 100 } })",
       "generation.job_defaults.steps: 100; use 1 to max_steps (50)"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" job_defaults { cutn: 65 } })",
       "generation.job_defaults.cutn: 65; use 1 to max_cutn (64)"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" job_defaults { learning_rate: 0 } })",
       "generation.job_defaults.learning_rate: 0 must be in (0, 10]"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" job_defaults { smoothness_weight: -1 } })",
       "generation.job_defaults.smoothness_weight: -1 must be in [0, 1000]"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" job_defaults { noise_max: 1.5 } })",
       "generation.job_defaults.noise_max is 1.5; allowed range is [0, 1]"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" job_defaults { noise_min: 0.3 } })",
       "generation.job_defaults.noise_min is 0.3; allowed range is [0, noise_max = 0.1]"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" job_defaults { rotation_degrees: 200 } })",
       "generation.job_defaults.rotation_degrees is 200"},
      {R"(models { name: "a" path: "m1" } generation { vqgan_path: "vq" job_defaults { affine_scale_min: 0 } })",
       "generation.job_defaults.affine_scale_min is 0; allowed range is [0.1, 1]"},
  };
  for (const auto& [text, message] : cases) {
    EXPECT_THAT(Parse(text), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message))) << text;
  }
}

TEST_F(ConfigTest, GenerationDefaultsFollowTheModelsAndTheVqgan) {
  auto c = Parse(R"(models { name: "a" path: "m1" } models { name: "b" path: "m2" default: true }
                    generation { vqgan_path: "vq" })");
  ASSERT_THAT(c, IsOk());
  const GenerationConfig& g = c->generation();
  EXPECT_EQ(g.vqgan_path(), (dir_ / "vq").string());
  EXPECT_EQ(g.clip_model(), "b");  // the default model
  EXPECT_EQ(g.max_active_jobs(), 4u);
  EXPECT_EQ(g.max_queued_jobs(), 16u);
  EXPECT_EQ(g.default_side(), 64u);  // no resolution in the VQGAN's ddconfig
  EXPECT_EQ(g.step_lane().max_batch_size(), 4u);
  EXPECT_EQ(g.keep_finished_s(), 600u);
  EXPECT_FALSE(g.has_job_defaults());  // the reference's settings (JobDefaultsFromConfig)
  // Without a vqgan_path there is no generation, and nothing else is checked.
  auto none = Parse(R"(models { name: "a" path: "m1" } generation { clip_model: "zzz" })");
  ASSERT_THAT(none, IsOk());
}

TEST_F(ConfigTest, GatewayDefaultsAndValidation) {
  auto c = Parse(R"(models { name: "a" path: "m1" } limits { max_message_bytes: 3000000 max_image_bytes: 1000000 })");
  ASSERT_THAT(c, IsOk());
  EXPECT_TRUE(c->gateway().enabled());
  EXPECT_TRUE(c->gateway().web_demo());
  EXPECT_EQ(c->gateway().default_timeout_ms(), 60000u);
  EXPECT_EQ(c->gateway().max_streams(), 16u);
  EXPECT_EQ(c->gateway().max_request_bytes(), 3000000u * 4 / 3 + 65536);  // a largest message in base64
  c = Parse(R"(models { name: "a" path: "m1" } gateway { enabled: false web_demo: false })");
  ASSERT_THAT(c, IsOk());
  EXPECT_FALSE(c->gateway().enabled());
  EXPECT_THAT(Parse(R"(models { name: "a" path: "m1" } gateway { enabled: false })"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gateway.web_demo: needs gateway.enabled")));
  for (const char* origin : {"app.example.com", "https://app.example.com/", "https://a.com, https://b.com", ""}) {
    EXPECT_THAT(Parse(absl::StrCat(R"(models { name: "a" path: "m1" } gateway { cors_allowed_origins: ")", origin,
                                   R"(" })")),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gateway.cors_allowed_origins[0]")))
        << origin;
  }
  EXPECT_THAT(Parse(R"(models { name: "a" path: "m1" } gateway { cors_allowed_origins: "*"
                       cors_allowed_origins: "http://localhost:3000" })"),
              IsOk());
  EXPECT_THAT(Parse(R"(models { name: "a" path: "m1" } gateway { max_streams: 5000 })"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gateway.max_streams")));
}

TEST_F(ConfigTest, ModelFlagAddsAModel) {
  ServerConfig c;
  ASSERT_THAT(AddModelFromFlag("extra=" + (dir_ / "m2").string(), &c), IsOk());
  ASSERT_THAT(FinalizeServerConfig(&c, dir_), IsOk());
  EXPECT_EQ(c.models(0).name(), "extra");
  EXPECT_THAT(AddModelFromFlag("noequals", &c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NAME=DIR")));
  EXPECT_THAT(AddModelFromFlag("=dir", &c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NAME=DIR")));
}

TEST_F(ConfigTest, ShippedConfigsParse) {
  for (const auto& entry : fs::directory_iterator(fs::path(CLIPSERVE_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".textproto") continue;
    // Models named in shipped configs may be absent on this machine; only syntax and field names are checked.
    std::ifstream in(entry.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ServerConfig c;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &c)) << entry.path();
  }
}

}  // namespace
}  // namespace clipserve::service
