// Where the reference fixtures live (see ../shared/fixtures/README.md).
//
// The directory comes from the environment variable CLIPSERVE_FIXTURES (a directory laid out like
// `reference-a/`), else the path baked in at configure time. Tests that need fixtures call
// CLIPSERVE_REQUIRE_FIXTURES(): when the directory is missing the test is skipped with a message, unless
// CLIPSERVE_FIXTURES_REQUIRED=1 (set by .ci/run), in which case it fails.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace clipserve::testing {

inline std::filesystem::path FixtureDir() {
  if (const char* env = std::getenv("CLIPSERVE_FIXTURES"); env != nullptr && *env != '\0') return env;
  return CLIPSERVE_DEFAULT_FIXTURES;
}

inline bool FixturesRequired() {
  const char* env = std::getenv("CLIPSERVE_FIXTURES_REQUIRED");
  return env != nullptr && std::string(env) == "1";
}

}  // namespace clipserve::testing

#define CLIPSERVE_REQUIRE_FIXTURES()                                                                  \
  do {                                                                                                \
    const auto clipserve_fixture_dir_ = ::clipserve::testing::FixtureDir();                           \
    if (!std::filesystem::is_directory(clipserve_fixture_dir_)) {                                     \
      if (::clipserve::testing::FixturesRequired()) {                                                 \
        FAIL() << "fixture directory " << clipserve_fixture_dir_ << " is missing (set CLIPSERVE_FIXTURES)"; \
      }                                                                                               \
      GTEST_SKIP() << "fixture directory " << clipserve_fixture_dir_                                  \
                   << " is missing; set CLIPSERVE_FIXTURES to run this test";                         \
    }                                                                                                 \
  } while (0)
