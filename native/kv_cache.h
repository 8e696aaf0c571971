// A model's per-layer caches (KVCache) and the prompt cache of recent sequences. The full
// attention cache is here (LayerKVCache); other kinds have their own files (layer_cache.h lists
// them). Engine thread only.
#pragma once
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "layer_cache.h"

namespace mlxnode {

// ---- Batch rows (continuous batching) --------------------------------------------------------
// A KVCache may hold B sequences ("rows", batch axis 0) that decode together, one token each per
// step. They share one write column (offset()), so a row that joined with a shorter history is
// left-padded: row b's keys sit in columns [left_pad[b], offset()), and the token it writes next is
// at position offset() - left_pad[b]. Attention takes per-row RoPE positions and a key mask from
// here (mlx-lm's BatchKVCache keeps the same left padding). Rows without padding (a single row, or
// rows of equal length) have no RowLayout and take the plain single-offset, unmasked path.
struct RowLayout {
  std::vector<int> left_pad;  // per row; at least one nonzero
  // int32 [B]: the position each row writes at write column `offset`.
  const Array& positions(int offset) const;
  // bool [B, 1, 1, end - start]: key column j in [start, end) is visible to row b iff j >= left_pad[b].
  const Array& key_mask(int start, int end) const;

 private:
  // Shared by every layer of one step: built once per step (engine thread only); a model with
  // sliding-window layers asks for two column ranges per step, hence two mask slots.
  struct Mask {
    Array mask;
    int start = -1, end = -1;
  };
  mutable Array positions_;
  mutable int positions_at_ = -1;
  mutable Mask masks_[2];
  mutable int next_mask_ = 0;
};

// An attention layer's keys/values by write column, as mlx-lm's models/cache.py KVCache: buffers
// grow in steps of 256 positions, new keys are written with slice_update (MLX donates the old
// buffer, so the write is in place), and attention reads the filled view. A global layer keeps
// every column. A sliding-window layer held this way (`window` > 0: batch rows of a model whose
// local layers rotate alone, see KVCache::append_row) keeps at least the last window - 1 columns
// before the write column (older ones are dropped a step at a time: `first` is the oldest kept),
// and a single query reads only the last `window` columns.
class LayerKVCache : public AttentionCache {
 public:
  static constexpr int kStep = 256;

  LayerKVCache() = default;
  // Columns [offset - held, offset) of a layer with the given window (0: global), in the first
  // `held` columns of the buffers (-1: all of them).
  LayerKVCache(Array keys, Array values, int offset, int window, int held = -1);

  // keys/values: [B, n_kv_heads, T, head_dim]. Appends at offset() and returns the keys/values the
  // queries attend to, [B, n_kv_heads, S, D]: the most recent S columns, in order.
  void update_and_fetch(const Array& keys, const Array& values, Array& all_keys, Array& all_values) override;
  int offset() const override { return offset_; }
  // Until old columns were dropped (a window layer in a batch; batches are not trimmed).
  bool can_trim(int n) const override { return n <= 0 || first_ == 0; }
  void trim(int n) override;  // buffers are kept and overwritten later
  void reset() override;
  void state(std::vector<Array>& out) const override { append_pair(keys_, values_, out); }
  int64_t nbytes() const override { return pair_nbytes(keys_, values_); }  // allocated capacity, not just the filled part
  std::unique_ptr<LayerCache> clone() const override { return std::make_unique<LayerKVCache>(*this); }
  // Batch rows: the layout when rows are padded, else nullptr. Set by KVCache.
  const RowLayout* rows() const override { return rows_.get(); }

 private:
  friend class KVCache;
  int held() const { return offset_ - first_; }
  void drop_before(int column);  // forgets columns before `column` (a window layer's old keys)

  Array keys_, values_;  // buffer column i holds write column first_ + i
  int offset_ = 0;
  int first_ = 0;
  int window_ = 0;
  std::shared_ptr<const RowLayout> rows_;
};

// An attention layer's cache: a RotatingKVCache of `sliding_window` positions for a local layer
// whose window is shorter than the context, else a LayerKVCache (0: global).
std::unique_ptr<LayerCache> make_attention_cache(int sliding_window, int context_size);

// One cache per layer (or per layer that owns state), of each layer's kind; copies are deep
// (LayerCache::clone).
class KVCache {
 public:
  KVCache() = default;
  explicit KVCache(std::vector<std::unique_ptr<LayerCache>> layers) : layers_(std::move(layers)) {}
  KVCache(const KVCache& o);  // clones the layers, keeps the rows
  KVCache& operator=(const KVCache& o);
  KVCache(KVCache&&) = default;
  KVCache& operator=(KVCache&&) = default;

  int size() const { return static_cast<int>(layers_.size()); }
  LayerCache& layer(int i) { return *layers_[i]; }
  // Layer i's cache as the kind its layer uses (a mismatch is a bug in the model's make_cache).
  template <typename Kind>
  Kind& layer_as(int i) {
    if (auto* c = dynamic_cast<Kind*>(layers_[i].get())) return *c;
    throw std::logic_error("layer " + std::to_string(i) + "'s cache is not of the kind its layer uses");
  }
  int offset() const { return layers_.empty() ? 0 : layers_[0]->offset(); }
  bool can_trim(int n) const;  // every layer can
  void trim(int n);
  void reset();
  std::vector<Array> state() const;
  int64_t nbytes() const;

  // ---- Batch rows (see RowLayout). A fresh KVCache has no rows; a cache filled by forward()
  // holds one. A batch of several holds each attention layer as a LayerKVCache (a ring buffer
  // cannot be left-padded) and each recurrent state with one slice per row. Engine thread only.
  bool batchable() const;  // every layer is an attention cache or a recurrent state
  int row_count() const { return static_cast<int>(left_pad_.size()); }
  // The layout when rows are padded, else nullptr (what each LayerKVCache::rows() returns).
  const RowLayout* rows() const;
  // Appends `row` (a single-sequence cache, offset() >= 1) as the last row; the shorter side is
  // left-padded with zeros so the write columns line up. One row keeps its layers' own kinds; from
  // two rows on every layer is a LayerKVCache, a rotating window as the columns it holds.
  void append_row(const KVCache& row);
  // Keeps only rows `keep` (ascending), dropping padding columns no kept row needs; one row left
  // goes back to the model's own kinds.
  void keep_rows(const std::vector<int>& keep);
  // Row b as a single-sequence cache of the model's own kinds (its own buffers: it outlives the
  // batch in the PromptCache).
  KVCache row(int b) const;

 private:
  void set_layout();
  std::vector<std::unique_ptr<LayerCache>> layers_;
  std::vector<int> left_pad_;  // batch rows: per-row left padding (empty: no rows appended)
};

// How many positions of `cache` (which holds `cached`) a request for `prompt` starts from: the
// shared prefix, less one when that is the whole prompt (its last token is evaluated again for its
// logits), and 0 when the cache cannot be trimmed back to it (mlx-lm's can_trim_prompt_cache).
size_t reusable_prefix(const KVCache& cache, const std::vector<int32_t>& cached, const std::vector<int32_t>& prompt);

// The KV caches of recent sequences, most recently used first, bounded in bytes: a request starts
// from the entry sharing its longest prefix, so interleaved conversations do not evict each other
// (as mlx-lm's server LRU prompt cache). Engine thread only.
class PromptCache {
 public:
  struct Entry {
    KVCache cache;
    std::vector<int32_t> tokens;  // what `cache` holds: cache.offset() == tokens.size()
  };

  // `make_cache`: the model's empty cache (Model::make_cache).
  PromptCache(std::function<KVCache()> make_cache, int64_t budget_bytes)
      : make_cache_(std::move(make_cache)), budget_(budget_bytes) {}

  // The entry a request for `prompt` reuses most of (reusable_prefix), out of the cache. An entry
  // that must be trimmed is copied, not taken (MLX arrays share their buffers until written, so
  // the copy costs nothing until it overwrites), and stays for its own conversation. An empty
  // entry when none can be reused.
  Entry take(const std::vector<int32_t>& prompt);
  // Stores `entry` as the most recent, drops entries it extends, and evicts the least recently
  // used ones while the total is over the budget (with budget 0 nothing is kept).
  void put(Entry entry);
  int64_t bytes() const;
  size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

 private:
  std::function<KVCache()> make_cache_;
  int64_t budget_;
  std::list<Entry> entries_;
};

}  // namespace mlxnode
