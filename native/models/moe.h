// Mixture-of-experts decoders (mixtral, qwen3_moe, olmoe): their own block type, composed from the
// shared layers (Attention, MLP, RMSNorm, DecoderEnds) plus the expert layer below, in place of more
// flags on TransformerBlock (as llama.cpp's per-architecture graph builders do). Our version of
// mlx-lm's switch_layers.py and the families' SparseMoeBlock. Engine thread only.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "decoder.h"

namespace mlxnode {

// One linear map per expert, stacked: y[r] = x[r] W[idx[r]]^T (+ b[idx[r]]), dense or affine-quantized.
struct SwitchLinear {
  Array weight_t;                // dense: [E, in, out], the transposed view made once at load
  Array weight, scales, biases;  // quantized: [E, out, in*bits/32] and [E, out, in/group_size]
  Array bias;                    // [E, out]; empty when none
  std::optional<QuantParams> quant;

  // `stacked` is mlx-lm's switch_mlp layout ("<p>.switch_mlp.gate_proj"); when its weight is absent,
  // the per-expert tensors `experts.<e>.<name>` under `per_expert` are stacked (what mlx-lm's
  // sanitize does for HF checkpoints).
  static SwitchLinear load(Weights& w, const std::string& stacked, const std::string& per_expert, const std::string& name,
                           int in, int out, int experts, bool has_bias);
  // x: [..., 1, in] rows; idx: the expert of each row, broadcast against x's leading dims.
  Array operator()(const Array& x, const Array& idx, bool sorted) const;
};

enum class ExpertActivation {
  SwiGLU,       // silu(gate) * up
  ClampedSwiGLU,  // gpt_oss: g * sigmoid(1.702 g) * (u + 1), g = min(gate, 7), u = clip(up, -7, 7)
  GeGLU,          // gemma4: gelu_approx(gate) * up
};

// The experts' gated MLPs: down(act(gate(x), up(x))) with each token's own experts.
struct SwitchGLU {
  SwitchLinear gate_proj, up_proj, down_proj;
  ExpertActivation activation = ExpertActivation::SwiGLU;

  // x: [N, D], idx: [N, k] -> [N, k, D]. With many (token, expert) pairs, rows are sorted by expert
  // first so each expert's weights are read once (mlx-lm sorts at 64 pairs or more).
  Array operator()(const Array& x, const Array& idx) const;

 private:
  Array activate(const Array& gate, const Array& up) const;
};

enum class Router {
  TopKThenSoftmax,  // mixtral: softmax over the k largest gate logits
  SoftmaxThenTopK,  // qwen3_moe, olmoe: the k largest of softmax(gate logits), renormalized if norm_topk_prob
};

struct MoeArgs {
  int num_experts = 0;
  int top_k = 0;
  int expert_intermediate_size = 0;
  Router router = Router::SoftmaxThenTopK;
  bool norm_topk_prob = false;
  bool expert_bias = false;            // olmoe mlp_bias: biases on every expert projection
  bool kth_from_top = false;           // qwen3_moe picks argpartition(p)[-k:], the others argpartition(-p)[:k]
  std::string block = "mlp";           // the layer's module name: mixtral's is "block_sparse_moe"
  std::string router_name = "gate";    // the router's name in the block: gpt_oss's is "router" (with a bias)
  bool router_bias = false;
  std::string stacked = "switch_mlp";  // the stacked experts' name in the block: gpt_oss's is "experts"
  ExpertActivation activation = ExpertActivation::SwiGLU;
  std::vector<std::string> per_expert_names{"gate_proj", "up_proj", "down_proj"};  // mixtral: w1, w3, w2
  std::vector<bool> sparse_layers;     // which layers have experts (the rest a dense MLP); empty: all
  // qwen3_next, qwen3_5_moe: a dense SwiGLU expert of this size that every token takes, weighted by
  // sigmoid(shared_expert_gate(x)); 0: none
  int shared_expert_intermediate_size = 0;

  // Sizes in range when any layer has experts: BAD_CONFIG naming the key.
  void validate(const ModelConfig& c) const;
};

// Qwen's expert keys (qwen3_moe, qwen3_next): num_experts, num_experts_per_tok, moe_intermediate_size,
// norm_topk_prob (default false); experts on every decoder_sparse_step-th layer (default 1) not in
// mlp_only_layers; the k largest router probabilities.
MoeArgs qwen_moe_args(const ModelConfig& c, int num_layers);

// Router + experts: y = sum over the token's k experts of score * expert(x), plus the gated shared
// expert where the family has one.
struct SparseMoe {
  Linear gate;  // hidden -> num_experts router logits
  SwitchGLU experts;
  MoeArgs args;
  std::optional<MLP> shared_expert;
  std::optional<Linear> shared_expert_gate;  // hidden -> 1

  // The feed-forward module at `prefix` ("model.layers.3.mlp"; mixtral's "...block_sparse_moe").
  static SparseMoe load(Weights& w, const std::string& prefix, int hidden, const MoeArgs& args);
  Array operator()(const Array& x) const;  // [B, T, D]
};

// Pre-norm block whose feed-forward is a SparseMoe (or, on a family's dense layers, an MLP).
struct MoeBlock {
  RMSNorm input_layernorm, post_attention_layernorm;
  Attention self_attn;
  std::optional<SparseMoe> moe;
  std::optional<MLP> mlp;

  using Cache = AttentionCache;
  Array operator()(const Array& x, AttentionCache& cache) const;
};

class MoeModel : public BlockDecoder<MoeBlock> {
 public:
  MoeModel(const ModelConfig& c, Weights& w, const DecoderArgs& args, const MoeArgs& moe);
};

}  // namespace mlxnode
