// Gemma 3 multimodal checkpoints (model_type gemma3: Gemma-3 4B/12B/27B as mlx-community
// publishes them) run as text models, as mlx-lm's models/gemma3.py does: the text_config is a
// gemma3_text config (with mlx-lm's defaults for the keys HF leaves out), the language model's
// tensors sit under "language_model.", and the vision tower and projector are left unread.
#include "registry.h"

namespace mlxnode {
namespace {

// text_config, completed with mlx-lm's gemma3_text / gemma3 defaults for what it omits.
ModelConfig text_config(const ModelConfig& c) {
  if (!c.has("text_config") || !c.json()["text_config"].is_object()) c.fail("a gemma3 config needs a text_config object");
  nlohmann::json t = c.json()["text_config"];
  const nlohmann::json defaults = {
      {"hidden_size", 1152}, {"num_hidden_layers", 26}, {"intermediate_size", 6912}, {"num_attention_heads", 8},
      {"num_key_value_heads", 4}, {"head_dim", 256}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0},
      {"rope_local_base_freq", 10000.0}, {"query_pre_attn_scalar", 256}, {"sliding_window", 512},
      {"sliding_window_pattern", 6}, {"max_position_embeddings", 32768}};
  for (auto it = defaults.begin(); it != defaults.end(); ++it)
    if (!t.contains(it.key()) || t[it.key()].is_null()) t[it.key()] = it.value();
  // mlx-lm: the vocabulary size is the outer config's (262208 when absent).
  t["vocab_size"] = c.has("vocab_size") ? c.json()["vocab_size"] : nlohmann::json(262208);
  t["model_type"] = "gemma3_text";
  return ModelConfig(std::move(t), c.path() + " text_config");
}

}  // namespace

std::unique_ptr<Model> make_gemma3(const ModelConfig& config, Weights& weights) {
  weights.ignore_prefix("vision_tower.");
  weights.ignore_prefix("multi_modal_projector.");
  weights.rename_prefix("language_model.", "");
  return make_gemma3_text(text_config(config), weights);
}

}  // namespace mlxnode
