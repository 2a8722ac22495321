#include "tools/vqgan_trainer/vqgan_trainer.h"

#include <filesystem>
#include <fstream>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/models/vqgan/vqgan.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::vqgan_trainer {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;

TrainOptions Tiny(const fs::path& out) {
  TrainOptions o;
  o.out = out;
  o.config.embed_dim = 8;
  o.config.n_embed = 32;
  o.config.ddconfig.ch = 32;
  o.config.ddconfig.ch_mult = {1, 2};
  o.config.ddconfig.num_res_blocks = 1;
  o.config.ddconfig.z_channels = 16;
  o.config.ddconfig.resolution = 32;
  o.batch_size = 8;
  o.max_steps = 60;
  o.minutes = 5;
  o.warmup_steps = 5;
  o.eval_every = 20;
  o.eval_count = 16;
  o.restart_every = 20;
  o.log = [](const std::string&) {};
  return o;
}

std::vector<nlohmann::json> Curve(const fs::path& dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(dir / "learning_curve.jsonl");
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(VqganTrainer, LossFallsAndTheResultLoadsThroughTheServersLoader) {
  const fs::path dir = fs::path(::testing::TempDir()) / "vqgan_train";
  fs::remove_all(dir);
  auto report = Train(Tiny(dir));
  ASSERT_THAT(report, IsOk());
  EXPECT_EQ(report->steps, 60);
  const auto curve = Curve(dir);
  ASSERT_EQ(curve.size(), 3u);
  EXPECT_LT(curve.back()["loss"].get<double>(), curve.front()["loss"].get<double>());
  EXPECT_GT(report->eval_psnr_db, 5.0);
  vqgan::VqganModel::Options o;
  o.model_dir = dir;
  auto model = vqgan::VqganModel::Load(o);
  ASSERT_THAT(model, IsOk());
  EXPECT_EQ((*model)->config().n_embed, 32);
}

TEST(VqganTrainer, ResumeContinuesFromTheSavedStep) {
  const fs::path dir = fs::path(::testing::TempDir()) / "vqgan_resume";
  fs::remove_all(dir);
  TrainOptions o = Tiny(dir);
  o.max_steps = 20;
  ASSERT_THAT(Train(o), IsOk());
  o.resume = true;
  // max_steps counts the whole training: resuming a finished one does no more steps.
  auto done = Train(o);
  ASSERT_THAT(done, IsOk());
  EXPECT_EQ(done->steps, 20);
  o.max_steps = 40;
  auto again = Train(o);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->steps, 40);  // 20 more on top of the saved 20
  // Trained minutes accumulate across the runs.
  const auto state = nlohmann::json::parse(std::ifstream(dir / "train_state.json"));
  EXPECT_GE(state["minutes"].get<double>(), again->minutes - 1e-9);
  EXPECT_GT(state["minutes"].get<double>(), 0.0);
}

TEST(VqganTrainer, RefusesEvaluationSeeds) {
  TrainOptions o = Tiny(fs::path(::testing::TempDir()) / "vqgan_bad_seed");
  o.seed = 2'000'000;
  EXPECT_THAT(Train(o), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

}  // namespace
}  // namespace clipserve::vqgan_trainer
