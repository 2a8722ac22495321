// A bounded LRU cache of embeddings keyed by a model's input (for texts: the token ids, i.e. the text as the
// model sees it after normalisation), so that the prompts zero-shot classification sends again and again are
// computed once. Thread-safe: every method may be called from any thread; each takes one short mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace clipserve::runtime {

class EmbeddingCache {
 public:
  // capacity 0 disables the cache (Lookup always misses, Insert does nothing).
  explicit EmbeddingCache(size_t capacity) : capacity_(capacity) {}

  // Copies the embedding for `key` into `out` (which must have the stored size) and returns true on a hit.
  bool Lookup(absl::Span<const int64_t> key, absl::Span<float> out);
  void Insert(absl::Span<const int64_t> key, absl::Span<const float> value);

  size_t capacity() const { return capacity_; }
  size_t size() const;
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::string key;
    std::vector<float> value;
  };
  static std::string KeyOf(absl::Span<const int64_t> key);

  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // most recent first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
};

}  // namespace clipserve::runtime
