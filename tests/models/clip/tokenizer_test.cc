#include "server/models/clip/tokenizer.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::clip {
namespace {

using ::clipserve::testing::FixtureDir;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr size_t kAllHeap = 0;
constexpr size_t kNoHeap = std::numeric_limits<size_t>::max();

// ---------------------------------------------------------------------------------------------------------------
// Helpers

std::filesystem::path MakeTempDir(const std::string& name) { return ::clipserve::testing::ScratchDir(name); }

void WriteFile(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

// A handmade vocabulary: `tokens` get ids 0.., then "<|startoftext|>" and "<|endoftext|>".
struct TinyModel {
  std::filesystem::path vocab;
  std::filesystem::path merges;
};
TinyModel WriteTinyModel(const std::string& name, const std::vector<std::string>& tokens,
                         const std::vector<std::string>& merges) {
  const std::filesystem::path dir = MakeTempDir(name);
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (const std::string& t : tokens) vocab[t] = id++;
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  WriteFile(dir / "vocab.json", vocab.dump());
  std::string m = "#version: 0.2\n";
  for (const std::string& line : merges) m += line + "\n";
  WriteFile(dir / "merges.txt", m);
  return {dir / "vocab.json", dir / "merges.txt"};
}

// Tokens of the tiny BPE model; their ids are their positions.
const std::vector<std::string>& TinyTokens() {
  static const auto* const tokens = new std::vector<std::string>{
      "a",        "b",     "c",  "a</w>", "b</w>",   "c</w>",  // 0-5: base symbols
      "bc</w>",   "ab",    "aa", "aba",   "aaa</w>",           // 6-10: merge results
      "\xC3\xA2",                                              // 11: bytes_to_unicode(0xE2) = U+00E2, a lone lead byte
      "x",        "x</w>", "xa", "xab",                        // 12-15
  };
  return *tokens;
}
// In priority order. "ab a" ranks before "a b", whose merges create its left part: the reference only looks at
// the (ab, a) pairs once every (a, b) has been merged.
const std::vector<std::string>& TinyMerges() {
  static const auto* const merges = new std::vector<std::string>{
      "ab a",      // 0: ranked before the merge that creates its left part
      "b c</w>",   // 1
      "a b",       // 2
      "a a",       // 3
      "aa a</w>",  // 4
      "x a",       // 5
      "xa b",      // 6
  };
  return *merges;
}

std::unique_ptr<Tokenizer> MakeTiny(size_t heap_bpe_min_bytes = TokenizerOptions().heap_bpe_min_bytes,
                                    int context_length = 77) {
  static const TinyModel model = WriteTinyModel("tiny", TinyTokens(), TinyMerges());
  TokenizerOptions options;
  options.vocab_path = model.vocab;
  options.merges_path = model.merges;
  options.heap_bpe_min_bytes = heap_bpe_min_bytes;
  options.context_length = context_length;
  auto tokenizer = Tokenizer::Create(options);
  EXPECT_THAT(tokenizer, IsOk());
  return tokenizer.ok() ? std::move(tokenizer).value() : nullptr;
}

TokenizerOptions FixtureOptions() {
  TokenizerOptions options;
  options.vocab_path = FixtureDir() / "clip" / "vocab.json";
  options.merges_path = FixtureDir() / "clip" / "merges.txt";
  return options;
}

int FixtureContextLength() {
  auto config = ReadJsonFile(FixtureDir() / "clip" / "config.json");
  EXPECT_THAT(config, IsOk());
  if (!config.ok()) return 77;
  return config->at("text_config").at("max_position_embeddings").get<int>();
}

// ---------------------------------------------------------------------------------------------------------------
// Parity with the reference fixtures

TEST(TokenizerTest, Fixture_IdsAndPaddedIdsMatchReference) {
  CLIPSERVE_REQUIRE_FIXTURES();
  TokenizerOptions options = FixtureOptions();
  options.context_length = FixtureContextLength();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto tokenizer, Tokenizer::Create(options));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const nlohmann::json cases, ReadJsonFile(FixtureDir() / "clip_cases.json"));
  const nlohmann::json& tokenizer_cases = cases.at("tokenizer_cases");
  ASSERT_FALSE(tokenizer_cases.empty());
  const size_t context = static_cast<size_t>(options.context_length);
  int checked = 0;
  for (const nlohmann::json& c : tokenizer_cases) {
    const std::string text = c.at("text").get<std::string>();
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    const auto padded = c.at("padded77").get<std::vector<int64_t>>();
    SCOPED_TRACE(::testing::Message() << "text: \"" << text << "\"");
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(tokenizer->sot_id(), ids.front());
    EXPECT_EQ(tokenizer->eot_id(), ids.back());

    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const TokenizedText tokenized, tokenizer->Tokenize(text));
    EXPECT_THAT(tokenized.ids, ElementsAreArray(ids));
    EXPECT_EQ(tokenized.truncated, ids.size() > context);

    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> encoded, tokenizer->Encode(text));
    EXPECT_THAT(encoded, ElementsAreArray(ids.begin() + 1, ids.end() - 1));

    std::vector<int64_t> out(context, -1);
    bool truncated = false;
    ASSERT_THAT(tokenizer->EncodePadded(text, Truncation::kTruncate, absl::MakeSpan(out), &truncated), IsOk());
    EXPECT_THAT(out, ElementsAreArray(padded));
    EXPECT_EQ(truncated, ids.size() > context);

    const absl::Status rejected = tokenizer->EncodePadded(text, Truncation::kReject, absl::MakeSpan(out), nullptr);
    if (ids.size() > context) {
      EXPECT_THAT(rejected, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(std::to_string(ids.size()))));
    } else {
      EXPECT_THAT(rejected, IsOk());
      EXPECT_THAT(out, ElementsAreArray(padded));
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(tokenizer_cases.size()));
}

TEST(TokenizerTest, Fixture_LoadsSpecialTokensFromVocabulary) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const nlohmann::json vocab, ReadJsonFile(FixtureOptions().vocab_path));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto tokenizer, Tokenizer::Create(FixtureOptions()));
  EXPECT_EQ(tokenizer->sot_id(), vocab.at("<|startoftext|>").get<int32_t>());
  EXPECT_EQ(tokenizer->eot_id(), vocab.at("<|endoftext|>").get<int32_t>());
  EXPECT_EQ(tokenizer->vocab_size(), vocab.size());
  EXPECT_EQ(tokenizer->context_length(), 77);
}

TEST(TokenizerTest, Fixture_SpecialTokenLiteralsInTextBecomeSotEot) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto tokenizer, Tokenizer::Create(FixtureOptions()));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> hi, tokenizer->Encode("hi"));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids, tokenizer->Encode("<|startoftext|>HI<|endoftext|>"));
  std::vector<int32_t> want = {tokenizer->sot_id()};
  want.insert(want.end(), hi.begin(), hi.end());
  want.push_back(tokenizer->eot_id());
  EXPECT_EQ(ids, want);
  // "<|ſtartoftext|>" matches the special-token alternative case-insensitively but is BPE'd like any word.
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> long_s, tokenizer->Encode("<|\xC5\xBFtartoftext|>"));
  EXPECT_GT(long_s.size(), 1u);
  EXPECT_EQ(tokenizer->Decode(long_s), "<|\xC5\xBFtartoftext|> ");
}

TEST(TokenizerTest, Fixture_DecodeInvertsEncode) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto tokenizer, Tokenizer::Create(FixtureOptions()));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids,
                                 tokenizer->Encode("A photo of a CAT, 3 \xF0\x9F\x90\xB1"));
  EXPECT_EQ(tokenizer->Decode(ids), "a photo of a cat , 3 \xF0\x9F\x90\xB1 ");
}

TEST(TokenizerTest, Fixture_FinalSigmaIsLoweredInContext) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto tokenizer, Tokenizer::Create(FixtureOptions()));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids, tokenizer->Encode("ΟΔΟΣ"));
  EXPECT_EQ(tokenizer->Decode(ids), "οδος ");  // final ς (U+03C2)
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> final_sigma, tokenizer->Encode("ς"));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> sigma, tokenizer->Encode("σ"));
  EXPECT_NE(final_sigma, sigma);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> capital, tokenizer->Encode("Σ"));
  EXPECT_EQ(capital, sigma);  // no cased letter before it: not final
}

// The two merge loops must agree on arbitrary words, long ones included.
TEST(TokenizerTest, Fixture_HeapAndArrayMergeLoopsAgree) {
  CLIPSERVE_REQUIRE_FIXTURES();
  TokenizerOptions options = FixtureOptions();
  options.cache_capacity = 0;
  options.heap_bpe_min_bytes = kAllHeap;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto heap, Tokenizer::Create(options));
  options.heap_bpe_min_bytes = kNoHeap;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto array, Tokenizer::Create(options));
  const std::vector<std::string> alphabet = {"a",  "e",  "i", "o", "n", "s", "t", "r", "l", "th", "ing",
                                             "er", "qu", "x", "z", "é", "ß", "ü", "ω", "ж", "東", "の"};
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    std::string word;
    const int length = 1 + static_cast<int>(rng() % 200);
    for (int k = 0; k < length; ++k) word += alphabet[rng() % alphabet.size()];
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> a, heap->Encode(word));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> b, array->Encode(word));
    ASSERT_EQ(a, b) << word;
  }
}

TEST(TokenizerTest, Fixture_ConcurrentTokenizationMatchesSingleThread) {
  CLIPSERVE_REQUIRE_FIXTURES();
  TokenizerOptions options = FixtureOptions();
  options.cache_capacity = 0;
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto reference, Tokenizer::Create(options));
  std::vector<std::string> texts;
  const std::vector<std::string> words = {
      "a",    "photo", "of",    "the", "small",      "blue",     "star", "on",     "black", "Ελληνικά",
      "東京", "don't", "&amp;", "42",  "watercolor", "portrait", "ΟΔΟΣ", "straße", "🐱",     "xxxxxxxxxxxxxxxxxxxxxxxx"};
  std::mt19937 rng(11);
  for (int i = 0; i < 200; ++i) {
    std::string text;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) text += words[rng() % words.size()] + (rng() % 3 ? " " : "");
    texts.push_back(text);
  }
  std::vector<std::vector<int32_t>> expected;
  std::vector<std::vector<int64_t>> expected_padded;
  for (const std::string& text : texts) {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(TokenizedText t, reference->Tokenize(text));
    expected.push_back(std::move(t.ids));
    expected_padded.emplace_back(reference->context_length());
    ASSERT_THAT(reference->EncodePadded(text, Truncation::kTruncate, absl::MakeSpan(expected_padded.back()), nullptr),
                IsOk());
  }
  for (const size_t capacity : {size_t{8}, size_t{100000}}) {  // with and without evictions
    options.cache_capacity = capacity;
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto shared, Tokenizer::Create(options));
    constexpr int kThreads = 8;
    std::vector<int> mismatches(kThreads, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<int64_t> padded(shared->context_length());
        for (int round = 0; round < 5; ++round) {
          for (size_t i = 0; i < texts.size(); ++i) {
            const size_t k = (i * 7 + static_cast<size_t>(t) * 13 + static_cast<size_t>(round)) % texts.size();
            auto got = shared->Tokenize(texts[k]);
            if (!got.ok() || got->ids != expected[k]) ++mismatches[t];
            bool truncated;
            if (!shared->EncodePadded(texts[k], Truncation::kTruncate, absl::MakeSpan(padded), &truncated).ok() ||
                padded != expected_padded[k] || truncated != (expected[k].size() > padded.size())) {
              ++mismatches[t];
            }
          }
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_THAT(mismatches, ::testing::Each(0)) << "cache capacity " << capacity;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// BPE on a handmade vocabulary

class TinyBpeTest : public ::testing::TestWithParam<size_t> {};

TEST_P(TinyBpeTest, MergesLowestRankFirstLikeTheReference) {
  auto tokenizer = MakeTiny(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  const auto encode = [&](std::string_view text) {
    auto ids = tokenizer->Encode(text);
    EXPECT_THAT(ids, IsOk()) << text;
    return ids.ok() ? *ids : std::vector<int32_t>{};
  };
  // Ids are positions in TinyTokens().
  EXPECT_THAT(encode("a"), ElementsAre(3));           // a</w>
  EXPECT_THAT(encode("abc"), ElementsAre(0, 6));      // (b, c</w>) outranks (a, b): a + bc</w>
  EXPECT_THAT(encode("aaa"), ElementsAre(10));        // a a a</w> -> aa a</w> -> aaa</w>
  EXPECT_THAT(encode("aaaa"), ElementsAre(8, 0, 3));  // occurrences merged left to right: aa a a</w>
  // All (a, b) are merged before the (ab, a) pairs they create are looked at, although "ab a" ranks first:
  // a b a b a</w> -> ab ab a</w>, not aba b a</w>.
  EXPECT_THAT(encode("ababa"), ElementsAre(7, 7, 3));
  EXPECT_THAT(encode("abab"), ElementsAre(9, 4));           // a b a b</w> -> ab a b</w> -> aba b</w>
  EXPECT_THAT(encode("xab"), ElementsAre(14, 4));           // x a b</w> -> xa b</w>; (xa, b</w>) is no merge
  EXPECT_THAT(encode("xabc"), ElementsAre(14, 6));          // x a b c</w> -> x a bc</w> -> xa bc</w>
  EXPECT_THAT(encode("xabx"), ElementsAre(12, 7, 13));      // (a, b) outranks the leftmost (x, a)
  EXPECT_THAT(encode("ABC Abc"), ElementsAre(0, 6, 0, 6));  // lowercased, two words
}

INSTANTIATE_TEST_SUITE_P(MergeLoops, TinyBpeTest, ::testing::Values(kAllHeap, kNoHeap),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return info.param == kAllHeap ? std::string("Heap") : std::string("Array");
                         });

TEST(TokenizerTest, WordWithSymbolsOutsideTheVocabularyIsRejected) {
  auto tokenizer = MakeTiny();
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(tokenizer->Encode("abd"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("abd")));
}

TEST(TokenizerTest, SpecialTokensAndPaddingOnTinyVocabulary) {
  auto tokenizer = MakeTiny(TokenizerOptions().heap_bpe_min_bytes, /*context_length=*/6);
  ASSERT_NE(tokenizer, nullptr);
  const int32_t sot = static_cast<int32_t>(TinyTokens().size());
  EXPECT_EQ(tokenizer->sot_id(), sot);
  EXPECT_EQ(tokenizer->eot_id(), sot + 1);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const TokenizedText empty, tokenizer->Tokenize("  \t "));
  EXPECT_THAT(empty.ids, ElementsAre(sot, sot + 1));
  EXPECT_FALSE(empty.truncated);

  std::vector<int64_t> out(6, -1);
  bool truncated = true;
  ASSERT_THAT(tokenizer->EncodePadded("abc", Truncation::kReject, absl::MakeSpan(out), &truncated), IsOk());
  EXPECT_THAT(out, ElementsAre(sot, 0, 6, sot + 1, 0, 0));
  EXPECT_FALSE(truncated);

  // Exactly the context: accepted either way.
  ASSERT_THAT(tokenizer->EncodePadded("a a a a", Truncation::kReject, absl::MakeSpan(out), &truncated), IsOk());
  EXPECT_THAT(out, ElementsAre(sot, 3, 3, 3, 3, sot + 1));
  EXPECT_FALSE(truncated);
}

TEST(TokenizerTest, TooLongTextIsTruncatedWithEotLastOrRejected) {
  auto tokenizer = MakeTiny(TokenizerOptions().heap_bpe_min_bytes, /*context_length=*/5);
  ASSERT_NE(tokenizer, nullptr);
  const int32_t sot = tokenizer->sot_id();
  const int32_t eot = tokenizer->eot_id();
  const std::string text = "a b c a b c";  // 6 words: 8 tokens with SOT/EOT
  std::vector<int64_t> out(5, -1);
  bool truncated = false;
  ASSERT_THAT(tokenizer->EncodePadded(text, Truncation::kTruncate, absl::MakeSpan(out), &truncated), IsOk());
  EXPECT_THAT(out, ElementsAre(sot, 3, 4, 5, eot));
  EXPECT_TRUE(truncated);
  EXPECT_THAT(tokenizer->EncodePadded(text, Truncation::kReject, absl::MakeSpan(out), &truncated),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::AllOf(HasSubstr("8"), HasSubstr("5"))));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const TokenizedText full, tokenizer->Tokenize(text));
  EXPECT_THAT(full.ids, ElementsAre(sot, 3, 4, 5, 3, 4, 5, eot));
  EXPECT_TRUE(full.truncated);
}

TEST(TokenizerTest, EncodePaddedRejectsWrongOutputSize) {
  auto tokenizer = MakeTiny();
  ASSERT_NE(tokenizer, nullptr);
  std::vector<int64_t> out(76);
  EXPECT_THAT(tokenizer->EncodePadded("a", Truncation::kTruncate, absl::MakeSpan(out), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("77")));
}

TEST(TokenizerTest, DecodeReplacesMalformedUtf8AndEndOfWord) {
  auto tokenizer = MakeTiny();
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Decode({0, 6, 3}), "abc a ");
  EXPECT_EQ(tokenizer->Decode({11, 3}),
            "\xEF\xBF\xBD"
            "a ");  // a lone lead byte 0xE2, then "a</w>"
  EXPECT_EQ(tokenizer->Decode({tokenizer->sot_id(), 3, tokenizer->eot_id()}), "<|startoftext|>a <|endoftext|>");
  EXPECT_EQ(tokenizer->Decode({-1, 100000, 3}), "a ");  // unknown ids skipped
}

TEST(TokenizerTest, CacheCapacityDoesNotChangeResults) {
  const TinyModel model = WriteTinyModel("cache", TinyTokens(), TinyMerges());
  for (const size_t capacity : {size_t{0}, size_t{1}, size_t{3}, size_t{100000}}) {
    TokenizerOptions options;
    options.vocab_path = model.vocab;
    options.merges_path = model.merges;
    options.cache_capacity = capacity;
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto tokenizer, Tokenizer::Create(options));
    for (int round = 0; round < 3; ++round) {
      CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids,
                                     tokenizer->Encode("abc aaa aaaa ababa abab xab xabc abc"));
      EXPECT_THAT(ids, ElementsAre(0, 6, 10, 8, 0, 3, 7, 7, 3, 9, 4, 14, 4, 14, 6, 0, 6)) << "capacity " << capacity;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Invalid input

TEST(TokenizerTest, InvalidUtf8IsInvalidArgument) {
  auto tokenizer = MakeTiny();
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<std::string> invalid = {
      std::string("a\x80"),                 // lone continuation byte
      std::string("abc\xE2\x82"),           // truncated sequence
      std::string("\xC3"),                  // truncated at the end
      std::string("\xC0\xAF"),              // overlong '/'
      std::string("\xE0\x80\xAF"),          // overlong, three bytes
      std::string("\xED\xA0\x80"),          // surrogate U+D800
      std::string("\xF4\x90\x80\x80"),      // U+110000
      std::string("\xFF"),                  // never valid
      std::string("a b c d e f g h \xFE"),  // after an ASCII run
  };
  for (const std::string& text : invalid) {
    EXPECT_THAT(tokenizer->Encode(text), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
    EXPECT_THAT(tokenizer->Tokenize(text), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
    std::vector<int64_t> out(tokenizer->context_length());
    EXPECT_THAT(tokenizer->EncodePadded(text, Truncation::kTruncate, absl::MakeSpan(out), nullptr),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
    EXPECT_THAT(CleanText(text), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  }
  // Valid edge cases: NUL, the largest code point, U+FFFF.
  EXPECT_THAT(CleanText(std::string("a\0b", 3)), IsOk());
  EXPECT_THAT(CleanText("\xF4\x8F\xBF\xBF \xEF\xBF\xBF"), IsOk());
}

// ---------------------------------------------------------------------------------------------------------------
// Text clean-up (html.unescape, whitespace, lowercase) and the regex split; expected values from CPython 3.11

TEST(CleanTextTest, HtmlUnescapeMatchesPython) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"&amp;amp;", "&amp;"},  // one pass only
      {"&ampx", "&x"},         // longest known prefix of a name without ';'
      {"&ampx;", "&x;"},
      {"&notin", "\xC2\xACin"},  // "not" is the longest prefix that is a name
      {"&notin;", "\xE2\x88\x89"},
      {"&#x110000;", "\xEF\xBF\xBD"},  // beyond Unicode
      {"&#xD800;", "\xEF\xBF\xBD"},    // surrogate
      {"&#0;", "\xEF\xBF\xBD"},
      {"&#128;", "\xE2\x82\xAC"},  // windows-1252: €
      {"&#129;", "\xC2\x81"},
      {"&#13;", "\r"},
      {"&#11;", ""},  // _invalid_codepoints
      {"&#x7f;", ""},
      {"&#xFDD0;", ""},
      {"&#99999999999999999999999999;", "\xEF\xBF\xBD"},  // no overflow
      {"&#65", "A"},
      {"&#x41;", "A"},
      {"&#X4a", "J"},
      {"&#0065;x", "Ax"},
      {"&#x1F600;", "\xF0\x9F\x98\x80"},
      {"&#;", "&#;"},
      {"&#x;", "&#x;"},
      {"&" + std::string(40, 'a'), "&" + std::string(40, 'a')},
      {"&ThickSpace;", "\xE2\x81\x9F\xE2\x80\x8A"},
      {"&lt;b&gt;", "<b>"},
      {"&AMP", "&"},
      {"&&amp;", "&&"},
      {"&\xC3\xA9"
       "amp;",
       "&\xC3\xA9"
       "amp;"},
      {"&amp\xC3\xA9", "&\xC3\xA9"},
      {"no entities", "no entities"},
      {"&", "&"},
  };
  for (const auto& [in, want] : cases) {
    auto got = HtmlUnescape(in);
    ASSERT_THAT(got, IsOk()) << in;
    EXPECT_EQ(*got, want) << in;
  }
}

TEST(CleanTextTest, UnescapesTwiceStripsCollapsesAndLowers) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"&amp;amp;", "&"},
      {"&#13;", ""},         // unescaped to '\r', then stripped
      {"&ThickSpace;", ""},  // Python whitespace
      {"&#0065;X", "ax"},
      {"  A  photo\tOF\na CAT  ", "a photo of a cat"},
      // Python's whitespace: \t\n\v\f\r, \x1c-\x1f, space, \x85, \xa0, U+1680, U+2000-U+200A, U+2028, U+2029,
      // U+202F, U+205F, U+3000; not U+200B or U+180E.
      {"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f a\xC2\x85"
       "b\xC2\xA0"
       "c\xE1\x9A\x80"
       "d\xE2\x80\x80"
       "e\xE2\x80\x8A"
       "f\xE2\x80\xA8g\xE2\x80\xA9h\xE2\x80\xAFi\xE2\x81\x9Fj\xE3\x80\x80k \xE2\x80\x8B l\xE1\xA0\x8Em  ",
       "a b c d e f g h i j k \xE2\x80\x8B l\xE1\xA0\x8Em"},
      {"ΟΔΟΣ", "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82"},  // final sigma
      {"Σ", "\xCF\x83"},
      {"ΑΣ.", "\xCE\xB1\xCF\x82."},
      {"ΑΣΑ", "\xCE\xB1\xCF\x83\xCE\xB1"},
      {"ΟΔΟΣ'Σ", "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x83'\xCF\x82"},  // "'" is case-ignorable
      {"\xC4\xB0", "i\xCC\x87"},                                // İ -> i + U+0307
      {"STRASSE Über",
       "strasse \xC3\xBC"
       "ber"},
      {"\xE2\x84\xAA", "k"},  // Kelvin sign
  };
  for (const auto& [in, want] : cases) {
    auto got = CleanText(in);
    ASSERT_THAT(got, IsOk()) << in;
    EXPECT_EQ(*got, want) << in;
  }
}

TEST(CleanTextTest, SplitWordsMatchesTheReferenceRegex) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"don't it's we'll they're i've i'm he'd",
       {"don", "'t", "it", "'s", "we", "'ll", "they", "'re", "i", "'ve", "i", "'m", "he", "'d"}},
      {"'S 'T 'RE 'Ll", {"'s", "'t", "'re", "'ll"}},
      {"''s", {"''", "s"}},
      {"x'\xC5\xBF", {"x", "'\xC5\xBF"}},                // IGNORECASE: 's matches 'ſ
      {"!!<|endoftext|>", {"!!<|", "endoftext", "|>"}},  // the punctuation run comes first
      {"a<|endoftext|>b", {"a", "<|endoftext|>", "b"}},
      {"<|startoftext|><|endoftext|>", {"<|startoftext|>", "<|endoftext|>"}},
      {"<|\xC5\xBFtartoftext|>", {"<|\xC5\xBFtartoftext|>"}},
      {"12345", {"1", "2", "3", "4", "5"}},                                        // [\p{N}]: one number per match
      {"\xD9\xA3\xC2\xBD\xE2\x85\xAB", {"\xD9\xA3", "\xC2\xBD", "\xE2\x85\xBB"}},  // ٣ ½ Ⅻ->ⅻ
      {"\xCD\x85"
       "a\xCD\x85"
       "b",
       {"a", "b"}},  // U+0345 matches no alternative under IGNORECASE
      {"hello-world_under #hash", {"hello", "-", "world", "_", "under", "#", "hash"}},
      {"東京の猫", {"東京の猫"}},
      {"\xF0\x9F\x90\xB1\xF0\x9F\x90\xB6 party", {"\xF0\x9F\x90\xB1\xF0\x9F\x90\xB6", "party"}},
      {"café nai\xCC\x88ve", {"café", "nai", "\xCC\x88", "ve"}},  // combining marks are not letters
  };
  for (const auto& [in, want] : cases) {
    auto got = SplitWords(in);
    ASSERT_THAT(got, IsOk()) << in;
    EXPECT_THAT(*got, ElementsAreArray(want)) << in;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Malformed files

absl::Status CreateWith(const std::string& vocab, const std::string& merges, const std::string& name) {
  const std::filesystem::path dir = MakeTempDir(name);
  WriteFile(dir / "vocab.json", vocab);
  WriteFile(dir / "merges.txt", merges);
  TokenizerOptions options;
  options.vocab_path = dir / "vocab.json";
  options.merges_path = dir / "merges.txt";
  return Tokenizer::Create(options).status();
}

constexpr char kGoodVocab[] =
    R"({"a": 0, "b": 1, "ab": 2, "b</w>": 3, "ab</w>": 4, "<|startoftext|>": 5, "<|endoftext|>": 6})";

TEST(TokenizerFilesTest, ValidTinyFilesLoad) {
  EXPECT_THAT(CreateWith(kGoodVocab, "#version: 0.2\na b\n\na b</w>\n", "good"), IsOk());
  EXPECT_THAT(CreateWith(kGoodVocab, "#version: 0.2\r\na b\r\n", "crlf"), IsOk());
  EXPECT_THAT(CreateWith(kGoodVocab, "#version: 0.2", "no_merges"), IsOk());
}

TEST(TokenizerFilesTest, MissingFilesAreNotFound) {
  const std::filesystem::path dir = MakeTempDir("missing");
  WriteFile(dir / "vocab.json", kGoodVocab);
  TokenizerOptions options;
  options.vocab_path = dir / "nope.json";
  options.merges_path = dir / "merges.txt";
  EXPECT_THAT(Tokenizer::Create(options), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.json")));
  options.vocab_path = dir / "vocab.json";
  EXPECT_THAT(Tokenizer::Create(options), StatusIs(absl::StatusCode::kNotFound, HasSubstr("merges.txt")));
}

TEST(TokenizerFilesTest, MalformedVocabularyIsRejected) {
  const std::string merges = "#version: 0.2\n";
  EXPECT_THAT(CreateWith("{\"a\": 0,", merges, "json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocab.json")));
  EXPECT_THAT(CreateWith("[1, 2]", merges, "array"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocab.json")));
  EXPECT_THAT(CreateWith(R"({"a": "0", "<|startoftext|>": 1, "<|endoftext|>": 2})", merges, "string_id"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"a\"")));
  EXPECT_THAT(CreateWith(R"({"a": -1, "<|startoftext|>": 1, "<|endoftext|>": 2})", merges, "negative_id"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"a\"")));
  EXPECT_THAT(CreateWith(R"({"a": 1.5, "<|startoftext|>": 1, "<|endoftext|>": 2})", merges, "float_id"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"a\"")));
  EXPECT_THAT(CreateWith(R"({"a": 0, "<|endoftext|>": 2})", merges, "no_sot"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("<|startoftext|>")));
  EXPECT_THAT(CreateWith(R"({"a": 0, "<|startoftext|>": 2})", merges, "no_eot"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("<|endoftext|>")));
}

TEST(TokenizerFilesTest, MalformedMergesAreRejectedWithFileAndLine) {
  EXPECT_THAT(CreateWith(kGoodVocab, "", "empty"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("merges.txt")));
  EXPECT_THAT(CreateWith(kGoodVocab, "a b\n", "no_header"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("merges.txt:1:")));
  EXPECT_THAT(CreateWith(kGoodVocab, "#version: 0.2\na b\na b c\n", "three_fields"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("merges.txt:3:")));
  EXPECT_THAT(CreateWith(kGoodVocab, "#version: 0.2\nab\n", "one_field"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("merges.txt:2:")));
  EXPECT_THAT(
      CreateWith(kGoodVocab, "#version: 0.2\na q\n", "unknown_part"),
      StatusIs(absl::StatusCode::kInvalidArgument, ::testing::AllOf(HasSubstr("merges.txt:2:"), HasSubstr("\"q\""))));
  EXPECT_THAT(
      CreateWith(kGoodVocab, "#version: 0.2\na b\nb a\n", "unknown_result"),
      StatusIs(absl::StatusCode::kInvalidArgument, ::testing::AllOf(HasSubstr("merges.txt:3:"), HasSubstr("\"ba\""))));
}

TEST(TokenizerFilesTest, ContextLengthBelowTwoIsRejected) {
  const TinyModel model = WriteTinyModel("ctx", TinyTokens(), TinyMerges());
  TokenizerOptions options;
  options.vocab_path = model.vocab;
  options.merges_path = model.merges;
  options.context_length = 1;
  EXPECT_THAT(Tokenizer::Create(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("context")));
}

}  // namespace
}  // namespace clipserve::clip
