#include "client/output.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/clip_client.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace clipserve::client {
namespace {

// Display width of UTF-8 text: code points (no East Asian width tables; good enough for labels and paths).
size_t Utf8Width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string Fixed(double v, int decimals) { return absl::StrFormat("%.*f", decimals, v); }

}  // namespace

std::string MessageToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    return ErrorJson(absl::InternalError(absl::StrCat("cannot print the response as JSON: ", status.ToString())));
  }
  return out;
}

std::string ErrorJson(const absl::Status& status) {
  nlohmann::json doc;
  doc["error"]["code"] = absl::StatusCodeToString(status.code());
  doc["error"]["message"] = std::string(status.message());
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string ErrorText(const absl::Status& status) {
  if (status.message().empty()) return absl::StatusCodeToString(status.code());
  // Absent the server marker (client-side failures), the message alone says it.
  if (!IsServerStatus(status)) return std::string(status.message());
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(columns_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render(int indent) const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    width[c] = Utf8Width(columns_[c].header);
    for (const auto& row : rows_) width[c] = std::max(width[c], Utf8Width(row[c]));
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l(indent, ' ');
    for (size_t c = 0; c < cells.size(); ++c) {
      const size_t pad = width[c] - Utf8Width(cells[c]);
      const bool last = c + 1 == cells.size();
      if (columns_[c].align == Align::kRight) {
        absl::StrAppend(&l, std::string(pad, ' '), cells[c]);
      } else {
        absl::StrAppend(&l, cells[c], last ? "" : std::string(pad, ' '));
      }
      if (!last) absl::StrAppend(&l, "  ");
    }
    absl::StrAppend(&out, l, "\n");
  };
  std::vector<std::string> headers;
  for (const Column& c : columns_) headers.push_back(c.header);
  line(headers);
  for (const auto& row : rows_) line(row);
  return out;
}

std::string Ellipsize(const std::string& text, size_t width) {
  if (Utf8Width(text) <= width || width < 4) return text;
  size_t kept = 0, i = 0;
  for (; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      if (kept == width - 3) break;
      ++kept;
    }
  }
  return absl::StrCat(text.substr(0, i), "...");
}

std::string FormatEmbeddings(const std::string& model, const std::vector<std::string>& inputs,
                             const google::protobuf::RepeatedPtrField<v1::Embedding>& embeddings, int values_shown) {
  const int dim = embeddings.empty() ? 0 : embeddings[0].values_size();
  std::string out = absl::StrCat("model ", model, ": ", embeddings.size(), " vector", embeddings.size() == 1 ? "" : "s",
                                 " of dimension ", dim, "\n");
  Table table({{"#", Table::Align::kRight}, {"input"}, {"norm", Table::Align::kRight}, {"values"}});
  for (int i = 0; i < embeddings.size(); ++i) {
    const v1::Embedding& e = embeddings[i];
    std::vector<std::string> values;
    for (int j = 0; j < std::min(values_shown, e.values_size()); ++j)
      values.push_back(absl::StrFormat("%+.4f", e.values(j)));
    if (e.values_size() > values_shown) values.push_back("...");
    std::string input = i < static_cast<int>(inputs.size()) ? Ellipsize(inputs[i], 40) : "";
    if (e.truncated()) absl::StrAppend(&input, " (truncated)");
    table.AddRow({absl::StrCat(i), input, e.norm() > 0 ? Fixed(e.norm(), 4) : "-", absl::StrJoin(values, " ")});
  }
  return absl::StrCat(out, table.Render(2));
}

std::string FormatClassify(const v1::ClassifyResponse& response, const std::vector<std::string>& images) {
  std::string out = absl::StrCat("model ", response.model(), "\n");
  for (int i = 0; i < response.results_size(); ++i) {
    absl::StrAppend(&out, i < static_cast<int>(images.size()) ? images[i] : absl::StrCat("image ", i), "\n");
    Table table({{"probability", Table::Align::kRight}, {"cosine", Table::Align::kRight}, {"label"}});
    for (const v1::LabelScore& l : response.results(i).labels()) {
      table.AddRow({absl::StrFormat("%.2f%%", 100.0 * l.probability()), Fixed(l.score(), 4), l.label()});
    }
    absl::StrAppend(&out, table.Render(2));
  }
  return out;
}

std::string FormatRank(const v1::RankResponse& response, const std::string& query,
                       const std::vector<std::string>& candidates) {
  std::string out = absl::StrCat("model ", response.model(), ", query: ", query, "\n");
  Table table({{"rank", Table::Align::kRight},
               {"index", Table::Align::kRight},
               {"cosine", Table::Align::kRight},
               {"candidate"}});
  for (int i = 0; i < response.results_size(); ++i) {
    const v1::RankedCandidate& c = response.results(i);
    const std::string name = c.index() < candidates.size() ? Ellipsize(candidates[c.index()], 60) : "?";
    table.AddRow({absl::StrCat(i + 1), absl::StrCat(c.index()), Fixed(c.score(), 4), name});
  }
  return absl::StrCat(out, table.Render(2));
}

std::string FormatSimilarity(const v1::SimilarityResponse& response, const std::vector<std::string>& rows,
                             const std::vector<std::string>& columns) {
  std::string out = absl::StrFormat("model %s: cosine similarity, %d rows x %d columns (logit scale %.2f)\n",
                                    response.model(), response.rows(), response.columns(), response.logit_scale());
  std::vector<Table::Column> cols = {{""}};
  for (uint32_t c = 0; c < response.columns(); ++c) cols.push_back({absl::StrCat("[", c, "]"), Table::Align::kRight});
  Table table(cols);
  for (uint32_t r = 0; r < response.rows(); ++r) {
    std::vector<std::string> cells = {r < rows.size() ? Ellipsize(rows[r], 32) : absl::StrCat("row ", r)};
    for (uint32_t c = 0; c < response.columns(); ++c) {
      const size_t k = static_cast<size_t>(r) * response.columns() + c;
      cells.push_back(k < static_cast<size_t>(response.cosine_size()) ? Fixed(response.cosine(k), 4) : "?");
    }
    table.AddRow(std::move(cells));
  }
  absl::StrAppend(&out, table.Render(2), "columns:\n");
  for (uint32_t c = 0; c < response.columns(); ++c) {
    absl::StrAppend(&out, "  [", c, "] ", c < columns.size() ? columns[c] : "?", "\n");
  }
  return out;
}

std::string FormatTokenize(const v1::TokenizeResponse& response, const std::vector<std::string>& texts) {
  std::string out = absl::StrCat("model ", response.model(), ", context length ", response.context_length(), "\n");
  Table table({{"#", Table::Align::kRight}, {"tokens", Table::Align::kRight}, {"fits"}, {"text"}, {"ids"}});
  for (int i = 0; i < response.results_size(); ++i) {
    const v1::TokenizedText& t = response.results(i);
    std::vector<int32_t> ids(t.ids().begin(), t.ids().begin() + std::min(t.ids_size(), 12));
    std::string ids_text = absl::StrJoin(ids, " ");
    if (t.ids_size() > 12) absl::StrAppend(&ids_text, " ... ", t.ids(t.ids_size() - 1));
    table.AddRow({absl::StrCat(i), absl::StrCat(t.ids_size()), t.exceeds_context() ? "NO (too long)" : "yes",
                  i < static_cast<int>(texts.size()) ? Ellipsize(texts[i], 40) : "", ids_text});
  }
  return absl::StrCat(out, table.Render(2));
}

std::string FormatModels(const v1::ListModelsResponse& response) {
  Table table({{"name"},
               {"kind"},
               {"dim", Table::Align::kRight},
               {"image", Table::Align::kRight},
               {"context", Table::Align::kRight},
               {"device"},
               {"dtype"},
               {"default"},
               {"source"}});
  for (const v1::ModelInfo& m : response.models()) {
    table.AddRow({m.name(), m.kind(), absl::StrCat(m.embedding_dim()), absl::StrCat(m.image_size()),
                  absl::StrCat(m.context_length()), m.device(), m.dtype(), m.is_default() ? "yes" : "", m.source()});
  }
  return table.Render(0);
}

}  // namespace clipserve::client
