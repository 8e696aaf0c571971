// Mixtral: our port of mlx-lm's models/mixtral.py. Llama's attention (head_dim = hidden / heads,
// no biases) with a sparse MoE feed-forward (moe.h) named block_sparse_moe: softmax over the k
// largest router logits. HF's per-expert w1/w3/w2 tensors are stacked as mlx-lm's sanitize does.
#include "moe.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's mixtral.ModelArgs reads it; the defaults are mlx-lm's.
std::pair<DecoderArgs, MoeArgs> parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.rms_norm_eps = c.get_float("rms_norm_eps", 1e-5f);
  a.tie_word_embeddings = a.tie_word_embeddings.value_or(false);
  a.head_dim = a.num_attention_heads > 0 ? a.hidden_size / a.num_attention_heads : 0;  // mlx-lm ignores head_dim
  a.max_position_embeddings = c.get_int("max_position_embeddings", 32768);
  a.default_rope_theta = 1e6f;
  MoeArgs m;
  m.num_experts = c.get_int("num_local_experts", 8);
  m.top_k = c.get_int("num_experts_per_tok", 2);
  m.expert_intermediate_size = a.intermediate_size;
  m.router = Router::TopKThenSoftmax;
  m.block = "block_sparse_moe";
  m.per_expert_names = {"w1", "w3", "w2"};
  return {a, m};
}

}  // namespace

std::unique_ptr<Model> make_mixtral(const ModelConfig& config, Weights& weights) {
  const auto [args, moe] = parse_model_args(config);
  return std::make_unique<MoeModel>(config, weights, args, moe);
}

}  // namespace mlxnode
