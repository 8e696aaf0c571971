// What the Gemma families (gemma, gemma2, gemma3_text) share in reading config.json.
#pragma once
#include "decoder.h"

namespace mlxnode {

// Gemma's graph traits: RMSNorm by (1 + weight), embeddings scaled by sqrt(hidden_size), gelu
// (tanh approximation) in the MLP.
void set_gemma_traits(DecoderArgs& a);

// Gemma 1 and 2's config: the common keys, a required head_dim, max_position_embeddings (default
// 8192), RoPE base 10000, the traits above and a tied head.
DecoderArgs gemma_model_args(const ModelConfig& c);

// query_pre_attn_scalar^-0.5 (gemma2, gemma3), `fallback` when the key is absent.
float query_pre_attn_scale(const ModelConfig& c, float fallback);

}  // namespace mlxnode
