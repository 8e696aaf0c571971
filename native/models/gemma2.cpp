// Gemma 2: our port of mlx-lm's models/gemma2.py. The graph is decoder.cpp's; the delta is
// RMSNorm by (1 + weight), embeddings scaled by sqrt(hidden_size), sandwich norms around
// attention and the MLP, gelu_approx in the MLP, queries scaled by query_pre_attn_scalar^-0.5,
// attention scores and final logits soft-capped (cap * tanh(x / cap)), and a tied head. As in
// mlx-lm, every layer attends globally: the sliding window of alternate layers (4096 tokens)
// only differs beyond the default context of 4096.
#include "gemma.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's gemma2.ModelArgs reads it (Gemma 1's keys and more); the defaults are mlx-lm's.
DecoderArgs parse_model_args(const ModelConfig& c) {
  DecoderArgs a = gemma_model_args(c);
  a.sandwich_norms = true;
  a.attention.query_scale = query_pre_attn_scale(c, 144.0f);
  // Absent: mlx-lm's (and HF's) defaults, 50 and 30; null: no cap (HF allows it).
  auto cap = [&](const char* key, float fallback) {
    if (!c.json().contains(key)) return fallback;
    return c.json()[key].is_null() ? 0.0f : c.get_float(key);
  };
  a.attention.logit_softcap = cap("attn_logit_softcapping", 50.0f);
  a.final_logit_softcap = cap("final_logit_softcapping", 30.0f);
  return a;
}

}  // namespace

std::unique_ptr<Model> make_gemma2(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, parse_model_args(config));
}

}  // namespace mlxnode
