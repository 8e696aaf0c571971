// Per-layer key/value cache, as mlx-lm's models/cache.py KVCache: buffers grow in steps of 256
// positions, new keys are written with slice_update (MLX donates the old buffer, so the write is
// in place), and attention reads the filled view [.., :offset, ..]. Engine thread only.
#pragma once
#include <cstdint>
#include <list>
#include <vector>

#include "mlx_array.h"

namespace mlxnode {

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

 private:
  Array keys_, values_;
  int offset_ = 0;
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

 private:
  std::vector<LayerKVCache> layers_;
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
