#include "loader.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>

#include <mlx/c/io.h>

#include "device.h"
#include "errors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mlxnode {
namespace {

[[noreturn]] void bad_weights(const std::string& msg) { throw EngineError(kBadWeights, msg); }

json read_json_file(const fs::path& path) {
  // A regular file of bounded size: a symlink to /dev/zero must not be read forever.
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) bad_weights(path.string() + ": not a regular file");
  if (fs::file_size(path, ec) > (256u << 20)) bad_weights(path.string() + ": larger than 256 MiB, not a config file");
  std::ifstream in(path, std::ios::binary);
  if (!in) bad_weights(path.string() + ": cannot be read");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) bad_weights(path.string() + ": not a valid JSON object");
  return j;
}

size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1}, {"I8", 1},  {"U16", 2}, {"I16", 2}, {"F16", 2},  {"BF16", 2},
      {"U32", 4},  {"I32", 4}, {"F32", 4}, {"U64", 8}, {"I64", 8}, {"F64", 8}, {"C64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

struct TensorMeta {
  std::string dtype;
  std::vector<int> shape;
};

// Checks a safetensors file's framing ourselves before MLX maps it, so a truncated or corrupt
// file is reported as BAD_WEIGHTS naming the file (and never reaches MLX's lazy reads past EOF).
// Layout: u64 little-endian header length N, N bytes of JSON, then the data section.
std::map<std::string, TensorMeta> read_safetensors_header(const fs::path& path) {
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) bad_weights(name + ": cannot be opened");
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char len_bytes[8];
  if (file_size < 8 || !in.read(reinterpret_cast<char*>(len_bytes), 8))
    bad_weights(name + ": " + std::to_string(file_size) + " bytes, too short for a safetensors header");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  // 100 MB is the safetensors reference implementation's own header limit.
  if (header_len > 100'000'000) bad_weights(name + ": safetensors header length " + std::to_string(header_len) + " exceeds 100 MB");
  if (header_len == 0 || header_len > file_size - 8)
    bad_weights(name + ": safetensors header length " + std::to_string(header_len) + " exceeds the file size " +
                std::to_string(file_size) + " (truncated or corrupt file)");
  std::string text(header_len, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(header_len))) bad_weights(name + ": cannot read header");
  // The spec forbids repeated tensor names; nlohmann would silently keep the last one.
  std::string duplicate;
  std::set<std::string> seen;
  json::parser_callback_t on_key = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header = json::parse(text, on_key, false);
  if (header.is_discarded() || !header.is_object()) bad_weights(name + ": safetensors header is not a JSON object");
  if (!duplicate.empty()) bad_weights(name + ": tensor '" + duplicate + "' appears twice in the safetensors header");

  const uint64_t data_size = file_size - 8 - header_len;
  std::map<std::string, TensorMeta> out;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> ranges;
  for (auto& [key, v] : header.items()) {
    if (key == "__metadata__") continue;
    const std::string where = name + ": tensor '" + key + "'";
    if (!v.is_object() || !v.contains("dtype") || !v["dtype"].is_string() || !v.contains("shape") ||
        !v["shape"].is_array() || !v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2)
      bad_weights(where + " has a malformed header entry");
    TensorMeta meta{v["dtype"].get<std::string>(), {}};
    uint64_t nbytes = safetensors_dtype_size(meta.dtype);
    if (nbytes == 0) bad_weights(where + " has unsupported dtype " + meta.dtype);
    for (auto& d : v["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ull << 31) - 1) bad_weights(where + " has a bad shape");
      meta.shape.push_back(d.get<int>());
      nbytes *= d.get<uint64_t>();
      if (nbytes > file_size) break;  // overflow guard; the size check below then fails
    }
    auto& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) bad_weights(where + " has bad data_offsets");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (end < begin || end - begin != nbytes)
      bad_weights(where + " data_offsets do not match its dtype and shape (corrupt header)");
    if (end > data_size)
      bad_weights(where + " ends at byte " + std::to_string(end) + " of a " + std::to_string(data_size) +
                  "-byte data section (truncated or corrupt file)");
    ranges.emplace_back(begin, end, key);
    out.emplace(key, std::move(meta));
  }
  // The spec: tensors tile the data section exactly, without overlaps or holes.
  std::sort(ranges.begin(), ranges.end());
  uint64_t expected = 0;
  for (const auto& [begin, end, key] : ranges) {
    if (begin != expected)
      bad_weights(name + ": tensor '" + key + "' starts at byte " + std::to_string(begin) + " of the data section, expected " +
                  std::to_string(expected) + (begin < expected ? " (it overlaps the tensor before it)" : " (a hole before it)"));
    expected = end;
  }
  if (expected != data_size)
    bad_weights(name + ": the tensors end at byte " + std::to_string(expected) + " of a " + std::to_string(data_size) +
                "-byte data section (the spec forbids trailing bytes)");
  return out;
}

bool path_within(const fs::path& root, const fs::path& target) {
  return std::mismatch(root.begin(), root.end(), target.begin(), target.end()).first == root.end();
}

// `name` (from the index or a directory listing) as a file inside `dir`, or BAD_WEIGHTS without
// opening it: no absolute path, no "..", and no symlink that resolves outside the directory. The
// message names the entry, never anything read from the target. One exception: a Hugging Face
// cache snapshot (`models--org--name/snapshots/<rev>/`) links its files to the repository's own
// `blobs/`, which is allowed (and nothing outside that repository folder).
fs::path shard_inside(const fs::path& dir, const std::string& name, const std::string& source) {
  const fs::path rel(name);
  bool dotdot = false;
  for (const auto& part : rel) dotdot = dotdot || part == "..";
  if (name.empty() || rel.is_absolute() || rel.has_root_name() || dotdot)
    bad_weights(source + ": shard name '" + name + "' must be a file name inside the model directory");
  std::error_code ec;
  const fs::path root = fs::canonical(dir, ec);
  const fs::path target = fs::weakly_canonical(dir / rel, ec);
  if (ec || root.empty()) bad_weights(source + ": shard '" + name + "' cannot be resolved");
  const bool hf_snapshot = root.parent_path().filename() == "snapshots" &&
                           root.parent_path().parent_path().filename().string().rfind("models--", 0) == 0;
  if (!path_within(root, target) && !(hf_snapshot && path_within(root.parent_path().parent_path() / "blobs", target)))
    bad_weights(source + ": shard '" + name + "' resolves outside the model directory (symlink)");
  return dir / rel;
}

// The shard files of a model directory, in load order (mlx-lm globs model*.safetensors; the
// index, when present, is authoritative and lets us check that every listed tensor exists).
std::vector<std::string> find_shards(const fs::path& dir, json* weight_map) {
  const fs::path index = dir / "model.safetensors.index.json";
  std::set<std::string> files;
  if (fs::exists(index)) {
    json j = read_json_file(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      bad_weights(index.string() + ": has no weight_map object");
    *weight_map = j["weight_map"];
    for (auto& [tensor, file] : weight_map->items()) {
      if (!file.is_string()) bad_weights(index.string() + ": weight_map entry '" + tensor + "' is not a file name");
      shard_inside(dir, file.get<std::string>(), index.string() + " weight_map entry '" + tensor + "'");
      files.insert(file.get<std::string>());
    }
  } else {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir, ec)) {
      const std::string fname = e.path().filename().string();
      if (fname.rfind("model", 0) == 0 && e.path().extension() == ".safetensors") files.insert(fname);
    }
  }
  if (files.empty())
    throw EngineError(kModelNotFound, "no weights in " + dir.string() +
                                          " (expected model.safetensors or model.safetensors.index.json)");
  for (const auto& f : files) {
    shard_inside(dir, f, (dir / f).string());
    if (!fs::is_regular_file(dir / f)) bad_weights((dir / f).string() + ": weights file is missing");
  }
  return {files.begin(), files.end()};
}

[[noreturn]] void bad_config(const std::string& msg) { throw EngineError(kBadConfig, msg); }

QuantParams parse_quant(const json& q, const std::string& where) {
  if (!q.is_object()) bad_config(where + ": quantization should be an object");
  QuantParams p;
  if (q.contains("mode") && !q["mode"].is_null()) {
    if (!q["mode"].is_string()) bad_config(where + ": quantization mode should be a string, got " + q["mode"].dump());
    p.mode = q["mode"].get<std::string>();
  }
  // The modes MLX implements, with the group size and bits each fixes (mlx.core.quantize); affine's
  // are free (checked below). mlx-lm writes group_size and bits for every mode.
  struct Mode { const char* name; int group_size, bits; };
  static const Mode kModes[] = {{"affine", 0, 0}, {"mxfp4", 32, 4}, {"mxfp8", 32, 8}, {"nvfp4", 16, 4}};
  const Mode* mode = nullptr;
  for (const Mode& m : kModes)
    if (p.mode == m.name) mode = &m;
  if (!mode)
    throw EngineError(kUnsupportedArchitecture, where + ": quantization mode \"" + p.mode +
                                                    "\" is not supported (supported: affine, mxfp4, mxfp8, nvfp4)");
  auto read = [&](const char* key, int fallback) {
    if (!q.contains(key) || q[key].is_null()) {
      if (fallback > 0) return fallback;
      bad_config(where + ": quantization needs integer group_size and bits");
    }
    if (!q[key].is_number_unsigned() || q[key].get<uint64_t>() > (1u << 20))
      bad_config(where + ": quantization " + key + " " + q[key].dump() + " is out of range");
    return q[key].get<int>();
  };
  p.group_size = read("group_size", mode->group_size);
  p.bits = read("bits", mode->bits);
  if (mode->bits > 0 ? p.group_size != mode->group_size || p.bits != mode->bits
                     : p.group_size <= 0 || (p.bits != 2 && p.bits != 3 && p.bits != 4 && p.bits != 5 && p.bits != 6 && p.bits != 8))
    bad_config(where + ": unsupported quantization group_size " + std::to_string(p.group_size) + " / bits " +
               std::to_string(p.bits) + " for mode " + p.mode);
  return p;
}

}  // namespace

// ---- ModelConfig -----------------------------------------------------------------------------------

void ModelConfig::fail(const std::string& what) const { throw EngineError(kBadConfig, path_ + ": " + what); }

bool ModelConfig::has(const char* key) const { return json_.contains(key) && !json_[key].is_null(); }

const nlohmann::json& ModelConfig::at(const char* key, const char* type) const {
  if (!has(key)) fail(std::string("required key '") + key + "' is missing");
  const nlohmann::json& v = json_[key];
  const std::string t = type;
  bool ok = t == "int" ? v.is_number_integer() : t == "number" ? v.is_number() : t == "bool" ? v.is_boolean() : v.is_string();
  if (!ok) fail(std::string("'") + key + "' should be " + (t == "int" ? "an integer" : "a " + t) + ", got " + v.dump());
  return v;
}

int ModelConfig::get_int(const char* key) const {
  // nlohmann converts an out-of-range integer to int by truncation: check the 64-bit value first.
  const nlohmann::json& v = at(key, "int");
  const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(INT32_MAX)
                                           : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
  if (!fits) fail(std::string("'") + key + "' = " + v.dump() + " does not fit a 32-bit integer");
  return v.get<int>();
}
int ModelConfig::get_int(const char* key, int fallback) const { return has(key) ? get_int(key) : fallback; }
float ModelConfig::get_float(const char* key) const {
  const float f = at(key, "number").get<float>();
  if (!std::isfinite(f)) fail(std::string("'") + key + "' = " + json_[key].dump() + " is not a finite 32-bit float");
  return f;
}

void ModelConfig::check_range(const char* key, int64_t value, int64_t min, int64_t max) const {
  if (value < min || value > max)
    fail(std::string("'") + key + "' = " + std::to_string(value) + " is outside " + std::to_string(min) + " to " +
         std::to_string(max));
}
float ModelConfig::get_float(const char* key, float fallback) const { return has(key) ? get_float(key) : fallback; }
bool ModelConfig::get_bool(const char* key, bool fallback) const { return has(key) ? at(key, "bool").get<bool>() : fallback; }
std::optional<bool> ModelConfig::find_bool(const char* key) const {
  if (!has(key)) return std::nullopt;
  return at(key, "bool").get<bool>();
}
std::string ModelConfig::get_string(const char* key) const { return at(key, "string").get<std::string>(); }

ModelConfig read_config(const std::string& model_dir) {
  const fs::path dir(model_dir);
  if (model_dir.empty() || !fs::is_directory(dir))
    throw EngineError(kModelNotFound, "model directory not found: " + model_dir);
  const fs::path path = dir / "config.json";
  if (!fs::is_regular_file(path)) throw EngineError(kModelNotFound, "config.json not found: " + path.string());
  return ModelConfig(read_json_file(path), path.string());
}

// ---- Weights ----------------------------------------------------------------------------------

Weights Weights::load(const std::string& model_dir, const ModelConfig& config, std::optional<mlx_dtype> float_dtype) {
  Weights w;
  w.float_dtype_ = float_dtype;
  w.dir_ = model_dir;
  json weight_map;
  w.files_ = find_shards(model_dir, &weight_map);

  for (const auto& file : w.files_) w.add_file((fs::path(model_dir) / file).string());
  for (auto& [tensor, file] : weight_map.items()) {
    auto it = w.tensors_.find(tensor);
    if (it == w.tensors_.end() || fs::path(it->second.file).filename() != file.get<std::string>())
      bad_weights((fs::path(model_dir) / file.get<std::string>()).string() + ": tensor '" + tensor +
                  "' listed in model.safetensors.index.json is not in this file");
  }

  // mlx-lm writes "quantization"; "quantization_config" is the HF-compatible copy.
  const char* qkey = config.has("quantization") ? "quantization" : config.has("quantization_config") ? "quantization_config" : nullptr;
  if (qkey) {
    w.quant_json_ = config.json()[qkey];
    w.quant_ = parse_quant(w.quant_json_, config.path() + " " + qkey);
  }
  return w;
}

Weights Weights::load_file(const std::string& path) {
  Weights w;
  const fs::path p(path);
  w.dir_ = p.parent_path().string();
  w.files_ = {p.filename().string()};
  w.add_file(path);
  return w;
}

void Weights::add_file(const std::string& path) {
  auto metas = read_safetensors_header(path);
  ArrayMap arrays(mlx_map_string_to_array_new());
  StringMap metadata(mlx_map_string_to_string_new());
  try {
    check(mlx_load_safetensors(arrays.out(), metadata.out(), path.c_str(), load_stream()), "mlx_load_safetensors");
  } catch (const EngineError& e) {
    bad_weights(path + ": " + e.what());
  }
  for (auto& [name, meta] : metas) {
    if (tensors_.count(name)) bad_weights(path + ": tensor '" + name + "' also appears in " + tensors_[name].file);
    Entry e{Array(), path, meta.dtype, meta.shape, Use::Unclaimed};
    check(mlx_map_string_to_array_get(e.array.out(), arrays.get(), name.c_str()), "mlx_map_string_to_array_get");
    tensors_.emplace(name, std::move(e));
  }
}

void Weights::fail(const std::string& name, const std::string& what) const {
  auto it = tensors_.find(name);
  const std::string where = it != tensors_.end() ? it->second.file : dir_;
  bad_weights(where + ": tensor '" + name + "' " + what);
}

Array Weights::take(const std::string& name, const std::vector<int>& shape) {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    std::string files;
    for (const auto& f : files_) files += (files.empty() ? "" : ", ") + f;
    bad_weights(dir_ + ": tensor '" + name + "' is missing (searched " + files + ")");
  }
  if (it->second.use == Use::Ignored) fail(name, "was ignored by the model and cannot be taken");
  if (it->second.shape != shape)
    fail(name, "has shape " + shape_string(it->second.shape) + ", expected " + shape_string(shape));
  it->second.use = Use::Taken;
  return it->second.array;
}

Array Weights::take_float(const std::string& name, const std::vector<int>& shape) {
  Array a = take(name, shape);
  const std::string& dt = tensors_.at(name).dtype;
  if (dt != "F32" && dt != "F16" && dt != "BF16") fail(name, "has dtype " + dt + ", expected F32, F16 or BF16");
  if (float_dtype_ && a.dtype() != *float_dtype_) {
    // Cast once, and keep the cast in place of the original so materialize() reads it and
    // the checkpoint-dtype copy is not kept alive.
    a = mx::astype(a, *float_dtype_);
    tensors_.at(name).array = a;
  }
  return a;
}

Array Weights::take_packed(const std::string& name, const std::vector<int>& shape) {
  Array a = take(name, shape);
  const std::string& dt = tensors_.at(name).dtype;
  if (dt != "U32") fail(name, "has dtype " + dt + ", expected U32 (packed quantized weights)");
  return a;
}

Array Weights::take_scales(const std::string& name, const std::vector<int>& shape, const QuantParams& q) {
  if (q.affine()) return take_float(name, shape);
  Array a = take(name, shape);
  const std::string& dt = tensors_.at(name).dtype;
  if (dt != "U8") fail(name, "has dtype " + dt + ", expected U8 (" + q.mode + " scales)");
  return a;
}

void Weights::release(const std::string& name) {
  Entry& e = tensors_.at(name);
  released_bytes_ += static_cast<int64_t>(e.array.nbytes());
  e.array = Array();
}

void Weights::drop(Entry& e) {
  // Letting the lazy array go means nothing can evaluate (read) it later.
  e.use = Use::Ignored;
  e.array = Array();
}

void Weights::ignore(const std::string& name) {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) drop(it->second);
}

bool Weights::has_prefix(const std::string& prefix) const {
  auto it = tensors_.lower_bound(prefix);
  return it != tensors_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

std::vector<int> Weights::shape(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? std::vector<int>{} : it->second.shape;
}

void Weights::ignore_prefix(const std::string& prefix) {
  for (auto& [name, e] : tensors_)
    if (name.compare(0, prefix.size(), prefix) == 0) drop(e);
}

void Weights::rename_prefix(const std::string& from, const std::string& to) {
  std::map<std::string, Entry> renamed;
  for (auto& [name, e] : tensors_) {
    const bool match = name.compare(0, from.size(), from) == 0;
    renamed.emplace(match ? to + name.substr(from.size()) : name, std::move(e));
  }
  tensors_ = std::move(renamed);
  if (quant_json_.is_object()) {
    json overrides = json::object();
    for (auto it = quant_json_.begin(); it != quant_json_.end(); ++it) {
      const std::string& key = it.key();
      overrides[key.compare(0, from.size(), from) == 0 ? to + key.substr(from.size()) : key] = it.value();
    }
    quant_json_ = std::move(overrides);
  }
}

std::optional<QuantParams> Weights::quantization(const std::string& prefix) const {
  if (!has(prefix + ".scales")) return std::nullopt;
  if (!quant_) fail(prefix + ".scales", "exists but config.json has no quantization settings");
  if (quant_json_.contains(prefix)) {  // per-module override, as mlx-lm's class_predicate reads it
    const json& o = quant_json_[prefix];
    if (o.is_boolean() && !o.get<bool>()) fail(prefix + ".scales", "exists but config marks the module unquantized");
    if (o.is_object()) return parse_quant(o, dir_ + "/config.json quantization." + prefix);
  }
  return quant_;
}

void Weights::check_all_used() const {
  std::vector<std::string> unused;
  for (const auto& [name, e] : tensors_)
    if (e.use == Use::Unclaimed) unused.push_back(name);
  if (unused.empty()) return;
  std::string list;
  for (size_t i = 0; i < unused.size() && i < 5; ++i) list += (i ? ", " : "") + unused[i];
  if (unused.size() > 5) list += ", ...";
  bad_weights(tensors_.at(unused[0]).file + ": " + std::to_string(unused.size()) +
              " tensor(s) not used by the model: " + list);
}

void Weights::materialize() const {
  // One eval per file, so a read failure names the file it came from.
  for (const auto& file : files_) {
    const std::string path = (fs::path(dir_) / file).string();
    std::vector<Array> arrays;
    for (const auto& [name, e] : tensors_)
      if (e.use == Use::Taken && e.file == path && !e.array.empty()) arrays.push_back(e.array);
    try {
      eval(arrays);
    } catch (const EngineError& e) {
      bad_weights(path + ": reading tensors failed: " + e.what());
    }
  }
}

int64_t Weights::used_bytes() const {
  int64_t n = released_bytes_;
  for (const auto& [name, e] : tensors_)
    if (e.use == Use::Taken && !e.array.empty()) n += static_cast<int64_t>(e.array.nbytes());
  return n;
}

}  // namespace mlxnode
