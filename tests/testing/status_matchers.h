// gMock matchers for absl::Status and absl::StatusOr (Debian's abseil ships none).
//   EXPECT_THAT(s, IsOk());
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("header")));
#pragma once

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace clipserve::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status is " << s;
  return s.ok();
}

MATCHER_P2(StatusIs, code, message_matcher,
           std::string("has code ") + absl::StatusCodeToString(code) + " and a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code && ::testing::Matches(message_matcher)(std::string(s.message()));
}

}  // namespace clipserve::testing

#define CLIPSERVE_ASSERT_OK_AND_ASSIGN(lhs, expr)                                 \
  CLIPSERVE_ASSERT_OK_AND_ASSIGN_IMPL_(CLIPSERVE_TEST_CONCAT_(statusor_, __LINE__), lhs, expr)
#define CLIPSERVE_TEST_CONCAT_INNER_(a, b) a##b
#define CLIPSERVE_TEST_CONCAT_(a, b) CLIPSERVE_TEST_CONCAT_INNER_(a, b)
#define CLIPSERVE_ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                       \
  ASSERT_TRUE(statusor.ok()) << statusor.status();              \
  lhs = std::move(statusor).value()
