// clipctl's generation verbs and GenerationClient against an in-process fake clipserve.v1.Generation
// (tests/client/fake_generation.h) on an ephemeral port: frames and the final image written with the streamed
// bytes, the JSON result, progress with skipped steps, errors mid-stream, --detach, watch, cancel, generations,
// usage errors, stream deadlines and Ctrl-C (a real SIGINT to this process).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/commands.h"
#include "client/generation_client.h"
#include "client/generation_commands.h"
#include "client/interrupt.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "tests/client/fake_generation.h"
#include "tests/client/fakes.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::client {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using Fake = testing::FakeGenerationService;

struct Outcome {
  int rc = -1;
  std::string out, err;
  nlohmann::json json() const { return nlohmann::json::parse(out); }
  std::vector<std::string> err_lines() const { return absl::StrSplit(err, '\n', absl::SkipEmpty()); }
};

std::string ReadFile(const fs::path& path) {
  absl::StatusOr<std::string> s = ReadFileToString(path);
  return s.ok() ? *s : absl::StrCat("<", s.status().ToString(), ">");
}

std::vector<std::string> FilesIn(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class GenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    dir_ = ::clipserve::testing::ScratchDir("generate");
    std::ofstream(dir_ / "init.png") << "init image bytes";
  }

  Outcome Clipctl(std::vector<std::string> args) {
    args.insert(args.begin(), "--target=" + server_.target());
    std::ostringstream out, err;
    Outcome r;
    r.rc = RunClipctl(args, RemoteVerbs(), out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }
  fs::path P(const std::string& rel) const { return dir_ / rel; }

  Fake fake_;
  testing::FakeClipService clip_;
  testing::FakeServer server_{std::vector<grpc::Service*>{&clip_, &fake_}};
  fs::path dir_;
};

// ---- generate -------------------------------------------------------------------------------------------------

TEST_F(GenerationTest, GenerateWritesTheStreamedFramesAndFinalImageAndPrintsTheResultAsJson) {
  const Outcome r =
      Clipctl({"generate", "--prompt=a red circle | a blue background:-0.5", "--seed=42", "--steps=10", "--size=64x48",
               "--frame_every=2", "--cutn=8", "--lr=0.2", "--init_image=" + P("init.png").string(), "--init_weight=0.5",
               "--out=" + P("run/deep").string(), "--json"});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_EQ(r.err, "");  // --json: no progress
  const nlohmann::json j = r.json();
  EXPECT_EQ(j,
            nlohmann::json::parse(absl::StrCat(R"({"job_id": "gen-1-0000cafe", "seed": 42, "steps": 10,
      "frames": 4, "final": ")",
                                               P("run/deep/final.png").string(), R"(", "similarity": 0.375, "loss": 0.5,
      "elapsed_seconds": 2.5})")));
  EXPECT_THAT(r.out, StartsWith(R"({"job_id":"gen-1-0000cafe","seed":42,"steps":10,"frames":4,"final":)"));

  // Frames on every 2nd step before the last (the final image is the last step's), named by step.
  EXPECT_THAT(FilesIn(P("run/deep")),
              ElementsAre("final.png", "frame_2.png", "frame_4.png", "frame_6.png", "frame_8.png"));
  EXPECT_EQ(ReadFile(P("run/deep/frame_6.png")), Fake::FrameBytes(6));
  EXPECT_EQ(ReadFile(P("run/deep/final.png")), Fake::FinalBytes());

  const std::optional<v1::GenerateRequest> req = fake_.last_request();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->prompt(), "a red circle | a blue background:-0.5");
  EXPECT_EQ(req->seed(), 42u);
  EXPECT_EQ(req->steps(), 10u);
  EXPECT_EQ(req->width(), 64u);
  EXPECT_EQ(req->height(), 48u);
  EXPECT_EQ(req->frame_every(), 2u);
  EXPECT_EQ(req->cutn(), 8u);
  EXPECT_FLOAT_EQ(req->learning_rate(), 0.2f);
  EXPECT_EQ(req->init_image().encoded(), "init image bytes");
  EXPECT_FLOAT_EQ(req->init_weight(), 0.5f);
  EXPECT_FALSE(req->detach());
  EXPECT_FALSE(req->has_frame_format());
}

TEST_F(GenerationTest, FramesAndFinalImageTakeTheExtensionOfTheirFormat) {
  const Outcome r = Clipctl({"generate", "--prompt=x", "--steps=4", "--frame_every=1", "--frame_format=jpeg",
                             "--frame_size=128x96", "--frame_quality=70", "--out=" + P("jpg").string(), "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(FilesIn(P("jpg")), ElementsAre("final.jpg", "frame_1.jpg", "frame_2.jpg", "frame_3.jpg"));
  EXPECT_EQ(r.json()["final"], P("jpg/final.jpg").string());
  EXPECT_EQ(fake_.last_request()->frame_format(), v1::IMAGE_FORMAT_JPEG);
  EXPECT_EQ(fake_.last_request()->frame_width(), 128u);
  EXPECT_EQ(fake_.last_request()->frame_quality(), 70u);
}

// Off a terminal (a log, a pipe) a long run does not write a line per step: one per tenth of the steps, the
// final line once.
TEST_F(GenerationTest, OffATerminalProgressIsWrittenEveryTenthOfTheSteps) {
  std::vector<uint32_t> steps;
  for (uint32_t s = 1; s <= 100; ++s) steps.push_back(s);
  fake_.set_progress_steps(steps);
  const Outcome r = Clipctl({"generate", "--prompt=x", "--steps=100"});
  ASSERT_EQ(r.rc, 0) << r.err;
  int progress_lines = 0;
  std::string last;
  for (const std::string& line : r.err_lines()) {
    if (!absl::StartsWith(line, "step ")) continue;
    ++progress_lines;
    EXPECT_NE(line, last);
    last = line;
  }
  EXPECT_EQ(progress_lines, 11);  // steps 1, 10, 20, ..., 90, and the final 100
  EXPECT_TRUE(absl::StartsWith(last, "step 100/100")) << last;
}

TEST_F(GenerationTest, WithoutOutNothingIsWrittenAndFinalIsNull) {
  const Outcome r = Clipctl({"generate", "--prompt=x", "--frame_every=3", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(r.json()["final"].is_null());
  EXPECT_EQ(r.json()["frames"], 3);  // steps 3, 6, 9 of 10
  EXPECT_EQ(r.json()["seed"], Fake::kDefaultSeed);
}

TEST_F(GenerationTest, ProgressWithSkippedStepsAndTheQueueIsShownLineByLineOffATerminal) {
  fake_.set_queue_positions({2, 1});
  fake_.set_progress_steps({1, 2, 5, 9});  // the server dropped 3, 4, 6, 7, 8 for a slow reader
  const Outcome r = Clipctl({"generate", "--prompt=x", "--steps=10", "--frame_every=1", "--out=" + P("o").string()});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_THAT(r.err_lines(),
              ElementsAre("job gen-1-0000cafe: 10 steps, seed 424242",  //
                          "queued: position 2 (job gen-1-0000cafe)",    //
                          "queued: position 1 (job gen-1-0000cafe)",    //
                          "running (job gen-1-0000cafe)",               //
                          "step 1/10 [==>                 ] loss 1.000 sim 0.010 4.0 steps/s ETA 2s",
                          "step 2/10 [====>               ] loss 0.500 sim 0.020 4.0 steps/s ETA 2s",
                          "step 5/10 [==========>         ] loss 0.200 sim 0.050 4.0 steps/s ETA 1s",
                          "step 9/10 [==================> ] loss 0.111 sim 0.090 4.0 steps/s ETA 0s",
                          "step 10/10 [====================] loss 0.500 sim 0.375 4.0 steps/s ETA 0s"));
  EXPECT_EQ(r.out, absl::StrCat("job gen-1-0000cafe completed: 10 steps in 2.5 s, seed 424242\n"
                                "similarity 0.3750, loss 0.5000\n"
                                "final image 32x24: ",
                                P("o/final.png").string(), "; 4 frames in ", P("o").string(), "\n"));
  // A frame for each step that came, none for the skipped ones.
  EXPECT_THAT(FilesIn(P("o")),
              ElementsAre("final.png", "frame_1.png", "frame_2.png", "frame_5.png", "frame_9.png"));
  EXPECT_EQ(ReadFile(P("o/frame_5.png")), Fake::FrameBytes(5));
}

TEST_F(GenerationTest, AServerErrorMidStreamIsPrintedLikeOtherVerbsErrors) {
  fake_.set_failure(3, grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
  const Outcome json = Clipctl({"generate", "--prompt=x", "--frame_every=1", "--out=" + P("o").string(), "--json"});
  EXPECT_EQ(json.rc, 1);
  EXPECT_EQ(json.out, R"({"error":{"code":"UNAVAILABLE","message":"server is shutting down"}})"
                      "\n");
  // What came before the error stays.
  EXPECT_THAT(FilesIn(P("o")), ElementsAre("frame_1.png", "frame_2.png", "frame_3.png"));

  const Outcome text = Clipctl({"generate", "--prompt=x"});
  EXPECT_EQ(text.rc, 1);
  EXPECT_EQ(text.out, "");
  EXPECT_THAT(text.err, HasSubstr("step 3/10"));
  EXPECT_THAT(text.err, EndsWith("\nclipctl: UNAVAILABLE: server is shutting down\n"));

  fake_.set_failure(0, grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "no generation model is configured"));
  const Outcome none = Clipctl({"generate", "--prompt=x", "--json"});
  EXPECT_EQ(none.rc, 1);
  EXPECT_EQ(none.json()["error"]["code"], "FAILED_PRECONDITION");
}

TEST_F(GenerationTest, DetachReturnsAfterAcceptedAndLeavesTheJobRunning) {
  fake_.set_queue_positions({3});
  fake_.set_hold_after_events(1);  // the job would never end: generate must not wait for it
  const Outcome json = Clipctl({"generate", "--prompt=x", "--detach", "--json"});
  ASSERT_EQ(json.rc, 0) << json.err;
  EXPECT_EQ(json.out, R"({"job_id":"gen-1-0000cafe","queue_position":3})"
                      "\n");
  EXPECT_TRUE(fake_.last_request()->detach());
  EXPECT_TRUE(fake_.WaitForCancelledStreams(1));  // the stream is closed; a detached job survives that

  const Outcome text = Clipctl({"generate", "--prompt=x", "--detach"});
  ASSERT_EQ(text.rc, 0) << text.err;
  EXPECT_EQ(text.out, "gen-1-0000cafe\n");
  EXPECT_THAT(text.err, HasSubstr("`clipctl watch gen-1-0000cafe` follows it"));

  const Outcome with_out = Clipctl({"generate", "--prompt=x", "--detach", "--out=" + P("o").string()});
  EXPECT_EQ(with_out.rc, 2);
  EXPECT_THAT(with_out.err, StartsWith("clipctl: --out has no use with --detach"));
}

TEST_F(GenerationTest, CtrlCCancelsTheStreamAndExits130) {
  // clipctl leaves an ignored SIGINT ignored (a background job): make sure it is not, for this test.
  struct sigaction saved {};
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  ASSERT_EQ(::sigaction(SIGINT, &default_action, &saved), 0);
  fake_.set_hold_after_events(3);  // accepted, steps 1 and 2, then nothing until the client goes
  // A real SIGINT to this process once the n-th stream holds (clipctl's handler is in place before its call).
  auto interrupt_when_holding = [this](int n) {
    return std::thread([this, n] {
      if (fake_.WaitForHoldingStreams(n)) ::kill(::getpid(), SIGINT);
    });
  };
  std::thread interrupter = interrupt_when_holding(1);
  const Outcome r = Clipctl({"generate", "--prompt=x", "--out=" + P("o").string()});
  interrupter.join();
  EXPECT_EQ(r.rc, kInterruptedExitCode);
  EXPECT_EQ(r.out, "");
  // The events the client had not read yet when it cancelled are dropped: it may not know the job's id.
  EXPECT_THAT(r.err, AnyOf(EndsWith("clipctl: interrupted: job gen-1-0000cafe cancelled\n"),
                           EndsWith("clipctl: interrupted\n")));
  EXPECT_TRUE(fake_.WaitForCancelledStreams(1));
  EXPECT_THAT(FilesIn(P("o")), IsEmpty());

  interrupter = interrupt_when_holding(2);
  const Outcome json = Clipctl({"generate", "--prompt=x", "--json"});
  interrupter.join();
  EXPECT_EQ(json.rc, kInterruptedExitCode);
  EXPECT_EQ(json.json()["error"]["code"], "CANCELLED");
  EXPECT_THAT(json.json()["error"]["message"].get<std::string>(), StartsWith("interrupted"));
  EXPECT_TRUE(fake_.WaitForCancelledStreams(2));

  // The handler is gone again: SIGINT is back to what it was.
  struct sigaction now {};
  ::sigaction(SIGINT, &saved, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
}

// ---- watch, cancel, generations -------------------------------------------------------------------------------

TEST_F(GenerationTest, WatchFollowsAJobFromItsLatestFrame) {
  const Outcome r = Clipctl({"watch", Fake::kWatchJobId, "--out=" + P("w").string(), "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = r.json();
  EXPECT_EQ(j["job_id"], Fake::kWatchJobId);
  EXPECT_EQ(j["seed"], Fake::kWatchSeed);
  EXPECT_EQ(j["frames"], 2);
  EXPECT_EQ(j["final"], P("w/final.png").string());
  EXPECT_THAT(FilesIn(P("w")), ElementsAre("final.png", "frame_6.png", "frame_8.png"));
  EXPECT_EQ(ReadFile(P("w/frame_8.png")), Fake::FrameBytes(8));

  const Outcome text = Clipctl({"watch", absl::StrCat("--job=", Fake::kWatchJobId)});
  ASSERT_EQ(text.rc, 0) << text.err;
  EXPECT_THAT(text.err_lines()[0], StartsWith("step 6/10 [============>       ]"));
  EXPECT_THAT(text.out, StartsWith("job gen-7-0000beef completed: 10 steps in 2.5 s, seed 77\n"));
  EXPECT_THAT(text.out, HasSubstr("final image 32x24 (2 frames; not saved: --out=DIR keeps them)"));

  const Outcome unknown = Clipctl({"watch", "gen-9-nope"});
  EXPECT_EQ(unknown.rc, 1);
  EXPECT_EQ(unknown.err, "clipctl: NOT_FOUND: no generation 'gen-9-nope'\n");
}

TEST_F(GenerationTest, CancelPrintsTheJobsState) {
  const Outcome r = Clipctl({"cancel", Fake::kWatchJobId});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "job gen-7-0000beef: cancelled at step 37/100\n");
  EXPECT_THAT(fake_.cancelled_jobs(), ElementsAre(Fake::kWatchJobId));

  const Outcome json = Clipctl({"cancel", "--job", Fake::kWatchJobId, "--json"});
  ASSERT_EQ(json.rc, 0) << json.err;
  EXPECT_EQ(json.json()["state"], "GENERATION_STATE_CANCELLED");
  EXPECT_EQ(json.json()["step"], 37);

  const Outcome unknown = Clipctl({"cancel", "gen-9-nope", "--json"});
  EXPECT_EQ(unknown.rc, 1);
  EXPECT_EQ(unknown.out, R"({"error":{"code":"NOT_FOUND","message":"no generation 'gen-9-nope'"}})"
                         "\n");
}

TEST_F(GenerationTest, GenerationsListsTheJobs) {
  const Outcome r = Clipctl({"generations"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_THAT(lines[0], StartsWith("job             state      step  queue  watchers  detach    age  prompt"));
  EXPECT_EQ(lines[1],
            "gen-7-0000beef  running  37/100      -         2  yes     2m05s  a red circle | a blue background:-0.5");
  EXPECT_EQ(lines[2], "gen-8-0000f00d  queued     0/50      1         1             5s  a blue square");

  const Outcome json = Clipctl({"generations", "--json"});
  ASSERT_EQ(json.rc, 0) << json.err;
  ASSERT_EQ(json.json()["generations"].size(), 2u);
  EXPECT_EQ(json.json()["generations"][1]["state"], "GENERATION_STATE_QUEUED");
}

// ---- usage ----------------------------------------------------------------------------------------------------

TEST_F(GenerationTest, UsageErrorsExit2WithTheVerbsUsage) {
  const Outcome no_prompt = Clipctl({"generate", "--steps=10"});
  EXPECT_EQ(no_prompt.rc, 2);
  EXPECT_THAT(no_prompt.err, StartsWith("clipctl: give a text prompt: --prompt=TEXT\n\nusage: clipctl "
                                        "[--target=HOST:PORT] generate --prompt=TEXT"));
  EXPECT_THAT(no_prompt.err, HasSubstr("--frame_every=N"));

  for (const char* size : {"64x", "x64", "64", "0x64", "64x48x2", "big"}) {
    const Outcome bad = Clipctl({"generate", "--prompt=x", absl::StrCat("--size=", size)});
    EXPECT_EQ(bad.rc, 2) << size;
    EXPECT_THAT(bad.err, StartsWith(absl::StrCat("clipctl: --size must be WIDTHxHEIGHT in pixels, e.g. 256x256, not '",
                                                 size, "'\n")));
  }
  EXPECT_EQ(Clipctl({"generate", "--prompt=x", "--frame_format=gif"}).rc, 2);
  EXPECT_EQ(Clipctl({"generate", "--prompt=x", "--steps=0"}).rc, 2);
  EXPECT_EQ(Clipctl({"generate", "--prompt=x", "--seed=-1"}).rc, 2);
  const Outcome json = Clipctl({"generate", "--json"});
  EXPECT_EQ(json.rc, 2);
  EXPECT_EQ(json.json()["error"]["code"], "INVALID_ARGUMENT");

  // Sizes that are not multiples of the VQGAN's factor are the server's to refuse.
  ASSERT_EQ(Clipctl({"generate", "--prompt=x", "--size=65x63", "--json"}).rc, 0);
  EXPECT_EQ(fake_.last_request()->width(), 65u);
  EXPECT_EQ(fake_.last_request()->height(), 63u);

  const Outcome no_job = Clipctl({"watch"});
  EXPECT_EQ(no_job.rc, 2);
  EXPECT_THAT(no_job.err, StartsWith("clipctl: give the job id: clipctl watch JOB\n\nusage: clipctl "
                                     "[--target=HOST:PORT] watch JOB"));
  EXPECT_EQ(Clipctl({"cancel", "a", "b"}).rc, 2);
  EXPECT_EQ(Clipctl({"generations", "extra"}).rc, 2);
  const Outcome help = Clipctl({"generate", "--help"});
  EXPECT_EQ(help.rc, 0);
  EXPECT_THAT(help.out, HasSubstr("--detach"));
}

// ---- the client library ---------------------------------------------------------------------------------------

TEST_F(GenerationTest, ClientWaitReturnsTheCompletedEventAfterEveryOther) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto client, GenerationClient::Create({.target = server_.target()}));
  v1::GenerateRequest req;
  req.set_prompt("x");
  req.set_steps(3);
  std::vector<std::string> kinds;
  auto stream = client->Generate(req);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(v1::GenerationCompleted done, stream->Wait([&](const v1::GenerateResponse& e) {
    kinds.push_back(e.has_accepted() ? "accepted" : e.has_progress() ? absl::StrCat(e.progress().step()) : "completed");
    return absl::OkStatus();
  }));
  EXPECT_THAT(kinds, ElementsAre("accepted", "1", "2", "completed"));
  EXPECT_EQ(done.steps(), 3u);
  EXPECT_EQ(done.image().data(), Fake::FinalBytes());

  // An error of the callback cancels the stream and is returned.
  auto failing = client->Generate(req);
  EXPECT_THAT(failing->Wait([](const v1::GenerateResponse&) { return absl::DataLossError("disk full"); }),
              StatusIs(absl::StatusCode::kDataLoss, "disk full"));
}

TEST_F(GenerationTest, ClientStreamsEndAtTheirDeadlineWhenGivenOne) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto client, GenerationClient::Create({.target = server_.target()}));
  fake_.set_hold_after_events(1);
  v1::GenerateRequest req;
  req.set_prompt("x");
  StreamOptions options;
  options.timeout = absl::Milliseconds(200);
  auto stream = client->Generate(req, options);
  EXPECT_THAT(stream->Wait([](const v1::GenerateResponse&) { return absl::OkStatus(); }),
              StatusIs(absl::StatusCode::kDeadlineExceeded, ::testing::_));
  // clipctl: --timeout bounds the stream only when given.
  const Outcome r = Clipctl({"--timeout=0.2", "generate", "--prompt=x", "--json"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.json()["error"]["code"], "DEADLINE_EXCEEDED");
}

TEST_F(GenerationTest, ClientUnaryCallsAndStatuses) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto client, GenerationClient::Create({.target = server_.target()}));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(v1::ListGenerationsResponse list, client->List());
  EXPECT_EQ(list.generations_size(), 2);
  auto missing = client->Cancel("nope");
  EXPECT_THAT(missing, StatusIs(absl::StatusCode::kNotFound, "no generation 'nope'"));
  EXPECT_TRUE(IsServerStatus(missing.status()));
  auto watch = client->Watch("nope");
  EXPECT_THAT(watch->Wait([](const v1::GenerateResponse&) { return absl::OkStatus(); }),
              StatusIs(absl::StatusCode::kNotFound, "no generation 'nope'"));
}

TEST(GenerationClient, AServerWithoutTheServiceSaysSo) {
  testing::FakeClipService clip;
  testing::FakeServer server(&clip);
  ASSERT_TRUE(server.ok());
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto client, GenerationClient::Create({.target = server.target()}));
  EXPECT_THAT(client->List(),
              StatusIs(absl::StatusCode::kUnimplemented,
                       absl::StrCat("the server at ", server.target(), " does not serve clipserve.v1.Generation")));
}

// ---- Ctrl-C ---------------------------------------------------------------------------------------------------

// Sets SIGINT's action for a scope.
class ScopedSigint {
 public:
  explicit ScopedSigint(void (*handler)(int)) {
    struct sigaction action {};
    action.sa_handler = handler;
    ::sigaction(SIGINT, &action, &saved_);
  }
  ~ScopedSigint() { ::sigaction(SIGINT, &saved_, nullptr); }
  static void (*Current())(int) {
    struct sigaction now {};
    ::sigaction(SIGINT, nullptr, &now);
    return now.sa_handler;
  }

 private:
  struct sigaction saved_ {};
};

TEST(InterruptWatcher, RunsItsCallbackOnceOnItsThreadAndRestoresTheAction) {
  ScopedSigint default_action(SIG_DFL);
  absl::Notification called;
  std::atomic<int> calls{0};
  const std::thread::id test_thread = std::this_thread::get_id();
  std::thread::id callback_thread;
  {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto watcher, InterruptWatcher::Create([&] {
                                     callback_thread = std::this_thread::get_id();
                                     if (++calls == 1) called.Notify();
                                   }));
    EXPECT_NE(ScopedSigint::Current(), SIG_DFL);
    EXPECT_THAT(InterruptWatcher::Create([] {}), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
    EXPECT_FALSE(watcher->interrupted());
    ::raise(SIGINT);
    ASSERT_TRUE(called.WaitForNotificationWithTimeout(absl::Seconds(10)));
    EXPECT_TRUE(watcher->interrupted());
  }
  EXPECT_EQ(calls.load(), 1);
  EXPECT_NE(callback_thread, test_thread);
  EXPECT_EQ(ScopedSigint::Current(), SIG_DFL);
}

TEST(InterruptWatcher, LeavesAnIgnoredSigintIgnored) {
  ScopedSigint ignored(SIG_IGN);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto watcher, InterruptWatcher::Create([] { ADD_FAILURE() << "called"; }));
  EXPECT_EQ(ScopedSigint::Current(), SIG_IGN);
  ::raise(SIGINT);
  EXPECT_FALSE(watcher->interrupted());
}

// ---- output pieces --------------------------------------------------------------------------------------------

TEST(GenerationOutput, ProgressLine) {
  v1::GenerationProgress p;
  p.set_step(37);
  p.set_loss(0.812f);
  p.set_similarity(0.291f);
  p.set_elapsed_seconds(10);
  EXPECT_EQ(FormatProgressLine(p, 100), "step 37/100 [=======>            ] loss 0.812 sim 0.291 3.7 steps/s ETA 17s");
  EXPECT_EQ(FormatProgressLine(p, 0), "step 37 loss 0.812 sim 0.291 3.7 steps/s");
  p.set_step(0);
  p.set_elapsed_seconds(0);
  EXPECT_EQ(FormatProgressLine(p, 100), "step 0/100 [>                   ] loss 0.812 sim 0.291 -- steps/s ETA --");
}

TEST(GenerationOutput, ShortDurations) {
  EXPECT_EQ(FormatShortDuration(0), "0s");
  EXPECT_EQ(FormatShortDuration(18.4), "18s");
  EXPECT_EQ(FormatShortDuration(125), "2m05s");
  EXPECT_EQ(FormatShortDuration(3720), "1h02m");
  EXPECT_EQ(FormatShortDuration(-1), "--");
}

TEST(GenerationOutput, SizesAndFrameNames) {
  EXPECT_THAT(ParseSize("size", "256x128"), IsOk());
  EXPECT_EQ(ParseSize("size", "256X128").value(), std::make_pair(256u, 128u));
  EXPECT_THAT(ParseSize("frame_size", "1x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--frame_size must be WIDTHxHEIGHT")));
  v1::Frame f;
  f.set_format(v1::IMAGE_FORMAT_WEBP);
  EXPECT_EQ(FrameFileName(7, f), "frame_7.webp");
  EXPECT_EQ(FrameFileName(12345, f), "frame_12345.webp");
  f.clear_format();
  f.set_data("\xFF\xD8\xFF\xE0 jpeg");
  EXPECT_EQ(FrameExtension(f), "jpg");
  f.set_data(std::string("RIFF\x10\0\0\0WEBPVP8 ", 16));
  EXPECT_EQ(FrameExtension(f), "webp");
  f.set_data("\x89PNG\r\n");
  EXPECT_EQ(FrameExtension(f), "png");
}

}  // namespace
}  // namespace clipserve::client
