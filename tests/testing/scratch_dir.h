// Scratch directories for a test process: ScratchDir("name") is a fresh, empty directory
// <gtest TempDir>/clipserve_test_<pid>/name, and the whole clipserve_test_<pid> tree is removed when the process
// exits normally. Test runs then leave nothing behind in /tmp, and two runs on one machine (two checkouts' ctest,
// or a CI beside a developer's run) never write to the same path.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

#include "gtest/gtest.h"

namespace clipserve::testing {

namespace internal {

// The process's scratch root, created on first use and removed (with everything in it) at exit.
class ScratchRoot {
 public:
  ScratchRoot()
      : path_(std::filesystem::path(::testing::TempDir()) / ("clipserve_test_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchRoot() {
    std::error_code ignored;  // nothing to report to at exit
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchRoot(const ScratchRoot&) = delete;
  ScratchRoot& operator=(const ScratchRoot&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline const std::filesystem::path& ScratchRootPath() {
  static const ScratchRoot root;
  return root.path();
}

}  // namespace internal

// A fresh, empty directory for `name` (a relative path) under the process's scratch root; whatever an earlier
// call of the same name left there is removed first.
inline std::filesystem::path ScratchDir(const std::string& name) {
  const std::filesystem::path dir = internal::ScratchRootPath() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A path for a file `name` in the process's scratch root (nothing is created; an old file of that name is
// removed).
inline std::filesystem::path ScratchFile(const std::string& name) {
  const std::filesystem::path path = internal::ScratchRootPath() / name;
  std::filesystem::remove_all(path);
  return path;
}

}  // namespace clipserve::testing
