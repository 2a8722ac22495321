// A real clipserve server for integration tests, shared by the tests of one suite:
//
//   static void SetUpTestSuite() { server_ = StartTestServer(ParseServerConfig(...)); }
//   static void TearDownTestSuite() { delete server_; server_ = nullptr; }
//
// Started on the config's ports (tests use 0: ephemeral) with its models loaded; null when the config, start or
// loading fails, with the reason in TestServerError() (and, inside a test, a failure of that test).
#pragma once

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/service/config.h"
#include "server/service/server.h"

namespace clipserve::testing {

// Why the last StartTestServer returned null ("" when it did not).
inline std::string& TestServerError() {
  static std::string error;
  return error;
}

inline service::Server* StartTestServer(const absl::StatusOr<service::ServerConfig>& config) {
  TestServerError().clear();
  // Inside a test, a failure of that test. From SetUpTestSuite a failure would make gtest skip the suite's tests,
  // and ctest counts a skipped test as no failure: there the reason is kept for each test's
  // `ASSERT_NE(server_, nullptr) << TestServerError()`, which fails every one of them.
  const auto fail = [](const std::string& why) -> service::Server* {
    TestServerError() = why;
    if (::testing::UnitTest::GetInstance()->current_test_info() != nullptr) {
      ADD_FAILURE() << why;
    } else {
      std::fprintf(stderr, "StartTestServer: %s\n", why.c_str());
    }
    return nullptr;
  };
  if (!config.ok()) return fail(absl::StrCat("config: ", config.status().ToString()));
  auto server = service::Server::Create(*config);
  if (!server.ok()) return fail(absl::StrCat("Server::Create: ", server.status().ToString()));
  if (absl::Status s = (*server)->Start(); !s.ok()) return fail(absl::StrCat("Start: ", s.ToString()));
  if (absl::Status s = (*server)->LoadModels(); !s.ok()) return fail(absl::StrCat("LoadModels: ", s.ToString()));
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
