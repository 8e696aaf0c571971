// Per-step token masks for constrained decoding (JSON schema), handed from the JS thread to the
// engine thread. JS sends the mask of generated token n+1 as soon as it has seen token n; the
// engine waits for it only after it has started the forward pass of step n+1, so computing the
// mask overlaps that pass. Header-only: a mutex, a condition variable and a queue.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "errors.h"

namespace mlxnode {

class TokenMaskMailbox {
 public:
  enum class Wait { kMask, kEnd, kCancelled };

  explicit TokenMaskMailbox(int vocab_size) : words_((vocab_size + 31) / 32) {}

  // Words per mask: bit (i % 32) of word i / 32 allows token i.
  size_t words() const { return words_; }

  // JS thread. `end`: no token may follow (the document is complete); `mask` is then ignored.
  void put(int step, std::vector<uint32_t> mask, bool end) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(Entry{step, std::move(mask), end});
    }
    ready_.notify_one();
  }

  // Any thread: wakes a waiting engine so it sees a cancel flag that was just set.
  void wake() { ready_.notify_one(); }

  // Engine thread: blocks until the mask of token `step` arrives (kMask, copied to `out`), JS
  // ends the constraint (kEnd) or `cancel` is set (kCancelled). Cancel flags set by the engine
  // itself (process exit) do not notify, so the wait also re-checks every few milliseconds.
  // Throws INVALID_OPTION when JS sends masks out of order.
  Wait wait(int step, const std::atomic<bool>& cancel, std::vector<uint32_t>& out) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (queue_.empty()) {
      if (cancel) return Wait::kCancelled;
      ready_.wait_for(lock, std::chrono::milliseconds(5));
    }
    if (cancel) return Wait::kCancelled;
    Entry entry = std::move(queue_.front());
    queue_.pop_front();
    if (entry.step != step)
      throw EngineError(kInvalidOption, "token mask for step " + std::to_string(entry.step) + " arrived while step " +
                                            std::to_string(step) + " was expected");
    if (entry.end) return Wait::kEnd;
    out = std::move(entry.mask);
    return Wait::kMask;
  }

 private:
  struct Entry {
    int step;
    std::vector<uint32_t> mask;
    bool end;
  };
  const size_t words_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Entry> queue_;
};

}  // namespace mlxnode
