// A fake clipserve.v1.Generation for the client tests, serve it with testing::FakeServer (fakes.h). It uses
// gRPC's callback API: a stream is a small ServerWriteReactor with one write in flight that can wait for its
// client to go away without holding a thread. Header-only.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "clipserve/v1/clipserve.grpc.pb.h"

namespace clipserve::client::testing {

// Generate streams a scripted job (id kJobId, seed: the request's or kDefaultSeed, total steps: the request's or
// 10): an `accepted` per entry of `queue_positions` and one with position 0, then `progress` for each step of
// `progress_steps` (default every step before the last; loss 1/step, similarity step/100, elapsed step/4 s) with
// a frame (FrameBytes(step), in the requested format, 32x24) on every frame_every-th step, then `completed`
// (FinalBytes(), loss 0.5, similarity 0.375, 2.5 s). Knobs, set before the call:
//   fail_after_step   >= 0: after the progress of that step (0: before any event), end with `fail_status`
//   hold_after_events >= 0: after that many events stop writing until the client cancels (then CANCELLED)
// WatchGeneration(kWatchJobId) streams the latest frame (progress 6/10, with a frame), progress 8 (frame) and
// 9 (none), then `completed` (seed kWatchSeed); other ids: NOT_FOUND. CancelGeneration and ListGenerations
// answer canned GenerationInfos for kWatchJobId (NOT_FOUND for other ids). Thread-safe.
class FakeGenerationService final : public v1::Generation::CallbackService {
 public:
  static constexpr char kJobId[] = "gen-1-0000cafe";
  static constexpr char kWatchJobId[] = "gen-7-0000beef";
  static constexpr char kQueuedJobId[] = "gen-8-0000f00d";
  static constexpr uint64_t kDefaultSeed = 424242;
  static constexpr uint64_t kWatchSeed = 77;

  static std::string FrameBytes(uint32_t step) { return absl::StrCat("fake frame of step ", step); }
  static std::string FinalBytes() { return "the fake final image"; }

  void set_queue_positions(std::vector<uint32_t> v) {
    absl::MutexLock l(&mu_);
    queue_positions_ = std::move(v);
  }
  void set_progress_steps(std::vector<uint32_t> v) {
    absl::MutexLock l(&mu_);
    progress_steps_ = std::move(v);
  }
  void set_failure(int after_step, grpc::Status status) {
    absl::MutexLock l(&mu_);
    fail_after_step_ = after_step;
    fail_status_ = std::move(status);
  }
  void set_hold_after_events(int n) {
    absl::MutexLock l(&mu_);
    hold_after_events_ = n;
  }

  std::optional<v1::GenerateRequest> last_request() const {
    absl::MutexLock l(&mu_);
    return last_request_;
  }
  std::vector<std::string> cancelled_jobs() const {
    absl::MutexLock l(&mu_);
    return cancelled_jobs_;
  }
  // Blocks until `n` streams have held (hold_after_events), or `timeout` passes; true when they have.
  bool WaitForHoldingStreams(int n, absl::Duration timeout = absl::Seconds(10)) const {
    absl::MutexLock l(&mu_);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return holding_streams_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  // Blocks until `n` streams have seen their client cancel, or `timeout` passes; true when they have.
  bool WaitForCancelledStreams(int n, absl::Duration timeout = absl::Seconds(10)) const {
    absl::MutexLock l(&mu_);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return cancelled_streams_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext*,
                                                           const v1::GenerateRequest* req) override {
    // The stream starts writing in its constructor: build it outside the lock.
    absl::ReleasableMutexLock l(&mu_);
    last_request_ = *req;
    const uint32_t total = req->steps() > 0 ? req->steps() : 10;
    const uint64_t seed = req->seed() > 0 ? req->seed() : kDefaultSeed;
    const v1::ImageFormat format =
        req->frame_format() == v1::IMAGE_FORMAT_UNSPECIFIED ? v1::IMAGE_FORMAT_PNG : req->frame_format();
    std::vector<v1::GenerateResponse> events;
    std::optional<grpc::Status> failure;
    if (fail_after_step_ == 0) failure = fail_status_;
    std::vector<uint32_t> positions = queue_positions_;
    positions.push_back(0);
    for (size_t i = 0; i < positions.size() && !failure; ++i) {
      v1::GenerationAccepted* a = events.emplace_back().mutable_accepted();
      a->set_job_id(kJobId);
      a->set_queue_position(positions[i]);
      a->set_total_steps(total);
      a->set_seed(seed);
    }
    std::vector<uint32_t> steps = progress_steps_;
    if (steps.empty()) {
      for (uint32_t s = 1; s < total; ++s) steps.push_back(s);
    }
    for (uint32_t s : steps) {
      if (failure) break;
      events.push_back(
          Progress(kJobId, s, total, s % std::max(req->frame_every(), 1u) == 0 && req->frame_every() > 0, format));
      if (fail_after_step_ == static_cast<int>(s)) failure = fail_status_;
    }
    if (!failure) events.push_back(Completed(kJobId, total, seed, format));
    const int hold_after = hold_after_events_;
    l.Release();
    return new Stream(this, std::move(events), failure.value_or(grpc::Status::OK), hold_after);
  }

  grpc::ServerWriteReactor<v1::GenerateResponse>* WatchGeneration(grpc::CallbackServerContext*,
                                                                  const v1::WatchGenerationRequest* req) override {
    std::vector<v1::GenerateResponse> events;
    if (req->job_id() != kWatchJobId) {
      return new Stream(this, {}, NotFound(req->job_id()), -1);
    }
    events.push_back(Progress(kWatchJobId, 6, 10, true, v1::IMAGE_FORMAT_PNG));
    events.push_back(Progress(kWatchJobId, 8, 10, true, v1::IMAGE_FORMAT_PNG));
    events.push_back(Progress(kWatchJobId, 9, 10, false, v1::IMAGE_FORMAT_PNG));
    events.push_back(Completed(kWatchJobId, 10, kWatchSeed, v1::IMAGE_FORMAT_PNG));
    return new Stream(this, std::move(events), grpc::Status::OK, -1);
  }

  grpc::ServerUnaryReactor* CancelGeneration(grpc::CallbackServerContext* context,
                                             const v1::CancelGenerationRequest* req,
                                             v1::GenerationInfo* resp) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (req->job_id() != kWatchJobId) {
      reactor->Finish(NotFound(req->job_id()));
      return reactor;
    }
    {
      absl::MutexLock l(&mu_);
      cancelled_jobs_.push_back(req->job_id());
    }
    *resp = WatchJobInfo();
    resp->set_state(v1::GENERATION_STATE_CANCELLED);
    resp->set_watchers(0);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* ListGenerations(grpc::CallbackServerContext* context, const v1::ListGenerationsRequest*,
                                            v1::ListGenerationsResponse* resp) override {
    *resp->add_generations() = WatchJobInfo();
    v1::GenerationInfo* queued = resp->add_generations();
    queued->set_job_id(kQueuedJobId);
    queued->set_state(v1::GENERATION_STATE_QUEUED);
    queued->set_prompt("a blue square");
    queued->set_total_steps(50);
    queued->set_queue_position(1);
    queued->set_watchers(1);
    queued->set_created_unix_seconds(absl::ToUnixMicros(absl::Now()) * 1e-6 - 4.8);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  // Writes `events` one at a time, then finishes with `end`; after `hold_after` events waits for the client to
  // cancel. Deletes itself when gRPC is done with it.
  class Stream final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
   public:
    Stream(FakeGenerationService* owner, std::vector<v1::GenerateResponse> events, grpc::Status end, int hold_after)
        : owner_(owner), events_(std::move(events)), end_(std::move(end)), hold_after_(hold_after) {
      Step();
    }
    void OnWriteDone(bool ok) override {
      if (!ok) {
        absl::MutexLock l(&mu_);
        cancelled_ = true;
      }
      Step();
    }
    void OnCancel() override {
      owner_->OnStreamCancelled();
      bool finish = false;
      {
        absl::MutexLock l(&mu_);
        cancelled_ = true;
        finish = holding_ && !finished_;
        finished_ = finished_ || finish;
      }
      if (finish) Finish(grpc::Status::CANCELLED);
    }
    void OnDone() override { delete this; }

   private:
    // Starts the next write or finishes; gRPC is called outside the lock (it may run reactions inline).
    void Step() {
      const v1::GenerateResponse* write = nullptr;
      std::optional<grpc::Status> finish;
      {
        absl::MutexLock l(&mu_);
        if (finished_) return;
        if (cancelled_) {
          finish = grpc::Status::CANCELLED;
        } else if (static_cast<int>(next_) == hold_after_) {
          holding_ = true;
        } else if (next_ < events_.size()) {
          write = &events_[next_++];
        } else {
          finish = end_;
        }
        if (finish) finished_ = true;
      }
      if (write != nullptr) {
        StartWrite(write);
      } else if (finish) {
        Finish(*finish);
      } else {
        owner_->OnStreamHolding();
      }
    }

    FakeGenerationService* const owner_;
    const std::vector<v1::GenerateResponse> events_;
    const grpc::Status end_;
    const int hold_after_;
    absl::Mutex mu_;
    size_t next_ ABSL_GUARDED_BY(mu_) = 0;
    bool holding_ ABSL_GUARDED_BY(mu_) = false;
    bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
  };

  static grpc::Status NotFound(const std::string& job_id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no generation '", job_id, "'"));
  }
  static v1::Frame MakeFrame(std::string data, v1::ImageFormat format) {
    v1::Frame f;
    f.set_data(std::move(data));
    f.set_format(format);
    f.set_width(32);
    f.set_height(24);
    return f;
  }
  static v1::GenerateResponse Progress(const std::string& job, uint32_t step, uint32_t total, bool frame,
                                       v1::ImageFormat format) {
    v1::GenerateResponse r;
    v1::GenerationProgress* p = r.mutable_progress();
    p->set_job_id(job);
    p->set_step(step);
    p->set_total_steps(total);
    p->set_loss(1.0f / static_cast<float>(step));
    p->set_similarity(static_cast<float>(step) / 100.0f);
    p->set_elapsed_seconds(step / 4.0);
    if (frame) *p->mutable_frame() = MakeFrame(FrameBytes(step), format);
    return r;
  }
  static v1::GenerateResponse Completed(const std::string& job, uint32_t steps, uint64_t seed, v1::ImageFormat format) {
    v1::GenerateResponse r;
    v1::GenerationCompleted* c = r.mutable_completed();
    c->set_job_id(job);
    *c->mutable_image() = MakeFrame(FinalBytes(), format);
    c->set_steps(steps);
    c->set_loss(0.5f);
    c->set_similarity(0.375f);
    c->set_elapsed_seconds(2.5);
    c->set_seed(seed);
    return r;
  }
  static v1::GenerationInfo WatchJobInfo() {
    v1::GenerationInfo info;
    info.set_job_id(kWatchJobId);
    info.set_state(v1::GENERATION_STATE_RUNNING);
    info.set_prompt("a red circle | a blue background:-0.5");
    info.set_step(37);
    info.set_total_steps(100);
    info.set_watchers(2);
    info.set_detach(true);
    info.set_created_unix_seconds(absl::ToUnixMicros(absl::Now()) * 1e-6 - 124.8);
    return info;
  }

  void OnStreamHolding() {
    absl::MutexLock l(&mu_);
    ++holding_streams_;
  }
  void OnStreamCancelled() {
    absl::MutexLock l(&mu_);
    ++cancelled_streams_;
  }

  mutable absl::Mutex mu_;
  std::vector<uint32_t> queue_positions_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> progress_steps_ ABSL_GUARDED_BY(mu_);
  int fail_after_step_ ABSL_GUARDED_BY(mu_) = -1;
  grpc::Status fail_status_ ABSL_GUARDED_BY(mu_);
  int hold_after_events_ ABSL_GUARDED_BY(mu_) = -1;
  std::optional<v1::GenerateRequest> last_request_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> cancelled_jobs_ ABSL_GUARDED_BY(mu_);
  int holding_streams_ ABSL_GUARDED_BY(mu_) = 0;
  int cancelled_streams_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace clipserve::client::testing
