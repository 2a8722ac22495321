#include "server/runtime/embedding_cache.h"

#include <algorithm>
#include <cstring>

namespace clipserve::runtime {

std::string EmbeddingCache::KeyOf(absl::Span<const int64_t> key) {
  // Trailing padding carries no information; the ids up to the last non-zero one identify the text.
  size_t n = key.size();
  while (n > 0 && key[n - 1] == 0) --n;
  return std::string(reinterpret_cast<const char*>(key.data()), n * sizeof(int64_t));
}

bool EmbeddingCache::Lookup(absl::Span<const int64_t> key, absl::Span<float> out) {
  if (capacity_ == 0) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const std::string k = KeyOf(key);
  absl::MutexLock lock(&mu_);
  auto it = index_.find(k);
  if (it == index_.end() || it->second->value.size() != out.size()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  std::memcpy(out.data(), it->second->value.data(), out.size() * sizeof(float));
  hits_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void EmbeddingCache::Insert(absl::Span<const int64_t> key, absl::Span<const float> value) {
  if (capacity_ == 0) return;
  std::string k = KeyOf(key);
  absl::MutexLock lock(&mu_);
  auto it = index_.find(k);
  if (it != index_.end()) {
    it->second->value.assign(value.begin(), value.end());
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (lru_.size() >= capacity_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(Entry{k, std::vector<float>(value.begin(), value.end())});
  index_.emplace(std::move(k), lru_.begin());
}

size_t EmbeddingCache::size() const {
  absl::MutexLock lock(&mu_);
  return lru_.size();
}

}  // namespace clipserve::runtime
