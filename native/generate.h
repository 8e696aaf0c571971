// The decode loop (mlx-lm's generate_step) and full-sequence logits. Engine thread only.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "generation_stats.h"
#include "kv_cache.h"
#include "models/registry.h"
#include "sampling_params.h"

namespace mlxnode {

class TokenMaskMailbox;  // token_mask.h

// A model with its cache and the tokens whose keys/values the cache holds. Invariant between
// calls: cache.offset() == cached_tokens.size(). Any exception resets both.
struct GenerationContext {
  const Model& model;
  KVCache& cache;
  std::vector<int32_t>& cached_tokens;
  int context_size;  // KV positions: the prompt must fit, and a token is fed only if it fits
};

// Reuses the longest prefix shared with cached_tokens (at least one prompt token is always
// evaluated, for its logits), prefills the rest in 512-token chunks, then decodes with one step
// in flight: step n+1 is built and async-evaluated before token n is read, so graph building
// overlaps evaluation. `emit` gets each token as soon as it is read. Stops on a stop token (not
// emitted), max_tokens or a full context ("length": prompt + generated tokens reach context_size), or `cancel` (checked before every step).
// Throws INVALID_OPTION for an empty/oversized prompt, out-of-vocab ids or bad sampling params.
//
// Constrained decoding (`masks` not null): token n+1 is sampled only among the ids its mask
// allows, so sampling waits for JS. The order hides that wait behind the forward pass: step
// n+1's graph is built while token n's sampling finishes, token n is read and emitted, the
// forward pass is started, and only then does the engine wait for the mask, which JS computes
// from token n meanwhile. JS ending the constraint (the document is complete) finishes with "stop".
// With params.logprobs >= 0 each token's log-probabilities are evaluated with it (Sampler::outputs).
GenerationStats generate(GenerationContext ctx, const std::vector<int32_t>& prompt, const SamplingParams& params,
                         const std::atomic<bool>& cancel, const std::function<void(const EmittedToken&)>& emit,
                         TokenMaskMailbox* masks = nullptr);

// float32 logits [tokens.size() * vocab] for every position, from an empty cache; leaves the
// cache empty.
std::vector<float> all_logits(GenerationContext ctx, const std::vector<int32_t>& tokens);

}  // namespace mlxnode
