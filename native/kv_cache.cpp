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

KVCache::KVCache(const KVCache& o) : left_pad_(o.left_pad_) {
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
  left_pad_.clear();
  set_layout();
}

std::vector<Array> KVCache::state() const {
  std::vector<Array> out;
  for (const auto& l : layers_) l->state(out);
  return out;
}

// ---- Batch rows -------------------------------------------------------------------------------

const Array& RowLayout::positions(int offset) const {
  if (positions_at_ != offset) {
    std::vector<int32_t> p(left_pad.size());
    for (size_t b = 0; b < p.size(); ++b) p[b] = offset - left_pad[b];
    positions_ = Array::from_int32(p, {static_cast<int>(p.size())});
    positions_at_ = offset;
  }
  return positions_;
}

const Array& RowLayout::key_mask(int columns) const {
  if (mask_columns_ != columns) {
    const int B = static_cast<int>(left_pad.size());
    std::vector<uint8_t> m(static_cast<size_t>(B) * columns);
    for (int b = 0; b < B; ++b)
      for (int j = left_pad[b]; j < columns; ++j) m[static_cast<size_t>(b) * columns + j] = 1;
    mask_ = Array::from_bool(m, {B, 1, 1, columns});
    mask_columns_ = columns;
  }
  return mask_;
}

namespace {

// [B, H, n, D] zeros shaped like `like` (columns on axis 2), prepended to it.
Array pad_left(const Array& like, int n) {
  if (n == 0) return like;
  std::vector<int> shape = like.shape();
  shape[2] = n;
  return mx::concatenate({mx::zeros(shape, like.dtype()), like}, 2);
}

}  // namespace

bool KVCache::full_kv() const {
  for (const auto& l : layers_)
    if (!dynamic_cast<const LayerKVCache*>(l.get())) return false;
  return true;
}

void KVCache::set_layout() {
  std::shared_ptr<RowLayout> rows;
  if (std::any_of(left_pad_.begin(), left_pad_.end(), [](int p) { return p > 0; })) {
    rows = std::make_shared<RowLayout>();
    rows->left_pad = left_pad_;
  }
  for (int i = 0; i < size(); ++i)
    if (auto* l = dynamic_cast<LayerKVCache*>(layers_[i].get())) l->rows_ = rows;
}

void KVCache::append_row(const KVCache& row) {
  const int have = offset(), add = row.offset();
  if (left_pad_.empty()) {
    layers_.clear();  // the first row sets the layers (a fresh batch has none)
    for (const auto& l : row.layers_) layers_.push_back(l->clone());
    left_pad_ = {0};
    set_layout();
    return;
  }
  const int columns = std::max(have, add);
  for (int i = 0; i < size(); ++i) {
    LayerKVCache& l = layer_as<LayerKVCache>(i);
    const auto& r = dynamic_cast<const LayerKVCache&>(*row.layers_[i]);
    auto join = [&](const Array& batch, const Array& one) {
      return mx::concatenate({pad_left(mx::slice_axis(batch, 2, 0, have), columns - have),
                              pad_left(mx::slice_axis(one, 2, 0, add), columns - add)}, 0);
    };
    l.keys_ = join(l.keys_, r.keys_);
    l.values_ = join(l.values_, r.values_);
    l.offset_ = columns;
  }
  for (int& p : left_pad_) p += columns - have;
  left_pad_.push_back(columns - add);
  set_layout();
}

void KVCache::keep_rows(const std::vector<int>& keep) {
  if (keep.empty()) return reset();
  std::vector<int> pads;
  for (int b : keep) pads.push_back(left_pad_[b]);
  const int drop = *std::min_element(pads.begin(), pads.end());
  const bool all = keep.size() == left_pad_.size();
  const Array index = Array::from_int32(std::vector<int32_t>(keep.begin(), keep.end()), {static_cast<int>(keep.size())});
  for (int i = 0; i < size(); ++i) {
    LayerKVCache& l = layer_as<LayerKVCache>(i);
    if (l.keys_.empty()) continue;
    auto pick = [&](const Array& buf) {
      Array rows = all ? buf : mx::take(buf, index, 0);
      return mx::slice_axis(rows, 2, drop, l.offset_);
    };
    l.keys_ = pick(l.keys_);
    l.values_ = pick(l.values_);
    l.offset_ -= drop;
  }
  for (int& p : pads) p -= drop;
  left_pad_ = std::move(pads);
  set_layout();
}

KVCache KVCache::row(int b) const {
  std::vector<std::unique_ptr<LayerCache>> layers;
  for (const auto& layer : layers_) {
    const auto& l = dynamic_cast<const LayerKVCache&>(*layer);
    auto out = std::make_unique<LayerKVCache>();
    if (!l.keys_.empty()) {
      auto cut = [&](const Array& buf) {
        return mx::contiguous(mx::slice_axis(mx::slice_axis(buf, 0, b, b + 1), 2, left_pad_[b], l.offset_));
      };
      out->keys_ = cut(l.keys_);
      out->values_ = cut(l.values_);
      out->offset_ = l.offset_ - left_pad_[b];
    }
    layers.push_back(std::move(out));
  }
  return KVCache(std::move(layers));
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
