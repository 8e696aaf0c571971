#include "rotating_kv_cache.h"

#include <algorithm>

namespace mlxnode {

RotatingKVCache::RotatingKVCache(int max_size, const Array& keys, const Array& values, int offset)
    : max_size_(max_size), offset_(offset) {
  if (keys.empty()) return;
  // Only the newest max_size positions are kept; in order, so the next write wraps to the oldest.
  const int len = keys.dim(2), from = std::max(0, len - max_size);
  keys_ = mx::slice_axis(keys, 2, from, len);
  values_ = mx::slice_axis(values, 2, from, len);
  next_ = len - from;
}

Array RotatingKVCache::temporal(const Array& buf) const {
  const int len = buf.dim(2);
  if (next_ == len) return buf;
  // Wrapped: slots next_.. hold the older positions, 0..next_ the newer ones.
  if (next_ < offset_) return mx::concatenate({mx::slice_axis(buf, 2, next_, len), mx::slice_axis(buf, 2, 0, next_)}, 2);
  return mx::slice_axis(buf, 2, 0, next_);  // not full: drop the unused tail
}

void RotatingKVCache::append(const Array& keys, const Array& values) {
  if (keys_.empty()) {
    keys_ = keys;
    values_ = values;
  } else {
    // The first new query sees the max_size - 1 positions before it: keep those, drop older ones.
    auto extend = [&](const Array& buf, const Array& fresh) {
      Array ordered = temporal(buf);
      const int drop = ordered.dim(2) - max_size_ + 1;
      if (drop > 0) ordered = mx::slice_axis(ordered, 2, drop, ordered.dim(2));
      return mx::concatenate({ordered, fresh}, 2);
    };
    keys_ = extend(keys_, keys);
    values_ = extend(values_, values);
  }
  offset_ += keys.dim(2);
  next_ = keys_.dim(2);
}

void RotatingKVCache::write_in_place(const Array& keys, const Array& values) {
  const int prev = offset_;
  const int len = keys_.empty() ? 0 : keys_.dim(2);
  if (prev < max_size_ && prev >= len) {
    // Not yet at the window: grow by a step of zeros (at most up to max_size).
    auto grow = [&](const Array& buf, const Array& like) {
      std::vector<int> shape = like.shape();
      shape[2] = std::min(kStep, max_size_ - prev);
      Array fresh = mx::zeros(shape, like.dtype());
      return buf.empty() ? fresh : mx::concatenate({buf, fresh}, 2);
    };
    keys_ = grow(keys_, keys);
    values_ = grow(values_, values);
    next_ = prev;
  }
  // A buffer left longer than the window by a chunk (append) keeps only its newest max_size slots.
  const int excess = keys_.dim(2) - max_size_;
  if (excess > 0) {
    keys_ = mx::slice_axis(keys_, 2, excess, keys_.dim(2));
    values_ = mx::slice_axis(values_, 2, excess, values_.dim(2));
    next_ = max_size_;
  }
  if (next_ == max_size_) next_ = 0;  // wrap: overwrite the oldest position

  std::vector<int> start = {0, 0, next_, 0};
  std::vector<int> kstop = keys.shape(), vstop = values.shape();
  kstop[2] = vstop[2] = next_ + 1;
  // Reassigning drops the last reference to the old buffers, so MLX writes them in place.
  keys_ = mx::slice_update(keys_, keys, start, kstop);
  values_ = mx::slice_update(values_, values, start, vstop);
  offset_ = prev + 1;
  next_ += 1;
}

void RotatingKVCache::update_and_fetch(const Array& keys, const Array& values, Array& all_keys, Array& all_values) {
  if (keys.dim(2) == 1) {
    write_in_place(keys, values);
  } else {
    append(keys, values);
  }
  // Before the window fills, the buffer's tail past offset_ is unwritten.
  if (offset_ < keys_.dim(2)) {
    all_keys = mx::slice_axis(keys_, 2, 0, offset_);
    all_values = mx::slice_axis(values_, 2, 0, offset_);
  } else {
    all_keys = keys_;
    all_values = values_;
  }
}

void RotatingKVCache::ordered(Array& keys, Array& values) const {
  if (keys_.empty()) {
    keys = values = Array();
    return;
  }
  keys = temporal(keys_);
  values = temporal(values_);
  // Before the window fills (and after a trim) the buffer's tail past offset_ is unwritten.
  if (keys.dim(2) > offset_) {
    keys = mx::slice_axis(keys, 2, 0, offset_);
    values = mx::slice_axis(values, 2, 0, offset_);
  }
}

void RotatingKVCache::trim(int n) {
  n = std::min(std::max(n, 0), offset_);
  offset_ -= n;
  next_ -= n;
}

void RotatingKVCache::reset() {
  keys_ = Array();
  values_ = Array();
  offset_ = next_ = 0;
}


}  // namespace mlxnode
