// Token sampling as MLX ops (mlx-lm's sample_utils): logits processors first (repetition
// penalty), then either argmax (temperature 0) or top-k -> top-p -> min-p filters and a
// categorical draw. Everything stays on the device, so the next decode step can be built before
// the host has read the previous token. Engine thread only.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "mlx_array.h"
#include "sampling_params.h"

namespace mlxnode {

// Constrained decoding: logits [.., V] of tokens whose bit in `mask` is clear become -inf (bit
// i % 32 of word i / 32 allows token i). Applied before the sampler chain.
Array apply_token_mask(const Array& logits, const std::vector<uint32_t>& mask, int vocab_size);

// Log-probabilities of one step, as one float32 array [1 + 2n]: log-softmax of `logits` (the row
// a token was drawn from, [.., V] with leading dims of size 1) at `token`, then the n largest
// log-probabilities in descending order (argpartition, then a sort of those n), then their ids as
// floats (exact: vocabularies are far below 2^24). One array, so one read per token.
Array token_logprobs(const Array& logits, const Array& token, int n);

class Sampler {
 public:
  // Throws INVALID_OPTION on out-of-range params. `context`: the prompt, whose last
  // repetition_context_size tokens seed the repetition-penalty window.
  Sampler(const SamplingParams& params, const std::vector<int32_t>& context, int vocab_size);

  // logits [1, 1, V] (any leading dims of size 1) -> token id [1, 1], ready to feed back to the
  // model without a reshape. Each call advances the random key (split per step, so a seed
  // always yields the same sequence) and appends the token to the penalty window.
  // With params.logprobs = n >= 0 it also records the step's token_logprobs over the distribution
  // the token is drawn from: the logits after the repetition penalty and any mask, then (temperature
  // > 0) after the top-k/top-p/min-p filters and divided by the temperature.
  Array operator()(const Array& logits);

  // What to evaluate for a token just returned by operator(): the token and its log-probabilities,
  // so both come out of the same async_eval. Any other array is returned alone.
  std::vector<Array> outputs(const Array& token);
  // The log-probabilities of the oldest token not yet taken (tokens are emitted in sampling order);
  // empty without params.logprobs.
  std::vector<float> take_logprobs();

 private:
  Array penalize(const Array& logits) const;
  Array filter(Array logprobs) const;

  SamplingParams p_;
  int vocab_size_;
  Array window_;  // int32 [n]: last repetition_context_size tokens (device side, may be lazy)
  int window_len_ = 0;
  Array key_;
  std::deque<Array> logprobs_;  // recorded steps whose tokens are not emitted yet (at most two)
  bool fresh_ = false;          // the last operator() recorded a step outputs() has not attached yet
};

}  // namespace mlxnode
