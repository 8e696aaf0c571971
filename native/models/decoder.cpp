#include "decoder.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace mlxnode {

namespace {

// The float nearest to `v` that bfloat16 can hold (round to nearest even on the upper 16 bits).
float round_to_bfloat16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000u;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

}  // namespace

DecoderArgs DecoderArgs::read_common(const ModelConfig& c) {
  DecoderArgs a;
  a.hidden_size = c.get_int("hidden_size");
  a.num_hidden_layers = c.get_int("num_hidden_layers");
  a.intermediate_size = c.get_int("intermediate_size");
  a.num_attention_heads = c.get_int("num_attention_heads");
  a.num_key_value_heads = c.get_int("num_key_value_heads", a.num_attention_heads);
  a.vocab_size = c.get_int("vocab_size");
  a.rms_norm_eps = c.get_float("rms_norm_eps", 1e-6f);
  a.tie_word_embeddings = c.find_bool("tie_word_embeddings");
  return a;
}

bool DecoderArgs::read_layer_types(const ModelConfig& c) {
  if (!c.has("layer_types")) return false;
  const nlohmann::json& types = c.json()["layer_types"];
  if (!types.is_array() || types.size() != static_cast<size_t>(num_hidden_layers))
    c.fail("layer_types must list " + std::to_string(num_hidden_layers) + " layers");
  sliding_layers.clear();
  for (const auto& t : types) {
    if (!t.is_string() || (t != "sliding_attention" && t != "full_attention"))
      c.fail("layer_types entries must be \"sliding_attention\" or \"full_attention\"");
    sliding_layers.push_back(t == "sliding_attention");
  }
  return true;
}

AttentionArgs DecoderArgs::layer_attention(int layer) const {
  AttentionArgs r = attention;
  r.hidden_size = hidden_size;
  r.num_heads = num_attention_heads;
  r.num_kv_heads = num_key_value_heads;
  r.head_dim = head_dim;
  r.norm_eps = rms_norm_eps;
  r.norm_plus_one = norm_plus_one;
  if (!sliding_layers.empty() && sliding_layers[layer]) r.sliding_window = sliding_window;
  return r;
}

void DecoderArgs::validate(const ModelConfig& c) const {
  // Bounds far above any real checkpoint, so sizes and their products stay exact in 32-bit shapes
  // and nothing is allocated for an absurd config (a 2^30 head_dim once built a 4 GB RoPE table).
  c.check_range("hidden_size", hidden_size, 1, 1 << 17);
  c.check_range("num_hidden_layers", num_hidden_layers, 1, 1024);
  c.check_range("intermediate_size", intermediate_size, 1, 1 << 20);
  c.check_range("num_attention_heads", num_attention_heads, 1, 1024);
  c.check_range("num_key_value_heads", num_key_value_heads, 1, num_attention_heads);
  c.check_range("head_dim", head_dim, 2, 1024);
  c.check_range("vocab_size", vocab_size, 1, 1 << 22);
  c.check_range("max_position_embeddings", max_position_embeddings, 1, 1 << 27);
  c.check_range("num_attention_heads x head_dim", static_cast<int64_t>(num_attention_heads) * head_dim, 1, 1 << 20);
  if (sliding_window != 0) c.check_range("sliding_window", sliding_window, 1, 1 << 27);
  if (!(rms_norm_eps > 0.0f && rms_norm_eps < 1.0f))
    c.fail("'rms_norm_eps' = " + std::to_string(rms_norm_eps) + " is outside (0, 1)");
  if (num_attention_heads % num_key_value_heads != 0)
    c.fail("num_attention_heads (" + std::to_string(num_attention_heads) +
           ") is not a multiple of num_key_value_heads (" + std::to_string(num_key_value_heads) + ")");
  if (head_dim % 2 != 0) c.fail("head_dim must be even for RoPE");
  if (rope_dims < 0 || rope_dims > head_dim || rope_dims % 2 != 0)
    c.fail("the rotary dimensions (head_dim x partial_rotary_factor = " + std::to_string(rope_dims) +
           ") must be even and at most head_dim (" + std::to_string(head_dim) + ")");
}

DecoderEnds DecoderEnds::load(const ModelConfig& c, Weights& w, const DecoderArgs& args) {
  DecoderEnds e;
  e.embed_tokens = Embedding::load(w, "model.embed_tokens", args.vocab_size, args.hidden_size);
  e.norm = RMSNorm::load(w, "model.norm.weight", args.hidden_size, args.rms_norm_eps, args.norm_plus_one);
  if (args.scale_embeddings) {
    e.embed_scale = std::sqrt(static_cast<float>(args.hidden_size));
    if (args.bf16_embed_scale) e.embed_scale = round_to_bfloat16(e.embed_scale);
  }
  e.final_softcap = args.final_logit_softcap;
  const bool tied = args.tie_word_embeddings.value_or(!w.has("lm_head.weight"));
  if (tied) {
    w.ignore("lm_head.weight");  // mlx-lm's sanitize drops it for tied models
  } else {
    e.lm_head = Linear::load(w, "lm_head", args.hidden_size, args.vocab_size, false);
  }
  return e;
}

Array DecoderEnds::embed(const Array& tokens) const {
  Array h = embed_tokens(tokens);
  return embed_scale > 0 ? mx::multiply(h, Array::scalar(embed_scale, h.dtype())) : h;
}

Array DecoderEnds::logits(Array h, bool last_only) const {
  // The head is the largest matmul; for decode only the last position's logits are needed.
  if (last_only && h.dim(1) > 1) h = mx::slice_axis(h, 1, h.dim(1) - 1, h.dim(1));
  h = norm(h);
  Array logits = lm_head ? (*lm_head)(h) : embed_tokens.as_linear(h);
  return final_softcap > 0 ? mx::softcap(logits, final_softcap) : logits;
}

void DecoderEnds::describe(Model& model, const ModelConfig& c, const Weights& w, const DecoderArgs& args) const {
  model.info.model_type = c.get_string("model_type");
  model.info.dtype = dtype_name(norm.weight.dtype());
  model.info.quantization_bits = w.global_bits();
  model.info.vocab_size = args.vocab_size;
  model.info.num_layers = args.num_hidden_layers;
  model.info.hidden_size = args.hidden_size;
  // Every layer's keys and values of one position (a sliding layer's stop growing at its window).
  const int64_t element = norm.weight.dtype() == MLX_FLOAT32 ? 4 : 2;
  model.info.kv_bytes_per_token = static_cast<int64_t>(args.num_hidden_layers) * 2 * args.num_key_value_heads * args.head_dim * element;
  model.max_position_embeddings = args.max_position_embeddings;
}

DecoderModel::DecoderModel(const ModelConfig& c, Weights& w, const DecoderArgs& args) {
  // Before RoPE::from_config: the llama3 schedule sizes its table from head_dim.
  args.validate(c);
  const RoPE rope = RoPE::from_config(c, args.rope_dims > 0 ? args.rope_dims : args.head_dim, args.default_rope_theta);
  // gemma3's local layers: plain RoPE on their own base, no scaling. Used when local_rope_theta > 0.
  RoPE local_rope;
  local_rope.dims = args.head_dim;
  local_rope.base = args.local_rope_theta;
  if (!args.sliding_layers.empty() && args.sliding_layers.size() != static_cast<size_t>(args.num_hidden_layers))
    c.fail("layer_types must name " + std::to_string(args.num_hidden_layers) + " layers");
  if (!args.no_rope_layers.empty() && args.no_rope_layers.size() != static_cast<size_t>(args.num_hidden_layers))
    c.fail("no_rope_layers must list " + std::to_string(args.num_hidden_layers) + " layers");

  ends = DecoderEnds::load(c, w, args);
  const bool plus_one = args.norm_plus_one;
  auto norm_at = [&](const std::string& name) { return RMSNorm::load(w, name, args.hidden_size, args.rms_norm_eps, plus_one); };
  for (int i = 0; i < args.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    const bool sliding = !args.sliding_layers.empty() && args.sliding_layers[i];
    // local_rope_theta 0: sliding layers keep the model's RoPE (phi3's window on every layer).
    const bool own_rope = sliding && args.local_rope_theta > 0;
    const bool no_rope = !args.no_rope_layers.empty() && args.no_rope_layers[i];
    TransformerBlock block{norm_at(p + ".input_layernorm.weight"), norm_at(p + ".post_attention_layernorm.weight"),
                           Attention::load(w, p + ".self_attn", args.layer_attention(i), no_rope ? RoPE{} : own_rope ? local_rope : rope),
                           MLP::load(w, p + ".mlp", args.hidden_size, args.intermediate_size, args.mlp_bias, args.fused_gate_up)};
    block.mlp.gelu = args.gelu_mlp;
    block.clip_residual = args.clip_residual;
    if (args.sandwich_norms) {
      block.pre_feedforward_layernorm = norm_at(p + ".pre_feedforward_layernorm.weight");
      block.post_feedforward_layernorm = norm_at(p + ".post_feedforward_layernorm.weight");
    }
    layers.push_back(std::move(block));
    w.ignore(p + ".self_attn.rotary_emb.inv_freq");  // HF buffer, recomputed by RoPE
  }
  ends.describe(*this, c, w, args);
}

std::vector<AdapterTarget> DecoderModel::adapter_targets() {
  std::vector<AdapterTarget> targets;
  for (size_t i = 0; i < layers.size(); ++i) {
    TransformerBlock& b = layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    auto add = [&](const std::string& key, std::vector<Linear*> parts) {
      targets.push_back(AdapterTarget{p + key, key, static_cast<int>(i), std::move(parts)});
    };
    Attention& a = b.self_attn;
    if (a.args.fused_qkv) {
      add("self_attn.qkv_proj", {&a.q_proj, &a.k_proj, &a.v_proj});
    } else {
      add("self_attn.q_proj", {&a.q_proj});
      add("self_attn.k_proj", {&a.k_proj});
      add("self_attn.v_proj", {&a.v_proj});
    }
    add("self_attn.o_proj", {&a.o_proj});
    if (b.mlp.fused) {
      add("mlp.gate_up_proj", {&b.mlp.gate_proj, &b.mlp.up_proj});
    } else {
      add("mlp.gate_proj", {&b.mlp.gate_proj});
      add("mlp.up_proj", {&b.mlp.up_proj});
    }
    add("mlp.down_proj", {&b.mlp.down_proj});
  }
  if (ends.lm_head) targets.push_back(AdapterTarget{"lm_head", "", -1, {&*ends.lm_head}});
  return targets;
}

}  // namespace mlxnode
