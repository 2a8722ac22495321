#include "client/output.h"

#include <string>

#include "client/clip_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace clipserve::client {
namespace {

using ::testing::HasSubstr;

TEST(MessageToJson, ClassifyResponseUsesProtoNamesAndPrintsZeros) {
  v1::ClassifyResponse r;
  r.set_model("m");
  v1::LabelScore* l = r.add_results()->add_labels();
  l->set_label("cat");
  l->set_index(0);
  l->set_probability(0.75f);
  l->set_score(0.25f);
  v1::LabelScore* d = r.mutable_results(0)->add_labels();
  d->set_label("dog");
  d->set_index(1);
  d->set_probability(0.25f);
  d->set_score(0.125f);
  EXPECT_EQ(MessageToJson(r),
            R"({"model":"m","results":[{"labels":[{"label":"cat","index":0,"probability":0.75,"score":0.25},)"
            R"({"label":"dog","index":1,"probability":0.25,"score":0.125}]}]})");
}

TEST(MessageToJson, RankAndTokenizeShapes) {
  v1::RankResponse rank;
  rank.set_model("m");
  auto* c = rank.add_results();
  c->set_index(2);
  c->set_score(0.5f);
  c = rank.add_results();
  c->set_index(0);
  c->set_score(0.0f);
  EXPECT_EQ(MessageToJson(rank), R"({"model":"m","results":[{"index":2,"score":0.5},{"index":0,"score":0}]})");

  v1::TokenizeResponse tok;
  tok.set_model("m");
  tok.set_context_length(77);
  auto* t = tok.add_results();
  t->add_ids(49406);
  t->add_ids(320);
  t->add_ids(49407);
  tok.add_results();  // an empty text still has its entry, with ids [] and exceeds_context false
  const nlohmann::json j = nlohmann::json::parse(MessageToJson(tok));
  EXPECT_EQ(j["context_length"], 77);
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["ids"], nlohmann::json({49406, 320, 49407}));
  EXPECT_EQ(j["results"][0]["exceeds_context"], false);
  EXPECT_EQ(j["results"][1]["ids"], nlohmann::json::array());
}

TEST(ErrorOutput, JsonDocumentAndLines) {
  EXPECT_EQ(ErrorJson(absl::NotFoundError("unknown model 'x' (served: a, b)")),
            R"json({"error":{"code":"NOT_FOUND","message":"unknown model 'x' (served: a, b)"}})json");
  const absl::Status server =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown model 'x' (served: a, b)"), "localhost:8500");
  EXPECT_EQ(ErrorText(server), "NOT_FOUND: unknown model 'x' (served: a, b)");
  const absl::Status refused = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::UNAVAILABLE,
                   "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:8500: Failed to connect "
                   "to remote host: Connection refused"),
      "localhost:8500");
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrorText(refused), "cannot reach localhost:8500: connection refused (is the server running?)");
  // A draining server's UNAVAILABLE is the server's own message.
  EXPECT_EQ(ErrorText(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down"), "h:1")),
            "UNAVAILABLE: shutting down");
  EXPECT_EQ(ErrorText(absl::NotFoundError("image 'x.jpg': no such file or directory")),
            "image 'x.jpg': no such file or directory");
}

TEST(Table, AlignsColumnsByDisplayWidth) {
  Table t({{"#", Table::Align::kRight}, {"label"}, {"p", Table::Align::kRight}});
  t.AddRow({"1", "chat noir", "0.5"});
  t.AddRow({"10", "café", "12.25"});
  EXPECT_EQ(t.Render(2),
            "   #  label          p\n"
            "   1  chat noir    0.5\n"
            "  10  café       12.25\n");
}

TEST(Ellipsize, CutsOnCharacterBoundaries) {
  EXPECT_EQ(Ellipsize("short", 10), "short");
  EXPECT_EQ(Ellipsize("ééééééééé", 6), "ééé...");
}

TEST(Tables, ClassifyShowsEachImageAndItsLabels) {
  v1::ClassifyResponse r;
  r.set_model("m");
  auto* l = r.add_results()->add_labels();
  l->set_label("cat");
  l->set_probability(0.9312f);
  l->set_score(0.2812f);
  const std::string text = FormatClassify(r, {"cat.jpg"});
  EXPECT_THAT(text, HasSubstr("cat.jpg\n"));
  EXPECT_THAT(text, HasSubstr("93.12%  0.2812  cat"));
}

TEST(Tables, SimilarityIsRowMajor) {
  v1::SimilarityResponse r;
  r.set_model("m");
  r.set_rows(2);
  r.set_columns(2);
  for (float v : {1.0f, 0.25f, 0.5f, 1.0f}) r.add_cosine(v);
  const std::string text = FormatSimilarity(r, {"a", "b"}, {"x", "y"});
  EXPECT_THAT(text, HasSubstr("a  1.0000  0.2500"));
  EXPECT_THAT(text, HasSubstr("b  0.5000  1.0000"));
  EXPECT_THAT(text, HasSubstr("[1] y"));
}

}  // namespace
}  // namespace clipserve::client
