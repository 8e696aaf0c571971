// Qwen3-Next (Qwen3-Next-80B-A3B): our port of mlx-lm's models/qwen3_next.py. Three of every four
// layers (full_attention_interval) are Gated DeltaNet linear attention (hybrid.h), whose q/k/v/z and
// b/a projections are each one matrix with rows grouped per key head (in_proj_qkvz, in_proj_ba); the
// others are Qwen3 attention with an output gate and partial RoPE. The feed-forward is a sparse MoE
// (softmax router, top-k, norm_topk_prob) plus a shared expert weighted by sigmoid(shared_expert_gate).
#include "hybrid.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's qwen3_next.ModelArgs reads it (every key required but the defaulted ones).
HybridArgs parse_model_args(const ModelConfig& c, const Weights& w) {
  HybridArgs h;
  DecoderArgs& a = h.decoder = DecoderArgs::read_common(c);
  a.head_dim = c.get_int("head_dim");
  a.max_position_embeddings = c.get_int("max_position_embeddings");
  a.default_rope_theta = c.get_float("rope_theta");
  a.rope_dims = static_cast<int>(a.head_dim * c.get_float("partial_rotary_factor"));
  a.attention.qk_norm = true;
  a.attention.qkv_bias = a.attention.o_bias = c.get_bool("attention_bias", false);
  a.tie_word_embeddings = c.get_bool("tie_word_embeddings", false);
  h.linear = read_gated_delta_args(c, a.hidden_size, a.rms_norm_eps);
  h.linear.grouped_projections = true;
  h.full_attention_interval = c.get_int("full_attention_interval", 4);
  h.moe = qwen_moe_args(c, a.num_hidden_layers);
  h.moe.shared_expert_intermediate_size = c.get_int("shared_expert_intermediate_size");
  // mlx-lm's sanitize treats a checkpoint with HF's per-expert tensors as HF's: norms stored as w - 1.
  h.hf_layout = w.has("model.layers.0.mlp.experts.0.up_proj.weight");
  a.norm_plus_one = h.hf_layout;
  return h;
}

}  // namespace

std::unique_ptr<Model> make_qwen3_next(const ModelConfig& config, Weights& weights) {
  weights.ignore_prefix("mtp.");  // the multi-token-prediction head, unused for generation (as mlx-lm)
  return std::make_unique<HybridModel>(config, weights, parse_model_args(config, weights));
}

}  // namespace mlxnode
