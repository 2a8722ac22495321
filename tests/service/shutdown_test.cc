// Graceful shutdown under load: every call the server admitted is answered OK. Calls that arrive after the drain
// began are refused: UNAVAILABLE from the service, or, for the few still in transit when the listener closes,
// whatever gRPC's transport answers (UNAVAILABLE or CANCELLED) without the call ever reaching the service.
#include <atomic>
#include <map>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

TEST(ShutdownTest, DrainUnderLoadLosesNoAdmittedCall) {
  CLIPSERVE_REQUIRE_FIXTURES();
  auto config = ParseServerConfig(absl::StrCat(R"(listen_address: "127.0.0.1" grpc_port: 0 http_port: 0
      models { name: "fixture" path: ")", (FixtureDir() / "clip").string(), R"(" text_cache_entries: 0
               image_lane { max_batch_size: 4 max_queue_delay_us: 5000 max_queue_size: 4096 } })"),
                                   "test", "/");
  ASSERT_THAT(config, IsOk());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto server, Server::Create(*config));
  ASSERT_THAT(server->Start(), IsOk());
  ASSERT_THAT(server->LoadModels(), IsOk());
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server->grpc_port()), grpc::InsecureChannelCredentials());
  auto stub = v1::Clip::NewStub(channel);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::string jpeg, ReadFileToString(FixtureDir() / "images" / "wide_640x480.jpg"));

  std::atomic<bool> stop{false};
  absl::Mutex mu;
  int ok = 0;
  std::map<std::string, int> failures;  // "CODE: message" → count
  std::vector<std::thread> callers;
  for (int t = 0; t < 8; ++t) {
    callers.emplace_back([&, t] {
      while (!stop.load()) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        grpc::Status s;
        if (t % 2 == 0) {
          v1::EmbedImageRequest req;
          req.add_images()->set_encoded(jpeg);
          v1::EmbedImageResponse resp;
          s = stub->EmbedImage(&ctx, req, &resp);
        } else {
          v1::EmbedTextRequest req;
          req.add_texts(absl::StrCat("caller ", t, " text"));
          v1::EmbedTextResponse resp;
          s = stub->EmbedText(&ctx, req, &resp);
        }
        absl::MutexLock lock(&mu);
        if (s.ok()) {
          ++ok;
        } else {
          ++failures[absl::StrCat(s.error_code(), ": ", s.error_message())];
          if (s.error_code() == grpc::StatusCode::UNAVAILABLE) return;  // refused: the server is going away
        }
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(500));
  int ok_before;
  {
    absl::MutexLock lock(&mu);
    ok_before = ok;
  }
  server->Shutdown();
  stop = true;

  for (auto& c : callers) c.join();
  EXPECT_GT(ok_before, 0);
  for (const auto& [what, count] : failures) {
    EXPECT_TRUE(absl::StartsWith(what, "14: ") || absl::StartsWith(what, "1: ")) << count << " call(s) failed with " << what;
  }
  // The server's own account: every call it admitted was answered OK, every other answer was a refusal, and
  // the client saw exactly the OKs the server sent.
  const std::string metrics = server->CollectMetrics();
  int server_ok = 0;
  for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
    if (!absl::StartsWith(line, "clipserve_requests_total{")) continue;
    const bool is_ok = absl::StrContains(line, "code=\"OK\"");
    EXPECT_TRUE(is_ok || absl::StrContains(line, "code=\"UNAVAILABLE\"")) << line;
    if (is_ok) server_ok += std::stoi(std::string(line.substr(line.rfind(' ') + 1)));
  }
  absl::MutexLock lock(&mu);
  EXPECT_EQ(server_ok, ok);
}

}  // namespace
}  // namespace clipserve::service
