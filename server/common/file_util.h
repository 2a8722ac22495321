// Small file helpers that return absl::Status instead of throwing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace clipserve {

// Reads a whole file. NOT_FOUND when it does not exist, INVALID_ARGUMENT when it is larger than `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path,
                                             uint64_t max_bytes = uint64_t{1} << 30);

// Reads and parses a JSON file; INVALID_ARGUMENT with the parser's position on malformed JSON.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::filesystem::path& path);

// Writes `contents` to `path` atomically (temporary file in the same directory, then rename).
absl::Status WriteFileAtomically(const std::filesystem::path& path, const std::string& contents);

}  // namespace clipserve
