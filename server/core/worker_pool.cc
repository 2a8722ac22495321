#include "server/core/worker_pool.h"

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"

namespace clipserve {

std::string Device::ToString() const { return absl::StrCat(kind == Kind::kCuda ? "cuda:" : "cpu:", index); }

namespace {
thread_local const WorkerContext* current_worker = nullptr;
}  // namespace

const WorkerContext* WorkerPool::Current() { return current_worker; }

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const WorkerPoolOptions& options) {
  if (options.scheduler == nullptr) return absl::InvalidArgumentError("WorkerPoolOptions::scheduler is required");
  if (options.instances < 1) {
    return absl::InvalidArgumentError(absl::StrCat("instances must be at least 1, got ", options.instances));
  }
  if (options.device.index < 0) {
    return absl::InvalidArgumentError(absl::StrCat("device index must not be negative, got ", options.device.index));
  }
  std::unique_ptr<WorkerPool> pool(new WorkerPool(options));
  {
    absl::MutexLock lock(&pool->join_mu_);
    for (int i = 0; i < options.instances; ++i) {
      pool->threads_.emplace_back(&WorkerPool::Work, pool.get(), WorkerContext{options.device, i});
    }
  }
  absl::Status init_status;
  {
    absl::MutexLock lock(&pool->mu_);
    const int instances = options.instances;
    auto all_done = [&pool, instances]()
                        ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) { return pool->inits_done_ == instances; };
    pool->mu_.Await(absl::Condition(&all_done));
    init_status = pool->init_status_;
    pool->gate_ = init_status.ok() ? Gate::kRun : Gate::kExit;
  }
  if (!init_status.ok()) {
    absl::MutexLock lock(&pool->join_mu_);
    for (std::thread& thread : pool->threads_) thread.join();
    pool->threads_.clear();
    return init_status;
  }
  return pool;
}

WorkerPool::WorkerPool(const WorkerPoolOptions& options) : options_(options) {}

WorkerPool::~WorkerPool() { Stop(); }

void WorkerPool::Stop() {
  absl::MutexLock lock(&join_mu_);
  if (threads_.empty()) return;
  options_.scheduler->Stop();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

void WorkerPool::Work(WorkerContext context) {
  current_worker = &context;
  absl::Status status;
  if (options_.init) {
    try {
      status = options_.init(context);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("init hook threw: ", e.what()));
    } catch (...) {
      status = absl::InternalError("init hook threw a non-standard exception");
    }
  }
  {
    absl::MutexLock lock(&mu_);
    if (!status.ok() && init_status_.ok()) {
      init_status_ = absl::Status(status.code(), absl::StrCat("worker ", context.instance, " on ",
                                                              context.device.ToString(), ": ", status.message()));
    }
    ++inits_done_;
    auto opened = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return gate_ != Gate::kWait; };
    mu_.Await(absl::Condition(&opened));
    if (gate_ == Gate::kExit) {
      current_worker = nullptr;
      return;
    }
  }
  while (std::unique_ptr<Batch> batch = options_.scheduler->NextBatch()) {
    batch->Run().IgnoreError();  // answered to the rows and reported to the lane's observer
  }
  current_worker = nullptr;
}

}  // namespace clipserve
