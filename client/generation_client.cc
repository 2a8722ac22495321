#include "client/generation_client.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/common/status_macros.h"

namespace clipserve::client {

absl::Status FromGenerationStatus(const grpc::Status& status, absl::string_view target) {
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED && status.error_message().empty()) {
    return FromGrpcStatus(
        grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                     absl::StrCat("the server at ", target, " does not serve clipserve.v1.Generation")),
        target);
  }
  return FromGrpcStatus(status, target);
}

GenerationStream::~GenerationStream() {
  if (reader_ != nullptr && !finished_) {
    Cancel();
    Finish().IgnoreError();
  }
}

bool GenerationStream::Read(v1::GenerateResponse* event) { return !finished_ && reader_->Read(event); }

absl::Status GenerationStream::Finish() {
  if (finished_) return absl::FailedPreconditionError("the stream is already finished");
  // gRPC wants every message read before Finish.
  v1::GenerateResponse unread;
  while (reader_->Read(&unread)) {
  }
  finished_ = true;
  return FromGenerationStatus(reader_->Finish(), target_);
}

void GenerationStream::Cancel() { context_.TryCancel(); }

absl::StatusOr<v1::GenerationCompleted> GenerationStream::Wait(
    const std::function<absl::Status(const v1::GenerateResponse&)>& on_event) {
  v1::GenerateResponse event;
  std::optional<v1::GenerationCompleted> completed;
  while (Read(&event)) {
    if (absl::Status s = on_event(event); !s.ok()) {
      Cancel();
      Finish().IgnoreError();
      return s;
    }
    if (event.has_completed()) completed = event.completed();
  }
  CLIPSERVE_RETURN_IF_ERROR(Finish());
  if (!completed) return absl::InternalError("the server ended the generation stream without a final image");
  return *std::move(completed);
}

absl::StatusOr<std::unique_ptr<GenerationClient>> GenerationClient::Create(const ClientOptions& options) {
  if (options.target.empty()) return absl::InvalidArgumentError("the target (HOST:PORT) is empty");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the timeout must be positive, not ", absl::FormatDuration(options.timeout)));
  }
  CLIPSERVE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, CreateClipChannel(options));
  return std::unique_ptr<GenerationClient>(new GenerationClient(options, std::move(channel)));
}

GenerationClient::GenerationClient(const ClientOptions& options, std::shared_ptr<grpc::Channel> channel)
    : options_(options), channel_(std::move(channel)), stub_(v1::Generation::NewStub(channel_)) {}

absl::Status GenerationClient::ConvertStatus(const grpc::Status& status) const {
  return FromGenerationStatus(status, options_.target);
}

void GenerationClient::PrepareContext(const CallOptions& call, grpc::ClientContext* context) const {
  const absl::Duration timeout = call.timeout > absl::ZeroDuration() ? call.timeout : options_.timeout;
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

std::unique_ptr<GenerationStream> GenerationClient::NewStream(const StreamOptions& stream) const {
  std::unique_ptr<GenerationStream> out(new GenerationStream(options_.target));
  if (stream.timeout != absl::InfiniteDuration()) {
    out->context_.set_deadline(absl::ToChronoTime(absl::Now() + stream.timeout));
  }
  return out;
}

std::unique_ptr<GenerationStream> GenerationClient::Generate(const v1::GenerateRequest& request,
                                                             const StreamOptions& stream) const {
  std::unique_ptr<GenerationStream> out = NewStream(stream);
  out->reader_ = stub_->Generate(&out->context_, request);
  return out;
}

std::unique_ptr<GenerationStream> GenerationClient::Watch(const std::string& job_id,
                                                          const StreamOptions& stream) const {
  v1::WatchGenerationRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<GenerationStream> out = NewStream(stream);
  out->reader_ = stub_->WatchGeneration(&out->context_, request);
  return out;
}

absl::StatusOr<v1::GenerationInfo> GenerationClient::Cancel(const std::string& job_id, const CallOptions& call) const {
  grpc::ClientContext context;
  PrepareContext(call, &context);
  v1::CancelGenerationRequest request;
  request.set_job_id(job_id);
  v1::GenerationInfo response;
  const grpc::Status status = stub_->CancelGeneration(&context, request, &response);
  if (!status.ok()) return ConvertStatus(status);
  return response;
}

absl::StatusOr<v1::ListGenerationsResponse> GenerationClient::List(const CallOptions& call) const {
  grpc::ClientContext context;
  PrepareContext(call, &context);
  v1::ListGenerationsResponse response;
  const grpc::Status status = stub_->ListGenerations(&context, v1::ListGenerationsRequest(), &response);
  if (!status.ok()) return ConvertStatus(status);
  return response;
}

}  // namespace clipserve::client
