// The MLX engine's face toward the addon: one loaded model with its KV cache.
// Engine thread only: every method runs on the single thread that owns all MLX work (engine.h).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "adapter.h"
#include "generation_stats.h"
#include "model_info.h"
#include "sampling_params.h"

namespace mlxnode {

class TokenMaskMailbox;    // token_mask.h
struct GenerationRequest;  // generate.h

struct LoadConfig {
  std::string model_dir;
  int context_size = 0;  // 0: the model's max_position_embeddings, capped at 4096
  // "auto": float32 on the CPU (MLX emulates float16/bfloat16 arithmetic there, 2-25x slower),
  // the checkpoint's own dtype on a GPU; or "float32" | "float16" | "bfloat16" to force one.
  std::string compute_dtype = "auto";
  // An mlx_lm.lora adapter directory applied at load: merged into the weights with `fuse_adapter`,
  // else kept beside them as the adapter of every request that names none.
  std::string adapter_dir;
  bool fuse_adapter = false;
  // Bytes of KV state kept for recent sequences (PromptCache, kv_cache.h); 0 keeps none.
  int64_t prompt_cache_bytes = int64_t{512} << 20;
  // Sequences decoded together (continuous batching, generate.h); 1 for models that cannot batch.
  int max_batch = 1;
};

class ModelSession {
 public:
  // Throws EngineError: MODEL_NOT_FOUND, BAD_WEIGHTS (naming file and tensor), UNSUPPORTED_ARCHITECTURE, MLX_ERROR.
  static std::unique_ptr<ModelSession> load(const LoadConfig& config);
  virtual ~ModelSession() = default;

  virtual const ModelInfo& info() const = 0;

  // Queues a generation (generate.h BatchScheduler): it joins the running batch when a row is
  // free. Returns true when the session was idle: the caller then calls step() until it returns
  // false (one engine job per step, so other jobs interleave).
  virtual bool submit(GenerationRequest request) = 0;
  // One scheduler step: admit, at most one prefill chunk, one batched decode step.
  virtual bool step() = 0;

  // Logits for every position of `tokens` ([tokens.size() * vocab_size], float32), evaluated
  // from an empty cache. For tests against the reference forward pass; leaves the cache empty.
  virtual std::vector<float> logits(const std::vector<int32_t>& tokens, const std::string& adapter) = 0;
  // Test hook: one batched decode step over left-padded rows (generate.h batched_last_logits).
  virtual std::vector<float> batch_logits(const std::vector<std::vector<int32_t>>& prompts) = 0;

  // Keeps an adapter (unfused) under `name` for requests that name it. BAD_ADAPTER (the model is
  // unchanged), INVALID_OPTION when the name is taken.
  virtual AdapterSummary load_adapter(const std::string& name, const std::string& dir) = 0;
  // INVALID_OPTION when no adapter has that name.
  virtual void unload_adapter(const std::string& name) = 0;
};

}  // namespace mlxnode
