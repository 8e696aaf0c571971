#include "registry.h"

#include <utility>

namespace mlxnode {

bool Model::can_batch() const { return make_cache().batchable(); }

namespace {

const std::pair<const char*, ModelFactory> kFactories[] = {
    {"llama", make_llama},
    {"mistral", make_llama},  // same graph; mlx-lm maps it to llama too
    {"qwen2", make_qwen2},
    {"qwen3", make_qwen3},
    {"phi3", make_phi3},
    {"gemma", make_gemma},
    {"gemma2", make_gemma2},
    {"gemma3_text", make_gemma3_text},
    {"gemma3", make_gemma3},  // multimodal checkpoint, run as its text model
    {"gemma4_text", make_gemma4_text},
    {"gemma4", make_gemma4},  // multimodal checkpoint, run as its text model
    {"smollm3", make_smollm3},
    {"ministral3", make_ministral3},
    {"mixtral", make_mixtral},
    {"qwen3_moe", make_qwen3_moe},
    {"olmoe", make_olmoe},
    {"gpt_oss", make_gpt_oss},
    {"qwen3_next", make_qwen3_next},
    {"qwen3_5", make_qwen3_5},
    {"qwen3_5_moe", make_qwen3_5},  // qwen3_5 with experts; mlx-lm's qwen3_5_moe only adds a sanitize step (SparseMoe::load)
};

}  // namespace

ModelFactory find_model_factory(const std::string& model_type) {
  for (const auto& [name, factory] : kFactories)
    if (model_type == name) return factory;
  return nullptr;
}

std::string supported_model_types() {
  std::string out;
  for (const auto& [name, factory] : kFactories) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

}  // namespace mlxnode
