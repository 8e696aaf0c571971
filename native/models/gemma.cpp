// Gemma (1): our port of mlx-lm's models/gemma.py. The graph is decoder.cpp's with Gemma's
// RMSNorm by (1 + weight), embeddings scaled by sqrt(hidden_size), an explicit head_dim and a tied
// head. The MLP takes gelu with the tanh approximation (HF's gelu_pytorch_tanh, which HF
// substitutes for Gemma's "gelu" and llama.cpp uses too; mlx-lm takes the exact erf form).
// The helpers of gemma.h, shared with gemma2.cpp and gemma3_text.cpp, live here too.
#include "gemma.h"

#include <cmath>

#include "registry.h"

namespace mlxnode {

void set_gemma_traits(DecoderArgs& a) { a.norm_plus_one = a.scale_embeddings = a.gelu_mlp = true; }

// config.json as mlx-lm's gemma.ModelArgs reads it; the defaults are mlx-lm's.
DecoderArgs gemma_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.head_dim = c.get_int("head_dim");
  a.max_position_embeddings = c.get_int("max_position_embeddings", 8192);
  a.default_rope_theta = 10000.0f;
  set_gemma_traits(a);
  a.tie_word_embeddings = true;  // Gemma's head is always the embedding
  return a;
}

float query_pre_attn_scale(const ModelConfig& c, float fallback) {
  const float scalar = c.get_float("query_pre_attn_scalar", fallback);
  if (!(scalar > 0)) c.fail("query_pre_attn_scalar must be positive");
  return 1.0f / std::sqrt(scalar);
}

std::unique_ptr<Model> make_gemma(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, gemma_model_args(config));
}

}  // namespace mlxnode
