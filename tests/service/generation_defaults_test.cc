#include "server/service/generation_defaults.h"

#include <google/protobuf/text_format.h>

#include "gtest/gtest.h"
#include "server/service/generation_service.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::service {
namespace {

using ::clipserve::testing::IsOk;

GenerationConfig Generation(const std::string& text) {
  GenerationConfig g;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &g)) << text;
  return g;
}

TEST(JobDefaultsFromConfigTest, UnsetFieldsKeepTheReferenceSettings) {
  const generation::JobOptions j = JobDefaultsFromConfig(Generation(""));
  const generation::JobOptions reference;
  const generation::CutoutOptions& c = j.cutouts;
  const generation::CutoutOptions& r = reference.cutouts;
  EXPECT_EQ(j.steps, reference.steps);
  EXPECT_EQ(j.learning_rate, reference.learning_rate);
  EXPECT_EQ(j.smoothness_weight, reference.smoothness_weight);
  EXPECT_EQ(c.cutn, r.cutn);
  EXPECT_EQ(c.cut_pow, r.cut_pow);
  EXPECT_EQ(c.augment_probability, r.augment_probability);
  EXPECT_EQ(c.perspective_distortion, r.perspective_distortion);
  EXPECT_EQ(c.perspective_border_padding, r.perspective_border_padding);
  EXPECT_EQ(c.rotation_degrees, r.rotation_degrees);
  EXPECT_EQ(c.affine_scale_min, r.affine_scale_min);
  EXPECT_EQ(c.erase_area_min, r.erase_area_min);
  EXPECT_EQ(c.erase_area_max, r.erase_area_max);
  EXPECT_EQ(c.noise_min, r.noise_min);
  EXPECT_EQ(c.noise_max, r.noise_max);
  EXPECT_EQ(c.blur_sigma_max, r.blur_sigma_max);
}

// A server limited below the reference's 100 steps or 32 cutouts runs at its limit when a request asks for
// nothing (it used to refuse such a config at start-up: generation_test's server has max_cutn 8).
TEST(JobDefaultsFromConfigTest, UnsetStepsAndCutnStayWithinTheLimits) {
  const GenerationConfig g = Generation("max_steps: 50 max_cutn: 8");
  const generation::JobOptions j = JobDefaultsFromConfig(g);
  EXPECT_EQ(j.steps, 50);
  EXPECT_EQ(j.cutouts.cutn, 8);
  EXPECT_THAT(ValidateJobDefaults(g), IsOk());
  const generation::JobOptions roomy = JobDefaultsFromConfig(Generation("max_steps: 1000 max_cutn: 64"));
  EXPECT_EQ(roomy.steps, 100);
  EXPECT_EQ(roomy.cutouts.cutn, 32);
  // Set explicitly above the limit: an error naming the field.
  EXPECT_EQ(ValidateJobDefaults(Generation("max_cutn: 8 job_defaults { cutn: 16 }")).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(JobDefaultsFromConfigTest, SetFieldsAreApplied) {
  const generation::JobOptions j = JobDefaultsFromConfig(Generation(R"(job_defaults {
      steps: 150 learning_rate: 0.2 cutn: 16 cut_pow: 2 smoothness_weight: 5 augment_probability: 0.5
      perspective_distortion: 0 perspective_border_padding: true rotation_degrees: 10 erase_area_max: 0.001
      noise_min: 0.25 noise_max: 0.5 blur_sigma_max: 1.5 affine_scale_min: 0.7 })"));
  const generation::CutoutOptions& c = j.cutouts;
  EXPECT_EQ(j.steps, 150);
  EXPECT_FLOAT_EQ(j.learning_rate, 0.2f);
  EXPECT_FLOAT_EQ(j.smoothness_weight, 5);
  EXPECT_EQ(c.cutn, 16);
  EXPECT_FLOAT_EQ(c.cut_pow, 2);
  EXPECT_FLOAT_EQ(c.augment_probability, 0.5f);
  EXPECT_FLOAT_EQ(c.perspective_distortion, 0);
  EXPECT_TRUE(c.perspective_border_padding);
  EXPECT_FLOAT_EQ(c.rotation_degrees, 10);
  EXPECT_FLOAT_EQ(c.erase_area_max, 0.001f);
  EXPECT_FLOAT_EQ(c.erase_area_min, 0.001f);  // lowered to the maximum
  EXPECT_FLOAT_EQ(c.noise_min, 0.25f);
  EXPECT_FLOAT_EQ(c.noise_max, 0.5f);
  EXPECT_FLOAT_EQ(c.blur_sigma_max, 1.5f);
  EXPECT_FLOAT_EQ(c.affine_scale_min, 0.7f);
}

// A request gets the server's settings for what it leaves unset, and its own for what it sets.
TEST(JobDefaultsFromConfigTest, RequestsStartFromTheDefaults) {
  GenerationService::Settings s;
  s.job_defaults = JobDefaultsFromConfig(
      Generation("job_defaults { steps: 150 cutn: 16 learning_rate: 0.2 noise_min: 0.25 noise_max: 0.5 "
                 "smoothness_weight: 5 }"));
  v1::GenerateRequest r;
  r.set_prompt("a red circle");
  auto plain = ToGenerationRequest(r, s);
  ASSERT_THAT(plain, IsOk());
  EXPECT_EQ(plain->job.steps, 150);
  EXPECT_EQ(plain->job.cutouts.cutn, 16);
  EXPECT_FLOAT_EQ(plain->job.learning_rate, 0.2f);
  EXPECT_FLOAT_EQ(plain->job.cutouts.noise_min, 0.25f);
  EXPECT_FLOAT_EQ(plain->job.cutouts.noise_max, 0.5f);
  EXPECT_FLOAT_EQ(plain->job.smoothness_weight, 5);
  ASSERT_EQ(plain->job.prompts.size(), 1u);

  r.set_steps(40);
  r.set_cutn(8);
  r.set_learning_rate(0.05f);
  auto set = ToGenerationRequest(r, s);
  ASSERT_THAT(set, IsOk());
  EXPECT_EQ(set->job.steps, 40);
  EXPECT_EQ(set->job.cutouts.cutn, 8);
  EXPECT_FLOAT_EQ(set->job.learning_rate, 0.05f);
  EXPECT_FLOAT_EQ(set->job.cutouts.noise_min, 0.25f);  // requests do not set the augmentations
}

}  // namespace
}  // namespace clipserve::service
