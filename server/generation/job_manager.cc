#include "server/generation/job_manager.h"

#include <algorithm>
#include <random>
#include <utility>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/models/tensor_io.h"

namespace clipserve::generation {

// ---------------------------------------------------------------------------------------------------------------
// Frames

absl::StatusOr<std::string> EncodeFrame(const at::Tensor& image, const FrameOptions& options) {
  if (!image.defined() || image.dim() != 3 || image.size(0) != 3) {
    return absl::InvalidArgumentError("EncodeFrame: expected a [3, H, W] image");
  }
  const at::Tensor hwc =
      image.detach().to(at::kCPU, at::kFloat).clamp(0, 1).mul(255).round().to(at::kByte).permute({1, 2, 0}).contiguous();
  const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  cv::Mat rgb(h, w, CV_8UC3, hwc.data_ptr<uint8_t>());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  const int out_w = options.width > 0 ? options.width : w;
  const int out_h = options.height > 0 ? options.height : h;
  if (out_w != w || out_h != h) {
    cv::Mat resized;
    const bool shrink = out_w <= w && out_h <= h;
    cv::resize(bgr, resized, cv::Size(out_w, out_h), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_NEAREST);
    bgr = resized;
  }
  std::vector<uint8_t> bytes;
  bool ok = false;
  switch (options.format) {
    case FrameFormat::kPng:
      ok = cv::imencode(".png", bgr, bytes);
      break;
    case FrameFormat::kJpeg:
      ok = cv::imencode(".jpg", bgr, bytes, {cv::IMWRITE_JPEG_QUALITY, options.quality});
      break;
    case FrameFormat::kWebp:
      ok = cv::imencode(".webp", bgr, bytes, {cv::IMWRITE_WEBP_QUALITY, options.quality});
      break;
  }
  if (!ok) return absl::InternalError("encoding a frame failed");
  return std::string(bytes.begin(), bytes.end());
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kCompleted:
      return "completed";
    case JobState::kCancelled:
      return "cancelled";
    case JobState::kFailed:
      return "failed";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------------------------
// Subscription

Subscription::Subscription(std::string job_id, std::function<void()> on_close,
                           std::shared_ptr<GenerationObserver> observer)
    : job_id_(std::move(job_id)), on_close_(std::move(on_close)), observer_(std::move(observer)) {}

bool Subscription::Push(JobEvent event) {
  std::function<void()> notify;
  bool dropped_frame = false;
  {
    absl::MutexLock lock(&mu_);
    if (closed_ || terminal_.has_value()) return false;
    switch (event.kind) {
      case JobEvent::Kind::kQueued:
        queued_ = std::move(event);
        break;
      case JobEvent::Kind::kProgress:
        // A frame replaces the older frame and any progress after it; a frameless progress replaces only the
        // frameless one before it, so the newest frame waits until the reader takes it.
        if (progress_.has_value()) ++dropped_;
        if (event.frame.empty()) {
          progress_ = std::move(event);
        } else {
          if (frame_progress_.has_value()) {
            ++dropped_;
            dropped_frame = true;
          }
          frame_progress_ = std::move(event);
          progress_.reset();
        }
        break;
      case JobEvent::Kind::kCompleted:
      case JobEvent::Kind::kFailed:
        terminal_ = std::move(event);
        break;
    }
    notify = notify_;
  }
  if (dropped_frame && observer_) observer_->OnFrames(0, 1);
  if (notify) notify();
  return true;
}

std::optional<JobEvent> Subscription::Next() {
  std::optional<JobEvent> out;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return std::nullopt;
    // Queue positions come before any progress, the newest frame before the progress after it, and the terminal
    // event after everything else.
    std::optional<JobEvent>* slot = queued_.has_value()           ? &queued_
                                    : frame_progress_.has_value() ? &frame_progress_
                                    : progress_.has_value()       ? &progress_
                                                                  : &terminal_;
    if (!slot->has_value()) return std::nullopt;
    out = std::move(**slot);
    slot->reset();
    // After the terminal event the subscription is done: nothing more is accepted or returned.
    if (out->terminal()) closed_ = true;
  }
  if (!out->frame.empty() && observer_) observer_->OnFrames(1, 0);
  return out;
}

void Subscription::SetNotify(std::function<void()> notify) {
  absl::MutexLock lock(&mu_);
  notify_ = std::move(notify);
}

void Subscription::Close() {
  bool was_open;
  {
    absl::MutexLock lock(&mu_);
    was_open = !closed_;
    closed_ = true;
    notify_ = nullptr;
    queued_.reset();
    frame_progress_.reset();
    progress_.reset();
  }
  if (was_open && on_close_) on_close_();
}

bool Subscription::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

int64_t Subscription::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

// ---------------------------------------------------------------------------------------------------------------
// Records and step tasks

struct JobManager::Link {
  absl::Mutex mu;
  JobManager* manager ABSL_GUARDED_BY(mu) = nullptr;
};

struct JobManager::Record {
  std::string id;
  std::string prompt;
  FrameOptions frames;
  bool detach = false;
  int total_steps = 0;
  uint64_t seed = 0;
  absl::Time created;
  // Used only by the thread running the job's step (one step of a job is in flight at a time).
  std::unique_ptr<Job> job;
  // Cancels the queued step of this job.
  std::shared_ptr<CancellationFlag> cancel = std::make_shared<CancellationFlag>();

  // Guarded by the manager's mu_.
  JobState state = JobState::kQueued;
  absl::Time started;
  absl::Time finished;
  int step = 0;
  float loss = 0;  // of the last step
  float similarity = 0;
  int queue_position = 0;
  bool cancel_requested = false;
  absl::Status cancel_status;

  // Watchers and what a new watcher is shown first; the publication queue that keeps events in order.
  absl::Mutex watch_mu;
  std::vector<std::weak_ptr<Subscription>> watchers ABSL_GUARDED_BY(watch_mu);
  std::optional<JobEvent> last_queued ABSL_GUARDED_BY(watch_mu);
  std::optional<JobEvent> last_frame ABSL_GUARDED_BY(watch_mu);  // newest progress that carried a frame
  std::optional<JobEvent> last_progress ABSL_GUARDED_BY(watch_mu);
  std::optional<JobEvent> terminal ABSL_GUARDED_BY(watch_mu);
  struct Pending {
    JobEvent event;
    at::Tensor image;  // encoded into event.frame before delivery
  };
  std::deque<Pending> pending ABSL_GUARDED_BY(watch_mu);
  bool draining ABSL_GUARDED_BY(watch_mu) = false;
};

class JobManager::StepTask : public Task {
 public:
  StepTask(JobManager* manager, std::shared_ptr<Record> record) : manager_(manager), record_(std::move(record)) {}

  Record& record() { return *record_; }
  void set_result(StepStats stats, at::Tensor final_image) {
    stats_ = std::move(stats);
    final_image_ = std::move(final_image);
  }

 protected:
  void Finish(absl::Status status) override { manager_->OnStepDone(record_, status, stats_, final_image_); }

 private:
  JobManager* const manager_;
  const std::shared_ptr<Record> record_;
  StepStats stats_;
  at::Tensor final_image_;
};

// ---------------------------------------------------------------------------------------------------------------
// JobManager

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(const JobManagerOptions& options) {
  if (options.scheduler == nullptr || options.cpu_pool == nullptr) {
    return absl::InvalidArgumentError("JobManager needs a scheduler and a CPU pool");
  }
  if (options.models.vqgan == nullptr || options.models.clip == nullptr) {
    return absl::InvalidArgumentError("JobManager needs the generation models (GenerationModels::Create)");
  }
  if (options.max_active_jobs < 1 || options.max_queued_jobs < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_active_jobs must be >= 1 and max_queued_jobs >= 0, got ",
                                                   options.max_active_jobs, " and ", options.max_queued_jobs));
  }
  if (options.step_batching.max_queue_size < options.max_active_jobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("the step lane's max_queue_size (", options.step_batching.max_queue_size,
                     ") must be at least max_active_jobs (", options.max_active_jobs, ")"));
  }
  auto manager = std::unique_ptr<JobManager>(new JobManager(options));
  JobManager* raw = manager.get();
  CLIPSERVE_ASSIGN_OR_RETURN(
      manager->lane_, options.scheduler->AddLane({.name = options.lane_name,
                                                  .batching = options.step_batching,
                                                  .runner = [raw](absl::Span<Task* const> batch) {
                                                    return raw->RunSteps(batch);
                                                  },
                                                  .observer = options.lane_observer}));
  return manager;
}

JobManager::JobManager(const JobManagerOptions& options)
    : options_(options),
      clock_(options.clock != nullptr ? options.clock : Clock::Real()),
      link_(std::make_shared<Link>()) {
  absl::MutexLock lock(&link_->mu);
  link_->manager = this;
}

JobManager::~JobManager() {
  Shutdown();
  absl::MutexLock lock(&link_->mu);
  link_->manager = nullptr;
}

absl::Status JobManager::CheckLimits(const GenerationRequest& request) const {
  const GenerationLimits& l = options_.limits;
  const JobOptions& j = request.job;
  auto over = [](const char* field, int64_t value, int64_t lo, int64_t hi) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", value, " is outside the allowed range [", lo, ", ",
                                                   hi, "]"));
  };
  if (j.width < 1 || j.width > l.max_side) return over("width", j.width, 1, l.max_side);
  if (j.height < 1 || j.height > l.max_side) return over("height", j.height, 1, l.max_side);
  if (j.steps < 1 || j.steps > l.max_steps) return over("steps", j.steps, 1, l.max_steps);
  if (j.cutouts.cutn < 1 || j.cutouts.cutn > l.max_cutn) return over("cutn", j.cutouts.cutn, 1, l.max_cutn);
  const FrameOptions& f = request.frames;
  if (f.every < 0 || f.every > j.steps) return over("frame_every", f.every, 0, j.steps);
  if (f.width < 0 || f.width > l.max_frame_side) return over("frame_width", f.width, 0, l.max_frame_side);
  if (f.height < 0 || f.height > l.max_frame_side) return over("frame_height", f.height, 0, l.max_frame_side);
  if (f.quality < 1 || f.quality > 100) return over("frame_quality", f.quality, 1, 100);
  return absl::OkStatus();
}

std::shared_ptr<Subscription> JobManager::NewSubscription(const std::string& job_id) {
  std::weak_ptr<Link> link = link_;
  return std::make_shared<Subscription>(
      job_id,
      [link, job_id] {
        if (auto l = link.lock()) {
          absl::MutexLock lock(&l->mu);
          if (l->manager != nullptr) l->manager->OnWatcherClosed(job_id);
        }
      },
      options_.observer);
}

absl::StatusOr<JobManager::Submitted> JobManager::Submit(GenerationRequest request) {
  CLIPSERVE_RETURN_IF_ERROR(CheckLimits(request));
  auto record = std::make_shared<Record>();
  std::vector<std::string> texts;
  for (const WeightedPrompt& p : request.job.prompts) texts.push_back(p.text);
  record->prompt = absl::StrJoin(texts, " | ");
  record->frames = request.frames;
  record->detach = request.detach;
  record->total_steps = request.job.steps;
  record->seed = request.job.seed;
  auto no_room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    if (shut_down_) return absl::UnavailableError("server is shutting down");
    if (active_ >= options_.max_active_jobs && static_cast<int>(queue_.size()) >= options_.max_queued_jobs) {
      return absl::ResourceExhaustedError(absl::StrCat(
          active_, " generations are running and ", queue_.size(), " waiting (max_active_jobs ",
          options_.max_active_jobs, ", max_queued_jobs ", options_.max_queued_jobs, "); retry later"));
    }
    return absl::OkStatus();
  };
  {
    // Refuse before the work of creating the job when there is no room (checked again below).
    absl::MutexLock lock(&mu_);
    CLIPSERVE_RETURN_IF_ERROR(no_room());
  }
  CLIPSERVE_ASSIGN_OR_RETURN(record->job, Job::Create(options_.models, std::move(request.job)));

  bool start = false;
  {
    absl::MutexLock lock(&mu_);
    CLIPSERVE_RETURN_IF_ERROR(no_room());
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    record->id = absl::StrFormat("gen-%d-%08x", next_id_++, static_cast<uint32_t>(rng()));
    record->created = clock_->Now();
    if (active_ < options_.max_active_jobs) {
      record->state = JobState::kRunning;
      record->started = record->created;
      ++active_;
      start = true;
    } else {
      queue_.push_back(record);
      record->queue_position = static_cast<int>(queue_.size());
    }
    jobs_[record->id] = record;
    ReportCountsLocked();
  }
  auto subscription = NewSubscription(record->id);
  {
    absl::MutexLock lock(&record->watch_mu);
    record->watchers.push_back(subscription);
  }
  JobEvent accepted{.kind = JobEvent::Kind::kQueued, .job_id = record->id, .queue_position = record->queue_position,
                    .total_steps = record->total_steps};
  PublishInOrder(record, accepted, {});
  spdlog::info("generation {} {}: prompt \"{}\", {} steps", record->id, start ? "started" : "queued",
               record->prompt, record->total_steps);
  if (start) {
    const absl::Status s = EnqueueStep(record);
    if (!s.ok()) Finish(record, JobState::kFailed, s, {});
  }
  return Submitted{record->id, std::move(subscription)};
}

absl::StatusOr<std::shared_ptr<Subscription>> JobManager::Watch(const std::string& job_id) {
  std::shared_ptr<Record> record;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("no generation '", job_id, "' (finished ones are kept for ",
                                              absl::FormatDuration(options_.keep_finished), ")"));
    }
    record = it->second;
  }
  auto subscription = NewSubscription(job_id);
  absl::MutexLock lock(&record->watch_mu);
  record->watchers.push_back(subscription);
  if (record->last_queued && !record->last_progress) subscription->Push(*record->last_queued);
  // The latest frame first, then the latest progress when it is a newer, frameless one (with a frame it is the
  // latest frame).
  if (record->last_frame) subscription->Push(*record->last_frame);
  if (record->last_progress && record->last_progress->frame.empty()) subscription->Push(*record->last_progress);
  if (record->terminal) subscription->Push(*record->terminal);
  return subscription;
}

absl::Status JobManager::Cancel(const std::string& job_id) {
  std::shared_ptr<Record> record;
  bool was_queued = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no generation '", job_id, "'"));
    record = it->second;
    if (record->state != JobState::kQueued && record->state != JobState::kRunning) return absl::OkStatus();
    if (record->cancel_requested) return absl::OkStatus();
    record->cancel_requested = true;
    record->cancel_status = absl::CancelledError("the generation was cancelled");
    record->cancel->Cancel();
    was_queued = record->state == JobState::kQueued;
  }
  // A running job stops when its queued step is dropped or its running step returns (OnStepDone).
  if (was_queued) Finish(record, JobState::kCancelled, absl::CancelledError("the generation was cancelled"), {});
  return absl::OkStatus();
}

void JobManager::OnWatcherClosed(const std::string& job_id) {
  std::shared_ptr<Record> record;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return;
    record = it->second;
    if (record->detach) return;
  }
  {
    absl::MutexLock lock(&record->watch_mu);
    for (const auto& w : record->watchers) {
      if (auto s = w.lock(); s && !s->closed()) return;
    }
  }
  spdlog::info("generation {}: every watcher has gone and it is not detached: cancelling", job_id);
  std::shared_ptr<Record> queued;
  {
    absl::MutexLock lock(&mu_);
    if (record->state != JobState::kQueued && record->state != JobState::kRunning) return;
    if (record->cancel_requested) return;
    record->cancel_requested = true;
    record->cancel_status = absl::CancelledError("the client went away");
    record->cancel->Cancel();
    if (record->state == JobState::kQueued) queued = record;
  }
  if (queued) Finish(queued, JobState::kCancelled, absl::CancelledError("the client went away"), {});
}

std::vector<JobSummary> JobManager::List() const {
  std::vector<JobSummary> out;
  std::vector<std::shared_ptr<Record>> records;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, r] : jobs_) {
      records.push_back(r);
      out.push_back({.job_id = id,
                     .state = r->state,
                     .prompt = r->prompt,
                     .step = r->step,
                     .total_steps = r->total_steps,
                     .queue_position = r->state == JobState::kQueued ? r->queue_position : 0,
                     .detach = r->detach,
                     .created = r->created});
    }
  }
  for (size_t i = 0; i < records.size(); ++i) {
    absl::MutexLock lock(&records[i]->watch_mu);
    for (const auto& w : records[i]->watchers) {
      if (auto s = w.lock(); s && !s->closed()) ++out[i].watchers;
    }
  }
  std::sort(out.begin(), out.end(), [](const JobSummary& a, const JobSummary& b) { return a.created < b.created; });
  return out;
}

void JobManager::Shutdown() {
  std::vector<std::shared_ptr<Record>> queued;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    for (const auto& [id, r] : jobs_) {
      if ((r->state != JobState::kQueued && r->state != JobState::kRunning) || r->cancel_requested) continue;
      r->cancel_requested = true;
      r->cancel_status = absl::UnavailableError("server is shutting down");
      r->cancel->Cancel();
      if (r->state == JobState::kQueued) queued.push_back(r);
    }
  }
  for (const auto& r : queued) Finish(r, JobState::kFailed, absl::UnavailableError("server is shutting down"), {});
}

int JobManager::active_jobs() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

int JobManager::queued_jobs() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

absl::Status JobManager::EnqueueStep(const std::shared_ptr<Record>& record) {
  auto task = std::make_unique<StepTask>(this, record);
  task->set_cancellation(record->cancel);
  std::vector<std::unique_ptr<Task>> tasks;
  tasks.push_back(std::move(task));
  return lane_->Enqueue(&tasks);
}

absl::Status JobManager::RunSteps(absl::Span<Task* const> batch) {
  std::vector<StepTask*> tasks;
  std::vector<Job*> jobs;
  for (Task* t : batch) {
    auto* task = static_cast<StepTask*>(t);
    // Cancelled after the batch was formed: skip the work.
    if (task->cancelled()) {
      task->Answer(absl::CancelledError("the generation was cancelled"));
      continue;
    }
    tasks.push_back(task);
    jobs.push_back(task->record().job.get());
  }
  if (jobs.empty()) return absl::OkStatus();
  const absl::Time start = clock_->Now();
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<StepStats> stats, Step(options_.models, jobs));
  if (options_.observer) options_.observer->OnSteps(static_cast<int>(jobs.size()), clock_->Now() - start);
  for (size_t k = 0; k < tasks.size(); ++k) {
    at::Tensor final_image;
    if (jobs[k]->finished()) {
      absl::StatusOr<at::Tensor> image = jobs[k]->Render(options_.models);
      if (!image.ok()) {
        tasks[k]->Answer(image.status());
        continue;
      }
      final_image = *image;
    }
    tasks[k]->set_result(std::move(stats[k]), std::move(final_image));
  }
  return absl::OkStatus();
}

void JobManager::OnStepDone(const std::shared_ptr<Record>& record, const absl::Status& status,
                            const StepStats& stats, const at::Tensor& final_image) {
  absl::Status stop;  // why the job ends now, if it does
  JobState stop_state = JobState::kFailed;
  absl::Duration elapsed;
  {
    absl::MutexLock lock(&mu_);
    if (!status.ok()) {
      stop = record->cancel_requested ? record->cancel_status : status;
    } else {
      record->step = stats.step;
      record->loss = stats.loss;
      record->similarity = stats.similarity;
      if (record->cancel_requested && stats.step < record->total_steps) stop = record->cancel_status;
    }
    if (!stop.ok()) stop_state = stop.code() == absl::StatusCode::kCancelled ? JobState::kCancelled : JobState::kFailed;
    elapsed = clock_->Now() - record->started;
  }
  if (status.ok()) {
    const bool last = stats.step >= record->total_steps;
    const bool frame_due = !last && record->frames.every > 0 && stats.step % record->frames.every == 0;
    JobEvent progress{.kind = JobEvent::Kind::kProgress,
                      .job_id = record->id,
                      .step = stats.step,
                      .total_steps = record->total_steps,
                      .loss = stats.loss,
                      .similarity = stats.similarity,
                      .elapsed = elapsed};
    PublishInOrder(record, std::move(progress), frame_due ? stats.image : at::Tensor());
    if (last) {
      Finish(record, JobState::kCompleted, absl::OkStatus(), final_image);
      return;
    }
  }
  if (!stop.ok()) {
    Finish(record, stop_state, stop, {});
    return;
  }
  const absl::Status s = EnqueueStep(record);
  if (!s.ok()) Finish(record, JobState::kFailed, s, {});
}

void JobManager::Finish(const std::shared_ptr<Record>& record, JobState state, const absl::Status& status,
                        const at::Tensor& final_image) {
  std::vector<std::shared_ptr<Record>> to_start;
  std::vector<std::pair<std::shared_ptr<Record>, int>> moved;
  int step = 0;
  float loss = 0, similarity = 0;
  absl::Duration elapsed;
  {
    absl::MutexLock lock(&mu_);
    if (record->state != JobState::kQueued && record->state != JobState::kRunning) return;
    loss = record->loss;
    similarity = record->similarity;
    if (record->state == JobState::kRunning) {
      --active_;
    } else {
      queue_.erase(std::remove(queue_.begin(), queue_.end(), record), queue_.end());
    }
    record->state = state;
    record->finished = clock_->Now();
    step = record->step;
    elapsed = record->started == absl::Time() ? absl::ZeroDuration() : clock_->Now() - record->started;
    finished_order_.push_back(record->id);
    ForgetOldLocked();
    if (!shut_down_) PromoteLocked(&to_start, &moved);
    ReportCountsLocked();
  }
  if (options_.observer) options_.observer->OnJobFinished(state);
  if (state == JobState::kCompleted) {
    spdlog::info("generation {} completed: {} steps in {:.1f} s", record->id, step, absl::ToDoubleSeconds(elapsed));
  } else {
    spdlog::info("generation {} {} at step {}: {}", record->id, JobStateName(state), step, status.ToString());
  }
  JobEvent event{.job_id = record->id,
                 .step = step,
                 .total_steps = record->total_steps,
                 .loss = loss,
                 .similarity = similarity,
                 .elapsed = elapsed};
  if (state == JobState::kCompleted) {
    event.kind = JobEvent::Kind::kCompleted;
  } else {
    event.kind = JobEvent::Kind::kFailed;
    event.status = status.ok() ? absl::InternalError("the generation ended without a result") : status;
  }
  PublishInOrder(record, std::move(event), final_image);
  // No step of this job is running or queued any more: its latent and optimiser state can go.
  record->job.reset();
  AnnouncePositions(moved);
  for (const auto& r : to_start) {
    spdlog::info("generation {} started after waiting {:.1f} s", r->id,
                 absl::ToDoubleSeconds(r->started - r->created));
    const absl::Status s = EnqueueStep(r);
    if (!s.ok()) Finish(r, JobState::kFailed, s, {});
  }
}

void JobManager::PromoteLocked(std::vector<std::shared_ptr<Record>>* to_start,
                               std::vector<std::pair<std::shared_ptr<Record>, int>>* moved) {
  while (active_ < options_.max_active_jobs && !queue_.empty()) {
    std::shared_ptr<Record> r = queue_.front();
    queue_.pop_front();
    r->state = JobState::kRunning;
    r->started = clock_->Now();
    r->queue_position = 0;
    ++active_;
    to_start->push_back(r);
  }
  for (size_t i = 0; i < queue_.size(); ++i) {
    const int position = static_cast<int>(i) + 1;
    if (queue_[i]->queue_position != position) {
      queue_[i]->queue_position = position;
      moved->emplace_back(queue_[i], position);
    }
  }
}

void JobManager::AnnouncePositions(const std::vector<std::pair<std::shared_ptr<Record>, int>>& moved) {
  for (const auto& [r, position] : moved) {
    PublishInOrder(r,
                   JobEvent{.kind = JobEvent::Kind::kQueued, .job_id = r->id, .queue_position = position,
                            .total_steps = r->total_steps},
                   {});
  }
}

void JobManager::ForgetOldLocked() {
  const absl::Time cutoff = clock_->Now() - options_.keep_finished;
  while (!finished_order_.empty()) {
    auto it = jobs_.find(finished_order_.front());
    const bool too_many = static_cast<int>(finished_order_.size()) > options_.max_finished;
    if (it != jobs_.end() && !too_many && it->second->finished > cutoff) break;
    if (it != jobs_.end()) jobs_.erase(it);
    finished_order_.pop_front();
  }
}

void JobManager::ReportCountsLocked() {
  if (options_.observer) options_.observer->OnJobCounts(active_, static_cast<int>(queue_.size()));
}

void JobManager::PublishInOrder(const std::shared_ptr<Record>& record, JobEvent event, at::Tensor image) {
  event.seed = record->seed;
  {
    absl::MutexLock lock(&record->watch_mu);
    record->pending.push_back({std::move(event), std::move(image)});
    if (record->draining) return;
    record->draining = true;
  }
  // One drain per job at a time keeps its events in order while frames are encoded off the worker threads.
  const absl::Status scheduled = options_.cpu_pool->Schedule([this, record] { DrainPublications(record); });
  if (!scheduled.ok()) DrainPublications(record);
}

void JobManager::DrainPublications(const std::shared_ptr<Record>& record) {
  while (true) {
    Record::Pending p;
    {
      absl::MutexLock lock(&record->watch_mu);
      if (record->pending.empty()) {
        record->draining = false;
        return;
      }
      p = std::move(record->pending.front());
      record->pending.pop_front();
    }
    if (p.image.defined()) {
      absl::StatusOr<std::string> frame = EncodeFrame(p.image, record->frames);
      if (frame.ok()) {
        p.event.frame = std::move(*frame);
        p.event.frame_format = record->frames.format;
        p.event.frame_width = record->frames.width > 0 ? record->frames.width : static_cast<int>(p.image.size(2));
        p.event.frame_height = record->frames.height > 0 ? record->frames.height : static_cast<int>(p.image.size(1));
      } else if (p.event.kind == JobEvent::Kind::kCompleted) {
        p.event.kind = JobEvent::Kind::kFailed;
        p.event.status = frame.status();
      } else {
        spdlog::warn("generation {}: frame of step {} not sent: {}", record->id, p.event.step,
                     frame.status().ToString());
      }
    }
    std::vector<std::shared_ptr<Subscription>> live;
    {
      absl::MutexLock lock(&record->watch_mu);
      switch (p.event.kind) {
        case JobEvent::Kind::kQueued:
          record->last_queued = p.event;
          break;
        case JobEvent::Kind::kProgress:
          record->last_progress = p.event;
          if (!p.event.frame.empty()) record->last_frame = p.event;
          break;
        case JobEvent::Kind::kCompleted:
        case JobEvent::Kind::kFailed:
          record->terminal = p.event;
          break;
      }
      std::vector<std::weak_ptr<Subscription>> kept;
      for (const auto& w : record->watchers) {
        if (auto s = w.lock(); s && !s->closed()) {
          live.push_back(s);
          kept.push_back(w);
        }
      }
      record->watchers = std::move(kept);
    }
    for (const auto& s : live) s->Push(p.event);
  }
}

}  // namespace clipserve::generation
