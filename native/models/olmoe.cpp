// OLMoE: our port of mlx-lm's models/olmoe.py. Attention whose q/k norms span all heads' features
// (before the split into heads), a sparse MoE feed-forward (moe.h) on every layer: the k largest
// router probabilities, renormalized when norm_topk_prob; mlp_bias puts biases on every expert.
#include "moe.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's olmoe.ModelArgs reads it; the defaults are mlx-lm's.
std::pair<DecoderArgs, MoeArgs> parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.tie_word_embeddings = a.tie_word_embeddings.value_or(true);
  a.head_dim = c.get_int("head_dim", a.num_attention_heads > 0 ? a.hidden_size / a.num_attention_heads : 0);
  a.max_position_embeddings = c.get_int("max_position_embeddings", 4096);
  a.default_rope_theta = 10000.0f;
  a.attention.qkv_bias = a.attention.o_bias = c.get_bool("attention_bias", false);
  a.attention.qk_norm = true;
  MoeArgs m;
  m.num_experts = c.get_int("num_experts");
  m.top_k = c.get_int("num_experts_per_tok");
  m.expert_intermediate_size = a.intermediate_size;
  m.norm_topk_prob = c.get_bool("norm_topk_prob", false);
  m.expert_bias = c.get_bool("mlp_bias", false);
  a.attention.qk_norm_across_heads = true;
  return {a, m};
}

}  // namespace

std::unique_ptr<Model> make_olmoe(const ModelConfig& config, Weights& weights) {
  const auto [args, moe] = parse_model_args(config);
  return std::make_unique<MoeModel>(config, weights, args, moe);
}

}  // namespace mlxnode
