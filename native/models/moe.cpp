#include "moe.h"

#include <algorithm>
#include <utility>

namespace mlxnode {

namespace {

// mlx-lm's SwitchGLU sorts (token, expert) pairs by expert from this many pairs on (prefill); a
// decode step's few pairs are gathered in place.
constexpr int kSortMinPairs = 64;

}  // namespace

// ---- SwitchLinear -------------------------------------------------------------------------------

SwitchLinear SwitchLinear::load(Weights& w, const std::string& stacked, const std::string& per_expert,
                                const std::string& name, int in, int out, int experts, bool has_bias) {
  const bool split = !w.has(stacked + ".weight") && w.has(per_expert + ".experts.0." + name + ".weight");
  auto expert = [&](int e) { return per_expert + ".experts." + std::to_string(e) + "." + name; };
  // The [E, ...shape] tensor `suffix`: as saved, or stacked from the per-expert ones.
  enum Kind { kFloat, kPacked, kScales };
  SwitchLinear l;
  l.quant = w.quantization(split ? expert(0) : stacked);
  auto take = [&](const std::string& suffix, std::vector<int> shape, Kind kind) {
    auto one = [&](const std::string& n, const std::vector<int>& s) {
      return kind == kPacked ? w.take_packed(n, s) : kind == kScales ? w.take_scales(n, s, *l.quant) : w.take_float(n, s);
    };
    if (!split) {
      shape.insert(shape.begin(), experts);
      return one(stacked + suffix, shape);
    }
    std::vector<Array> parts;
    for (int e = 0; e < experts; ++e) parts.push_back(one(expert(e) + suffix, shape));
    // Stacked now, one projection at a time, and the pieces let go: load peaks at the weights plus
    // one projection's pieces, not twice the experts (a lazy stack would hold both until its first use).
    Array stacked = mx::stack(parts, 0);
    eval({stacked});
    for (int e = 0; e < experts; ++e) w.release(expert(e) + suffix);
    return stacked;
  };
  if (l.quant) {
    const int gs = l.quant->group_size, bits = l.quant->bits;
    if (in % gs != 0 || (in * bits) % 32 != 0)
      w.fail((split ? expert(0) : stacked) + ".scales", "exists, but input size " + std::to_string(in) +
                                                            " is not a multiple of group_size " + std::to_string(gs));
    l.weight = take(".weight", {out, in * bits / 32}, kPacked);
    l.scales = take(".scales", {out, in / gs}, kScales);
    if (l.quant->affine()) l.biases = take(".biases", {out, in / gs}, kFloat);
  } else {
    // gather_mm takes [E, in, out]; the transposed view is made once (no copy), as Linear's.
    l.weight_t = mx::transpose(take(".weight", {out, in}, kFloat), {0, 2, 1});
  }
  if (has_bias) l.bias = take(".bias", {out}, kFloat);
  return l;
}

Array SwitchLinear::operator()(const Array& x, const Array& idx, bool sorted) const {
  const Array y = quant ? mx::gather_qmm(x, weight, scales, biases, idx, quant->group_size, quant->bits, sorted, quant->mode.c_str())
                        : mx::gather_mm(x, weight_t, idx, sorted);
  if (bias.empty()) return y;
  // Each row's expert bias, shaped as the product's rows [..., 1, out].
  std::vector<int> shape = idx.shape();
  shape.push_back(1);
  shape.push_back(bias.dim(1));
  return mx::add(y, mx::reshape(mx::take(bias, idx, 0), shape));
}

// ---- SwitchGLU ----------------------------------------------------------------------------------

Array SwitchGLU::activate(const Array& gate, const Array& up) const {
  if (activation == ExpertActivation::SwiGLU) return mx::multiply(mx::silu(gate), up);
  if (activation == ExpertActivation::GeGLU) return mx::multiply(mx::gelu_approx(gate), up);
  // gpt-oss: the gate clamped above at 7 and the linear part to [-7, 7], sigmoid(1.702 g) and a +1.
  const mlx_dtype t = gate.dtype();
  const Array limit = Array::scalar(7.0f, t);
  const Array g = mx::minimum(gate, limit);
  const Array u = mx::maximum(mx::minimum(up, limit), mx::negative(limit));
  const Array glu = mx::multiply(g, mx::sigmoid(mx::multiply(Array::scalar(1.702f, t), g)));
  return mx::multiply(glu, mx::add(u, Array::scalar(1.0f, t)));
}

Array SwitchGLU::operator()(const Array& x, const Array& idx) const {
  const int N = x.dim(0), D = x.dim(1), k = idx.dim(1);
  auto glu = [&](const Array& rows, const Array& experts, bool sorted) {
    return down_proj(activate(gate_proj(rows, experts, sorted), up_proj(rows, experts, sorted)), experts, sorted);
  };
  if (N * k < kSortMinPairs) {
    // [N, 1, 1, D] rows broadcast against [N, k] experts: [N, k, 1, D].
    return mx::reshape(glu(mx::reshape(x, {N, 1, 1, D}), idx, false), {N, k, D});
  }
  // Pairs in expert order (pair p is token p / k), run, then put back in token order.
  const Array flat = mx::reshape(idx, {N * k});
  const Array order = mx::argsort(flat, 0);
  const Array token = mx::floor_divide(order, Array::scalar(static_cast<float>(k), MLX_UINT32));
  const Array y = glu(mx::take(mx::reshape(x, {N, 1, D}), token, 0), mx::take(flat, order, 0), true);  // [N*k, 1, D]
  return mx::reshape(mx::take(y, mx::argsort(order, 0), 0), {N, k, D});
}

// ---- SparseMoe ----------------------------------------------------------------------------------

Array SparseMoe::operator()(const Array& x) const {
  const int B = x.dim(0), T = x.dim(1), D = x.dim(2), N = B * T, E = args.num_experts, k = args.top_k;
  const Array flat = mx::reshape(x, {N, D});
  const Array logits = gate(flat);  // [N, E]
  // The k experts of each token, chosen as the family's mlx-lm code does (argpartition, which leaves
  // them unordered: the order only changes the summation order below).
  auto top_k = [&](const Array& p) {
    return args.kth_from_top ? mx::slice_axis(mx::argpartition(p, E - k, 1), 1, E - k, E)
                             : mx::slice_axis(mx::argpartition(mx::negative(p), k - 1, 1), 1, 0, k);
  };
  Array inds, scores;
  if (args.router == Router::TopKThenSoftmax) {
    inds = top_k(logits);
    scores = mx::softmax(mx::take_along_axis(logits, inds, 1), 1);
  } else {
    const Array probs = mx::softmax(logits, 1);
    inds = top_k(probs);
    scores = mx::take_along_axis(probs, inds, 1);
    if (args.norm_topk_prob) scores = mx::divide(scores, mx::sum(scores, 1, true));
  }
  const Array y = experts(flat, inds);  // [N, k, D]
  const Array routed = mx::reshape(mx::sum(mx::multiply(y, mx::reshape(scores, {N, k, 1})), 1, false), {B, T, D});
  if (!shared_expert) return routed;
  return mx::add(routed, mx::multiply(mx::sigmoid((*shared_expert_gate)(x)), (*shared_expert)(x)));
}

SparseMoe SparseMoe::load(Weights& w, const std::string& f, int hidden, const MoeArgs& moe) {
  const int inter = moe.expert_intermediate_size, experts = moe.num_experts;
  auto expert = [&](const char* name, const std::string& split_name, int in, int out) {
    return SwitchLinear::load(w, f + "." + moe.stacked + "." + name, f, split_name, in, out, experts, moe.expert_bias);
  };
  SwitchGLU glu;
  if (w.has(f + ".experts.gate_up_proj")) {
    // HF Qwen3.5-MoE: every expert's gate and up rows in one [E, 2 x inter, hidden] tensor and the
    // down projections in one [E, hidden, inter] (float), split as mlx-lm's qwen3_5_moe sanitize.
    auto dense = [](const Array& stacked) {
      SwitchLinear l;
      l.weight_t = mx::transpose(stacked, {0, 2, 1});
      return l;
    };
    const Array gate_up = w.take_float(f + ".experts.gate_up_proj", {experts, 2 * inter, hidden});
    glu = SwitchGLU{dense(mx::slice_axis(gate_up, 1, 0, inter)), dense(mx::slice_axis(gate_up, 1, inter, 2 * inter)),
                    dense(w.take_float(f + ".experts.down_proj", {experts, hidden, inter})), moe.activation};
  } else {
    glu = SwitchGLU{expert("gate_proj", moe.per_expert_names[0], hidden, inter), expert("up_proj", moe.per_expert_names[1], hidden, inter),
                    expert("down_proj", moe.per_expert_names[2], inter, hidden), moe.activation};
  }
  SparseMoe m{Linear::load(w, f + "." + moe.router_name, hidden, experts, moe.router_bias), std::move(glu), moe};
  if (moe.shared_expert_intermediate_size > 0) {
    m.shared_expert = MLP::load(w, f + ".shared_expert", hidden, moe.shared_expert_intermediate_size, false);
    m.shared_expert_gate = Linear::load(w, f + ".shared_expert_gate", hidden, 1, false);
  }
  return m;
}

namespace {

// Every decoder_sparse_step-th layer (default 1) not listed in mlp_only_layers, when num_experts > 0.
std::vector<bool> read_sparse_layers(const ModelConfig& c, int num_layers, int num_experts) {
  const int step = c.get_int("decoder_sparse_step", 1);
  if (step < 1) c.fail("decoder_sparse_step must be at least 1");
  std::vector<bool> dense(num_layers > 0 ? num_layers : 0, false);
  if (c.has("mlp_only_layers")) {
    const nlohmann::json& only = c.json()["mlp_only_layers"];
    if (!only.is_array()) c.fail("mlp_only_layers must be a list of layer indices");
    for (const auto& i : only) {
      if (!i.is_number_integer() || i.get<int64_t>() < 0 || i.get<int64_t>() >= num_layers)
        c.fail("mlp_only_layers entry " + i.dump() + " is not a layer index");
      dense[i.get<size_t>()] = true;
    }
  }
  std::vector<bool> sparse;
  for (size_t i = 0; i < dense.size(); ++i) sparse.push_back(!dense[i] && num_experts > 0 && (i + 1) % step == 0);
  return sparse;
}

}  // namespace

MoeArgs qwen_moe_args(const ModelConfig& c, int num_layers) {
  MoeArgs m;
  m.num_experts = c.get_int("num_experts");
  m.top_k = c.get_int("num_experts_per_tok");
  m.expert_intermediate_size = c.get_int("moe_intermediate_size");
  m.norm_topk_prob = c.get_bool("norm_topk_prob", false);
  m.kth_from_top = true;
  m.sparse_layers = read_sparse_layers(c, num_layers, m.num_experts);
  return m;
}

void MoeArgs::validate(const ModelConfig& c) const {
  if (!sparse_layers.empty() && std::find(sparse_layers.begin(), sparse_layers.end(), true) == sparse_layers.end()) return;
  c.check_range("the number of experts", num_experts, 1, 1 << 14);
  c.check_range("num_experts_per_tok", top_k, 1, num_experts);
  c.check_range("the experts' intermediate size", expert_intermediate_size, 1, 1 << 20);
  c.check_range("shared_expert_intermediate_size", shared_expert_intermediate_size, 0, 1 << 20);
}

// ---- MoeBlock / MoeModel ------------------------------------------------------------------------

Array MoeBlock::operator()(const Array& x, AttentionCache& cache) const {
  const Array h = mx::add(x, self_attn(input_layernorm(x), cache));
  const Array n = post_attention_layernorm(h);
  return mx::add(h, moe ? (*moe)(n) : (*mlp)(n));
}

MoeModel::MoeModel(const ModelConfig& c, Weights& w, const DecoderArgs& args, const MoeArgs& moe) {
  args.validate(c);
  moe.validate(c);
  const RoPE rope = RoPE::from_config(c, args.head_dim, args.default_rope_theta);
  if (!args.sliding_layers.empty() && args.sliding_layers.size() != static_cast<size_t>(args.num_hidden_layers))
    c.fail("layer_types must name " + std::to_string(args.num_hidden_layers) + " layers");
  ends = DecoderEnds::load(c, w, args);
  const int hidden = args.hidden_size;
  auto norm_at = [&](const std::string& name) { return RMSNorm::load(w, name, hidden, args.rms_norm_eps); };
  for (int i = 0; i < args.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i), f = p + "." + moe.block;
    MoeBlock block{norm_at(p + ".input_layernorm.weight"), norm_at(p + ".post_attention_layernorm.weight"),
                   Attention::load(w, p + ".self_attn", args.layer_attention(i), rope), std::nullopt, std::nullopt};
    if (moe.sparse_layers.empty() || moe.sparse_layers[i]) {
      block.moe = SparseMoe::load(w, f, hidden, moe);
    } else {
      block.mlp = MLP::load(w, p + ".mlp", hidden, args.intermediate_size, args.mlp_bias);
    }
    layers.push_back(std::move(block));
    w.ignore(p + ".self_attn.rotary_emb.inv_freq");  // HF buffer, recomputed by RoPE
  }
  ends.describe(*this, c, w, args);
}

}  // namespace mlxnode
