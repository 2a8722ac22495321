#include "tools/bpe/bpe_trainer.h"

#include <algorithm>
#include <fstream>
#include <system_error>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"
#include "server/models/clip/tokenizer.h"

namespace clipserve::bpe {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kEndOfWord = "</w>";
constexpr std::string_view kSotToken = "<|startoftext|>";
constexpr std::string_view kEotToken = "<|endoftext|>";
constexpr int kByteSymbols = 256;
constexpr int kBaseSymbols = 2 * kByteSymbols;
constexpr int kSpecialTokens = 2;

// Debian's abseil is built without std::string_view support: absl::string_view is its own type.
inline absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

inline uint64_t PairKey(int32_t a, int32_t b) {
  return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b);
}

// A distinct word of the corpus as a sequence of symbol (= vocabulary) ids, and how often it occurs.
struct Word {
  std::vector<int32_t> symbols;
  int64_t count = 0;
};

// A candidate merge. Entries go stale as counts change; a popped entry is checked against the current count.
struct HeapEntry {
  int64_t count;
  int32_t left;
  int32_t right;
};

// The merge loop: words as symbol sequences, the frequency of every adjacent pair, and for every pair the words
// that hold it (possibly stale: a word listed may no longer hold the pair; every word that holds it is listed).
class Merger {
 public:
  Merger(const BpeTrainerOptions& options, std::vector<Word> words, BpeVocabulary* vocab)
      : options_(options), words_(std::move(words)), vocab_(vocab) {
    for (size_t id = 0; id < vocab_->tokens.size(); ++id) {
      token_ids_.emplace(vocab_->tokens[id], static_cast<int32_t>(id));
    }
    for (std::string_view special : {kSotToken, kEotToken}) token_ids_.emplace(std::string(special), -1);
    for (size_t w = 0; w < words_.size(); ++w) {
      const Word& word = words_[w];
      for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
        const uint64_t key = PairKey(word.symbols[i], word.symbols[i + 1]);
        pair_counts_[key] += word.count;
        where_[key].push_back(static_cast<int32_t>(w));
      }
    }
    heap_.reserve(pair_counts_.size());
    for (const auto& [key, count] : pair_counts_) {
      heap_.push_back({count, static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xFFFFFFFFu)});
    }
    std::make_heap(heap_.begin(), heap_.end(), LowerPriority{&vocab_->tokens});
  }

  void Run() {
    const size_t max_tokens = static_cast<size_t>(options_.vocab_size) - kSpecialTokens;
    const LowerPriority lower{&vocab_->tokens};
    while (vocab_->tokens.size() < max_tokens && !heap_.empty()) {
      std::pop_heap(heap_.begin(), heap_.end(), lower);
      const HeapEntry top = heap_.back();
      heap_.pop_back();
      const uint64_t key = PairKey(top.left, top.right);
      if (banned_.contains(key)) continue;
      const auto it = pair_counts_.find(key);
      const int64_t count = it == pair_counts_.end() ? 0 : it->second;
      if (count != top.count) {  // stale: every pair has an entry whose count is at least its current one
        if (count > 0) Push({count, top.left, top.right});
        continue;
      }
      if (count < options_.min_frequency) break;  // the most frequent pair
      std::string merged = absl::StrCat(vocab_->tokens[top.left], vocab_->tokens[top.right]);
      if (token_ids_.contains(merged)) {
        banned_.insert(key);
        ++vocab_->skipped_pairs;
        continue;
      }
      const auto id = static_cast<int32_t>(vocab_->tokens.size());
      token_ids_.emplace(merged, id);
      vocab_->tokens.push_back(std::move(merged));
      vocab_->merges.emplace_back(vocab_->tokens[top.left], vocab_->tokens[top.right]);
      vocab_->last_merge_frequency = count;
      Merge(top.left, top.right, id);
    }
  }

 private:
  // Heap order: the higher count first, then the lexicographically smaller (left, right) pair of token strings.
  struct LowerPriority {
    const std::vector<std::string>* tokens;
    bool operator()(const HeapEntry& x, const HeapEntry& y) const {
      if (x.count != y.count) return x.count < y.count;
      const int c = (*tokens)[x.left].compare((*tokens)[y.left]);
      if (c != 0) return c > 0;
      return (*tokens)[x.right].compare((*tokens)[y.right]) > 0;
    }
  };

  void Push(const HeapEntry& entry) {
    heap_.push_back(entry);
    std::push_heap(heap_.begin(), heap_.end(), LowerPriority{&vocab_->tokens});
  }

  void AddPairs(const Word& word, int64_t sign) {
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const uint64_t key = PairKey(word.symbols[i], word.symbols[i + 1]);
      auto it = pair_counts_.try_emplace(key, 0).first;
      it->second += sign * word.count;
      if (it->second == 0) pair_counts_.erase(it);
    }
  }

  // Replaces every (left, right) by `merged`, left to right without overlaps (as the tokenizer does), and
  // updates the pair counts. Only pairs holding `merged` can gain counts; they get fresh heap entries.
  void Merge(int32_t left, int32_t right, int32_t merged) {
    const uint64_t key = PairKey(left, right);
    std::vector<int32_t> word_ids = std::move(where_[key]);
    where_.erase(key);
    std::sort(word_ids.begin(), word_ids.end());
    word_ids.erase(std::unique(word_ids.begin(), word_ids.end()), word_ids.end());
    std::vector<uint64_t> touched;
    std::vector<int32_t> symbols;
    for (const int32_t w : word_ids) {
      Word& word = words_[w];
      symbols.clear();
      bool changed = false;
      for (size_t i = 0; i < word.symbols.size();) {
        if (i + 1 < word.symbols.size() && word.symbols[i] == left && word.symbols[i + 1] == right) {
          symbols.push_back(merged);
          changed = true;
          i += 2;
        } else {
          symbols.push_back(word.symbols[i]);
          ++i;
        }
      }
      if (!changed) continue;
      AddPairs(word, -1);
      word.symbols.swap(symbols);
      AddPairs(word, +1);
      for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
        if (word.symbols[i] != merged && word.symbols[i + 1] != merged) continue;
        const uint64_t pair = PairKey(word.symbols[i], word.symbols[i + 1]);
        where_[pair].push_back(w);
        touched.push_back(pair);
      }
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (const uint64_t pair : touched) {
      if (const auto it = pair_counts_.find(pair); it != pair_counts_.end()) {
        Push({it->second, static_cast<int32_t>(pair >> 32), static_cast<int32_t>(pair & 0xFFFFFFFFu)});
      }
    }
  }

  const BpeTrainerOptions options_;
  std::vector<Word> words_;
  BpeVocabulary* const vocab_;
  absl::flat_hash_map<std::string, int32_t> token_ids_;  // every token, and the special ones (id -1)
  absl::flat_hash_map<uint64_t, int64_t> pair_counts_;   // positive counts only
  absl::flat_hash_map<uint64_t, std::vector<int32_t>> where_;
  absl::flat_hash_set<uint64_t> banned_;  // pairs whose merged string is already a token
  std::vector<HeapEntry> heap_;
};

}  // namespace

std::array<char32_t, 256> BytesToUnicode() {
  std::array<char32_t, 256> table{};
  char32_t n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? static_cast<char32_t>(b) : 256 + n++;
  }
  return table;
}

std::array<std::string, 256> ByteSymbols() {
  const std::array<char32_t, 256> code_points = BytesToUnicode();
  std::array<std::string, 256> symbols;
  for (int b = 0; b < 256; ++b) AppendUtf8(code_points[b], &symbols[b]);
  return symbols;
}

absl::StatusOr<std::unique_ptr<BpeTrainer>> BpeTrainer::Create(const BpeTrainerOptions& options) {
  if (options.vocab_size < kBaseSymbols + kSpecialTokens) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size is ", options.vocab_size, "; it must be at least ",
                                                   kBaseSymbols + kSpecialTokens,
                                                   " (512 byte symbols and the two special tokens)"));
  }
  if (options.min_frequency < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_frequency is ", options.min_frequency, "; it must be at least 1"));
  }
  return std::unique_ptr<BpeTrainer>(new BpeTrainer(options));
}

absl::Status BpeTrainer::AddText(std::string_view utf8) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::vector<std::string> words, clip::SplitWords(utf8));
  if (utf8.empty()) return absl::OkStatus();
  ++stats_.texts;
  for (std::string& word : words) {
    if (word == kSotToken || word == kEotToken) continue;
    ++stats_.words;
    ++word_counts_[std::move(word)];
  }
  stats_.distinct_words = word_counts_.size();
  return absl::OkStatus();
}

absl::Status BpeTrainer::AddCorpusFile(const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat("corpus file ", path.string(), " does not exist"));
  }
  if (!fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat("corpus ", path.string(), " is not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot open corpus file ", path.string()));
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (absl::Status s = AddText(line); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(path.string(), ":", line_number, ": ", s.message()));
    }
  }
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading corpus file ", path.string()));
  return absl::OkStatus();
}

absl::StatusOr<BpeVocabulary> BpeTrainer::Train() const {
  // The 256 byte symbols in the order of OpenAI's `list(bytes_to_unicode().values())`: the printable bytes, then
  // the others, i.e. ascending code point. byte_id[b] is the id of byte b's symbol.
  const std::array<char32_t, 256> code_points = BytesToUnicode();
  const std::array<std::string, 256> symbols = ByteSymbols();
  std::array<int, 256> order;
  for (int b = 0; b < 256; ++b) order[b] = b;
  std::sort(order.begin(), order.end(), [&](int x, int y) { return code_points[x] < code_points[y]; });
  std::array<int32_t, 256> byte_id;
  BpeVocabulary vocab;
  vocab.tokens.reserve(options_.vocab_size);
  for (int i = 0; i < kByteSymbols; ++i) {
    byte_id[order[i]] = i;
    vocab.tokens.push_back(symbols[order[i]]);
  }
  for (int i = 0; i < kByteSymbols; ++i) vocab.tokens.push_back(absl::StrCat(vocab.tokens[i], AbslView(kEndOfWord)));

  // Words in string order, so that nothing depends on hash-map iteration order.
  std::vector<std::pair<std::string_view, int64_t>> sorted;
  sorted.reserve(word_counts_.size());
  for (const auto& [text, count] : word_counts_) sorted.emplace_back(text, count);
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    const std::string_view text = sorted[w].first;
    Word& word = words[w];
    word.count = sorted[w].second;
    word.symbols.reserve(text.size());
    for (const char c : text) word.symbols.push_back(byte_id[static_cast<unsigned char>(c)]);
    if (!word.symbols.empty()) word.symbols.back() += kByteSymbols;  // its "</w>" twin
  }

  Merger(options_, std::move(words), &vocab).Run();
  vocab.tokens.emplace_back(kSotToken);
  vocab.tokens.emplace_back(kEotToken);
  return vocab;
}

absl::Status WriteBpeVocabulary(const BpeVocabulary& vocabulary, const fs::path& dir) {
  const size_t expected = kBaseSymbols + vocabulary.merges.size() + kSpecialTokens;
  if (vocabulary.tokens.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary has ", vocabulary.tokens.size(), " tokens and ",
                                                   vocabulary.merges.size(), " merges; expected ", expected,
                                                   " tokens"));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", dir.string(), ": ", ec.message()));

  std::string json = "{\n";
  for (size_t id = 0; id < vocabulary.tokens.size(); ++id) {
    absl::StrAppend(&json, "  ", nlohmann::json(vocabulary.tokens[id]).dump(), ": ", id,
                    id + 1 < vocabulary.tokens.size() ? ",\n" : "\n");
  }
  json += "}\n";
  std::string merges = "#version: 0.2\n";
  for (const auto& [left, right] : vocabulary.merges) absl::StrAppend(&merges, left, " ", right, "\n");
  CLIPSERVE_RETURN_IF_ERROR(WriteFileAtomically(dir / "merges.txt", merges));
  return WriteFileAtomically(dir / "vocab.json", json);
}

}  // namespace clipserve::bpe
