#include "engine.h"

#include <algorithm>

namespace mlxnode {

Engine& Engine::get() {
  // Leaked on purpose: the thread must outlive every environment, and static destruction
  // order at process exit is not ours to rely on.
  static Engine* engine = new Engine();
  return *engine;
}

bool Engine::post(std::function<void()> job) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) return false;
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  jobs_.push_back(std::move(job));
  wake_.notify_one();
  return true;
}

void Engine::loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();  // Jobs capture their own errors; nothing may escape into this loop.
  }
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    for (auto& flag : cancel_flags_) flag->store(true);
    wake_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void Engine::shutdown_now() {
  std::deque<std::function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    for (auto& flag : cancel_flags_) flag->store(true);
    dropped.swap(jobs_);
    wake_.notify_one();
  }
  dropped.clear();  // outside the lock: captured sessions try (and fail) to post their deletion
  if (thread_.joinable()) thread_.join();
}

void Engine::retain() {
  std::lock_guard<std::mutex> lock(mutex_);
  users_++;
}

void Engine::release() {
  bool last;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    last = --users_ == 0;
  }
  if (last) stop();
}

void Engine::track_cancel(const std::shared_ptr<std::atomic<bool>>& flag) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) flag->store(true);
  cancel_flags_.push_back(flag);
}

void Engine::untrack_cancel(const std::shared_ptr<std::atomic<bool>>& flag) {
  std::lock_guard<std::mutex> lock(mutex_);
  cancel_flags_.erase(std::remove(cancel_flags_.begin(), cancel_flags_.end(), flag), cancel_flags_.end());
}

JobError capture_error(const std::function<void()>& fn, bool& failed) {
  failed = true;
  try {
    fn();
    failed = false;
    return {};
  } catch (const EngineError& e) {
    return {e.code(), e.what()};
  } catch (const std::bad_alloc&) {
    return {kMlxError, "out of memory"};
  } catch (const std::exception& e) {
    return {kMlxError, e.what()};
  } catch (...) {
    return {kMlxError, "unknown native error"};
  }
}

Napi::Error make_js_error(Napi::Env env, const JobError& error) { return coded_error(env, error.code.c_str(), error.message); }

}  // namespace mlxnode
