// Per-layer key/value cache, as mlx-lm's models/cache.py KVCache: buffers grow in steps of 256
// positions, new keys are written with slice_update (MLX donates the old buffer, so the write is
// in place), and attention reads the filled view [.., :offset, ..]. Engine thread only.
#pragma once
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

 private:
  std::vector<LayerKVCache> layers_;
};

}  // namespace mlxnode
