// Gemma 3 text models (model_type gemma3_text: Gemma-3-1B and the text towers as mlx-community
// converts them): our port of mlx-lm's models/gemma3_text.py. The graph is decoder.cpp's with
// gemma2's norms, gelu and embedding scale (rounded through bfloat16, as Gemma 3 does), plus
// RMSNorm(1 + w) over head_dim on queries and keys, and two kinds of layers: local ones attend
// to the last `sliding_window` positions with RoPE base rope_local_base_freq; global ones attend
// to everything with rope_theta and rope_scaling. Local layers keep a rotating cache of their
// window (as mlx-lm's make_cache), so their memory stops growing at `sliding_window` positions.
#include "../errors.h"
#include "gemma.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's gemma3_text.ModelArgs reads it; the defaults are mlx-lm's.
DecoderArgs parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.head_dim = c.get_int("head_dim", 256);
  a.max_position_embeddings = c.get_int("max_position_embeddings", 32768);
  a.default_rope_theta = 1000000.0f;
  a.local_rope_theta = c.get_float("rope_local_base_freq", 10000.0f);
  set_gemma_traits(a);
  a.bf16_embed_scale = a.sandwich_norms = a.attention.qk_norm = a.clip_residual = true;
  a.attention.query_scale = query_pre_attn_scale(c, 256.0f);
  if (c.has("attn_logit_softcapping"))
    throw EngineError(kUnsupportedArchitecture, c.path() + ": gemma3 with attn_logit_softcapping is not supported");
  if (c.has("final_logit_softcapping")) a.final_logit_softcap = c.get_float("final_logit_softcapping");

  a.sliding_window = c.get_int("sliding_window", 512);
  if (a.sliding_window <= 0) c.fail("sliding_window must be positive");
  // Newer configs list each layer's kind; older ones give a period (every n-th layer global).
  if (!a.read_layer_types(c)) {
    const int pattern = c.get_int("sliding_window_pattern", 6);
    if (pattern <= 0) c.fail("sliding_window_pattern must be positive");
    for (int i = 0; i < a.num_hidden_layers; ++i) a.sliding_layers.push_back((i + 1) % pattern != 0);
  }
  return a;
}

}  // namespace

std::unique_ptr<Model> make_gemma3_text(const ModelConfig& config, Weights& weights) {
  return std::make_unique<DecoderModel>(config, weights, parse_model_args(config));
}

}  // namespace mlxnode
