// Command-line parsing for clipctl: `clipctl [GLOBAL FLAGS] VERB [FLAGS]`, flags as `--name=value` or
// `--name value` (`--top-k` and `--top_k` are the same flag), boolean flags as `--json` or `--json=false`.
// Every verb declares its flags in a VerbSpec; anything else is a usage error, and the spec also renders the
// verb's usage text. A verb may take one bare argument, as the value of one of its flags (`clipctl watch JOB` is
// `clipctl watch --job=JOB`).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace clipserve::client {

enum class FlagType {
  kBool,   // --name or --name=true|false
  kValue,  // --name=VALUE, at most once
  kList,   // --name=VALUE, repeatable
  kCsv,    // --name=A,B,C, repeatable; each value is split at commas
};

struct FlagSpec {
  std::string name;  // without the dashes, words joined by '_'
  FlagType type = FlagType::kValue;
  std::string value_name;  // shown in the usage text: FILE, N, ...
  std::string help;
};

struct VerbSpec {
  std::string name;
  std::string synopsis;  // the usage line after "clipctl VERB"
  std::string summary;   // one line for the list of verbs
  std::string description;
  std::vector<FlagSpec> flags;
  // A kValue flag among `flags` whose value may also be given as the one bare argument; empty: none.
  std::string positional;
};

// The flags every verb accepts (--target, --timeout, --json, --model, the TLS flags, --token, --help).
const std::vector<FlagSpec>& GlobalFlags();

// "usage: clipctl VERB ..." with the description and every flag of `verb` (global flags last).
std::string VerbUsage(const VerbSpec& verb);

// The verb and the other tokens of a command line (argv without the program name). Global flags may come
// before the verb; they are returned among `rest`, in order. INVALID_ARGUMENT when there is no verb.
struct CommandLine {
  std::string verb;
  std::vector<std::string> rest;
};
absl::StatusOr<CommandLine> SplitVerb(const std::vector<std::string>& argv);

// The parsed flags of one verb. Values are kept in command-line order.
class Args {
 public:
  // Parses `tokens` against `verb.flags` and the global flags. INVALID_ARGUMENT, naming the token, for an
  // unknown flag, a bare argument (unless the verb has a `positional` flag), a missing value, a value-flag given
  // twice (a bare argument counts as its flag) or a bad boolean.
  static absl::StatusOr<Args> Parse(const VerbSpec& verb, const std::vector<std::string>& tokens);

  bool Has(absl::string_view name) const;
  // The value of a kValue flag, or `fallback` when it is absent.
  std::string Get(absl::string_view name, absl::string_view fallback = "") const;
  bool GetBool(absl::string_view name) const;
  // Every value of the flag in order (kCsv values split at commas, empty pieces dropped).
  std::vector<std::string> GetList(absl::string_view name) const;
  // Numeric flags: INVALID_ARGUMENT naming the flag when the value is not a number within [min, max].
  absl::StatusOr<int64_t> GetInt(absl::string_view name, int64_t fallback, int64_t min, int64_t max) const;
  absl::StatusOr<double> GetDouble(absl::string_view name, double fallback, double min, double max) const;
  // (flag, value) for every occurrence of any of `names`, in command-line order (kCsv values split).
  std::vector<std::pair<std::string, std::string>> Ordered(const std::vector<std::string>& names) const;

 private:
  const FlagSpec* Find(absl::string_view name) const;

  std::vector<FlagSpec> flags_;
  std::vector<std::pair<std::string, std::string>> values_;  // (flag name, raw value)
};

// A usage error: INVALID_ARGUMENT marked so that clipctl prints the verb's usage and exits 2.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

// Splits "a,b,,c" into {"a", "b", "c"}; surrounding whitespace of each piece is removed.
std::vector<std::string> SplitCsv(absl::string_view value);

}  // namespace clipserve::client
