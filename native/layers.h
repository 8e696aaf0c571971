// Building blocks shared by the model families (our version of mlx-lm's models/base.py plus the
// mlx.nn layers it uses). Each block loads its own tensors from Weights, checking shapes, and
// builds its part of the graph on call. Engine thread only.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "adapter.h"
#include "kv_cache.h"
#include "loader.h"
#include "mlx_array.h"
#include "rope.h"

namespace mlxnode {

// y = x W^T (+ b), dense or MLX affine-quantized (quantized iff `<prefix>.scales` exists), plus
// the low-rank update of the request's adapter when it has one (adapter.h).
struct Linear {
  Array weight_t;                // dense: the [in, out] transposed view, made once at load
  Array weight, scales, biases;  // quantized: packed [out, in*bits/32] and [out, in/group_size]
  Array bias;                    // empty when the layer has none
  std::optional<QuantParams> quant;
  int in = 0, out = 0;
  std::vector<LoraDelta> adapters;  // unfused adapters, by id; few, so searched linearly

  // The weight as [out, in] in the compute dtype (dequantized when quantized).
  Array dense_weight() const;
  // Replaces the weight by `w` [out, in], quantized again with the layer's own parameters.
  void set_weight(const Array& w);

  static Linear load(Weights& w, const std::string& prefix, int in, int out, bool has_bias);
  // A fused projection (Phi-3's qkv_proj, gate_up_proj) as one Linear per block of output rows,
  // of sizes `outs`: dense or quantized rows are independent, so each part is a row slice.
  static std::vector<Linear> load_split(Weights& w, const std::string& prefix, int in, const std::vector<int>& outs);
  Array operator()(const Array& x) const;

 private:
  Array base(const Array& x, bool with_bias) const;
};

// Token embedding table, dense or quantized; `as_linear` is the tied output head.
struct Embedding {
  Array weight, weight_t, scales, biases;
  std::optional<QuantParams> quant;

  static Embedding load(Weights& w, const std::string& prefix, int vocab, int dims);
  Array operator()(const Array& ids) const;     // int32 [B, T] -> [B, T, dims]
  Array as_linear(const Array& x) const;        // [.., dims] -> [.., vocab]
};

struct RMSNorm {
  Array weight;
  float eps = 1e-6f;

  // `plus_one`: Gemma stores w - 1 (it scales by 1 + w); the 1 is added once here.
  static RMSNorm load(Weights& w, const std::string& name, int dims, float eps, bool plus_one = false);
  Array operator()(const Array& x) const;
};

// A layer's attention. Sizes, norm_eps, norm_plus_one and sliding_window come from the model
// (DecoderArgs::layer_attention); the other fields are flags the family sets.
struct AttentionArgs {
  int hidden_size = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  bool qkv_bias = false;  // qwen2: true
  bool o_bias = false;
  bool qk_norm = false;   // qwen3: RMSNorm over head_dim on queries and keys before RoPE
  bool fused_qkv = false; // phi3: one qkv_proj whose output rows are [q; k; v]
  float norm_eps = 1e-6f;
  float query_scale = 0;     // 0: 1/sqrt(head_dim); gemma2: query_pre_attn_scalar^-0.5
  float logit_softcap = 0;   // gemma2: scores = cap * tanh(scores / cap) before the softmax
  int sliding_window = 0;    // local layers: a query sees only the last `sliding_window` keys (a rotating cache)
  bool norm_plus_one = false;  // gemma3: q_norm/k_norm scale by 1 + weight
  bool qk_norm_across_heads = false;  // olmoe: q_norm/k_norm over all heads' features at once
  // ministral3 (Llama 4's long-context scaling): queries at position p times
  // 1 + beta * log(1 + floor(p / period)); beta 0: none
  float position_query_beta = 0;
  int position_query_period = 0;
  bool sinks = false;  // gpt_oss: a learned logit per query head (<prefix>.sinks) in every softmax
  // qwen3_next, qwen3_5: q_proj emits [query; gate] per head, and the heads' output is multiplied by
  // sigmoid(gate) before o_proj
  bool output_gate = false;
};

// `x` [B, heads, T, D] rotated for positions offset.., or, for padded batch rows (`rows`, one
// token each), each row at its own position.
Array rope_at(const RoPE& rope, const Array& x, int offset, const RowLayout* rows);

// Queries [B, heads, T, D] at positions offset.. over keys/values [B, kv_heads, S, D] as an
// AttentionCache returns them (the S most recent columns, ending at offset + T): causal, and
// within the last `window` positions when window > 0 (mlx-lm's attention masks and
// scaled_dot_product_attention); for padded batch rows (`rows`), each row's padding masked.
// `sinks` may be empty.
Array cached_attention(const Array& q, const Array& keys, const Array& values, int offset, float scale, int window,
                       const Array& sinks, const RowLayout* rows);

// Multi-head attention with grouped KV heads (sdpa handles the head repeat).
struct Attention {
  Linear q_proj, k_proj, v_proj, o_proj;
  std::optional<RMSNorm> q_norm, k_norm;
  Array sinks;  // [num_heads], empty when none
  RoPE rope;
  AttentionArgs args;
  float scale = 1.0f;

  static Attention load(Weights& w, const std::string& prefix, const AttentionArgs& args, RoPE rope);
  Array operator()(const Array& x, AttentionCache& cache) const;  // x: [B, T, hidden]

 private:
  // [B, heads, T, D] queries at positions offset.. over [B, kv_heads, S, D] keys/values at
  // positions key_start.., scores soft-capped; batch rows' padding masked by `row_mask` [B, 1, 1, S].
  Array softcapped_attention(const Array& q, const Array& keys, const Array& values, int offset, int key_start,
                             const Array* row_mask) const;
};

// down(act(gate(x)) * up(x)), act = silu, or gelu_approx (gemma2)
struct MLP {
  Linear gate_proj, up_proj, down_proj;
  bool gelu = false;
  bool fused = false;  // loaded from one gate_up_proj

  // `fused`: phi3's gate_up_proj, output rows [gate; up].
  static MLP load(Weights& w, const std::string& prefix, int hidden, int intermediate, bool bias, bool fused = false);
  Array operator()(const Array& x) const;
};

// Pre-norm decoder block: h = x + attn(norm(x)); out = h + mlp(norm(h)). Gemma2's sandwich
// norms: h = x + post_attention_layernorm(attn(input_layernorm(x)));
// out = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))).
struct TransformerBlock {
  RMSNorm input_layernorm, post_attention_layernorm;
  Attention self_attn;
  MLP mlp;
  std::optional<RMSNorm> pre_feedforward_layernorm, post_feedforward_layernorm;  // gemma2, gemma3
  bool clip_residual = false;  // gemma3: float16 residual sums in float32, clipped to float16's range

  using Cache = AttentionCache;
  Array operator()(const Array& x, AttentionCache& cache) const;
};

}  // namespace mlxnode
