// Gemma 2: our port of mlx-lm's models/gemma2.py. The graph is decoder.cpp's; the delta is
// RMSNorm by (1 + weight), embeddings scaled by sqrt(hidden_size), sandwich norms around
// attention and the MLP, gelu_approx in the MLP, queries scaled by query_pre_attn_scalar^-0.5,
// attention scores and final logits soft-capped (cap * tanh(x / cap)), and a tied head. As in
// mlx-lm, every layer attends globally: the sliding window of alternate layers (4096 tokens)
// only differs beyond the default context of 4096.
#include <cmath>

#include "decoder.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's gemma2.ModelArgs reads it; the defaults are mlx-lm's.
DecoderArgs parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.head_dim = c.get_int("head_dim");
  a.max_position_embeddings = c.get_int("max_position_embeddings", 8192);
  a.default_rope_theta = 10000.0f;
  a.norm_plus_one = a.scale_embeddings = a.gelu_mlp = a.sandwich_norms = true;
  const float query_pre_attn_scalar = c.get_float("query_pre_attn_scalar", 144.0f);
  if (!(query_pre_attn_scalar > 0)) c.fail("query_pre_attn_scalar must be positive");
  a.query_scale = 1.0f / std::sqrt(query_pre_attn_scalar);
  // Absent: mlx-lm's (and HF's) defaults, 50 and 30; null: no cap (HF allows it).
  auto cap = [&](const char* key, float fallback) {
    if (!c.json().contains(key)) return fallback;
    return c.json()[key].is_null() ? 0.0f : c.get_float(key);
  };
  a.attn_logit_softcap = cap("attn_logit_softcapping", 50.0f);
  a.final_logit_softcap = cap("final_logit_softcapping", 30.0f);
  a.tie_word_embeddings = true;  // Gemma's head is always the embedding
  return a;
}

}  // namespace

std::unique_ptr<Model> make_gemma2(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, parse_model_args(config));
}

}  // namespace mlxnode
