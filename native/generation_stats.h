// What one generation did and how long it took (MlxBackend.lastGenerationStats).
#pragma once
#include <cstdint>
#include <string>

namespace mlxnode {

struct GenerationStats {
  int evaluated_prompt_tokens = 0;  // prompt tokens run through the model (after cached-prefix reuse)
  int generated_tokens = 0;
  std::string finish;               // "stop" (stop token), "length" (max_tokens or context full), "cancelled"
  double prefill_ms = 0;
  double decode_ms = 0;
  double graph_build_ms = 0;        // time spent building graphs on the engine thread (outside MLX evaluation)
  double host_ms = 0;               // other time outside MLX evaluation (emit, bookkeeping)
  int64_t ops_per_token = 0;        // MLX ops created per decoded token
  double mask_wait_ms = 0;          // constrained decoding: time blocked waiting for token masks from JS
};

}  // namespace mlxnode
