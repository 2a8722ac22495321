// Overload: a lane whose queue is full refuses calls at once with RESOURCE_EXHAUSTED while the calls it
// accepted finish OK; every call gets exactly one answer and the server stays healthy.
#include <map>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "clipserve/v1/clipserve.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/file_util.h"
#include "server/service/server.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::service {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;

TEST(OverloadTest, FullQueueRefusesWhileAcceptedCallsFinish) {
  CLIPSERVE_REQUIRE_FIXTURES();
  // A long queue delay keeps rows queued, so a burst overfills the 4-row queue deterministically.
  auto config = ParseServerConfig(absl::StrCat(R"(listen_address: "127.0.0.1" grpc_port: 0 http_port: 0
      models { name: "fixture" path: ")", (FixtureDir() / "clip").string(), R"("
               image_lane { max_batch_size: 4 max_queue_delay_us: 300000 max_queue_size: 4 } })"),
                                   "test", "/");
  ASSERT_THAT(config, IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto server, Server::Create(*config));
  ASSERT_THAT(server->Start(), IsOk());
  ASSERT_THAT(server->LoadModels(), IsOk());
  auto stub = v1::Clip::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", server->grpc_port()), grpc::InsecureChannelCredentials()));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::string png, ReadFileToString(FixtureDir() / "images" / "tiny_17x33.png"));

  absl::Mutex mu;
  std::map<grpc::StatusCode, int> codes;
  std::vector<std::thread> callers;
  for (int t = 0; t < 16; ++t) {
    callers.emplace_back([&] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      v1::EmbedImageRequest req;
      req.add_images()->set_encoded(png);
      req.add_images()->set_encoded(png);
      v1::EmbedImageResponse resp;
      const grpc::Status s = stub->EmbedImage(&ctx, req, &resp);
      absl::MutexLock lock(&mu);
      ++codes[s.error_code()];
      if (s.ok()) {
        EXPECT_EQ(resp.embeddings_size(), 2);
      }
      if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        EXPECT_THAT(s.error_message(), ::testing::HasSubstr("full"));
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_GT(codes[grpc::StatusCode::OK], 0);
  EXPECT_GT(codes[grpc::StatusCode::RESOURCE_EXHAUSTED], 0);
  EXPECT_EQ(codes[grpc::StatusCode::OK] + codes[grpc::StatusCode::RESOURCE_EXHAUSTED], 16) << "other codes seen";

  // Healthy afterwards.
  grpc::ClientContext ctx;
  v1::EmbedImageRequest req;
  req.add_images()->set_encoded(png);
  v1::EmbedImageResponse resp;
  EXPECT_TRUE(stub->EmbedImage(&ctx, req, &resp).ok());
}

}  // namespace
}  // namespace clipserve::service
