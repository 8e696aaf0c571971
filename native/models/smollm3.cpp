// SmolLM3: our port of mlx-lm's models/smollm3.py: Llama, with some layers attending without RoPE
// (NoPE). no_rope_layers lists 1 (RoPE) or 0 (none) per layer; absent, every
// no_rope_layer_interval-th layer (default 4) has none.
#include "decoder.h"
#include "registry.h"

namespace mlxnode {

std::unique_ptr<Model> make_smollm3(const ModelConfig& c, Weights& weights) {
  DecoderArgs a = llama_model_args(c);
  const int layers = a.num_hidden_layers > 0 ? a.num_hidden_layers : 0;
  if (c.has("no_rope_layers")) {
    const nlohmann::json& flags = c.json()["no_rope_layers"];
    if (!flags.is_array() || flags.size() != static_cast<size_t>(layers))
      c.fail("no_rope_layers must list " + std::to_string(layers) + " layers");
    for (const auto& f : flags) {
      if (!f.is_number_integer() && !f.is_boolean()) c.fail("no_rope_layers entries must be 0 or 1");
      a.no_rope_layers.push_back(f.is_boolean() ? !f.get<bool>() : f.get<int64_t>() == 0);
    }
  } else {
    const int interval = c.get_int("no_rope_layer_interval", 4);
    if (interval < 1) c.fail("no_rope_layer_interval must be at least 1");
    for (int i = 0; i < layers; ++i) a.no_rope_layers.push_back((i + 1) % interval == 0);
  }
  return std::make_unique<DecoderModel>(c, weights, a);
}

}  // namespace mlxnode
