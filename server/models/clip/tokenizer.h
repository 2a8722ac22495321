// The OpenAI CLIP byte-level BPE tokenizer, exact to the reference (`clip/simple_tokenizer.py` with ftfy treated
// as identity): html.unescape twice → strip → collapse whitespace → Unicode lowercase → split with CLIP's regex →
// bytes_to_unicode → BPE → ids, wrapped as [SOT] + ids + [EOT] and padded to the context length.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace clipserve::clip {

// What EncodePadded does with a text whose tokens (with SOT/EOT) do not fit the context.
enum class Truncation {
  kTruncate,  // keep the first context_length tokens, the last one replaced by EOT (OpenAI `truncate=True`)
  kReject,    // INVALID_ARGUMENT
};

struct TokenizerOptions {
  // Hugging Face layout: vocab.json maps token -> id and must contain "<|startoftext|>" and "<|endoftext|>";
  // merges.txt is a '#version' header line, then one "a b" merge per line, highest priority first.
  std::filesystem::path vocab_path;
  std::filesystem::path merges_path;
  // Tokens per padded sequence, SOT and EOT included (text_config.max_position_embeddings; 77 for every CLIP).
  int context_length = 77;
  // Words whose BPE result is kept in the cache (0: no cache). Only words of 16 to 256 bytes are cached:
  // shorter ones cost no more to merge than to look up.
  size_t cache_capacity = 100000;
  // Words of at least this many bytes use the O(n log n) heap merge loop instead of the O(n^2) array loop.
  // Both give identical results (tests compare them); only tests change this.
  size_t heap_bpe_min_bytes = 48;
};

// A tokenised text: [SOT] + BPE ids + [EOT], never truncated.
struct TokenizedText {
  std::vector<int32_t> ids;
  bool truncated = false;  // ids.size() > context_length: EncodePadded(kTruncate) would cut it
};

// Converts UTF-8 text to CLIP token ids. Immutable after Create() except for an internal bounded per-word BPE
// cache, which is synchronised: every method may be called from any number of threads at once, and none blocks
// other than briefly on a cache shard's mutex. Malformed UTF-8 input is answered INVALID_ARGUMENT. Owns its
// tables; nothing refers back to the options or the files after Create() returns.
class Tokenizer {
 public:
  // Loads and validates the vocabulary and merges: NOT_FOUND for a missing file, INVALID_ARGUMENT naming the
  // file (and line for merges.txt) for malformed content, a merge whose parts or result are not in the
  // vocabulary, a vocabulary without the SOT/EOT tokens, or a context_length below 2.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerOptions& options);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // The BPE ids of `utf8`, without SOT/EOT (OpenAI `SimpleTokenizer.encode`). The literal strings
  // "<|startoftext|>" and "<|endoftext|>" in the text become the SOT/EOT ids, as in the reference.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view utf8) const;

  // [SOT] + Encode(utf8) + [EOT], untruncated, and whether that exceeds context_length().
  absl::StatusOr<TokenizedText> Tokenize(std::string_view utf8) const;

  // Writes [SOT] + ids + [EOT] into `out`, which must hold exactly context_length() entries, zero padded. The
  // ids are int64 because that is what the text tower's torch tensors take. A text that does not fit is cut
  // with EOT kept last (kTruncate, `*truncated` set) or answered INVALID_ARGUMENT giving its token count and the
  // limit (kReject; `out` is then unspecified). With kTruncate the words past the context are not encoded (the
  // whole text is still validated). `truncated` may be null. Does not allocate once the calling thread's scratch
  // buffers are warm and the words are cached.
  absl::Status EncodePadded(std::string_view utf8, Truncation truncation, absl::Span<int64_t> out,
                            bool* truncated) const;

  // OpenAI `SimpleTokenizer.decode`: tokens joined, mapped back to bytes, decoded as UTF-8 with U+FFFD for
  // malformed sequences, and every "</w>" replaced by a space. Unknown ids are skipped. For debugging and tests.
  std::string Decode(absl::Span<const int32_t> ids) const;

  int32_t sot_id() const { return sot_id_; }
  int32_t eot_id() const { return eot_id_; }
  int context_length() const { return context_length_; }
  size_t vocab_size() const { return vocab_size_; }

 private:
  struct Tables;
  class WordCache;

  Tokenizer(const TokenizerOptions& options, std::unique_ptr<const Tables> tables);

  // Appends the BPE ids of `utf8` (no SOT/EOT) to `ids`, stopping early once `ids` holds more than
  // `stop_after` entries.
  absl::Status AppendIds(std::string_view utf8, size_t stop_after, std::vector<int32_t>* ids) const;
  // Appends the ids of one pre-tokenised word (its UTF-8 bytes, a regex match) to `ids`.
  absl::Status AppendWordIds(std::string_view word, std::vector<int32_t>* ids) const;
  // Runs BPE on `word` and appends the resulting ids; no cache involved.
  absl::Status BytePairEncode(std::string_view word, std::vector<int32_t>* ids) const;

  std::unique_ptr<const Tables> tables_;
  std::unique_ptr<WordCache> cache_;
  int32_t sot_id_ = 0;
  int32_t eot_id_ = 0;
  int context_length_ = 77;
  size_t vocab_size_ = 0;
  size_t heap_bpe_min_bytes_ = 48;
};

// The reference's text clean-up, exposed for tests and debugging. Each returns INVALID_ARGUMENT for malformed
// UTF-8.
//
// Python `html.unescape` applied once (not twice).
absl::StatusOr<std::string> HtmlUnescape(std::string_view utf8);
// `whitespace_clean(basic_clean(text)).lower()`: the text as the reference splits it.
absl::StatusOr<std::string> CleanText(std::string_view utf8);
// The regex matches of CleanText(utf8) (`re.findall(pat, text)`), as UTF-8.
absl::StatusOr<std::vector<std::string>> SplitWords(std::string_view utf8);

}  // namespace clipserve::clip
