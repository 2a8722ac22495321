// The generation step on the fixture models (a tiny random-weight CLIP at 224 px and a tiny VQGAN, f = 4):
// validation, determinism by seed, independence from batching, the loss going down, the codebook clamp, init
// images, the smoothness and layout-prior terms, and ClampWithGrad's gradient.
#include "server/generation/generator.h"

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::generation {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class GeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    auto models = GenerationModels::Load(FixtureDir() / "clip", FixtureDir() / "vqgan");
    ASSERT_THAT(models, IsOk());
    models_ = *models;
  }


 public:
  static JobOptions Options(const std::string& prompt, uint64_t seed, int size = 32) {
    JobOptions o;
    auto prompts = ParsePrompts(prompt, "prompt");
    EXPECT_THAT(prompts, IsOk());
    if (prompts.ok()) o.prompts = *prompts;
    o.width = o.height = size;
    o.steps = 4;
    o.seed = seed;
    o.cutouts.cutn = 4;
    return o;
  }

  std::unique_ptr<Job> MakeJob(JobOptions o) {
    auto job = Job::Create(models_, std::move(o));
    EXPECT_THAT(job, IsOk());
    return job.ok() ? std::move(job).value() : nullptr;
  }

  // Runs `steps` steps of `job` alone and returns the stats.
  std::vector<StepStats> RunAlone(Job* job, int steps) {
    std::vector<StepStats> out;
    for (int i = 0; i < steps; ++i) {
      auto s = Step(models_, {job});
      EXPECT_THAT(s, IsOk());
      if (s.ok()) out.push_back((*s)[0]);
    }
    return out;
  }

  GenerationModels models_;
};

TEST_F(GeneratorTest, RejectsBadOptionsNamingTheField) {
  JobOptions o = Options("a red circle", 1);
  o.width = 30;
  EXPECT_THAT(Job::Create(models_, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("width")));
  o = Options("a red circle", 1);
  o.steps = 0;
  EXPECT_THAT(Job::Create(models_, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("steps")));
  o = Options("a red circle", 1);
  o.prompts[0].weight = -1;
  EXPECT_THAT(Job::Create(models_, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("positive weight")));
  o = Options("a red circle", 1);
  o.prompts[0].text = std::string(2000, 'a') + " b";
  EXPECT_THAT(Job::Create(models_, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prompt 1")));
  o = Options("a red circle", 1);
  o.cutouts.cutn = 0;
  EXPECT_THAT(Job::Create(models_, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("cutn")));
  o = Options("a red circle", 1);
  o.init_image = at::zeros({3, 16, 16});
  EXPECT_THAT(Job::Create(models_, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("init_image")));
  for (float bad : {-1.0f, 1e4f, std::numeric_limits<float>::quiet_NaN()}) {
    o = Options("a red circle", 1);
    o.smoothness_weight = bad;
    EXPECT_THAT(Job::Create(models_, o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("smoothness_weight")));
    o = Options("a red circle", 1);
    o.smoothness_final_weight = bad;
    EXPECT_THAT(Job::Create(models_, o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("smoothness_final_weight")));
    o = Options("a red circle", 1);
    o.noise_final_scale = bad;
    EXPECT_THAT(Job::Create(models_, o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("noise_final_scale")));
    o = Options("a red circle", 1);
    o.layout_prior_weight = bad;
    EXPECT_THAT(Job::Create(models_, o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layout_prior_weight")));
  }
  // The fixture VQGAN's directory has no layout prior.
  ASSERT_EQ(models_.priors.layout, nullptr);
  o = Options("a red circle", 1);
  o.layout_prior_weight = 1;
  EXPECT_THAT(Job::Create(models_, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                AllOf(HasSubstr("layout_prior_weight"), HasSubstr("has none"))));
}

// A layout prior for the fixture VQGAN, fitted to random layouts of its codes.
std::shared_ptr<const LayoutPrior> FixturePrior(const vqgan::VqganModel& vqgan) {
  const at::Tensor codes = at::randint(vqgan.config().n_embed, {8, 8, 8}, at::detail::createCPUGenerator(3), at::kLong);
  auto prior = LayoutPrior::Fit(codes, vqgan.codebook());
  EXPECT_THAT(prior, IsOk());
  return prior.ok() ? std::move(prior).value() : nullptr;
}

// A latent denoiser for the fixture VQGAN, with random weights.
std::shared_ptr<const LatentDenoiser> FixtureDenoiser(const vqgan::VqganModel& vqgan) {
  at::manual_seed(6);
  auto d = LatentDenoiser::Create({.embed_dim = vqgan.config().embed_dim, .n_embed = vqgan.config().n_embed,
                                   .width = 8, .dilations = {1, 2}},
                                  vqgan.codebook());
  EXPECT_THAT(d, IsOk());
  return d.ok() ? std::move(d).value() : nullptr;
}

// A prior's term in the loss: the first step's loss of the same job with the prior's weight 0, 1 and 2 (set by
// `set_weight`) grows linearly, by more than `min_term` per unit; and a job's loss with the term does not depend
// on a batchmate without it.
void ExpectALinearTermIndependentOfBatchmates(const GenerationModels& models,
                                             const std::function<void(JobOptions&, float)>& set_weight,
                                             float min_term) {
  std::vector<float> first_loss;
  for (float weight : {0.0f, 1.0f, 2.0f}) {
    JobOptions o = GeneratorTest::Options("a red circle", 4);
    set_weight(o, weight);
    auto job = Job::Create(models, o);
    ASSERT_THAT(job, IsOk());
    auto s = Step(models, {job->get()});
    ASSERT_THAT(s, IsOk());
    first_loss.push_back((*s)[0].loss);
  }
  const float term = first_loss[1] - first_loss[0];
  EXPECT_GT(term, min_term);
  EXPECT_NEAR(first_loss[2] - first_loss[0], 2 * term, 1e-3 * term);

  JobOptions o = GeneratorTest::Options("a red circle", 4);
  set_weight(o, 1);
  auto alone = Job::Create(models, o), job = Job::Create(models, o);
  auto other = Job::Create(models, GeneratorTest::Options("a blue star", 9));
  ASSERT_THAT(alone, IsOk());
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(other, IsOk());
  for (int i = 0; i < 2; ++i) {
    auto expected = Step(models, {alone->get()});
    auto s = Step(models, {other->get(), job->get()});
    ASSERT_THAT(expected, IsOk());
    ASSERT_THAT(s, IsOk());
    EXPECT_NEAR((*s)[1].loss, (*expected)[0].loss, 1e-4 * std::max(1.0f, std::abs((*expected)[0].loss)));
  }
}

// The layout term is the prior's energy of the latent times its weight.
TEST_F(GeneratorTest, TheLayoutPriorAddsItsWeightedEnergyToTheLoss) {
  auto models = GenerationModels::Create(models_.vqgan, models_.clip, {.layout = FixturePrior(*models_.vqgan)});
  ASSERT_THAT(models, IsOk());
  // −log P(pair) of a smoothed 8×8×8 sample of n_embed² pairs is far above 1.
  ExpectALinearTermIndependentOfBatchmates(
      *models, [](JobOptions& o, float w) { o.layout_prior_weight = w; }, 1);
}

// The denoiser term is weight · mean((z − D(z))²) / 2, positive where D's codes are not z's.
TEST_F(GeneratorTest, TheDenoiserAddsItsWeightedDistanceToTheLoss) {
  auto models = GenerationModels::Create(models_.vqgan, models_.clip, {.denoiser = FixtureDenoiser(*models_.vqgan)});
  ASSERT_THAT(models, IsOk());
  ExpectALinearTermIndependentOfBatchmates(
      *models, [](JobOptions& o, float w) { o.denoiser_weight = w; }, 1e-4);
  JobOptions o = Options("a red circle", 1);
  o.denoiser_weight = 1;
  EXPECT_THAT(Job::Create(models_, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                AllOf(HasSubstr("denoiser_weight"), HasSubstr("has none"))));
  o.denoiser_weight = -1;
  EXPECT_THAT(Job::Create(*models, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("denoiser_weight")));
  auto other = LatentDenoiser::Create({.embed_dim = 2, .n_embed = 4, .width = 4, .dilations = {1}}, at::eye(4, 2));
  ASSERT_THAT(other, IsOk());
  EXPECT_THAT(GenerationModels::Create(models_.vqgan, models_.clip, {.denoiser = std::move(other).value()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("latent denoiser is for 4 codes")));
}

TEST_F(GeneratorTest, ModelsTakeTheLayoutPriorFromTheVqgansDirectoryAndCheckIt) {
  namespace fs = std::filesystem;
  const fs::path dir = ::clipserve::testing::ScratchDir("vqgan");
  for (const char* name : {"config.json", "model.safetensors"}) {
    fs::copy_file(FixtureDir() / "vqgan" / name, dir / name, fs::copy_options::overwrite_existing);
  }
  const auto prior = FixturePrior(*models_.vqgan);
  ASSERT_NE(prior, nullptr);
  ASSERT_THAT(prior->Save(dir / LayoutPrior::kFileName), IsOk());
  auto models = GenerationModels::Load(FixtureDir() / "clip", dir);
  ASSERT_THAT(models, IsOk());
  ASSERT_NE(models->priors.layout, nullptr);
  EXPECT_EQ(models->priors.layout->n_embed(), models_.vqgan->config().n_embed);
  fs::remove_all(dir);

  auto small = LayoutPrior::Fit(at::zeros({1, 2, 2}, at::kLong), at::eye(4));
  ASSERT_THAT(small, IsOk());
  EXPECT_THAT(GenerationModels::Create(models_.vqgan, models_.clip, {.layout = std::move(small).value()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layout prior is for 4 codes")));
}

// The smoothness term of a [3, H, W] picture at weight 1.
double TotalVariation(const at::Tensor& x) {
  const int64_t h = x.size(1), w = x.size(2);
  return ((x.narrow(1, 1, h - 1) - x.narrow(1, 0, h - 1)).abs().mean() +
          (x.narrow(2, 1, w - 1) - x.narrow(2, 0, w - 1)).abs().mean())
      .item<double>();
}

// The smoothness term is the picture's total variation times its weight, added to the first step's loss (the
// picture of step 1 does not depend on the term: it is decoded before the optimiser moves).
TEST_F(GeneratorTest, SmoothnessAddsTheTotalVariationToTheLoss) {
  auto plain = MakeJob(Options("a red circle", 4));
  JobOptions o = Options("a red circle", 4);
  o.smoothness_weight = 3;
  auto smooth = MakeJob(o);
  const auto a = RunAlone(plain.get(), 1), b = RunAlone(smooth.get(), 1);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  ASSERT_TRUE(at::equal(a[0].image, b[0].image));
  const double tv = TotalVariation(a[0].image);
  ASSERT_GT(tv, 0.01);
  EXPECT_NEAR(b[0].loss - a[0].loss, 3 * tv, 1e-4);
}

// With a final value, the smoothness weight and the cutouts' noise move linearly from the first step's to the
// last step's, and the smoothness term in each step's loss is the picture's total variation times that step's
// weight.
TEST_F(GeneratorTest, SchedulesMoveLinearlyToTheirFinalValues) {
  JobOptions o = Options("a red circle", 4);
  o.steps = 5;
  o.smoothness_weight = 4;
  o.cutouts.noise_min = 0.2f;
  o.cutouts.noise_max = 0.4f;
  auto constant = MakeJob(o);
  o.smoothness_final_weight = 0;
  o.noise_final_scale = 0.5f;
  auto falling = MakeJob(o);
  std::vector<float> weights, noise_min, noise_max;
  for (int i = 0; i < o.steps; ++i) {
    EXPECT_FLOAT_EQ(constant->SmoothnessWeight(), 4);
    EXPECT_FLOAT_EQ(constant->StepCutouts().noise_max, 0.4f);
    weights.push_back(falling->SmoothnessWeight());
    noise_min.push_back(falling->StepCutouts().noise_min);
    noise_max.push_back(falling->StepCutouts().noise_max);
    ASSERT_THAT(Step(models_, {constant.get(), falling.get()}), IsOk());
  }
  using ::testing::ElementsAre;
  using ::testing::FloatEq;
  EXPECT_THAT(weights, ElementsAre(4, 3, 2, 1, 0));
  EXPECT_THAT(noise_min, ElementsAre(FloatEq(0.2f), FloatEq(0.175f), FloatEq(0.15f), FloatEq(0.125f), FloatEq(0.1f)));
  EXPECT_THAT(noise_max, ElementsAre(FloatEq(0.4f), FloatEq(0.35f), FloatEq(0.3f), FloatEq(0.25f), FloatEq(0.2f)));

  // Step 1 scores the same picture in all three jobs (the term has not moved anything yet): the term starts at 0
  // in a run that rises from 0, and at its first weight in one that falls.
  o = Options("a red circle", 4);
  o.steps = 5;
  o.smoothness_weight = 0;
  o.smoothness_final_weight = 9;
  auto rising = MakeJob(o);
  o.smoothness_weight = 2;
  o.smoothness_final_weight = 0;
  auto falling_from_2 = MakeJob(o);
  auto plain = MakeJob(Options("a red circle", 4));
  const auto a = RunAlone(plain.get(), 1), b = RunAlone(rising.get(), 1), c = RunAlone(falling_from_2.get(), 1);
  ASSERT_EQ(c.size(), 1u);
  ASSERT_TRUE(at::equal(a[0].image, c[0].image));
  const double tv = TotalVariation(a[0].image);
  ASSERT_GT(tv, 0.01);
  EXPECT_NEAR(b[0].loss, a[0].loss, 1e-5);
  EXPECT_NEAR(c[0].loss - a[0].loss, 2 * tv, 1e-4);
}

TEST_F(GeneratorTest, TheSeedMakesARunRepeatable) {
  auto a = MakeJob(Options("a red circle", 7));
  auto b = MakeJob(Options("a red circle", 7));
  auto c = MakeJob(Options("a red circle", 8));
  const auto sa = RunAlone(a.get(), 3), sb = RunAlone(b.get(), 3), sc = RunAlone(c.get(), 3);
  ASSERT_EQ(sa.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(sa[i].step, i + 1);
    EXPECT_EQ(sa[i].loss, sb[i].loss);
    EXPECT_TRUE(at::equal(sa[i].image, sb[i].image));
  }
  EXPECT_FALSE(at::equal(sa[0].image, sc[0].image));
}

// The acceptance property of batching: a job's run does not depend on which jobs shared its passes.
TEST_F(GeneratorTest, AJobsRunDoesNotDependOnItsBatchmates) {
  auto alone = MakeJob(Options("a red circle", 3));
  const auto expected = RunAlone(alone.get(), 3);

  auto job = MakeJob(Options("a red circle", 3));
  auto other = MakeJob(Options("a blue star:2 | a green background:-0.5", 99));
  auto bigger = MakeJob(Options("a yellow heart", 5, /*size=*/48));
  for (int i = 0; i < 3; ++i) {
    auto s = Step(models_, {other.get(), job.get(), bigger.get()});
    ASSERT_THAT(s, IsOk());
    ASSERT_EQ(s->size(), 3u);
    EXPECT_EQ((*s)[2].image.size(1), 48);
    const StepStats& got = (*s)[1];
    EXPECT_EQ(got.step, i + 1);
    EXPECT_NEAR(got.loss, expected[i].loss, 1e-4 * std::max(1.0f, std::abs(expected[i].loss)));
    EXPECT_NEAR(got.similarity, expected[i].similarity, 1e-4);
    EXPECT_LT((got.image - expected[i].image).abs().max().item<float>(), 1e-3) << "step " << i + 1;
  }
}

TEST_F(GeneratorTest, TheLossFallsAndTheLatentStaysInTheCodebooksRange) {
  JobOptions o = Options("a red circle", 11);
  o.steps = 25;
  o.cutouts.augment = false;
  o.cutouts.noise_max = 0;
  auto job = MakeJob(o);
  const auto stats = RunAlone(job.get(), 25);
  ASSERT_EQ(stats.size(), 25u);
  EXPECT_TRUE(job->finished());
  EXPECT_LT(stats.back().loss, stats.front().loss);
  EXPECT_GT(stats.back().similarity, stats.front().similarity);
  for (const StepStats& s : stats) {
    EXPECT_GE(s.image.min().item<float>(), 0.0f);
    EXPECT_LE(s.image.max().item<float>(), 1.0f);
  }
  // A finished job cannot step; neither can a job listed twice.
  EXPECT_THAT(Step(models_, {job.get()}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unfinished")));
  auto fresh = MakeJob(Options("a red circle", 1));
  EXPECT_THAT(Step(models_, {fresh.get(), fresh.get()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("once")));
  auto image = job->Render(models_);
  ASSERT_THAT(image, IsOk());
  EXPECT_EQ(image->sizes(), (std::vector<int64_t>{3, 32, 32}));
}

TEST_F(GeneratorTest, AnInitImageStartsFromItsReconstruction) {
  JobOptions o = Options("a red circle", 2);
  o.init_image = at::rand({3, 32, 32}, at::detail::createCPUGenerator(5));
  const at::Tensor init = o.init_image;
  auto job = MakeJob(o);
  auto start = job->Render(models_);
  ASSERT_THAT(start, IsOk());
  auto recon = models_.vqgan->Reconstruct(init.unsqueeze(0) * 2 - 1, vqgan::GradMode::kInferenceMode);
  ASSERT_THAT(recon, IsOk());
  const at::Tensor want = (*recon)[0].add(1).div(2).clamp(0, 1);
  EXPECT_LT((*start - want).abs().max().item<float>(), 1e-5);
}

// An ensemble's prompt loss is the mean over its CLIPs: the same CLIP twice steers exactly as it does alone.
TEST_F(GeneratorTest, AnEnsembleOfOneClipTwiceStepsAsThatClipAlone) {
  auto twice = GenerationModels::Create(models_.vqgan, models_.clip, {}, {models_.clip});
  ASSERT_THAT(twice, IsOk());
  EXPECT_EQ(twice->SteeringClips().size(), 2u);
  JobOptions o = Options("a red circle | a blue background:-0.5", 6);
  auto alone = MakeJob(o);
  auto job = Job::Create(*twice, o);
  ASSERT_THAT(job, IsOk());
  const auto expected = RunAlone(alone.get(), 3);
  ASSERT_EQ(expected.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    auto s = Step(*twice, {job->get()});
    ASSERT_THAT(s, IsOk());
    EXPECT_NEAR((*s)[0].loss, expected[i].loss, 1e-5 * std::max(1.0f, std::abs(expected[i].loss)));
    EXPECT_LT(((*s)[0].image - expected[i].image).abs().max().item<float>(), 1e-4) << "step " << i + 1;
  }
}

// A second, different CLIP (the fixture's with its weights perturbed) scores the same cutouts: the run changes,
// its loss is the mean of the two CLIPs' losses, the reported similarity stays the first CLIP's, and a job's run
// still does not depend on its batchmates.
TEST_F(GeneratorTest, AnEnsembleAveragesItsClipsLossesOverTheSameCutouts) {
  auto loaded = clip::ClipBundle::Load({.dir = FixtureDir() / "clip"});
  ASSERT_THAT(loaded, IsOk());
  {
    at::NoGradGuard no_grad;
    const at::Generator gen = at::detail::createCPUGenerator(12);
    for (at::Tensor p : (*loaded)->model->parameters()) p.mul_(1 + 0.2 * at::randn(p.sizes(), gen, p.options()));
  }
  std::shared_ptr<const clip::ClipBundle> second = std::move(loaded).value();
  auto only_second = GenerationModels::Create(models_.vqgan, second);
  auto both = GenerationModels::Create(models_.vqgan, models_.clip, {}, {second});
  ASSERT_THAT(only_second, IsOk());
  ASSERT_THAT(both, IsOk());

  std::vector<StepStats> first_step;
  for (const GenerationModels* m : {&models_, &*only_second, &*both}) {
    auto job = Job::Create(*m, Options("a red circle", 5));
    ASSERT_THAT(job, IsOk());
    auto s = Step(*m, {job->get()});
    ASSERT_THAT(s, IsOk());
    first_step.push_back((*s)[0]);
  }
  EXPECT_GT(std::abs(first_step[0].loss - first_step[1].loss), 1e-3);
  EXPECT_NEAR(first_step[2].loss, (first_step[0].loss + first_step[1].loss) / 2, 1e-5);
  EXPECT_EQ(first_step[2].similarity, first_step[0].similarity);
  EXPECT_TRUE(at::equal(first_step[2].image, first_step[0].image));  // step 1 scores the start picture

  auto alone = Job::Create(*both, Options("a red circle", 3));
  auto job = Job::Create(*both, Options("a red circle", 3));
  auto batchmate = Job::Create(*both, Options("a blue star", 8, /*size=*/48));
  ASSERT_THAT(alone, IsOk());
  ASSERT_THAT(job, IsOk());
  ASSERT_THAT(batchmate, IsOk());
  for (int i = 0; i < 2; ++i) {
    auto expected = Step(*both, {alone->get()});
    auto s = Step(*both, {batchmate->get(), job->get()});
    ASSERT_THAT(expected, IsOk());
    ASSERT_THAT(s, IsOk());
    EXPECT_NEAR((*s)[1].loss, (*expected)[0].loss, 1e-4 * std::max(1.0f, std::abs((*expected)[0].loss)));
    EXPECT_LT(((*s)[1].image - (*expected)[0].image).abs().max().item<float>(), 1e-3) << "step " << i + 1;
  }
  EXPECT_THAT(GenerationModels::Create(models_.vqgan, models_.clip, {}, {nullptr}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more_clips")));
}

// A CLIP of another input size and tokenizer (the shipped 64-px one beside the fixture's 224-px one) takes the
// cutouts resized to its size and the prompts through its own tokenizer; a prompt too long for one of the
// tokenizers is the request's error.
TEST_F(GeneratorTest, AnEnsembleTakesClipsOfOtherSizesAndTokenizers) {
  auto shipped = GenerationModels::Load(FixtureDir() / "clip", FixtureDir() / "vqgan", at::kCPU,
                                        {std::filesystem::path(CLIPSERVE_SOURCE_DIR) / "models/shapes-world/clip"});
  ASSERT_THAT(shipped, IsOk());
  ASSERT_EQ(shipped->more_clips.size(), 1u);
  ASSERT_NE(shipped->more_clips[0]->image_size(), models_.clip->image_size());
  auto job = Job::Create(*shipped, Options("a red circle", 2));
  ASSERT_THAT(job, IsOk());
  for (int i = 0; i < 2; ++i) {
    auto s = Step(*shipped, {job->get()});
    ASSERT_THAT(s, IsOk());
    EXPECT_TRUE(std::isfinite((*s)[0].loss));
  }
  const int64_t context = shipped->more_clips[0]->tokenizer->context_length();
  ASSERT_LT(context, models_.clip->tokenizer->context_length());
  std::string long_prompt = "a";
  for (int64_t i = 0; i < context; ++i) long_prompt += " red";
  JobOptions o = Options("a red circle", 1);
  o.prompts[0].text = long_prompt;
  EXPECT_THAT(Job::Create(models_, o), IsOk());
  EXPECT_THAT(Job::Create(*shipped, o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prompt 1")));
}

TEST(ClampWithGradTest, PassesOnlyGradientsThatPullBackIntoRange) {
  at::Tensor x = at::tensor({-0.5f, 0.5f, 1.5f}).set_requires_grad(true);
  at::Tensor y = ClampWithGrad(x, 0, 1);
  EXPECT_TRUE(at::equal(y.detach(), at::tensor({0.0f, 0.5f, 1.0f})));
  // d(loss)/dy = +1 everywhere: descending moves x down, which pulls 1.5 back in but pushes -0.5 further out.
  y.sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({0.0f, 1.0f, 1.0f})));
  x.mutable_grad().zero_();
  y = ClampWithGrad(x, 0, 1);
  (-y.sum()).backward();
  EXPECT_TRUE(at::equal(x.grad(), at::tensor({-1.0f, -1.0f, 0.0f})));
}

}  // namespace
}  // namespace clipserve::generation
