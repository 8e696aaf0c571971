// Low-rank adapters trained with mlx-lm (`mlx_lm.lora`): an adapter directory holds
// adapter_config.json and adapters.safetensors. Mirrors mlx-lm's tuner/utils.py
// (linear_to_lora_layers, load_adapters) and the inference math of tuner/lora.py LoRALinear and
// tuner/dora.py DoRALinear. Engine thread only.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "mlx_array.h"

namespace mlxnode {

struct Linear;

// One adapter's update of one Linear (or of one row block of a fused projection):
//   LoRA: y = linear(x) + (scale * (x @ a) @ b).astype(x.dtype)
//   DoRA: y = (magnitude / |W + scale b^T a^T|_row) * (x W^T + scale (x @ a) @ b) + bias
struct LoraDelta {
  int id = 0;          // the adapter's process-wide id
  Array a;             // [in, rank]
  Array b;             // [rank, out]
  float scale = 1.0f;  // lora_parameters.scale
  Array dora_scale;    // DoRA: the per-row factor above, made once at load; empty for LoRA
};

// A module of the checkpoint an adapter can target, by its checkpoint name
// ("model.layers.3.self_attn.qkv_proj"), with the Linear(s) holding its output rows in order
// (several when the engine splits a fused projection).
struct AdapterTarget {
  std::string name;
  std::string key;  // the name inside its layer ("self_attn.qkv_proj"); empty outside the layers
  int layer = -1;   // block index; -1 outside the layers
  std::vector<Linear*> parts;
};

// The adapter the forward pass being built uses: 0 is none. Set for the duration of one request
// (a property of the request, not of the model); engine thread only.
class AdapterScope {
 public:
  explicit AdapterScope(int id);
  ~AdapterScope();
  AdapterScope(const AdapterScope&) = delete;
  AdapterScope& operator=(const AdapterScope&) = delete;
  static int active();

 private:
  int previous_;
};

struct AdapterSummary {
  std::string type;  // "lora" | "dora"
  int rank = 0;
  float scale = 0;
  int modules = 0;   // checkpoint modules adapted
};

// Reads `<dir>/adapter_config.json` and `<dir>/adapters.safetensors`, checks every tensor against
// the targeted modules (missing, unused or misshapen tensors, unknown type or module: BAD_ADAPTER
// naming the module), and only then attaches the update to the Linears under `id`, or, with
// `fuse`, merges it into their weights (mlx-lm's fuse: exact for dense weights; quantized ones
// are dequantized, updated and quantized again with their own group size and bits). On error
// nothing is changed. `num_layers` is the model's block count.
AdapterSummary apply_adapter(const std::string& dir, int id, bool fuse, int num_layers,
                             const std::vector<AdapterTarget>& targets);

// Removes adapter `id` from every Linear.
void remove_adapter(int id, const std::vector<AdapterTarget>& targets);

// A new process-wide adapter id (never 0).
int next_adapter_id();

}  // namespace mlxnode
