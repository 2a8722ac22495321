#include "server/service/config.h"

#include <algorithm>
#include <set>
#include <tuple>
#include <thread>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "nlohmann/json.hpp"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/service/generation_defaults.h"
#include "server/service/security.h"

namespace clipserve::service {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kDefaultGrpcPort = 8500;
constexpr uint32_t kDefaultHttpPort = 8501;
constexpr uint32_t kDefaultDrainTimeoutMs = 20000;
constexpr uint32_t kMaxBatchSizeLimit = 4096;
constexpr uint32_t kMaxPriorityLevels = 16;

class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty()) first_ = absl::StrCat("line ", line + 1, ", column ", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config field ", field, ": ", what));
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

absl::Status FinalizeLane(const std::string& field, LaneConfig* lane) {
  if (lane->max_batch_size() == 0) lane->set_max_batch_size(32);
  if (!lane->has_max_queue_delay_us()) lane->set_max_queue_delay_us(2000);
  if (lane->max_queue_size() == 0) lane->set_max_queue_size(1024);
  if (lane->priority_levels() == 0) lane->set_priority_levels(1);
  if (lane->default_priority() == 0) lane->set_default_priority(1);
  if (lane->max_batch_size() > kMaxBatchSizeLimit) {
    return Bad(field + ".max_batch_size", absl::StrCat(lane->max_batch_size(), " is too large; use 1 to ", kMaxBatchSizeLimit));
  }
  if (lane->max_queue_delay_us() > 10'000'000) {
    return Bad(field + ".max_queue_delay_us", absl::StrCat(lane->max_queue_delay_us(), " is more than 10 s"));
  }
  uint32_t previous = 0;
  for (uint32_t size : lane->preferred_batch_sizes()) {
    if (size == 0 || size > lane->max_batch_size() || size <= previous) {
      return Bad(field + ".preferred_batch_sizes",
                 absl::StrCat("must be increasing and in [1, max_batch_size = ", lane->max_batch_size(), "], got ",
                              absl::StrJoin(lane->preferred_batch_sizes(), ", ")));
    }
    previous = size;
  }
  if (lane->max_queue_size() < lane->max_batch_size()) {
    return Bad(field + ".max_queue_size", absl::StrCat(lane->max_queue_size(), " is smaller than max_batch_size (",
                                                       lane->max_batch_size(), ")"));
  }
  if (lane->priority_levels() > kMaxPriorityLevels) {
    return Bad(field + ".priority_levels", absl::StrCat(lane->priority_levels(), "; use 1 to ", kMaxPriorityLevels));
  }
  if (lane->default_priority() > lane->priority_levels()) {
    return Bad(field + ".default_priority",
               absl::StrCat(lane->default_priority(), " is outside [1, priority_levels = ", lane->priority_levels(), "]"));
  }
  return absl::OkStatus();
}

absl::Status FinalizeModel(const std::string& field, const fs::path& base_dir, ModelConfig* m) {
  if (!ValidName(m->name())) {
    return Bad(field + ".name", absl::StrCat("'", m->name(), "' is not a valid name ([A-Za-z0-9._-]{1,64})"));
  }
  if (m->path().empty()) return Bad(field + ".path", "is required (a model directory)");
  fs::path path = m->path();
  if (path.is_relative()) path = base_dir / path;
  path = path.lexically_normal();
  m->set_path(path.string());
  if (!fs::is_regular_file(path / "config.json")) {
    return Bad(field + ".path", absl::StrCat("'", path.string(), "' is not a model directory (no config.json)"));
  }
  // The directory's config.json tells the kind: a VQGAN (ours: `ddconfig`) or a CLIP (Hugging Face).
  auto model_config = ReadJsonFile(path / "config.json");
  if (!model_config.ok()) return Bad(field + ".path", std::string(model_config.status().message()));
  if (model_config->is_object() && model_config->contains("ddconfig")) {
    return Bad(field + ".path", absl::StrCat("'", path.string(),
                                             "' is a VQGAN directory; models serve CLIP directories, and a VQGAN "
                                             "goes in generation.vqgan_path"));
  }
  if (m->device().empty()) m->set_device("cpu");
  uint32_t index = 0;
  if (m->device() != "cpu" &&
      !(absl::StartsWith(m->device(), "cuda:") && absl::SimpleAtoi(m->device().substr(5), &index))) {
    return Bad(field + ".device", absl::StrCat("'", m->device(), "'; use \"cpu\" or \"cuda:N\""));
  }
  if (m->dtype().empty()) m->set_dtype("float32");
  if (m->dtype() != "float32" && m->dtype() != "float16" && m->dtype() != "bfloat16") {
    return Bad(field + ".dtype", absl::StrCat("'", m->dtype(), "'; use float32, float16 or bfloat16"));
  }
  if (m->instances() == 0) m->set_instances(1);
  if (m->instances() > 64) return Bad(field + ".instances", absl::StrCat(m->instances(), "; use 1 to 64"));
  if (!m->has_text_cache_entries()) m->set_text_cache_entries(10000);
  CLIPSERVE_RETURN_IF_ERROR(FinalizeLane(field + ".text_lane", m->mutable_text_lane()));
  return FinalizeLane(field + ".image_lane", m->mutable_image_lane());
}

absl::Status FinalizeGeneration(const fs::path& base_dir, const ServerConfig& config, GenerationConfig* g) {
  if (g->vqgan_path().empty()) return absl::OkStatus();
  fs::path path = g->vqgan_path();
  if (path.is_relative()) path = base_dir / path;
  path = path.lexically_normal();
  g->set_vqgan_path(path.string());
  auto vq_config = ReadJsonFile(path / "config.json");
  if (!vq_config.ok() || !vq_config->is_object() || !vq_config->contains("ddconfig")) {
    return Bad("generation.vqgan_path",
               absl::StrCat("'", path.string(), "' is not a VQGAN directory (config.json with a ddconfig)"));
  }
  if (g->clip_model().empty()) {
    for (const ModelConfig& m : config.models()) {
      if (m.default_()) g->set_clip_model(m.name());
    }
  }
  const auto served = [&config](const std::string& name) -> const ModelConfig* {
    for (const ModelConfig& m : config.models()) {
      if (m.name() == name) return &m;
    }
    return nullptr;
  };
  const ModelConfig* clip = served(g->clip_model());
  if (clip == nullptr) {
    return Bad("generation.clip_model", absl::StrCat("'", g->clip_model(), "' is not a served model"));
  }
  const std::string& clip_device = clip->device();
  for (int i = 0; i < g->more_clip_models_size(); ++i) {
    const std::string& name = g->more_clip_models(i);
    const std::string field = absl::StrCat("generation.more_clip_models[", i, "]");
    const ModelConfig* m = served(name);
    if (m == nullptr) return Bad(field, absl::StrCat("'", name, "' is not a served model"));
    if (name == g->clip_model()) return Bad(field, absl::StrCat("'", name, "' is clip_model already"));
    for (int j = 0; j < i; ++j) {
      if (g->more_clip_models(j) == name) return Bad(field, absl::StrCat("'", name, "' is listed twice"));
    }
    if (m->device() != clip_device) {
      return Bad(field, absl::StrCat("'", name, "' is on ", m->device(), " and clip_model '", g->clip_model(),
                                     "' on ", clip_device, "; generation runs on one device"));
    }
  }
  if (!g->has_max_active_jobs()) g->set_max_active_jobs(4);
  if (!g->has_max_queued_jobs()) g->set_max_queued_jobs(16);
  if (g->max_active_jobs() < 1 || g->max_active_jobs() > 256) {
    return Bad("generation.max_active_jobs", absl::StrCat(g->max_active_jobs(), "; use 1 to 256"));
  }
  if (g->max_queued_jobs() > 10000) {
    return Bad("generation.max_queued_jobs", absl::StrCat(g->max_queued_jobs(), "; use 0 to 10000"));
  }
  if (!g->has_max_side()) g->set_max_side(256);
  if (!g->has_max_steps()) g->set_max_steps(1000);
  if (!g->has_max_cutn()) g->set_max_cutn(64);
  if (!g->has_max_frame_side()) g->set_max_frame_side(1024);
  if (!g->has_default_side()) g->set_default_side(vq_config->value("ddconfig", nlohmann::json::object()).value("resolution", 64));
  for (const auto& [name, value, hi] : {std::tuple<const char*, uint32_t, uint32_t>{"max_side", g->max_side(), 8192},
                                        {"max_steps", g->max_steps(), 100000},
                                        {"max_cutn", g->max_cutn(), 4096},
                                        {"max_frame_side", g->max_frame_side(), 8192},
                                        {"default_side", g->default_side(), g->max_side()}}) {
    if (value < 1 || value > hi) return Bad(absl::StrCat("generation.", name), absl::StrCat(value, "; use 1 to ", hi));
  }
  if (!g->has_keep_finished_s()) g->set_keep_finished_s(600);
  LaneConfig* lane = g->mutable_step_lane();
  if (lane->max_batch_size() == 0) lane->set_max_batch_size(g->max_active_jobs());
  if (lane->max_queue_size() == 0) lane->set_max_queue_size(std::max<uint32_t>(1024, g->max_active_jobs()));
  CLIPSERVE_RETURN_IF_ERROR(FinalizeLane("generation.step_lane", lane));
  if (lane->max_queue_size() < g->max_active_jobs()) {
    return Bad("generation.step_lane.max_queue_size",
               absl::StrCat(lane->max_queue_size(), " is smaller than max_active_jobs (", g->max_active_jobs(), ")"));
  }
  return ValidateJobDefaults(*g);
}

// Resolves the file paths and reads everything once (LoadServerSecurity), so that a missing certificate or a bad
// token file fails here, naming the field, rather than when the port is opened.
absl::Status FinalizeSecurity(const fs::path& base_dir, SecurityConfig* security) {
  for (std::string* value : {security->mutable_tls_cert_file(), security->mutable_tls_key_file(),
                             security->mutable_tls_client_ca_file(), security->mutable_tokens_file()}) {
    if (value->empty()) continue;
    fs::path path = *value;
    if (path.is_relative()) path = base_dir / path;
    *value = path.lexically_normal().string();
  }
  if (!security->has_http_tls()) security->set_http_tls(!security->tls_cert_file().empty());
  if (security->http_tls() && security->tls_cert_file().empty()) {
    return Bad("security.http_tls", "needs security.tls_cert_file and security.tls_key_file");
  }
  if (!security->has_require_token()) {
    security->set_require_token(!security->tokens_file().empty() || !security->tokens_env().empty());
  }
  absl::StatusOr<ServerSecurity> loaded = LoadServerSecurity(*security);
  if (!loaded.ok()) return absl::InvalidArgumentError(absl::StrCat("config field ", loaded.status().message()));
  return absl::OkStatus();
}

absl::Status FinalizeGateway(const v1::config::Limits& limits, GatewayConfig* g) {
  if (!g->has_enabled()) g->set_enabled(true);
  if (!g->has_web_demo()) g->set_web_demo(true);
  if (g->web_demo() && !g->enabled()) return Bad("gateway.web_demo", "needs gateway.enabled (the demo calls /v1/)");
  for (int i = 0; i < g->cors_allowed_origins_size(); ++i) {
    const std::string& origin = g->cors_allowed_origins(i);
    const bool ok = origin == "*" || ((absl::StartsWith(origin, "http://") || absl::StartsWith(origin, "https://")) &&
                                      origin.find_first_of(" \t\r\n,") == std::string::npos &&
                                      !absl::EndsWith(origin, "/"));
    if (!ok) {
      return Bad(absl::StrCat("gateway.cors_allowed_origins[", i, "]"),
                 absl::StrCat("'", absl::CEscape(origin),
                              "'; use \"*\" or an origin such as \"https://app.example.com\" (scheme, host, "
                              "optional port, no path)"));
    }
  }
  if (g->default_timeout_ms() == 0) g->set_default_timeout_ms(60000);
  if (g->default_timeout_ms() > 3'600'000) {
    return Bad("gateway.default_timeout_ms", absl::StrCat(g->default_timeout_ms(), "; use 1 to 3600000 (1 h)"));
  }
  if (g->max_request_bytes() == 0) {
    const uint64_t bytes = uint64_t{limits.max_message_bytes()} * 4 / 3 + (64u << 10);
    g->set_max_request_bytes(static_cast<uint32_t>(std::min<uint64_t>(bytes, uint64_t{1} << 31)));
  }
  if (g->max_streams() == 0) g->set_max_streams(16);
  if (g->max_streams() > 1000) return Bad("gateway.max_streams", absl::StrCat(g->max_streams(), "; use 1 to 1000"));
  return absl::OkStatus();
}

}  // namespace

absl::Status FinalizeServerConfig(ServerConfig* config, const fs::path& base_dir) {
  if (config->listen_address().empty()) config->set_listen_address("0.0.0.0");
  if (!config->has_grpc_port()) config->set_grpc_port(kDefaultGrpcPort);
  if (!config->has_http_port()) config->set_http_port(kDefaultHttpPort);
  if (config->grpc_port() > 65535) return Bad("grpc_port", absl::StrCat(config->grpc_port(), " is not a port"));
  if (config->http_port() > 65535) return Bad("http_port", absl::StrCat(config->http_port(), " is not a port"));
  if (config->drain_timeout_ms() == 0) config->set_drain_timeout_ms(kDefaultDrainTimeoutMs);
  if (config->models().empty()) return Bad("models", "at least one model is required");
  std::set<std::string> names;
  int defaults = 0;
  for (int i = 0; i < config->models_size(); ++i) {
    ModelConfig* m = config->mutable_models(i);
    const std::string field = absl::StrCat("models[", i, "]");
    CLIPSERVE_RETURN_IF_ERROR(FinalizeModel(field, base_dir, m));
    if (!names.insert(m->name()).second) {
      return Bad(field + ".name", absl::StrCat("'", m->name(), "' is used by another model"));
    }
    defaults += m->default_() ? 1 : 0;
  }
  if (defaults > 1) return Bad("models", "more than one model sets default: true");
  if (defaults == 0) config->mutable_models(0)->set_default_(true);
  if (config->has_generation()) {
    CLIPSERVE_RETURN_IF_ERROR(FinalizeGeneration(base_dir, *config, config->mutable_generation()));
  }

  if (config->has_security()) CLIPSERVE_RETURN_IF_ERROR(FinalizeSecurity(base_dir, config->mutable_security()));

  auto* limits = config->mutable_limits();
  if (limits->max_items_per_request() == 0) limits->set_max_items_per_request(256);
  if (limits->max_text_bytes() == 0) limits->set_max_text_bytes(16384);
  if (limits->max_image_bytes() == 0) limits->set_max_image_bytes(16u << 20);
  if (limits->max_image_pixels() == 0) limits->set_max_image_pixels(40'000'000);
  if (limits->max_message_bytes() == 0) limits->set_max_message_bytes(64u << 20);
  if (limits->max_image_bytes() > limits->max_message_bytes()) {
    return Bad("limits.max_image_bytes", absl::StrCat(limits->max_image_bytes(), " exceeds limits.max_message_bytes (",
                                                      limits->max_message_bytes(), ")"));
  }
  CLIPSERVE_RETURN_IF_ERROR(FinalizeGateway(*limits, config->mutable_gateway()));
  auto* threads = config->mutable_threads();
  const uint32_t cores = std::max(1u, std::thread::hardware_concurrency());
  if (threads->cpu_pool_threads() == 0) threads->set_cpu_pool_threads(cores);
  if (threads->cpu_pool_threads() > 256) return Bad("threads.cpu_pool_threads", "use 1 to 256");
  auto* logging = config->mutable_logging();
  if (logging->format().empty()) logging->set_format("text");
  if (logging->format() != "text" && logging->format() != "json") {
    return Bad("logging.format", absl::StrCat("'", logging->format(), "'; use text or json"));
  }
  if (logging->level().empty()) logging->set_level("info");
  static const std::set<std::string> kLevels = {"debug", "info", "warn", "error"};
  if (kLevels.count(logging->level()) == 0) {
    return Bad("logging.level", absl::StrCat("'", logging->level(), "'; use debug, info, warn or error"));
  }
  return absl::OkStatus();
}

absl::Status ParseConfigText(const std::string& text, const std::string& origin, ServerConfig* config) {
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, config)) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", errors.first()));
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& text, const std::string& origin,
                                               const fs::path& base_dir) {
  ServerConfig config;
  CLIPSERVE_RETURN_IF_ERROR(ParseConfigText(text, origin, &config));
  absl::Status s = FinalizeServerConfig(&config, base_dir);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(origin, ": ", s.message()));
  return config;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const fs::path& path) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 1u << 20));
  return ParseServerConfig(text, path.string(), path.parent_path());
}

absl::Status AddModelFromFlag(const std::string& flag, ServerConfig* config) {
  const size_t eq = flag.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == flag.size()) {
    return absl::InvalidArgumentError(absl::StrCat("--model expects NAME=DIR, got '", flag, "'"));
  }
  ModelConfig* m = config->add_models();
  m->set_name(flag.substr(0, eq));
  m->set_path(fs::absolute(flag.substr(eq + 1)).string());
  return absl::OkStatus();
}

}  // namespace clipserve::service
