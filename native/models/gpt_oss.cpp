// gpt-oss (gpt-oss-20b, gpt-oss-120b): our port of mlx-lm's models/gpt_oss.py, as mlx-lm saves it
// (experts already split into gate_proj/up_proj under mlp.experts). Attention with q/k/v/o biases and
// a learned sink logit per head, alternating sliding-window and full layers (layer_types); a sparse
// MoE feed-forward (moe.h) whose biased router's k largest logits are softmaxed, with biased experts
// and gpt-oss's clamped SwiGLU. The head is never tied.
#include "moe.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's gpt_oss.ModelArgs reads it; the defaults are mlx-lm's (gpt-oss-20b's).
std::pair<DecoderArgs, MoeArgs> parse_model_args(const ModelConfig& c) {
  DecoderArgs a = DecoderArgs::read_common(c);
  a.rms_norm_eps = c.get_float("rms_norm_eps", 1e-5f);
  a.tie_word_embeddings = false;
  a.head_dim = c.get_int("head_dim", 64);
  a.max_position_embeddings = c.get_int("max_position_embeddings", 131072);
  a.default_rope_theta = 150000.0f;
  a.attention.qkv_bias = a.attention.o_bias = true;
  if (!a.read_layer_types(c)) {
    // mlx-lm's default: sliding, full, sliding, full, ...
    for (int i = 0; i < a.num_hidden_layers; ++i) a.sliding_layers.push_back(i % 2 == 0);
  }
  a.sliding_window = c.get_int("sliding_window", 128);
  MoeArgs m;
  m.num_experts = c.get_int("num_local_experts", 128);
  m.top_k = c.get_int("num_experts_per_tok", 4);
  m.expert_intermediate_size = a.intermediate_size;
  m.router = Router::TopKThenSoftmax;
  m.kth_from_top = true;
  m.expert_bias = true;
  m.router_name = "router";
  m.router_bias = true;
  m.stacked = "experts";
  m.activation = ExpertActivation::ClampedSwiGLU;
  a.attention.sinks = true;
  return {a, m};
}

}  // namespace

std::unique_ptr<Model> make_gpt_oss(const ModelConfig& config, Weights& weights) {
  const auto [args, moe] = parse_model_args(config);
  return std::make_unique<MoeModel>(config, weights, args, moe);
}

}  // namespace mlxnode
