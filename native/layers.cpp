#include "layers.h"

#include <algorithm>
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

// ---- RoPE -------------------------------------------------------------------------------------

namespace {

float scaling_number(const ModelConfig& c, const nlohmann::json& s, const char* key, float fallback, bool required) {
  if (!s.contains(key) || s[key].is_null()) {
    if (required) c.fail(std::string("rope_scaling.") + key + " is missing");
    return fallback;
  }
  if (!s[key].is_number()) c.fail(std::string("rope_scaling.") + key + " should be a number");
  const float f = s[key].get<float>();
  if (!std::isfinite(f)) c.fail(std::string("rope_scaling.") + key + " = " + s[key].dump() + " is not a finite 32-bit float");
  return f;
}

// Llama 3.x frequency schedule (mlx-lm rope_utils.Llama3RoPE, HF _compute_llama3_parameters):
// long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
// mx.fast.rope takes periods (it uses 1/freqs), so these are base**(2i/dims), not inverses.
Array llama3_freqs(const ModelConfig& c, const nlohmann::json& s, int dims, float base) {
  const double factor = scaling_number(c, s, "factor", 0, true);
  const double low = scaling_number(c, s, "low_freq_factor", 1.0f, false);
  const double high = scaling_number(c, s, "high_freq_factor", 4.0f, false);
  const double old_ctx = scaling_number(c, s, "original_max_position_embeddings", 8192.0f, false);
  if (factor <= 0 || high <= low) c.fail("rope_scaling: llama3 needs factor > 0 and high_freq_factor > low_freq_factor");
  const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  std::vector<float> freqs(dims / 2);
  for (int i = 0; i < dims / 2; ++i) {
    double f = std::pow(static_cast<double>(base), 2.0 * i / dims);
    const double wavelen = 2 * M_PI * f;
    if (wavelen > low_wavelen) {
      f *= factor;
    } else if (wavelen > high_wavelen) {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      f = f / ((1 - smooth) / factor + smooth);
    }
    freqs[i] = static_cast<float>(f);
  }
  return Array::from_float32(freqs, {dims / 2});
}

// Per-pair periods base**(2i/dims) times a config list of factors (longrope's short/long_factor).
Array scaled_periods(const ModelConfig& c, const nlohmann::json& s, const char* key, int dims, float base) {
  if (!s.contains(key) || !s[key].is_array() || s[key].size() != static_cast<size_t>(dims / 2))
    c.fail(std::string("rope_scaling.") + key + " must be a list of " + std::to_string(dims / 2) +
           " numbers (one per rotated pair)");
  std::vector<float> periods(dims / 2);
  for (int i = 0; i < dims / 2; ++i) {
    if (!s[key][i].is_number() || !std::isfinite(s[key][i].get<double>()))
      c.fail(std::string("rope_scaling.") + key + " must hold finite numbers");
    periods[i] = static_cast<float>(s[key][i].get<double>() * std::pow(static_cast<double>(base), 2.0 * i / dims));
  }
  return Array::from_float32(periods, {dims / 2});
}

// YaRN (mlx-lm rope_utils.YarnRoPE, HF _compute_yarn_parameters): pairs that turn fewer than
// beta_slow times over the original context are interpolated (period x factor), pairs that turn more
// than beta_fast times are kept, with a linear ramp between; `gain` receives the attention scale
// applied to queries and keys, 0.1 ln(factor) + 1 by default.
Array yarn_periods(const ModelConfig& c, const nlohmann::json& s, int dims, double base, float& gain) {
  const double factor = scaling_number(c, s, "factor", 0, true);
  const double original = scaling_number(c, s, "original_max_position_embeddings", 4096.0f, false);
  const double beta_fast = scaling_number(c, s, "beta_fast", 32.0f, false);
  const double beta_slow = scaling_number(c, s, "beta_slow", 1.0f, false);
  const double mscale = scaling_number(c, s, "mscale", 1.0f, false);
  const double mscale_all_dim = scaling_number(c, s, "mscale_all_dim", 0.0f, false);
  if (factor <= 0 || original <= 0) c.fail("rope_scaling: yarn needs factor > 0 and original_max_position_embeddings > 0");
  // The pair index at which a pair turns `rotations` times over the original context.
  auto pair_turning = [&](double rotations) { return dims * std::log(original / (rotations * 2 * M_PI)) / (2 * std::log(base)); };
  const double low = std::max(std::floor(pair_turning(beta_fast)), 0.0);
  double high = std::min(std::ceil(pair_turning(beta_slow)), static_cast<double>(dims - 1));
  if (high == low) high += 0.001;
  std::vector<float> periods(dims / 2);
  for (int i = 0; i < dims / 2; ++i) {
    const double kept = 1.0 - std::clamp((i - low) / (high - low), 0.0, 1.0);  // 1: keep the pair's period
    const double extra = std::pow(base, 2.0 * i / dims), inter = factor * extra;
    periods[i] = static_cast<float>(inter * extra / (inter * kept + extra * (1 - kept)));
  }
  auto attention = [&](double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; };
  gain = static_cast<float>(attention(mscale) / attention(mscale_all_dim));
  return Array::from_float32(periods, {dims / 2});
}

}  // namespace

void RoPE::fit_context(int context_size) {
  if (original_context > 0) freqs = context_size > original_context ? long_freqs : short_freqs;
}

RoPE RoPE::from_config(const ModelConfig& c, int dims, float default_base) {
  RoPE r;
  r.dims = dims;
  r.base = c.get_float("rope_theta", default_base);
  if (!(r.base > 0.0f)) c.fail("'rope_theta' = " + std::to_string(r.base) + " must be positive");
  r.traditional = c.get_bool("rope_traditional", false);
  if (!c.has("rope_scaling")) return r;
  const nlohmann::json& s = c.json()["rope_scaling"];
  if (!s.is_object()) c.fail("rope_scaling should be an object or null");
  std::string type = "default";
  for (const char* key : {"rope_type", "type"})
    if (s.contains(key) && s[key].is_string()) {
      type = s[key].get<std::string>();
      break;
    }
  if (type == "default") return r;
  if (type == "linear") {
    r.scale = 1.0f / scaling_number(c, s, "factor", 1.0f, true);
  } else if (type == "llama3") {
    r.freqs = llama3_freqs(c, s, dims, r.base);
  } else if (type == "longrope" || type == "su") {
    // HF _compute_longrope_parameters: the original context from rope_scaling or the top level.
    const double original_d = s.contains("original_max_position_embeddings")
                                  ? scaling_number(c, s, "original_max_position_embeddings", 0, true)
                                  : c.get_int("original_max_position_embeddings");
    if (!(original_d >= 1 && original_d <= (1 << 27))) c.fail("original_max_position_embeddings must be in 1 to 2^27");
    const int original = static_cast<int>(original_d);
    r.short_freqs = scaled_periods(c, s, "short_factor", dims, r.base);
    r.long_freqs = scaled_periods(c, s, "long_factor", dims, r.base);
    r.original_context = original;
    r.freqs = r.short_freqs;
    const double factor = static_cast<double>(c.get_int("max_position_embeddings", original)) / original;
    r.attention_factor = s.contains("attention_factor") && !s["attention_factor"].is_null()
                             ? scaling_number(c, s, "attention_factor", 1.0f, true)
                             : static_cast<float>(factor <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(factor) / std::log(original)));
  } else if (type == "yarn") {
    r.freqs = yarn_periods(c, s, dims, r.base, r.attention_factor);
  } else {
    throw EngineError(kUnsupportedArchitecture, c.path() + ": rope_scaling type '" + type +
                                                    "' is not supported (supported: default, linear, llama3, yarn, longrope)");
  }
  return r;
}

Array RoPE::with_gain(const Array& x) const {
  if (attention_factor == 1.0f) return x;
  // Rotation is linear, so scaling the rotated features before it equals HF's scaled cos/sin;
  // with partial rotary, the features RoPE leaves alone keep their scale.
  if (gain.empty() || gain.dtype() != x.dtype()) {
    std::vector<float> per_feature(x.dim(-1), 1.0f);
    std::fill(per_feature.begin(), per_feature.begin() + dims, attention_factor);
    gain = Array::from_float32(per_feature, {x.dim(-1)});
    if (x.dtype() != MLX_FLOAT32) gain = mx::astype(gain, x.dtype());
  }
  return mx::multiply(x, gain);
}

Array RoPE::operator()(const Array& x, int offset) const {
  if (dims == 0) return x;  // a layer without positions (smollm3's NoPE layers)
  return mx::rope(with_gain(x), dims, traditional, base, scale, offset, freqs);
}

Array RoPE::operator()(const Array& x, const Array& offsets) const {
  if (dims == 0) return x;
  return mx::rope(with_gain(x), dims, traditional, base, scale, offsets, freqs);
}

// ---- Attention --------------------------------------------------------------------------------

namespace {

// [T, S] int32: the position of query i (offset + i) minus that of key j; the masks of prefill
// (causal, sliding window) are conditions on it.
Array query_key_distance(int offset, int T, int S) {
  return mx::subtract(mx::reshape(mx::arange(offset, offset + T, 1, MLX_INT32), {T, 1}),
                      mx::reshape(mx::arange(0, S, 1, MLX_INT32), {1, S}));
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
    a.q_proj = Linear::load(w, prefix + ".q_proj", args.hidden_size, q_out, args.qkv_bias);
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

Array Attention::operator()(const Array& x, LayerKVCache& cache) const {
  const int B = x.dim(0), T = x.dim(1), D = args.head_dim;
  // [B, T, heads*D] -> [B, T, heads, D] (-> per-head norm) -> [B, heads, T, D]
  auto heads = [&](const Array& y, int n, const std::optional<RMSNorm>& norm) {
    const bool across = norm && args.qk_norm_across_heads;
    Array r = mx::reshape(across ? (*norm)(y) : y, {B, T, n, D});
    if (norm && !across) r = (*norm)(r);
    return mx::transpose(r, {0, 2, 1, 3});
  };
  Array q = heads(q_proj(x), args.num_heads, q_norm);
  Array k = heads(k_proj(x), args.num_kv_heads, k_norm);
  Array v = heads(v_proj(x), args.num_kv_heads, std::nullopt);

  const int offset = cache.offset();
  // Batch rows of different lengths (kv_cache.h RowLayout): each row at its own position, and
  // its left padding masked out below. Only decode steps (T == 1) run batched.
  const RowLayout* rows = cache.rows();
  if (rows && (T != 1 || !batchable()))
    throw EngineError(kMlxError, "padded batch rows need single-token steps on a layer without window, softcap or position scaling");
  if (rows) {
    q = rope(q, rows->positions(offset));
    k = rope(k, rows->positions(offset));
  } else {
    q = rope(q, offset);
    k = rope(k, offset);
  }
  if (args.position_query_beta != 0) {
    // Computed in float32 over positions offset..offset+T-1 ([T, 1] against [B, heads, T, D]), then cast.
    const Array pos = mx::arange(offset, offset + T, 1, MLX_FLOAT32);
    const Array periods = mx::floor(mx::divide(pos, Array::scalar(static_cast<float>(args.position_query_period), MLX_FLOAT32)));
    const Array gain = mx::add(Array::scalar(1.0f, MLX_FLOAT32),
                               mx::multiply(Array::scalar(args.position_query_beta, MLX_FLOAT32),
                                            mx::log(mx::add(Array::scalar(1.0f, MLX_FLOAT32), periods))));
    q = mx::multiply(q, mx::astype(mx::reshape(gain, {T, 1}), q.dtype()));
  }
  Array keys, values;
  cache.update_and_fetch(k, v, keys, values);

  // A single query needs no mask; several (prefill) attend causally, aligned so the last query
  // sees every cached key (MLX's "causal" is bottom-right aligned).
  Array out;
  const int S = keys.dim(2), W = args.sliding_window;
  if (rows) {
    out = mx::sdpa_masked(q, keys, values, scale, rows->key_mask(S), sinks);
  } else if (args.logit_softcap > 0) {
    out = softcapped_attention(q, keys, values, offset);
  } else if (W > 0 && S > W && T == 1) {
    // A local layer's single query sees the last W positions.
    out = mx::sdpa(q, mx::slice_axis(keys, 2, S - W, S), mx::slice_axis(values, 2, S - W, S), scale, "", sinks);
  } else if (W > 0 && S > W) {
    // Query i (at offset + i) sees keys j with offset + i - W < j <= offset + i.
    const Array distance = query_key_distance(offset, T, S);
    Array mask = mx::logical_and(mx::greater(distance, Array::scalar(-1.0f, MLX_INT32)),
                                 mx::less(distance, Array::scalar(static_cast<float>(W), MLX_INT32)));
    out = mx::sdpa_masked(q, keys, values, scale, mask, sinks);
  } else {
    out = mx::sdpa(q, keys, values, scale, T > 1 ? "causal" : "", sinks);
  }
  out = mx::reshape(mx::transpose(out, {0, 2, 1, 3}), {B, T, args.num_heads * D});
  return o_proj(out);
}

Array Attention::softcapped_attention(const Array& q, const Array& keys, const Array& values, int offset) const {
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
    // Query i sits at position offset + i and sees keys 0..offset + i: a key ahead of it is masked.
    const Array ahead = mx::less(query_key_distance(offset, T, S), Array::scalar(0.0f, MLX_INT32));
    scores = mx::where(ahead, Array::scalar(-INFINITY, scores.dtype()), scores);
  }
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

Array TransformerBlock::operator()(const Array& x, LayerKVCache& cache) const {
  if (pre_feedforward_layernorm) {
    Array h = residual(x, post_attention_layernorm(self_attn(input_layernorm(x), cache)), clip_residual);
    return residual(h, (*post_feedforward_layernorm)(mlp((*pre_feedforward_layernorm)(h))), clip_residual);
  }
  Array h = mx::add(x, self_attn(input_layernorm(x), cache));
  return mx::add(h, mlp(post_attention_layernorm(h)));
}

}  // namespace mlxnode
