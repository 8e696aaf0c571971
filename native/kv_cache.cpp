#include "kv_cache.h"

#include <algorithm>

#include "rotating_kv_cache.h"

namespace mlxnode {
namespace {

// Grows `buf` to hold at least `needed` positions: the first `filled` positions are kept and
// whole steps of zeros appended (a trimmed buffer's stale tail is dropped rather than copied).
Array grow(const Array& buf, const Array& like, int filled, int needed) {
  const int have = buf.empty() ? 0 : buf.dim(2);
  if (needed <= have) return buf;
  std::vector<int> shape = like.shape();
  shape[2] = (needed - filled + LayerKVCache::kStep - 1) / LayerKVCache::kStep * LayerKVCache::kStep;
  Array fresh = mx::zeros(shape, like.dtype());
  if (buf.empty()) return fresh;
  return mx::concatenate({have == filled ? buf : mx::slice_axis(buf, 2, 0, filled), fresh}, 2);
}

}  // namespace

void LayerKVCache::update_and_fetch(const Array& keys, const Array& values, Array& all_keys, Array& all_values) {
  const int prev = offset_;
  const int t = keys.dim(2);
  keys_ = grow(keys_, keys, prev, prev + t);
  values_ = grow(values_, values, prev, prev + t);
  offset_ = prev + t;

  std::vector<int> start = {0, 0, prev, 0};
  std::vector<int> kstop = keys.shape(), vstop = values.shape();
  kstop[2] = vstop[2] = offset_;
  // Reassigning the members drops the last reference to the old buffers, which lets MLX
  // update them in place.
  keys_ = mx::slice_update(keys_, keys, start, kstop);
  values_ = mx::slice_update(values_, values, start, vstop);
  all_keys = mx::slice_axis(keys_, 2, 0, offset_);
  all_values = mx::slice_axis(values_, 2, 0, offset_);
}

void LayerKVCache::trim(int n) { offset_ -= std::min(std::max(n, 0), offset_); }

void LayerKVCache::reset() {
  keys_ = Array();
  values_ = Array();
  offset_ = 0;
}

void LayerKVCache::state(std::vector<Array>& out) const {
  if (keys_.empty()) return;
  out.push_back(keys_);
  out.push_back(values_);
}

int64_t LayerKVCache::nbytes() const {
  return keys_.empty() ? 0 : static_cast<int64_t>(keys_.nbytes() + values_.nbytes());
}

std::unique_ptr<LayerCache> make_attention_cache(int sliding_window, int context_size) {
  // A window the context never exceeds keeps every position anyway: the full cache can always be trimmed.
  if (sliding_window > 0 && sliding_window < context_size) return std::make_unique<RotatingKVCache>(sliding_window);
  return std::make_unique<LayerKVCache>();
}

KVCache::KVCache(const KVCache& o) {
  layers_.reserve(o.layers_.size());
  for (const auto& l : o.layers_) layers_.push_back(l->clone());
}

KVCache& KVCache::operator=(const KVCache& o) {
  if (this != &o) *this = KVCache(o);
  return *this;
}

int64_t KVCache::nbytes() const {
  int64_t total = 0;
  for (const auto& l : layers_) total += l->nbytes();
  return total;
}

bool KVCache::can_trim(int n) const {
  for (const auto& l : layers_)
    if (!l->can_trim(n)) return false;
  return true;
}

void KVCache::trim(int n) {
  for (auto& l : layers_) l->trim(n);
}

void KVCache::reset() {
  for (auto& l : layers_) l->reset();
}

std::vector<Array> KVCache::state() const {
  std::vector<Array> out;
  for (const auto& l : layers_) l->state(out);
  return out;
}

static size_t shared_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

size_t reusable_prefix(const KVCache& cache, const std::vector<int32_t>& cached, const std::vector<int32_t>& prompt) {
  size_t n = shared_prefix(cached, prompt);
  if (n == prompt.size() && n > 0) --n;
  return n < cached.size() && !cache.can_trim(static_cast<int>(cached.size() - n)) ? 0 : n;
}

PromptCache::Entry PromptCache::take(const std::vector<int32_t>& prompt) {
  auto best = entries_.end();
  size_t best_len = 0;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const size_t n = reusable_prefix(it->cache, it->tokens, prompt);
    if (n > best_len) best = it, best_len = n;  // strict: the most recent wins a tie
  }
  if (best == entries_.end()) return Entry{make_cache_(), {}};
  if (best_len < best->tokens.size()) return *best;
  Entry taken = std::move(*best);
  entries_.erase(best);
  return taken;
}

void PromptCache::put(Entry entry) {
  if (entry.tokens.empty()) return;
  entries_.remove_if([&](const Entry& e) { return shared_prefix(e.tokens, entry.tokens) == e.tokens.size(); });
  entries_.push_front(std::move(entry));
  int64_t total = bytes();
  while (!entries_.empty() && total > budget_) {
    total -= entries_.back().cache.nbytes();
    entries_.pop_back();
  }
}

int64_t PromptCache::bytes() const {
  int64_t total = 0;
  for (const auto& e : entries_) total += e.cache.nbytes();
  return total;
}

}  // namespace mlxnode
