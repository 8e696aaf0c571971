// Phi-3 (Phi-3 mini/medium 4k and 128k, Phi-3.5-mini, Phi-4-mini): our port of mlx-lm's
// models/phi3.py. The graph is decoder.cpp's; the delta is the fused projections (qkv_proj,
// gate_up_proj, split into row blocks at load), head_dim = hidden_size / heads, RoPE over
// head_dim x partial_rotary_factor features, and longrope scaling (layers.cpp), whose short or
// long factors are chosen by the context size as llama.cpp does (mlx-lm always takes the long ones),
// and HF's sliding_window on every layer (mlx-lm ignores it).
#include <cmath>

#include "decoder.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's phi3.ModelArgs reads it; the defaults are mlx-lm's.
DecoderArgs parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.head_dim = a.num_attention_heads > 0 ? a.hidden_size / a.num_attention_heads : 0;
  a.max_position_embeddings = c.get_int("max_position_embeddings", 131072);
  a.default_rope_theta = 10000.0f;
  a.attention.fused_qkv = a.fused_gate_up = true;
  const float partial = c.get_float("partial_rotary_factor", 1.0f);
  if (!(partial > 0.0f && partial <= 1.0f)) c.fail("partial_rotary_factor must be in (0, 1]");
  a.rope_dims = static_cast<int>(std::floor(a.head_dim * partial));
  if (!a.tie_word_embeddings) a.tie_word_embeddings = false;  // mlx-lm's default: an lm_head
  // HF Phi3 attends within sliding_window on every layer (Phi-3-mini-4k: 2047 of a 4096 context);
  // mlx-lm ignores it. A window no context reaches (Phi-3.5: 262144) changes nothing.
  if (c.has("sliding_window")) {
    a.sliding_window = c.get_int("sliding_window");
    if (a.sliding_window <= 0) c.fail("sliding_window must be positive");
    a.sliding_layers.assign(a.num_hidden_layers, true);
  }
  return a;
}

}  // namespace

std::unique_ptr<Model> make_phi3(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, parse_model_args(config));
}

}  // namespace mlxnode
