#include "tools/bpe/bpe_trainer.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/models/clip/tokenizer.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/status_matchers.h"

namespace clipserve::bpe {
namespace {

namespace fs = std::filesystem;
using ::clipserve::testing::IsOk;
using ::clipserve::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

MATCHER_P(IsOkAndHolds, matcher, "is OK and holds a matching value") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(matcher, *arg, result_listener);
}

fs::path MakeTempDir(const std::string& name) { return ::clipserve::testing::ScratchDir(name); }

void WriteFile(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A word as the single token it merges into when BPE joins all of it: mapped bytes, then "</w>".
std::string WordToken(std::string_view word) {
  const std::array<std::string, 256> symbols = ByteSymbols();
  std::string token;
  for (const char c : word) token += symbols[static_cast<unsigned char>(c)];
  return token + "</w>";
}

using Merge = std::pair<std::string, std::string>;

int32_t IdOf(const BpeVocabulary& vocab, const std::string& token) {
  const auto it = std::find(vocab.tokens.begin(), vocab.tokens.end(), token);
  return it == vocab.tokens.end() ? -1 : static_cast<int32_t>(it - vocab.tokens.begin());
}

bool HasMerge(const BpeVocabulary& vocab, const std::string& left, const std::string& right) {
  return std::find(vocab.merges.begin(), vocab.merges.end(), std::pair(left, right)) != vocab.merges.end();
}

absl::StatusOr<BpeVocabulary> TrainOn(const std::vector<std::string>& texts, int vocab_size,
                                      int64_t min_frequency = 2) {
  BpeTrainerOptions options;
  options.vocab_size = vocab_size;
  options.min_frequency = min_frequency;
  auto trainer = BpeTrainer::Create(options);
  if (!trainer.ok()) return trainer.status();
  for (const std::string& text : texts) {
    if (absl::Status s = (*trainer)->AddText(text); !s.ok()) return s;
  }
  return (*trainer)->Train();
}

// Writes `vocab` to a fresh directory and loads it with the CLIP tokenizer.
absl::StatusOr<std::unique_ptr<clip::Tokenizer>> Load(const BpeVocabulary& vocab, const std::string& name) {
  const fs::path dir = MakeTempDir(name);
  if (absl::Status s = WriteBpeVocabulary(vocab, dir); !s.ok()) return s;
  clip::TokenizerOptions options;
  options.vocab_path = dir / "vocab.json";
  options.merges_path = dir / "merges.txt";
  options.context_length = 77;
  return clip::Tokenizer::Create(options);
}

// A caption corpus in the style of the shapes world.
std::vector<std::string> ShapesCorpus() {
  const std::vector<std::string> colours = {"red", "orange", "yellow", "green", "blue", "purple", "white", "black"};
  const std::vector<std::string> shapes = {"circle", "square", "triangle", "star", "cross", "heart", "ring"};
  const std::vector<std::string> templates = {"a {c} {s}", "a photo of a {c} {s}",
                                              "a small {c} {s} on a black background", "a big {c} {s} in the top left"};
  std::vector<std::string> corpus;
  for (const std::string& t : templates) {
    for (const std::string& c : colours) {
      for (const std::string& s : shapes) {
        std::string text = t;
        text.replace(text.find("{c}"), 3, c);
        text.replace(text.find("{s}"), 3, s);
        corpus.push_back(text);
      }
    }
  }
  return corpus;
}

std::string Joined(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += w + " ";
  return out;
}

TEST(BpeTrainer, ByteSymbolsMatchOpenAiDefinition) {
  // bytes_to_unicode() as written in OpenAI's simple_tokenizer.py.
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  const std::array<char32_t, 256> table = BytesToUnicode();
  for (size_t i = 0; i < bs.size(); ++i) EXPECT_EQ(table[bs[i]], static_cast<char32_t>(cs[i])) << "byte " << bs[i];

  // The vocabulary starts with `list(bytes_to_unicode().values())`, then the same with "</w>".
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn({}, 514));
  ASSERT_EQ(vocab.tokens.size(), 514u);
  const std::array<std::string, 256> symbols = ByteSymbols();
  for (size_t i = 0; i < 256; ++i) {
    EXPECT_EQ(vocab.tokens[i], symbols[bs[i]]) << i;
    EXPECT_EQ(vocab.tokens[256 + i], symbols[bs[i]] + "</w>") << i;
  }
  EXPECT_EQ(vocab.tokens[0], "!");
  EXPECT_EQ(vocab.tokens[255], "\xC5\x83");  // U+0143: the last of the 68 remapped bytes
  EXPECT_EQ(vocab.tokens[512], "<|startoftext|>");
  EXPECT_EQ(vocab.tokens[513], "<|endoftext|>");
}

TEST(BpeTrainer, BaseTokensHaveTheIdsOfOpenAisVocabulary) {
  CLIPSERVE_REQUIRE_FIXTURES();
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const nlohmann::json reference,
                                 ReadJsonFile(::clipserve::testing::FixtureDir() / "clip" / "vocab.json"));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn({}, 514));
  for (int id = 0; id < 512; ++id) {
    ASSERT_TRUE(reference.contains(vocab.tokens[id])) << id;
    EXPECT_EQ(reference[vocab.tokens[id]].get<int>(), id) << vocab.tokens[id];
  }
}

TEST(BpeTrainer, ByteSymbolsRoundTripThroughTokenizer) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn({}, 514));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "bytes"));
  const std::array<std::string, 256> symbols = ByteSymbols();
  const auto id = [&](int byte) { return IdOf(vocab, symbols[byte]); };
  const auto eow_id = [&](int byte) { return IdOf(vocab, symbols[byte] + "</w>"); };

  // Decoding maps each symbol back to its byte, in every valid UTF-8 position.
  for (int b = 0; b < 0x80; ++b) {
    EXPECT_EQ(tokenizer->Decode({id(b)}), std::string(1, static_cast<char>(b))) << b;
    EXPECT_EQ(tokenizer->Decode({eow_id(b)}), std::string(1, static_cast<char>(b)) + " ") << b;
  }
  for (int b = 0x80; b <= 0xBF; ++b) {  // continuation bytes
    const std::string text = {'\xC2', static_cast<char>(b)};
    EXPECT_EQ(tokenizer->Decode({id(0xC2), id(b)}), text) << b;
    EXPECT_EQ(tokenizer->Decode({id(0xC2), eow_id(b)}), text + " ") << b;
  }
  for (int b = 0xC2; b <= 0xF4; ++b) {  // lead bytes
    std::string text(1, static_cast<char>(b));
    std::vector<int32_t> ids = {id(b)};
    const int continuation = b < 0xE0 ? 1 : b < 0xF0 ? 2 : 3;
    for (int k = 0; k < continuation; ++k) {
      const int c = (k == 0 && b == 0xE0) ? 0xA0 : (k == 0 && b == 0xF0) ? 0x90 : 0x80;
      text += static_cast<char>(c);
      ids.push_back(id(c));
    }
    EXPECT_EQ(tokenizer->Decode(ids), text) << b;
  }
  // Bytes that never occur in UTF-8 still have symbols of their own (decoded as U+FFFD).
  for (int b : {0xC0, 0xC1, 0xF5, 0xFF}) EXPECT_EQ(tokenizer->Decode({eow_id(b)}), "\xEF\xBF\xBD ") << b;

  // Encoding without merges gives the byte symbols, the last with "</w>".
  EXPECT_THAT(tokenizer->Encode("a"), IsOkAndHolds(ElementsAre(eow_id('a'))));
  EXPECT_THAT(tokenizer->Encode("\xC3\xA9"), IsOkAndHolds(ElementsAre(id(0xC3), eow_id(0xA9))));  // é
  EXPECT_THAT(tokenizer->Encode("\xE6\x9D\xB1"),                                                  // 東
              IsOkAndHolds(ElementsAre(id(0xE6), id(0x9D), eow_id(0xB1))));
}

TEST(BpeTrainer, FrequentWordsBecomeOneToken) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn(ShapesCorpus(), 2000));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "frequent"));
  for (const std::string word : {"a", "photo", "of", "red", "triangle", "background"}) {
    const int32_t id = IdOf(vocab, WordToken(word));
    ASSERT_GE(id, word.size() == 1 ? 256 : 512) << word;
    EXPECT_THAT(tokenizer->Encode(word), IsOkAndHolds(ElementsAre(id))) << word;
  }
  EXPECT_THAT(tokenizer->Encode("A Photo of a RED triangle"),
              IsOkAndHolds(ElementsAre(IdOf(vocab, "a</w>"), IdOf(vocab, WordToken("photo")),
                                       IdOf(vocab, WordToken("of")), IdOf(vocab, "a</w>"),
                                       IdOf(vocab, WordToken("red")), IdOf(vocab, WordToken("triangle")))));
  // With SOT/EOT and padding, as the text tower sees it.
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const clip::TokenizedText tokenized, tokenizer->Tokenize("a red star"));
  EXPECT_THAT(tokenized.ids, ElementsAre(tokenizer->sot_id(), IdOf(vocab, "a</w>"), IdOf(vocab, WordToken("red")),
                                         IdOf(vocab, WordToken("star")), tokenizer->eot_id()));
}

TEST(BpeTrainer, TokenizerReproducesTrainingForEveryCorpusWord) {
  // Merges stop halfway, so most words end up in several pieces.
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn(ShapesCorpus(), 560));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "pieces"));
  for (const std::string& text : ShapesCorpus()) {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids, tokenizer->Encode(text));
    for (const int32_t id : ids) ASSERT_TRUE(id >= 0 && id < 558) << text;
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<std::string> words, clip::SplitWords(text));
    EXPECT_EQ(tokenizer->Decode(ids), Joined(words));
  }
}

TEST(BpeTrainer, DecodeOfEncodeGivesTheCleanedWords) {
  std::vector<std::string> corpus = ShapesCorpus();
  corpus.push_back("Un café à Tōkyō: 東京の赤い円!");
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn(corpus, 1000, 1));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "decode"));
  for (const std::string text :
       {"a red circle", "  A  BIG blue   heart, in the top-left!  ", "Un café à Tōkyō: 東京の赤い円!",
        "unseen words: zebra quokka 42 Ωmega ß 日本", "it's &amp; they're"}) {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids, tokenizer->Encode(text));
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<std::string> words, clip::SplitWords(text));
    EXPECT_EQ(tokenizer->Decode(ids), Joined(words)) << text;
  }
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::string cleaned, clip::CleanText("  A  BIG blue   heart  "));
  EXPECT_THAT(tokenizer->Encode("  A  BIG blue   heart  "), IsOkAndHolds(::testing::SizeIs(4)));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids, tokenizer->Encode(cleaned));
  EXPECT_EQ(tokenizer->Decode(ids), cleaned + " ");
}

TEST(BpeTrainer, VocabularySizeIsExactAndSpecialTokensAreLast) {
  // The corpus supports 82 merges (596 tokens); ask for fewer.
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn(ShapesCorpus(), 580));
  EXPECT_EQ(vocab.tokens.size(), 580u);
  EXPECT_EQ(vocab.merges.size(), 580u - 514u);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "size"));
  EXPECT_EQ(tokenizer->vocab_size(), 580u);
  EXPECT_EQ(tokenizer->sot_id(), 578);
  EXPECT_EQ(tokenizer->eot_id(), 579);
  // One entry per merge, in merge order.
  for (size_t k = 0; k < vocab.merges.size(); ++k) {
    EXPECT_EQ(vocab.tokens[512 + k], vocab.merges[k].first + vocab.merges[k].second) << k;
  }
}

TEST(BpeTrainer, StopsEarlyWhenNoPairIsFrequentEnough) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn(ShapesCorpus(), 49408));
  EXPECT_LT(vocab.tokens.size(), 49408u);
  EXPECT_EQ(vocab.tokens.size(), 514u + vocab.merges.size());
  EXPECT_GE(vocab.last_merge_frequency, 2);
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "early"));
  EXPECT_EQ(tokenizer->eot_id(), static_cast<int32_t>(vocab.tokens.size()) - 1);
}

TEST(BpeTrainer, PairsBelowMinFrequencyAreNotLearned) {
  std::vector<std::string> corpus(5, "zebra zebra");
  corpus.push_back("qx");  // "q x</w>" occurs once
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary twice, TrainOn(corpus, 1000, 2));
  // All four pairs of "zebra" occur 10 times; ties go to the smallest pair: b r, br a</w>, e bra</w>, z ebra</w>.
  EXPECT_THAT(twice.merges,
              ElementsAre(Merge("b", "r"), Merge("br", "a</w>"), Merge("e", "bra</w>"), Merge("z", "ebra</w>")));
  EXPECT_EQ(IdOf(twice, WordToken("zebra")), 512 + 3);
  EXPECT_FALSE(HasMerge(twice, "q", "x</w>"));
  EXPECT_EQ(twice.last_merge_frequency, 10);

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary ten, TrainOn(corpus, 1000, 11));
  EXPECT_TRUE(ten.merges.empty());

  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary once, TrainOn(corpus, 1000, 1));
  EXPECT_TRUE(HasMerge(once, "q", "x</w>"));
  EXPECT_EQ(once.merges.back(), Merge("q", "x</w>"));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(twice, "minfreq"));
  EXPECT_THAT(tokenizer->Encode("qx"), IsOkAndHolds(ElementsAre(IdOf(twice, "q"), IdOf(twice, "x</w>"))));
}

TEST(BpeTrainer, TiesGoToTheLexicographicallySmallestPair) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn({"cd ab", "ab cd", "xy"}, 516, 1));
  ASSERT_EQ(vocab.merges.size(), 2u);
  EXPECT_EQ(vocab.merges[0], Merge("a", "b</w>"));
  EXPECT_EQ(vocab.merges[1], Merge("c", "d</w>"));
}

TEST(BpeTrainer, RepeatedSymbolsMergeLeftToRight) {
  // "aaaaa": (a,a) twice per word after a left-to-right merge, not four times.
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn({"aaaaa", "aaaaa", "aaaaa"}, 520, 1));
  ASSERT_GE(vocab.merges.size(), 1u);
  EXPECT_EQ(vocab.merges[0], Merge("a", "a"));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "repeat"));
  EXPECT_THAT(tokenizer->Encode("aaaaa"), IsOkAndHolds(ElementsAre(IdOf(vocab, WordToken("aaaaa")))));
}

TEST(BpeTrainer, UnicodeWordsAreMergedAndUnseenOnesFallBackToBytes) {
  std::vector<std::string> corpus;
  for (int i = 0; i < 20; ++i) corpus.push_back("Café 東京 café");
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn(corpus, 1000));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "unicode"));
  EXPECT_THAT(tokenizer->Encode("CAFÉ"),  // lowercased by the tokenizer, as in training
              IsOkAndHolds(ElementsAre(IdOf(vocab, WordToken("café")))));
  EXPECT_THAT(tokenizer->Encode("東京"), IsOkAndHolds(ElementsAre(IdOf(vocab, WordToken("東京")))));
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids, tokenizer->Encode("日本 ß"));
  EXPECT_EQ(ids.size(), 6u + 2u);  // byte symbols only
  for (const int32_t id : ids) EXPECT_LT(id, 512);
  EXPECT_EQ(tokenizer->Decode(ids), "日本 ß ");
}

TEST(BpeTrainer, SpecialTokensInTheCorpusAreNotCounted) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto trainer, BpeTrainer::Create({}));
  ASSERT_THAT(trainer->AddText("<|startoftext|>a red star<|endoftext|>"), IsOk());
  EXPECT_EQ(trainer->stats().words, 3);
  EXPECT_EQ(trainer->stats().distinct_words, 3u);
  EXPECT_EQ(trainer->stats().texts, 1);
}

TEST(BpeTrainer, TrainingIsDeterministic) {
  std::vector<std::string> corpus = ShapesCorpus();
  corpus.push_back("Un café à Tōkyō: 東京の赤い円!");
  const fs::path dirs[2] = {MakeTempDir("det_a"), MakeTempDir("det_b")};
  for (int run = 0; run < 2; ++run) {
    std::vector<std::string> texts = corpus;
    if (run == 1) std::shuffle(texts.begin(), texts.end(), std::mt19937(7));  // order does not matter either
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn(texts, 700, 1));
    ASSERT_THAT(WriteBpeVocabulary(vocab, dirs[run]), IsOk());
  }
  for (const char* name : {"vocab.json", "merges.txt"}) {
    const std::string a = ReadFile(dirs[0] / name);
    EXPECT_FALSE(a.empty());
    EXPECT_EQ(a, ReadFile(dirs[1] / name)) << name;
  }
  EXPECT_EQ(ReadFile(dirs[0] / "merges.txt").substr(0, 14), "#version: 0.2\n");
}

// Reference trainer: recounts every pair before each merge (same tie-break and duplicate rule).
std::vector<std::pair<std::string, std::string>> NaiveMerges(const std::map<std::string, int64_t>& word_counts,
                                                             size_t max_merges, int64_t min_frequency) {
  const std::array<std::string, 256> symbols = ByteSymbols();
  std::vector<std::pair<std::vector<std::string>, int64_t>> words;
  std::set<std::string> tokens;
  for (const std::string& s : symbols) {
    tokens.insert(s);
    tokens.insert(s + "</w>");
  }
  for (const auto& [text, count] : word_counts) {
    std::vector<std::string> w;
    for (const char c : text) w.push_back(symbols[static_cast<unsigned char>(c)]);
    w.back() += "</w>";
    words.emplace_back(w, count);
  }
  std::vector<std::pair<std::string, std::string>> merges;
  std::set<std::pair<std::string, std::string>> banned;
  while (merges.size() < max_merges) {
    std::map<std::pair<std::string, std::string>, int64_t> counts;
    for (const auto& [w, count] : words) {
      for (size_t i = 0; i + 1 < w.size(); ++i) counts[{w[i], w[i + 1]}] += count;
    }
    const std::pair<std::string, std::string>* best = nullptr;
    int64_t best_count = 0;
    for (const auto& [pair, count] : counts) {  // map order: lexicographic, so the first maximum wins ties
      if (banned.count(pair) == 0 && count > best_count) {
        best = &pair;
        best_count = count;
      }
    }
    if (best == nullptr || best_count < min_frequency) break;
    const std::pair<std::string, std::string> pair = *best;
    if (!tokens.insert(pair.first + pair.second).second) {
      banned.insert(pair);
      continue;
    }
    merges.push_back(pair);
    for (auto& [w, count] : words) {
      std::vector<std::string> merged;
      for (size_t i = 0; i < w.size();) {
        if (i + 1 < w.size() && w[i] == pair.first && w[i + 1] == pair.second) {
          merged.push_back(pair.first + pair.second);
          i += 2;
        } else {
          merged.push_back(w[i++]);
        }
      }
      w = std::move(merged);
    }
  }
  return merges;
}

TEST(BpeTrainer, MatchesANaiveTrainerOnRandomWords) {
  // A small alphabet gives many overlapping and repeated pairs, and merged strings that collide.
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> length(1, 9), letter(0, 2), repeat(1, 5);
  std::vector<std::string> corpus;
  std::map<std::string, int64_t> word_counts;
  for (int i = 0; i < 400; ++i) {
    std::string word;
    const int n = length(rng);
    for (int k = 0; k < n; ++k) word += static_cast<char>('a' + letter(rng));
    const int r = repeat(rng);
    for (int k = 0; k < r; ++k) corpus.push_back(word);
    word_counts[word] += r;
  }
  for (const int64_t min_frequency : {1, 3}) {
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const BpeVocabulary vocab, TrainOn(corpus, 514 + 120, min_frequency));
    EXPECT_EQ(vocab.merges, NaiveMerges(word_counts, 120, min_frequency)) << min_frequency;
    EXPECT_GT(vocab.merges.size(), 20u);
    EXPECT_EQ(vocab.tokens.size(), 514u + vocab.merges.size());
    CLIPSERVE_ASSERT_OK_AND_ASSIGN(const auto tokenizer, Load(vocab, "naive"));
    for (const auto& [word, count] : word_counts) {
      CLIPSERVE_ASSERT_OK_AND_ASSIGN(const std::vector<int32_t> ids, tokenizer->Encode(word));
      EXPECT_EQ(tokenizer->Decode(ids), word + " ");
    }
  }
}

TEST(BpeTrainer, CreateRejectsBadOptions) {
  BpeTrainerOptions options;
  options.vocab_size = 513;
  EXPECT_THAT(BpeTrainer::Create(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("514")));
  options.vocab_size = 514;
  options.min_frequency = 0;
  EXPECT_THAT(BpeTrainer::Create(options), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("min_frequency")));
}

TEST(BpeTrainer, CorpusFileErrorsAreClear) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto trainer, BpeTrainer::Create({}));
  const fs::path dir = MakeTempDir("corpus");
  EXPECT_THAT(trainer->AddCorpusFile(dir / "missing.txt"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.txt")));
  EXPECT_THAT(trainer->AddCorpusFile(dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a regular file")));
  WriteFile(dir / "bad.txt", "a red circle\r\nbad \xFF byte\n");
  EXPECT_THAT(trainer->AddCorpusFile(dir / "bad.txt"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad.txt:2: text is not valid UTF-8")));
}

TEST(BpeTrainer, CorpusFileIsOneTextPerLine) {
  const fs::path dir = MakeTempDir("lines");
  WriteFile(dir / "corpus.txt", "a red circle\r\n\na blue star\nno newline at the end");
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(auto trainer, BpeTrainer::Create({}));
  ASSERT_THAT(trainer->AddCorpusFile(dir / "corpus.txt"), IsOk());
  EXPECT_EQ(trainer->stats().texts, 3);
  EXPECT_EQ(trainer->stats().words, 11);
  EXPECT_EQ(trainer->stats().distinct_words, 10u);  // "a" twice
}

TEST(BpeTrainer, WriteRefusesAnInconsistentVocabulary) {
  CLIPSERVE_ASSERT_OK_AND_ASSIGN(BpeVocabulary vocab, TrainOn({"ab ab"}, 600));
  vocab.tokens.pop_back();
  EXPECT_THAT(WriteBpeVocabulary(vocab, MakeTempDir("bad_write")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected")));
}

}  // namespace
}  // namespace clipserve::bpe
