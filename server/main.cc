// clipserve: the server binary. Flags → config → logging and threads → server → wait for SIGTERM/SIGINT →
// graceful shutdown → exit 0.
//
//   clipserve --config=configs/default.textproto [--grpc_port=N] [--http_port=M] [--model=NAME=DIR ...]
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "server/common/file_util.h"
#include "server/common/logging.h"
#include "server/models/cpu_threads.h"
#include "server/models/packed_linear.h"
#include "server/service/config.h"
#include "server/service/server.h"

ABSL_FLAG(std::string, config, "", "server config file (text-format clipserve.v1.config.ServerConfig)");
ABSL_FLAG(int, grpc_port, -1, "overrides the config's grpc_port (0 picks a free port)");
ABSL_FLAG(int, http_port, -1, "overrides the config's http_port (0 picks a free port)");
ABSL_FLAG(std::vector<std::string>, model, {},
          "NAME=DIR: also serve the CLIP directory DIR as NAME (repeat or comma-separate for several)");
ABSL_FLAG(std::string, log_format, "", "overrides logging.format: text or json");
ABSL_FLAG(std::string, log_level, "", "overrides logging.level: debug, info, warn, error");

namespace {

int Fail(const std::string& message) {
  spdlog::error("{}", message);
  std::fprintf(stderr, "clipserve: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Every thread created from here on inherits the blocked signals; one thread waits for them below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::SetProgramUsageMessage(
      "clipserve --config=FILE [--grpc_port=N] [--http_port=M] [--model=NAME=DIR ...]\n"
      "Serves CLIP models over gRPC (clipserve.v1.Clip, grpc.health.v1, reflection) with /metrics, /healthz and\n"
      "/readyz on the HTTP port.");
  absl::ParseCommandLine(argc, argv);

  namespace svc = clipserve::service;
  svc::ServerConfig config;
  std::filesystem::path base_dir = std::filesystem::current_path();
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    auto text = clipserve::ReadFileToString(path, 1u << 20);
    if (!text.ok()) return Fail(std::string(text.status().message()));
    if (absl::Status s = svc::ParseConfigText(*text, path, &config); !s.ok()) return Fail(std::string(s.message()));
    base_dir = std::filesystem::path(path).parent_path();
  }
  for (const std::string& m : absl::GetFlag(FLAGS_model)) {
    if (absl::Status s = svc::AddModelFromFlag(m, &config); !s.ok()) return Fail(std::string(s.message()));
  }
  if (absl::GetFlag(FLAGS_grpc_port) >= 0) config.set_grpc_port(absl::GetFlag(FLAGS_grpc_port));
  if (absl::GetFlag(FLAGS_http_port) >= 0) config.set_http_port(absl::GetFlag(FLAGS_http_port));
  if (!absl::GetFlag(FLAGS_log_format).empty()) config.mutable_logging()->set_format(absl::GetFlag(FLAGS_log_format));
  if (!absl::GetFlag(FLAGS_log_level).empty()) config.mutable_logging()->set_level(absl::GetFlag(FLAGS_log_level));
  if (absl::Status s = svc::FinalizeServerConfig(&config, base_dir); !s.ok()) {
    return Fail(absl::StrCat(absl::GetFlag(FLAGS_config).empty() ? "flags" : absl::GetFlag(FLAGS_config), ": ",
                             s.message()));
  }
  if (absl::Status s = clipserve::InitLogging(config.logging().format(), config.logging().level()); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  const auto threads = clipserve::ConfigureCpuThreads(
      {.intra_op_threads = static_cast<int>(config.threads().intra_op_threads()),
       .blas_threads = static_cast<int>(config.threads().blas_threads())});
  spdlog::info("clipserve starting: intra-op threads {}, BLAS threads {} ({}), CPU pool {} threads, packed GEMM {}",
               threads.intra_op_threads, threads.blas_threads, threads.blas, config.threads().cpu_pool_threads(),
               clipserve::PackedIsaName(clipserve::PackedGemmIsa()));

  auto server = svc::Server::Create(config);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  if (absl::Status s = (*server)->Start(); !s.ok()) return Fail(std::string(s.message()));
  // Bound ports on stdout too, for scripts that start the server with port 0.
  std::printf("clipserve grpc_port=%d http_port=%d\n", (*server)->grpc_port(), (*server)->http_port());
  std::fflush(stdout);
  if (absl::Status s = (*server)->LoadModels(); !s.ok()) {
    (*server)->Shutdown();
    return Fail(std::string(s.message()));
  }

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received {}", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown();
  server->reset();
  return 0;
}
