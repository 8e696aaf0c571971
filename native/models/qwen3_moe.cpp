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
  MoeArgs m;
  m.num_experts = c.get_int("num_experts");
  m.top_k = c.get_int("num_experts_per_tok");
  m.expert_intermediate_size = c.get_int("moe_intermediate_size");
  m.norm_topk_prob = c.get_bool("norm_topk_prob", false);
  m.kth_from_top = true;
  const int step = c.get_int("decoder_sparse_step", 1);
  if (step < 1) c.fail("decoder_sparse_step must be at least 1");
  std::vector<bool> dense(a.num_hidden_layers > 0 ? a.num_hidden_layers : 0, false);
  if (c.has("mlp_only_layers")) {
    const nlohmann::json& only = c.json()["mlp_only_layers"];
    if (!only.is_array()) c.fail("mlp_only_layers must be a list of layer indices");
    for (const auto& i : only) {
      if (!i.is_number_integer() || i.get<int64_t>() < 0 || i.get<int64_t>() >= a.num_hidden_layers)
        c.fail("mlp_only_layers entry " + i.dump() + " is not a layer index");
      dense[i.get<size_t>()] = true;
    }
  }
  for (size_t i = 0; i < dense.size(); ++i)
    m.sparse_layers.push_back(!dense[i] && m.num_experts > 0 && (i + 1) % step == 0);
  return {a, m};
}

}  // namespace

std::unique_ptr<Model> make_qwen3_moe(const ModelConfig& config, Weights& weights) {
  const auto [args, moe] = parse_model_args(config);
  return std::make_unique<MoeModel>(config, weights, args, moe);
}

}  // namespace mlxnode
