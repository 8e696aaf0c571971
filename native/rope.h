// Rotary position embedding and its schedules from config.json (rope_theta, rope_traditional and
// rope_scaling: default, linear, llama3, yarn, longrope/su), as mlx-lm's rope_utils builds them.
// Engine thread only.
#pragma once
#include "loader.h"
#include "mlx_array.h"

namespace mlxnode {

// Rotary embedding over the first `dims` features via mlx_fast_rope. traditional=false is the
// rotate-half layout of HF Llama/Qwen checkpoints.
struct RoPE {
  int dims = 0;
  bool traditional = false;
  float base = 10000.0f;
  float scale = 1.0f;
  Array freqs;  // llama3 / yarn / longrope scaling: per-pair periods, replacing `base`

  // longrope (Phi-3.5, Phi-3 128k, Phi-4-mini): short and long per-pair period factors and the
  // original training context that separates them.
  Array short_freqs, long_freqs;
  int original_context = 0;
  // longrope and yarn: the factor every rotated feature is multiplied by (HF scales cos and sin by it).
  float attention_factor = 1.0f;
  // attention_factor per feature (1 past `dims`), made on the first call in the input's dtype,
  // which is fixed once a model is loaded; engine thread only, like every layer.
  mutable Array gain;

  // Reads rope_theta (default `default_base`), rope_traditional (false) and rope_scaling:
  // null/"default", "linear" (scale = 1/factor), "llama3", "yarn" or "longrope"/"su"; other types are
  // UNSUPPORTED_ARCHITECTURE.
  static RoPE from_config(const ModelConfig& c, int dims, float default_base);
  // longrope: the long factors when the KV cache can hold more than the original context (as
  // llama.cpp decides by context size), else the short ones. No-op for other schedules.
  void fit_context(int context_size);
  // dims 0 (a default RoPE): the identity.
  Array operator()(const Array& x, int offset) const;
  // One offset per batch row: `offsets` int32 [B] (continuous batching, kv_cache.h RowLayout).
  Array operator()(const Array& x, const Array& offsets) const;

 private:
  Array with_gain(const Array& x) const;  // x times attention_factor on the rotated features
};

}  // namespace mlxnode
