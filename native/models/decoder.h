// The decoder-only transformer that llama, qwen2, qwen3, phi3 and the Gemmas share. In mlx-lm each family file
// repeats it (the inner <Family>Model and the outer Model: embed, pre-norm blocks, norm, tied or
// untied head); here it is written once, and a family file keeps only what differs: which
// config.json keys it reads, their defaults, and its attention flags. Engine thread only.
#pragma once
#include <climits>
#include <optional>
#include <vector>

#include "../layers.h"
#include "registry.h"

namespace mlxnode {

// Everything the decoder needs from config.json, filled by a family's parse_model_args.
struct DecoderArgs {
  // Read the same way by every family (read_common).
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int intermediate_size = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;              // default: num_attention_heads (no GQA)
  int vocab_size = 0;
  float rms_norm_eps = 1e-6f;               // default 1e-6
  std::optional<bool> tie_word_embeddings;  // absent: tied iff the checkpoint has no lm_head.weight

  // Set by the family: its head_dim rule, its defaults and its layer flags (a flag the family
  // leaves alone stays off: its checkpoints have no such tensors).
  int head_dim = 0;
  int max_position_embeddings = 0;
  float default_rope_theta = 10000.0f;  // used when config.json has no rope_theta
  // The attention's flags (biases, q/k norms, fused qkv, query scale, soft cap, sinks, ...); its
  // sizes are the fields above, filled in by layer_attention.
  AttentionArgs attention;
  bool mlp_bias = false;                // biases on gate_proj/up_proj/down_proj
  bool fused_gate_up = false;           // phi3: one gate_up_proj, rows [gate; up]
  int rope_dims = 0;                    // features RoPE rotates per head; 0: all of head_dim
  // the Gemma families
  bool norm_plus_one = false;           // RMSNorm scales by 1 + weight
  bool scale_embeddings = false;        // embeddings times sqrt(hidden_size)
  bool gelu_mlp = false;                // gelu_approx(gate) instead of silu(gate)
  bool sandwich_norms = false;          // post-attention and pre/post-feedforward norms
  float final_logit_softcap = 0;        // 0: none
  // gemma3: local (sliding-window) layers with their own RoPE base; the others are global
  std::vector<bool> sliding_layers;     // empty: every layer global
  int sliding_window = 0;
  float local_rope_theta = 0;           // 0: sliding layers use the model's RoPE
  bool bf16_embed_scale = false;        // sqrt(hidden_size) rounded to bfloat16 first (as Gemma 3)
  bool clip_residual = false;           // float16 residuals summed in float32 and clipped

  // smollm3: layers whose attention has no RoPE (NoPE); empty: none
  std::vector<bool> no_rope_layers;

  static DecoderArgs read_common(const ModelConfig& c);
  // config.json's layer_types ("sliding_attention" / "full_attention" per layer) into sliding_layers;
  // false when the key is absent or null.
  bool read_layer_types(const ModelConfig& c);
  // Layer `layer`'s attention: `attention` with the model's sizes, and the window on a sliding layer.
  AttentionArgs layer_attention(int layer) const;
  // Sizes within sane bounds (64-bit checked), heads divisible by KV heads, even head_dim: BAD_CONFIG naming the key.
  void validate(const ModelConfig& c) const;
};

// What every decoder has around its blocks: the token embedding (scaled, for the Gemmas), the final
// norm and the head, or the embedding as the head when tied. Shared by DecoderModel and by the
// families with their own block type (moe.h). Weight names are HF's, as mlx-lm's sanitize leaves them.
struct DecoderEnds {
  Embedding embed_tokens;
  RMSNorm norm;
  std::optional<Linear> lm_head;  // nullopt when tied to embed_tokens
  float embed_scale = 0;          // gemma2: sqrt(hidden_size); 0: none
  float final_softcap = 0;        // gemma2: logits = cap * tanh(logits / cap); 0: none

  static DecoderEnds load(const ModelConfig& c, Weights& w, const DecoderArgs& args);
  Array embed(const Array& tokens) const;
  // Final norm and head; with `last_only`, for the last position only.
  Array logits(Array h, bool last_only) const;
  // The model's info and max_position_embeddings.
  void describe(Model& model, const ModelConfig& c, const Weights& w, const DecoderArgs& args) const;
};

// Llama's config reading (llama.cpp), which smollm3 and ministral3 extend.
DecoderArgs llama_model_args(const ModelConfig& c);

// embed_tokens -> layers (each a Block: a callable over (x, its layer's cache, of kind
// Block::Cache) with a self_attn) -> norm -> head. A family's own block type (moe.h) reuses
// everything but the block.
template <typename Block>
class BlockDecoder : public Model {
 public:
  Array forward(const Array& tokens, KVCache& cache, bool last_only) const override {
    Array h = ends.embed(tokens);
    for (size_t i = 0; i < layers.size(); ++i)
      h = layers[i](h, cache.layer_as<typename Block::Cache>(static_cast<int>(i)));
    return ends.logits(h, last_only);
  }
  // Sliding-window layers get a rotating cache of their window, the others keep every position.
  KVCache make_cache() const override {
    std::vector<std::unique_ptr<LayerCache>> caches;
    for (const Block& layer : layers) caches.push_back(make_attention_cache(layer.self_attn.args.sliding_window, context_size));
    return KVCache(std::move(caches));
  }
  void fit_context(int size) override {
    context_size = size;
    for (Block& layer : layers) layer.self_attn.rope.fit_context(size);
  }

 protected:
  std::vector<Block> layers;
  DecoderEnds ends;
  int context_size = INT_MAX;  // until fit_context
};

// The dense decoder: TransformerBlock layers.
class DecoderModel : public BlockDecoder<TransformerBlock> {
 public:
  // Checks the args, then takes (and shape-checks) every tensor from `w`.
  DecoderModel(const ModelConfig& c, Weights& w, const DecoderArgs& args);
  std::vector<AdapterTarget> adapter_targets() override;
};

}  // namespace mlxnode
