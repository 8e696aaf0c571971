// Model directory loading: config.json, safetensors shards and MLX quantization metadata.
// Mirrors mlx-lm's utils.load_model: config first, weights lazily via mx.load, a layer is
// quantized iff `<prefix>.scales` exists, strict accounting of unused tensors. Every problem is
// reported before any graph is built: MODEL_NOT_FOUND (path), BAD_WEIGHTS (file, tensor, shapes).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mlx_array.h"

namespace mlxnode {

// Typed access to config.json with errors (BAD_CONFIG) that name the file and key. A key whose
// value is null counts as absent, as in HF configs ("rope_scaling": null). Integers must fit 32
// bits and floats must be finite.
class ModelConfig {
 public:
  ModelConfig(nlohmann::json json, std::string path) : json_(std::move(json)), path_(std::move(path)) {}

  bool has(const char* key) const;
  int get_int(const char* key) const;  // required
  int get_int(const char* key, int fallback) const;
  float get_float(const char* key) const;
  float get_float(const char* key, float fallback) const;
  bool get_bool(const char* key, bool fallback) const;
  // BAD_CONFIG "'<key>' = <value> is outside <min> to <max>" unless min <= value <= max.
  void check_range(const char* key, int64_t value, int64_t min, int64_t max) const;
  std::optional<bool> find_bool(const char* key) const;
  std::string get_string(const char* key) const;
  const nlohmann::json& json() const { return json_; }
  const std::string& path() const { return path_; }
  [[noreturn]] void fail(const std::string& what) const;  // BAD_CONFIG "<path>: <what>"

 private:
  const nlohmann::json& at(const char* key, const char* type) const;
  nlohmann::json json_;
  std::string path_;
};

struct QuantParams {
  int group_size = 64;
  int bits = 4;
  // "affine" (float scales and biases), or the microscaling float formats "mxfp4", "mxfp8",
  // "nvfp4" (uint8 scales, no biases), as mlx_lm.convert --q-mode writes them.
  std::string mode = "affine";
  bool affine() const { return mode == "affine"; }
};

// Reads `<dir>/config.json`. Throws MODEL_NOT_FOUND naming the missing path.
ModelConfig read_config(const std::string& model_dir);

// All tensors of a model directory, loaded lazily (no data read until evaluated).
class Weights {
 public:
  // Finds the shards (model.safetensors.index.json, else model*.safetensors), validates each
  // safetensors header against its file size, then maps the tensors with mlx_load_safetensors.
  // `float_dtype`, when given, is the dtype every floating tensor (weights, norms, quantization
  // scales/biases) is cast to once at load: the model then computes in it.
  static Weights load(const std::string& model_dir, const ModelConfig& config,
                      std::optional<mlx_dtype> float_dtype = std::nullopt);
  // The tensors of one safetensors file, in their stored dtypes (an adapter's).
  static Weights load_file(const std::string& path);

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // Whether any tensor's name starts with `prefix`; a tensor's stored shape (empty when absent):
  // for checkpoints whose layout (HF's or mlx-lm's) decides how they are read.
  bool has_prefix(const std::string& prefix) const;
  std::vector<int> shape(const std::string& name) const;
  // The tensor `name` checked against `shape`; marks it taken. BAD_WEIGHTS when missing, ignored or
  // shaped differently, naming the file and both shapes.
  Array take(const std::string& name, const std::vector<int>& shape);
  // As take, but only floating dtypes (F32/F16/BF16) are accepted.
  Array take_float(const std::string& name, const std::vector<int>& shape);
  // As take, for quantized weights packed into uint32 words (U32).
  Array take_packed(const std::string& name, const std::vector<int>& shape);
  // A quantized module's scales: float for affine, U8 for the microscaling modes.
  Array take_scales(const std::string& name, const std::vector<int>& shape, const QuantParams& q);
  // Drops the loaded array of a taken tensor the model has copied into one of its own (HF's per-expert
  // tensors, stacked): its memory is freed now, and it still counts in used_bytes.
  void release(const std::string& name);
  // Marks a tensor the model knowingly drops (e.g. rotary_emb.inv_freq): it is never read from disk
  // (its lazy array is let go) nor counted in used_bytes.
  void ignore(const std::string& name);
  // Marks every tensor under `prefix` as dropped (a multimodal checkpoint's vision tower).
  void ignore_prefix(const std::string& prefix);
  // Renames tensors (and per-module quantization overrides) starting with `from` to start with
  // `to` instead: a text model nested in a multimodal checkpoint ("language_model.model.*").
  void rename_prefix(const std::string& from, const std::string& to);

  // Quantization of the module at `prefix` ("model.layers.0.mlp.up_proj"): nullopt when
  // `<prefix>.scales` is absent; else the per-module override in config `quantization`, or
  // its global group_size/bits.
  std::optional<QuantParams> quantization(const std::string& prefix) const;
  int global_bits() const { return quant_ ? quant_->bits : 0; }

  // BAD_WEIGHTS listing tensors neither taken nor ignored (mlx-lm's strict load_weights).
  void check_all_used() const;
  // Reads every taken tensor from disk now, so I/O errors surface at load (as BAD_WEIGHTS).
  void materialize() const;
  // Bytes of the taken tensors (ignored ones excluded).
  int64_t used_bytes() const;
  [[noreturn]] void fail(const std::string& name, const std::string& what) const;

 private:
  void add_file(const std::string& path);
  // What the model did with a tensor: nothing yet, took it into its graph, or knowingly dropped it.
  enum class Use { Unclaimed, Taken, Ignored };
  struct Entry {
    Array array;
    std::string file;
    std::string dtype;  // safetensors dtype string ("F16", "U32", ...)
    std::vector<int> shape;
    Use use = Use::Unclaimed;
  };
  void drop(Entry& e);
  std::string dir_;
  std::vector<std::string> files_;
  std::map<std::string, Entry> tensors_;
  std::optional<QuantParams> quant_;
  nlohmann::json quant_json_;
  std::optional<mlx_dtype> float_dtype_;
  int64_t released_bytes_ = 0;
};

}  // namespace mlxnode
