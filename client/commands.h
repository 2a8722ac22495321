// clipctl's verbs against a server (embed, classify, rank, similarity, tokenize, models, health, bench, and the
// generation verbs of generation_commands.h) and the dispatcher that runs a command line: parse, run, print the
// answer as a table or as JSON, print errors, and choose the exit code (0 success, 1 failure — an error status,
// or health not SERVING — 2 usage error, 130 a generation stopped by Ctrl-C).
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/args.h"
#include "client/clip_client.h"
#include "client/generation_client.h"

namespace clipserve::client {

// What a verb gets besides its flags: the global options, the output streams and (on first use) the clients.
// Not thread-safe; one per command.
class Context {
 public:
  // `err` is a terminal when it is std::cerr and file descriptor 2 is a TTY.
  Context(std::string target, absl::Duration timeout, ChannelSecurity security, bool json, std::ostream& out,
          std::ostream& err);

  const std::string& target() const { return target_; }
  absl::Duration timeout() const { return timeout_; }
  // TLS and token for every connection to the target (--tls*, --token, $CLIPSERVE_TOKEN).
  const ChannelSecurity& security() const { return security_; }
  bool json() const { return json_; }
  std::ostream& out() { return out_; }
  // Diagnostics and live progress; a verb's answer goes to out().
  std::ostream& err() { return err_; }
  // Live progress may rewrite its line in place ('\r').
  bool err_is_terminal() const { return err_is_terminal_; }
  // The clients for --target, created on first use.
  absl::StatusOr<ClipClient*> client();
  absl::StatusOr<GenerationClient*> generation_client();

 private:
  ClientOptions ClientOptionsForTarget() const;

  std::string target_;
  absl::Duration timeout_;
  ChannelSecurity security_;
  bool json_;
  std::ostream& out_;
  std::ostream& err_;
  bool err_is_terminal_;
  std::unique_ptr<ClipClient> client_;
  std::unique_ptr<GenerationClient> generation_client_;
};

struct Verb {
  VerbSpec spec;
  // Runs the verb and prints its answer; returns the exit code, or an error that the dispatcher prints (a
  // UsageError prints the verb's usage and exits 2).
  std::function<absl::StatusOr<int>(const Args&, Context&)> run;
};

// The verbs that talk to a server.
std::vector<Verb> RemoteVerbs();

// Runs `argv` (without the program name) with `verbs`; returns the exit code.
int RunClipctl(const std::vector<std::string>& argv, const std::vector<Verb>& verbs, std::ostream& out,
               std::ostream& err);

// Texts from --text (repeatable) and --texts_json=FILE (a JSON array of strings), in that order.
absl::StatusOr<std::vector<std::string>> CollectTexts(const Args& args);

}  // namespace clipserve::client
