// Qwen3.5 (dense, and through qwen3_5_moe.cpp its MoE models): our port of mlx-lm's models/qwen3_5.py,
// run as its text model. Qwen3-Next's hybrid layers (hybrid.h) with the linear attention's projections
// as four matrices (in_proj_qkv, in_proj_z, in_proj_b, in_proj_a), RoPE under rope_parameters (partial,
// 0.25 of head_dim by default; the multimodal mrope sections coincide with plain RoPE for text), and a
// dense MLP, or with experts a sparse MoE plus a gated shared expert on every layer.
#include "hybrid.h"
#include "registry.h"

namespace mlxnode {

namespace {

// The text model's config: text_config when present (multimodal checkpoints), else the top level,
// with mlx-lm's TextModelArgs defaults; rope_theta and rope_scaling lifted from rope_parameters,
// where RoPE::from_config reads them.
ModelConfig text_config(const ModelConfig& c) {
  nlohmann::json t = c.json();
  if (c.has("text_config")) {
    if (!c.json()["text_config"].is_object()) c.fail("text_config must be an object");
    t = c.json()["text_config"];
  }
  nlohmann::json rope = {{"type", "default"}, {"rope_theta", 100000}, {"partial_rotary_factor", 0.25}};
  if (t.contains("rope_parameters") && !t["rope_parameters"].is_null()) {
    if (!t["rope_parameters"].is_object()) c.fail("rope_parameters must be an object");
    rope = t["rope_parameters"];
  }
  t["rope_theta"] = rope.contains("rope_theta") ? rope["rope_theta"] : nlohmann::json(100000.0);
  t["partial_rotary_factor"] = rope.contains("partial_rotary_factor") ? rope["partial_rotary_factor"] : nlohmann::json(0.25);
  t["rope_scaling"] = rope;
  t["model_type"] = c.get_string("model_type");
  return ModelConfig(std::move(t), c.has("text_config") ? c.path() + " text_config" : c.path());
}

HybridArgs parse_model_args(const ModelConfig& c, const Weights& w) {
  HybridArgs h;
  DecoderArgs& a = h.decoder;
  a.hidden_size = c.get_int("hidden_size", 4096);
  a.num_hidden_layers = c.get_int("num_hidden_layers", 32);
  a.intermediate_size = c.get_int("intermediate_size", 14336);
  a.num_attention_heads = c.get_int("num_attention_heads", 32);
  a.num_key_value_heads = c.get_int("num_key_value_heads", 8);
  a.vocab_size = c.get_int("vocab_size", 151936);
  a.rms_norm_eps = c.get_float("rms_norm_eps", 1e-6f);
  a.max_position_embeddings = c.get_int("max_position_embeddings", 131072);
  a.tie_word_embeddings = c.get_bool("tie_word_embeddings", false);
  a.head_dim = c.has("head_dim") ? c.get_int("head_dim") : a.num_attention_heads > 0 ? a.hidden_size / a.num_attention_heads : 0;
  a.rope_dims = static_cast<int>(a.head_dim * c.get_float("partial_rotary_factor"));
  a.attention.qk_norm = true;
  a.attention.qkv_bias = a.attention.o_bias = c.get_bool("attention_bias", false);
  h.linear.hidden_size = a.hidden_size;
  h.linear.num_k_heads = c.get_int("linear_num_key_heads", 16);
  h.linear.num_v_heads = c.get_int("linear_num_value_heads", 64);
  h.linear.head_k_dim = c.get_int("linear_key_head_dim", 192);
  h.linear.head_v_dim = c.get_int("linear_value_head_dim", 128);
  h.linear.conv_kernel = c.get_int("linear_conv_kernel_dim", 4);
  h.linear.norm_eps = a.rms_norm_eps;
  h.full_attention_interval = c.get_int("full_attention_interval", 4);
  MoeArgs& m = h.moe;
  m.num_experts = c.get_int("num_experts", 0);
  if (m.num_experts > 0) {
    m.top_k = c.get_int("num_experts_per_tok", 0);
    m.expert_intermediate_size = c.get_int("moe_intermediate_size", 0);
    m.shared_expert_intermediate_size = c.get_int("shared_expert_intermediate_size", 0);
    c.check_range("shared_expert_intermediate_size", m.shared_expert_intermediate_size, 1, 1 << 20);
    m.norm_topk_prob = c.get_bool("norm_topk_prob", true);
    m.kth_from_top = true;
  }
  // mlx-lm's sanitize: a checkpoint with the multi-token-prediction head or HF's conv1d layout
  // [C, 1, K] is HF's, whose decoder norms are stored as w - 1.
  const std::vector<int> conv = w.shape("model.layers.0.linear_attn.conv1d.weight");
  h.hf_layout = w.has_prefix("mtp.") || (conv.size() == 3 && conv[2] != 1);
  a.norm_plus_one = h.hf_layout;
  return h;
}

}  // namespace

std::unique_ptr<Model> make_qwen3_5(const ModelConfig& config, Weights& weights) {
  // As mlx-lm's qwen3_5 Model.sanitize: the vision tower is left unread, the language model's
  // tensors (HF "model.language_model.", mlx-lm "language_model.") become the text model's.
  weights.ignore_prefix("vision_tower.");
  weights.ignore_prefix("model.visual.");
  weights.rename_prefix("model.language_model.", "model.");
  weights.rename_prefix("language_model.", "");
  const ModelConfig text = text_config(config);
  const HybridArgs args = parse_model_args(text, weights);
  weights.ignore_prefix("mtp.");
  return std::make_unique<HybridModel>(text, weights, args);
}

}  // namespace mlxnode
