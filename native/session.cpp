// ModelSession over a family model, its KV cache and the tokens that cache holds.
// Engine thread only.
#include <algorithm>
#include <map>

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
  Session(std::unique_ptr<Model> model, int context_size, int64_t weight_bytes, int64_t prompt_cache_bytes, int max_batch)
      : model_(std::move(model)),
        prompt_cache_([m = model_.get()] { return m->make_cache(); }, prompt_cache_bytes),
        info_(model_->info),
        scheduler_(*model_, prompt_cache_, context_size, max_batch, [this](const std::string& name) { return find_adapter(name); }) {
    info_.context_size = context_size;
    info_.weight_bytes = weight_bytes;
    info_.max_batch = scheduler_.max_rows();
  }

  const ModelInfo& info() const override { return info_; }

  bool submit(GenerationRequest request) override { return scheduler_.submit(std::move(request)); }
  bool step() override { return scheduler_.step(); }

  std::vector<float> logits(const std::vector<int32_t>& tokens, const std::string& adapter) override {
    AdapterScope scope(find_adapter(adapter));
    return all_logits(*model_, tokens, info_.context_size);
  }

  std::vector<float> batch_logits(const std::vector<std::vector<int32_t>>& prompts) override {
    AdapterScope scope(default_adapter_);
    return batched_last_logits(*model_, prompts, info_.context_size);
  }

  AdapterSummary load_adapter(const std::string& name, const std::string& dir) override {
    if (name.empty() || adapters_.count(name)) throw EngineError(kInvalidOption, "adapter name '" + name + "' is empty or already loaded");
    const int id = next_adapter_id();
    AdapterSummary summary = apply_adapter(dir, id, false, info_.num_layers, model_->adapter_targets());
    adapters_[name] = id;
    return summary;
  }

  void unload_adapter(const std::string& name) override {
    auto it = adapters_.find(name);
    if (it == adapters_.end()) throw EngineError(kInvalidOption, "no adapter named '" + name + "' is loaded");
    if (it->second == scheduler_.adapter()) prompt_cache_.clear();
    remove_adapter(it->second, model_->adapter_targets());
    adapters_.erase(it);
  }

  // The load-time adapter, kept unfused: the adapter of requests that name none.
  void set_default_adapter(int id) { default_adapter_ = id; }

 private:
  // The adapter id a request runs with (throws INVALID_OPTION for an unknown name).
  int find_adapter(const std::string& name) const {
    if (name.empty()) return default_adapter_;
    auto it = adapters_.find(name);
    if (it == adapters_.end()) throw EngineError(kInvalidOption, "no adapter named '" + name + "' is loaded (" + loaded_names() + ")");
    return it->second;
  }

  std::string loaded_names() const {
    std::string names;
    for (const auto& [n, id] : adapters_) names += (names.empty() ? "loaded: " : ", ") + n;
    return names.empty() ? "none loaded" : names;
  }

  std::unique_ptr<Model> model_;
  PromptCache prompt_cache_;
  ModelInfo info_;
  std::map<std::string, int> adapters_;  // loaded adapters: name -> id
  int default_adapter_ = 0;
  BatchScheduler scheduler_;             // last: it refers to model_ and prompt_cache_
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
  if (config.max_batch < 1 || config.max_batch > 64)
    throw EngineError(kInvalidOption, "max_batch must be in [1, 64], got " + std::to_string(config.max_batch));
  const int adapter = config.adapter_dir.empty() ? 0 : next_adapter_id();
  if (adapter) apply_adapter(config.adapter_dir, adapter, config.fuse_adapter, model->info.num_layers, model->adapter_targets());
  auto session = std::make_unique<Session>(std::move(model), context_size, weights.used_bytes(), config.prompt_cache_bytes,
                                            config.max_batch);
  if (adapter && !config.fuse_adapter) session->set_default_adapter(adapter);
  return session;
}

}  // namespace mlxnode
