// Llama family (also Mistral, via the registry): our port of mlx-lm's models/llama.py.
// The graph is decoder.cpp's, shared with qwen2.cpp and qwen3.cpp; this file holds what makes a
// checkpoint Llama: the config.json keys it reads, their defaults, and its attention flags.
#include "decoder.h"
#include "registry.h"

namespace mlxnode {

// config.json as mlx-lm's llama.ModelArgs reads it; the defaults are HF LlamaConfig's / mlx-lm's.
DecoderArgs llama_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  // default: hidden_size / num_attention_heads
  a.head_dim = c.get_int("head_dim", a.num_attention_heads > 0 ? a.hidden_size / a.num_attention_heads : 0);
  a.max_position_embeddings = c.get_int("max_position_embeddings", 2048);
  a.default_rope_theta = 10000.0f;
  a.attention.qkv_bias = a.attention.o_bias = c.get_bool("attention_bias", false);  // one key for q/k/v/o biases
  a.mlp_bias = c.get_bool("mlp_bias", false);
  // Optional per-layer kinds, as mlx-lm's llama reads them: sliding layers attend to the last
  // sliding_window positions with the model's RoPE.
  if (a.read_layer_types(c)) {
    for (bool sliding : a.sliding_layers)
      if (sliding) {
        a.sliding_window = c.get_int("sliding_window");
        if (a.sliding_window <= 0) c.fail("sliding_window must be positive");
        break;
      }
  }
  return a;
}

std::unique_ptr<Model> make_llama(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, llama_model_args(config));
}

}  // namespace mlxnode
