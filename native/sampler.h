// Token sampling as MLX ops (mlx-lm's sample_utils): logits processors first (repetition
// penalty), then either argmax (temperature 0) or top-k -> top-p -> min-p filters and a
// categorical draw. Everything stays on the device, so the next decode step can be built before
// the host has read the previous token. Engine thread only.
#pragma once
#include <cstdint>
#include <vector>

#include "mlx_array.h"
#include "sampling_params.h"

namespace mlxnode {

// Constrained decoding: logits [.., V] of tokens whose bit in `mask` is clear become -inf (bit
// i % 32 of word i / 32 allows token i). Applied before the sampler chain.
Array apply_token_mask(const Array& logits, const std::vector<uint32_t>& mask, int vocab_size);

class Sampler {
 public:
  // Throws INVALID_OPTION on out-of-range params. `context`: the prompt, whose last
  // repetition_context_size tokens seed the repetition-penalty window.
  Sampler(const SamplingParams& params, const std::vector<int32_t>& context, int vocab_size);

  // logits [1, 1, V] (any leading dims of size 1) -> token id [1, 1], ready to feed back to the
  // model without a reshape. Each call advances the random key (split per step, so a seed
  // always yields the same sequence) and appends the token to the penalty window.
  Array operator()(const Array& logits);

 private:
  Array penalize(const Array& logits) const;
  Array filter(Array logprobs) const;

  SamplingParams p_;
  int vocab_size_;
  Array window_;  // int32 [n]: last repetition_context_size tokens (device side, may be lazy)
  int window_len_ = 0;
  Array key_;
};

}  // namespace mlxnode
