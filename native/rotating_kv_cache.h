// The cache of a sliding-window attention layer, as mlx-lm's RotatingKVCache (models/cache.py,
// with keep = 0): at most `max_size` positions are kept, so a local layer's memory stops growing
// at its window. Decode steps write in place into a ring buffer (the oldest position is
// overwritten); a chunk of several positions is appended to the buffer put back in temporal
// order, keeping the max_size - 1 positions before it, which its first query still sees.
// Engine thread only.
#pragma once
#include "layer_cache.h"

namespace mlxnode {

class RotatingKVCache : public AttentionCache {
 public:
  static constexpr int kStep = 256;

  explicit RotatingKVCache(int max_size) : max_size_(max_size) {}
  // A window's positions oldest first, the last at offset - 1 (a batch row's columns, KVCache::row).
  RotatingKVCache(int max_size, const Array& keys, const Array& values, int offset);

  void update_and_fetch(const Array& keys, const Array& values, Array& all_keys, Array& all_values) override;
  int offset() const override { return offset_; }
  // Only while no position has been dropped (mlx-lm: offset < max_size).
  bool can_trim(int n) const override { return n <= 0 || offset_ < max_size_; }
  void trim(int n) override;
  void reset() override;
  void state(std::vector<Array>& out) const override { append_pair(keys_, values_, out); }
  int64_t nbytes() const override { return pair_nbytes(keys_, values_); }
  std::unique_ptr<LayerCache> clone() const override { return std::make_unique<RotatingKVCache>(*this); }
  int window() const { return max_size_; }
  // The positions kept, oldest first (the last is offset() - 1): how a batch row takes this layer.
  void ordered(Array& keys, Array& values) const;

 private:
  void append(const Array& keys, const Array& values);          // T > 1
  void write_in_place(const Array& keys, const Array& values);  // T == 1
  Array temporal(const Array& buf) const;  // the buffer's positions, oldest first

  Array keys_, values_;
  int max_size_;
  int offset_ = 0;  // positions seen
  int next_ = 0;    // the buffer slot of the next in-place write (mlx-lm's _idx)
};

}  // namespace mlxnode
