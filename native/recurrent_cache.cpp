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

void RecurrentCache::state(std::vector<Array>& out) const {
  if (conv_.empty()) return;
  out.push_back(conv_);
  out.push_back(state_);
}

int64_t RecurrentCache::nbytes() const {
  return conv_.empty() ? 0 : static_cast<int64_t>(conv_.nbytes() + state_.nbytes());
}

}  // namespace mlxnode
