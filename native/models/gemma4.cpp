// Gemma 4 multimodal checkpoints (model_type gemma4) run as text models, as mlx-lm's
// models/gemma4.py does: text_config is a gemma4_text config (vocab_size from the outer config),
// the language model's tensors sit under "language_model." (as mlx-lm saves them) or
// "model.language_model." (as Hugging Face does), and the vision and audio towers are left unread.
#include "registry.h"

namespace mlxnode {
namespace {

ModelConfig text_config(const ModelConfig& c) {
  if (c.has("text_config") && !c.json()["text_config"].is_null() && !c.json()["text_config"].is_object())
    c.fail("text_config must be an object");
  nlohmann::json t = c.has("text_config") && c.json()["text_config"].is_object() ? c.json()["text_config"] : nlohmann::json::object();
  // mlx-lm: the vocabulary size is the outer config's (262144 when absent).
  t["vocab_size"] = c.has("vocab_size") ? c.json()["vocab_size"] : nlohmann::json(262144);
  t["model_type"] = "gemma4_text";
  return ModelConfig(std::move(t), c.path() + " text_config");
}

}  // namespace

std::unique_ptr<Model> make_gemma4(const ModelConfig& config, Weights& weights) {
  for (const char* tower : {"vision_tower.", "multi_modal_projector.", "audio_tower.", "embed_audio.", "embed_vision."}) {
    weights.ignore_prefix(tower);
    weights.ignore_prefix(std::string("model.") + tower);
  }
  weights.rename_prefix("model.language_model.", "model.");
  weights.rename_prefix("language_model.", "");
  return make_gemma4_text(text_config(config), weights);
}

}  // namespace mlxnode
