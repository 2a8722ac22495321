// A real clipserve server for integration tests, shared by the tests of one suite:
//
//   static void SetUpTestSuite() { server_ = StartTestServer(ParseServerConfig(...)); }
//   static void TearDownTestSuite() { delete server_; server_ = nullptr; }
//
// Started on the config's ports (tests use 0: ephemeral) with its models loaded; null (after a test failure
// saying why) when the config, start or loading fails.
#pragma once

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

}  // namespace clipserve::testing
