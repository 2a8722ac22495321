#include "client/commands.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/bench.h"
#include "client/generation_commands.h"
#include "client/images.h"
#include "client/metrics.h"
#include "client/output.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::client {
namespace {

constexpr char kTopUsage[] =
    "usage: clipctl [--target=HOST:PORT] [--timeout=SECONDS] [--json] VERB [FLAGS]\n"
    "\n"
    "clipserve's command-line client. `clipctl VERB --help` describes a verb.\n"
    "\n"
    "verbs:\n";

absl::StatusOr<uint32_t> TopK(const Args& args) {
  absl::StatusOr<int64_t> k = args.GetInt("top_k", 0, 0, 1 << 20);
  if (!k.ok()) return UsageError(k.status().message());
  return static_cast<uint32_t>(*k);
}

// Prints `response` as JSON or as the verb's table.
template <typename Response>
int Print(Context& ctx, const Response& response, const std::function<std::string()>& table) {
  if (ctx.json()) {
    ctx.out() << MessageToJson(response) << "\n";
  } else {
    ctx.out() << table();
  }
  return 0;
}

// ---- embed ----------------------------------------------------------------------------------------------------

VerbSpec EmbedSpec() {
  return {"embed",
          "(--text=TEXT ... | --texts_json=FILE | --image=FILE[,FILE...]) [--unnormalized] [--model=NAME]",
          "embed texts or images: one vector each",
          "Prints one embedding per input: as a table (index, input, norm, first values) or, with --json, the\n"
          "EmbedTextResponse / EmbedImageResponse. Images are files, directories (every image inside, sorted) or\n"
          "glob patterns.",
          {{"text", FlagType::kList, "TEXT", "a text to embed (repeatable)"},
           {"texts_json", FlagType::kValue, "FILE", "a JSON array of texts to embed"},
           {"image", FlagType::kCsv, "FILE[,FILE...]", "images to embed: files, directories or globs (repeatable)"},
           {"unnormalized", FlagType::kBool, "", "return the raw projected vectors instead of unit vectors"},
           {"values", FlagType::kValue, "N", "how many leading values the table shows (default 6)"}}};
}

absl::StatusOr<int> RunEmbed(const Args& args, Context& ctx) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> texts, CollectTexts(args));
  const std::vector<std::string> image_specs = args.GetList("image");
  if (texts.empty() == image_specs.empty()) {
    return UsageError("give texts (--text, --texts_json) or images (--image), not both and not neither");
  }
  absl::StatusOr<int64_t> shown = args.GetInt("values", 6, 0, 1 << 20);
  if (!shown.ok()) return UsageError(shown.status().message());
  const std::string model = args.Get("model");
  if (!texts.empty()) {
    v1::EmbedTextRequest req;
    req.set_model(model);
    for (const auto& t : texts) req.add_texts(t);
    req.set_unnormalized(args.GetBool("unnormalized"));
    req.set_include_norm(true);
    CLIPSERVE_ASSIGN_OR_RETURN(ClipClient * client, ctx.client());
    CLIPSERVE_ASSIGN_OR_RETURN(v1::EmbedTextResponse resp, client->EmbedText(req));
    return Print(ctx, resp, [&] { return FormatEmbeddings(resp.model(), texts, resp.embeddings(), *shown); });
  }
  std::vector<std::string> paths;
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<v1::Image> images, LoadImages(image_specs, &paths));
  v1::EmbedImageRequest req;
  req.set_model(model);
  for (auto& i : images) *req.add_images() = std::move(i);
  req.set_unnormalized(args.GetBool("unnormalized"));
  req.set_include_norm(true);
  CLIPSERVE_ASSIGN_OR_RETURN(ClipClient * client, ctx.client());
  CLIPSERVE_ASSIGN_OR_RETURN(v1::EmbedImageResponse resp, client->EmbedImage(req));
  return Print(ctx, resp, [&] { return FormatEmbeddings(resp.model(), paths, resp.embeddings(), *shown); });
}

// ---- classify -------------------------------------------------------------------------------------------------

VerbSpec ClassifySpec() {
  return {
      "classify",
      "--image=FILE[,FILE...] --labels=a,b,c [--template=\"a photo of a {}\"] [--top_k=K] [--model=NAME]",
      "zero-shot classification of images over labels",
      "For each image (in order), the labels sorted by descending probability (softmax over CLIP's logits).\n"
      "--json prints the ClassifyResponse: {\"model\", \"results\": [{\"labels\": [{\"label\", \"index\",\n"
      "\"probability\", \"score\"}, ...]}, ...]}.",
      {{"image", FlagType::kCsv, "FILE[,FILE...]", "images: files, directories or globs (repeatable)"},
       {"labels", FlagType::kCsv, "a,b,c", "candidate labels, at least two (repeatable)"},
       {"template", FlagType::kValue, "TEXT", "prompt template with one {} for the label, e.g. \"a photo of a {}\""},
       {"top_k", FlagType::kValue, "K", "labels to return per image, most probable first (default 0: all)"}}};
}

absl::StatusOr<int> RunClassify(const Args& args, Context& ctx) {
  const std::vector<std::string> image_specs = args.GetList("image");
  const std::vector<std::string> labels = args.GetList("labels");
  if (image_specs.empty()) return UsageError("give at least one --image");
  if (labels.size() < 2) return UsageError("give at least two labels: --labels=a,b,c");
  CLIPSERVE_ASSIGN_OR_RETURN(uint32_t top_k, TopK(args));
  std::vector<std::string> paths;
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<v1::Image> images, LoadImages(image_specs, &paths));
  v1::ClassifyRequest req;
  req.set_model(args.Get("model"));
  for (auto& i : images) *req.add_images() = std::move(i);
  for (const auto& l : labels) req.add_labels(l);
  req.set_template_(args.Get("template"));
  req.set_top_k(top_k);
  CLIPSERVE_ASSIGN_OR_RETURN(ClipClient * client, ctx.client());
  CLIPSERVE_ASSIGN_OR_RETURN(v1::ClassifyResponse resp, client->Classify(req));
  return Print(ctx, resp, [&] { return FormatClassify(resp, paths); });
}

// ---- rank -----------------------------------------------------------------------------------------------------

VerbSpec RankSpec() {
  return {"rank",
          "(--query_text=TEXT | --query_image=FILE) (--image=FILE[,FILE...] | --candidates=a,b,c) [--top_k=K]",
          "rank candidates (images or texts) against a query",
          "Candidates sorted by descending cosine similarity to the query, each with its index in the request.\n"
          "--json prints the RankResponse: {\"model\", \"results\": [{\"index\", \"score\"}, ...]}.",
          {{"query_text", FlagType::kValue, "TEXT", "the query, a text"},
           {"query_image", FlagType::kValue, "FILE", "the query, an image"},
           {"image", FlagType::kCsv, "FILE[,FILE...]", "image candidates: files, directories or globs (repeatable)"},
           {"candidates", FlagType::kCsv, "a,b,c", "text candidates, comma-separated (repeatable)"},
           {"candidate", FlagType::kList, "TEXT", "one text candidate (repeatable; may hold commas)"},
           {"top_k", FlagType::kValue, "K", "candidates to return, best first (default 0: all)"}}};
}

absl::StatusOr<int> RunRank(const Args& args, Context& ctx) {
  const bool text_query = args.Has("query_text");
  if (text_query == args.Has("query_image")) return UsageError("give one query: --query_text or --query_image");
  const std::vector<std::string> image_specs = args.GetList("image");
  std::vector<std::string> text_candidates;
  for (auto& [flag, value] : args.Ordered({"candidates", "candidate"})) text_candidates.push_back(value);
  if (image_specs.empty() == text_candidates.empty()) {
    return UsageError("give candidates as images (--image) or texts (--candidates, --candidate), one kind");
  }
  CLIPSERVE_ASSIGN_OR_RETURN(uint32_t top_k, TopK(args));
  v1::RankRequest req;
  req.set_model(args.Get("model"));
  req.set_top_k(top_k);
  std::string query_name;
  if (text_query) {
    req.set_query_text(args.Get("query_text"));
    query_name = absl::StrCat("\"", args.Get("query_text"), "\"");
  } else {
    CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> q, ExpandImagePaths({args.Get("query_image")}));
    if (q.size() != 1) return UsageError("--query_image names one image file");
    CLIPSERVE_ASSIGN_OR_RETURN(*req.mutable_query_image(), LoadImage(q[0]));
    query_name = q[0];
  }
  std::vector<std::string> names = text_candidates;
  if (!image_specs.empty()) {
    CLIPSERVE_ASSIGN_OR_RETURN(std::vector<v1::Image> images, LoadImages(image_specs, &names));
    for (auto& i : images) *req.add_candidate_images() = std::move(i);
  } else {
    for (const auto& t : text_candidates) req.add_candidate_texts(t);
  }
  CLIPSERVE_ASSIGN_OR_RETURN(ClipClient * client, ctx.client());
  CLIPSERVE_ASSIGN_OR_RETURN(v1::RankResponse resp, client->Rank(req));
  return Print(ctx, resp, [&] { return FormatRank(resp, query_name, names); });
}

// ---- similarity -----------------------------------------------------------------------------------------------

VerbSpec SimilaritySpec() {
  return {"similarity",
          "(--row_text=TEXT | --row_image=FILE[,...])... (--col_text=TEXT | --col_image=FILE[,...])...\n"
          "                  or  (--text=TEXT | --image=FILE[,...])...   (the same inputs as rows and columns)",
          "cosine-similarity matrix between two lists of texts and images",
          "Rows and columns keep the order of their flags on the command line; an image spec may expand to several\n"
          "files. --json prints the SimilarityResponse (row-major \"cosine\", \"rows\", \"columns\",\n"
          "\"logit_scale\").",
          {{"row_text", FlagType::kList, "TEXT", "a text row (repeatable)"},
           {"row_image", FlagType::kCsv, "FILE[,FILE...]", "image rows: files, directories or globs (repeatable)"},
           {"col_text", FlagType::kList, "TEXT", "a text column (repeatable)"},
           {"col_image", FlagType::kCsv, "FILE[,FILE...]", "image columns (repeatable)"},
           {"text", FlagType::kList, "TEXT", "a text that is both a row and a column (repeatable)"},
           {"image", FlagType::kCsv, "FILE[,FILE...]", "images that are both rows and columns (repeatable)"}}};
}

// Inputs for the flags `text_flag` / `image_flag`, in command-line order.
absl::Status AddInputs(const Args& args, const std::string& text_flag, const std::string& image_flag,
                       google::protobuf::RepeatedPtrField<v1::Input>* inputs, std::vector<std::string>* names) {
  for (const auto& [flag, value] : args.Ordered({text_flag, image_flag})) {
    if (flag == text_flag) {
      inputs->Add()->set_text(value);
      names->push_back(absl::StrCat("\"", value, "\""));
      continue;
    }
    std::vector<std::string> paths;
    CLIPSERVE_ASSIGN_OR_RETURN(std::vector<v1::Image> images, LoadImages({value}, &paths));
    for (size_t i = 0; i < images.size(); ++i) {
      *inputs->Add()->mutable_image() = std::move(images[i]);
      names->push_back(paths[i]);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RunSimilarity(const Args& args, Context& ctx) {
  const bool square = args.Has("text") || args.Has("image");
  const bool split = args.Has("row_text") || args.Has("row_image") || args.Has("col_text") || args.Has("col_image");
  if (square == split) {
    return UsageError("give rows and columns (--row_text/--row_image and --col_text/--col_image) or --text/--image");
  }
  v1::SimilarityRequest req;
  req.set_model(args.Get("model"));
  std::vector<std::string> row_names, col_names;
  if (square) {
    CLIPSERVE_RETURN_IF_ERROR(AddInputs(args, "text", "image", req.mutable_rows(), &row_names));
    *req.mutable_columns() = req.rows();
    col_names = row_names;
  } else {
    CLIPSERVE_RETURN_IF_ERROR(AddInputs(args, "row_text", "row_image", req.mutable_rows(), &row_names));
    CLIPSERVE_RETURN_IF_ERROR(AddInputs(args, "col_text", "col_image", req.mutable_columns(), &col_names));
    if (row_names.empty() || col_names.empty()) return UsageError("give at least one row and one column");
  }
  CLIPSERVE_ASSIGN_OR_RETURN(ClipClient * client, ctx.client());
  CLIPSERVE_ASSIGN_OR_RETURN(v1::SimilarityResponse resp, client->Similarity(req));
  return Print(ctx, resp, [&] { return FormatSimilarity(resp, row_names, col_names); });
}

// ---- tokenize -------------------------------------------------------------------------------------------------

VerbSpec TokenizeSpec() {
  return {"tokenize",
          "(--text=TEXT ... | --texts_json=FILE) [--model=NAME]",
          "token ids of texts, as the model sees them",
          "One entry per text, in order: ids with the start and end tokens, never truncated, and whether they\n"
          "exceed the model's context. --json prints the TokenizeResponse: {\"model\", \"context_length\",\n"
          "\"results\": [{\"ids\": [...], \"exceeds_context\"}, ...]}.",
          {{"text", FlagType::kList, "TEXT", "a text (repeatable)"},
           {"texts_json", FlagType::kValue, "FILE", "a JSON array of texts"}}};
}

absl::StatusOr<int> RunTokenize(const Args& args, Context& ctx) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> texts, CollectTexts(args));
  if (texts.empty()) return UsageError("give texts: --text or --texts_json");
  v1::TokenizeRequest req;
  req.set_model(args.Get("model"));
  for (const auto& t : texts) req.add_texts(t);
  CLIPSERVE_ASSIGN_OR_RETURN(ClipClient * client, ctx.client());
  CLIPSERVE_ASSIGN_OR_RETURN(v1::TokenizeResponse resp, client->Tokenize(req));
  return Print(ctx, resp, [&] { return FormatTokenize(resp, texts); });
}

// ---- models, health -------------------------------------------------------------------------------------------

VerbSpec ModelsSpec() {
  return {"models",
          "",
          "the models the server serves",
          "Name, kind, embedding size, image size, context length, device, dtype and source of each served model.\n"
          "--json prints the ListModelsResponse.",
          {}};
}

absl::StatusOr<int> RunModels(const Args&, Context& ctx) {
  CLIPSERVE_ASSIGN_OR_RETURN(ClipClient * client, ctx.client());
  CLIPSERVE_ASSIGN_OR_RETURN(v1::ListModelsResponse resp, client->ListModels());
  return Print(ctx, resp, [&] { return FormatModels(resp); });
}

VerbSpec HealthSpec() {
  return {"health",
          "[--service=NAME]",
          "the server's grpc.health.v1 status",
          "Prints SERVING, NOT_SERVING, ... (--json: {\"status\": \"SERVING\"}); the exit code is 0 only for SERVING.",
          {{"service", FlagType::kValue, "NAME", "the service to ask about (default \"\": the whole server)"}}};
}

absl::StatusOr<int> RunHealth(const Args& args, Context& ctx) {
  CLIPSERVE_ASSIGN_OR_RETURN(ClipClient * client, ctx.client());
  CLIPSERVE_ASSIGN_OR_RETURN(grpc::health::v1::HealthCheckResponse resp, client->CheckHealth(args.Get("service")));
  Print(ctx, resp,
        [&] { return absl::StrCat(grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()), "\n"); });
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

// ---- bench ----------------------------------------------------------------------------------------------------

VerbSpec BenchSpec() {
  return {"bench",
          "[--call=embed_text|embed_image|classify] [--concurrency=N | --rate=R] [--duration=S] [--warmup=S]\n"
          "                  [--text=TEXT ...] [--image=FILE[,...]] [--labels=a,b,c] [--metrics_url=URL]",
          "load test: throughput, latency percentiles, errors, server batch sizes",
          "Closed loop (default): --concurrency callers, each sending its next call when the previous one ends.\n"
          "Open loop: --rate calls per second whatever the server does, with Poisson arrivals (exponential gaps,\n"
          "seeded by --seed) or --arrival=uniform (a fixed interval); latency counts from each call's scheduled\n"
          "time. Every call sends the same request: all --text (embed_text, default \"a photo of a cat\"), all\n"
          "--image (embed_image), or --image against --labels (classify). Calls are spread over --channels TCP\n"
          "connections and use gRPC's callback API. Only calls started during the --duration after --warmup count.\n"
          "Prints throughput (OK calls/s), p50/p90/p99/max/mean latency of OK calls, errors by status code, and the\n"
          "server's clipserve_batch_size histogram for this run (scraped from --metrics_url at the start and end of\n"
          "the measurement; --metrics_url=none skips it). --json prints all of it as one object.",
          {{"call", FlagType::kValue, "KIND", "embed_text (default), embed_image or classify"},
           {"text", FlagType::kList, "TEXT", "texts of each embed_text call (repeatable)"},
           {"image", FlagType::kCsv, "FILE[,FILE...]", "images of each embed_image / classify call"},
           {"labels", FlagType::kCsv, "a,b,c", "labels of each classify call"},
           {"template", FlagType::kValue, "TEXT", "classify prompt template"},
           {"concurrency", FlagType::kValue, "N", "closed loop: concurrent callers (default 16)"},
           {"rate", FlagType::kValue, "R", "open loop: calls per second (default: closed loop)"},
           {"arrival", FlagType::kValue, "KIND", "open loop: poisson (default) or uniform"},
           {"max_in_flight", FlagType::kValue, "N", "open loop: calls due while N are in flight are not sent (20000)"},
           {"duration", FlagType::kValue, "SECONDS", "measurement length (default 10)"},
           {"warmup", FlagType::kValue, "SECONDS", "load before the measurement starts (default 2)"},
           {"channels", FlagType::kValue, "N", "TCP connections to spread calls over (default 4)"},
           {"metrics_url", FlagType::kValue, "URL", "the server's /metrics (default http://TARGET_HOST:8501/metrics)"},
           {"seed", FlagType::kValue, "N", "seed of the Poisson arrivals (default 1)"}}};
}

absl::StatusOr<int> RunBenchVerb(const Args& args, Context& ctx) {
  BenchOptions o;
  o.target = ctx.target();
  o.security = ctx.security();
  o.timeout = ctx.timeout();
  o.model = args.Get("model");
  auto usage = [](const absl::Status& s) { return UsageError(s.message()); };
  absl::StatusOr<BenchCall> call = ParseBenchCall(args.Get("call", "embed_text"));
  if (!call.ok()) return usage(call.status());
  o.call = *call;
  o.texts = args.GetList("text");
  if (o.call == BenchCall::kEmbedText && o.texts.empty()) o.texts = {"a photo of a cat"};
  o.labels = args.GetList("labels");
  o.label_template = args.Get("template");
  const absl::StatusOr<int64_t> concurrency = args.GetInt("concurrency", 16, 1, 100000);
  const absl::StatusOr<double> rate = args.GetDouble("rate", 0, 0, 1e7);
  const absl::StatusOr<int64_t> max_in_flight = args.GetInt("max_in_flight", 20000, 1, 10000000);
  const absl::StatusOr<double> duration = args.GetDouble("duration", 10, 1e-3, 86400);
  const absl::StatusOr<double> warmup = args.GetDouble("warmup", 2, 0, 86400);
  const absl::StatusOr<int64_t> channels = args.GetInt("channels", 4, 1, 256);
  const absl::StatusOr<int64_t> seed = args.GetInt("seed", 1, 0, INT64_MAX);
  for (const absl::Status& s : {concurrency.status(), rate.status(), max_in_flight.status(), duration.status(),
                                warmup.status(), channels.status(), seed.status()}) {
    if (!s.ok()) return usage(s);
  }
  if (args.Has("concurrency") && args.Has("rate"))
    return UsageError("give --concurrency (closed loop) or --rate (open loop)");
  o.concurrency = static_cast<int>(*concurrency);
  o.rate = *rate;
  const std::string arrival = args.Get("arrival", "poisson");
  if (arrival != "poisson" && arrival != "uniform") {
    return UsageError(absl::StrCat("--arrival must be poisson or uniform, not '", arrival, "'"));
  }
  o.arrival = arrival == "poisson" ? Arrival::kPoisson : Arrival::kUniform;
  o.max_in_flight = static_cast<int>(*max_in_flight);
  o.duration = absl::Seconds(*duration);
  o.warmup = absl::Seconds(*warmup);
  o.channels = static_cast<int>(*channels);
  o.seed = static_cast<uint64_t>(*seed);
  o.metrics_url = args.Has("metrics_url") ? args.Get("metrics_url") : DefaultMetricsUrl(o.target);
  if (o.metrics_url == "none") o.metrics_url.clear();
  if (o.call != BenchCall::kEmbedText) {
    if (!args.Has("image")) return UsageError(absl::StrCat(BenchCallName(o.call), " needs --image"));
    CLIPSERVE_ASSIGN_OR_RETURN(o.images, LoadImages(args.GetList("image"), nullptr));
  }
  if (o.call == BenchCall::kClassify && o.labels.size() < 2) return UsageError("classify needs --labels=a,b,...");

  CLIPSERVE_ASSIGN_OR_RETURN(BenchResult result, RunBench(o));
  if (ctx.json()) {
    ctx.out() << BenchResultToJson(result).dump() << "\n";
  } else {
    ctx.out() << FormatBenchTable(result);
  }
  return 0;
}

// The global TLS flags and the token: any TLS flag turns TLS on; --token (even empty) overrides $CLIPSERVE_TOKEN.
absl::StatusOr<ChannelSecurity> SecurityFromArgs(const Args& args) {
  ChannelSecurity s;
  s.tls_ca_file = args.Get("tls_ca");
  s.tls_cert_file = args.Get("tls_cert");
  s.tls_key_file = args.Get("tls_key");
  s.tls_server_name = args.Get("tls_server_name");
  s.tls = args.GetBool("tls") || !s.tls_ca_file.empty() || !s.tls_cert_file.empty() || !s.tls_server_name.empty();
  if (s.tls_cert_file.empty() != s.tls_key_file.empty()) {
    return UsageError("--tls_cert and --tls_key go together (a client certificate and its private key)");
  }
  if (args.Has("token")) {
    s.token = args.Get("token");
  } else if (const char* env = std::getenv("CLIPSERVE_TOKEN"); env != nullptr) {
    s.token = env;
  }
  s.token = std::string(absl::StripAsciiWhitespace(s.token));
  return s;
}

std::string TopUsage(const std::vector<Verb>& verbs) {
  std::string out = kTopUsage;
  for (const Verb& v : verbs) absl::StrAppend(&out, absl::StrFormat("  %-12s %s\n", v.spec.name, v.spec.summary));
  absl::StrAppend(&out, "\nglobal flags:\n");
  for (const FlagSpec& f : GlobalFlags()) {
    std::string left = absl::StrCat("  --", f.name, f.value_name.empty() ? "" : "=", f.value_name);
    absl::StrAppend(&out, absl::StrFormat("%-28s%s\n", left, f.help));
  }
  return out;
}

}  // namespace

Context::Context(std::string target, absl::Duration timeout, ChannelSecurity security, bool json, std::ostream& out,
                 std::ostream& err)
    : target_(std::move(target)),
      timeout_(timeout),
      security_(std::move(security)),
      json_(json),
      out_(out),
      err_(err),
      err_is_terminal_(&err == &std::cerr && ::isatty(STDERR_FILENO) == 1) {}

ClientOptions Context::ClientOptionsForTarget() const {
  ClientOptions options;
  options.target = target_;
  options.timeout = timeout_;
  options.security = security_;
  return options;
}

absl::StatusOr<ClipClient*> Context::client() {
  if (client_ == nullptr) {
    CLIPSERVE_ASSIGN_OR_RETURN(client_, ClipClient::Create(ClientOptionsForTarget()));
  }
  return client_.get();
}

absl::StatusOr<GenerationClient*> Context::generation_client() {
  if (generation_client_ == nullptr) {
    CLIPSERVE_ASSIGN_OR_RETURN(generation_client_, GenerationClient::Create(ClientOptionsForTarget()));
  }
  return generation_client_.get();
}

absl::StatusOr<std::vector<std::string>> CollectTexts(const Args& args) {
  std::vector<std::string> texts = args.GetList("text");
  if (args.Has("texts_json")) {
    const std::string file = args.Get("texts_json");
    CLIPSERVE_ASSIGN_OR_RETURN(nlohmann::json doc, ReadJsonFile(file));
    if (!doc.is_array()) return absl::InvalidArgumentError(absl::StrCat(file, ": expected a JSON array of strings"));
    for (size_t i = 0; i < doc.size(); ++i) {
      if (!doc[i].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(file, ": element ", i, " is ", doc[i].type_name(), ", expected a string"));
      }
      texts.push_back(doc[i].get<std::string>());
    }
  }
  return texts;
}

std::vector<Verb> RemoteVerbs() {
  std::vector<Verb> verbs = {{EmbedSpec(), RunEmbed},       {ClassifySpec(), RunClassify},
                             {RankSpec(), RunRank},         {SimilaritySpec(), RunSimilarity},
                             {TokenizeSpec(), RunTokenize}, {ModelsSpec(), RunModels},
                             {HealthSpec(), RunHealth},     {BenchSpec(), RunBenchVerb}};
  for (Verb& v : GenerationVerbs()) verbs.push_back(std::move(v));
  return verbs;
}

int RunClipctl(const std::vector<std::string>& argv, const std::vector<Verb>& verbs, std::ostream& out,
               std::ostream& err) {
  bool json_anywhere = false;
  for (const std::string& a : argv) json_anywhere |= a == "--json" || a == "--json=true" || a == "--json=1";
  auto usage_failure = [&](const std::string& message, const std::string& usage) {
    if (json_anywhere) out << ErrorJson(absl::InvalidArgumentError(message)) << "\n";
    err << "clipctl: " << message << "\n\n" << usage;
    return 2;
  };

  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h" || argv[0] == "help") {
    (argv.empty() ? err : out) << TopUsage(verbs);
    return argv.empty() ? 2 : 0;
  }
  absl::StatusOr<CommandLine> cmd = SplitVerb(argv);
  if (!cmd.ok()) {
    if (std::find(argv.begin(), argv.end(), "--help") != argv.end()) {
      out << TopUsage(verbs);
      return 0;
    }
    return usage_failure(std::string(cmd.status().message()), TopUsage(verbs));
  }
  const Verb* verb = nullptr;
  for (const Verb& v : verbs) {
    if (v.spec.name == cmd->verb) verb = &v;
  }
  if (verb == nullptr) return usage_failure(absl::StrCat("unknown verb '", cmd->verb, "'"), TopUsage(verbs));

  const std::string usage = VerbUsage(verb->spec);
  absl::StatusOr<Args> args = Args::Parse(verb->spec, cmd->rest);
  if (!args.ok()) return usage_failure(std::string(args.status().message()), usage);
  if (args->GetBool("help")) {
    out << usage;
    return 0;
  }
  const absl::StatusOr<double> timeout_s = args->GetDouble("timeout", 30, 1e-3, 1e7);
  if (!timeout_s.ok()) return usage_failure(std::string(timeout_s.status().message()), usage);
  const bool json = args->GetBool("json");
  absl::StatusOr<ChannelSecurity> security = SecurityFromArgs(*args);
  if (!security.ok()) return usage_failure(std::string(security.status().message()), usage);

  Context ctx(args->Get("target", "localhost:8500"), absl::Seconds(*timeout_s), *std::move(security), json, out, err);
  absl::StatusOr<int> rc = verb->run(*args, ctx);
  if (rc.ok()) return *rc;
  if (IsUsageError(rc.status())) return usage_failure(std::string(rc.status().message()), usage);
  if (json) {
    out << ErrorJson(rc.status()) << "\n";
  } else {
    err << "clipctl: " << ErrorText(rc.status()) << "\n";
    if (rc.status().code() == absl::StatusCode::kUnauthenticated && IsServerStatus(rc.status())) {
      err << "clipctl: the server wants a valid bearer token: set CLIPSERVE_TOKEN or pass --token\n";
    }
  }
  return 1;
}

}  // namespace clipserve::client
