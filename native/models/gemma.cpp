// Gemma (1): our port of mlx-lm's models/gemma.py. The graph is decoder.cpp's with Gemma's
// RMSNorm by (1 + weight), embeddings scaled by sqrt(hidden_size), an explicit head_dim and a tied
// head. The MLP takes gelu with the tanh approximation (HF's gelu_pytorch_tanh, which HF
// substitutes for Gemma's "gelu" and llama.cpp uses too; mlx-lm takes the exact erf form).
#include "decoder.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's gemma.ModelArgs reads it; the defaults are mlx-lm's.
DecoderArgs parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.head_dim = c.get_int("head_dim");
  a.max_position_embeddings = c.get_int("max_position_embeddings", 8192);
  a.default_rope_theta = 10000.0f;
  a.norm_plus_one = a.scale_embeddings = a.gelu_mlp = true;
  a.tie_word_embeddings = true;  // Gemma's head is always the embedding
  return a;
}

}  // namespace

std::unique_ptr<Model> make_gemma(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, parse_model_args(config));
}

}  // namespace mlxnode
