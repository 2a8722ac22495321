#include "server/common/file_util.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace clipserve {

absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path, uint64_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
    }
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", ec.message()));
  }
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": ", size, " bytes, more than the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path.string(), ": cannot open: ", std::strerror(errno)));
  std::string data(size, '\0');
  in.read(data.data(), static_cast<std::streamsize>(size));
  if (static_cast<uint64_t>(in.gcount()) != size) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": short read"));
  }
  return data;
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::filesystem::path& path) {
  auto text = ReadFileToString(path, uint64_t{64} << 20);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions to get the position for the message; the text is known to be malformed.
    try {
      nlohmann::json unused = nlohmann::json::parse(*text);
      (void)unused;
    } catch (const nlohmann::json::parse_error& e) {
      return absl::InvalidArgumentError(absl::StrCat(path.string(), ": malformed JSON: ", e.what()));
    }
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": malformed JSON"));
  }
  return j;
}

absl::Status WriteFileAtomically(const std::filesystem::path& path, const std::string& contents) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::InvalidArgumentError(absl::StrCat(tmp.string(), ": cannot create: ", std::strerror(errno)));
    }
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat(tmp.string(), ": write failed"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", tmp.string(), " -> ", path.string(), ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace clipserve
