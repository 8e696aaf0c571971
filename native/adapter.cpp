#include "adapter.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "errors.h"
#include "layers.h"
#include "loader.h"

namespace mlxnode {
namespace fs = std::filesystem;

namespace {

int g_active_adapter = 0;  // engine thread only
int g_next_adapter_id = 0;

struct AdapterConfig {
  std::string path;   // adapter_config.json
  bool dora = false;
  int rank = 0;
  float scale = 20.0f;  // mlx_lm.lora's default
  int num_layers = 0;
  bool has_keys = false;
  std::set<std::string> keys;
};

[[noreturn]] void bad_adapter(const std::string& what) { throw EngineError(kBadAdapter, what); }

AdapterConfig read_adapter_config(const std::string& dir) {
  if (dir.empty() || !fs::is_directory(dir)) bad_adapter("adapter directory not found: " + dir);
  AdapterConfig c;
  c.path = (fs::path(dir) / "adapter_config.json").string();
  std::ifstream in(c.path);
  if (!in) bad_adapter(c.path + " not found (an mlx_lm.lora adapter directory has adapter_config.json and adapters.safetensors)");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object()) bad_adapter(c.path + ": not a JSON object");
  auto fail = [&](const std::string& what) { bad_adapter(c.path + ": " + what); };

  const std::string type = j.contains("fine_tune_type") && j["fine_tune_type"].is_string() ? j["fine_tune_type"].get<std::string>() : "lora";
  if (type == "full") fail("fine_tune_type 'full' saves whole weights, not an adapter: load the fine-tuned model directory instead");
  if (type != "lora" && type != "dora") fail("unknown fine_tune_type '" + type + "' (supported: lora, dora)");
  c.dora = type == "dora";

  if (!j.contains("num_layers") || !j["num_layers"].is_number_integer()) fail("num_layers must be an integer");
  c.num_layers = j["num_layers"].get<int>();
  if (!j.contains("lora_parameters") || !j["lora_parameters"].is_object()) fail("lora_parameters must be an object");
  const nlohmann::json& p = j["lora_parameters"];
  if (!p.contains("rank") || !p["rank"].is_number_integer() || p["rank"].get<int>() <= 0)
    fail("lora_parameters.rank must be a positive integer");
  c.rank = p["rank"].get<int>();
  if (p.contains("scale")) {
    if (!p["scale"].is_number()) fail("lora_parameters.scale must be a number");
    c.scale = p["scale"].get<float>();
  }
  // dropout only acts in training.
  if (p.contains("keys") && !p["keys"].is_null()) {
    if (!p["keys"].is_array()) fail("lora_parameters.keys must be a list of module names");
    c.has_keys = true;
    for (const auto& k : p["keys"]) {
      if (!k.is_string()) fail("lora_parameters.keys must be a list of module names");
      c.keys.insert(k.get<std::string>());
    }
  }
  return c;
}

// mlx-lm's linear_to_lora_layers: within the last num_layers blocks (all when num_layers <= 0, as
// layers[-max(n, 0):] is), the modules named by keys (every linear module without keys); outside the
// blocks, modules whose full name is a key.
bool targeted(const AdapterConfig& c, const AdapterTarget& t, int num_layers) {
  if (t.layer < 0) return c.has_keys && c.keys.count(t.name) != 0;
  const int first = c.num_layers <= 0 ? 0 : std::max(0, num_layers - c.num_layers);
  return t.layer >= first && (!c.has_keys || c.keys.count(t.key) != 0);
}

// The updates of one module, one per part; dora_scale made for DoRA.
std::vector<LoraDelta> module_deltas(Weights& w, const AdapterConfig& c, const AdapterTarget& t, int id) {
  int in = t.parts[0]->in, out = 0;
  for (const Linear* part : t.parts) out += part->out;
  LoraDelta whole;
  whole.id = id;
  whole.scale = c.scale;
  whole.a = w.take_float(t.name + ".lora_a", {in, c.rank});
  whole.b = w.take_float(t.name + ".lora_b", {c.rank, out});
  const Array m = c.dora ? w.take_float(t.name + ".m", {out}) : Array();
  std::vector<LoraDelta> deltas;
  int begin = 0;
  for (const Linear* part : t.parts) {
    LoraDelta d = whole;
    if (t.parts.size() > 1) d.b = mx::slice_axis(whole.b, 1, begin, begin + part->out);
    if (c.dora) {
      // DoRALinear: m / |W + (scale b^T) a^T| per output row, fixed at inference.
      const Array scaled_bt = mx::transpose(mx::multiply(d.b, Array::scalar(c.scale, d.b.dtype())), {1, 0});
      const Array adapted = mx::add(part->dense_weight(), mx::matmul(scaled_bt, mx::transpose(d.a, {1, 0})));
      const Array m_part = t.parts.size() > 1 ? mx::slice_axis(m, 0, begin, begin + part->out) : m;
      d.dora_scale = mx::divide(m_part, mx::norm_l2(adapted, 1));
    }
    deltas.push_back(std::move(d));
    begin += part->out;
  }
  return deltas;
}

// LoRALinear.fuse / DoRALinear.fuse: W + ((scale b^T) a^T).astype(W.dtype), DoRA then rescaled per
// row to its magnitude (dora_scale already is magnitude / row norm). Kept in the layer's dtype.
Array fused_weight(const Linear& part, const LoraDelta& d) {
  const Array w = part.dense_weight();
  const Array scaled_bt = mx::transpose(mx::multiply(d.b, Array::scalar(d.scale, d.b.dtype())), {1, 0});
  Array fused = mx::add(w, mx::astype(mx::matmul(scaled_bt, mx::transpose(d.a, {1, 0})), w.dtype()));
  if (!d.dora_scale.empty()) fused = mx::multiply(mx::reshape(d.dora_scale, {part.out, 1}), fused);
  return mx::astype(fused, w.dtype());
}

}  // namespace

AdapterScope::AdapterScope(int id) : previous_(g_active_adapter) { g_active_adapter = id; }
AdapterScope::~AdapterScope() { g_active_adapter = previous_; }
int AdapterScope::active() { return g_active_adapter; }

int next_adapter_id() { return ++g_next_adapter_id; }

AdapterSummary apply_adapter(const std::string& dir, int id, bool fuse, int num_layers,
                             const std::vector<AdapterTarget>& targets) {
  const AdapterConfig c = read_adapter_config(dir);
  const std::string file = (fs::path(dir) / "adapters.safetensors").string();
  if (!fs::is_regular_file(file)) bad_adapter(file + " not found");

  // Everything is read and checked before any layer changes, so a bad adapter leaves the model as it was.
  std::vector<std::pair<const AdapterTarget*, std::vector<LoraDelta>>> updates;
  std::vector<Array> to_eval;
  try {
    Weights w = Weights::load_file(file);
    for (const AdapterTarget& t : targets) {
      if (!targeted(c, t, num_layers)) continue;
      updates.emplace_back(&t, module_deltas(w, c, t, id));
      for (const LoraDelta& d : updates.back().second) {
        to_eval.insert(to_eval.end(), {d.a, d.b});
        if (!d.dora_scale.empty()) to_eval.push_back(d.dora_scale);
      }
    }
    // A tensor no targeted module takes (an unsupported module such as an embedding or experts, or
    // a config that does not match the weights) is an error, not silently dropped.
    w.check_all_used();
    if (updates.empty()) bad_adapter(c.path + ": the adapter targets no module of this model");
    eval(to_eval);
  } catch (const EngineError& e) {
    if (e.code() == kBadAdapter) throw;
    bad_adapter("adapter " + dir + ": " + e.what());
  }

  if (fuse) {
    std::vector<std::pair<Linear*, Array>> weights;
    std::vector<Array> fused;
    for (auto& [t, deltas] : updates)
      for (size_t i = 0; i < deltas.size(); ++i) {
        weights.emplace_back(t->parts[i], fused_weight(*t->parts[i], deltas[i]));
        fused.push_back(weights.back().second);
      }
    eval(fused);  // once, here: a lazy sum would be recomputed on every forward pass
    std::vector<Array> stored;
    for (auto& [linear, weight] : weights) {
      linear->set_weight(weight);
      stored.insert(stored.end(), {linear->weight_t, linear->weight, linear->scales, linear->biases});
    }
    stored.erase(std::remove_if(stored.begin(), stored.end(), [](const Array& a) { return a.empty(); }), stored.end());
    eval(stored);
  } else {
    for (auto& [t, deltas] : updates)
      for (size_t i = 0; i < deltas.size(); ++i) t->parts[i]->adapters.push_back(std::move(deltas[i]));
  }
  return AdapterSummary{c.dora ? "dora" : "lora", c.rank, c.scale, static_cast<int>(updates.size())};
}

void remove_adapter(int id, const std::vector<AdapterTarget>& targets) {
  for (const AdapterTarget& t : targets)
    for (Linear* part : t.parts)
      part->adapters.erase(std::remove_if(part->adapters.begin(), part->adapters.end(),
                                          [id](const LoraDelta& d) { return d.id == id; }),
                           part->adapters.end());
}

}  // namespace mlxnode
