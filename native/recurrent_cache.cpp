#include "recurrent_cache.h"

#include <utility>

namespace mlxnode {

void RecurrentCache::update(Array conv, Array state, int tokens) {
  conv_ = std::move(conv);
  state_ = std::move(state);
  offset_ += tokens;
}

void RecurrentCache::set(Array conv, Array state, int offset) {
  conv_ = std::move(conv);
  state_ = std::move(state);
  offset_ = offset;
}

void RecurrentCache::reset() {
  conv_ = Array();
  state_ = Array();
  offset_ = 0;
}


}  // namespace mlxnode
