#include "server/service/clip_service.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "server/service/status.h"

#include <spdlog/spdlog.h>

namespace clipserve::service {
namespace {

using runtime::Embeddings;

absl::Status CheckCount(const char* what, int count, int min, uint32_t max) {
  if (count < min) {
    return absl::InvalidArgumentError(
        min == 1 ? absl::StrCat("no ", what, " given; send at least one")
                 : absl::StrCat(count, " ", what, " given; send at least ", min));
  }
  if (static_cast<uint32_t>(count) > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(count, " ", what, " in one call; the limit is ", max, " (limits.max_items_per_request)"));
  }
  return absl::OkStatus();
}

// The L2 norm of v[0..dim).
float Norm(const float* v, int dim) {
  double s = 0;
  for (int i = 0; i < dim; ++i) s += static_cast<double>(v[i]) * v[i];
  return static_cast<float>(std::sqrt(s));
}

// Unit vectors of every row (a zero vector stays zero).
std::vector<float> Normalized(const Embeddings& e) {
  std::vector<float> out(e.values.size());
  for (size_t r = 0; r < e.size(); ++r) {
    const float n = Norm(e.row(r), e.dim);
    const float inv = n > 0 ? 1.0f / n : 0.0f;
    for (int i = 0; i < e.dim; ++i) out[r * e.dim + i] = e.row(r)[i] * inv;
  }
  return out;
}

float Dot(const float* a, const float* b, int dim) {
  double s = 0;
  for (int i = 0; i < dim; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

void FillEmbeddings(const Embeddings& e, bool unnormalized, bool include_norm, bool texts,
                    google::protobuf::RepeatedPtrField<v1::Embedding>* out) {
  out->Reserve(static_cast<int>(e.size()));
  for (size_t r = 0; r < e.size(); ++r) {
    v1::Embedding* emb = out->Add();
    const float norm = Norm(e.row(r), e.dim);
    const float scale = unnormalized || norm == 0 ? 1.0f : 1.0f / norm;
    emb->mutable_values()->Reserve(e.dim);
    for (int i = 0; i < e.dim; ++i) emb->add_values(e.row(r)[i] * scale);
    if (include_norm) emb->set_norm(norm);
    if (texts) emb->set_truncated(e.truncated[r]);
  }
}

// Views into a request's images (which outlive the call); INVALID_ARGUMENT names the bad one.
absl::StatusOr<std::vector<runtime::ImageInput>> ImageInputs(const std::vector<const v1::Image*>& images,
                                                             const char* field, const v1::config::Limits& limits) {
  std::vector<runtime::ImageInput> out;
  out.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    const v1::Image& img = *images[i];
    runtime::ImageInput in;
    switch (img.source_case()) {
      case v1::Image::kEncoded:
        if (img.encoded().empty()) return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] is empty"));
        if (img.encoded().size() > limits.max_image_bytes()) {
          return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] is ", img.encoded().size(),
                                                         " bytes; the limit is ", limits.max_image_bytes()));
        }
        in.encoded = img.encoded();
        break;
      case v1::Image::kRaw: {
        const auto& raw = img.raw();
        const uint64_t expected = uint64_t{raw.width()} * raw.height() * 3;
        if (raw.width() == 0 || raw.height() == 0 || expected != raw.rgb().size()) {
          return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "].raw: ", raw.width(), "x", raw.height(),
                                                         " RGB needs ", expected, " bytes, got ", raw.rgb().size()));
        }
        in.rgb = raw.rgb();
        in.width = static_cast<int>(raw.width());
        in.height = static_cast<int>(raw.height());
        break;
      }
      default:
        return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] has neither `encoded` nor `raw` set"));
    }
    out.push_back(in);
  }
  return out;
}

// Waits for several embedding calls and then runs `then` once with all results (in start order).
class Join {
 public:
  using Then = absl::AnyInvocable<void(std::vector<absl::StatusOr<Embeddings>>)>;
  Join(int parts, Then then) : results_(parts, absl::UnknownError("not answered")), remaining_(parts),
                               then_(std::move(then)) {}
  runtime::EmbedDone Part(int i) {
    return [this, i](absl::StatusOr<Embeddings> r) {
      bool last;
      {
        absl::MutexLock lock(&mu_);
        results_[i] = std::move(r);
        last = --remaining_ == 0;
      }
      if (last) {
        then_(std::move(results_));
        delete this;
      }
    };
  }

 private:
  absl::Mutex mu_;
  std::vector<absl::StatusOr<Embeddings>> results_;
  int remaining_;
  Then then_;
};

std::vector<const v1::Image*> Pointers(const google::protobuf::RepeatedPtrField<v1::Image>& images) {
  std::vector<const v1::Image*> out;
  out.reserve(images.size());
  for (const v1::Image& image : images) out.push_back(&image);
  return out;
}

absl::Status FirstError(const std::vector<absl::StatusOr<Embeddings>>& results) {
  for (const auto& r : results) {
    if (!r.ok()) return r.status();
  }
  return absl::OkStatus();
}

}  // namespace

// One admitted call: finishes the gRPC call once, records its metrics, and cancels its rows if the client
// goes away.
class ClipService::Call : public grpc::ServerUnaryReactor {
 public:
  Call(ClipService* service, grpc::CallbackServerContext* context, const char* method, bool admitted)
      : service_(service), context_(context), method_(method), admitted_(admitted), start_(absl::Now()),
        id_(next_id_.fetch_add(1, std::memory_order_relaxed)), cancellation_(std::make_shared<CancellationFlag>()) {}

  void OnCancel() override { cancellation_->Cancel(); }
  void OnDone() override {
    if (admitted_) service_->CallFinished();
    delete this;
  }

  void set_model(std::string model) { model_ = std::move(model); }
  // One log line per outcome: warn for server-side failures (INTERNAL and the like), debug for the rest (client
  // errors and refusals would flood the log under load).
  void Answer(const absl::Status& status) {
    const absl::Duration elapsed = absl::Now() - start_;
    service_->metrics_->RecordCall(model_.empty() ? "-" : model_, method_, status.code(), elapsed);
    const bool server_fault = status.code() == absl::StatusCode::kInternal ||
                              status.code() == absl::StatusCode::kUnknown ||
                              status.code() == absl::StatusCode::kDataLoss;
    if (server_fault) {
      spdlog::warn("request {} {} model={} peer={} failed after {:.1f} ms: {}: {}", id_, method_, model_,
                   context_->peer(), absl::ToDoubleMilliseconds(elapsed), StatusCodeName(status.code()),
                   std::string(status.message()));
    } else if (spdlog::should_log(spdlog::level::debug)) {
      spdlog::debug("request {} {} model={} peer={} {} in {:.2f} ms{}{}", id_, method_, model_, context_->peer(),
                    StatusCodeName(status.code()), absl::ToDoubleMilliseconds(elapsed), status.ok() ? "" : ": ",
                    std::string(status.message()));
    }
    Finish(ToGrpcStatus(status));
  }
  runtime::CallOptions Options(const v1::RequestOptions& options) const {
    runtime::CallOptions c;
    c.deadline = absl::FromChrono(context_->deadline());
    c.priority = static_cast<int>(options.priority());
    c.truncation = options.truncation() == v1::TRUNCATION_REJECT ? runtime::Truncation::kReject
                                                                   : runtime::Truncation::kTruncate;
    c.cancellation = cancellation_;
    return c;
  }

 private:
  ClipService* const service_;
  grpc::CallbackServerContext* const context_;
  const char* const method_;
  const bool admitted_;
  const absl::Time start_;
  const uint64_t id_;  // in log lines, to tie a failure to its call
  static std::atomic<uint64_t> next_id_;
  std::string model_;
  std::shared_ptr<CancellationFlag> cancellation_;
};

std::atomic<uint64_t> ClipService::Call::next_id_{1};

ClipService::ClipService(const v1::config::Limits& limits, ServiceMetrics* metrics, const BearerAuth* auth)
    : limits_(limits), metrics_(metrics), auth_(auth) {}

void ClipService::SetModels(ModelSet models) {
  absl::MutexLock lock(&mu_);
  models_ = std::move(models);
  ready_ = true;
}

void ClipService::StopAdmitting() {
  absl::MutexLock lock(&mu_);
  admitting_ = false;
}

bool ClipService::WaitForInFlight(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(absl::Condition(
                                   +[](int* n) { return *n == 0; }, &in_flight_),
                               deadline);
}

int ClipService::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

void ClipService::CallFinished() {
  absl::MutexLock lock(&mu_);
  --in_flight_;
}

ClipService::Call* ClipService::Admit(grpc::CallbackServerContext* context, const char* method,
                                      const std::string& model_name, runtime::ClipRuntime** model) {
  *model = nullptr;
  // The token first: a caller without a valid one learns nothing else, not even whether models are loaded.
  absl::Status refusal = auth_ != nullptr ? auth_->CheckCall(*context, method) : absl::OkStatus();
  if (refusal.ok()) {
    absl::MutexLock lock(&mu_);
    if (!admitting_) {
      refusal = absl::UnavailableError("the server is shutting down; retry on another instance");
    } else if (!ready_) {
      refusal = absl::UnavailableError("the server is starting: models are still loading");
    } else {
      const std::string& name = model_name.empty() ? models_.default_model : model_name;
      auto it = models_.models.find(name);
      if (it == models_.models.end()) {
        std::vector<std::string> names;
        for (const auto& [n, unused] : models_.models) names.push_back(n);
        refusal = absl::NotFoundError(
            absl::StrCat("unknown model '", model_name, "' (served: ", absl::StrJoin(names, ", "), ")"));
      } else {
        *model = it->second;
        ++in_flight_;
      }
    }
  }
  auto* call = new Call(this, context, method, /*admitted=*/*model != nullptr);
  if (*model != nullptr) {
    call->set_model((*model)->description().name);
  } else {
    call->Answer(refusal);
  }
  return call;
}

grpc::ServerUnaryReactor* ClipService::EmbedText(grpc::CallbackServerContext* context,
                                                 const v1::EmbedTextRequest* request,
                                                 v1::EmbedTextResponse* response) {
  runtime::ClipRuntime* model;
  Call* call = Admit(context, "EmbedText", request->model(), &model);
  if (model == nullptr) return call;
  if (absl::Status s = CheckCount("texts", request->texts_size(), 1, limits_.max_items_per_request()); !s.ok()) {
    call->Answer(s);
    return call;
  }
  response->set_model(model->description().name);
  model->EmbedTexts({request->texts().begin(), request->texts().end()}, call->Options(request->options()),
                    [call, request, response](absl::StatusOr<Embeddings> r) {
                      if (!r.ok()) return call->Answer(r.status());
                      FillEmbeddings(*r, request->unnormalized(), request->include_norm(), /*texts=*/true,
                                     response->mutable_embeddings());
                      call->Answer(absl::OkStatus());
                    });
  return call;
}

grpc::ServerUnaryReactor* ClipService::EmbedImage(grpc::CallbackServerContext* context,
                                                  const v1::EmbedImageRequest* request,
                                                  v1::EmbedImageResponse* response) {
  runtime::ClipRuntime* model;
  Call* call = Admit(context, "EmbedImage", request->model(), &model);
  if (model == nullptr) return call;
  absl::Status s = CheckCount("images", request->images_size(), 1, limits_.max_items_per_request());
  auto inputs = s.ok() ? ImageInputs(Pointers(request->images()), "images", limits_) : s;
  if (!inputs.ok()) {
    call->Answer(inputs.status());
    return call;
  }
  response->set_model(model->description().name);
  model->EmbedImages(*std::move(inputs), call->Options(request->options()),
                     [call, request, response](absl::StatusOr<Embeddings> r) {
                       if (!r.ok()) return call->Answer(r.status());
                       FillEmbeddings(*r, request->unnormalized(), request->include_norm(), /*texts=*/false,
                                      response->mutable_embeddings());
                       call->Answer(absl::OkStatus());
                     });
  return call;
}

grpc::ServerUnaryReactor* ClipService::Classify(grpc::CallbackServerContext* context,
                                                const v1::ClassifyRequest* request, v1::ClassifyResponse* response) {
  runtime::ClipRuntime* model;
  Call* call = Admit(context, "Classify", request->model(), &model);
  if (model == nullptr) return call;
  absl::Status s = CheckCount("images", request->images_size(), 1, limits_.max_items_per_request());
  if (s.ok()) s = CheckCount("labels", request->labels_size(), 2, limits_.max_items_per_request());
  const std::string& tmpl = request->template_();
  if (s.ok() && !tmpl.empty()) {
    const size_t first = tmpl.find("{}");
    if (first == std::string::npos || tmpl.find("{}", first + 2) != std::string::npos) {
      s = absl::InvalidArgumentError(absl::StrCat("template '", tmpl,
                                                   "' must contain exactly one \"{}\" (e.g. \"a photo of a {}\")"));
    }
  }
  auto inputs = s.ok() ? ImageInputs(Pointers(request->images()), "images", limits_) : s;
  if (!inputs.ok()) {
    call->Answer(inputs.status());
    return call;
  }
  std::vector<std::string> prompts;
  for (const std::string& label : request->labels()) {
    prompts.push_back(tmpl.empty() ? label : absl::StrReplaceAll(tmpl, {{"{}", label}}));
  }
  response->set_model(model->description().name);
  const float logit_scale = model->description().logit_scale;
  auto* join = new Join(2, [call, request, response, logit_scale](std::vector<absl::StatusOr<Embeddings>> r) {
    if (absl::Status e = FirstError(r); !e.ok()) return call->Answer(e);
    const Embeddings& images = *r[0];
    const Embeddings& texts = *r[1];
    const std::vector<float> img = Normalized(images), txt = Normalized(texts);
    const int dim = images.dim;
    const size_t labels = texts.size();
    const size_t top_k = request->top_k() == 0 ? labels : std::min<size_t>(request->top_k(), labels);
    for (size_t i = 0; i < images.size(); ++i) {
      std::vector<float> cos(labels), logits(labels);
      float max_logit = -INFINITY;
      for (size_t j = 0; j < labels; ++j) {
        cos[j] = Dot(&img[i * dim], &txt[j * dim], dim);
        logits[j] = logit_scale * cos[j];
        max_logit = std::max(max_logit, logits[j]);
      }
      double sum = 0;
      std::vector<double> p(labels);
      for (size_t j = 0; j < labels; ++j) sum += p[j] = std::exp(static_cast<double>(logits[j] - max_logit));
      std::vector<size_t> order(labels);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
      v1::Classification* c = response->add_results();
      for (size_t k = 0; k < top_k; ++k) {
        v1::LabelScore* l = c->add_labels();
        l->set_label(request->labels(static_cast<int>(order[k])));
        l->set_index(static_cast<uint32_t>(order[k]));
        l->set_probability(static_cast<float>(p[order[k]] / sum));
        l->set_score(cos[order[k]]);
      }
    }
    call->Answer(absl::OkStatus());
  });
  const runtime::CallOptions options = call->Options(request->options());
  model->EmbedImages(*std::move(inputs), options, join->Part(0));
  model->EmbedTexts(std::move(prompts), options, join->Part(1));
  return call;
}

grpc::ServerUnaryReactor* ClipService::Rank(grpc::CallbackServerContext* context, const v1::RankRequest* request,
                                            v1::RankResponse* response) {
  runtime::ClipRuntime* model;
  Call* call = Admit(context, "Rank", request->model(), &model);
  if (model == nullptr) return call;
  absl::Status s;
  const int texts = request->candidate_texts_size(), images = request->candidate_images_size();
  if (request->query_case() == v1::RankRequest::QUERY_NOT_SET) {
    s = absl::InvalidArgumentError("no query: set query_text or query_image");
  } else if ((texts > 0) == (images > 0)) {
    s = absl::InvalidArgumentError("set exactly one of candidate_texts and candidate_images");
  } else {
    s = CheckCount("candidates", texts + images, 1, limits_.max_items_per_request());
  }
  absl::StatusOr<std::vector<runtime::ImageInput>> query_image = std::vector<runtime::ImageInput>{};
  absl::StatusOr<std::vector<runtime::ImageInput>> candidate_images = std::vector<runtime::ImageInput>{};
  if (s.ok() && request->query_case() == v1::RankRequest::kQueryImage) {
    query_image = ImageInputs({&request->query_image()}, "query_image", limits_);
    s = query_image.status();
  }
  if (s.ok() && images > 0) {
    candidate_images = ImageInputs(Pointers(request->candidate_images()), "candidate_images", limits_);
    s = candidate_images.status();
  }
  if (!s.ok()) {
    call->Answer(s);
    return call;
  }
  response->set_model(model->description().name);
  auto* join = new Join(2, [call, request, response](std::vector<absl::StatusOr<Embeddings>> r) {
    if (absl::Status e = FirstError(r); !e.ok()) return call->Answer(e);
    const std::vector<float> q = Normalized(*r[0]), c = Normalized(*r[1]);
    const int dim = r[0]->dim;
    const size_t n = r[1]->size();
    std::vector<float> scores(n);
    for (size_t i = 0; i < n; ++i) scores[i] = Dot(q.data(), &c[i * dim], dim);
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
    const size_t top_k = request->top_k() == 0 ? n : std::min<size_t>(request->top_k(), n);
    for (size_t k = 0; k < top_k; ++k) {
      v1::RankedCandidate* rc = response->add_results();
      rc->set_index(static_cast<uint32_t>(order[k]));
      rc->set_score(scores[order[k]]);
    }
    call->Answer(absl::OkStatus());
  });
  const runtime::CallOptions options = call->Options(request->options());
  if (request->query_case() == v1::RankRequest::kQueryText) {
    model->EmbedTexts({request->query_text()}, options, join->Part(0));
  } else {
    model->EmbedImages(*std::move(query_image), options, join->Part(0));
  }
  if (texts > 0) {
    model->EmbedTexts({request->candidate_texts().begin(), request->candidate_texts().end()}, options, join->Part(1));
  } else {
    model->EmbedImages(*std::move(candidate_images), options, join->Part(1));
  }
  return call;
}

grpc::ServerUnaryReactor* ClipService::Similarity(grpc::CallbackServerContext* context,
                                                  const v1::SimilarityRequest* request,
                                                  v1::SimilarityResponse* response) {
  runtime::ClipRuntime* model;
  Call* call = Admit(context, "Similarity", request->model(), &model);
  if (model == nullptr) return call;
  absl::Status s = CheckCount("rows", request->rows_size(), 1, limits_.max_items_per_request());
  if (s.ok()) s = CheckCount("columns", request->columns_size(), 1, limits_.max_items_per_request());
  // Every input goes to the text or the image call; `where` remembers (is_image, index in that call).
  std::vector<std::string> texts;
  std::vector<const v1::Image*> images;
  auto where = std::make_shared<std::vector<std::pair<bool, size_t>>>();
  for (int side = 0; s.ok() && side < 2; ++side) {
    const auto& inputs = side == 0 ? request->rows() : request->columns();
    for (int i = 0; i < inputs.size(); ++i) {
      const v1::Input& in = inputs[i];
      if (in.kind_case() == v1::Input::kText) {
        where->push_back({false, texts.size()});
        texts.push_back(in.text());
      } else if (in.kind_case() == v1::Input::kImage) {
        where->push_back({true, images.size()});
        images.push_back(&in.image());
      } else {
        s = absl::InvalidArgumentError(absl::StrCat(side == 0 ? "rows[" : "columns[", i, "] is neither text nor image"));
        break;
      }
    }
  }
  auto image_inputs = s.ok() ? ImageInputs(images, "images", limits_) : s;
  if (!image_inputs.ok()) {
    call->Answer(image_inputs.status());
    return call;
  }
  response->set_model(model->description().name);
  response->set_logit_scale(model->description().logit_scale);
  const int rows = request->rows_size(), cols = request->columns_size();
  auto* join = new Join(2, [call, response, where, rows, cols](std::vector<absl::StatusOr<Embeddings>> r) {
    if (absl::Status e = FirstError(r); !e.ok()) return call->Answer(e);
    const std::vector<float> t = Normalized(*r[0]), im = Normalized(*r[1]);
    const int dim = std::max(r[0]->dim, r[1]->dim);
    auto vec = [&](size_t k) { return (*where)[k].first ? &im[(*where)[k].second * dim] : &t[(*where)[k].second * dim]; };
    response->set_rows(rows);
    response->set_columns(cols);
    for (int i = 0; i < rows; ++i) {
      for (int j = 0; j < cols; ++j) response->add_cosine(Dot(vec(i), vec(rows + j), dim));
    }
    call->Answer(absl::OkStatus());
  });
  const runtime::CallOptions options = call->Options(request->options());
  model->EmbedTexts(std::move(texts), options, join->Part(0));
  model->EmbedImages(*std::move(image_inputs), options, join->Part(1));
  return call;
}

grpc::ServerUnaryReactor* ClipService::Tokenize(grpc::CallbackServerContext* context,
                                                const v1::TokenizeRequest* request, v1::TokenizeResponse* response) {
  runtime::ClipRuntime* model;
  Call* call = Admit(context, "Tokenize", request->model(), &model);
  if (model == nullptr) return call;
  if (absl::Status s = CheckCount("texts", request->texts_size(), 1, limits_.max_items_per_request()); !s.ok()) {
    call->Answer(s);
    return call;
  }
  auto tokens = model->Tokenize(std::vector<std::string>(request->texts().begin(), request->texts().end()));
  if (!tokens.ok()) {
    call->Answer(tokens.status());
    return call;
  }
  response->set_model(model->description().name);
  response->set_context_length(model->description().context_length);
  for (const auto& t : *tokens) {
    v1::TokenizedText* out = response->add_results();
    out->mutable_ids()->Add(t.ids.begin(), t.ids.end());
    out->set_exceeds_context(t.exceeds_context);
  }
  call->Answer(absl::OkStatus());
  return call;
}

namespace {

void Describe(const runtime::ModelDescription& d, bool is_default, v1::ModelInfo* out) {
  out->set_name(d.name);
  out->set_kind(d.kind);
  out->set_embedding_dim(d.embedding_dim);
  out->set_image_size(d.image_size);
  out->set_context_length(d.context_length);
  out->set_device(d.device);
  out->set_dtype(d.dtype);
  out->set_is_default(is_default);
  out->set_source(d.source);
}

}  // namespace

grpc::ServerUnaryReactor* ClipService::ListModels(grpc::CallbackServerContext* context,
                                                  const v1::ListModelsRequest* /*request*/,
                                                  v1::ListModelsResponse* response) {
  runtime::ClipRuntime* model;
  Call* call = Admit(context, "ListModels", "", &model);
  if (model == nullptr) return call;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, runtime] : models_.models) {
      Describe(runtime->description(), name == models_.default_model, response->add_models());
    }
  }
  call->Answer(absl::OkStatus());
  return call;
}

grpc::ServerUnaryReactor* ClipService::GetModel(grpc::CallbackServerContext* context,
                                                const v1::GetModelRequest* request, v1::ModelInfo* response) {
  runtime::ClipRuntime* model;
  Call* call = Admit(context, "GetModel", request->name(), &model);
  if (model == nullptr) return call;
  bool is_default;
  {
    absl::MutexLock lock(&mu_);
    is_default = model->description().name == models_.default_model;
  }
  Describe(model->description(), is_default, response);
  call->Answer(absl::OkStatus());
  return call;
}

}  // namespace clipserve::service
