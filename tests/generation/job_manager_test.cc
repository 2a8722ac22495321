// The JobManager on the fixture models with a real scheduler, worker and CPU pool: the event stream of a job,
// admission limits and queue positions, cancellation (by call and by every watcher going away), detach and
// watch, slow readers, batching of concurrent jobs, shutdown, and frame encoding.
#include "server/generation/job_manager.h"

#include <memory>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/worker_pool.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::generation {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::HasSubstr;

// Reads a subscription as a client would, blocking until the next event (or a timeout).
class Reader {
 public:
  explicit Reader(std::shared_ptr<Subscription> sub) : sub_(std::move(sub)) {
    sub_->SetNotify([this] {
      absl::MutexLock lock(&mu_);
      ++notified_;
    });
  }
  ~Reader() { sub_->SetNotify(nullptr); }

  std::optional<JobEvent> Next(absl::Duration timeout = absl::Seconds(60)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      int seen;
      {
        absl::MutexLock lock(&mu_);
        seen = notified_;
      }
      if (auto e = sub_->Next()) return e;
      absl::MutexLock lock(&mu_);
      auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return notified_ != seen; };
      if (!mu_.AwaitWithDeadline(absl::Condition(&changed), deadline)) return std::nullopt;
    }
  }
  // Every event up to and including the terminal one.
  std::vector<JobEvent> ReadAll() {
    std::vector<JobEvent> out;
    while (auto e = Next()) {
      out.push_back(*e);
      if (e->terminal()) break;
    }
    return out;
  }
  Subscription& sub() { return *sub_; }

 private:
  std::shared_ptr<Subscription> sub_;
  absl::Mutex mu_;
  int notified_ ABSL_GUARDED_BY(mu_) = 0;
};

class CountingObserver : public GenerationObserver {
 public:
  void OnSteps(int jobs, absl::Duration) override {
    absl::MutexLock lock(&mu_);
    max_jobs_per_pass_ = std::max(max_jobs_per_pass_, jobs);
  }
  void OnJobFinished(JobState state) override {
    absl::MutexLock lock(&mu_);
    ++finished_[static_cast<int>(state)];
  }
  void OnFrames(int64_t sent, int64_t dropped) override {
    absl::MutexLock lock(&mu_);
    frames_sent_ += sent;
    frames_dropped_ += dropped;
  }
  int max_jobs_per_pass() {
    absl::MutexLock lock(&mu_);
    return max_jobs_per_pass_;
  }
  int finished(JobState s) {
    absl::MutexLock lock(&mu_);
    return finished_[static_cast<int>(s)];
  }
  int64_t frames_sent() {
    absl::MutexLock lock(&mu_);
    return frames_sent_;
  }

 private:
  absl::Mutex mu_;
  int max_jobs_per_pass_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_[5] ABSL_GUARDED_BY(mu_) = {};
  int64_t frames_sent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t frames_dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CLIPSERVE_REQUIRE_FIXTURES();
    auto models = GenerationModels::Load(FixtureDir() / "clip", FixtureDir() / "vqgan");
    ASSERT_THAT(models, IsOk());
    models_ = *models;
  }
  void TearDown() override {
    if (workers_) workers_->Stop();
    manager_.reset();
    workers_.reset();
    scheduler_.reset();
    pool_.reset();
  }

  void Start(int max_active, int max_queued, int max_batch = 4) {
    auto scheduler = Scheduler::Create({});
    ASSERT_THAT(scheduler, IsOk());
    scheduler_ = std::move(scheduler).value();
    auto pool = ThreadPool::Create({.num_threads = 1});
    ASSERT_THAT(pool, IsOk());
    pool_ = std::move(pool).value();
    JobManagerOptions o;
    o.models = models_;
    o.scheduler = scheduler_.get();
    o.cpu_pool = pool_.get();
    o.max_active_jobs = max_active;
    o.max_queued_jobs = max_queued;
    o.step_batching.max_batch_size = max_batch;
    o.step_batching.max_queue_delay = absl::Milliseconds(20);
    o.step_batching.max_queue_size = 64;
    o.limits.max_side = 64;
    o.observer = observer_;
    auto manager = JobManager::Create(o);
    ASSERT_THAT(manager, IsOk());
    manager_ = std::move(manager).value();
    auto workers = WorkerPool::Create({.scheduler = scheduler_.get()});
    ASSERT_THAT(workers, IsOk());
    workers_ = std::move(workers).value();
  }

  static GenerationRequest Request(int steps, uint64_t seed = 1, int frame_every = 0) {
    GenerationRequest r;
    r.job.prompts = {{.text = "a red circle"}};
    r.job.width = r.job.height = 32;
    r.job.steps = steps;
    r.job.seed = seed;
    r.job.cutouts.cutn = 2;
    r.frames.every = frame_every;
    return r;
  }

  GenerationModels models_;
  std::shared_ptr<CountingObserver> observer_ = std::make_shared<CountingObserver>();
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<JobManager> manager_;
  std::unique_ptr<WorkerPool> workers_;
};

TEST_F(JobManagerTest, StreamsAcceptedThenProgressInOrderThenOneCompletedWithTheFinalImage) {
  Start(2, 2);
  auto submitted = manager_->Submit(Request(6, 1, /*frame_every=*/2));
  ASSERT_THAT(submitted, IsOk());
  Reader reader(submitted->subscription);
  const std::vector<JobEvent> events = reader.ReadAll();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.front().kind, JobEvent::Kind::kQueued);
  EXPECT_EQ(events.front().queue_position, 0);
  EXPECT_EQ(events.front().job_id, submitted->job_id);
  int last_step = 0;
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    ASSERT_EQ(events[i].kind, JobEvent::Kind::kProgress);
    EXPECT_GT(events[i].step, last_step);
    last_step = events[i].step;
    EXPECT_EQ(events[i].total_steps, 6);
    // Frames come with every second step and never with others.
    EXPECT_EQ(!events[i].frame.empty(), events[i].step % 2 == 0 && events[i].step < 6) << events[i].step;
  }
  const JobEvent& done = events.back();
  ASSERT_EQ(done.kind, JobEvent::Kind::kCompleted);
  EXPECT_EQ(done.step, 6);
  const cv::Mat img = cv::imdecode(std::vector<uint8_t>(done.frame.begin(), done.frame.end()), cv::IMREAD_COLOR);
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 32);
  EXPECT_EQ(img.rows, 32);
  EXPECT_FALSE(reader.Next(absl::Milliseconds(50)).has_value());  // nothing after the terminal event
  EXPECT_EQ(observer_->finished(JobState::kCompleted), 1);
}

TEST_F(JobManagerTest, AdmitsUpToTheLimitsAndTellsQueuePositions) {
  Start(/*max_active=*/1, /*max_queued=*/1);
  auto a = manager_->Submit(Request(1000));
  ASSERT_THAT(a, IsOk());
  auto b = manager_->Submit(Request(3));
  ASSERT_THAT(b, IsOk());
  EXPECT_THAT(manager_->Submit(Request(3)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_queued_jobs 1")));
  Reader rb(b->subscription);
  auto first = rb.Next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->kind, JobEvent::Kind::kQueued);
  EXPECT_EQ(first->queue_position, 1);
  EXPECT_EQ(manager_->active_jobs(), 1);
  EXPECT_EQ(manager_->queued_jobs(), 1);
  // Cancelling the running job lets the queued one run to completion.
  ASSERT_THAT(manager_->Cancel(a->job_id), IsOk());
  Reader ra(a->subscription);
  const auto a_events = ra.ReadAll();
  ASSERT_FALSE(a_events.empty());
  EXPECT_EQ(a_events.back().kind, JobEvent::Kind::kFailed);
  EXPECT_EQ(a_events.back().status.code(), absl::StatusCode::kCancelled);
  const auto b_events = rb.ReadAll();
  ASSERT_FALSE(b_events.empty());
  EXPECT_EQ(b_events.back().kind, JobEvent::Kind::kCompleted);
  EXPECT_THAT(manager_->Cancel("gen-nope"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("gen-nope")));
  EXPECT_THAT(manager_->Watch("gen-nope"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("gen-nope")));
}

TEST_F(JobManagerTest, CancelStopsAJobWithinOneStep) {
  Start(1, 0);
  auto job = manager_->Submit(Request(1000));
  ASSERT_THAT(job, IsOk());
  Reader reader(job->subscription);
  std::optional<JobEvent> e;
  do {
    e = reader.Next();
    ASSERT_TRUE(e.has_value());
  } while (e->kind != JobEvent::Kind::kProgress);
  ASSERT_THAT(manager_->Cancel(job->job_id), IsOk());
  const int step_at_cancel = manager_->List()[0].step;
  const auto rest = reader.ReadAll();
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.back().kind, JobEvent::Kind::kFailed);
  EXPECT_EQ(rest.back().status.code(), absl::StatusCode::kCancelled);
  EXPECT_LE(rest.back().step, step_at_cancel + 1);
  const auto list = manager_->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].state, JobState::kCancelled);
  EXPECT_EQ(manager_->active_jobs(), 0);
}

TEST_F(JobManagerTest, ClosingEveryWatcherCancelsUnlessDetached) {
  Start(2, 0);
  auto attached = manager_->Submit(Request(1000, 1));
  GenerationRequest detached_request = Request(6, 2, /*frame_every=*/1);
  detached_request.detach = true;
  auto detached = manager_->Submit(detached_request);
  ASSERT_THAT(attached, IsOk());
  ASSERT_THAT(detached, IsOk());
  attached->subscription->Close();
  detached->subscription->Close();
  // The detached job runs on; a new watcher sees it through to the end.
  auto again = manager_->Watch(detached->job_id);
  ASSERT_THAT(again, IsOk());
  Reader reader(*again);
  const auto events = reader.ReadAll();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind, JobEvent::Kind::kCompleted);
  // The attached one was cancelled.
  for (int i = 0; i < 600 && manager_->active_jobs() > 0; ++i) absl::SleepFor(absl::Milliseconds(50));
  for (const JobSummary& s : manager_->List()) {
    EXPECT_EQ(s.state, s.job_id == attached->job_id ? JobState::kCancelled : JobState::kCompleted) << s.job_id;
  }
  // A finished job can still be watched: its latest frame (step 5), the last step's progress, then the
  // terminal event.
  auto late = manager_->Watch(detached->job_id);
  ASSERT_THAT(late, IsOk());
  Reader late_reader(*late);
  const auto replay = late_reader.ReadAll();
  ASSERT_EQ(replay.size(), 3u);
  EXPECT_EQ(replay[0].kind, JobEvent::Kind::kProgress);
  EXPECT_EQ(replay[0].step, 5);
  EXPECT_FALSE(replay[0].frame.empty());
  EXPECT_EQ(replay[1].kind, JobEvent::Kind::kProgress);
  EXPECT_EQ(replay[1].step, 6);
  EXPECT_TRUE(replay[1].frame.empty());
  EXPECT_EQ(replay[2].kind, JobEvent::Kind::kCompleted);
}

TEST_F(JobManagerTest, ConcurrentJobsSharePassesAndASlowReaderBlocksNobody) {
  Start(3, 0, /*max_batch=*/3);
  auto slow = manager_->Submit(Request(8, 1, /*frame_every=*/1));
  auto a = manager_->Submit(Request(8, 2));
  auto b = manager_->Submit(Request(8, 3));
  ASSERT_THAT(slow, IsOk());
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  Reader ra(a->subscription), rb(b->subscription);
  EXPECT_EQ(ra.ReadAll().back().kind, JobEvent::Kind::kCompleted);
  EXPECT_EQ(rb.ReadAll().back().kind, JobEvent::Kind::kCompleted);
  EXPECT_GE(observer_->max_jobs_per_pass(), 2);
  // The never-read subscription kept only the newest progress and the terminal event.
  Reader rs(slow->subscription);
  const auto events = rs.ReadAll();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back().kind, JobEvent::Kind::kCompleted);
  EXPECT_GT(rs.sub().dropped(), 0);
}

// A reader that falls behind must still get the newest frame: a frameless progress after it replaces older
// progress, not the frame. (The step after a frame replaced it, so a client whose writes took a little longer
// than a step saw progress messages but never a frame.)
TEST_F(JobManagerTest, AReaderThatFellBehindStillGetsTheNewestFrame) {
  Start(1, 0);
  // A frame with step 4; steps 5 and 6 without one (the last step's progress never has a frame: the completed
  // message carries the final image).
  auto job = manager_->Submit(Request(6, 1, /*frame_every=*/4));
  ASSERT_THAT(job, IsOk());
  for (int i = 0; i < 1200 && manager_->List()[0].state != JobState::kCompleted; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(manager_->List()[0].state, JobState::kCompleted);
  Reader reader(job->subscription);
  const std::vector<JobEvent> events = reader.ReadAll();
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].kind, JobEvent::Kind::kQueued);
  EXPECT_EQ(events[1].kind, JobEvent::Kind::kProgress);
  EXPECT_EQ(events[1].step, 4);
  EXPECT_FALSE(events[1].frame.empty());
  EXPECT_EQ(events[2].kind, JobEvent::Kind::kProgress);
  EXPECT_EQ(events[2].step, 6);
  EXPECT_TRUE(events[2].frame.empty());
  EXPECT_EQ(events[3].kind, JobEvent::Kind::kCompleted);
  EXPECT_EQ(reader.sub().dropped(), 4);  // steps 1, 2, 3 and 5
  EXPECT_EQ(observer_->frames_sent(), 2);  // step 4's frame and the final image

  // A watcher of the finished job: the latest frame, the progress after it, the terminal event.
  auto watch = manager_->Watch(job->job_id);
  ASSERT_THAT(watch, IsOk());
  Reader watcher(*watch);
  const std::vector<JobEvent> replay = watcher.ReadAll();
  ASSERT_EQ(replay.size(), 3u);
  EXPECT_EQ(replay[0].step, 4);
  EXPECT_FALSE(replay[0].frame.empty());
  EXPECT_EQ(replay[1].step, 6);
  EXPECT_EQ(replay[2].kind, JobEvent::Kind::kCompleted);
}

TEST_F(JobManagerTest, ShutdownFailsQueuedAndRunningJobsUnavailable) {
  Start(1, 1);
  auto running = manager_->Submit(Request(1000, 1));
  auto queued = manager_->Submit(Request(1000, 2));
  ASSERT_THAT(running, IsOk());
  ASSERT_THAT(queued, IsOk());
  manager_->Shutdown();
  EXPECT_THAT(manager_->Submit(Request(3)), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  for (auto* s : {&*running, &*queued}) {
    Reader r(s->subscription);
    const auto events = r.ReadAll();
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind, JobEvent::Kind::kFailed);
    EXPECT_EQ(events.back().status.code(), absl::StatusCode::kUnavailable);
  }
}

TEST_F(JobManagerTest, RejectsRequestsBeyondTheLimitsNamingTheField) {
  Start(1, 1);
  GenerationRequest r = Request(3);
  r.job.width = 128;
  EXPECT_THAT(manager_->Submit(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("width: 128")));
  r = Request(3);
  r.job.steps = 0;
  EXPECT_THAT(manager_->Submit(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("steps")));
  r = Request(3);
  r.frames.quality = 0;
  EXPECT_THAT(manager_->Submit(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("frame_quality")));
  r = Request(3);
  r.job.width = 30;
  EXPECT_THAT(manager_->Submit(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("multiple")));
  EXPECT_EQ(manager_->active_jobs(), 0);
}

TEST(EncodeFrameTest, EncodesEachFormatAtTheRequestedSize) {
  const at::Tensor image = at::rand({3, 16, 24});
  for (FrameFormat format : {FrameFormat::kPng, FrameFormat::kJpeg, FrameFormat::kWebp}) {
    auto bytes = EncodeFrame(image, {.format = format, .width = 48, .height = 32});
    ASSERT_THAT(bytes, IsOk());
    const cv::Mat img = cv::imdecode(std::vector<uint8_t>(bytes->begin(), bytes->end()), cv::IMREAD_COLOR);
    ASSERT_FALSE(img.empty());
    EXPECT_EQ(img.cols, 48);
    EXPECT_EQ(img.rows, 32);
  }
  // PNG at the native size is lossless.
  auto png = EncodeFrame(image, {});
  ASSERT_THAT(png, IsOk());
  cv::Mat bgr = cv::imdecode(std::vector<uint8_t>(png->begin(), png->end()), cv::IMREAD_COLOR);
  const at::Tensor want = image.mul(255).round().to(at::kByte);
  EXPECT_EQ(bgr.at<cv::Vec3b>(5, 7)[2], want[0][5][7].item<uint8_t>());
  EXPECT_EQ(bgr.at<cv::Vec3b>(5, 7)[0], want[2][5][7].item<uint8_t>());
}

}  // namespace
}  // namespace clipserve::generation
