// Generation as a service (DESIGN.md §2, generation lane): the JobManager admits generation jobs, runs at most
// `max_active_jobs` of them at once and queues up to `max_queued_jobs` more, and drives each active job one
// optimisation step at a time through the scheduler's `generation.step` lane, so that the steps of concurrent
// jobs are batched into shared passes (generator.h). Every event of a job (queue position, progress with frames,
// the one terminal event) goes to the job's watchers through Subscriptions, which never block the manager: a
// watcher that falls behind loses intermediate progress events (only the newest is kept), never the terminal
// one.
//
// Ownership and threads. The manager owns the jobs; watchers hold shared_ptr<Subscription>. Submit, Watch,
// Cancel and List may be called from any thread and never block on a step. Steps run on the scheduler's worker
// threads; frames are encoded on the CPU pool. A job whose every watcher has closed its Subscription before the
// end is cancelled unless it was submitted with `detach`; a cancelled job stops before its next step. Finished
// jobs stay watchable for `keep_finished` (at most `max_finished` of them).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/clock.h"
#include "server/core/scheduler.h"
#include "server/core/thread_pool.h"
#include "server/generation/generator.h"

namespace clipserve::generation {

enum class FrameFormat { kPng, kJpeg, kWebp };

// How a job's frames are encoded and how often they are sent.
struct FrameOptions {
  int every = 0;  // a frame with every `every`-th step's progress (0: no intermediate frames)
  FrameFormat format = FrameFormat::kPng;
  int width = 0;  // 0: the generation's own size (frames are resized otherwise)
  int height = 0;
  int quality = 90;  // JPEG and WebP, 1..100
};

// Encodes an image [3, H, W] float in [0, 1] (CPU) at the options' size and format.
absl::StatusOr<std::string> EncodeFrame(const at::Tensor& image, const FrameOptions& options);

struct GenerationRequest {
  JobOptions job;
  FrameOptions frames;
  bool detach = false;  // keep running when every watcher has gone
};

// Limits on what a request may ask; beyond them, INVALID_ARGUMENT naming the field and the limit.
struct GenerationLimits {
  int max_side = 256;      // width and height, pixels
  int max_steps = 1000;
  int max_cutn = 64;
  int max_frame_side = 1024;
};

enum class JobState { kQueued, kRunning, kCompleted, kCancelled, kFailed };
const char* JobStateName(JobState state);

// One message for a watcher.
struct JobEvent {
  enum class Kind {
    kQueued,     // queue_position (1 = next to start); sent on admission and as the queue moves
    kProgress,   // one step done: step, loss, similarity, elapsed, and a frame when one was due
    kCompleted,  // terminal: the final image (frame), step = total_steps
    kFailed,     // terminal: status (CANCELLED, UNAVAILABLE, INTERNAL, ...)
  };
  Kind kind = Kind::kQueued;
  std::string job_id;
  int queue_position = 0;
  int step = 0;
  int total_steps = 0;
  float loss = 0;
  float similarity = 0;    // kCompleted: of the last step
  absl::Duration elapsed;  // since the job started running
  std::string frame;       // encoded image; empty when none
  FrameFormat frame_format = FrameFormat::kPng;
  int frame_width = 0;
  int frame_height = 0;
  absl::Status status;  // kFailed only
  uint64_t seed = 0;    // the job's seed (every event)

  bool terminal() const { return kind == Kind::kCompleted || kind == Kind::kFailed; }
};

// Counters and gauges the manager reports (the service maps them to Prometheus metrics).
class GenerationObserver {
 public:
  virtual ~GenerationObserver() = default;
  virtual void OnJobCounts(int /*active*/, int /*queued*/) {}
  virtual void OnJobFinished(JobState /*state*/) {}
  virtual void OnSteps(int /*jobs*/, absl::Duration /*time*/) {}
  virtual void OnFrames(int64_t /*sent*/, int64_t /*dropped*/) {}
};

// One watcher's mailbox. The manager pushes events; the watcher pulls them with Next() at its own pace.
// Thread-safe; nothing here blocks beyond a short critical section.
class Subscription {
 public:
  // The next event to deliver, oldest first, or nullopt when there is none now. Of the non-terminal events only
  // the newest queue position, the newest progress with a frame and the newest progress after that one wait
  // here; older ones are replaced (and counted as dropped).
  std::optional<JobEvent> Next();
  // Called (on the pushing thread, outside the manager's locks) whenever an event arrives; the watcher then
  // calls Next(). Set it before the first event can matter; may be called again to replace it.
  void SetNotify(std::function<void()> notify);
  // The watcher goes away: no more events; the manager may cancel the job (see the file comment). Idempotent.
  void Close();
  bool closed() const;
  // Progress events replaced before delivery.
  int64_t dropped() const;
  const std::string& job_id() const { return job_id_; }

  Subscription(std::string job_id, std::function<void()> on_close, std::shared_ptr<GenerationObserver> observer);

 private:
  friend class JobManager;
  // Returns false (and keeps nothing) once closed.
  bool Push(JobEvent event);

  const std::string job_id_;
  const std::function<void()> on_close_;
  const std::shared_ptr<GenerationObserver> observer_;
  mutable absl::Mutex mu_;
  std::function<void()> notify_ ABSL_GUARDED_BY(mu_);
  std::optional<JobEvent> queued_ ABSL_GUARDED_BY(mu_);    // newest queue position
  std::optional<JobEvent> frame_progress_ ABSL_GUARDED_BY(mu_);  // newest progress that carries a frame
  std::optional<JobEvent> progress_ ABSL_GUARDED_BY(mu_);        // newest frameless progress after it
  std::optional<JobEvent> terminal_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

struct JobSummary {
  std::string job_id;
  JobState state = JobState::kQueued;
  std::string prompt;  // the text prompts as submitted, "|"-joined
  int step = 0;
  int total_steps = 0;
  int queue_position = 0;  // kQueued only
  int watchers = 0;
  bool detach = false;
  absl::Time created;
};

struct JobManagerOptions {
  GenerationModels models;
  Scheduler* scheduler = nullptr;  // required; the manager adds its lane to it
  std::string lane_name = "generation.step";
  // max_batch_size is the most job-steps in one pass; max_queue_size must be >= max_active_jobs.
  BatchingOptions step_batching;
  ThreadPool* cpu_pool = nullptr;  // required: frame encoding
  Clock* clock = nullptr;          // null: Clock::Real()
  int max_active_jobs = 4;
  int max_queued_jobs = 16;
  GenerationLimits limits;
  absl::Duration keep_finished = absl::Minutes(10);
  int max_finished = 100;
  std::shared_ptr<GenerationObserver> observer;
  std::shared_ptr<LaneObserver> lane_observer;  // of the step lane
};

class JobManager {
 public:
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(const JobManagerOptions& options);
  // Calls Shutdown(). Destroy the manager only after the workers of its scheduler have stopped (no step may be
  // running); Subscriptions may outlive it (closing them then does nothing).
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  struct Submitted {
    std::string job_id;
    std::shared_ptr<Subscription> subscription;  // its first event says where the job is
  };
  // Checks the request against the limits and the models, creates the job and starts it or queues it.
  // INVALID_ARGUMENT naming the field; RESOURCE_EXHAUSTED when max_queued_jobs are already waiting;
  // UNAVAILABLE after Shutdown.
  absl::StatusOr<Submitted> Submit(GenerationRequest request);
  // A new watcher of a job: its first events are the latest progress (with the latest frame) and, for a
  // finished job, the terminal event. NOT_FOUND for an unknown (or forgotten) id.
  absl::StatusOr<std::shared_ptr<Subscription>> Watch(const std::string& job_id);
  // Cancels a queued or running job (its watchers get CANCELLED); OK if it has already finished; NOT_FOUND
  // for an unknown id.
  absl::Status Cancel(const std::string& job_id);
  std::vector<JobSummary> List() const;
  // Refuses new jobs, fails queued ones UNAVAILABLE and stops running ones before their next step (UNAVAILABLE).
  // Does not wait: the lane's drain does.
  void Shutdown();

  int active_jobs() const;
  int queued_jobs() const;

 private:
  struct Record;
  class StepTask;
  struct Link;  // lets Subscriptions reach the manager while it exists

  explicit JobManager(const JobManagerOptions& options);
  absl::Status CheckLimits(const GenerationRequest& request) const;
  // Runs one batch of the lane.
  absl::Status RunSteps(absl::Span<Task* const> batch);
  // Called by a StepTask's Finish, on a worker thread (or the thread that dropped the task).
  void OnStepDone(const std::shared_ptr<Record>& record, const absl::Status& status, const StepStats& stats,
                  const at::Tensor& final_image);
  absl::Status EnqueueStep(const std::shared_ptr<Record>& record);
  void Finish(const std::shared_ptr<Record>& record, JobState state, const absl::Status& status,
              const at::Tensor& final_image);
  // Starts queued jobs while slots are free (into `to_start`) and lists the queued ones whose position changed.
  void PromoteLocked(std::vector<std::shared_ptr<Record>>* to_start,
                     std::vector<std::pair<std::shared_ptr<Record>, int>>* moved) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AnnouncePositions(const std::vector<std::pair<std::shared_ptr<Record>, int>>& moved);
  void ForgetOldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWatcherClosed(const std::string& job_id);
  void ReportCountsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Delivers a job's events in order, encoding frames on the CPU pool.
  void PublishInOrder(const std::shared_ptr<Record>& record, JobEvent event, at::Tensor image);
  void DrainPublications(const std::shared_ptr<Record>& record);
  std::shared_ptr<Subscription> NewSubscription(const std::string& job_id);

  const JobManagerOptions options_;
  Clock* const clock_;
  std::shared_ptr<Link> link_;
  Lane* lane_ = nullptr;
  mutable absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, std::shared_ptr<Record>> jobs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Record>> queue_ ABSL_GUARDED_BY(mu_);
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::string> finished_order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace clipserve::generation
