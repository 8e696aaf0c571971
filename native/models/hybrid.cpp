#include "hybrid.h"

#include <cmath>
#include <utility>

namespace mlxnode {

// ---- GatedDeltaNet ------------------------------------------------------------------------------

void GatedDeltaArgs::validate(const ModelConfig& c) const {
  c.check_range("linear_num_key_heads", num_k_heads, 1, 1024);
  c.check_range("linear_num_value_heads", num_v_heads, 1, 1024);
  c.check_range("linear_key_head_dim", head_k_dim, 1, 4096);
  c.check_range("linear_value_head_dim", head_v_dim, 1, 4096);
  c.check_range("linear_conv_kernel_dim", conv_kernel, 2, 256);
  c.check_range("linear attention state (value heads x value dim x key dim)",
                static_cast<int64_t>(num_v_heads) * head_v_dim * head_k_dim, 1, int64_t{1} << 28);
  if (num_v_heads % num_k_heads != 0)
    c.fail("linear_num_value_heads (" + std::to_string(num_v_heads) + ") is not a multiple of linear_num_key_heads (" +
           std::to_string(num_k_heads) + ")");
}

GatedDeltaArgs read_gated_delta_args(const ModelConfig& c, int hidden_size, float eps) {
  GatedDeltaArgs a;
  a.hidden_size = hidden_size;
  a.num_k_heads = c.get_int("linear_num_key_heads");
  a.num_v_heads = c.get_int("linear_num_value_heads");
  a.head_k_dim = c.get_int("linear_key_head_dim");
  a.head_v_dim = c.get_int("linear_value_head_dim");
  a.conv_kernel = c.get_int("linear_conv_kernel_dim");
  a.norm_eps = eps;
  return a;
}

GatedDeltaNet GatedDeltaNet::load(Weights& w, const std::string& p, const GatedDeltaArgs& args) {
  GatedDeltaNet n;
  n.args = args;
  const int hidden = args.hidden_size, nv = args.num_v_heads, C = args.conv_dim(), K = args.conv_kernel;
  if (args.grouped_projections) {
    n.in_proj_qkvz = Linear::load(w, p + ".in_proj_qkvz", hidden, 2 * args.key_dim() + 2 * args.value_dim(), false);
    n.in_proj_ba = Linear::load(w, p + ".in_proj_ba", hidden, 2 * nv, false);
  } else {
    n.in_proj_qkv = Linear::load(w, p + ".in_proj_qkv", hidden, C, false);
    n.in_proj_z = Linear::load(w, p + ".in_proj_z", hidden, args.value_dim(), false);
    n.in_proj_b = Linear::load(w, p + ".in_proj_b", hidden, nv, false);
    n.in_proj_a = Linear::load(w, p + ".in_proj_a", hidden, nv, false);
  }
  // mlx-lm's sanitize moves HF's [C, 1, K] kernel axis to mlx.nn.Conv1d's [C, K, 1] (K > 1: the two differ).
  const std::string conv = p + ".conv1d.weight";
  const std::vector<int> stored = w.shape(conv);
  n.conv_weight = stored.size() == 3 && stored[2] != 1 ? mx::transpose(w.take_float(conv, {C, 1, K}), {0, 2, 1})
                                                      : w.take_float(conv, {C, K, 1});
  // Taken as stored, not in the compute dtype: mlx-lm keeps A_log in float32 (its cast_predicate) and
  // computes the decay from it in float32 (a bfloat16 A_log moved bfloat16 logits by 0.35).
  const Array a_log = w.take(p + ".A_log", {nv});
  if (a_log.dtype() != MLX_FLOAT32 && a_log.dtype() != MLX_FLOAT16 && a_log.dtype() != MLX_BFLOAT16)
    w.fail(p + ".A_log", std::string("has dtype ") + dtype_name(a_log.dtype()) + ", expected a float dtype");
  n.A_log = a_log.dtype() == MLX_FLOAT32 ? a_log : mx::astype(a_log, MLX_FLOAT32);
  n.dt_bias = w.take_float(p + ".dt_bias", {nv});
  n.norm = RMSNorm::load(w, p + ".norm.weight", args.head_v_dim, args.norm_eps);
  n.out_proj = Linear::load(w, p + ".out_proj", args.value_dim(), hidden, false);
  return n;
}

GatedDeltaNet::Projected GatedDeltaNet::project(const Array& x) const {
  const int B = x.dim(0), T = x.dim(1), nk = args.num_k_heads, dk = args.head_k_dim, nv = args.num_v_heads, dv = args.head_v_dim;
  if (!args.grouped_projections)
    return {in_proj_qkv(x), mx::reshape(in_proj_z(x), {B, T, nv, dv}), in_proj_b(x), in_proj_a(x)};
  // qwen3_next: per key head, the rows are [q (dk), k (dk), v (r x dv), z (r x dv)] and [b (r), a (r)],
  // r = nv / nk value heads per key head; regrouped here into q, k, v of all heads.
  const int r = nv / nk;
  const Array qkvz = mx::reshape(in_proj_qkvz(x), {B, T, nk, 2 * dk + 2 * r * dv});
  const Array ba = mx::reshape(in_proj_ba(x), {B, T, nk, 2 * r});
  auto part = [](const Array& a, int begin, int end, const std::vector<int>& shape) {
    return mx::reshape(mx::slice_axis(a, 3, begin, end), shape);
  };
  const Array q = part(qkvz, 0, dk, {B, T, nk * dk}), k = part(qkvz, dk, 2 * dk, {B, T, nk * dk});
  const Array v = part(qkvz, 2 * dk, 2 * dk + r * dv, {B, T, nv * dv});
  return {mx::concatenate({q, k, v}, 2), part(qkvz, 2 * dk + r * dv, 2 * dk + 2 * r * dv, {B, T, nv, dv}),
          part(ba, 0, r, {B, T, nv}), part(ba, r, 2 * r, {B, T, nv})};
}

Array gated_delta_rule(const Array& q, const Array& k, const Array& v, const Array& g, const Array& beta, Array& state) {
  const int B = q.dim(0), T = q.dim(1), H = q.dim(2), Dk = q.dim(3), Dv = v.dim(3);
  // Each input per position, shaped [B, H, tail...] to broadcast against the state: a decode step
  // reshapes its one position; a prompt chunk puts time first ([T, B, H, tail...]) and splits it, three
  // ops per input rather than a slice and a reshape per position (the state then has a leading 1).
  auto positions = [&](const Array& a, const std::vector<int>& tail) -> std::vector<Array> {
    std::vector<int> shape{B, H};
    shape.insert(shape.end(), tail.begin(), tail.end());
    if (T == 1) return {mx::reshape(a, shape)};
    std::vector<int> axes(a.ndim());
    for (int i = 0; i < a.ndim(); ++i) axes[i] = i;
    std::swap(axes[0], axes[1]);
    shape.insert(shape.begin(), T);
    return mx::split(mx::reshape(mx::transpose(a, axes), shape), T, 0);
  };
  const std::vector<Array> qs = positions(q, {1, Dk}), ks = positions(k, {1, Dk}), vs = positions(v, {Dv});
  const std::vector<Array> gs = positions(g, {1, 1}), betas = positions(beta, {1});
  Array s = T == 1 ? state : mx::reshape(state, {1, B, H, Dv, Dk});
  std::vector<Array> ys;
  for (int t = 0; t < T; ++t) {
    s = mx::multiply(s, gs[t]);  // decay
    const Array remembered = mx::sum(mx::multiply(s, ks[t]), -1, false);  // S k: [.., Dv]
    const Array delta = mx::multiply(mx::subtract(vs[t], remembered), betas[t]);
    std::vector<int> column = delta.shape();
    column.push_back(1);
    s = mx::add(s, mx::multiply(ks[t], mx::reshape(delta, column)));
    Array y = mx::sum(mx::multiply(s, qs[t]), -1, false);
    ys.push_back(y.dtype() == q.dtype() ? y : mx::astype(y, q.dtype()));
  }
  if (T == 1) {
    state = s;
    return mx::reshape(ys[0], {B, 1, H, Dv});
  }
  state = mx::reshape(s, {B, H, Dv, Dk});
  return mx::transpose(mx::concatenate(ys, 0), {1, 0, 2, 3});
}

Array GatedDeltaNet::operator()(const Array& x, RecurrentCache& cache) const {
  const int B = x.dim(0), T = x.dim(1), K = args.conv_kernel, C = args.conv_dim();
  const int nk = args.num_k_heads, dk = args.head_k_dim, nv = args.num_v_heads, dv = args.head_v_dim, kd = args.key_dim();
  const Projected p = project(x);

  // Causal depthwise convolution over the last K - 1 inputs (zeros at the start) and the new ones.
  const Array window = cache.conv().empty() ? mx::zeros({B, K - 1, C}, x.dtype()) : cache.conv();
  const Array conv_input = mx::concatenate({window, p.qkv}, 1);
  // A compact copy: a view would keep the whole chunk's input alive in the cache.
  Array next_window = mx::contiguous(mx::slice_axis(conv_input, 1, T, T + K - 1));
  const Array conv_out = mx::silu(mx::conv1d(conv_input, conv_weight, C));

  Array q = mx::reshape(mx::slice_axis(conv_out, 2, 0, kd), {B, T, nk, dk});
  Array k = mx::reshape(mx::slice_axis(conv_out, 2, kd, 2 * kd), {B, T, nk, dk});
  const Array v = mx::reshape(mx::slice_axis(conv_out, 2, 2 * kd, C), {B, T, nv, dv});
  // Unit-RMS queries and keys, scaled by 1/Dk and 1/sqrt(Dk) (mlx-lm squares the key scale in double).
  const double inv_scale = std::pow(static_cast<double>(dk), -0.5);
  q = mx::multiply(Array::scalar(static_cast<float>(inv_scale * inv_scale), q.dtype()), mx::rms_norm(q, Array(), 1e-6f));
  k = mx::multiply(Array::scalar(static_cast<float>(inv_scale), k.dtype()), mx::rms_norm(k, Array(), 1e-6f));
  if (nv > nk) {
    q = mx::repeat(q, nv / nk, 2);
    k = mx::repeat(k, nv / nk, 2);
  }

  // beta = sigmoid(b); g = exp(-exp(A_log) softplus(a + dt_bias)) in float32 (mlx-lm's compute_g; A_log is float32).
  const Array beta = mx::sigmoid(p.b);
  const Array biased = mx::add(p.a, dt_bias);
  const Array softplus = mx::logaddexp(biased, Array::scalar(0.0f, biased.dtype()));
  const Array g = mx::exp(mx::multiply(mx::negative(mx::exp(A_log)), softplus));

  Array state = cache.recurrent_state().empty() ? mx::zeros({B, nv, dv, dk}, MLX_FLOAT32) : cache.recurrent_state();
  const Array y = gated_delta_rule(q, k, v, g, beta, state);
  cache.update(std::move(next_window), std::move(state), T);

  // RMS norm per value head, gated by silu(z), the product in float32 (mlx-lm's precise swiglu).
  const Array normed = norm(y);
  Array out = mx::multiply(mx::silu(mx::astype(p.z, MLX_FLOAT32)), mx::astype(normed, MLX_FLOAT32));
  if (out.dtype() != y.dtype()) out = mx::astype(out, y.dtype());
  return out_proj(mx::reshape(out, {B, T, nv * dv}));
}

// ---- HybridBlock / HybridModel ------------------------------------------------------------------

Array HybridBlock::operator()(const Array& x, KVCache& cache, int index) const {
  const Array n = input_layernorm(x);
  const Array h = mx::add(x, linear_attn ? (*linear_attn)(n, cache.layer_as<RecurrentCache>(index))
                                         : (*self_attn)(n, cache.layer_as<AttentionCache>(index)));
  const Array m = post_attention_layernorm(h);
  return mx::add(h, moe ? (*moe)(m) : (*mlp)(m));
}

HybridModel::HybridModel(const ModelConfig& c, Weights& w, const HybridArgs& args) {
  const DecoderArgs& d = args.decoder;
  d.validate(c);
  args.linear.validate(c);
  if (args.moe.num_experts > 0) args.moe.validate(c);
  c.check_range("full_attention_interval", args.full_attention_interval, 1, d.num_hidden_layers);
  const RoPE rope = RoPE::from_config(c, d.rope_dims > 0 ? d.rope_dims : d.head_dim, d.default_rope_theta);
  ends = DecoderEnds::load(c, w, d);
  // HF stores the decoder's norms (not the gated one) as w - 1; mlx-lm's sanitize adds the 1 (norm_plus_one).
  auto norm_at = [&](const std::string& name) { return RMSNorm::load(w, name, d.hidden_size, d.rms_norm_eps, d.norm_plus_one); };
  int full_layers = 0;
  for (int i = 0; i < d.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    HybridBlock block{norm_at(p + ".input_layernorm.weight"), norm_at(p + ".post_attention_layernorm.weight"),
                      std::nullopt, std::nullopt, std::nullopt, std::nullopt};
    if ((i + 1) % args.full_attention_interval != 0) {
      block.linear_attn = GatedDeltaNet::load(w, p + ".linear_attn", args.linear);
    } else {
      AttentionArgs attention = d.layer_attention(i);
      attention.output_gate = true;
      block.self_attn = Attention::load(w, p + ".self_attn", attention, rope);
      ++full_layers;
    }
    if (args.moe.num_experts > 0 && (args.moe.sparse_layers.empty() || args.moe.sparse_layers[i]))
      block.moe = SparseMoe::load(w, p + ".mlp", d.hidden_size, args.moe);
    else
      block.mlp = MLP::load(w, p + ".mlp", d.hidden_size, d.intermediate_size, false);
    layers.push_back(std::move(block));
  }
  ends.describe(*this, c, w, d);
  // Only the full-attention layers grow with the sequence; a linear layer's state has a fixed size.
  const int64_t element = ends.norm.weight.dtype() == MLX_FLOAT32 ? 4 : 2;
  info.kv_bytes_per_token = static_cast<int64_t>(full_layers) * 2 * d.num_key_value_heads * d.head_dim * element;
}

Array HybridModel::forward(const Array& tokens, KVCache& cache, bool last_only) const {
  Array h = ends.embed(tokens);
  for (size_t i = 0; i < layers.size(); ++i) h = layers[i](h, cache, static_cast<int>(i));
  return ends.logits(h, last_only);
}

KVCache HybridModel::make_cache() const {
  // mlx-lm's make_cache: ArraysCache(size=2) for a linear layer, KVCache for a full-attention one.
  std::vector<std::unique_ptr<LayerCache>> caches;
  for (const HybridBlock& layer : layers) {
    if (layer.linear_attn) caches.push_back(std::make_unique<RecurrentCache>());
    else caches.push_back(make_attention_cache(0, 0));
  }
  return KVCache(std::move(caches));
}

void HybridModel::fit_context(int context_size) {
  for (HybridBlock& layer : layers)
    if (layer.self_attn) layer.self_attn->rope.fit_context(context_size);
}

}  // namespace mlxnode

