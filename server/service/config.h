// Loading, defaulting and validating the server configuration (proto/clipserve/v1/config.proto).
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "clipserve/v1/config.pb.h"

namespace clipserve::service {

using ServerConfig = ::clipserve::v1::config::ServerConfig;
using ModelConfig = ::clipserve::v1::config::ModelConfig;
using LaneConfig = ::clipserve::v1::config::LaneConfig;
using GenerationConfig = ::clipserve::v1::config::GenerationConfig;
using SecurityConfig = ::clipserve::v1::config::Security;
using GatewayConfig = ::clipserve::v1::config::Gateway;

// Parses text-format `text` (named `origin` in messages; relative model, VQGAN and security file paths are
// resolved against `base_dir`), fills in defaults and validates (reading the security block's certificate, key
// and token files and its token environment variable, so that a bad one is reported here). Errors are
// INVALID_ARGUMENT naming the field ("models[1].text_lane.max_batch_size: 0 is not allowed; use 1 to 4096").
absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& text, const std::string& origin,
                                               const std::filesystem::path& base_dir);
// Reads and parses a config file.
absl::StatusOr<ServerConfig> LoadServerConfig(const std::filesystem::path& path);

// Parses text-format `text` into `config` without defaults or validation (so that flags can still add to it);
// INVALID_ARGUMENT with the line and column of a syntax error.
absl::Status ParseConfigText(const std::string& text, const std::string& origin, ServerConfig* config);

// Adds a model from a `--model=NAME=DIR` flag (before validation); INVALID_ARGUMENT on a malformed flag.
absl::Status AddModelFromFlag(const std::string& flag, ServerConfig* config);

// Fills defaults and validates a config (as ParseServerConfig does). Idempotent.
absl::Status FinalizeServerConfig(ServerConfig* config, const std::filesystem::path& base_dir);

}  // namespace clipserve::service
