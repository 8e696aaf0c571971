// One request's sampling parameters, as the addon reads them from JS (model_binding.cpp) and the
// sampler and decode loop use them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mlxnode {

struct SamplingParams {
  float temperature = 0.0f;  // 0: argmax
  float top_p = 1.0f;
  int top_k = 0;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  int repetition_context_size = 64;
  uint64_t seed = 0;
  int max_tokens = 256;
  std::vector<int32_t> stop_token_ids;  // end-of-generation ids: generation stops after emitting none of them
  std::string adapter;                  // the request's adapter (ModelSession::load_adapter); "": the default
  // -1: no log-probabilities; n in [0, 20]: each token's log-probability and the n most likely
  // alternatives, of the distribution it was drawn from (sampler.h, token_logprobs).
  int logprobs = -1;
};

// One generated token as the engine hands it out.
struct EmittedToken {
  int32_t id = 0;
  // With SamplingParams::logprobs = n >= 0: 1 + 2n floats, [log p(id), the n largest log p in
  // descending order, their ids]; empty otherwise.
  std::vector<float> logprobs;
};

}  // namespace mlxnode
