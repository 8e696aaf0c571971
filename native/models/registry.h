// model_type -> family factory (mlx-lm's MODEL_REMAPPING + get_model_classes; mistral is llama).
// Engine thread only.
#pragma once
#include <memory>
#include <string>

#include "../adapter.h"
#include "../kv_cache.h"
#include "../loader.h"
#include "../model_info.h"

namespace mlxnode {

// A loaded decoder-only model: fixed after load; all runtime state lives in the KVCache.
class Model {
 public:
  virtual ~Model() = default;
  // tokens: int32 [1, T]. Appends T positions to `cache` and returns logits [1, T, vocab], or
  // only the last position's [1, 1, vocab] when `last_only` (skips the head for the rest).
  virtual Array forward(const Array& tokens, KVCache& cache, bool last_only) const = 0;
  // An empty cache for `forward`: one per layer, of the kind each layer needs (mlx-lm's make_cache).
  virtual KVCache make_cache() const = 0;
  // Told the context size once, before the first forward and make_cache (longrope picks its
  // factors by it; a sliding window the context never exceeds needs no rotating cache).
  virtual void fit_context(int /*context_size*/) {}
  // The linear modules an adapter may target, by checkpoint name; the pointers stay valid while
  // the model lives. Adapters change only their Linears, between requests.
  virtual std::vector<AdapterTarget> adapter_targets() { return {}; }
  // Whether sequences at different positions can decode in one batched step (kv_cache.h
  // RowLayout): when every layer's cache can hold rows (KVCache::batchable; every family here).
  // A family's attention must then take per-row positions and key masks (cache.rows()).
  bool can_batch() const;
  // model_type, dtype, quantization_bits, vocab_size, num_layers, hidden_size; the session
  // fills context_size and weight_bytes.
  ModelInfo info;
  int max_position_embeddings = 0;
};

// Builds the model from config and weights, taking (and shape-checking) every tensor it uses.
using ModelFactory = std::unique_ptr<Model> (*)(const ModelConfig& config, Weights& weights);

// nullptr when model_type is unknown.
ModelFactory find_model_factory(const std::string& model_type);
std::string supported_model_types();  // "llama, mistral, qwen2, qwen3, phi3, gemma, gemma2, gemma3_text, gemma3"

// The families (models/<family>.cpp).
std::unique_ptr<Model> make_llama(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_qwen2(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_qwen3(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_phi3(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_gemma(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_gemma2(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_gemma3_text(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_gemma3(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_gemma4_text(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_gemma4(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_smollm3(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_ministral3(const ModelConfig& config, Weights& weights);
// Mixture-of-experts families (moe.h).
std::unique_ptr<Model> make_mixtral(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_qwen3_moe(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_olmoe(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_gpt_oss(const ModelConfig& config, Weights& weights);
// Hybrid linear-attention families (hybrid.h).
std::unique_ptr<Model> make_qwen3_next(const ModelConfig& config, Weights& weights);
std::unique_ptr<Model> make_qwen3_5(const ModelConfig& config, Weights& weights);

}  // namespace mlxnode
