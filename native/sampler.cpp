#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace mlxnode {
namespace {

Array minus_inf() { return Array::scalar(-std::numeric_limits<float>::infinity(), MLX_FLOAT32); }

}  // namespace

Array apply_token_mask(const Array& logits, const std::vector<uint32_t>& mask, int vocab_size) {
  std::vector<uint8_t> allowed(vocab_size);
  for (int i = 0; i < vocab_size; ++i) allowed[i] = (mask[i >> 5] >> (i & 31)) & 1u;
  return mx::where(Array::from_bool(allowed, {vocab_size}), logits,
                   Array::scalar(-std::numeric_limits<float>::infinity(), logits.dtype()));
}

Sampler::Sampler(const SamplingParams& params, const std::vector<int32_t>& context, int vocab_size)
    : p_(params), vocab_size_(vocab_size) {
  // The params were range-checked by their reader (sampling_params, model_binding.cpp).
  if (p_.repetition_penalty != 1.0f && !context.empty()) {
    const size_t n = std::min(context.size(), static_cast<size_t>(p_.repetition_context_size));
    window_ = Array::from_int32(std::vector<int32_t>(context.end() - n, context.end()), {static_cast<int>(n)});
    window_len_ = static_cast<int>(n);
  }
  if (p_.temperature > 0) key_ = mx::random_key(p_.seed);
}

// mlx-lm make_repetition_penalty: logits of recent tokens are divided by the penalty when
// positive, multiplied when negative (both push them down).
Array Sampler::penalize(const Array& logits) const {
  if (p_.repetition_penalty == 1.0f || window_len_ == 0) return logits;
  std::vector<int> shape(logits.ndim(), 1);
  shape.back() = window_len_;
  Array idx = mx::reshape(window_, shape);
  Array picked = mx::take_along_axis(logits, idx, -1);
  Array penalty = Array::scalar(p_.repetition_penalty, logits.dtype());
  Array zero = Array::scalar(0.0f, logits.dtype());
  Array scaled = mx::where(mx::less(picked, zero), mx::multiply(picked, penalty), mx::divide(picked, penalty));
  return mx::put_along_axis(logits, idx, scaled, -1);
}

// Filters on float32 log-probabilities [.., V]; removed tokens get -inf.
Array Sampler::filter(Array logprobs) const {
  if (p_.top_k > 0 && p_.top_k < vocab_size_) {
    // mlx-lm apply_top_k: everything past the k-th largest (in any order) is masked.
    Array order = mx::argpartition(mx::negative(logprobs), p_.top_k - 1, -1);
    Array drop = mx::slice_axis(order, -1, p_.top_k, vocab_size_);
    logprobs = mx::put_along_axis(logprobs, drop, minus_inf(), -1);
  }
  if (p_.top_p < 1.0f) {
    // Keep the smallest most-probable set whose mass reaches top_p: a token stays when the mass
    // of the tokens ranked above it is still below top_p (so the top token always stays).
    // Probabilities are renormalized after earlier filters, as HF's warpers see them.
    Array order = mx::argsort(mx::negative(logprobs), -1);
    Array sorted = mx::take_along_axis(logprobs, order, -1);
    Array probs = mx::exp(mx::subtract(sorted, mx::logsumexp(sorted, -1, true)));
    Array mass_before = mx::cumsum(probs, -1, false, false);
    Array kept = mx::where(mx::less(mass_before, Array::scalar(p_.top_p, MLX_FLOAT32)), sorted, minus_inf());
    logprobs = mx::put_along_axis(logprobs, order, kept, -1);
  }
  if (p_.min_p > 0.0f) {
    // mlx-lm apply_min_p: drop tokens less likely than min_p times the top token.
    Array threshold = mx::add(mx::max(logprobs, -1, true), Array::scalar(std::log(p_.min_p), MLX_FLOAT32));
    logprobs = mx::where(mx::less(logprobs, threshold), minus_inf(), logprobs);
  }
  return logprobs;
}

Array token_logprobs(const Array& logits, const Array& token, int n) {
  const int vocab = logits.dim(-1);
  n = std::min(n, vocab);
  Array x = mx::reshape(mx::astype(logits, MLX_FLOAT32), {vocab});
  Array lp = mx::subtract(x, mx::logsumexp(x, -1, true));
  std::vector<Array> parts{mx::take_along_axis(lp, mx::reshape(mx::astype(token, MLX_INT32), {1}), -1)};
  if (n > 0) {
    Array top = mx::slice_axis(mx::argpartition(mx::negative(lp), n - 1, -1), -1, 0, n);
    Array values = mx::take_along_axis(lp, top, -1);
    Array order = mx::argsort(mx::negative(values), -1);
    parts.push_back(mx::take_along_axis(values, order, -1));
    parts.push_back(mx::astype(mx::take_along_axis(top, order, -1), MLX_FLOAT32));
  }
  return mx::concatenate(parts, 0);
}

Array Sampler::operator()(const Array& logits_in) {
  Array logits = penalize(logits_in);
  Array token, drawn_from;  // drawn_from: the row whose log-softmax is reported (params.logprobs)
  if (p_.temperature == 0.0f) {
    token = mx::argmax(logits, -1, false);
    drawn_from = logits;
  } else {
    Array x = mx::astype(logits, MLX_FLOAT32);
    Array logprobs = filter(mx::subtract(x, mx::logsumexp(x, -1, true)));
    Array sub;
    mx::random_split(key_, key_, sub);
    drawn_from = mx::multiply(logprobs, Array::scalar(1.0f / p_.temperature, MLX_FLOAT32));
    token = mx::categorical(drawn_from, -1, sub);
  }
  if (p_.logprobs >= 0) {
    logprobs_.push_back(token_logprobs(drawn_from, token, p_.logprobs));
    fresh_ = true;
  }
  if (p_.repetition_penalty != 1.0f) {
    token = mx::astype(token, MLX_INT32);
    Array flat = mx::reshape(token, {1});
    Array grown = window_len_ ? mx::concatenate({window_, flat}, 0) : flat;
    window_len_ = std::min(window_len_ + 1, p_.repetition_context_size);
    window_ = grown.dim(0) > window_len_ ? mx::slice_axis(grown, 0, grown.dim(0) - window_len_, grown.dim(0)) : grown;
  }
  return token;
}

std::vector<Array> Sampler::outputs(const Array& token) {
  if (!fresh_) return {token};
  fresh_ = false;
  return {token, logprobs_.back()};
}

std::vector<float> Sampler::take_logprobs() {
  if (logprobs_.empty()) return {};
  std::vector<float> values = logprobs_.front().to_float32();
  logprobs_.pop_front();
  return values;
}

}  // namespace mlxnode
