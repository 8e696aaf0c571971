// Ministral 3 (and the text model of Mistral 3 checkpoints): our port of mlx-lm's models/ministral3.py.
// Llama's graph with RoPE settings under rope_parameters (rope_theta, and a rope_type such as yarn),
// optional sliding-window layers (layer_types), and Llama 4's long-context query scaling: queries at
// position p are multiplied by 1 + llama_4_scaling_beta * log(1 + floor(p / original_max_position_embeddings)).
#include "decoder.h"
#include "registry.h"

namespace mlxnode {

std::unique_ptr<Model> make_ministral3(const ModelConfig& config, Weights& weights) {
  if (!config.has("rope_parameters") || !config.json()["rope_parameters"].is_object())
    config.fail("rope_parameters (an object with rope_theta) is required");
  const nlohmann::json& rope = config.json()["rope_parameters"];
  // RoPE::from_config reads rope_theta and rope_scaling at the top level: lift them there.
  nlohmann::json lifted = config.json();
  if (rope.contains("rope_theta")) lifted["rope_theta"] = rope["rope_theta"];
  lifted["rope_scaling"] = rope;
  const ModelConfig c(std::move(lifted), config.path());
  if (!rope.contains("rope_theta")) c.fail("rope_parameters.rope_theta is required");

  DecoderArgs a = llama_model_args(c);
  a.attention.qkv_bias = a.attention.o_bias = a.mlp_bias = false;
  a.tie_word_embeddings = a.tie_word_embeddings.value_or(true);  // mlx-lm's default
  auto number = [&](const char* key) {
    if (!rope.contains(key) || !rope[key].is_number()) c.fail(std::string("rope_parameters.") + key + " must be a number");
    return rope[key].get<double>();
  };
  a.attention.position_query_beta = static_cast<float>(number("llama_4_scaling_beta"));
  const double period = number("original_max_position_embeddings");
  if (!(period >= 1 && period <= (1 << 27))) c.fail("rope_parameters.original_max_position_embeddings must be in 1 to 2^27");
  a.attention.position_query_period = static_cast<int>(period);
  return std::make_unique<DecoderModel>(c, weights, a);
}

}  // namespace mlxnode
