// Test doubles for the client tests: in-process fakes of clipserve.v1.Clip (canned answers) and
// clipserve.v1.Generation (scripted streams), and a tiny HTTP server that answers every request with a canned
// /metrics page. Header-only; each test binary that
// includes it links clipserve_client (gRPC, protos).
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clipserve/v1/clipserve.grpc.pb.h"

namespace clipserve::client::testing {

// Canned answers for every Clip method. Requests naming a model other than "fake" get NOT_FOUND
// "unknown model 'x' (served: fake)". EmbedText fails every `embed_text_fail_every`-th call with
// RESOURCE_EXHAUSTED when it is > 0; a first text "sleep:MS" delays its answer. Thread-safe (gRPC calls it from its own
// threads).
class FakeClipService final : public v1::Clip::Service {
 public:
  static constexpr int kDim = 4;
  std::atomic<int> embed_text_fail_every{0};
  std::atomic<int64_t> embed_text_calls{0};

  grpc::Status EmbedText(grpc::ServerContext*, const v1::EmbedTextRequest* req, v1::EmbedTextResponse* resp) override {
    if (auto s = CheckModel(req->model()); !s.ok()) return s;
    // "sleep:MS" as the first text delays the answer, for deadline tests.
    if (req->texts_size() > 0 && req->texts(0).rfind("sleep:", 0) == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(req->texts(0).substr(6))));
    }
    const int64_t n = ++embed_text_calls;
    const int every = embed_text_fail_every.load();
    if (every > 0 && n % every == 0) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue of model 'fake' lane clip.text is full");
    }
    resp->set_model("fake");
    for (const std::string& t : req->texts())
      Fill(static_cast<float>(t.size()), req->include_norm(), resp->add_embeddings());
    return grpc::Status::OK;
  }

  grpc::Status EmbedImage(grpc::ServerContext*, const v1::EmbedImageRequest* req,
                          v1::EmbedImageResponse* resp) override {
    if (auto s = CheckModel(req->model()); !s.ok()) return s;
    resp->set_model("fake");
    for (const v1::Image& i : req->images()) {
      Fill(static_cast<float>(i.encoded().size()), req->include_norm(), resp->add_embeddings());
    }
    return grpc::Status::OK;
  }

  // Label i of n gets probability (n - i) / (n (n + 1) / 2): the first label is the most probable.
  grpc::Status Classify(grpc::ServerContext*, const v1::ClassifyRequest* req, v1::ClassifyResponse* resp) override {
    if (auto s = CheckModel(req->model()); !s.ok()) return s;
    if (req->labels_size() < 2) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "need two labels");
    resp->set_model("fake");
    const int n = req->labels_size();
    const int k = req->top_k() == 0 ? n : std::min<int>(n, static_cast<int>(req->top_k()));
    for (int img = 0; img < req->images_size(); ++img) {
      v1::Classification* c = resp->add_results();
      for (int i = 0; i < k; ++i) {
        v1::LabelScore* l = c->add_labels();
        l->set_label(req->labels(i));
        l->set_index(static_cast<uint32_t>(i));
        l->set_probability(static_cast<float>(n - i) / static_cast<float>(n * (n + 1) / 2));
        l->set_score(0.5f - 0.125f * static_cast<float>(i));
      }
    }
    return grpc::Status::OK;
  }

  // The last candidate scores highest: results are the candidates in reverse order.
  grpc::Status Rank(grpc::ServerContext*, const v1::RankRequest* req, v1::RankResponse* resp) override {
    if (auto s = CheckModel(req->model()); !s.ok()) return s;
    resp->set_model("fake");
    const int n = std::max(req->candidate_texts_size(), req->candidate_images_size());
    const int k = req->top_k() == 0 ? n : std::min<int>(n, static_cast<int>(req->top_k()));
    for (int i = 0; i < k; ++i) {
      v1::RankedCandidate* c = resp->add_results();
      c->set_index(static_cast<uint32_t>(n - 1 - i));
      c->set_score(0.75f - 0.25f * static_cast<float>(i));
    }
    return grpc::Status::OK;
  }

  // cosine = 1 on the diagonal, 0.5 elsewhere.
  grpc::Status Similarity(grpc::ServerContext*, const v1::SimilarityRequest* req,
                          v1::SimilarityResponse* resp) override {
    if (auto s = CheckModel(req->model()); !s.ok()) return s;
    resp->set_model("fake");
    resp->set_rows(static_cast<uint32_t>(req->rows_size()));
    resp->set_columns(static_cast<uint32_t>(req->columns_size()));
    resp->set_logit_scale(100.0f);
    for (int r = 0; r < req->rows_size(); ++r) {
      for (int c = 0; c < req->columns_size(); ++c) resp->add_cosine(r == c ? 1.0f : 0.5f);
    }
    return grpc::Status::OK;
  }

  // ids = [49406, one id per byte of the text (its value), 49407]; context 8.
  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req, v1::TokenizeResponse* resp) override {
    if (auto s = CheckModel(req->model()); !s.ok()) return s;
    resp->set_model("fake");
    resp->set_context_length(8);
    for (const std::string& t : req->texts()) {
      v1::TokenizedText* r = resp->add_results();
      r->add_ids(49406);
      for (unsigned char ch : t) r->add_ids(ch);
      r->add_ids(49407);
      r->set_exceeds_context(r->ids_size() > 8);
    }
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*, v1::ListModelsResponse* resp) override {
    *resp->add_models() = Info();
    return grpc::Status::OK;
  }

  grpc::Status GetModel(grpc::ServerContext*, const v1::GetModelRequest* req, v1::ModelInfo* resp) override {
    if (auto s = CheckModel(req->name()); !s.ok()) return s;
    *resp = Info();
    return grpc::Status::OK;
  }

 private:
  static grpc::Status CheckModel(const std::string& model) {
    if (model.empty() || model == "fake") return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("unknown model '", model, "' (served: fake)"));
  }
  // A unit vector along axis (seed mod kDim); norm = seed.
  static void Fill(float seed, bool include_norm, v1::Embedding* e) {
    for (int i = 0; i < kDim; ++i) e->add_values(i == static_cast<int>(seed) % kDim ? 1.0f : 0.0f);
    if (include_norm) e->set_norm(seed);
  }
  static v1::ModelInfo Info() {
    v1::ModelInfo m;
    m.set_name("fake");
    m.set_kind("clip");
    m.set_embedding_dim(kDim);
    m.set_image_size(32);
    m.set_context_length(8);
    m.set_device("cpu");
    m.set_dtype("float32");
    m.set_is_default(true);
    m.set_source("/models/fake");
    return m;
  }
};

// A gRPC server on 127.0.0.1 with an ephemeral port, serving `services` and the default health service
// (SERVING until set_serving(false)).
class FakeServer {
 public:
  explicit FakeServer(grpc::Service* service) : FakeServer(std::vector<grpc::Service*>{service}) {}
  explicit FakeServer(const std::vector<grpc::Service*>& services) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    for (grpc::Service* service : services) builder.RegisterService(service);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() { server_->Shutdown(std::chrono::system_clock::now()); }

  bool ok() const { return server_ != nullptr && port_ > 0; }
  int port() const { return port_; }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  void set_serving(bool serving) { server_->GetHealthCheckService()->SetServingStatus(serving); }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// An HTTP server on 127.0.0.1 with an ephemeral port; answers the n-th request (0, 1, ...) with
// `respond(n)`, a whole HTTP response. One connection at a time, on its own thread.
class FakeHttpServer {
 public:
  explicit FakeHttpServer(std::function<std::string(int)> respond) : respond_(std::move(respond)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd_, 16) != 0) return;
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeHttpServer() {
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  int requests() const { return requests_.load(); }
  std::string url(const std::string& path) const { return absl::StrCat("http://127.0.0.1:", port_, path); }

  // A 200 text/plain answer with `body`.
  static std::string Ok(const std::string& body) {
    return absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: ", body.size(),
                        "\r\nConnection: close\r\n\r\n", body);
  }

 private:
  void Serve() {
    for (;;) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string request;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      const std::string response = respond_(requests_++);
      for (size_t sent = 0; sent < response.size();) {
        const ssize_t n = ::send(c, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<size_t>(n);
      }
      ::close(c);
    }
  }

  std::function<std::string(int)> respond_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace clipserve::client::testing
