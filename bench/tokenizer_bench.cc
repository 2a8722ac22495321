// Throughput of the CLIP tokenizer: short captions with a warm cache (the serving case; acceptance target
// >= 250,000 captions/s on one thread), without a cache (every word BPE'd), non-ASCII captions, and long texts
// that overflow the 77-token context. The vocabulary comes from $CLIPSERVE_FIXTURES/clip (default: the
// reference fixtures); the benchmarks are skipped when it is missing.
//   build/bin/clipserve_bench --benchmark_filter=Tokenizer
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "server/models/clip/tokenizer.h"

#ifndef CLIPSERVE_DEFAULT_FIXTURES
#define CLIPSERVE_DEFAULT_FIXTURES "../shared/fixtures/reference-a"
#endif

namespace clipserve::clip {
namespace {

std::filesystem::path FixtureDir() {
  if (const char* env = std::getenv("CLIPSERVE_FIXTURES"); env != nullptr && *env != '\0') return env;
  return CLIPSERVE_DEFAULT_FIXTURES;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(size_t cache_capacity) {
  TokenizerOptions options;
  options.vocab_path = FixtureDir() / "clip" / "vocab.json";
  options.merges_path = FixtureDir() / "clip" / "merges.txt";
  options.cache_capacity = cache_capacity;
  return Tokenizer::Create(options);
}

// One tokenizer with the default cache, shared by the warm-cache benchmarks (and their threads).
const absl::StatusOr<std::unique_ptr<Tokenizer>>& SharedTokenizer() {
  static const auto* const tokenizer =
      new absl::StatusOr<std::unique_ptr<Tokenizer>>(MakeTokenizer(TokenizerOptions().cache_capacity));
  return *tokenizer;
}

// 8 x 8 x 8 = 512 captions like "a photo of a small blue star on a black background".
std::vector<std::string> ShortCaptions() {
  const char* const kTemplates[] = {
      "a photo of a {} {} {} on a black background",
      "a close-up photo of the {} {} {}",
      "an oil painting of a {} {} {}",
      "a {} {} {} in the snow",
      "there is a {} {} {} next to the window.",
      "A blurry photo of a {} {} {}",
      "a drawing of a {} {} {} by a child",
      "a {} {} {} sitting on a wooden table",
  };
  const char* const kSizes[] = {"small", "large", "tiny", "huge", "old", "young", "shiny", "dirty"};
  const char* const kColors[] = {"blue", "red", "green", "yellow", "black", "white", "purple", "orange"};
  const char* const kNouns[] = {"star", "cat", "dog", "car", "house", "bird", "tree", "guitar"};
  std::vector<std::string> captions;
  for (int t = 0; t < 8; ++t) {
    for (int s = 0; s < 8; ++s) {
      for (int c = 0; c < 8; ++c) {
        std::string text = kTemplates[t];
        const std::string fill = absl::StrCat(kSizes[s], " ", kColors[c], " ", kNouns[(t + s + c) % 8]);
        text.replace(text.find("{} {} {}"), 8, fill);
        captions.push_back(std::move(text));
      }
    }
  }
  return captions;
}

std::vector<std::string> NonAsciiCaptions() {
  return {"Ελληνικά ΚΕΦΑΛΑΙΑ και μια ΓΑΤΑ",    "東京の猫の写真",   "café naïve résumé Über straße",
          "фотография кота на диване",         "emoji 🐱🐶 party 🎉", "une photo d'un château en été",
          "ein Foto von einem Hund im Schnee", "고양이 사진",      "ΟΔΟΣ προς την θάλασσα"};
}

// ~190 tokens: truncated to 77 when padded.
std::vector<std::string> LongTexts() {
  std::vector<std::string> texts;
  for (int i = 0; i < 16; ++i) {
    std::string text;
    for (int k = 0; k < 12; ++k) {
      absl::StrAppend(&text, "a closeup watercolor portrait of a young teacher of literature number ", i * 12 + k,
                      " with a book, ");
    }
    texts.push_back(std::move(text));
  }
  return texts;
}

// EncodePadded over `texts`, one text per item, after one warm-up pass.
void RunEncodePadded(benchmark::State& state, const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                     Truncation truncation) {
  std::vector<int64_t> out(tokenizer.context_length());
  bool truncated = false;
  for (const std::string& text : texts) {
    if (!tokenizer.EncodePadded(text, Truncation::kTruncate, absl::MakeSpan(out), &truncated).ok()) {
      state.SkipWithError("EncodePadded failed");
      return;
    }
  }
  size_t i = static_cast<size_t>(state.thread_index()) * 7;
  for (auto _ : state) {
    const absl::Status status = tokenizer.EncodePadded(texts[i], truncation, absl::MakeSpan(out), &truncated);
    benchmark::DoNotOptimize(status.ok());
    benchmark::DoNotOptimize(out.data());
    if (++i == texts.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Tokenizer_ShortCaptions_WarmCache(benchmark::State& state) {
  const auto& tokenizer = SharedTokenizer();
  if (!tokenizer.ok()) {
    state.SkipWithError(tokenizer.status().ToString().c_str());
    return;
  }
  RunEncodePadded(state, **tokenizer, ShortCaptions(), Truncation::kTruncate);
}
BENCHMARK(BM_Tokenizer_ShortCaptions_WarmCache)->Threads(1)->Threads(2)->UseRealTime();

// Tokenize(): the same work plus a returned vector.
void BM_Tokenizer_ShortCaptions_WarmCache_Tokenize(benchmark::State& state) {
  const auto& tokenizer = SharedTokenizer();
  if (!tokenizer.ok()) {
    state.SkipWithError(tokenizer.status().ToString().c_str());
    return;
  }
  const std::vector<std::string> texts = ShortCaptions();
  size_t i = 0;
  for (auto _ : state) {
    auto tokenized = (*tokenizer)->Tokenize(texts[i]);
    benchmark::DoNotOptimize(tokenized);
    if (++i == texts.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Tokenizer_ShortCaptions_WarmCache_Tokenize);

// No cache: every word goes through BPE (the cost of a caption made of words never seen before).
void BM_Tokenizer_ShortCaptions_ColdCache(benchmark::State& state) {
  const auto tokenizer = MakeTokenizer(/*cache_capacity=*/0);
  if (!tokenizer.ok()) {
    state.SkipWithError(tokenizer.status().ToString().c_str());
    return;
  }
  RunEncodePadded(state, **tokenizer, ShortCaptions(), Truncation::kTruncate);
}
BENCHMARK(BM_Tokenizer_ShortCaptions_ColdCache)->Threads(1)->Threads(2)->UseRealTime();

void BM_Tokenizer_NonAsciiCaptions_WarmCache(benchmark::State& state) {
  const auto& tokenizer = SharedTokenizer();
  if (!tokenizer.ok()) {
    state.SkipWithError(tokenizer.status().ToString().c_str());
    return;
  }
  RunEncodePadded(state, **tokenizer, NonAsciiCaptions(), Truncation::kTruncate);
}
BENCHMARK(BM_Tokenizer_NonAsciiCaptions_WarmCache);

// Long texts, cut to the context: truncation stops tokenising once the context is full.
void BM_Tokenizer_LongText_Truncate(benchmark::State& state) {
  const auto& tokenizer = SharedTokenizer();
  if (!tokenizer.ok()) {
    state.SkipWithError(tokenizer.status().ToString().c_str());
    return;
  }
  RunEncodePadded(state, **tokenizer, LongTexts(), Truncation::kTruncate);
}
BENCHMARK(BM_Tokenizer_LongText_Truncate);

// Long texts tokenised in full (what Tokenize() and kReject do to count the tokens).
void BM_Tokenizer_LongText_Full(benchmark::State& state) {
  const auto& tokenizer = SharedTokenizer();
  if (!tokenizer.ok()) {
    state.SkipWithError(tokenizer.status().ToString().c_str());
    return;
  }
  const std::vector<std::string> texts = LongTexts();
  size_t i = 0;
  int64_t tokens = 0;
  for (auto _ : state) {
    auto tokenized = (*tokenizer)->Tokenize(texts[i]);
    if (tokenized.ok()) tokens += static_cast<int64_t>(tokenized->ids.size());
    benchmark::DoNotOptimize(tokenized);
    if (++i == texts.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["tokens_per_second"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Tokenizer_LongText_Full);

}  // namespace
}  // namespace clipserve::clip
