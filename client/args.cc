#include "client/args.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace clipserve::client {
namespace {

constexpr char kUsagePayloadUrl[] = "type.clipserve.dev/clipctl.UsageError";

// "--top-k=3" -> ("top_k", "3", true); "--json" -> ("json", "", false). False when `token` is not a flag.
bool SplitFlag(const std::string& token, std::string* name, std::string* value, bool* has_value) {
  if (token.size() < 3 || token[0] != '-' || token[1] != '-') return false;
  const size_t eq = token.find('=');
  *name = token.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
  std::replace(name->begin(), name->end(), '-', '_');
  *has_value = eq != std::string::npos;
  *value = *has_value ? token.substr(eq + 1) : "";
  return true;
}

const FlagSpec* FindIn(const std::vector<FlagSpec>& flags, absl::string_view name) {
  for (const FlagSpec& f : flags) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

}  // namespace

const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* const kFlags = new std::vector<FlagSpec>{
      {"target", FlagType::kValue, "HOST:PORT", "the server's gRPC address (default localhost:8500)"},
      {"timeout", FlagType::kValue, "SECONDS",
       "deadline of each call (default 30; generation streams: none unless given)"},
      {"json", FlagType::kBool, "",
       "print one JSON document: the response (protobuf JSON mapping) or {\"error\": {...}}"},
      {"model", FlagType::kValue, "NAME", "the served model to use (default: the server's default model)"},
      {"tls", FlagType::kBool, "", "connect with TLS, checking the server against the system's CA certificates"},
      {"tls_ca", FlagType::kValue, "FILE", "connect with TLS, checking the server against these CA certificates (PEM)"},
      {"tls_cert", FlagType::kValue, "FILE", "mutual TLS: this client certificate chain (PEM), with --tls_key"},
      {"tls_key", FlagType::kValue, "FILE", "mutual TLS: the client certificate's private key (PEM)"},
      {"tls_server_name", FlagType::kValue, "NAME", "the name in the server's certificate, if not the --target host"},
      {"token", FlagType::kValue, "TOKEN", "send `authorization: Bearer TOKEN` (default $CLIPSERVE_TOKEN, safer)"},
      {"help", FlagType::kBool, "", "print this text"},
  };
  return *kFlags;
}

std::string VerbUsage(const VerbSpec& verb) {
  std::string out = absl::StrCat("usage: clipctl [--target=HOST:PORT] ", verb.name, " ", verb.synopsis, "\n");
  if (!verb.description.empty()) absl::StrAppend(&out, "\n", verb.description, "\n");
  // A verb may redefine a global flag (compare's --model is a directory): only its own entry is shown.
  auto list = [&out](const std::vector<FlagSpec>& flags, const std::vector<FlagSpec>& skip) {
    for (const FlagSpec& f : flags) {
      if (FindIn(skip, f.name) != nullptr) continue;
      std::string left = absl::StrCat("  --", f.name);
      if (!f.value_name.empty()) absl::StrAppend(&left, "=", f.value_name);
      if (f.type == FlagType::kList) absl::StrAppend(&left, " ...");
      if (left.size() < 28) {
        absl::StrAppend(&out, absl::StrFormat("%-28s%s\n", left, f.help));
      } else {
        absl::StrAppend(&out, left, "\n", std::string(28, ' '), f.help, "\n");
      }
    }
  };
  if (!verb.flags.empty()) {
    absl::StrAppend(&out, "\nflags:\n");
    list(verb.flags, {});
  }
  absl::StrAppend(&out, "\nglobal flags:\n");
  list(GlobalFlags(), verb.flags);
  return out;
}

absl::StatusOr<CommandLine> SplitVerb(const std::vector<std::string>& argv) {
  CommandLine out;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& token = argv[i];
    std::string name, value;
    bool has_value = false;
    if (!out.verb.empty() || !SplitFlag(token, &name, &value, &has_value)) {
      if (out.verb.empty()) {
        out.verb = token;
      } else {
        out.rest.push_back(token);
      }
      continue;
    }
    // A global flag before the verb; its value may be the next token.
    out.rest.push_back(token);
    const FlagSpec* spec = FindIn(GlobalFlags(), name);
    if (spec != nullptr && spec->type != FlagType::kBool && !has_value && i + 1 < argv.size()) {
      out.rest.push_back(argv[++i]);
    }
  }
  if (out.verb.empty()) return absl::InvalidArgumentError("no command given");
  return out;
}

absl::StatusOr<Args> Args::Parse(const VerbSpec& verb, const std::vector<std::string>& tokens) {
  Args args;
  args.flags_ = verb.flags;
  for (const FlagSpec& g : GlobalFlags()) {
    if (FindIn(verb.flags, g.name) == nullptr) args.flags_.push_back(g);
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& token = tokens[i];
    std::string name, value;
    bool has_value = false;
    if (!SplitFlag(token, &name, &value, &has_value)) {
      if (verb.positional.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", token, "' (flags are --name=value)"));
      }
      name = verb.positional;
      value = token;
      has_value = true;
    }
    const FlagSpec* spec = args.Find(name);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '--", name, "' for '", verb.name, "'"));
    }
    if (spec->type == FlagType::kBool) {
      if (has_value && value != "true" && value != "false" && value != "1" && value != "0") {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value or true/false, not '", value, "'"));
      }
      if (!has_value) value = "true";
    } else if (!has_value) {
      if (i + 1 >= tokens.size()) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = tokens[++i];
    }
    if (spec->type == FlagType::kValue || spec->type == FlagType::kBool) {
      for (const auto& [n, v] : args.values_) {
        if (n == name) return absl::InvalidArgumentError(absl::StrCat("--", name, " is given more than once"));
      }
    }
    args.values_.emplace_back(name, value);
  }
  return args;
}

const FlagSpec* Args::Find(absl::string_view name) const { return FindIn(flags_, name); }

bool Args::Has(absl::string_view name) const {
  for (const auto& [n, v] : values_) {
    if (n == name) return true;
  }
  return false;
}

std::string Args::Get(absl::string_view name, absl::string_view fallback) const {
  for (const auto& [n, v] : values_) {
    if (n == name) return v;
  }
  return std::string(fallback);
}

bool Args::GetBool(absl::string_view name) const {
  const std::string v = Get(name, "false");
  return v == "true" || v == "1";
}

std::vector<std::string> Args::GetList(absl::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [n, v] : Ordered({std::string(name)})) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, std::string>> Args::Ordered(const std::vector<std::string>& names) const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [n, v] : values_) {
    if (std::find(names.begin(), names.end(), n) == names.end()) continue;
    const FlagSpec* spec = Find(n);
    if (spec != nullptr && spec->type == FlagType::kCsv) {
      for (std::string& piece : SplitCsv(v)) out.emplace_back(n, std::move(piece));
    } else {
      out.emplace_back(n, v);
    }
  }
  return out;
}

absl::StatusOr<int64_t> Args::GetInt(absl::string_view name, int64_t fallback, int64_t min, int64_t max) const {
  if (!Has(name)) return fallback;
  const std::string v = Get(name);
  int64_t out = 0;
  if (!absl::SimpleAtoi(v, &out) || out < min || out > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be an integer in [", min, ", ", max, "], not '", v, "'"));
  }
  return out;
}

absl::StatusOr<double> Args::GetDouble(absl::string_view name, double fallback, double min, double max) const {
  if (!Has(name)) return fallback;
  const std::string v = Get(name);
  double out = 0;
  if (!absl::SimpleAtod(v, &out) || !(out >= min && out <= max)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number in [", min, ", ", max, "], not '", v, "'"));
  }
  return out;
}

absl::Status UsageError(absl::string_view message) {
  absl::Status s = absl::InvalidArgumentError(message);
  s.SetPayload(kUsagePayloadUrl, absl::Cord("usage"));
  return s;
}

bool IsUsageError(const absl::Status& status) { return status.GetPayload(kUsagePayloadUrl).has_value(); }

std::vector<std::string> SplitCsv(absl::string_view value) {
  std::vector<std::string> out;
  for (absl::string_view piece : absl::StrSplit(value, ',')) {
    piece = absl::StripAsciiWhitespace(piece);
    if (!piece.empty()) out.emplace_back(piece);
  }
  return out;
}

}  // namespace clipserve::client
