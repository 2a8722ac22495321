#include "client/metrics.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/clip_client.h"
#include "server/common/status_macros.h"

namespace clipserve::client {
namespace {

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int MillisLeft(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return ms < 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, std::numeric_limits<int>::max()));
}

// Waits until `fd` is ready for `events`; DEADLINE_EXCEEDED when `deadline` passes first.
absl::Status WaitFd(int fd, short events, absl::Time deadline, absl::string_view what) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, MillisLeft(deadline));
    if (rc > 0) return absl::OkStatus();
    if (rc == 0) return absl::DeadlineExceededError(absl::StrCat("timed out ", what));
    if (errno != EINTR) return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
  }
}

absl::StatusOr<int> Connect(const std::string& host, const std::string& port, absl::Time deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int gai = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0) return absl::UnavailableError(absl::StrCat("cannot resolve '", host, "': ", ::gai_strerror(gai)));
  std::string last_error = "no address";
  int connected = -1;
  for (addrinfo* ai = res; ai != nullptr && connected < 0; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      const absl::Status waited = WaitFd(fd, POLLOUT, deadline, "connecting");
      int err = 0;
      socklen_t len = sizeof(err);
      if (waited.ok() && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
        rc = 0;
      } else {
        last_error = waited.ok() ? std::strerror(err) : std::string(waited.message());
      }
    } else if (rc != 0) {
      last_error = std::strerror(errno);
    }
    if (rc == 0) {
      connected = fd;
    } else {
      ::close(fd);
    }
  }
  ::freeaddrinfo(res);
  if (connected < 0)
    return absl::UnavailableError(absl::StrCat("cannot connect to ", host, ":", port, ": ", last_error));
  return connected;
}

absl::StatusOr<std::string> Dechunk(absl::string_view body) {
  std::string out;
  for (;;) {
    const size_t eol = body.find("\r\n");
    if (eol == absl::string_view::npos) return absl::DataLossError("truncated chunked body");
    absl::string_view size_text = body.substr(0, eol);
    size_text = size_text.substr(0, size_text.find(';'));
    uint64_t size = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(size_text), &size)) {
      return absl::DataLossError("malformed chunk size");
    }
    body.remove_prefix(eol + 2);
    if (size == 0) return out;
    if (body.size() < size) return absl::DataLossError("truncated chunk");
    absl::StrAppend(&out, body.substr(0, size));
    body.remove_prefix(size);
    if (absl::StartsWith(body, "\r\n")) body.remove_prefix(2);
  }
}

// Parses `value` of a sample: a float or +Inf/-Inf/NaN.
bool ParseValue(absl::string_view text, double* out) {
  if (text == "+Inf" || text == "Inf") {
    *out = std::numeric_limits<double>::infinity();
  } else if (text == "-Inf") {
    *out = -std::numeric_limits<double>::infinity();
  } else if (text == "NaN") {
    *out = std::numeric_limits<double>::quiet_NaN();
  } else {
    return absl::SimpleAtod(text, out);
  }
  return true;
}

absl::StatusOr<PrometheusSample> ParseSample(absl::string_view line) {
  PrometheusSample s;
  size_t i = 0;
  while (i < line.size() && (absl::ascii_isalnum(line[i]) || line[i] == '_' || line[i] == ':')) ++i;
  if (i == 0) return absl::InvalidArgumentError("no metric name");
  s.name = std::string(line.substr(0, i));
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      const size_t name_start = i;
      while (i < line.size() && (absl::ascii_isalnum(line[i]) || line[i] == '_')) ++i;
      const std::string name(line.substr(name_start, i - name_start));
      if (name.empty() || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
        return absl::InvalidArgumentError("malformed label");
      }
      i += 2;
      std::string value;
      bool closed = false;
      for (; i < line.size(); ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) {
          const char e = line[++i];
          value += e == 'n' ? '\n' : e;
        } else if (line[i] == '"') {
          closed = true;
          ++i;
          break;
        } else {
          value += line[i];
        }
      }
      if (!closed) return absl::InvalidArgumentError("unterminated label value");
      s.labels[name] = std::move(value);
    }
  }
  std::vector<absl::string_view> rest = absl::StrSplit(line.substr(i), ' ', absl::SkipEmpty());
  if (rest.empty() || rest.size() > 2 || !ParseValue(rest[0], &s.value)) {
    return absl::InvalidArgumentError("malformed value");
  }
  return s;
}

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& url, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(absl::StrCat("'", url, "' is not an http:// URL"));
  }
  const size_t slash = rest.find('/');
  const absl::string_view authority = rest.substr(0, slash);
  const std::string path = slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  std::string host(authority), port = "80";
  if (absl::StartsWith(authority, "[")) {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) return absl::InvalidArgumentError(absl::StrCat("bad host in '", url, "'"));
    host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size() && authority[close + 1] == ':') port = std::string(authority.substr(close + 2));
  } else if (const size_t colon = authority.rfind(':'); colon != absl::string_view::npos) {
    host = std::string(authority.substr(0, colon));
    port = std::string(authority.substr(colon + 1));
  }
  if (host.empty()) return absl::InvalidArgumentError(absl::StrCat("no host in '", url, "'"));

  CLIPSERVE_ASSIGN_OR_RETURN(const int raw_fd, Connect(host, port, deadline));
  Fd fd(raw_fd);
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", authority, "\r\nUser-Agent: clipctl\r\nAccept: text/plain\r\n",
                   "Connection: close\r\n\r\n");
  for (size_t sent = 0; sent < request.size();) {
    CLIPSERVE_RETURN_IF_ERROR(WaitFd(fd.get(), POLLOUT, deadline, "sending the request"));
    const ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("sending to ", url, ": ", std::strerror(errno)));
    }
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[16384];
  for (;;) {
    CLIPSERVE_RETURN_IF_ERROR(WaitFd(fd.get(), POLLIN, deadline, absl::StrCat("reading ", url)));
    const ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("reading ", url, ": ", std::strerror(errno)));
    }
    response.append(buf, static_cast<size_t>(n));
    if (response.size() > (size_t{256} << 20)) return absl::ResourceExhaustedError("response larger than 256 MiB");
  }

  const size_t header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos) return absl::DataLossError(absl::StrCat(url, ": malformed HTTP response"));
  const std::vector<absl::string_view> header_lines =
      absl::StrSplit(absl::string_view(response).substr(0, header_end), "\r\n");
  const std::vector<absl::string_view> status_line = absl::StrSplit(header_lines[0], absl::MaxSplits(' ', 2));
  int code = 0;
  if (status_line.size() < 2 || !absl::StartsWith(status_line[0], "HTTP/") ||
      !absl::SimpleAtoi(status_line[1], &code)) {
    return absl::DataLossError(absl::StrCat(url, ": malformed status line"));
  }
  if (code != 200) {
    return absl::FailedPreconditionError(
        absl::StrCat(url, " answered HTTP ",
                     absl::StripAsciiWhitespace(absl::string_view(header_lines[0]).substr(status_line[0].size()))));
  }
  bool chunked = false;
  for (size_t i = 1; i < header_lines.size(); ++i) {
    const std::string lower = absl::AsciiStrToLower(header_lines[i]);
    if (absl::StartsWith(lower, "transfer-encoding:") && absl::StrContains(lower, "chunked")) chunked = true;
  }
  const absl::string_view body = absl::string_view(response).substr(header_end + 4);
  if (chunked) return Dechunk(body);
  return std::string(body);
}

absl::StatusOr<std::vector<PrometheusSample>> ParsePrometheusText(absl::string_view text) {
  std::vector<PrometheusSample> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    absl::StatusOr<PrometheusSample> s = ParseSample(line);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics line ", line_no, ": ", s.status().message(), ": '", line.substr(0, 200), "'"));
    }
    out.push_back(*std::move(s));
  }
  return out;
}

std::string Histogram::label(const std::string& name) const {
  const auto it = labels.find(name);
  return it == labels.end() ? "" : it->second;
}

std::vector<Histogram> ExtractHistograms(const std::vector<PrometheusSample>& samples, const std::string& family) {
  std::vector<Histogram> out;
  auto series = [&out](std::map<std::string, std::string> labels) -> Histogram& {
    for (Histogram& h : out) {
      if (h.labels == labels) return h;
    }
    out.push_back(Histogram{std::move(labels), {}, 0, 0});
    return out.back();
  };
  for (const PrometheusSample& s : samples) {
    if (s.name == family + "_bucket") {
      auto labels = s.labels;
      const auto le = labels.find("le");
      if (le == labels.end()) continue;
      double bound = 0;
      if (!ParseValue(le->second, &bound)) continue;
      labels.erase(le);
      series(std::move(labels)).buckets.emplace_back(bound, s.value);
    } else if (s.name == family + "_sum") {
      series(s.labels).sum = s.value;
    } else if (s.name == family + "_count") {
      series(s.labels).count = s.value;
    }
  }
  for (Histogram& h : out) std::sort(h.buckets.begin(), h.buckets.end());
  return out;
}

std::vector<Histogram> SubtractHistograms(const std::vector<Histogram>& after, const std::vector<Histogram>& before) {
  std::vector<Histogram> out;
  for (const Histogram& a : after) {
    Histogram d = a;
    for (const Histogram& b : before) {
      if (b.labels != a.labels) continue;
      d.sum -= b.sum;
      d.count -= b.count;
      for (auto& [bound, count] : d.buckets) {
        for (const auto& [b_bound, b_count] : b.buckets) {
          if (b_bound == bound) count -= b_count;
        }
      }
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::string DefaultMetricsUrl(absl::string_view target) {
  const std::string host = TargetHost(target);
  if (host.empty()) return "";
  return absl::StrCat("http://", host, ":8501/metrics");
}

}  // namespace clipserve::client
