#include "kv_cache.h"

#include <algorithm>

#include "recurrent_cache.h"
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

LayerKVCache::LayerKVCache(Array keys, Array values, int offset, int window, int held)
    : keys_(std::move(keys)), values_(std::move(values)), offset_(offset), window_(window) {
  first_ = offset - (held >= 0 ? held : keys_.empty() ? 0 : keys_.dim(2));
}

void LayerKVCache::update_and_fetch(const Array& keys, const Array& values, Array& all_keys, Array& all_values) {
  const int t = keys.dim(2);
  // A window layer's first new query sees the window - 1 columns before it: older ones go, a
  // step at a time so the copy is rare.
  if (window_ > 0 && held() > window_ - 1 + kStep) drop_before(offset_ - (window_ - 1));
  const int prev = held();
  keys_ = grow(keys_, keys, prev, prev + t);
  values_ = grow(values_, values, prev, prev + t);
  offset_ += t;

  std::vector<int> start = {0, 0, prev, 0};
  std::vector<int> kstop = keys.shape(), vstop = values.shape();
  kstop[2] = vstop[2] = prev + t;
  // Reassigning the members drops the last reference to the old buffers, which lets MLX
  // update them in place.
  keys_ = mx::slice_update(keys_, keys, start, kstop);
  values_ = mx::slice_update(values_, values, start, vstop);
  // A single query of a window layer reads only its window; several read every kept column, which
  // the caller masks to the window (cached_attention).
  const int from = window_ > 0 && t == 1 ? std::max(0, held() - window_) : 0;
  all_keys = mx::slice_axis(keys_, 2, from, held());
  all_values = mx::slice_axis(values_, 2, from, held());
}

void LayerKVCache::drop_before(int column) {
  const int drop = column - first_;
  if (drop <= 0) return;
  keys_ = mx::slice_axis(keys_, 2, drop, keys_.dim(2));
  values_ = mx::slice_axis(values_, 2, drop, values_.dim(2));
  first_ = column;
}

void LayerKVCache::trim(int n) { offset_ -= std::min(std::max(n, 0), held()); }

void LayerKVCache::reset() {
  keys_ = Array();
  values_ = Array();
  offset_ = first_ = 0;
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

const Array& RowLayout::key_mask(int start, int end) const {
  for (const Mask& m : masks_)
    if (m.start == start && m.end == end) return m.mask;
  const int B = static_cast<int>(left_pad.size()), columns = end - start;
  std::vector<uint8_t> bits(static_cast<size_t>(B) * columns);
  for (int b = 0; b < B; ++b)
    for (int j = std::max(left_pad[b], start); j < end; ++j) bits[static_cast<size_t>(b) * columns + (j - start)] = 1;
  Mask& slot = masks_[next_mask_];
  next_mask_ = 1 - next_mask_;
  slot = Mask{Array::from_bool(bits, {B, 1, 1, columns}), start, end};
  return slot.mask;
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

bool KVCache::batchable() const {
  for (const auto& l : layers_)
    if (!dynamic_cast<const AttentionCache*>(l.get()) && !dynamic_cast<const RecurrentCache*>(l.get())) return false;
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

const RowLayout* KVCache::rows() const {
  // Every attention layer of a padded batch is a LayerKVCache holding the same layout.
  for (const auto& l : layers_)
    if (const auto* a = dynamic_cast<const AttentionCache*>(l.get())) return a->rows();
  return nullptr;
}

namespace {

// A single sequence's attention layer as batch columns: a rotating window as the positions it
// keeps, in order.
LayerKVCache as_columns(const LayerCache& layer) {
  if (const auto* l = dynamic_cast<const LayerKVCache*>(&layer)) return *l;
  if (const auto* r = dynamic_cast<const RotatingKVCache*>(&layer)) {
    Array keys, values;
    r->ordered(keys, values);
    return LayerKVCache(keys, values, r->offset(), r->window());
  }
  throw std::logic_error("a batch row's layer must be an attention or recurrent cache (Model::can_batch)");
}

// A layer of a batch of two or more rows: attention as columns, a recurrent state as it is.
std::unique_ptr<LayerCache> batch_kind(const LayerCache& layer) {
  if (dynamic_cast<const RecurrentCache*>(&layer)) return layer.clone();
  return std::make_unique<LayerKVCache>(as_columns(layer));
}

// Rows `index` (axis 0) of a batched array (keys, values, a conv window or a state).
Array rows_of(const Array& a, const Array& index) { return a.empty() ? a : mx::take(a, index, 0); }
Array concat_rows(const Array& a, const Array& b) { return mx::concatenate({a, b}, 0); }

}  // namespace

void KVCache::append_row(const KVCache& row) {
  if (left_pad_.empty()) {
    // The first row keeps its layers' own kinds: one row decodes as a single sequence.
    layers_.clear();
    for (const auto& l : row.layers_) layers_.push_back(l->clone());
    left_pad_ = {0};
    set_layout();
    return;
  }
  if (left_pad_.size() == 1)  // a second row: every attention layer becomes columns
    for (auto& l : layers_) l = batch_kind(*l);
  const int have = offset(), add = row.offset();
  const int columns = std::max(have, add);
  for (int i = 0; i < row.size(); ++i) {
    if (auto* r = dynamic_cast<RecurrentCache*>(layers_[i].get())) {
      const auto& other = dynamic_cast<const RecurrentCache&>(*row.layers_[i]);
      r->set(concat_rows(r->conv(), other.conv()), concat_rows(r->recurrent_state(), other.recurrent_state()), columns);
      continue;
    }
    LayerKVCache one = as_columns(*row.layers_[i]);
    LayerKVCache& l = layer_as<LayerKVCache>(i);
    // Both sides' kept columns, shifted so the write columns line up, from the older start
    // (F); what a side lacks in [F, columns) is zeros: its left padding (masked) or columns
    // older than its window (never read).
    const int shift_b = columns - have, shift_r = columns - add;
    const int from = std::min(l.first_ + shift_b, one.first_ + shift_r);
    auto side = [&](const Array& buf, int first, int held, int shift) {
      return pad_left(mx::slice_axis(buf, 2, 0, held), first + shift - from);
    };
    auto join = [&](const Array& batch, const Array& other) {
      return mx::concatenate({side(batch, l.first_, l.held(), shift_b), side(other, one.first_, one.held(), shift_r)}, 0);
    };
    l.keys_ = join(l.keys_, one.keys_);
    l.values_ = join(l.values_, one.values_);
    l.offset_ = columns;
    l.first_ = from;
  }
  for (int& p : left_pad_) p += columns - have;
  left_pad_.push_back(columns - add);
  set_layout();
}

void KVCache::keep_rows(const std::vector<int>& keep) {
  if (keep.empty()) return reset();
  if (keep.size() == 1) {
    // One row left: back to the model's own kinds (a window layer to its rotating buffer).
    KVCache one = row(keep[0]);
    layers_ = std::move(one.layers_);
    left_pad_ = {0};
    set_layout();
    return;
  }
  std::vector<int> pads;
  for (int b : keep) pads.push_back(left_pad_[b]);
  const int drop = *std::min_element(pads.begin(), pads.end());  // padding columns no kept row needs
  const bool all = keep.size() == left_pad_.size();
  const Array index = Array::from_int32(std::vector<int32_t>(keep.begin(), keep.end()), {static_cast<int>(keep.size())});
  auto kept = [&](const Array& a) { return all ? a : rows_of(a, index); };
  for (int i = 0; i < size(); ++i) {
    if (auto* r = dynamic_cast<RecurrentCache*>(layers_[i].get())) {
      r->set(kept(r->conv()), kept(r->recurrent_state()), r->offset() - drop);
      continue;
    }
    LayerKVCache& l = layer_as<LayerKVCache>(i);
    if (l.keys_.empty()) continue;
    const int cut = std::max(0, drop - l.first_);  // kept columns before `drop`
    auto pick = [&](const Array& buf) { return mx::slice_axis(kept(buf), 2, cut, l.held()); };
    l.keys_ = pick(l.keys_);
    l.values_ = pick(l.values_);
    l.first_ = std::max(l.first_, drop) - drop;
    l.offset_ -= drop;
  }
  for (int& p : pads) p -= drop;
  left_pad_ = std::move(pads);
  set_layout();
}

KVCache KVCache::row(int b) const {
  std::vector<std::unique_ptr<LayerCache>> layers;
  for (const auto& layer : layers_) {
    if (row_count() == 1) {  // a single row holds its own kinds
      layers.push_back(layer->clone());
      continue;
    }
    if (const auto* r = dynamic_cast<const RecurrentCache*>(layer.get())) {
      auto one = std::make_unique<RecurrentCache>();
      const Array index = Array::from_int32({b}, {1});
      one->set(rows_of(r->conv(), index), rows_of(r->recurrent_state(), index), r->offset() - left_pad_[b]);
      layers.push_back(std::move(one));
      continue;
    }
    const auto& l = dynamic_cast<const LayerKVCache&>(*layer);
    // The row's own kept columns; a window layer's, only the window its rotating buffer keeps.
    const int from = std::max({l.first_, left_pad_[b], l.window_ > 0 ? l.offset_ - l.window_ : 0});
    const int held = l.held() - (from - l.first_);
    // A full layer's copy gets room to grow to the next step, so the row's next prompt is
    // written in place rather than copied once more (grow).
    const int spare = l.window_ > 0 ? 0 : LayerKVCache::kStep - held % LayerKVCache::kStep;
    Array keys, values;
    if (!l.keys_.empty()) {
      auto cut = [&](const Array& buf) {
        const Array own = mx::slice_axis(mx::slice_axis(buf, 0, b, b + 1), 2, from - l.first_, l.held());
        if (spare == 0) return mx::contiguous(own);
        std::vector<int> shape = own.shape();
        shape[2] = spare;
        return mx::concatenate({own, mx::zeros(shape, own.dtype())}, 2);
      };
      keys = cut(l.keys_);
      values = cut(l.values_);
    }
    const int offset = l.offset_ - left_pad_[b];
    if (l.window_ > 0)
      layers.push_back(std::make_unique<RotatingKVCache>(l.window_, keys, values, offset));
    else
      layers.push_back(std::make_unique<LayerKVCache>(keys, values, offset, 0, held));
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
