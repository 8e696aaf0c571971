// Gemma 4 text models (model_type gemma4_text): our port of mlx-lm's models/gemma4_text.py. Its
// block differs from the shared decoder's enough to be its own type, composed from the shared
// layers (Linear, RMSNorm, RoPE, MLP, the experts' SwitchGLU, cached_attention):
// - attention: q/k norms, values RMS-normalized without a gain, scale 1; sliding layers
//   (rotating cache of `sliding_window`) and full layers with their own head_dim, KV heads and
//   RoPE (rope_parameters per layer kind; "proportional" rotates a fraction of each head's pairs);
//   full layers may take values from the key projection (attention_k_eq_v);
// - KV sharing: the last num_kv_shared_layers layers compute no keys/values and attend to those of
//   the last earlier layer of their kind (they own no cache), with an MLP twice as wide
//   (use_double_wide_mlp);
// - per-layer inputs: each layer adds a gated projection of its slice of a second token embedding
//   (embed_tokens_per_layer) mixed with a projection of the embeddings;
// - an optional mixture of experts beside the MLP (enable_moe_block), with its own router (RMS norm,
//   softmax over the top-k logits, per-expert scales) and gelu experts;
// - norms scale by w (not Gemma 1-3's 1 + w); each layer's output is scaled by layer_scalar;
//   final logits soft-capped.
#include <climits>
#include <cmath>
#include <limits>

#include "../errors.h"
#include "decoder.h"
#include "moe.h"
#include "registry.h"

namespace mlxnode {
namespace {

// config.json as mlx-lm's gemma4_text.ModelArgs reads it; keys absent take mlx-lm's defaults
// (E2B-like), and null keeps its meaning there (null global_head_dim: head_dim; null
// final_logit_softcapping: no cap; null rope_parameters or layer_types: the defaults below).
struct Gemma4Args {
  DecoderArgs d;            // sizes, eps, sliding layers and window, the ends (embedding scale, cap, tie)
  int global_head_dim = 0;  // full layers' head_dim
  int global_kv_heads = 0;  // full layers' KV heads
  bool k_eq_v = false;      // full layers: values from k_proj (no v_proj)
  int kv_shared_layers = 0;
  int per_layer_dim = 0;    // hidden_size_per_layer_input; 0: no per-layer inputs
  int per_layer_vocab = 0;
  bool double_wide_mlp = false;
  bool moe = false;
  int num_experts = 0, top_k = 0, moe_intermediate = 0;
  nlohmann::json rope;      // {"full_attention": {...}, "sliding_attention": {...}}
};

bool given(const ModelConfig& c, const char* key) { return c.has(key) && !c.json()[key].is_null(); }

Gemma4Args parse_model_args(const ModelConfig& raw) {
  nlohmann::json j = raw.json();
  const nlohmann::json defaults = {
      {"hidden_size", 1536}, {"num_hidden_layers", 35}, {"intermediate_size", 6144}, {"num_attention_heads", 8},
      {"head_dim", 256}, {"global_head_dim", 512}, {"rms_norm_eps", 1e-6}, {"vocab_size", 262144},
      {"vocab_size_per_layer_input", 262144}, {"num_key_value_heads", 1}, {"num_kv_shared_layers", 20},
      {"hidden_size_per_layer_input", 256}, {"sliding_window", 512}, {"sliding_window_pattern", 5},
      {"max_position_embeddings", 131072}, {"final_logit_softcapping", 30.0}, {"use_double_wide_mlp", true},
      {"tie_word_embeddings", true}};
  for (auto it = defaults.begin(); it != defaults.end(); ++it)
    if (!j.contains(it.key())) j[it.key()] = it.value();
  const ModelConfig c(std::move(j), raw.path());

  Gemma4Args a;
  DecoderArgs& d = a.d;
  d = DecoderArgs::read_common(c);
  d.head_dim = c.get_int("head_dim");
  d.max_position_embeddings = c.get_int("max_position_embeddings");
  d.scale_embeddings = true;
  if (given(c, "final_logit_softcapping")) d.final_logit_softcap = c.get_float("final_logit_softcapping");
  d.sliding_window = c.get_int("sliding_window");
  if (d.sliding_window <= 0) c.fail("sliding_window must be positive");
  if (!d.read_layer_types(c)) {
    // mlx-lm: (pattern - 1) sliding layers, then a full one, repeated.
    const int pattern = c.get_int("sliding_window_pattern");
    if (pattern <= 0) c.fail("sliding_window_pattern must be positive");
    for (int i = 0; i < d.num_hidden_layers; ++i) d.sliding_layers.push_back(i % pattern != pattern - 1);
  }
  d.validate(c);

  a.global_head_dim = given(c, "global_head_dim") && c.get_int("global_head_dim") != 0 ? c.get_int("global_head_dim") : d.head_dim;
  c.check_range("global_head_dim", a.global_head_dim, 2, 1024);
  if (a.global_head_dim % 2 != 0) c.fail("global_head_dim must be even for RoPE");
  a.k_eq_v = c.get_bool("attention_k_eq_v", false);
  a.global_kv_heads = a.k_eq_v && given(c, "num_global_key_value_heads") ? c.get_int("num_global_key_value_heads") : d.num_key_value_heads;
  c.check_range("num_global_key_value_heads", a.global_kv_heads, 1, d.num_attention_heads);
  if (d.num_attention_heads % a.global_kv_heads != 0) c.fail("num_attention_heads is not a multiple of num_global_key_value_heads");
  a.kv_shared_layers = c.get_int("num_kv_shared_layers");
  c.check_range("num_kv_shared_layers", a.kv_shared_layers, 0, d.num_hidden_layers - 1);
  a.per_layer_dim = given(c, "hidden_size_per_layer_input") ? c.get_int("hidden_size_per_layer_input") : 0;
  if (a.per_layer_dim != 0) {
    c.check_range("hidden_size_per_layer_input", a.per_layer_dim, 1, 1 << 14);
    c.check_range("num_hidden_layers x hidden_size_per_layer_input", static_cast<int64_t>(a.per_layer_dim) * d.num_hidden_layers, 1, 1 << 20);
    a.per_layer_vocab = c.get_int("vocab_size_per_layer_input");
    // mlx-lm and HF gather the per-layer embedding with the token ids as they are: every id needs a row.
    if (a.per_layer_vocab < d.vocab_size) c.fail("vocab_size_per_layer_input is smaller than vocab_size");
    c.check_range("vocab_size_per_layer_input", a.per_layer_vocab, 1, 1 << 22);
  }
  a.double_wide_mlp = c.get_bool("use_double_wide_mlp", true);
  a.moe = c.get_bool("enable_moe_block", false);
  if (a.moe) {
    a.num_experts = c.get_int("num_experts");
    c.check_range("num_experts", a.num_experts, 1, 1 << 14);
    a.top_k = c.get_int("top_k_experts");
    c.check_range("top_k_experts", a.top_k, 1, a.num_experts);
    a.moe_intermediate = c.get_int("moe_intermediate_size");
    c.check_range("moe_intermediate_size", a.moe_intermediate, 1, 1 << 20);
  }
  a.rope = given(c, "rope_parameters") ? c.json()["rope_parameters"]
                                        : nlohmann::json{{"full_attention", {{"partial_rotary_factor", 0.25}, {"rope_theta", 1000000.0}, {"rope_type", "proportional"}}},
                                                         {"sliding_attention", {{"partial_rotary_factor", 1.0}, {"rope_theta", 10000.0}, {"rope_type", "default"}}}};
  if (!a.rope.is_object()) c.fail("rope_parameters must be an object");
  return a;
}

// A layer kind's RoPE over `dims` features per head, from rope_parameters[kind] (mlx-lm's
// initialize_rope): default/linear, or "proportional": the first partial_rotary_factor of the
// head's pairs rotate with periods factor * theta^(2i / dims), the rest not at all.
RoPE layer_rope(const ModelConfig& c, const nlohmann::json& all, const char* kind, int dims) {
  const nlohmann::json p = all.contains(kind) && all[kind].is_object() ? all[kind] : nlohmann::json::object();
  auto number = [&](const char* key, double fallback) {
    if (!p.contains(key) || p[key].is_null()) return fallback;
    if (!p[key].is_number()) c.fail(std::string("rope_parameters.") + kind + "." + key + " should be a number");
    return p[key].get<double>();
  };
  std::string type = "default";
  for (const char* key : {"type", "rope_type"})
    if (p.contains(key) && p[key].is_string()) {
      type = p[key].get<std::string>();
      break;
    }
  RoPE r;
  r.dims = dims;
  r.traditional = c.get_bool("rope_traditional", false);
  r.base = static_cast<float>(number("rope_theta", 10000.0));
  if (!(r.base > 0.0f)) c.fail(std::string("rope_parameters.") + kind + ".rope_theta must be positive");
  const double factor = number("factor", 1.0);
  if (type == "default") return r;
  if (type == "linear") {
    if (!(factor > 0)) c.fail(std::string("rope_parameters.") + kind + ".factor must be positive");
    r.scale = static_cast<float>(1.0 / factor);
    return r;
  }
  if (type != "proportional")
    throw EngineError(kUnsupportedArchitecture, c.path() + ": rope_parameters." + kind + " type '" + type +
                                                    "' is not supported (supported: default, linear, proportional)");
  const int rotated = static_cast<int>(dims * number("partial_rotary_factor", 1.0));
  if (rotated < 0 || rotated > dims || rotated % 2 != 0)
    c.fail(std::string("rope_parameters.") + kind + ".partial_rotary_factor x head_dim must be even and at most head_dim");
  std::vector<float> periods(dims / 2, std::numeric_limits<float>::infinity());  // an infinite period: not rotated
  for (int i = 0; i < rotated / 2; ++i)
    periods[i] = static_cast<float>(factor * std::pow(static_cast<double>(r.base), 2.0 * i / dims));
  r.freqs = Array::from_float32(periods, {dims / 2});
  return r;
}

struct Gemma4Attention {
  Linear q_proj, o_proj;
  std::optional<Linear> k_proj, v_proj;  // none on KV-shared layers; no v_proj with k_eq_v
  RMSNorm q_norm;
  std::optional<RMSNorm> k_norm;
  RoPE rope;
  int heads = 0, kv_heads = 0, head_dim = 0, window = 0;
  float eps = 1e-6f;

  // An owning layer appends its keys/values to `cache` and returns them in keys/values; a shared
  // one (no cache) attends to the keys/values given. Queries at positions offset.., or, for padded
  // batch rows (one token each), at each row's position with its padding masked.
  Array operator()(const Array& x, int offset, const RowLayout* rows, AttentionCache* cache, Array& keys, Array& values) const {
    const int B = x.dim(0), T = x.dim(1);
    auto split = [&](const Array& y, int n) { return mx::reshape(y, {B, T, n, head_dim}); };
    auto heads_first = [](const Array& y) { return mx::transpose(y, {0, 2, 1, 3}); };
    const Array q = rope_at(rope, heads_first(q_norm(split(q_proj(x), heads))), offset, rows);
    if (cache) {
      const Array k = split(k_proj->operator()(x), kv_heads);
      const Array v = v_proj ? split(v_proj->operator()(x), kv_heads) : k;
      cache->update_and_fetch(rope_at(rope, heads_first((*k_norm)(k)), offset, rows), heads_first(mx::rms_norm(v, Array(), eps)), keys, values);
    }
    const Array out = cached_attention(q, keys, values, offset, 1.0f, window, Array(), rows);
    return o_proj(mx::reshape(mx::transpose(out, {0, 2, 1, 3}), {B, T, heads * head_dim}));
  }
};

// The experts beside the MLP: RMS-normed router input scaled per feature, softmax over the top-k
// logits times a learned scale per expert.
struct Gemma4Experts {
  Linear router;
  Array router_norm;       // router.scale * hidden^-0.5, made once
  Array per_expert_scale;  // [E]
  SwitchGLU experts;
  int top_k = 0;
  float eps = 1e-6f;

  // `routed` picks the experts, `x` is what they transform; both [B, T, D].
  Array operator()(const Array& routed, const Array& x) const {
    const int B = x.dim(0), T = x.dim(1), D = x.dim(2), N = B * T;
    const Array logits = router(mx::rms_norm(mx::reshape(routed, {N, D}), router_norm, eps));  // [N, E]
    const int E = logits.dim(1);
    // argpartition(-k)[-k:] as mlx-lm picks them (unordered: only the summation order depends on it).
    const Array inds = mx::slice_axis(mx::argpartition(logits, E - top_k, 1), 1, E - top_k, E);
    const Array weights = mx::multiply(mx::softmax(mx::take_along_axis(logits, inds, 1), 1), mx::take(per_expert_scale, inds, 0));
    const Array y = experts(mx::reshape(x, {N, D}), inds);  // [N, k, D]
    return mx::reshape(mx::sum(mx::multiply(y, mx::reshape(weights, {N, top_k, 1})), 1, false), {B, T, D});
  }
};

// A layer's share of the per-layer inputs: h + norm(projection(gelu(gate(h)) * input)).
struct PerLayerInput {
  Linear gate, projection;
  RMSNorm norm;
};

struct Gemma4Block {
  RMSNorm input_layernorm, post_attention_layernorm, pre_feedforward_layernorm, post_feedforward_layernorm;
  Gemma4Attention self_attn;
  MLP mlp;
  std::optional<Gemma4Experts> experts;
  std::optional<RMSNorm> post_feedforward_layernorm_1, pre_feedforward_layernorm_2, post_feedforward_layernorm_2;
  std::optional<PerLayerInput> per_layer;
  Array layer_scalar;  // [1]
  int kv_source = 0;   // the layer whose keys/values it attends to (itself unless KV-shared)

  Array operator()(const Array& x, int offset, const RowLayout* rows, AttentionCache* cache, Array& keys, Array& values,
                   const Array& per_layer_input) const {
    Array h = mx::add(x, post_attention_layernorm(self_attn(input_layernorm(x), offset, rows, cache, keys, values)));
    Array f = mlp(pre_feedforward_layernorm(h));
    if (experts)
      f = mx::add((*post_feedforward_layernorm_1)(f), (*post_feedforward_layernorm_2)((*experts)(h, (*pre_feedforward_layernorm_2)(h))));
    h = mx::add(h, post_feedforward_layernorm(f));
    if (per_layer) {
      const Array gate = mx::multiply(mx::gelu_approx(per_layer->gate(h)), per_layer_input);
      h = mx::add(h, per_layer->norm(per_layer->projection(gate)));
    }
    return mx::multiply(h, layer_scalar);
  }
};

class Gemma4Model : public Model {
 public:
  Gemma4Model(const ModelConfig& c, Weights& w, const Gemma4Args& a) : args_(a) {
    const DecoderArgs& d = a.d;
    ends_ = DecoderEnds::load(c, w, d);
    const int hidden = d.hidden_size, L = d.num_hidden_layers, first_shared = L - a.kv_shared_layers;
    auto norm_at = [&](const std::string& name, int dims) { return RMSNorm::load(w, name, dims, d.rms_norm_eps); };
    if (a.per_layer_dim) {
      const int P = a.per_layer_dim;
      embed_per_layer_ = Embedding::load(w, "model.embed_tokens_per_layer", a.per_layer_vocab, L * P);
      per_layer_projection_ = Linear::load(w, "model.per_layer_model_projection", hidden, L * P, false);
      per_layer_norm_ = norm_at("model.per_layer_projection_norm.weight", P);
    }
    std::vector<int> last_of_kind = {-1, -1};  // the last owning layer of each kind (full, sliding)
    for (int i = 0; i < L; ++i) {
      const std::string p = "model.layers." + std::to_string(i), at = p + ".self_attn";
      const bool sliding = d.sliding_layers[i], owns = i < first_shared;
      Gemma4Attention attn;
      attn.heads = d.num_attention_heads;
      attn.head_dim = sliding ? d.head_dim : a.global_head_dim;
      attn.kv_heads = !sliding && a.k_eq_v ? a.global_kv_heads : d.num_key_value_heads;
      attn.window = sliding ? d.sliding_window : 0;
      attn.eps = d.rms_norm_eps;
      attn.rope = layer_rope(c, a.rope, sliding ? "sliding_attention" : "full_attention", attn.head_dim);
      const int q_out = attn.heads * attn.head_dim, kv_out = attn.kv_heads * attn.head_dim;
      attn.q_proj = Linear::load(w, at + ".q_proj", hidden, q_out, false);
      attn.o_proj = Linear::load(w, at + ".o_proj", q_out, hidden, false);
      attn.q_norm = norm_at(at + ".q_norm.weight", attn.head_dim);
      int source = i;
      if (owns) {
        attn.k_proj = Linear::load(w, at + ".k_proj", hidden, kv_out, false);
        if (!(a.k_eq_v && !sliding)) attn.v_proj = Linear::load(w, at + ".v_proj", hidden, kv_out, false);
        attn.k_norm = norm_at(at + ".k_norm.weight", attn.head_dim);
        last_of_kind[sliding] = i;
      } else {
        source = last_of_kind[sliding];
        if (source < 0) c.fail("KV-shared layer " + std::to_string(i) + " has no earlier layer of its kind to share with");
      }
      w.ignore(at + ".rotary_emb.inv_freq");  // HF buffer, recomputed by RoPE
      const int inter = d.intermediate_size * (a.double_wide_mlp && !owns && first_shared > 0 ? 2 : 1);
      Gemma4Block b{norm_at(p + ".input_layernorm.weight", hidden), norm_at(p + ".post_attention_layernorm.weight", hidden),
                    norm_at(p + ".pre_feedforward_layernorm.weight", hidden), norm_at(p + ".post_feedforward_layernorm.weight", hidden),
                    std::move(attn), MLP::load(w, p + ".mlp", hidden, inter, false)};
      b.mlp.gelu = true;
      if (a.moe) {
        const int E = a.num_experts, inner = a.moe_intermediate;  // (not I: complex.h, through mlx-c, defines it)
        auto expert = [&](const char* name, int in, int out) {
          return SwitchLinear::load(w, p + ".experts.switch_glu." + name, p + ".experts", name, in, out, E, false);
        };
        // HF's fused experts.gate_up_proj (gate rows, then up rows), else mlx-lm's switch_glu or per-expert tensors.
        std::optional<SwitchGLU> fused = SwitchGLU::load_fused(w, p + ".experts", hidden, inner, E, GateUpRows::Halves, false, ExpertActivation::GeGLU);
        Array scale = w.take_float(p + ".router.scale", {hidden});
        b.experts = Gemma4Experts{Linear::load(w, p + ".router.proj", hidden, E, false),
                                  mx::multiply(scale, Array::scalar(1.0f / std::sqrt(static_cast<float>(hidden)), scale.dtype())),
                                  w.take_float(p + ".router.per_expert_scale", {E}),
                                  fused ? std::move(*fused)
                                        : SwitchGLU{expert("gate_proj", hidden, inner), expert("up_proj", hidden, inner),
                                                    expert("down_proj", inner, hidden), ExpertActivation::GeGLU},
                                  a.top_k, d.rms_norm_eps};
        b.post_feedforward_layernorm_1 = norm_at(p + ".post_feedforward_layernorm_1.weight", hidden);
        b.pre_feedforward_layernorm_2 = norm_at(p + ".pre_feedforward_layernorm_2.weight", hidden);
        b.post_feedforward_layernorm_2 = norm_at(p + ".post_feedforward_layernorm_2.weight", hidden);
      }
      if (a.per_layer_dim) {
        b.per_layer = PerLayerInput{Linear::load(w, p + ".per_layer_input_gate", hidden, a.per_layer_dim, false),
                                    Linear::load(w, p + ".per_layer_projection", a.per_layer_dim, hidden, false),
                                    norm_at(p + ".post_per_layer_input_norm.weight", hidden)};
      }
      b.layer_scalar = w.take_float(p + ".layer_scalar", {1});
      b.kv_source = source;
      layers_.push_back(std::move(b));
    }
    ends_.describe(*this, c, w, d);
    // Only the owning layers cache, each with its own head_dim and KV heads.
    const int64_t element = ends_.norm.weight.dtype() == MLX_FLOAT32 ? 4 : 2;
    info.kv_bytes_per_token = 0;
    for (int i = 0; i < first_shared; ++i)
      info.kv_bytes_per_token += 2 * layers_[i].self_attn.kv_heads * layers_[i].self_attn.head_dim * element;
  }

  Array forward(const Array& tokens, KVCache& cache, bool last_only) const override {
    Array h = ends_.embed(tokens);
    const Array per_layer = per_layer_inputs(tokens, h);
    const int offset = cache.offset(), B = h.dim(0), T = h.dim(1), L = static_cast<int>(layers_.size());
    std::vector<Array> keys(L), values(L);
    for (int i = 0; i < L; ++i) {
      const Gemma4Block& b = layers_[i];
      AttentionCache* own = b.kv_source == i ? &cache.layer_as<AttentionCache>(i) : nullptr;
      if (!own) keys[i] = keys[b.kv_source], values[i] = values[b.kv_source];
      const Array input = per_layer.empty() ? Array() : mx::reshape(mx::slice_axis(per_layer, 2, i, i + 1), {B, T, args_.per_layer_dim});
      h = b(h, offset, cache.rows(), own, keys[i], values[i], input);
    }
    return ends_.logits(h, last_only);
  }

  // The owning layers' caches (KV-shared layers keep none): rotating on sliding layers.
  KVCache make_cache() const override {
    std::vector<std::unique_ptr<LayerCache>> caches;
    for (size_t i = 0; i < layers_.size() && layers_[i].kv_source == static_cast<int>(i); ++i)
      caches.push_back(make_attention_cache(layers_[i].self_attn.window, context_size_));
    return KVCache(std::move(caches));
  }

  void fit_context(int size) override { context_size_ = size; }

 private:
  // [B, T, layers, per_layer_dim]: each layer's slice of the per-layer embedding, mixed with a
  // projection of the (scaled) embeddings; empty without per-layer inputs.
  Array per_layer_inputs(const Array& tokens, const Array& h) const {
    if (!args_.per_layer_dim) return Array();
    const int B = h.dim(0), T = h.dim(1), L = static_cast<int>(layers_.size()), P = args_.per_layer_dim;
    auto scaled = [&](const Array& a, double s) { return mx::multiply(a, Array::scalar(static_cast<float>(s), a.dtype())); };
    const Array embedded = mx::reshape(scaled(embed_per_layer_(tokens), std::sqrt(static_cast<double>(P))), {B, T, L, P});
    const Array projected = per_layer_norm_(mx::reshape(scaled(per_layer_projection_(h), 1.0 / std::sqrt(static_cast<double>(h.dim(2)))), {B, T, L, P}));
    return scaled(mx::add(projected, embedded), 1.0 / std::sqrt(2.0));
  }

  Gemma4Args args_;
  DecoderEnds ends_;
  std::vector<Gemma4Block> layers_;
  Embedding embed_per_layer_;
  Linear per_layer_projection_;
  RMSNorm per_layer_norm_;
  int context_size_ = INT_MAX;  // until fit_context
};

}  // namespace

std::unique_ptr<Model> make_gemma4_text(const ModelConfig& config, Weights& weights) {
  return std::make_unique<Gemma4Model>(config, weights, parse_model_args(config));
}

}  // namespace mlxnode
