#include "server/runtime/embedding_cache.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace clipserve::runtime {
namespace {

using ::testing::ElementsAre;

TEST(EmbeddingCache, MissThenHit) {
  EmbeddingCache cache(4);
  std::vector<float> out(2);
  const std::vector<int64_t> key = {49406, 320, 49407, 0, 0};
  EXPECT_FALSE(cache.Lookup(key, absl::MakeSpan(out)));
  cache.Insert(key, std::vector<float>{1.5f, -2.0f});
  EXPECT_TRUE(cache.Lookup(key, absl::MakeSpan(out)));
  EXPECT_THAT(out, ElementsAre(1.5f, -2.0f));
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 1u);
}

TEST(EmbeddingCache, PaddingDoesNotChangeTheKey) {
  EmbeddingCache cache(4);
  cache.Insert(std::vector<int64_t>{5, 6, 0, 0}, std::vector<float>{1.0f});
  std::vector<float> out(1);
  EXPECT_TRUE(cache.Lookup(std::vector<int64_t>{5, 6}, absl::MakeSpan(out)));
  EXPECT_FALSE(cache.Lookup(std::vector<int64_t>{5, 7}, absl::MakeSpan(out)));
}

TEST(EmbeddingCache, EvictsLeastRecentlyUsed) {
  EmbeddingCache cache(2);
  std::vector<float> out(1);
  cache.Insert(std::vector<int64_t>{1}, std::vector<float>{1});
  cache.Insert(std::vector<int64_t>{2}, std::vector<float>{2});
  ASSERT_TRUE(cache.Lookup(std::vector<int64_t>{1}, absl::MakeSpan(out)));  // 1 is now the most recent
  cache.Insert(std::vector<int64_t>{3}, std::vector<float>{3});              // evicts 2
  EXPECT_TRUE(cache.Lookup(std::vector<int64_t>{1}, absl::MakeSpan(out)));
  EXPECT_FALSE(cache.Lookup(std::vector<int64_t>{2}, absl::MakeSpan(out)));
  EXPECT_TRUE(cache.Lookup(std::vector<int64_t>{3}, absl::MakeSpan(out)));
  EXPECT_EQ(cache.size(), 2u);
}

TEST(EmbeddingCache, ZeroCapacityDisables) {
  EmbeddingCache cache(0);
  std::vector<float> out(1);
  cache.Insert(std::vector<int64_t>{1}, std::vector<float>{1});
  EXPECT_FALSE(cache.Lookup(std::vector<int64_t>{1}, absl::MakeSpan(out)));
  EXPECT_EQ(cache.size(), 0u);
}

TEST(EmbeddingCache, ConcurrentUseStaysConsistent) {
  EmbeddingCache cache(16);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> out(1);
      for (int i = 0; i < 5000; ++i) {
        const int64_t k = (i * 7 + t) % 40;
        if (cache.Lookup(std::vector<int64_t>{k + 1}, absl::MakeSpan(out))) {
          if (out[0] != static_cast<float>(k)) ++wrong;
        } else {
          cache.Insert(std::vector<int64_t>{k + 1}, std::vector<float>{static_cast<float>(k)});
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(cache.size(), 16u);
  EXPECT_EQ(cache.hits() + cache.misses(), 20000u);
}

}  // namespace
}  // namespace clipserve::runtime
