// clipctl and the client library against an in-process fake clipserve (tests/client/fakes.h) on an ephemeral
// port: the ClipClient calls and status conversion, every verb's JSON and table output, error documents and exit
// codes, and `bench` (closed and open loop, errors tallied by code, batch sizes scraped from a fake /metrics).
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/bench.h"
#include "client/clip_client.h"
#include "client/commands.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/fakes.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::client {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A port nobody listens on.
int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct Outcome {
  int rc = -1;
  std::string out, err;
  nlohmann::json json() const { return nlohmann::json::parse(out); }
};

class ClipctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    dir_ = ::clipserve::testing::ScratchDir("e2e");
    fs::create_directories(dir_ / "imgs");
    std::ofstream(dir_ / "imgs" / "a.jpg") << "aaaa";
    std::ofstream(dir_ / "imgs" / "b.png") << "bbbbbbb";
    std::ofstream(dir_ / "texts.json") << R"(["a photo of a cat", "a dog", ""])";
  }

  Outcome Clipctl(std::vector<std::string> args) {
    args.insert(args.begin(), "--target=" + server_.target());
    return ClipctlRaw(args);
  }
  static Outcome ClipctlRaw(const std::vector<std::string>& args) {
    std::ostringstream out, err;
    Outcome r;
    r.rc = RunClipctl(args, RemoteVerbs(), out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }
  std::string P(const std::string& rel) const { return (dir_ / rel).string(); }

  testing::FakeClipService service_;
  testing::FakeServer server_{&service_};
  fs::path dir_;
};

// ---- the client library ---------------------------------------------------------------------------------------

TEST_F(ClipctlTest, ClientEmbedsTexts) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto client, ClipClient::Create({.target = server_.target()}));
  v1::EmbedTextRequest req;
  req.add_texts("ab");
  req.add_texts("abc");
  req.set_include_norm(true);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(v1::EmbedTextResponse resp, client->EmbedText(req));
  EXPECT_EQ(resp.model(), "fake");
  ASSERT_EQ(resp.embeddings_size(), 2);
  EXPECT_EQ(resp.embeddings(1).norm(), 3);
}

TEST_F(ClipctlTest, ClientConvertsServerStatuses) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto client, ClipClient::Create({.target = server_.target()}));
  v1::RankRequest req;
  req.set_model("nope");
  auto resp = client->Rank(req);
  EXPECT_THAT(resp, StatusIs(absl::StatusCode::kNotFound, "unknown model 'nope' (served: fake)"));
  EXPECT_TRUE(IsServerStatus(resp.status()));
  EXPECT_THAT(client->GetModel("fake"), IsOk());
  EXPECT_THAT(client->ListModels(), IsOk());
}

TEST_F(ClipctlTest, ClientAppliesPerCallDeadlines) {
  ClientOptions options;
  options.target = server_.target();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto client, ClipClient::Create(options));
  v1::EmbedTextRequest req;
  req.add_texts("sleep:300");
  CallOptions call;
  call.timeout = absl::Milliseconds(50);
  EXPECT_THAT(client->EmbedText(req, call), StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  EXPECT_THAT(client->EmbedText(req), IsOk());  // the client's default: 30 s
}

TEST_F(ClipctlTest, ClientReportsAnUnreachableServer) {
  const std::string target = absl::StrCat("127.0.0.1:", ClosedPort());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto client, ClipClient::Create({.target = target}));
  auto resp = client->ListModels();
  EXPECT_THAT(resp, StatusIs(absl::StatusCode::kUnavailable,
                             absl::StrCat("cannot reach ", target, ": connection refused (is the server running?)")));
  EXPECT_FALSE(IsServerStatus(resp.status()));
}

TEST(ClipClient, ValidatesOptions) {
  EXPECT_THAT(ClipClient::Create({.target = ""}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("target")));
  EXPECT_THAT(ClipClient::Create({.target = "h:1", .timeout = absl::ZeroDuration()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("timeout")));
}

// ---- verbs ----------------------------------------------------------------------------------------------------

TEST_F(ClipctlTest, ClassifyJsonIsTheResponseInProtobufsMapping) {
  const Outcome r =
      Clipctl({"classify", "--image=" + P("imgs"), "--labels=cat,dog,bird", "--template=a photo of a {}", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = r.json();
  EXPECT_EQ(j["model"], "fake");
  ASSERT_EQ(j["results"].size(), 2u);  // a.jpg, b.png
  const nlohmann::json& labels = j["results"][0]["labels"];
  ASSERT_EQ(labels.size(), 3u);
  EXPECT_EQ(labels[0]["label"], "cat");
  EXPECT_EQ(labels[0]["index"], 0);
  EXPECT_DOUBLE_EQ(labels[0]["probability"].get<double>(), 0.5);
  EXPECT_GE(labels[0]["probability"].get<double>(), labels[1]["probability"].get<double>());
  EXPECT_GE(labels[1]["probability"].get<double>(), labels[2]["probability"].get<double>());
  EXPECT_TRUE(labels[2].contains("score"));

  const Outcome top =
      Clipctl({"classify", "--image=" + P("imgs/a.jpg"), "--labels=cat,dog,bird", "--top_k=1", "--json"});
  ASSERT_EQ(top.rc, 0) << top.err;
  EXPECT_EQ(top.json()["results"][0]["labels"].size(), 1u);
}

TEST_F(ClipctlTest, ClassifyTable) {
  const Outcome r = Clipctl({"classify", "--image=" + P("imgs/a.jpg"), "--labels", "cat,dog"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(P("imgs/a.jpg")));
  EXPECT_THAT(r.out, HasSubstr("66.67%  0.5000  cat"));
}

TEST_F(ClipctlTest, RankJsonIsSortedWithIndices) {
  const Outcome r = Clipctl({"rank", "--query_text=a cat", "--image=" + P("imgs/*"), "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = r.json();
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["index"], 1);
  EXPECT_EQ(j["results"][1]["index"], 0);
  EXPECT_GT(j["results"][0]["score"].get<double>(), j["results"][1]["score"].get<double>());

  const Outcome texts = Clipctl({"rank", "--query_image=" + P("imgs/a.jpg"), "--candidates=x,y,z", "--top_k=2"});
  ASSERT_EQ(texts.rc, 0) << texts.err;
  EXPECT_THAT(texts.out, HasSubstr("1      2  0.7500  z"));
}

TEST_F(ClipctlTest, TokenizeFromAJsonFile) {
  const Outcome r = Clipctl({"tokenize", "--texts_json=" + P("texts.json"), "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = r.json();
  ASSERT_EQ(j["results"].size(), 3u);
  EXPECT_EQ(j["results"][1]["ids"], nlohmann::json({49406, 'a', ' ', 'd', 'o', 'g', 49407}));
  EXPECT_EQ(j["results"][2]["ids"], nlohmann::json({49406, 49407}));
  EXPECT_EQ(j["results"][0]["exceeds_context"], true);
  EXPECT_EQ(j["context_length"], 8);

  std::ofstream(P("bad.json")) << R"({"not": "an array"})";
  const Outcome bad = Clipctl({"tokenize", "--texts_json=" + P("bad.json")});
  EXPECT_EQ(bad.rc, 1);
  EXPECT_THAT(bad.err, HasSubstr("expected a JSON array of strings"));
}

TEST_F(ClipctlTest, EmbedTextsAndImages) {
  const Outcome texts = Clipctl({"embed", "--text=ab", "--text", "a, b"});
  ASSERT_EQ(texts.rc, 0) << texts.err;
  EXPECT_THAT(texts.out, HasSubstr("model fake: 2 vectors of dimension 4"));
  EXPECT_THAT(texts.out, HasSubstr("a, b"));
  const Outcome images = Clipctl({"embed", "--image=" + P("imgs"), "--json"});
  ASSERT_EQ(images.rc, 0) << images.err;
  const nlohmann::json j = images.json();
  ASSERT_EQ(j["embeddings"].size(), 2u);
  EXPECT_EQ(j["embeddings"][1]["norm"], 7.0);
  EXPECT_EQ(j["embeddings"][0]["truncated"], false);
}

TEST_F(ClipctlTest, SimilarityMatrix) {
  const Outcome r = Clipctl(
      {"similarity", "--row_text=a cat", "--row_image=" + P("imgs/a.jpg"), "--col_image=" + P("imgs"), "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = r.json();
  EXPECT_EQ(j["rows"], 2);
  EXPECT_EQ(j["columns"], 2);
  EXPECT_EQ(j["cosine"], nlohmann::json({1.0, 0.5, 0.5, 1.0}));
  const Outcome square = Clipctl({"similarity", "--text=x", "--text=y"});
  ASSERT_EQ(square.rc, 0) << square.err;
  EXPECT_THAT(square.out, HasSubstr("2 rows x 2 columns"));
}

TEST_F(ClipctlTest, ModelsAndHealth) {
  const Outcome models = Clipctl({"models"});
  ASSERT_EQ(models.rc, 0) << models.err;
  EXPECT_THAT(models.out, HasSubstr("fake"));
  EXPECT_THAT(models.out, HasSubstr("/models/fake"));
  EXPECT_EQ(Clipctl({"models", "--json"}).json()["models"][0]["embedding_dim"], 4);

  const Outcome healthy = Clipctl({"health"});
  EXPECT_EQ(healthy.rc, 0) << healthy.err;
  EXPECT_EQ(healthy.out, "SERVING\n");
  server_.set_serving(false);
  const Outcome down = Clipctl({"health", "--json"});
  EXPECT_EQ(down.rc, 1);
  EXPECT_EQ(down.json()["status"], "NOT_SERVING");
}

// ---- errors ---------------------------------------------------------------------------------------------------

TEST_F(ClipctlTest, ServerErrorsAsJsonAndAsALine) {
  const Outcome json = Clipctl({"--model=nope", "rank", "--query_text=q", "--candidates=a,b", "--json"});
  EXPECT_EQ(json.rc, 1);
  EXPECT_EQ(json.out, R"json({"error":{"code":"NOT_FOUND","message":"unknown model 'nope' (served: fake)"}})json"
                      "\n");
  const Outcome line = Clipctl({"rank", "--model=nope", "--query_text=q", "--candidates=a,b"});
  EXPECT_EQ(line.rc, 1);
  EXPECT_EQ(line.err, "clipctl: NOT_FOUND: unknown model 'nope' (served: fake)\n");
  EXPECT_EQ(line.out, "");
}

TEST_F(ClipctlTest, UnreachableServer) {
  const std::string target = absl::StrCat("127.0.0.1:", ClosedPort());
  const Outcome r = ClipctlRaw({"--target", target, "models"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, absl::StrCat("clipctl: cannot reach ", target, ": connection refused (is the server running?)\n"));
  const Outcome j = ClipctlRaw({"--target", target, "health", "--json"});
  EXPECT_EQ(j.rc, 1);
  EXPECT_EQ(j.json()["error"]["code"], "UNAVAILABLE");
}

TEST_F(ClipctlTest, UsageErrorsExit2WithTheVerbsUsage) {
  const Outcome missing = Clipctl({"classify", "--labels=a,b"});
  EXPECT_EQ(missing.rc, 2);
  EXPECT_THAT(missing.err, StartsWith("clipctl: give at least one --image\n\nusage: clipctl"));
  EXPECT_THAT(missing.err, HasSubstr("--template=TEXT"));

  const Outcome unknown_flag = Clipctl({"rank", "--querytext=x"});
  EXPECT_EQ(unknown_flag.rc, 2);
  EXPECT_THAT(unknown_flag.err, HasSubstr("unknown flag '--querytext' for 'rank'"));

  const Outcome unknown_verb = Clipctl({"frobnicate", "--json"});
  EXPECT_EQ(unknown_verb.rc, 2);
  EXPECT_THAT(unknown_verb.err, HasSubstr("unknown verb 'frobnicate'"));
  EXPECT_EQ(unknown_verb.json()["error"]["code"], "INVALID_ARGUMENT");

  EXPECT_EQ(ClipctlRaw({}).rc, 2);
  const Outcome help = Clipctl({"bench", "--help"});
  EXPECT_EQ(help.rc, 0);
  EXPECT_THAT(help.out, HasSubstr("--concurrency=N"));
  EXPECT_EQ(Clipctl({"--timeout=0", "models"}).rc, 2);
}

TEST_F(ClipctlTest, MissingImageIsAClearError) {
  const Outcome r = Clipctl({"classify", "--image=" + P("imgs/nope.jpg"), "--labels=a,b"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, absl::StrCat("clipctl: image '", P("imgs/nope.jpg"), "': no such file or directory\n"));
  const Outcome j = Clipctl({"classify", "--image=" + P("imgs/nope.jpg"), "--labels=a,b", "--json"});
  EXPECT_EQ(j.json()["error"]["code"], "NOT_FOUND");
}

// ---- bench ----------------------------------------------------------------------------------------------------

std::string BatchMetrics(int batches_of_8, int batches_of_1) {
  const int total = batches_of_8 + batches_of_1;
  return absl::StrCat("# TYPE clipserve_batch_size histogram\n",
                      "clipserve_batch_size_bucket{model=\"fake\",lane=\"clip.text\",le=\"1\"} ", batches_of_1, "\n",
                      "clipserve_batch_size_bucket{model=\"fake\",lane=\"clip.text\",le=\"8\"} ", total, "\n",
                      "clipserve_batch_size_bucket{model=\"fake\",lane=\"clip.text\",le=\"+Inf\"} ", total, "\n",
                      "clipserve_batch_size_sum{model=\"fake\",lane=\"clip.text\"} ", 8 * batches_of_8 + batches_of_1,
                      "\n", "clipserve_batch_size_count{model=\"fake\",lane=\"clip.text\"} ", total, "\n",
                      "clipserve_batch_size_bucket{model=\"other\",lane=\"clip.text\",le=\"+Inf\"} 5\n",
                      "clipserve_batch_size_sum{model=\"other\",lane=\"clip.text\"} 5\n",
                      "clipserve_batch_size_count{model=\"other\",lane=\"clip.text\"} 5\n");
}

TEST_F(ClipctlTest, BenchClosedLoopCountsCallsAndTalliesErrorsByCode) {
  service_.embed_text_fail_every = 4;
  // Scrape 0 (start of the window): 10 batches of 8; scrape 1 (end): 30 batches of 8 and 5 of 1.
  testing::FakeHttpServer metrics(
      [](int n) { return testing::FakeHttpServer::Ok(n == 0 ? BatchMetrics(10, 0) : BatchMetrics(30, 5)); });
  const Outcome r = Clipctl({"bench", "--duration=1", "--warmup=0.2", "--concurrency=8", "--channels=2",
                             "--metrics_url=" + metrics.url("/metrics"), "--json"});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  const nlohmann::json j = r.json();
  const int64_t calls = j["calls"], ok = j["ok"], exhausted = j["errors"].value("RESOURCE_EXHAUSTED", 0);
  EXPECT_GT(calls, 50);
  EXPECT_EQ(calls, ok + exhausted);
  EXPECT_EQ(j["errors"].size(), 1u);
  // Every 4th call fails: a quarter of the window's calls, give or take the warm-up boundary.
  EXPECT_NEAR(static_cast<double>(exhausted), calls / 4.0, calls / 20.0 + 2);
  EXPECT_NEAR(j["throughput_per_s"].get<double>(), static_cast<double>(ok), 1e-6);  // a 1 s window
  EXPECT_GT(j["latency_ms"]["p50"].get<double>(), 0);
  EXPECT_LE(j["latency_ms"]["p50"].get<double>(), j["latency_ms"]["p99"].get<double>());
  EXPECT_LE(j["latency_ms"]["p99"].get<double>(), j["latency_ms"]["max"].get<double>());
  EXPECT_EQ(j["model"], "fake");
  EXPECT_EQ(j["mode"], "closed");
  // The difference of the two scrapes, for the answering model only.
  EXPECT_EQ(metrics.requests(), 2);
  const nlohmann::json& lane = j["batch_size"]["clip.text"];
  EXPECT_EQ(lane["batches"], 25.0);
  EXPECT_DOUBLE_EQ(lane["mean"].get<double>(), (20.0 * 8 + 5) / 25);
  EXPECT_EQ(lane["histogram"][0]["count"], 5.0);
  EXPECT_EQ(lane["histogram"][1]["count"], 20.0);
  EXPECT_EQ(j["batch_size"].size(), 1u);
}

TEST_F(ClipctlTest, BenchOpenLoopSendsAtTheRate) {
  testing::FakeHttpServer metrics([](int) { return testing::FakeHttpServer::Ok("garbage{\n"); });
  const Outcome r =
      Clipctl({"bench", "--rate=200", "--duration=1", "--warmup=0.1", "--metrics_url=" + metrics.url("/m")});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("open loop at 200.0 calls/s (Poisson arrivals)"));
  EXPECT_THAT(r.out, HasSubstr("errors      none"));
  EXPECT_THAT(r.out, HasSubstr("could not scrape"));  // says so and goes on

  const Outcome uniform = Clipctl(
      {"bench", "--rate=200", "--arrival=uniform", "--duration=1", "--warmup=0", "--metrics_url=none", "--json"});
  ASSERT_EQ(uniform.rc, 0) << uniform.err;
  const nlohmann::json j = uniform.json();
  EXPECT_NEAR(j["calls"].get<double>(), 200, 2);
  EXPECT_EQ(j["mode"], "open");
  EXPECT_EQ(j["not_sent"], 0);
}

TEST_F(ClipctlTest, BenchStopsAtOnceOnPermanentErrors) {
  const Outcome r = Clipctl({"bench", "--model=nope", "--duration=5", "--metrics_url=none", "--json"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.json()["error"]["code"], "NOT_FOUND");
  const Outcome refused =
      ClipctlRaw({"--target", absl::StrCat("127.0.0.1:", ClosedPort()), "bench", "--duration=5", "--metrics_url=none"});
  EXPECT_EQ(refused.rc, 1);
  EXPECT_THAT(refused.err, HasSubstr("connection refused (is the server running?)"));
}

// The client's own cost: a callback-API fake answering EmbedText at once with a 512-float vector, 32 callers.
// Prints calls/s and p99 (the numbers quoted in docs); asserts only that the load ran cleanly.
class InstantEmbedService final : public v1::Clip::CallbackService {
 public:
  grpc::ServerUnaryReactor* EmbedText(grpc::CallbackServerContext* context, const v1::EmbedTextRequest* req,
                                      v1::EmbedTextResponse* resp) override {
    resp->set_model("instant");
    for (int i = 0; i < req->texts_size(); ++i) {
      auto* e = resp->add_embeddings();
      e->mutable_values()->Resize(512, 0.044f);
    }
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

double ProcessCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

TEST(BenchOverhead, ClosedLoop32CallersAgainstAnInstantServer) {
  InstantEmbedService service;
  testing::FakeServer server(&service);
  ASSERT_TRUE(server.ok());
  BenchOptions o;
  o.target = server.target();
  o.texts = {"a photo of a cat"};
  o.concurrency = 32;
  o.duration = absl::Seconds(2);
  o.warmup = absl::Milliseconds(500);
  const double cpu0 = ProcessCpuSeconds();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(BenchResult r, RunBench(o));
  const double cpu = ProcessCpuSeconds() - cpu0;
  std::cout << FormatBenchTable(r)
            << absl::StrFormat("CPU (client and fake server together): %.1f us per call\n",
                               1e6 * cpu / static_cast<double>(std::max<int64_t>(r.ok, 1)) /
                                   (absl::ToDoubleSeconds(o.duration + o.warmup) / absl::ToDoubleSeconds(o.duration)));
  EXPECT_GT(r.ok, 100);
  EXPECT_TRUE(r.errors.empty());

  // The acceptance's load, 3,000 calls/s, open loop: what the client adds to the latency at that rate.
  o.rate = 3000;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(BenchResult open, RunBench(o));
  std::cout << FormatBenchTable(open);
  EXPECT_TRUE(open.errors.empty());
}

}  // namespace
}  // namespace clipserve::client
