// A C++ client for clipserve's generation service: a thin wrapper over the generated clipserve.v1.Generation
// stub, with the same status conversion as ClipClient (FromGrpcStatus: same code and message; a failure to
// connect becomes UNAVAILABLE "cannot reach TARGET: ..."; a server without the service answers UNIMPLEMENTED
// saying so).
//
//   CLIPSERVE_ASSIGN_OR_RETURN(auto client, GenerationClient::Create({.target = "localhost:8500"}));
//   v1::GenerateRequest req;
//   req.set_prompt("a red circle");
//   std::unique_ptr<GenerationStream> stream = client->Generate(req);
//   CLIPSERVE_ASSIGN_OR_RETURN(v1::GenerationCompleted done, stream->Wait([](const v1::GenerateResponse& e) {
//     return absl::OkStatus();  // accepted, progress (with frames), completed
//   }));
//
// Deadlines: the unary calls (Cancel, List) get ClientOptions::timeout or the call's own, like ClipClient. A
// stream has no deadline unless StreamOptions gives one: a job may wait in the queue and run for minutes, and
// the server already bounds it (max_steps). clipctl sets a stream deadline only when --timeout is given.
//
// A GenerationClient is thread-safe. A GenerationStream belongs to one reader thread, except Cancel(), which any
// thread may call (a SIGINT watcher does).
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/clip_client.h"
#include "clipserve/v1/clipserve.grpc.pb.h"

namespace clipserve::client {

struct StreamOptions {
  // Deadline of the whole stream, from its start; infinite (the default): none.
  absl::Duration timeout = absl::InfiniteDuration();
};

// One Generate or WatchGeneration call. Closing it early (Cancel, or destroying it before the end) ends the
// call; the server then cancels a Generate job unless the request set `detach`, and never a watched one.
class GenerationStream {
 public:
  // Cancels the call if it is still open and waits for gRPC to end it.
  ~GenerationStream();
  GenerationStream(const GenerationStream&) = delete;
  GenerationStream& operator=(const GenerationStream&) = delete;

  // The next event; false at the end of the stream (then call Finish). Blocks.
  bool Read(v1::GenerateResponse* event);
  // The stream's final status, converted; call once, after Read returned false (unread events are dropped).
  absl::Status Finish();
  // Ends the call: a blocked Read returns false and Finish answers CANCELLED. Thread-safe; idempotent.
  void Cancel();

  // Reads the stream to its end, calling `on_event` for each event (accepted, progress, completed) in order,
  // and returns the `completed` event. The stream's error status when it fails; the first error of `on_event`
  // (after cancelling the call); INTERNAL when the stream ends OK without `completed`.
  absl::StatusOr<v1::GenerationCompleted> Wait(
      const std::function<absl::Status(const v1::GenerateResponse&)>& on_event);

 private:
  friend class GenerationClient;
  explicit GenerationStream(std::string target) : target_(std::move(target)) {}

  const std::string target_;
  grpc::ClientContext context_;  // outlives reader_
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader_;
  bool finished_ = false;
};

class GenerationClient {
 public:
  // INVALID_ARGUMENT for an empty target or a non-positive timeout. Does not connect: the first call does.
  static absl::StatusOr<std::unique_ptr<GenerationClient>> Create(const ClientOptions& options);

  // Starts a job. The call begins at once; errors (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION,
  // an unreachable server, ...) come from the stream's Read/Finish/Wait.
  std::unique_ptr<GenerationStream> Generate(const v1::GenerateRequest& request,
                                             const StreamOptions& stream = StreamOptions()) const;
  // Re-attaches to a job (NOT_FOUND, from the stream, for an unknown id).
  std::unique_ptr<GenerationStream> Watch(const std::string& job_id,
                                          const StreamOptions& stream = StreamOptions()) const;
  absl::StatusOr<v1::GenerationInfo> Cancel(const std::string& job_id, const CallOptions& call = CallOptions()) const;
  absl::StatusOr<v1::ListGenerationsResponse> List(const CallOptions& call = CallOptions()) const;

  // The generated stub, for the async and callback APIs; the caller converts statuses with ConvertStatus.
  v1::Generation::Stub* stub() const { return stub_.get(); }
  const ClientOptions& options() const { return options_; }
  // FromGrpcStatus for this client's target, with a clear message for a server that lacks the service.
  absl::Status ConvertStatus(const grpc::Status& status) const;

 private:
  GenerationClient(const ClientOptions& options, std::shared_ptr<grpc::Channel> channel);
  std::unique_ptr<GenerationStream> NewStream(const StreamOptions& stream) const;
  void PrepareContext(const CallOptions& call, grpc::ClientContext* context) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

// FromGrpcStatus, except that a bare UNIMPLEMENTED (a server without clipserve.v1.Generation) says so.
absl::Status FromGenerationStatus(const grpc::Status& status, absl::string_view target);

}  // namespace clipserve::client
