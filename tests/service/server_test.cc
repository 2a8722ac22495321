// Integration tests: a real server (fixture model) on ephemeral ports, called through a real gRPC channel.
#include "server/service/server.h"

#include <cstdlib>
#include <fstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "clipserve/v1/clipserve.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/file_util.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_server.h"

namespace clipserve::service {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::testing::HasSubstr;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::is_directory(FixtureDir())) return;
    auto config = ParseServerConfig(absl::StrCat(R"(
        listen_address: "127.0.0.1" grpc_port: 0 http_port: 0
        limits { max_items_per_request: 16 max_image_bytes: 1000000 }
        models { name: "fixture" path: ")", (FixtureDir() / "clip").string(), R"("
                 text_lane { max_batch_size: 8 max_queue_delay_us: 2000 }
                 image_lane { max_batch_size: 4 max_queue_delay_us: 2000 } })"),
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
    stub_ = v1::Clip::NewStub(channel_);
  }
  std::string Image(const std::string& name) { return *ReadFileToString(FixtureDir() / "images" / name); }

  static Server* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Clip::Stub> stub_;
};
Server* ServerTest::server_ = nullptr;

TEST_F(ServerTest, EmbedTextReturnsUnitVectorsInOrder) {
  grpc::ClientContext ctx;
  v1::EmbedTextRequest req;
  req.add_texts("a photo of a cat");
  req.add_texts("a photo of a dog");
  req.set_include_norm(true);
  v1::EmbedTextResponse resp;
  ASSERT_TRUE(stub_->EmbedText(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.model(), "fixture");
  ASSERT_EQ(resp.embeddings_size(), 2);
  for (const auto& e : resp.embeddings()) {
    double n = 0;
    for (float v : e.values()) n += v * v;
    EXPECT_NEAR(n, 1.0, 1e-5);
    EXPECT_GT(e.norm(), 0);
  }
  EXPECT_NE(resp.embeddings(0).values(0), resp.embeddings(1).values(0));
}

TEST_F(ServerTest, ClassifyRanksLabelsWithProbabilities) {
  grpc::ClientContext ctx;
  v1::ClassifyRequest req;
  req.add_images()->set_encoded(Image("wide_640x480.jpg"));
  req.add_images()->set_encoded(Image("exact_224.png"));
  for (const char* l : {"cat", "dog", "person"}) req.add_labels(l);
  req.set_template_("a photo of a {}");
  req.set_top_k(2);
  v1::ClassifyResponse resp;
  ASSERT_TRUE(stub_->Classify(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 2);
  for (const auto& r : resp.results()) {
    ASSERT_EQ(r.labels_size(), 2);
    EXPECT_GE(r.labels(0).probability(), r.labels(1).probability());
  }
}

TEST_F(ServerTest, RankAndSimilarityAgree) {
  v1::RankRequest rank;
  rank.set_query_text("a red circle");
  rank.add_candidate_images()->set_encoded(Image("wide_640x480.jpg"));
  rank.add_candidate_images()->set_encoded(Image("tiny_17x33.png"));
  v1::RankResponse ranked;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Rank(&ctx, rank, &ranked).ok());
  }
  ASSERT_EQ(ranked.results_size(), 2);
  EXPECT_GE(ranked.results(0).score(), ranked.results(1).score());
  v1::SimilarityRequest sim;
  sim.add_rows()->set_text("a red circle");
  for (const auto& img : rank.candidate_images()) *sim.add_columns()->mutable_image() = img;
  v1::SimilarityResponse matrix;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Similarity(&ctx, sim, &matrix).ok());
  }
  ASSERT_EQ(matrix.cosine_size(), 2);
  for (const auto& r : ranked.results()) EXPECT_NEAR(matrix.cosine(r.index()), r.score(), 1e-5);
}

TEST_F(ServerTest, GenerationWithoutAVqganIsAFailedPrecondition) {
  auto stub = v1::Generation::NewStub(channel_);
  v1::GenerateRequest req;
  req.set_prompt("a red circle");
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse m;
  EXPECT_FALSE(reader->Read(&m));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("generation.vqgan_path"));
  grpc::ClientContext list_ctx;
  v1::ListGenerationsResponse list;
  EXPECT_EQ(stub->ListGenerations(&list_ctx, {}, &list).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServerTest, TokenizeAndModels) {
  v1::TokenizeRequest req;
  req.add_texts("a photo of a cat");
  v1::TokenizeResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Tokenize(&ctx, req, &resp).ok());
  EXPECT_THAT(resp.results(0).ids(), ::testing::ElementsAre(49406, 320, 1125, 539, 320, 2368, 49407));
  v1::ListModelsResponse models;
  grpc::ClientContext ctx2;
  ASSERT_TRUE(stub_->ListModels(&ctx2, {}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_TRUE(models.models(0).is_default());
  EXPECT_EQ(models.models(0).context_length(), 77u);
}

TEST_F(ServerTest, ConcurrentCallersGetTheRowsTheyWouldGetAlone) {
  std::vector<std::string> texts;
  for (int i = 0; i < 32; ++i) texts.push_back(absl::StrCat("concurrency probe ", i, " with words"));
  auto embed = [&](const std::string& t) {
    grpc::ClientContext ctx;
    v1::EmbedTextRequest req;
    req.add_texts(t);
    v1::EmbedTextResponse resp;
    EXPECT_TRUE(stub_->EmbedText(&ctx, req, &resp).ok());
    return std::vector<float>(resp.embeddings(0).values().begin(), resp.embeddings(0).values().end());
  };
  std::vector<std::vector<float>> together(texts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < texts.size(); ++i) threads.emplace_back([&, i] { together[i] = embed(texts[i]); });
  for (auto& t : threads) t.join();
  // Alone (the cache now holds them, so compare against a fresh embedding of the same text via a batch of one
  // with unnormalized output: both paths must agree with the batched result within float noise).
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<float> alone = embed(texts[i]);
    ASSERT_EQ(alone.size(), together[i].size());
    for (size_t k = 0; k < alone.size(); ++k) EXPECT_NEAR(alone[k], together[i][k], 1e-5);
  }
}

TEST_F(ServerTest, MalformedRequestsGetClearErrorsAndTheServerStaysUp) {
  auto code = [&](auto call) {
    grpc::ClientContext ctx;
    return call(&ctx);
  };
  v1::EmbedTextResponse text_resp;
  v1::EmbedTextRequest empty;
  grpc::Status s = code([&](grpc::ClientContext* c) { return stub_->EmbedText(c, empty, &text_resp); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("no texts"));

  v1::EmbedTextRequest many;
  for (int i = 0; i < 17; ++i) many.add_texts("x");
  s = code([&](grpc::ClientContext* c) { return stub_->EmbedText(c, many, &text_resp); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limit is 16"));

  v1::EmbedTextRequest bad_utf8;
  bad_utf8.add_texts("fine");
  bad_utf8.add_texts(std::string("\xc3\x28", 2));
  s = code([&](grpc::ClientContext* c) { return stub_->EmbedText(c, bad_utf8, &text_resp); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("texts[1]"));

  v1::EmbedTextRequest unknown;
  unknown.set_model("nope");
  unknown.add_texts("x");
  s = code([&](grpc::ClientContext* c) { return stub_->EmbedText(c, unknown, &text_resp); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("served: fixture"));

  v1::EmbedImageResponse image_resp;
  v1::EmbedImageRequest big;
  big.add_images()->set_encoded(std::string(1000001, 'x'));
  s = code([&](grpc::ClientContext* c) { return stub_->EmbedImage(c, big, &image_resp); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limit is 1000000"));

  v1::EmbedImageRequest junk;
  junk.add_images()->set_encoded("definitely not an image");
  s = code([&](grpc::ClientContext* c) { return stub_->EmbedImage(c, junk, &image_resp); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("images[0]"));

  v1::EmbedImageRequest raw;
  raw.add_images()->mutable_raw()->set_width(4);
  s = code([&](grpc::ClientContext* c) { return stub_->EmbedImage(c, raw, &image_resp); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::ClassifyRequest one_label;
  one_label.add_images()->set_encoded(Image("tiny_17x33.png"));
  one_label.add_labels("cat");
  v1::ClassifyResponse classify_resp;
  s = code([&](grpc::ClientContext* c) { return stub_->Classify(c, one_label, &classify_resp); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("at least 2"));

  // Still healthy: a normal call works.
  v1::EmbedTextRequest ok;
  ok.add_texts("still alive");
  EXPECT_TRUE(code([&](grpc::ClientContext* c) { return stub_->EmbedText(c, ok, &text_resp); }).ok());
}

TEST_F(ServerTest, MetricsPassPromtool) {
  // Make every family have series, then lint the server's own exposition.
  {
    grpc::ClientContext ctx;
    v1::ClassifyRequest req;
    req.add_images()->set_encoded(Image("tiny_17x33.png"));
    req.add_labels("a");
    req.add_labels("b");
    v1::ClassifyResponse resp;
    ASSERT_TRUE(stub_->Classify(&ctx, req, &resp).ok());
  }
  const std::string text = server_->CollectMetrics();
  for (const char* family : {"clipserve_requests_total", "clipserve_batch_size_bucket", "clipserve_queue_depth",
                             "clipserve_text_cache_hits_total", "clipserve_model_info", "process_resident_memory_bytes"}) {
    EXPECT_THAT(text, HasSubstr(family));
  }
  ASSERT_EQ(std::system("command -v promtool >/dev/null"), 0) << "promtool missing: install Debian's prometheus";
  const std::string path = ::clipserve::testing::ScratchFile("server_metrics.txt").string();
  std::ofstream(path) << text;
  EXPECT_EQ(std::system(("promtool check metrics < " + path + " > " + path + ".out 2>&1").c_str()), 0)
      << *ReadFileToString(path + ".out");
  EXPECT_EQ(*ReadFileToString(path + ".out"), "");
}

TEST_F(ServerTest, ExpiredDeadlineIsDeadlineExceeded) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::microseconds(1));
  v1::EmbedImageRequest req;
  for (int i = 0; i < 4; ++i) req.add_images()->set_encoded(Image("wide_640x480.jpg"));
  v1::EmbedImageResponse resp;
  EXPECT_EQ(stub_->EmbedImage(&ctx, req, &resp).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

}  // namespace
}  // namespace clipserve::service
