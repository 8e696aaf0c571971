// What a loaded model reports about itself (MlxBackend.info): filled by its family and the session.
#pragma once
#include <cstdint>
#include <string>

namespace mlxnode {

struct ModelInfo {
  std::string model_type;   // config.json model_type, e.g. "llama"
  std::string dtype;        // compute dtype: "float32" | "float16" | "bfloat16"
  int quantization_bits = 0;  // 0 when not quantized
  int vocab_size = 0;
  int context_size = 0;
  int num_layers = 0;
  int hidden_size = 0;
  int64_t weight_bytes = 0;       // the tensors the model took (not the ones it ignores, e.g. a vision tower)
  int64_t kv_bytes_per_token = 0;  // what one position adds to the KV cache (every layer's keys and values)
  int max_batch = 1;               // rows decoded together: LoadConfig::max_batch, or 1 when the model cannot batch
};

}  // namespace mlxnode
