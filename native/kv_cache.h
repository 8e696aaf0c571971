// Per-layer key/value cache, as mlx-lm's models/cache.py KVCache: buffers grow in steps of 256
// positions, new keys are written with slice_update (MLX donates the old buffer, so the write is
// in place), and attention reads the filled view [.., :offset, ..]. Engine thread only.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <vector>

#include "mlx_array.h"

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
  // bool [B, 1, 1, S]: key column j is visible to row b iff j >= left_pad[b].
  const Array& key_mask(int columns) const;

 private:
  // Shared by every layer of one step: built once per step (engine thread only).
  mutable Array positions_, mask_;
  mutable int positions_at_ = -1, mask_columns_ = -1;
};

class LayerKVCache {
 public:
  static constexpr int kStep = 256;

  // keys/values: [B, n_kv_heads, T, head_dim]. Appends at offset() and returns the filled views
  // [B, n_kv_heads, offset() + T, head_dim].
  void update_and_fetch(const Array& keys, const Array& values, Array& all_keys, Array& all_values);
  int offset() const { return offset_; }
  void trim(int n);  // forget the last n positions (buffers are kept and overwritten later)
  void reset();      // forget everything and free the buffers
  // The buffers, for evaluating the cache after a prefill chunk (mlx-lm evals c.state).
  void state(std::vector<Array>& out) const;
  int64_t nbytes() const;  // bytes of the buffers (allocated capacity, not just the filled part)
  // Batch rows: the layout when rows are padded, else nullptr. Set by KVCache.
  const RowLayout* rows() const { return rows_.get(); }

 private:
  friend class KVCache;
  Array keys_, values_;
  int offset_ = 0;
  std::shared_ptr<const RowLayout> rows_;
};

class KVCache {
 public:
  explicit KVCache(int num_layers) : layers_(num_layers) {}
  LayerKVCache& layer(int i) { return layers_[i]; }
  int offset() const { return layers_.empty() ? 0 : layers_[0].offset(); }
  void trim(int n);
  void reset();
  std::vector<Array> state() const;
  int64_t nbytes() const;

  // ---- Batch rows (see RowLayout). A fresh KVCache has no rows; a cache filled by forward()
  // holds one. Engine thread only.
  int row_count() const { return static_cast<int>(left_pad_.size()); }
  // Appends `row` (a single-sequence cache, offset() >= 1) as the last row; the shorter side is
  // left-padded with zeros so the write columns line up.
  void append_row(const KVCache& row);
  // Keeps only rows `keep` (ascending), dropping padding columns no kept row needs.
  void keep_rows(const std::vector<int>& keep);
  // Row b as a single-sequence cache (its own buffers: it outlives the batch in the PromptCache).
  KVCache row(int b) const;

 private:
  void set_layout();
  std::vector<LayerKVCache> layers_;
  std::vector<int> left_pad_;  // batch rows: per-row left padding (empty: no rows appended)
};

// The KV caches of recent sequences, most recently used first, bounded in bytes: a request starts
// from the entry sharing its longest prefix, so interleaved conversations do not evict each other
// (as mlx-lm's server LRU prompt cache). Engine thread only.
class PromptCache {
 public:
  struct Entry {
    KVCache cache;
    std::vector<int32_t> tokens;  // what `cache` holds: cache.offset() == tokens.size()
  };

  PromptCache(int num_layers, int64_t budget_bytes) : num_layers_(num_layers), budget_(budget_bytes) {}

  // The entry sharing the longest prefix with `prompt`, out of the cache. An entry that goes on
  // past the shared prefix is copied, not taken (MLX arrays share their buffers until written,
  // so the copy costs nothing until it overwrites), and stays for its own conversation. An empty
  // entry when none shares a token.
  Entry take(const std::vector<int32_t>& prompt);
  // Stores `entry` as the most recent, drops entries it extends, and evicts the least recently
  // used ones while the total is over the budget (with budget 0 nothing is kept).
  void put(Entry entry);
  int64_t bytes() const;
  size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

 private:
  int num_layers_;
  int64_t budget_;
  std::list<Entry> entries_;
};

}  // namespace mlxnode
