// Template definitions for tensor_io.h.
#pragma once

#include <exception>
#include <string>

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"

namespace clipserve {

template <typename Fn>
absl::Status CatchTorchErrors(std::string_view context, Fn&& fn, absl::StatusCode code) {
  try {
    return fn();
  } catch (const c10::OutOfMemoryError& e) {
    // Device or host memory ran out for this call; the process lives on and later calls may fit.
    return absl::ResourceExhaustedError(absl::StrCat(std::string(context), ": out of memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::Status(code, absl::StrCat(std::string(context), ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::Status(code, absl::StrCat(std::string(context), ": ", e.what()));
  }
}

}  // namespace clipserve
