// A tiny blocking HTTP/1.1 client over plain sockets for tests of the HTTP side port: one request per
// connection, read until the server closes it.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace clipserve::testing {

struct HttpResult {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? "" : it->second;
  }
};

// A connected socket to 127.0.0.1:port (receive timeout 10 s), or an error. The caller closes it.
inline absl::StatusOr<int> ConnectLocal(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect to port ", port, ": ", std::strerror(err)));
  }
  return fd;
}

// Sends `raw` (a complete request) and parses the response read until EOF.
inline absl::StatusOr<HttpResult> HttpRoundTrip(int port, absl::string_view raw) {
  absl::StatusOr<int> fd = ConnectLocal(port);
  if (!fd.ok()) return fd.status();
  size_t sent = 0;
  while (sent < raw.size()) {
    const ssize_t n = ::send(*fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413) and close before reading everything
    sent += static_cast<size_t>(n);
  }
  ::shutdown(*fd, SHUT_WR);  // the request is complete: a server draining an unread body sees EOF
  std::string data;
  char buffer[8192];
  while (true) {
    const ssize_t n = ::recv(*fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && data.empty()) {
      const int err = errno;
      ::close(*fd);
      return absl::DeadlineExceededError(absl::StrCat("recv: ", std::strerror(err)));
    }
    if (n <= 0) break;
    data.append(buffer, static_cast<size_t>(n));
  }
  ::close(*fd);

  const size_t end = data.find("\r\n\r\n");
  if (end == std::string::npos) return absl::DataLossError(absl::StrCat("no header end in: ", data));
  HttpResult result;
  result.body = data.substr(end + 4);
  std::vector<std::string> lines = absl::StrSplit(data.substr(0, end), "\r\n");
  std::vector<std::string> status_line = absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
  if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &result.status)) {
    return absl::DataLossError(absl::StrCat("bad status line: ", lines[0]));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    result.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  return result;
}

// `method target` with an optional body (sent with Content-Length).
inline absl::StatusOr<HttpResult> HttpRequest(int port, absl::string_view method, absl::string_view target,
                                              absl::string_view body = "") {
  std::string raw = absl::StrCat(method, " ", target, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
  if (!body.empty() || method == "POST" || method == "PUT")
    absl::StrAppend(&raw, "Content-Length: ", body.size(), "\r\n");
  absl::StrAppend(&raw, "\r\n", body);
  return HttpRoundTrip(port, raw);
}

inline absl::StatusOr<HttpResult> HttpGet(int port, absl::string_view target) {
  return HttpRequest(port, "GET", target);
}

// The body of a chunked response decoded (each chunk appended to `chunks` when given); DATA_LOSS for a
// malformed or unterminated chunk stream.
inline absl::StatusOr<std::string> Dechunk(absl::string_view body, std::vector<std::string>* chunks = nullptr) {
  std::string out;
  while (true) {
    const size_t eol = body.find("\r\n");
    if (eol == absl::string_view::npos) return absl::DataLossError("chunk size line without CRLF");
    size_t size = 0;
    if (!absl::SimpleHexAtoi(body.substr(0, eol), &size)) {
      return absl::DataLossError(absl::StrCat("bad chunk size '", body.substr(0, eol), "'"));
    }
    body.remove_prefix(eol + 2);
    if (size == 0) return out;
    if (body.size() < size + 2 || body.substr(size, 2) != "\r\n") return absl::DataLossError("truncated chunk");
    out.append(body.data(), size);
    if (chunks != nullptr) chunks->emplace_back(body.substr(0, size));
    body.remove_prefix(size + 2);
  }
}

}  // namespace clipserve::testing
