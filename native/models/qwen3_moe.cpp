// Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): our port of mlx-lm's models/qwen3_moe.py. Qwen3's
// attention (per-head q/k norms, explicit head_dim) with a sparse MoE feed-forward (moe.h): the k
// largest router probabilities, renormalized when norm_topk_prob. Layers listed in mlp_only_layers,
// or off the decoder_sparse_step grid, keep a dense MLP of intermediate_size.
#include "moe.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's qwen3_moe.ModelArgs reads it (it requires every key; absent optional ones
// take HF Qwen3MoeConfig's defaults here).
std::pair<DecoderArgs, MoeArgs> parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.head_dim = c.get_int("head_dim");
  a.max_position_embeddings = c.get_int("max_position_embeddings", 32768);
  a.default_rope_theta = 1e6f;
  a.attention.qk_norm = true;
  MoeArgs m = qwen_moe_args(c, a.num_hidden_layers);
  return {a, m};
}

}  // namespace

std::unique_ptr<Model> make_qwen3_moe(const ModelConfig& config, Weights& weights) {
  const auto [args, moe] = parse_model_args(config);
  return std::make_unique<MoeModel>(config, weights, args, moe);
}

}  // namespace mlxnode
