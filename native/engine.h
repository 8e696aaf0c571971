// The engine thread: one native thread per process on which every MLX call runs (MLX is not
// thread-safe). JS-facing methods post jobs here and get a Promise that a thread-safe function
// settles on the JS thread; no JS value is ever touched on the engine thread.
#pragma once
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "errors.h"

namespace mlxnode {

class Engine {
 public:
  static Engine& get();

  // Queues `job` to run on the engine thread, in order. Returns false once the engine has stopped.
  bool post(std::function<void()> job);
  // Whether the caller runs on the engine thread (a job).
  bool on_engine_thread() const { return std::this_thread::get_id() == thread_.get_id(); }
  // Runs the queued jobs, then ends the thread. Called when the last Node environment exits.
  void stop();
  // Process exit: cancels running generations, drops queued jobs and joins the thread, so that
  // no MLX work is in flight when static destructors (MLX's own among them) run.
  void shutdown_now();
  // Environments (main thread, workers) that use the engine; the last one to leave stops it.
  void retain();
  void release();
  // Long jobs register their cancel flag so that stopping the engine (process exit) ends them
  // at their next step instead of making exit wait for a whole generation.
  void track_cancel(const std::shared_ptr<std::atomic<bool>>& flag);
  void untrack_cancel(const std::shared_ptr<std::atomic<bool>>& flag);

 private:
  Engine() = default;
  void loop();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::shared_ptr<std::atomic<bool>>> cancel_flags_;
  std::thread thread_;
  bool stopping_ = false;
  int users_ = 0;
};

// A failure carried from the engine thread to JS as data.
struct JobError {
  std::string code;
  std::string message;
};

// Runs `fn`, turning any exception into a JobError (engine thread).
JobError capture_error(const std::function<void()>& fn, bool& failed);

// Builds the Error object a rejected promise carries: message plus a stable `code` property.
Napi::Error make_js_error(Napi::Env env, const JobError& error);
// A JS error carrying a stable code (errors.h), thrown on the JS thread: every error the addon
// raises has one, so lib/errors.ts can give each its class.
// `E` keeps JS's kind where it says more (TypeError for an argument of the wrong type).
template <typename E = Napi::Error>
E coded_error(Napi::Env env, const char* code, const std::string& message) {
  E err = E::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

// Runs `work` on the engine thread; resolves with `to_js(env, result)` on the JS thread, or
// rejects with the captured error. `R` must be default-constructible and movable.
template <typename R>
Napi::Promise run_on_engine(Napi::Env env, const char* name, std::function<R()> work,
                            std::function<Napi::Value(Napi::Env, R&)> to_js) {
  struct State {
    explicit State(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise::Deferred deferred;
    R value{};
    bool failed = false;
    JobError error;
    std::function<Napi::Value(Napi::Env, R&)> to_js;
  };
  auto state = std::make_shared<State>(env);
  state->to_js = std::move(to_js);
  Napi::Promise promise = state->deferred.Promise();
  auto noop = Napi::Function::New(env, [](const Napi::CallbackInfo&) {});
  auto tsfn = Napi::ThreadSafeFunction::New(env, noop, name, 0, 1);
  // The state is touched by one thread at a time: the engine job writes it, then hands it over
  // through BlockingCall, after which only the JS thread reads it.
  bool posted = Engine::get().post([state, tsfn, work = std::move(work)]() mutable {
    state->error = capture_error([&] { state->value = work(); }, state->failed);
    tsfn.BlockingCall([state](Napi::Env env, Napi::Function) {
      if (state->failed) {
        state->deferred.Reject(make_js_error(env, state->error).Value());
        return;
      }
      try {
        state->deferred.Resolve(state->to_js(env, state->value));
      } catch (const Napi::Error& e) {
        state->deferred.Reject(e.Value());
      }
    });
    tsfn.Release();
  });
  if (!posted) {
    tsfn.Release();
    state->deferred.Reject(make_js_error(env, {kMlxError, "the MLX engine has stopped"}).Value());
  }
  return promise;
}

}  // namespace mlxnode
