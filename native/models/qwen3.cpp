// Qwen3: our port of mlx-lm's models/qwen3.py. The graph is decoder.cpp's, as for llama.cpp; the
// delta is RMSNorm over head_dim on queries and keys (q_norm/k_norm) before RoPE, an explicit
// head_dim, no MLP bias, and mlx-lm's defaults.
#include "decoder.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's qwen3.ModelArgs reads it; the defaults are mlx-lm's.
DecoderArgs parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  // required: Qwen3 decouples it from hidden_size
  a.head_dim = c.get_int("head_dim");
  a.max_position_embeddings = c.get_int("max_position_embeddings", 32768);
  a.default_rope_theta = 1000000.0f;
  a.attention.qkv_bias = a.attention.o_bias = c.get_bool("attention_bias", false);  // one key for q/k/v/o biases
  a.attention.qk_norm = true;  // q_norm/k_norm
  return a;
}

}  // namespace

std::unique_ptr<Model> make_qwen3(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, parse_model_args(config));
}

}  // namespace mlxnode
