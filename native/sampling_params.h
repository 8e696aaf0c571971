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
};

}  // namespace mlxnode
