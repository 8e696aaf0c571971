#include "layers.h"

#include <cmath>

#include "device.h"
#include "errors.h"

namespace mlxnode {

// ---- Linear -----------------------------------------------------------------------------------

Linear Linear::load(Weights& w, const std::string& prefix, int in, int out, bool has_bias) {
  Linear l;
  l.in = in;
  l.out = out;
  l.quant = w.quantization(prefix);
  if (l.quant) {
    const int gs = l.quant->group_size, bits = l.quant->bits;
    if (in % gs != 0 || (in * bits) % 32 != 0)
      w.fail(prefix + ".scales", "exists, but input size " + std::to_string(in) + " is not a multiple of group_size " +
                                     std::to_string(gs));
    l.weight = w.take_packed(prefix + ".weight", {out, in * bits / 32});
    l.scales = w.take_scales(prefix + ".scales", {out, in / gs}, *l.quant);
    if (l.quant->affine()) l.biases = w.take_float(prefix + ".biases", {out, in / gs});
  } else {
    // mlx-lm computes x @ W.T each call; transposing once here saves an op per layer per token
    // (a transpose is a strided view, so no data is copied).
    l.weight_t = mx::transpose(w.take_float(prefix + ".weight", {out, in}), {1, 0});
  }
  if (has_bias) l.bias = w.take_float(prefix + ".bias", {out});
  return l;
}

std::vector<Linear> Linear::load_split(Weights& w, const std::string& prefix, int in, const std::vector<int>& outs) {
  int total = 0;
  for (int o : outs) total += o;
  Linear fused = load(w, prefix, in, total, false);
  // Row blocks of the fused [total, in] weight (dense: of its transposed view's columns).
  std::vector<Linear> parts;
  int begin = 0;
  for (int o : outs) {
    Linear part;
    part.quant = fused.quant;
    part.in = in;
    part.out = o;
    if (fused.quant) {
      part.weight = mx::slice_axis(fused.weight, 0, begin, begin + o);
      part.scales = mx::slice_axis(fused.scales, 0, begin, begin + o);
      if (!fused.biases.empty()) part.biases = mx::slice_axis(fused.biases, 0, begin, begin + o);
    } else {
      part.weight_t = mx::slice_axis(fused.weight_t, 1, begin, begin + o);
    }
    parts.push_back(std::move(part));
    begin += o;
  }
  return parts;
}

namespace {

// MLX's CPU quantized matmul costs about as much per input row as a matrix-vector product, so a
// prompt chunk on the CPU runs ~30x slower quantized than dense. For several rows at once, the
// CPU dequantizes the layer (a transient, one layer at a time) and runs the dense matmul instead.
// Metal's quantized kernels are fast: there the quantized path is kept. Only in float32, where both
// give the same result bit for bit: in float16/bfloat16 the quantized kernel rounds differently, and
// mlx-lm runs it (forced half compute on the CPU, already the slow path, keeps mlx-lm's numbers).
constexpr int kCpuDequantizeMinRows = 4;

bool on_cpu() {
  static const bool cpu = current_device_name() == "cpu";  // the device never changes in a process
  return cpu;
}

Array quantized_product(const Array& x, const Array& w, const Array& scales, const Array& biases, const QuantParams& q) {
  int rows = 1;
  for (int d = 0; d + 1 < x.ndim(); ++d) rows *= x.dim(d);
  if (rows >= kCpuDequantizeMinRows && x.dtype() == MLX_FLOAT32 && on_cpu())
    return mx::matmul(x, mx::transpose(mx::dequantize(w, scales, biases, q.group_size, q.bits, q.mode.c_str()), {1, 0}));
  return mx::quantized_matmul(x, w, scales, biases, true, q.group_size, q.bits, q.mode.c_str());
}

}  // namespace

Array Linear::base(const Array& x, bool with_bias) const {
  const bool add_bias = with_bias && !bias.empty();
  if (quant) {
    const Array y = quantized_product(x, weight, scales, biases, *quant);
    return add_bias ? mx::add(y, bias) : y;
  }
  // mlx.nn.Linear fuses the bias into the product (addmm): in float16/bfloat16, adding it after the
  // rounded product gives other logits (bfloat16 qwen2: 0.2 off mlx-lm, 29 of 32 greedy tokens changed).
  return add_bias ? mx::addmm(bias, x, weight_t) : mx::matmul(x, weight_t);
}

Array Linear::operator()(const Array& x) const {
  const int id = adapters.empty() ? 0 : AdapterScope::active();
  const LoraDelta* d = nullptr;
  for (const LoraDelta& candidate : adapters)
    if (candidate.id == id) d = &candidate;
  if (!d) return base(x, true);
  // mlx-lm computes the update in the adapter's dtype (float32 as trained) and casts the sum's
  // term to the activations' dtype.
  const Array z = mx::matmul(mx::matmul(x, d->a), d->b);
  Array update = mx::multiply(z, Array::scalar(d->scale, z.dtype()));
  if (update.dtype() != x.dtype()) update = mx::astype(update, x.dtype());
  if (d->dora_scale.empty()) return mx::add(base(x, true), update);
  // DoRA: the bias comes after the magnitude rescaling.
  const Array y = mx::multiply(mx::astype(d->dora_scale, x.dtype()), mx::add(base(x, false), update));
  return bias.empty() ? y : mx::add(y, bias);
}

Array Linear::dense_weight() const {
  if (!quant) return mx::transpose(weight_t, {1, 0});
  return mx::dequantize(weight, scales, biases, quant->group_size, quant->bits, quant->mode.c_str());  // in the scales' dtype
}

void Linear::set_weight(const Array& w) {
  if (!quant) {
    weight_t = mx::transpose(w, {1, 0});
    return;
  }
  mx::quantize(w, quant->group_size, quant->bits, weight, scales, biases, quant->mode.c_str());
}

// ---- Embedding --------------------------------------------------------------------------------

Embedding Embedding::load(Weights& w, const std::string& prefix, int vocab, int dims) {
  Embedding e;
  e.quant = w.quantization(prefix);
  if (e.quant) {
    const int gs = e.quant->group_size, bits = e.quant->bits;
    if (dims % gs != 0 || (dims * bits) % 32 != 0)
      w.fail(prefix + ".scales", "exists, but embedding size " + std::to_string(dims) +
                                     " is not a multiple of group_size " + std::to_string(gs));
    e.weight = w.take_packed(prefix + ".weight", {vocab, dims * bits / 32});
    e.scales = w.take_scales(prefix + ".scales", {vocab, dims / gs}, *e.quant);
    if (e.quant->affine()) e.biases = w.take_float(prefix + ".biases", {vocab, dims / gs});
  } else {
    e.weight = w.take_float(prefix + ".weight", {vocab, dims});
    e.weight_t = mx::transpose(e.weight, {1, 0});
  }
  return e;
}

Array Embedding::operator()(const Array& ids) const {
  if (!quant) return mx::take(weight, ids, 0);
  // mlx.nn.QuantizedEmbedding: gather the packed rows and their scales/biases, then dequantize
  // only those rows.
  return mx::dequantize(mx::take(weight, ids, 0), mx::take(scales, ids, 0),
                        biases.empty() ? biases : mx::take(biases, ids, 0), quant->group_size, quant->bits,
                        quant->mode.c_str());
}

Array Embedding::as_linear(const Array& x) const {
  if (!quant) return mx::matmul(x, weight_t);
  return quantized_product(x, weight, scales, biases, *quant);
}

// ---- RMSNorm ----------------------------------------------------------------------------------

RMSNorm RMSNorm::load(Weights& w, const std::string& name, int dims, float eps, bool plus_one) {
  Array weight = w.take_float(name, {dims});
  if (plus_one) weight = mx::add(weight, Array::scalar(1.0f, weight.dtype()));
  return RMSNorm{weight, eps};
}

Array RMSNorm::operator()(const Array& x) const { return mx::rms_norm(x, weight, eps); }

// ---- Attention --------------------------------------------------------------------------------

namespace {

// [T, S] int32: the position of query i (offset + i) minus that of key j (key_start + j); the
// masks of prefill (causal, sliding window) are conditions on it.
Array query_key_distance(int offset, int T, int key_start, int S) {
  return mx::subtract(mx::reshape(mx::arange(offset, offset + T, 1, MLX_INT32), {T, 1}),
                      mx::reshape(mx::arange(key_start, key_start + S, 1, MLX_INT32), {1, S}));
}

}  // namespace

Attention Attention::load(Weights& w, const std::string& prefix, const AttentionArgs& args, RoPE rope) {
  Attention a;
  a.args = args;
  a.rope = std::move(rope);
  a.scale = args.query_scale > 0 ? args.query_scale : 1.0f / std::sqrt(static_cast<float>(args.head_dim));
  const int q_out = args.num_heads * args.head_dim, kv_out = args.num_kv_heads * args.head_dim;
  if (args.fused_qkv) {
    std::vector<Linear> qkv = Linear::load_split(w, prefix + ".qkv_proj", args.hidden_size, {q_out, kv_out, kv_out});
    a.q_proj = std::move(qkv[0]);
    a.k_proj = std::move(qkv[1]);
    a.v_proj = std::move(qkv[2]);
  } else {
    a.q_proj = Linear::load(w, prefix + ".q_proj", args.hidden_size, args.output_gate ? 2 * q_out : q_out, args.qkv_bias);
    a.k_proj = Linear::load(w, prefix + ".k_proj", args.hidden_size, kv_out, args.qkv_bias);
    a.v_proj = Linear::load(w, prefix + ".v_proj", args.hidden_size, kv_out, args.qkv_bias);
  }
  a.o_proj = Linear::load(w, prefix + ".o_proj", q_out, args.hidden_size, args.o_bias);
  if (args.sinks) a.sinks = w.take_float(prefix + ".sinks", {args.num_heads});
  if (args.qk_norm) {
    const bool across = args.qk_norm_across_heads;
    a.q_norm = RMSNorm::load(w, prefix + ".q_norm.weight", across ? q_out : args.head_dim, args.norm_eps, args.norm_plus_one);
    a.k_norm = RMSNorm::load(w, prefix + ".k_norm.weight", across ? kv_out : args.head_dim, args.norm_eps, args.norm_plus_one);
  }
  return a;
}

Array Attention::operator()(const Array& x, AttentionCache& cache) const {
  const int B = x.dim(0), T = x.dim(1), D = args.head_dim;
  // [B, T, heads*D] -> [B, T, heads, D] (-> per-head norm) -> [B, heads, T, D]
  auto heads = [&](const Array& y, int n, const std::optional<RMSNorm>& norm) {
    const bool across = norm && args.qk_norm_across_heads;
    Array r = mx::reshape(across ? (*norm)(y) : y, {B, T, n, D});
    if (norm && !across) r = (*norm)(r);
    return mx::transpose(r, {0, 2, 1, 3});
  };
  Array q = q_proj(x);
  Array gate;  // output_gate: [B, T, heads*D]
  if (args.output_gate) {
    // Per head, the first D features are the query and the next D its output gate.
    const Array both = mx::reshape(q, {B, T, args.num_heads, 2 * D});
    gate = mx::reshape(mx::slice_axis(both, 3, D, 2 * D), {B, T, args.num_heads * D});
    q = mx::slice_axis(both, 3, 0, D);
  }
  q = heads(q, args.num_heads, q_norm);
  Array k = heads(k_proj(x), args.num_kv_heads, k_norm);
  Array v = heads(v_proj(x), args.num_kv_heads, std::nullopt);

  const int offset = cache.offset();
  // Batch rows of different lengths (kv_cache.h RowLayout): each row at its own position, and
  // its left padding masked out below. Only decode steps (T == 1) run batched.
  const RowLayout* rows = cache.rows();
  if (rows && T != 1) throw EngineError(kMlxError, "padded batch rows need single-token steps");
  q = rope_at(rope, q, offset, rows);
  k = rope_at(rope, k, offset, rows);
  if (args.position_query_beta != 0) {
    // Computed in float32 over the queries' positions, then cast: offset..offset+T-1 as [T, 1],
    // or each batch row's own position as [B, 1, 1, 1].
    const Array pos = rows ? mx::reshape(mx::astype(rows->positions(offset), MLX_FLOAT32), {B, 1, 1, 1})
                           : mx::reshape(mx::arange(offset, offset + T, 1, MLX_FLOAT32), {T, 1});
    const Array periods = mx::floor(mx::divide(pos, Array::scalar(static_cast<float>(args.position_query_period), MLX_FLOAT32)));
    const Array gain = mx::add(Array::scalar(1.0f, MLX_FLOAT32),
                               mx::multiply(Array::scalar(args.position_query_beta, MLX_FLOAT32),
                                            mx::log(mx::add(Array::scalar(1.0f, MLX_FLOAT32), periods))));
    q = mx::multiply(q, mx::astype(gain, q.dtype()));
  }
  Array keys, values;
  cache.update_and_fetch(k, v, keys, values);

  // The fetched keys are the most recent columns, ending at the write column.
  const int end = cache.offset(), S = keys.dim(2);
  Array out = args.logit_softcap > 0 ? softcapped_attention(q, keys, values, offset, end - S, rows ? &rows->key_mask(end - S, end) : nullptr)
                                     : cached_attention(q, keys, values, offset, scale, args.sliding_window, sinks, rows);
  out = mx::reshape(mx::transpose(out, {0, 2, 1, 3}), {B, T, args.num_heads * D});
  return o_proj(gate.empty() ? out : mx::multiply(out, mx::sigmoid(gate)));
}

Array rope_at(const RoPE& rope, const Array& x, int offset, const RowLayout* rows) {
  return rows ? rope(x, rows->positions(offset)) : rope(x, offset);
}

Array cached_attention(const Array& q, const Array& keys, const Array& values, int offset, float scale, int window,
                       const Array& sinks, const RowLayout* rows) {
  // A single query needs no mask (its cache holds only what it may see) but its row's padding;
  // several (prefill) attend causally, aligned so the last query sees every cached key (MLX's
  // "causal" is bottom-right aligned). For several queries the keys are the S most recent
  // positions, in order.
  const int T = q.dim(2), S = keys.dim(2), key_start = offset + T - S;
  if (rows) return mx::sdpa_masked(q, keys, values, scale, rows->key_mask(key_start, offset + T), sinks);
  if (window > 0 && S > window && T > 1) {
    // Query i (at offset + i) sees keys j with offset + i - window < j <= offset + i.
    const Array distance = query_key_distance(offset, T, key_start, S);
    Array mask = mx::logical_and(mx::greater(distance, Array::scalar(-1.0f, MLX_INT32)),
                                 mx::less(distance, Array::scalar(static_cast<float>(window), MLX_INT32)));
    return mx::sdpa_masked(q, keys, values, scale, mask, sinks);
  }
  return mx::sdpa(q, keys, values, scale, T > 1 ? "causal" : "", sinks);
}

Array Attention::softcapped_attention(const Array& q, const Array& keys, const Array& values, int offset, int key_start,
                                     const Array* row_mask) const {
  // mlx-lm's gemma2: the fused kernel cannot cap scores, so attention is spelled out, with the
  // query heads of one KV head grouped ([B, kv, repeats, T, D]) instead of repeating K and V.
  const int B = q.dim(0), T = q.dim(2), D = args.head_dim, S = keys.dim(2);
  const int kv = args.num_kv_heads, repeats = args.num_heads / args.num_kv_heads;
  const mlx_dtype t = q.dtype();
  Array qg = mx::reshape(mx::multiply(q, Array::scalar(scale, t)), {B, kv, repeats, T, D});
  Array kg = mx::reshape(keys, {B, kv, 1, S, D});
  Array vg = mx::reshape(values, {B, kv, 1, S, D});
  Array scores = mx::matmul(qg, mx::transpose(kg, {0, 1, 2, 4, 3}));
  scores = mx::softcap(scores, args.logit_softcap);
  if (T > 1) {
    // Query i sits at position offset + i and sees keys up to offset + i: a key ahead of it is masked.
    const Array ahead = mx::less(query_key_distance(offset, T, key_start, S), Array::scalar(0.0f, MLX_INT32));
    scores = mx::where(ahead, Array::scalar(-INFINITY, scores.dtype()), scores);
  }
  if (row_mask)  // batch rows: [B, 1, 1, S] -> [B, 1, 1, 1, S] over the grouped scores
    scores = mx::where(mx::reshape(*row_mask, {B, 1, 1, 1, S}), scores, Array::scalar(-INFINITY, scores.dtype()));
  Array out = mx::matmul(mx::softmax(scores, -1), vg);
  return mx::reshape(out, {B, args.num_heads, T, D});
}

// ---- MLP / block ------------------------------------------------------------------------------

MLP MLP::load(Weights& w, const std::string& prefix, int hidden, int intermediate, bool bias, bool fused) {
  if (fused) {
    std::vector<Linear> gate_up = Linear::load_split(w, prefix + ".gate_up_proj", hidden, {intermediate, intermediate});
    return MLP{std::move(gate_up[0]), std::move(gate_up[1]), Linear::load(w, prefix + ".down_proj", intermediate, hidden, bias),
               false, true};
  }
  return MLP{Linear::load(w, prefix + ".gate_proj", hidden, intermediate, bias),
             Linear::load(w, prefix + ".up_proj", hidden, intermediate, bias),
             Linear::load(w, prefix + ".down_proj", intermediate, hidden, bias)};
}

Array MLP::operator()(const Array& x) const {
  const Array g = gate_proj(x);
  return down_proj(mx::multiply(gelu ? mx::gelu_approx(g) : mx::silu(g), up_proj(x)));
}

namespace {

// mlx-lm's gemma3 clip_residual: float16 activations of Gemma 3 overflow, so their residual sums
// are formed in float32 and clipped to float16's range.
Array residual(const Array& x, const Array& y, bool clip) {
  if (!clip || x.dtype() != MLX_FLOAT16) return mx::add(x, y);
  const Array sum = mx::add(mx::astype(x, MLX_FLOAT32), mx::astype(y, MLX_FLOAT32));
  const Array bound = Array::scalar(65504.0f, MLX_FLOAT32);
  return mx::astype(mx::minimum(mx::maximum(sum, mx::negative(bound)), bound), MLX_FLOAT16);
}

}  // namespace

Array TransformerBlock::operator()(const Array& x, AttentionCache& cache) const {
  if (pre_feedforward_layernorm) {
    Array h = residual(x, post_attention_layernorm(self_attn(input_layernorm(x), cache)), clip_residual);
    return residual(h, (*post_feedforward_layernorm)(mlp((*pre_feedforward_layernorm)(h))), clip_residual);
  }
  Array h = mx::add(x, self_attn(input_layernorm(x), cache));
  return mx::add(h, mlp(post_attention_layernorm(h)));
}

}  // namespace mlxnode
