#include "server/runtime/clip_runtime.h"

#include <fstream>
#include <thread>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/core/worker_pool.h"
#include "server/models/clip/clip_bundle.h"
#include "server/models/tensor_io.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::runtime {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;

// Runs a call synchronously.
absl::StatusOr<Embeddings> Wait(const std::function<void(EmbedDone)>& start) {
  absl::Notification done;
  absl::StatusOr<Embeddings> result = absl::UnknownError("not answered");
  start([&](absl::StatusOr<Embeddings> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

double MaxAbsDiff(const float* a, const float* b, int n) {
  double m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, static_cast<double>(std::abs(a[i] - b[i])));
  return m;
}

class ClipRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    Start(/*queue_size=*/64, /*delay=*/absl::Milliseconds(2));
  }
  void Start(int queue_size, absl::Duration delay, int workers = 1) {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(pool_, ThreadPool::Create({.num_threads = 2, .max_queue_size = 256}));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(scheduler_, Scheduler::Create({}));
    ClipRuntimeOptions options;
    options.name = "fixture";
    options.dir = FixtureDir() / "clip";
    options.text_lane.batching = {.max_batch_size = 8, .max_queue_delay = delay, .max_queue_size = queue_size};
    options.image_lane.batching = {.max_batch_size = 4, .max_queue_delay = delay, .max_queue_size = queue_size};
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(runtime_, ClipRuntime::Create(options, scheduler_.get(), pool_.get()));
    ASSERT_THAT(runtime_->WarmUp(), IsOk());
    if (workers > 0) {
      CLIPSERVE_ASSERT_OK_AND_ASSIGN(workers_, WorkerPool::Create({.scheduler = scheduler_.get(), .instances = workers}));
    }
  }
  void TearDown() override {
    if (scheduler_) {
      scheduler_->StopAccepting();
      EXPECT_THAT(scheduler_->Drain(absl::Now() + absl::Seconds(5)), IsOk());
    }
    workers_.reset();
    runtime_.reset();
    scheduler_.reset();
    pool_.reset();
  }
  std::string ReadImage(const std::string& name) {
    auto bytes = ReadFileToString(FixtureDir() / "images" / name);
    EXPECT_THAT(bytes, IsOk());
    return bytes.ok() ? *bytes : "";
  }

  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ClipRuntime> runtime_;
  std::unique_ptr<WorkerPool> workers_;
};

TEST_F(ClipRuntimeTest, DescribesTheModel) {
  const auto& d = runtime_->description();
  EXPECT_EQ(d.name, "fixture");
  EXPECT_GT(d.embedding_dim, 0);
  EXPECT_GT(d.image_size, 0);
  EXPECT_EQ(d.context_length, 77);
  EXPECT_EQ(d.device, "cpu");
  EXPECT_GT(d.logit_scale, 1.0f);
}

TEST_F(ClipRuntimeTest, TextEmbeddingsEqualTheModelsOwn) {
  const std::vector<std::string> texts = {"a photo of a cat", "a photo of a dog", "東京の猫の写真"};
  auto got = Wait([&](EmbedDone done) { runtime_->EmbedTexts(texts, {}, std::move(done)); });
  ASSERT_THAT(got, IsOk());
  ASSERT_EQ(got->size(), texts.size());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto bundle, clip::ClipBundle::Load({.dir = FixtureDir() / "clip"}));
  c10::InferenceMode guard;
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<int64_t> ids(77);
    ASSERT_THAT(bundle->tokenizer->EncodePadded(texts[i], clip::Truncation::kTruncate, absl::MakeSpan(ids), nullptr), IsOk());
    at::Tensor ref = bundle->model->EncodeText(at::tensor(ids).view({1, 77}));
    EXPECT_LE(MaxAbsDiff(got->row(i), ref.data_ptr<float>(), got->dim), 1e-5) << texts[i];
  }
}

TEST_F(ClipRuntimeTest, ImagesFromFilesMatchTheReferenceEmbeddings) {
  auto cases = ReadJsonFile(FixtureDir() / "clip_cases.json");
  ASSERT_THAT(cases, IsOk());
  std::vector<std::string> bytes;
  for (const auto& name : (*cases)["images"]) bytes.push_back(ReadImage(name.get<std::string>()));
  std::vector<ImageInput> inputs;
  for (const auto& b : bytes) inputs.push_back({.encoded = b});
  auto got = Wait([&](EmbedDone done) { runtime_->EmbedImages(inputs, {}, std::move(done)); });
  ASSERT_THAT(got, IsOk());
  ASSERT_EQ(got->size(), bytes.size());
  // Same tolerance as the foundation's preprocessing parity: decoding and resizing from the files.
  auto expected = LoadTensors(FixtureDir() / "clip_expected.safetensors");
  ASSERT_THAT(expected, IsOk());
  const at::Tensor ref = expected->at("image_embeds").to(at::kFloat).contiguous();
  for (size_t i = 0; i < bytes.size(); ++i) {
    at::Tensor ours = at::from_blob(const_cast<float*>(got->row(i)), {got->dim}).clone();
    EXPECT_LE((ours - ref[i]).norm().item<double>() / ref[i].norm().item<double>(), 1e-2) << "image " << i;
  }
}

TEST_F(ClipRuntimeTest, RepeatedTextsHitTheCache) {
  const std::vector<std::string> texts = {"a red circle", "a blue star"};
  ASSERT_THAT(Wait([&](EmbedDone done) { runtime_->EmbedTexts(texts, {}, std::move(done)); }), IsOk());
  const uint64_t hits = runtime_->text_cache().hits();
  auto again = Wait([&](EmbedDone done) { runtime_->EmbedTexts(texts, {}, std::move(done)); });
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(runtime_->text_cache().hits(), hits + 2);
}

TEST_F(ClipRuntimeTest, ConcurrentCallsGetTheRowsTheyWouldGetAlone) {
  std::vector<std::string> texts;
  for (int i = 0; i < 24; ++i) texts.push_back("caption number " + std::to_string(i) + " of many");
  std::vector<Embeddings> alone;
  for (const auto& t : texts) {
    auto r = Wait([&](EmbedDone done) { runtime_->EmbedTexts({t}, {}, std::move(done)); });
    ASSERT_THAT(r, IsOk());
    alone.push_back(*r);
  }
  // Now all at once from several threads (the cache is bypassed by using a fresh runtime).
  TearDown();
  Start(64, absl::Milliseconds(20));
  std::vector<absl::StatusOr<Embeddings>> together(texts.size(), absl::UnknownError(""));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < texts.size(); ++i) {
    threads.emplace_back([&, i] {
      together[i] = Wait([&](EmbedDone done) { runtime_->EmbedTexts({texts[i]}, {}, std::move(done)); });
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_THAT(together[i], IsOk());
    EXPECT_LE(MaxAbsDiff(together[i]->row(0), alone[i].row(0), alone[i].dim), 1e-5) << i;
  }
}

TEST_F(ClipRuntimeTest, BadInputsAreInvalidArgument) {
  EXPECT_THAT(Wait([&](EmbedDone done) { runtime_->EmbedTexts({"ok", "\xff\xfe"}, {}, std::move(done)); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("texts[1]")));
  const std::string junk = "this is not an image";
  EXPECT_THAT(Wait([&](EmbedDone done) { runtime_->EmbedImages({{.encoded = junk}}, {}, std::move(done)); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("images[0]")));
  EXPECT_THAT(Wait([&](EmbedDone done) {
                std::string long_text;
                for (int i = 0; i < 100; ++i) long_text += "word ";
                runtime_->EmbedTexts({long_text}, {.truncation = Truncation::kReject}, std::move(done));
              }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("texts[0]")));
  EXPECT_THAT(Wait([&](EmbedDone done) { runtime_->EmbedTexts({"x"}, {.priority = 5}, std::move(done)); }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("priority")));
}

TEST_F(ClipRuntimeTest, ExpiredDeadlineIsDeadlineExceeded) {
  EXPECT_THAT(Wait([&](EmbedDone done) {
                runtime_->EmbedTexts({"too late"}, {.deadline = absl::Now() - absl::Seconds(1)}, std::move(done));
              }),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
}

TEST_F(ClipRuntimeTest, CancelledCallIsNotRun) {
  auto flag = std::make_shared<CancellationFlag>();
  flag->Cancel();
  EXPECT_THAT(Wait([&](EmbedDone done) { runtime_->EmbedTexts({"never"}, {.cancellation = flag}, std::move(done)); }),
              StatusIs(absl::StatusCode::kCancelled, ::testing::_));
}

TEST_F(ClipRuntimeTest, FullQueueIsResourceExhausted) {
  TearDown();
  Start(/*queue_size=*/8, absl::Milliseconds(2), /*workers=*/0);  // nobody takes batches
  std::vector<std::string> nine(9, "a text that is not cached");
  for (size_t i = 0; i < nine.size(); ++i) nine[i] += std::to_string(i);
  EXPECT_THAT(Wait([&](EmbedDone done) { runtime_->EmbedTexts(nine, {}, std::move(done)); }),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
}

TEST_F(ClipRuntimeTest, TokenizeReportsContextOverflow) {
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "word ";
  auto t = runtime_->Tokenize(std::vector<std::string>{"a photo of a cat", long_text});
  ASSERT_THAT(t, IsOk());
  EXPECT_FALSE((*t)[0].exceeds_context);
  EXPECT_TRUE((*t)[1].exceeds_context);
  EXPECT_EQ((*t)[1].ids.size(), 102u);
}

}  // namespace
}  // namespace clipserve::runtime
