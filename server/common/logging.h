// Process-wide logging setup (spdlog): human-readable text or one JSON object per line for log collectors.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace clipserve {

// format: "text" or "json"; level: "debug", "info", "warn", "error". Call once at start-up.
absl::Status InitLogging(const std::string& format, const std::string& level);

// `s` as the contents of a JSON string (quotes, backslashes and control characters escaped).
std::string JsonEscape(const std::string& s);

}  // namespace clipserve
