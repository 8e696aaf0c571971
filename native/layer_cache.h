// The runtime state one layer keeps between forward passes, as mlx-lm's models/cache.py _BaseCache:
// a model makes one per layer (Model::make_cache, as mlx-lm's make_cache), and each layer kind keeps
// what it needs: every position's keys and values (LayerKVCache, kv_cache.h), the last window of
// them (RotatingKVCache, rotating_kv_cache.h), or a recurrent state. Engine thread only.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "mlx_array.h"

namespace mlxnode {

struct RowLayout;  // kv_cache.h

// Every cache kind holds a pair of arrays (keys and values; a conv window and a state), both empty
// until the first token: what it reports to state() and nbytes().
inline void append_pair(const Array& a, const Array& b, std::vector<Array>& out) {
  if (a.empty()) return;
  out.push_back(a);
  out.push_back(b);
}
inline int64_t pair_nbytes(const Array& a, const Array& b) {
  return a.empty() ? 0 : static_cast<int64_t>(a.nbytes() + b.nbytes());
}

class LayerCache {
 public:
  virtual ~LayerCache() = default;
  // Positions fed through the layer so far.
  virtual int offset() const = 0;
  // Whether trim(n) can bring the state back to what it was n positions ago (mlx-lm's
  // is_trimmable): a cache that dropped or folded in old positions cannot go back, and prefix
  // reuse then starts from an empty cache (mlx-lm's can_trim_prompt_cache).
  virtual bool can_trim(int n) const = 0;
  virtual void trim(int n) = 0;  // forget the last n positions; only when can_trim(n)
  virtual void reset() = 0;      // forget everything and free the buffers
  // The arrays to evaluate after a prefill chunk (mlx-lm evals c.state).
  virtual void state(std::vector<Array>& out) const = 0;
  virtual int64_t nbytes() const = 0;  // bytes held (allocated capacity)
  // An independent copy: arrays are shared until either side writes (MLX copies on write when
  // a buffer has other references), so a copy costs nothing up front.
  virtual std::unique_ptr<LayerCache> clone() const = 0;
};

// The caches of attention layers. update_and_fetch appends keys/values [B, kv_heads, T, D] and
// returns the keys/values the T queries attend to, [B, kv_heads, S, D]: for T > 1 the S most
// recent positions in order (the last is the newest: position offset() - 1 after the call), so
// a mask can be built from positions; for T == 1 every returned key is within the layer's reach,
// in any order (a rotating buffer).
class AttentionCache : public LayerCache {
 public:
  virtual void update_and_fetch(const Array& keys, const Array& values, Array& all_keys, Array& all_values) = 0;
  // Batch rows at different positions (kv_cache.h RowLayout): only a full KV cache holds them.
  virtual const RowLayout* rows() const { return nullptr; }
};

}  // namespace mlxnode
