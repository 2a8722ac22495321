#include "client/images.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::client {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::vector<std::string>> ImagesInDirectory(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_regular_file(type_ec) && HasImageExtension(it->path().filename().string())) {
      out.push_back(it->path().string());
    }
  }
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot list image directory '", dir, "': ", ec.message()));
  if (out.empty()) {
    return absl::NotFoundError(absl::StrCat("image directory '", dir, "' holds no JPEG, PNG, WebP or BMP files"));
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<std::vector<std::string>> Glob(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> matches;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) matches.emplace_back(g.gl_pathv[i]);
  }
  globfree(&g);
  if (rc == GLOB_NOMATCH || (rc == 0 && matches.empty())) {
    return absl::NotFoundError(absl::StrCat("image pattern '", pattern, "' matches no files"));
  }
  if (rc != 0) return absl::InternalError(absl::StrCat("image pattern '", pattern, "': glob failed"));
  std::sort(matches.begin(), matches.end());
  std::vector<std::string> out;
  for (const std::string& m : matches) {
    std::error_code ec;
    if (fs::is_directory(m, ec)) {
      CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> inside, ImagesInDirectory(m));
      out.insert(out.end(), inside.begin(), inside.end());
    } else {
      out.push_back(m);
    }
  }
  return out;
}

}  // namespace

bool HasImageExtension(const std::string& path) {
  const std::string lower = absl::AsciiStrToLower(path);
  for (const char* ext : {".jpg", ".jpeg", ".png", ".webp", ".bmp"}) {
    if (absl::EndsWith(lower, ext)) return true;
  }
  return false;
}

absl::StatusOr<std::vector<std::string>> ExpandImagePaths(const std::vector<std::string>& specs) {
  std::vector<std::string> out;
  for (const std::string& spec : specs) {
    std::error_code ec;
    const fs::file_status st = fs::status(spec, ec);
    if (fs::is_directory(st)) {
      CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> inside, ImagesInDirectory(spec));
      out.insert(out.end(), inside.begin(), inside.end());
    } else if (fs::exists(st)) {
      out.push_back(spec);
    } else if (spec.find_first_of("*?[") != std::string::npos) {
      CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> matches, Glob(spec));
      out.insert(out.end(), matches.begin(), matches.end());
    } else {
      return absl::NotFoundError(absl::StrCat("image '", spec, "': no such file or directory"));
    }
  }
  return out;
}

absl::StatusOr<v1::Image> LoadImage(const std::string& path, uint64_t max_bytes) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path, max_bytes);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(), absl::StrCat("image ", bytes.status().message()));
  }
  if (bytes->empty()) return absl::InvalidArgumentError(absl::StrCat("image '", path, "' is an empty file"));
  v1::Image image;
  image.set_encoded(std::move(*bytes));
  return image;
}

absl::StatusOr<std::vector<v1::Image>> LoadImages(const std::vector<std::string>& specs,
                                                  std::vector<std::string>* paths) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> files, ExpandImagePaths(specs));
  std::vector<v1::Image> out;
  out.reserve(files.size());
  for (const std::string& f : files) {
    CLIPSERVE_ASSIGN_OR_RETURN(v1::Image image, LoadImage(f));
    out.push_back(std::move(image));
  }
  if (paths != nullptr) *paths = std::move(files);
  return out;
}

}  // namespace clipserve::client
