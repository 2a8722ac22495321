// A real clipserve server for integration tests, shared by the tests of one suite:
//
//   static void SetUpTestSuite() { server_ = StartTestServer(ParseServerConfig(...)); }
//   static void TearDownTestSuite() { delete server_; server_ = nullptr; }
//
// Started on the config's ports (tests use 0: ephemeral) with its models loaded; null (after a test failure
// saying why) when the config, start or loading fails.
#pragma once

#include <filesystem>
#include <memory>

#include "gtest/gtest.h"
#include "server/service/config.h"
#include "server/service/server.h"

namespace clipserve::testing {

inline service::Server* StartTestServer(const absl::StatusOr<service::ServerConfig>& config) {
  if (!config.ok()) {
    ADD_FAILURE() << "config: " << config.status();
    return nullptr;
  }
  auto server = service::Server::Create(*config);
  if (!server.ok()) {
    ADD_FAILURE() << "Server::Create: " << server.status();
    return nullptr;
  }
  if (absl::Status s = (*server)->Start(); !s.ok()) {
    ADD_FAILURE() << "Start: " << s;
    return nullptr;
  }
  if (absl::Status s = (*server)->LoadModels(); !s.ok()) {
    ADD_FAILURE() << "LoadModels: " << s;
    return nullptr;
  }
  return server->release();
}

// configs/default.textproto (the shipped shapes-world CLIP and VQGAN) on 127.0.0.1 with ephemeral ports, for
// tests to adjust and pass to StartTestServer.
inline absl::StatusOr<service::ServerConfig> ShippedConfigOnLocalPorts() {
  absl::StatusOr<service::ServerConfig> config =
      service::LoadServerConfig(std::filesystem::path(CLIPSERVE_SOURCE_DIR) / "configs" / "default.textproto");
  if (config.ok()) {
    config->set_listen_address("127.0.0.1");
    config->set_grpc_port(0);
    config->set_http_port(0);
  }
  return config;
}

}  // namespace clipserve::testing
