// Images named on clipctl's command line: files, directories (every image inside, sorted by name, not recursive)
// or glob patterns, expanded to a list of files and read into clipserve.v1.Image messages (encoded bytes; the
// server decodes them).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "clipserve/v1/clipserve.pb.h"

namespace clipserve::client {

// True when the file name ends in an image extension clipserve decodes (.jpg .jpeg .png .webp .bmp, any case).
bool HasImageExtension(const std::string& path);

// Expands each spec in order: an existing file is kept as is (whatever its extension); a directory gives its
// image files (HasImageExtension) sorted by name; a spec with glob characters (* ? [) gives its matches sorted
// (matching directories are expanded as above). NOT_FOUND names the spec when a file does not exist, a
// directory holds no images or a pattern matches nothing.
absl::StatusOr<std::vector<std::string>> ExpandImagePaths(const std::vector<std::string>& specs);

// Reads a file into Image.encoded. NOT_FOUND / INVALID_ARGUMENT (empty or larger than `max_bytes`) name the file.
absl::StatusOr<v1::Image> LoadImage(const std::string& path, uint64_t max_bytes = uint64_t{256} << 20);

// ExpandImagePaths then LoadImage for each; `paths` (optional) receives the expanded file names.
absl::StatusOr<std::vector<v1::Image>> LoadImages(const std::vector<std::string>& specs,
                                                  std::vector<std::string>* paths);

}  // namespace clipserve::client
