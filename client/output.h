// What clipctl prints: protobuf responses as JSON (protobuf's JSON mapping with proto field names and zero values
// present), error documents and lines, and the human-readable tables of each verb.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "clipserve/v1/clipserve.pb.h"
#include "google/protobuf/message.h"

namespace clipserve::client {

// One line of JSON: the message in protobuf's JSON mapping (field names as in the .proto, zero values printed,
// enums by name).
std::string MessageToJson(const google::protobuf::Message& message);

// {"error":{"code":"NOT_FOUND","message":"..."}} (one line).
std::string ErrorJson(const absl::Status& status);

// The one-line message for stderr, without the "clipctl: " prefix: "CODE: message" for a server's status,
// the message alone for local errors and connection failures.
std::string ErrorText(const absl::Status& status);

// A text table with aligned columns; numbers are right-aligned.
class Table {
 public:
  enum class Align { kLeft, kRight };
  struct Column {
    std::string header;
    Align align = Align::kLeft;
  };
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  void AddRow(std::vector<std::string> cells);
  // Rows with two spaces between columns, each line prefixed with `indent` spaces.
  std::string Render(int indent = 0) const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// The tables of each verb; `inputs` name the request's items (texts or file names) in order.
std::string FormatEmbeddings(const std::string& model, const std::vector<std::string>& inputs,
                             const google::protobuf::RepeatedPtrField<v1::Embedding>& embeddings, int values_shown);
std::string FormatClassify(const v1::ClassifyResponse& response, const std::vector<std::string>& images);
std::string FormatRank(const v1::RankResponse& response, const std::string& query,
                       const std::vector<std::string>& candidates);
std::string FormatSimilarity(const v1::SimilarityResponse& response, const std::vector<std::string>& rows,
                             const std::vector<std::string>& columns);
std::string FormatTokenize(const v1::TokenizeResponse& response, const std::vector<std::string>& texts);
std::string FormatModels(const v1::ListModelsResponse& response);

// Shortens `text` to at most `width` characters (UTF-8 aware), ending with "..." when cut.
std::string Ellipsize(const std::string& text, size_t width);

}  // namespace clipserve::client
