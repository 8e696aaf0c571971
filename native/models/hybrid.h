// Hybrid linear-attention decoders (qwen3_next, qwen3_5, qwen3_5_moe): most layers are Gated DeltaNet
// linear attention with a fixed-size recurrent state, every full_attention_interval-th layer is full
// attention (gated output, partial RoPE) with a KV cache. Their own block type, composed from the
// shared layers (Attention, MLP, RMSNorm, DecoderEnds, SparseMoe), as moe.h does for experts. Our
// version of mlx-lm's qwen3_next.py GatedDeltaNet and gated_delta.py's ops path. Engine thread only.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "../recurrent_cache.h"
#include "decoder.h"
#include "moe.h"

namespace mlxnode {

struct GatedDeltaArgs {
  int hidden_size = 0;
  int num_k_heads = 0, num_v_heads = 0;  // value heads share key heads in groups (num_v_heads % num_k_heads == 0)
  int head_k_dim = 0, head_v_dim = 0;
  int conv_kernel = 4;
  float norm_eps = 1e-6f;
  // qwen3_next: one in_proj_qkvz and one in_proj_ba, their rows grouped per key head; qwen3_5:
  // in_proj_qkv, in_proj_z, in_proj_b, in_proj_a
  bool grouped_projections = false;

  int key_dim() const { return num_k_heads * head_k_dim; }
  int value_dim() const { return num_v_heads * head_v_dim; }
  int conv_dim() const { return 2 * key_dim() + value_dim(); }  // q, k and v go through the convolution
  void validate(const ModelConfig& c) const;
};

// Gated DeltaNet: x -> (q, k, v) through a causal depthwise convolution (silu), z, and per value head
// a decay g = exp(-exp(A_log) softplus(a + dt_bias)) and a write strength beta = sigmoid(b). The
// state S [Dv, Dk] per value head follows the gated delta rule, one position at a time:
//   S = g S;  S = S + beta (v - S k) k^T;  y = S q
// then y is RMS-normed, gated by silu(z) and projected back.
struct GatedDeltaNet {
  GatedDeltaArgs args;
  Linear in_proj_qkv, in_proj_z, in_proj_b, in_proj_a;  // qwen3_5
  Linear in_proj_qkvz, in_proj_ba;                      // qwen3_next
  Array conv_weight;                                    // [conv_dim, conv_kernel, 1] (mlx.nn.Conv1d's layout)
  Array A_log, dt_bias;                                 // [num_v_heads]; A_log always float32
  RMSNorm norm;                                         // over head_v_dim, before the silu(z) gate
  Linear out_proj;

  // conv1d.weight as mlx-lm saves it, or in HF's layout [conv_dim, 1, conv_kernel].
  static GatedDeltaNet load(Weights& w, const std::string& prefix, const GatedDeltaArgs& args);
  Array operator()(const Array& x, RecurrentCache& cache) const;  // x: [B, T, hidden]

 private:
  struct Projected {
    Array qkv;   // [B, T, conv_dim]: q, k, v of every head, in that order
    Array z;     // [B, T, Hv, Dv]
    Array b, a;  // [B, T, Hv]
  };
  Projected project(const Array& x) const;
};

// q, k [B, T, Hv, Dk], v [B, T, Hv, Dv], g and beta [B, T, Hv]; `state` [B, Hv, Dv, Dk] float32 is
// advanced over the T positions. Returns y [B, T, Hv, Dv] in q's dtype. mlx-lm's gated_delta_ops;
// its Metal kernel (gated_delta_kernel) computes the same recurrence in one dispatch.
Array gated_delta_rule(const Array& q, const Array& k, const Array& v, const Array& g, const Array& beta, Array& state);

struct HybridBlock {
  RMSNorm input_layernorm, post_attention_layernorm;
  std::optional<GatedDeltaNet> linear_attn;  // linear layers
  std::optional<Attention> self_attn;        // every full_attention_interval-th layer
  std::optional<SparseMoe> moe;
  std::optional<MLP> mlp;

  // Layer `index` of `cache`: a RecurrentCache for a linear layer, an AttentionCache for full attention.
  Array operator()(const Array& x, KVCache& cache, int index) const;
};

struct HybridArgs {
  DecoderArgs decoder;     // head_dim, rope_dims, the attention's output gate and q/k norms
  GatedDeltaArgs linear;
  int full_attention_interval = 4;  // layer i is full attention iff (i + 1) % interval == 0
  MoeArgs moe;             // num_experts 0: a dense MLP on every layer
  bool hf_layout = false;  // HF's checkpoint (as mlx-lm's sanitize tells it): decoder norms stored as w - 1
};

class HybridModel : public Model {
 public:
  HybridModel(const ModelConfig& c, Weights& w, const HybridArgs& args);
  Array forward(const Array& tokens, KVCache& cache, bool last_only) const override;
  KVCache make_cache() const override;
  void fit_context(int context_size) override;

 private:
  std::vector<HybridBlock> layers;
  DecoderEnds ends;
};

// Reading the parts of config.json the hybrid families share (qwen3_next's key names).
GatedDeltaArgs read_gated_delta_args(const ModelConfig& c, int hidden_size, float eps);

}  // namespace mlxnode
