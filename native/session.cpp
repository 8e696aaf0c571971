// ModelSession over a family model, its KV cache and the tokens that cache holds.
// Engine thread only.
#include <algorithm>

#include "device.h"
#include "errors.h"
#include "generate.h"
#include "loader.h"
#include "models/registry.h"
#include "session.h"

namespace mlxnode {
namespace {

constexpr int kDefaultContextCap = 4096;

class Session : public ModelSession {
 public:
  Session(std::unique_ptr<Model> model, int context_size, int64_t weight_bytes, int64_t prompt_cache_bytes)
      : model_(std::move(model)), prompt_cache_(model_->info.num_layers, prompt_cache_bytes), info_(model_->info) {
    info_.context_size = context_size;
    info_.weight_bytes = weight_bytes;
  }

  const ModelInfo& info() const override { return info_; }

  GenerationStats generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                           const std::atomic<bool>& cancel,
                           const std::function<void(int32_t token)>& emit, TokenMaskMailbox* masks) override {
    PromptCache::Entry entry = prompt_cache_.take(prompt);
    GenerationStats stats = mlxnode::generate(GenerationContext{*model_, entry.cache, entry.tokens, info_.context_size},
                                              prompt, params, cancel, emit, masks);
    prompt_cache_.put(std::move(entry));  // not reached on an exception: that entry is lost
    return stats;
  }

  std::vector<float> logits(const std::vector<int32_t>& tokens) override {
    KVCache scratch(info_.num_layers);
    std::vector<int32_t> none;
    return all_logits(GenerationContext{*model_, scratch, none, info_.context_size}, tokens);
  }

 private:
  std::unique_ptr<Model> model_;
  PromptCache prompt_cache_;
  ModelInfo info_;
};

}  // namespace

// Order matters: the cheap checks (directory, config, architecture) come before any weights
// are touched, and every tensor is validated before any data is read.
// The dtype floating weights are cast to at load, or none to keep the checkpoint's.
static std::optional<mlx_dtype> resolve_compute_dtype(const std::string& name) {
  if (name == "auto") return current_device_name() == "cpu" ? std::optional<mlx_dtype>(MLX_FLOAT32) : std::nullopt;
  if (name == "float32") return MLX_FLOAT32;
  if (name == "float16") return MLX_FLOAT16;
  if (name == "bfloat16") return MLX_BFLOAT16;
  throw EngineError(kInvalidOption, "compute dtype must be auto, float32, float16 or bfloat16, got " + name);
}

std::unique_ptr<ModelSession> ModelSession::load(const LoadConfig& config) {
  if (config.context_size < 0)
    throw EngineError(kInvalidOption, "context_size must be >= 0, got " + std::to_string(config.context_size));
  const ModelConfig cfg = read_config(config.model_dir);
  const std::string supported = supported_model_types();
  if (!cfg.has("model_type") || !cfg.json()["model_type"].is_string())
    throw EngineError(kUnsupportedArchitecture, cfg.path() + " has no model_type (supported: " + supported + ")");
  const std::string type = cfg.get_string("model_type");
  const ModelFactory factory = find_model_factory(type);
  if (!factory)
    throw EngineError(kUnsupportedArchitecture,
                      "model_type '" + type + "' in " + cfg.path() + " is not supported (supported: " + supported + ")");

  Weights weights = Weights::load(config.model_dir, cfg, resolve_compute_dtype(config.compute_dtype));
  std::unique_ptr<Model> model = factory(cfg, weights);
  weights.check_all_used();
  weights.materialize();

  const int context_size = config.context_size > 0 ? config.context_size
                                                   : std::min(model->max_position_embeddings, kDefaultContextCap);
  model->fit_context(context_size);
  if (config.prompt_cache_bytes < 0)
    throw EngineError(kInvalidOption, "prompt_cache_bytes must be >= 0, got " + std::to_string(config.prompt_cache_bytes));
  return std::make_unique<Session>(std::move(model), context_size, weights.used_bytes(), config.prompt_cache_bytes);
}

}  // namespace mlxnode
