// The Generation service end to end: a real server (fixture CLIP and VQGAN) on ephemeral ports, called through
// real gRPC streams: the message sequence, validation, cancel by disconnect, detach + watch, a reader that never
// reads, and 100 jobs started and abandoned at random points.
#include <grpcpp/grpcpp.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "clipserve/v1/clipserve.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/service/config.h"
#include "server/service/server.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_server.h"

namespace clipserve::service {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::testing::HasSubstr;

class GenerationServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::is_directory(FixtureDir())) return;
    auto config = ParseServerConfig(absl::StrCat(R"(
        listen_address: "127.0.0.1" grpc_port: 0 http_port: 0
        models { name: "fixture" path: ")", (FixtureDir() / "clip").string(), R"(" }
        generation { vqgan_path: ")", (FixtureDir() / "vqgan").string(), R"("
                     max_active_jobs: 3 max_queued_jobs: 4 max_side: 64 max_steps: 2000 max_cutn: 8
                     step_lane { max_queue_delay_us: 5000 } })"),
                                     "test", "/");
    server_ = ::clipserve::testing::StartTestServer(config);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    ASSERT_NE(server_, nullptr) << ::clipserve::testing::TestServerError();
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()), grpc::InsecureChannelCredentials());
    stub_ = v1::Generation::NewStub(channel_);
  }

  static v1::GenerateRequest Request(int steps, int frame_every = 0) {
    v1::GenerateRequest r;
    r.set_prompt("a red circle");
    r.set_width(32);
    r.set_height(32);
    r.set_steps(steps);
    r.set_seed(42);
    r.set_cutn(2);
    r.set_frame_every(frame_every);
    return r;
  }

  // Reads a whole stream.
  struct Result {
    std::vector<v1::GenerateResponse> messages;
    grpc::Status status;
  };
  Result ReadAll(grpc::ClientReaderInterface<v1::GenerateResponse>* reader) {
    Result r;
    v1::GenerateResponse m;
    while (reader->Read(&m)) r.messages.push_back(m);
    r.status = reader->Finish();
    return r;
  }

  v1::GenerationInfo Info(const std::string& job_id) {
    grpc::ClientContext ctx;
    v1::ListGenerationsResponse list;
    EXPECT_TRUE(stub_->ListGenerations(&ctx, {}, &list).ok());
    for (const auto& g : list.generations()) {
      if (g.job_id() == job_id) return g;
    }
    return {};
  }

  // Waits until the job has ended (or ~60 s).
  v1::GenerationInfo WaitEnded(const std::string& job_id) {
    v1::GenerationInfo info;
    for (int i = 0; i < 1200; ++i) {
      info = Info(job_id);
      if (info.state() != v1::GENERATION_STATE_QUEUED && info.state() != v1::GENERATION_STATE_RUNNING) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return info;
  }

  static Server* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};
Server* GenerationServiceTest::server_ = nullptr;

// generation.more_clip_models: a served CLIP of another size and tokenizer (the shipped 64-px one beside the
// fixture's 224-px one) steers with clip_model: a job runs to its one completed message, and a prompt that only
// the shipped CLIP's shorter context cannot hold is refused, naming the prompt.
TEST(GenerationEnsembleTest, MoreClipModelsSteerBesideTheClipModel) {
  CLIPSERVE_REQUIRE_FIXTURES();
  auto config = ParseServerConfig(
      absl::StrCat(R"(
        listen_address: "127.0.0.1" grpc_port: 0 http_port: 0
        models { name: "fixture" path: ")",
                   (FixtureDir() / "clip").string(), R"(" default: true }
        models { name: "shipped" path: ")",
                   (std::filesystem::path(CLIPSERVE_SOURCE_DIR) / "models/shapes-world/clip").string(), R"(" }
        generation { vqgan_path: ")",
                   (FixtureDir() / "vqgan").string(), R"(" more_clip_models: "shipped" })"),
      "test", "/");
  ASSERT_THAT(config, IsOk());
  std::unique_ptr<Server> server(::clipserve::testing::StartTestServer(config));
  ASSERT_NE(server, nullptr);
  auto stub = v1::Generation::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server->grpc_port()), grpc::InsecureChannelCredentials()));
  v1::GenerateRequest request;
  request.set_prompt("a red circle");
  request.set_width(32);
  request.set_height(32);
  request.set_steps(2);
  request.set_cutn(2);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, request);
  v1::GenerateResponse m;
  int completed = 0;
  while (reader->Read(&m)) completed += m.has_completed() ? 1 : 0;
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(completed, 1);

  std::string long_prompt = "a";
  for (int i = 0; i < 30; ++i) long_prompt += " red";  // 31 words: over the shipped context of 25, under 77
  request.set_prompt(long_prompt);
  grpc::ClientContext ctx2;
  auto refused = stub->Generate(&ctx2, request);
  while (refused->Read(&m)) {
  }
  const grpc::Status status = refused->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("prompt"));
}

TEST_F(GenerationServiceTest, StreamsAcceptedThenProgressThenOneCompleted) {
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, Request(6, /*frame_every=*/2));
  const Result r = ReadAll(reader.get());
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_GE(r.messages.size(), 2u);
  ASSERT_TRUE(r.messages.front().has_accepted());
  const std::string id = r.messages.front().accepted().job_id();
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(r.messages.front().accepted().seed(), 42u);
  EXPECT_EQ(r.messages.front().accepted().total_steps(), 6u);
  uint32_t last = 0;
  int frames = 0;
  for (size_t i = 1; i + 1 < r.messages.size(); ++i) {
    ASSERT_TRUE(r.messages[i].has_progress()) << i;
    const auto& p = r.messages[i].progress();
    EXPECT_GT(p.step(), last);
    last = p.step();
    // Every second step carries a frame, except the last, whose image comes with `completed`.
    EXPECT_EQ(p.has_frame(), p.step() % 2 == 0 && p.step() < 6) << p.step();
    frames += p.has_frame();
  }
  EXPECT_GE(frames, 1);
  ASSERT_TRUE(r.messages.back().has_completed());
  const auto& done = r.messages.back().completed();
  EXPECT_EQ(done.steps(), 6u);
  EXPECT_EQ(done.seed(), 42u);
  EXPECT_EQ(done.image().format(), v1::IMAGE_FORMAT_PNG);
  const std::string& png = done.image().data();
  const cv::Mat img = cv::imdecode(std::vector<uint8_t>(png.begin(), png.end()), cv::IMREAD_COLOR);
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 32);
  EXPECT_EQ(Info(id).state(), v1::GENERATION_STATE_COMPLETED);
  const std::string metrics = server_->CollectMetrics();
  EXPECT_THAT(metrics, HasSubstr("clipserve_generation_steps_total"));
  EXPECT_THAT(metrics, HasSubstr("clipserve_batch_size_bucket{model=\"generation\",lane=\"step\""));
}

TEST_F(GenerationServiceTest, InvalidRequestsAreRefusedNamingTheField) {
  struct Case {
    std::function<void(v1::GenerateRequest*)> edit;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](v1::GenerateRequest* r) { r->clear_prompt(); }, "prompt"},
      {[](v1::GenerateRequest* r) { r->set_prompt("a red circle:0"); }, "prompt"},
      {[](v1::GenerateRequest* r) { r->set_prompt("a red circle:-1"); }, "positive"},
      {[](v1::GenerateRequest* r) { r->set_prompt(std::string("\xff\xfe", 2)); }, "UTF-8"},
      {[](v1::GenerateRequest* r) { r->set_width(30); }, "width"},
      {[](v1::GenerateRequest* r) { r->set_height(128); }, "height"},
      {[](v1::GenerateRequest* r) { r->set_steps(0); }, "steps"},
      {[](v1::GenerateRequest* r) { r->set_steps(5000); }, "steps"},
      {[](v1::GenerateRequest* r) { r->set_cutn(100); }, "cutn"},
      {[](v1::GenerateRequest* r) { r->mutable_init_image()->set_encoded("not an image"); }, "init_image"},
      {[](v1::GenerateRequest* r) { r->add_image_prompts(); }, "image_prompts[0]"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req = Request(3);
    c.edit(&req);
    grpc::ClientContext ctx;
    auto reader = stub_->Generate(&ctx, req);
    const Result r = ReadAll(reader.get());
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field << ": " << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), HasSubstr(c.field));
    EXPECT_TRUE(r.messages.empty()) << c.field;
  }
}

TEST_F(GenerationServiceTest, ClosingTheStreamCancelsTheJob) {
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, Request(2000));
  v1::GenerateResponse m;
  ASSERT_TRUE(reader->Read(&m));
  ASSERT_TRUE(m.has_accepted());
  const std::string id = m.accepted().job_id();
  do {
    ASSERT_TRUE(reader->Read(&m));
  } while (!m.has_progress());
  ctx.TryCancel();
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  const v1::GenerationInfo info = WaitEnded(id);
  EXPECT_EQ(info.state(), v1::GENERATION_STATE_CANCELLED);
  EXPECT_LT(info.step(), 2000u);
  // Stopped for good: no more steps later.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(Info(id).step(), info.step());
}

TEST_F(GenerationServiceTest, ADetachedJobOutlivesItsStreamAndCanBeWatched) {
  v1::GenerateRequest req = Request(8, /*frame_every=*/1);
  req.set_detach(true);
  std::string id;
  {
    grpc::ClientContext ctx;
    auto reader = stub_->Generate(&ctx, req);
    v1::GenerateResponse m;
    ASSERT_TRUE(reader->Read(&m));
    ASSERT_TRUE(m.has_accepted());
    id = m.accepted().job_id();
    ctx.TryCancel();
    reader->Finish();
  }
  grpc::ClientContext ctx;
  v1::WatchGenerationRequest watch;
  watch.set_job_id(id);
  auto reader = stub_->WatchGeneration(&ctx, watch);
  const Result r = ReadAll(reader.get());
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_FALSE(r.messages.empty());
  EXPECT_TRUE(r.messages.back().has_completed());
  EXPECT_EQ(Info(id).state(), v1::GENERATION_STATE_COMPLETED);

  grpc::ClientContext unknown_ctx;
  watch.set_job_id("gen-unknown");
  auto unknown = stub_->WatchGeneration(&unknown_ctx, watch);
  EXPECT_EQ(ReadAll(unknown.get()).status.error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext cancel_ctx;
  v1::CancelGenerationRequest cancel;
  cancel.set_job_id("gen-unknown");
  v1::GenerationInfo info;
  EXPECT_EQ(stub_->CancelGeneration(&cancel_ctx, cancel, &info).error_code(), grpc::StatusCode::NOT_FOUND);
}

// A client that never reads keeps its stream's frames from being written; its job, and others, run on to the
// end without it (the server keeps only the newest progress for it), and it still gets every terminal message.
TEST_F(GenerationServiceTest, AReaderThatNeverReadsSlowsNobody) {
  v1::GenerateRequest stalled_req = Request(30, /*frame_every=*/1);
  stalled_req.set_width(64);
  stalled_req.set_height(64);
  stalled_req.set_frame_width(256);
  stalled_req.set_frame_height(256);
  grpc::ClientContext stalled_ctx;
  auto stalled = stub_->Generate(&stalled_ctx, stalled_req);
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, Request(6));
  const Result r = ReadAll(reader.get());
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.messages.back().has_completed());
  // The stalled job finishes too, before anyone reads a byte of it.
  std::string stalled_id;
  for (int i = 0; i < 1200 && stalled_id.empty(); ++i) {
    grpc::ClientContext list_ctx;
    v1::ListGenerationsResponse list;
    ASSERT_TRUE(stub_->ListGenerations(&list_ctx, {}, &list).ok());
    for (const auto& g : list.generations()) {
      if (g.total_steps() == 30 && g.state() == v1::GENERATION_STATE_COMPLETED) stalled_id = g.job_id();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(stalled_id.empty());
  const Result late = ReadAll(stalled.get());
  ASSERT_TRUE(late.status.ok()) << late.status.error_message();
  ASSERT_FALSE(late.messages.empty());
  EXPECT_EQ(late.messages.front().accepted().job_id(), stalled_id);
  EXPECT_TRUE(late.messages.back().has_completed());
  uint32_t last = 0;
  for (const auto& m : late.messages) {
    if (!m.has_progress()) continue;
    EXPECT_GT(m.progress().step(), last);
    last = m.progress().step();
  }
}

TEST_F(GenerationServiceTest, SurvivesAHundredJobsAbandonedAtRandomPoints) {
  std::mt19937 rng(7);
  int accepted = 0, refused = 0;
  for (int i = 0; i < 100; ++i) {
    v1::GenerateRequest req = Request(1000);
    req.set_cutn(1);
    req.set_seed(static_cast<uint64_t>(i + 1));
    grpc::ClientContext ctx;
    auto reader = stub_->Generate(&ctx, req);
    const int reads = static_cast<int>(rng() % 4);
    v1::GenerateResponse m;
    bool ok = true;
    for (int k = 0; k < reads && ok; ++k) ok = reader->Read(&m);
    if (reads > 0 && ok) ++accepted;
    ctx.TryCancel();
    const grpc::Status s = reader->Finish();
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
    EXPECT_TRUE(s.error_code() == grpc::StatusCode::CANCELLED || s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                s.ok())
        << s.error_code() << " " << s.error_message();
  }
  EXPECT_GT(accepted, 10);
  // Every abandoned job stops; then the server still serves a job to the end.
  for (int i = 0; i < 1200; ++i) {
    grpc::ClientContext ctx;
    v1::ListGenerationsResponse list;
    ASSERT_TRUE(stub_->ListGenerations(&ctx, {}, &list).ok());
    bool busy = false;
    for (const auto& g : list.generations()) {
      busy |= g.state() == v1::GENERATION_STATE_RUNNING || g.state() == v1::GENERATION_STATE_QUEUED;
    }
    if (!busy) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  grpc::ClientContext ctx;
  auto reader = stub_->Generate(&ctx, Request(3));
  const Result r = ReadAll(reader.get());
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.messages.back().has_completed());
}

}  // namespace
}  // namespace clipserve::service
