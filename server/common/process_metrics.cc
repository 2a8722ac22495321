#include "server/common/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "server/common/status_macros.h"

namespace clipserve::metrics {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// NaN unless all of `s` is a number (std::stod would throw).
double ParseDouble(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return end != s.c_str() && *end == '\0' ? v : kNaN;
}

// Field `index` (0-based) of /proc/self/statm, in bytes.
double StatmBytes(int index) {
  std::ifstream in("/proc/self/statm");
  long long pages[2] = {0, 0};
  if (!(in >> pages[0] >> pages[1])) return kNaN;
  return static_cast<double>(pages[index]) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

double CpuSeconds() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return kNaN;
  const long long micros = (static_cast<long long>(u.ru_utime.tv_sec) + u.ru_stime.tv_sec) * 1000000 +
                           u.ru_utime.tv_usec + u.ru_stime.tv_usec;
  return static_cast<double>(micros) / 1e6;
}

double OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return kNaN;
  int n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // the directory stream's own descriptor
}

double MaxFds() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return kNaN;
  return r.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity() : static_cast<double>(r.rlim_cur);
}

// Boot time (btime of /proc/stat) + starttime (field 22 of /proc/self/stat, in clock ticks since boot).
double StartTimeSeconds() {
  std::ifstream stat("/proc/stat");
  std::string line;
  double boot = kNaN;
  while (std::getline(stat, line)) {
    if (line.rfind("btime ", 0) == 0) {
      boot = ParseDouble(line.substr(6));
      break;
    }
  }
  std::ifstream self("/proc/self/stat");
  std::string all((std::istreambuf_iterator<char>(self)), std::istreambuf_iterator<char>());
  const size_t paren = all.rfind(')');  // the command name may hold spaces and parentheses
  if (std::isnan(boot) || paren == std::string::npos) return kNaN;
  std::istringstream fields(all.substr(paren + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i) {  // fields after the name are numbered from 3
    if (!(fields >> field)) return kNaN;
  }
  return boot + ParseDouble(field) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

absl::Status AddProcessMetrics(Registry* registry) {
  CLIPSERVE_ASSIGN_OR_RETURN(
      CallbackFamily * cpu,
      registry->AddCallbackCounter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds."));
  CLIPSERVE_RETURN_IF_ERROR(cpu->Set({}, CpuSeconds));
  CLIPSERVE_ASSIGN_OR_RETURN(CallbackFamily * rss, registry->AddCallbackGauge("process_resident_memory_bytes",
                                                                              "Resident memory size in bytes."));
  CLIPSERVE_RETURN_IF_ERROR(rss->Set({}, [] { return StatmBytes(1); }));
  CLIPSERVE_ASSIGN_OR_RETURN(CallbackFamily * vsz, registry->AddCallbackGauge("process_virtual_memory_bytes",
                                                                              "Virtual memory size in bytes."));
  CLIPSERVE_RETURN_IF_ERROR(vsz->Set({}, [] { return StatmBytes(0); }));
  CLIPSERVE_ASSIGN_OR_RETURN(CallbackFamily * start,
                             registry->AddCallbackGauge("process_start_time_seconds",
                                                        "Start time of the process since unix epoch in seconds."));
  const double start_time = StartTimeSeconds();
  CLIPSERVE_RETURN_IF_ERROR(start->Set({}, [start_time] { return start_time; }));
  CLIPSERVE_ASSIGN_OR_RETURN(CallbackFamily * fds,
                             registry->AddCallbackGauge("process_open_fds", "Number of open file descriptors."));
  CLIPSERVE_RETURN_IF_ERROR(fds->Set({}, OpenFds));
  CLIPSERVE_ASSIGN_OR_RETURN(CallbackFamily * max_fds,
                             registry->AddCallbackGauge("process_max_fds", "Maximum number of open file descriptors."));
  CLIPSERVE_RETURN_IF_ERROR(max_fds->Set({}, MaxFds));
  return absl::OkStatus();
}

}  // namespace clipserve::metrics
