// Llama family (also Mistral, via the registry): our port of mlx-lm's models/llama.py.
// qwen2.cpp and qwen3.cpp keep the same shape and names, so a diff shows each family's delta.
#include <optional>
#include <vector>

#include "../layers.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json fields this family reads; the defaults are HF LlamaConfig's / mlx-lm's.
struct ModelArgs {
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int intermediate_size = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;         // default: num_attention_heads (no GQA)
  int head_dim = 0;                    // default: hidden_size / num_attention_heads
  int vocab_size = 0;
  float rms_norm_eps = 1e-6f;          // default 1e-6
  bool attention_bias = false;         // q/k/v/o biases
  bool mlp_bias = false;
  std::optional<bool> tie_word_embeddings;  // absent: tied iff the checkpoint has no lm_head.weight
  int max_position_embeddings = 2048;

  static ModelArgs parse(const ModelConfig& c) {
    ModelArgs a;
    a.hidden_size = c.get_int("hidden_size");
    a.num_hidden_layers = c.get_int("num_hidden_layers");
    a.intermediate_size = c.get_int("intermediate_size");
    a.num_attention_heads = c.get_int("num_attention_heads");
    a.num_key_value_heads = c.get_int("num_key_value_heads", a.num_attention_heads);
    a.head_dim = c.get_int("head_dim", a.num_attention_heads > 0 ? a.hidden_size / a.num_attention_heads : 0);
    a.vocab_size = c.get_int("vocab_size");
    a.rms_norm_eps = c.get_float("rms_norm_eps", 1e-6f);
    a.attention_bias = c.get_bool("attention_bias", false);
    a.mlp_bias = c.get_bool("mlp_bias", false);
    a.tie_word_embeddings = c.find_bool("tie_word_embeddings");
    a.max_position_embeddings = c.get_int("max_position_embeddings", 2048);
    return a;
  }

  AttentionArgs attention() const {
    AttentionArgs r;
    r.hidden_size = hidden_size;
    r.num_heads = num_attention_heads;
    r.num_kv_heads = num_key_value_heads;
    r.head_dim = head_dim;
    r.qkv_bias = attention_bias;
    r.o_bias = attention_bias;
    r.qk_norm = false;
    r.norm_eps = rms_norm_eps;
    return r;
  }
};

class LlamaModel : public Model {
 public:
  LlamaModel(const ModelConfig& c, Weights& w) {
    const ModelArgs args = ModelArgs::parse(c);
    validate_dims(c, args.attention(), args.num_hidden_layers, args.intermediate_size, args.vocab_size);
    const RoPE rope = RoPE::from_config(c, args.head_dim, 10000.0f);

    embed_tokens = Embedding::load(w, "model.embed_tokens", args.vocab_size, args.hidden_size);
    for (int i = 0; i < args.num_hidden_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i);
      layers.push_back(TransformerBlock{
          RMSNorm::load(w, p + ".input_layernorm.weight", args.hidden_size, args.rms_norm_eps),
          RMSNorm::load(w, p + ".post_attention_layernorm.weight", args.hidden_size, args.rms_norm_eps),
          Attention::load(w, p + ".self_attn", args.attention(), rope),
          MLP::load(w, p + ".mlp", args.hidden_size, args.intermediate_size, args.mlp_bias)});
      w.ignore(p + ".self_attn.rotary_emb.inv_freq");  // HF buffer, recomputed by RoPE
    }
    norm = RMSNorm::load(w, "model.norm.weight", args.hidden_size, args.rms_norm_eps);
    const bool tied = args.tie_word_embeddings.value_or(!w.has("lm_head.weight"));
    if (tied) {
      w.ignore("lm_head.weight");  // mlx-lm's sanitize drops it for tied models
    } else {
      lm_head = Linear::load(w, "lm_head", args.hidden_size, args.vocab_size, false);
    }

    info.model_type = c.get_string("model_type");
    info.dtype = dtype_name(norm.weight.dtype());
    info.quantization_bits = w.global_bits();
    info.vocab_size = args.vocab_size;
    info.num_layers = args.num_hidden_layers;
    info.hidden_size = args.hidden_size;
    max_position_embeddings = args.max_position_embeddings;
  }

  Array forward(const Array& tokens, KVCache& cache, bool last_only) const override {
    Array h = embed_tokens(tokens);
    for (size_t i = 0; i < layers.size(); ++i) h = layers[i](h, cache.layer(static_cast<int>(i)));
    if (last_only && h.dim(1) > 1) h = mx::slice_axis(h, 1, h.dim(1) - 1, h.dim(1));
    h = norm(h);
    return lm_head ? (*lm_head)(h) : embed_tokens.as_linear(h);
  }

 private:
  Embedding embed_tokens;
  std::vector<TransformerBlock> layers;
  RMSNorm norm;
  std::optional<Linear> lm_head;
};

}  // namespace

std::unique_ptr<Model> make_llama(const ModelConfig& config, Weights& weights) {
  return std::make_unique<LlamaModel>(config, weights);
}

}  // namespace mlxnode
