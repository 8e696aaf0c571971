#include "rope.h"

#include <algorithm>
#include <cmath>

#include "errors.h"

namespace mlxnode {

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

}  // namespace mlxnode
