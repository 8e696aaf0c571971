#include "model_binding.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "device.h"
#include "engine.h"
#include "generate.h"
#include "session.h"
#include "token_mask.h"

namespace mlxnode {
namespace {

struct Unit {};

// A session is created and destroyed on the engine thread: MLX arrays must not be freed elsewhere.
// Dropped there (unload's job), it is deleted at once, so unload frees it before it returns.
using SessionPtr = std::shared_ptr<ModelSession>;
SessionPtr own_on_engine(std::unique_ptr<ModelSession> session) {
  return SessionPtr(session.release(), [](ModelSession* s) {
    if (Engine::get().on_engine_thread()) {
      delete s;
    } else if (!Engine::get().post([s] { delete s; })) {
      // The engine already stopped (process exit): let the OS reclaim it.
    }
  });
}

std::vector<int32_t> int32_vector(const Napi::Value& value, const char* name) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw coded_error<Napi::TypeError>(value.Env(), kInvalidOption, std::string(name) + " must be an Int32Array");
  }
  auto array = value.As<Napi::Int32Array>();
  return std::vector<int32_t>(array.Data(), array.Data() + array.ElementLength());
}

double number_field(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw coded_error<Napi::TypeError>(o.Env(), kInvalidOption, std::string("params.") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

std::string string_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return "";
  if (!v.IsString()) throw coded_error<Napi::TypeError>(o.Env(), kInvalidOption, std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// The ranges of lib/sampling.ts's SAMPLING_PARAMETERS, checked again here so that a direct call
// cannot hand the sampler a value it cannot use (a zero repetition penalty divides by zero, a
// negative window or top-k indexes out of bounds). tests/sampling.test.ts checks that this table
// and the TypeScript one agree, through samplingRanges().
struct SamplingRange {
  const char* key;
  bool integer;
  double min;
  bool min_exclusive;
  double max;
};
constexpr SamplingRange kSamplingRanges[] = {
    {"maxTokens", true, 1, false, 1 << 20},
    {"temperature", false, 0, false, 2},
    {"topP", false, 0, true, 1},
    {"topK", true, 0, false, 1 << 20},
    {"minP", false, 0, false, 1},
    {"repetitionPenalty", false, 0.01, false, 10},
    {"repetitionContextSize", true, 1, false, 1 << 16},
    {"seed", true, 0, false, 4294967295.0},
};

std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", x);
  return buf;
}

// As lib/sampling.ts's describeRange: "an integer in [1, 1048576]", "a number in (0, 1]".
std::string describe_range(const SamplingRange& r) {
  return std::string(r.integer ? "an integer" : "a number") + " in " + (r.min_exclusive ? "(" : "[") +
         format_number(r.min) + ", " + format_number(r.max) + "]";
}

// An INVALID_OPTION error with the fields lib/errors.ts builds an InvalidOptionError from.
Napi::Error invalid_option(Napi::Env env, const std::string& option, const std::string& expected, Napi::Value got) {
  Napi::Error e = coded_error(env, kInvalidOption, "Invalid option \"" + option + "\": expected " + expected);
  e.Set("option", Napi::String::New(env, option));
  e.Set("expected", Napi::String::New(env, expected));
  e.Set("got", got);
  return e;
}

double sampling_field(const Napi::Object& o, const char* key, double fallback) {
  const SamplingRange* r = nullptr;
  for (const auto& range : kSamplingRanges)
    if (std::strcmp(range.key, key) == 0) r = &range;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : std::nan("");
  const bool ok = std::isfinite(x) && (!r->integer || x == std::floor(x)) && (r->min_exclusive ? x > r->min : x >= r->min) &&
                  x <= r->max;
  if (!ok) throw invalid_option(o.Env(), key, describe_range(*r), v);
  return x;
}

// params.logprobs: absent (-1: none) or the alternatives per token, an integer in [0, 20]
// (lib/logprobs.ts MAX_TOP_LOGPROBS), which token_logprobs' argpartition relies on.
int logprobs_field(const Napi::Object& o) {
  Napi::Value v = o.Get("logprobs");
  if (v.IsUndefined()) return -1;
  const double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : std::nan("");
  if (!(x >= 0 && x <= 20 && x == std::floor(x))) throw invalid_option(o.Env(), "logprobs", "an integer in [0, 20]", v);
  return static_cast<int>(x);
}

// The sampler trusts what this returns: every field is in its range.
SamplingParams sampling_params(const Napi::Object& o) {
  SamplingParams p;
  p.temperature = static_cast<float>(sampling_field(o, "temperature", p.temperature));
  p.top_p = static_cast<float>(sampling_field(o, "topP", p.top_p));
  p.top_k = static_cast<int>(sampling_field(o, "topK", p.top_k));
  p.min_p = static_cast<float>(sampling_field(o, "minP", p.min_p));
  p.repetition_penalty = static_cast<float>(sampling_field(o, "repetitionPenalty", p.repetition_penalty));
  p.repetition_context_size = static_cast<int>(sampling_field(o, "repetitionContextSize", p.repetition_context_size));
  p.seed = static_cast<uint64_t>(sampling_field(o, "seed", 0));
  p.max_tokens = static_cast<int>(sampling_field(o, "maxTokens", p.max_tokens));
  p.logprobs = logprobs_field(o);
  if (o.Has("stopTokenIds")) p.stop_token_ids = int32_vector(o.Get("stopTokenIds"), "params.stopTokenIds");
  p.adapter = string_field(o, "adapter");
  return p;
}

Napi::Value SamplingRanges(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  for (const auto& r : kSamplingRanges) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("integer", r.integer);
    o.Set("min", r.min);
    o.Set("minExclusive", r.min_exclusive);
    o.Set("max", r.max);
    out.Set(r.key, o);
  }
  return out;
}

Napi::Object info_to_js(Napi::Env env, const ModelInfo& info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("modelType", info.model_type);
  o.Set("dtype", info.dtype);
  o.Set("quantizationBits", info.quantization_bits);
  o.Set("vocabSize", info.vocab_size);
  o.Set("contextSize", info.context_size);
  o.Set("numLayers", info.num_layers);
  o.Set("hiddenSize", info.hidden_size);
  o.Set("weightBytes", static_cast<double>(info.weight_bytes));
  o.Set("kvBytesPerToken", static_cast<double>(info.kv_bytes_per_token));
  o.Set("maxBatch", info.max_batch);
  return o;
}

Napi::Object stats_to_js(Napi::Env env, const GenerationStats& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("evaluatedPromptTokens", s.evaluated_prompt_tokens);
  o.Set("generatedTokens", s.generated_tokens);
  o.Set("finish", s.finish);
  o.Set("prefillMs", s.prefill_ms);
  o.Set("decodeMs", s.decode_ms);
  o.Set("graphBuildMs", s.graph_build_ms);
  o.Set("hostMs", s.host_ms);
  o.Set("opsPerToken", static_cast<double>(s.ops_per_token));
  o.Set("maskWaitMs", s.mask_wait_ms);
  return o;
}

Napi::Object summary_to_js(Napi::Env env, const AdapterSummary& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", s.type);
  o.Set("rank", s.rank);
  o.Set("scale", s.scale);
  o.Set("modules", s.modules);
  return o;
}

// Tokens produced on the engine thread, waiting for the JS thread. While one delivery is queued
// further tokens join it, so a slow event loop receives batches instead of a backlog of calls.
struct TokenMailbox {
  std::mutex mutex;
  std::vector<int32_t> pending;
  std::vector<float> logprobs;  // each pending token's EmittedToken::logprobs, concatenated
  bool delivery_queued = false;

  std::pair<std::vector<int32_t>, std::vector<float>> take() {
    std::lock_guard<std::mutex> lock(mutex);
    delivery_queued = false;
    return {std::exchange(pending, {}), std::exchange(logprobs, {})};
  }
};

// Both copy into V8 memory: Electron forbids external buffers.
Napi::Int32Array to_int32_array(Napi::Env env, const std::vector<int32_t>& ids) {
  auto array = Napi::Int32Array::New(env, ids.size());
  std::copy(ids.begin(), ids.end(), array.Data());
  return array;
}

Napi::Float32Array to_float32_array(Napi::Env env, const std::vector<float>& values) {
  auto array = Napi::Float32Array::New(env, values.size());
  std::copy(values.begin(), values.end(), array.Data());
  return array;
}

// Drives a session's scheduler: one step per engine job, reposted while work remains, so other
// jobs (other models, logits, unload) run between steps. Once the engine is stopping (no more
// posts), the remaining steps run here: stopping cancelled every request, so they end at once.
// Engine thread.
void pump(SessionPtr session) {
  while (session->step())
    if (Engine::get().post([session]() mutable { pump(std::move(session)); })) return;
}

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod<&NativeModel::Info>("info"),
                        InstanceMethod<&NativeModel::Generate>("generate"),
                        InstanceMethod<&NativeModel::Logits>("logits"),
                        InstanceMethod<&NativeModel::BatchLogits>("batchLogits"),
                        InstanceMethod<&NativeModel::LoadAdapter>("loadAdapter"),
                        InstanceMethod<&NativeModel::UnloadAdapter>("unloadAdapter"),
                        InstanceMethod<&NativeModel::Unload>("unload")});
  }

  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {}

  void Attach(SessionPtr session, ModelInfo model_info) {
    session_ = std::move(session);
    info_ = std::move(model_info);
  }

 private:
  SessionPtr Session(Napi::Env env) {
    if (!session_) throw coded_error(env, kUnloaded, "the model was unloaded");
    return session_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) { return info_to_js(info.Env(), info_); }

  // generate(promptIds: Int32Array, params, onEvent(tokens: Int32Array | null, done?: {error?, stats?}, logprobs?: Float32Array))
  // With params.logprobs = n >= 0, `logprobs` holds 1 + 2n floats per token (EmittedToken::logprobs).
  //   -> { cancel(), provideMask(step, mask: Uint32Array | null) }
  // With params.constrained, token n is sampled only after provideMask(n, ...) (see token_mask.h).
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    SessionPtr session = Session(env);
    auto prompt = int32_vector(info[0], "promptIds");
    if (!info[1].IsObject()) throw coded_error<Napi::TypeError>(env, kInvalidOption, "params must be an object");
    SamplingParams params = sampling_params(info[1].As<Napi::Object>());
    if (!info[2].IsFunction()) throw coded_error<Napi::TypeError>(env, kInvalidOption, "onEvent must be a function");
    const bool constrained = info[1].As<Napi::Object>().Get("constrained").ToBoolean();
    auto masks = constrained ? std::make_shared<TokenMaskMailbox>(info_.vocab_size) : nullptr;

    auto cancel = std::make_shared<std::atomic<bool>>(false);
    auto mailbox = std::make_shared<TokenMailbox>();
    auto tsfn = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "mlx-node:generate", 0, 1);

    auto deliver = [mailbox](Napi::Env env, Napi::Function on_event) {
      auto [tokens, logprobs] = mailbox->take();
      if (tokens.empty()) return;
      if (logprobs.empty()) {
        on_event.Call({to_int32_array(env, tokens)});
        return;
      }
      on_event.Call({to_int32_array(env, tokens), env.Undefined(), to_float32_array(env, logprobs)});
    };

    GenerationRequest request;
    request.prompt = std::move(prompt);
    request.params = std::move(params);
    request.cancel = cancel;
    request.masks = masks;
    request.emit = [mailbox, tsfn, deliver](const EmittedToken& token) mutable {
      std::lock_guard<std::mutex> lock(mailbox->mutex);
      mailbox->pending.push_back(token.id);
      mailbox->logprobs.insert(mailbox->logprobs.end(), token.logprobs.begin(), token.logprobs.end());
      if (!mailbox->delivery_queued) {
        mailbox->delivery_queued = true;
        tsfn.NonBlockingCall(deliver);
      }
    };
    request.done = [cancel, tsfn, deliver](const GenerationStats& stats, std::exception_ptr exception) mutable {
      bool failed = false;
      JobError error;
      if (exception) error = capture_error([&] { std::rethrow_exception(exception); }, failed);
      Engine::get().untrack_cancel(cancel);
      tsfn.BlockingCall([deliver, stats, failed, error](Napi::Env env, Napi::Function on_event) {
        deliver(env, on_event);
        Napi::Object done = Napi::Object::New(env);
        if (failed) done.Set("error", make_js_error(env, error).Value());
        else done.Set("stats", stats_to_js(env, stats));
        on_event.Call({env.Null(), done});
      });
      tsfn.Release();
    };

    Engine::get().track_cancel(cancel);
    auto shared = std::make_shared<GenerationRequest>(std::move(request));
    bool posted = Engine::get().post([session, shared]() mutable {
      if (session->submit(std::move(*shared))) pump(std::move(session));
    });
    if (!posted) {
      Engine::get().untrack_cancel(cancel);
      tsfn.Release();
      throw coded_error(env, kMlxError, "the MLX engine has stopped");
    }

    Napi::Object handle = Napi::Object::New(env);
    handle.Set("cancel", Napi::Function::New(env, [cancel, masks](const Napi::CallbackInfo&) {
      cancel->store(true);
      if (masks) masks->wake();  // a generation blocked on its next mask sees the cancel at once
    }));
    handle.Set("provideMask", Napi::Function::New(env, [masks](const Napi::CallbackInfo& info) {
      Napi::Env env = info.Env();
      if (!masks) throw coded_error(env, kInvalidOption, "provideMask: this generation was not started with params.constrained");
      if (!info[0].IsNumber()) throw coded_error<Napi::TypeError>(env, kInvalidOption, "provideMask: step must be a number");
      const int step = info[0].As<Napi::Number>().Int32Value();
      if (info[1].IsNull()) {
        masks->put(step, {}, true);
        return;
      }
      if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
        throw coded_error<Napi::TypeError>(env, kInvalidOption, "provideMask: mask must be a Uint32Array or null");
      auto words = info[1].As<Napi::Uint32Array>();
      if (words.ElementLength() != masks->words())
        throw coded_error<Napi::RangeError>(env, kInvalidOption, "provideMask: mask must have " + std::to_string(masks->words()) + " words (one bit per token)");
      masks->put(step, std::vector<uint32_t>(words.Data(), words.Data() + words.ElementLength()), false);
    }));
    return handle;
  }

  // logits(ids: Int32Array, adapter?: string) -> Promise<Float32Array> of ids.length * vocabSize values.
  Napi::Value Logits(const Napi::CallbackInfo& info) {
    SessionPtr session = Session(info.Env());
    auto ids = int32_vector(info[0], "ids");
    const std::string adapter = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    return run_on_engine<std::vector<float>>(
        info.Env(), "mlx-node:logits", [session, ids, adapter]() { return session->logits(ids, adapter); },
        [](Napi::Env env, std::vector<float>& values) -> Napi::Value { return to_float32_array(env, values); });
  }

  // batchLogits(prompts: Int32Array[]) -> Promise<Float32Array> of prompts.length * vocabSize values:
  // the logits of each prompt's last token, fed as one batched step over left-padded rows.
  Napi::Value BatchLogits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    SessionPtr session = Session(env);
    if (!info[0].IsArray()) throw Napi::TypeError::New(env, "prompts must be an array of Int32Array");
    Napi::Array list = info[0].As<Napi::Array>();
    std::vector<std::vector<int32_t>> prompts;
    for (uint32_t i = 0; i < list.Length(); ++i) prompts.push_back(int32_vector(list.Get(i), "prompts[i]"));
    return run_on_engine<std::vector<float>>(
        env, "mlx-node:batch-logits", [session, prompts]() { return session->batch_logits(prompts); },
        [](Napi::Env env, std::vector<float>& values) -> Napi::Value { return to_float32_array(env, values); });
  }

  // loadAdapter(name: string, dir: string) -> Promise<{ type, rank, scale, modules }>
  Napi::Value LoadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    SessionPtr session = Session(env);
    if (!info[0].IsString() || !info[1].IsString()) throw coded_error<Napi::TypeError>(env, kInvalidOption, "loadAdapter(name, dir) takes two strings");
    const std::string name = info[0].As<Napi::String>().Utf8Value(), dir = info[1].As<Napi::String>().Utf8Value();
    return run_on_engine<AdapterSummary>(
        env, "mlx-node:load-adapter", [session, name, dir]() { return session->load_adapter(name, dir); },
        [](Napi::Env env, AdapterSummary& s) -> Napi::Value { return summary_to_js(env, s); });
  }

  // unloadAdapter(name: string) -> Promise<void>
  Napi::Value UnloadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    SessionPtr session = Session(env);
    if (!info[0].IsString()) throw coded_error<Napi::TypeError>(env, kInvalidOption, "unloadAdapter(name) takes a string");
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    return run_on_engine<Unit>(
        env, "mlx-node:unload-adapter", [session, name]() { session->unload_adapter(name); return Unit{}; },
        [](Napi::Env env, Unit&) -> Napi::Value { return env.Undefined(); });
  }

  // unload() -> Promise<void>: frees the weights and cache on the engine thread, waits for the
  // evaluations still in flight (the pipelined step after a request's last token holds the weights'
  // buffers until it has run), then clears MLX's buffer cache.
  Napi::Value Unload(const Napi::CallbackInfo& info) {
    SessionPtr session = std::move(session_);
    return run_on_engine<Unit>(
        info.Env(), "mlx-node:unload",
        [session]() mutable {
          session.reset();
          synchronize_streams();
          clear_memory_cache();
          return Unit{};
        },
        [](Napi::Env env, Unit&) -> Napi::Value { return env.Undefined(); });
  }

  SessionPtr session_;
  ModelInfo info_;
};

struct AddonData {
  Napi::FunctionReference model_constructor;
};

struct Loaded {
  SessionPtr session;
  ModelInfo info;
};

// loadModel(dir: string, contextSize: number, computeDtype?: string, adapter?: { path: string, fuse?: boolean },
//           promptCacheBytes?: number, maxBatch?: number) -> Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw coded_error<Napi::TypeError>(env, kInvalidOption, "model directory must be a string");
  LoadConfig config;
  config.model_dir = info[0].As<Napi::String>().Utf8Value();
  if (info[1].IsNumber()) config.context_size = info[1].As<Napi::Number>().Int32Value();
  if (info[2].IsString()) config.compute_dtype = info[2].As<Napi::String>().Utf8Value();
  if (info[3].IsObject()) {
    Napi::Object adapter = info[3].As<Napi::Object>();
    config.adapter_dir = string_field(adapter, "path");
    config.fuse_adapter = adapter.Get("fuse").ToBoolean();
  }
  if (info[4].IsNumber()) config.prompt_cache_bytes = info[4].As<Napi::Number>().Int64Value();
  if (info[5].IsNumber()) config.max_batch = info[5].As<Napi::Number>().Int32Value();
  return run_on_engine<Loaded>(
      env, "mlx-node:load",
      [config]() {
        auto session = ModelSession::load(config);
        ModelInfo model_info = session->info();
        return Loaded{own_on_engine(std::move(session)), model_info};
      },
      [](Napi::Env env, Loaded& loaded) -> Napi::Value {
        Napi::Object object = env.GetInstanceData<AddonData>()->model_constructor.New({});
        NativeModel::Unwrap(object)->Attach(std::move(loaded.session), loaded.info);
        return object;
      });
}

Napi::Value RuntimeInfo(const Napi::CallbackInfo& info) {
  return run_on_engine<RuntimeDescription>(
      info.Env(), "mlx-node:runtime", [] { return describe_runtime(); },
      [](Napi::Env env, RuntimeDescription& d) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("device", d.device);
        o.Set("mlxVersion", d.mlx_version);
        Napi::Object blas = Napi::Object::New(env);
        blas.Set("library", d.blas.library);
        blas.Set("source", d.blas.from_env ? "MLX_NODE_BLAS" : "linked");
        if (!d.blas.openblas_config.empty()) {
          Napi::Object openblas = Napi::Object::New(env);
          openblas.Set("config", d.blas.openblas_config);
          openblas.Set("threads", d.blas.openblas_threads);
          blas.Set("openblas", openblas);
        }
        o.Set("blas", blas);
        return o;
      });
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  return run_on_engine<MemoryStats>(
      info.Env(), "mlx-node:memory", [] { return memory_stats(); },
      [](Napi::Env env, MemoryStats& m) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("activeBytes", static_cast<double>(m.active));
        o.Set("peakBytes", static_cast<double>(m.peak));
        o.Set("cacheBytes", static_cast<double>(m.cache));
        o.Set("memoryLimitBytes", static_cast<double>(m.memory_limit));
        return o;
      });
}

// setLimits({ memoryLimitBytes?, cacheLimitBytes?, resetPeak? }) -> Promise<void>
Napi::Value SetLimits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw coded_error<Napi::TypeError>(env, kInvalidOption, "limits must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  double memory = number_field(o, "memoryLimitBytes", -1);
  double cache = number_field(o, "cacheLimitBytes", -1);
  bool reset_peak = o.Get("resetPeak").ToBoolean();
  return run_on_engine<Unit>(
      env, "mlx-node:limits",
      [memory, cache, reset_peak] {
        if (memory >= 0) set_memory_limit(static_cast<size_t>(memory));
        if (cache >= 0) set_cache_limit(static_cast<size_t>(cache));
        if (reset_peak) reset_peak_memory();
        return Unit{};
      },
      [](Napi::Env env, Unit&) -> Napi::Value { return env.Undefined(); });
}

}  // namespace

void register_mlx_exports(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->model_constructor = Napi::Persistent(NativeModel::Define(env));
  env.SetInstanceData(data);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("runtimeInfo", Napi::Function::New(env, RuntimeInfo));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("setLimits", Napi::Function::New(env, SetLimits));
  exports.Set("samplingRanges", Napi::Function::New(env, SamplingRanges));
  // Called from process.on("exit"): process.exit() runs no environment cleanup hooks before the
  // C++ static destructors, so the JS exit event is the last safe moment to stop MLX work.
  exports.Set("shutdown", Napi::Function::New(env, [](const Napi::CallbackInfo&) { Engine::get().shutdown_now(); }));
}

}  // namespace mlxnode
