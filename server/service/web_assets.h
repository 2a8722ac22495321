// The web demo's files (web/ in the source tree), built into the binary by cmake/embed_files.cmake so that the
// server serves the demo with no files beside it (containers, `clipserve` run from anywhere).
#pragma once

#include <cstddef>
#include <vector>

namespace clipserve::service {

struct EmbeddedFile {
  const char* name;  // relative to web/: "index.html", "app.js"
  const unsigned char* data;
  size_t size;
};

// Every file of web/, in a fixed order.
const std::vector<EmbeddedFile>& WebAssets();

}  // namespace clipserve::service
