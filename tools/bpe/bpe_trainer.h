// A byte-level BPE trainer whose output `clip::Tokenizer` loads exactly like OpenAI's CLIP vocabulary.
//
// Texts are pre-tokenised by the tokenizer itself (clip::SplitWords: html-unescape, whitespace clean-up,
// lowercase, CLIP's regex), each word's UTF-8 bytes are mapped through OpenAI's bytes_to_unicode and its last
// symbol carries "</w>". Training repeatedly merges the most frequent adjacent pair of symbols, counted over all
// words weighted by their frequency; ties go to the lexicographically smallest (left, right) pair of token
// strings (UTF-8 byte order). A pair whose merged string is already a token is never learned, so every merge
// adds exactly one vocabulary entry and the tokenizer's greedy rank-order BPE reproduces the training
// segmentation of every word.
//
// The vocabulary is laid out as OpenAI's: the 256 byte symbols (bytes_to_unicode values in dict order), the same
// 256 with "</w>", one entry per merge in merge order, then "<|startoftext|>" and "<|endoftext|>" last.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace clipserve::bpe {

// OpenAI's bytes_to_unicode(): byte -> code point of its symbol. Printable Latin-1 bytes map to themselves, the
// others to U+0100 + n in byte order.
std::array<char32_t, 256> BytesToUnicode();

// The UTF-8 symbol of every byte (BytesToUnicode encoded), indexed by byte.
std::array<std::string, 256> ByteSymbols();

struct BpeTrainerOptions {
  // Entries in the trained vocabulary, the 512 byte symbols and the two special tokens included (so at least
  // 514). Training stops early when no pair is frequent enough; the result may then be smaller.
  int vocab_size = 49408;
  // A pair is merged only if it occurs at least this often (word frequencies counted in).
  int64_t min_frequency = 2;
};

// A trained vocabulary: `tokens[id]` is the token of id `id` (dense, in the layout above), `merges` the learned
// pairs, highest priority first. tokens.size() == 512 + merges.size() + 2.
struct BpeVocabulary {
  std::vector<std::string> tokens;
  std::vector<std::pair<std::string, std::string>> merges;
  // The frequency of the last learned merge (0 when none was learned).
  int64_t last_merge_frequency = 0;
  // Pairs passed over because their merged string was already a token (the same string reached by two
  // different splits). A guard that keeps one entry per merge; not seen in practice.
  int64_t skipped_pairs = 0;
};

// What was fed to the trainer.
struct BpeCorpusStats {
  int64_t texts = 0;  // non-empty texts added
  int64_t words = 0;  // pre-tokenised words, with repetitions
  size_t distinct_words = 0;
};

// Accumulates word frequencies from texts, then trains. Not thread-safe: one thread at a time; nothing blocks.
// Train() may be called any number of times (it does not consume the counts) and is deterministic: the same
// texts in any order give the same vocabulary.
class BpeTrainer {
 public:
  // INVALID_ARGUMENT for a vocab_size below 514 or a min_frequency below 1.
  static absl::StatusOr<std::unique_ptr<BpeTrainer>> Create(const BpeTrainerOptions& options);

  BpeTrainer(const BpeTrainer&) = delete;
  BpeTrainer& operator=(const BpeTrainer&) = delete;

  // Counts the words of one text (caption). INVALID_ARGUMENT for malformed UTF-8. The literal special tokens
  // "<|startoftext|>" and "<|endoftext|>" are not counted (the tokenizer never runs BPE on them).
  absl::Status AddText(std::string_view utf8);

  // Adds every line of a text file as one text ('\n' separated, a trailing '\r' ignored, empty lines skipped).
  // NOT_FOUND when the file does not exist, INVALID_ARGUMENT when it is not a regular file or a line is not
  // valid UTF-8 (naming the file and line), INTERNAL on a read error.
  absl::Status AddCorpusFile(const std::filesystem::path& path);

  absl::StatusOr<BpeVocabulary> Train() const;

  const BpeCorpusStats& stats() const { return stats_; }

 private:
  explicit BpeTrainer(const BpeTrainerOptions& options) : options_(options) {}

  BpeTrainerOptions options_;
  absl::flat_hash_map<std::string, int64_t> word_counts_;
  BpeCorpusStats stats_;
};

// Writes `dir`/vocab.json (token -> id, one entry per line in id order) and `dir`/merges.txt ("#version: 0.2",
// then one "left right" line per merge), each atomically; creates `dir` if needed.
absl::Status WriteBpeVocabulary(const BpeVocabulary& vocabulary, const std::filesystem::path& dir);

}  // namespace clipserve::bpe
