// The cache of a linear-attention layer (Gated DeltaNet: qwen3_next, qwen3_5), as mlx-lm's
// ArraysCache(size=2): the last conv_kernel - 1 inputs of its causal convolution and the recurrent
// state. Both have a fixed size whatever the sequence length, and both fold every position seen
// into themselves, so, unlike a KV cache, the state cannot be cut back to a shorter prefix (mlx-lm:
// can_trim false): a prefix is reused only when the whole cached sequence is that prefix.
// Engine thread only.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "layer_cache.h"

namespace mlxnode {

class RecurrentCache : public LayerCache {
 public:
  // [B, conv_kernel - 1, conv_dim] in the activations' dtype; empty before the first token.
  const Array& conv() const { return conv_; }
  // [B, value_heads, value_dim, key_dim] float32; empty before the first token.
  const Array& recurrent_state() const { return state_; }
  // Stores the layer's new conv window and state after `tokens` more positions.
  void update(Array conv, Array state, int tokens);
  // Batch rows (kv_cache.h): each row's window and state are its own slice of axis 0, so rows join,
  // leave and split off without padding; `offset` is the batch's write column.
  void set(Array conv, Array state, int offset);

  int offset() const override { return offset_; }
  bool can_trim(int n) const override { return n == 0; }
  void trim(int /*n*/) override {}  // only n == 0 (can_trim)
  void reset() override;
  void state(std::vector<Array>& out) const override { append_pair(conv_, state_, out); }
  int64_t nbytes() const override { return pair_nbytes(conv_, state_); }
  std::unique_ptr<LayerCache> clone() const override { return std::make_unique<RecurrentCache>(*this); }

 private:
  Array conv_, state_;
  int offset_ = 0;
};

}  // namespace mlxnode
