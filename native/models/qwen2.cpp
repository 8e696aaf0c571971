// Qwen2 / Qwen2.5: our port of mlx-lm's models/qwen2.py. The graph is decoder.cpp's, as for
// llama.cpp; the delta is biases on q/k/v (not o), no MLP bias, no head_dim key, and mlx-lm's
// defaults.
#include "decoder.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's qwen2.ModelArgs reads it; the defaults are mlx-lm's.
DecoderArgs parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  // always hidden_size / num_attention_heads (a head_dim key is not read)
  a.head_dim = a.num_attention_heads > 0 ? a.hidden_size / a.num_attention_heads : 0;
  a.max_position_embeddings = c.get_int("max_position_embeddings", 32768);
  a.default_rope_theta = 1000000.0f;
  a.attention.qkv_bias = true;  // o_proj has none
  return a;
}

}  // namespace

std::unique_ptr<Model> make_qwen2(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, parse_model_args(config));
}

}  // namespace mlxnode
