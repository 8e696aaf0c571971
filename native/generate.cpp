#include "generate.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "device.h"
#include "errors.h"
#include "sampler.h"
#include "token_mask.h"

namespace mlxnode {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPrefillChunk = 512;  // mlx-lm's prefill_step_size

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Adds the wall time of a scope to `total`.
struct Span {
  double& total;
  Clock::time_point start = Clock::now();
  ~Span() { total += ms_since(start); }
};

[[noreturn]] void invalid(const std::string& msg) { throw EngineError(kInvalidOption, msg); }

// MLX's gather does not bounds-check on the CPU, so ids are checked on the host first.
void check_tokens(const std::vector<int32_t>& tokens, int vocab, int context_size) {
  if (tokens.empty()) invalid("the prompt is empty");
  if (static_cast<int64_t>(tokens.size()) > context_size)
    invalid("the prompt has " + std::to_string(tokens.size()) + " tokens but the context holds " +
            std::to_string(context_size));
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      invalid("token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
              " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
}

Array token_array(const std::vector<int32_t>& tokens, size_t begin, size_t end) {
  return Array::from_int32(std::vector<int32_t>(tokens.begin() + begin, tokens.begin() + end),
                           {1, static_cast<int>(end - begin)});
}

}  // namespace

GenerationStats generate(GenerationContext ctx, const std::vector<int32_t>& prompt, const SamplingParams& params,
                         const std::atomic<bool>& cancel, const std::function<void(const EmittedToken&)>& emit,
                         TokenMaskMailbox* masks) {
  check_tokens(prompt, ctx.model.info.vocab_size, ctx.context_size);
  if (params.max_tokens < 0) invalid("max_tokens must be >= 0, got " + std::to_string(params.max_tokens));
  Sampler sampler(params, prompt, ctx.model.info.vocab_size);  // validates before the cache changes

  GenerationStats st;
  const auto t0 = Clock::now();
  double wait_ms = 0;        // blocked on MLX evaluation
  double first_token_ms = -1;
  int64_t decode_ops = 0, decode_steps = 0, prompt_step_ops = 0;
  auto finish = [&](const char* reason) {
    st.finish = reason;
    const double total = ms_since(t0);
    st.prefill_ms = first_token_ms < 0 ? total : first_token_ms;
    st.decode_ms = total - st.prefill_ms;
    st.host_ms = std::max(0.0, total - st.graph_build_ms - wait_ms - st.mask_wait_ms);
    st.ops_per_token = decode_steps ? decode_ops / decode_steps : prompt_step_ops;
    return st;
  };
  if (params.max_tokens == 0) return finish("length");

  std::vector<int32_t>& cached = ctx.cached_tokens;
  try {
    // Prefix reuse: keep what the cache already holds, but always evaluate >= 1 prompt token; a
    // cache that cannot go back to the shared prefix (a rotated window) starts empty.
    size_t pos = reusable_prefix(ctx.cache, cached, prompt);  // 0 when the trim below is impossible
    const int drop = ctx.cache.offset() - static_cast<int>(pos);
    if (pos == 0) {
      ctx.cache.reset();
    } else if (drop > 0) {
      ctx.cache.trim(drop);
    }
    cached.resize(pos);
    st.evaluated_prompt_tokens = static_cast<int>(prompt.size() - pos);

    // Prefill: every chunk but the last only fills the cache (its logits are never evaluated).
    while (prompt.size() - pos > kPrefillChunk) {
      if (cancel) return finish("cancelled");
      std::vector<Array> state;
      {
        Span build{st.graph_build_ms};
        ctx.model.forward(token_array(prompt, pos, pos + kPrefillChunk), ctx.cache, true);
        state = ctx.cache.state();
      }
      {
        Span wait{wait_ms};
        eval(state);
      }
      cached.insert(cached.end(), prompt.begin() + pos, prompt.begin() + pos + kPrefillChunk);
      pos += kPrefillChunk;
      clear_memory_cache();  // as mlx-lm: release the chunk's activations
    }
    if (cancel) return finish("cancelled");

    // The last prompt chunk and the first sample form one graph (constrained: the logits, which
    // are sampled once the first mask is here).
    Array y;
    {
      Span build{st.graph_build_ms};
      const int64_t ops0 = op_count();
      y = ctx.model.forward(token_array(prompt, pos, prompt.size()), ctx.cache, true);
      if (!masks) y = sampler(y);
      prompt_step_ops = op_count() - ops0;
    }
    {
      Span wait{wait_ms};
      async_eval(sampler.outputs(y));
    }
    cached.insert(cached.end(), prompt.begin() + pos, prompt.end());

    const auto& stops = params.stop_token_ids;
    if (masks) {
      // Replaces `logits` by token `step`, sampled among the ids its mask allows. Returns the
      // finish reason instead when JS ends the constraint or the request is cancelled.
      std::vector<uint32_t> mask;
      const int vocab = ctx.model.info.vocab_size;
      auto sample_masked = [&](Array& logits, int step) -> const char* {
        TokenMaskMailbox::Wait got;
        {
          Span waiting{st.mask_wait_ms};
          got = masks->wait(step, cancel, mask);
        }
        if (got != TokenMaskMailbox::Wait::kMask) return got == TokenMaskMailbox::Wait::kEnd ? "stop" : "cancelled";
        {
          Span build{st.graph_build_ms};
          const int64_t ops0 = op_count();
          logits = sampler(apply_token_mask(logits, mask, vocab));
          (step == 0 ? prompt_step_ops : decode_ops) += op_count() - ops0;
        }
        Span wait{wait_ms};
        async_eval(sampler.outputs(logits));
        return nullptr;
      };
      if (const char* end = sample_masked(y, 0)) return finish(end);
      for (int n = 0;; ++n) {
        // y is token n: queued, maybe not yet computed (only its sampling is left).
        if (cancel) return finish("cancelled");
        const bool more = n + 1 < params.max_tokens && ctx.cache.offset() + 2 <= ctx.context_size;
        // The graph of step n+1 is built while token n's sampling finishes; it is evaluated
        // after token n is emitted, and sampled once JS has sent the mask of token n+1.
        Array logits;
        if (more) {
          Span build{st.graph_build_ms};
          const int64_t ops0 = op_count();
          logits = ctx.model.forward(y, ctx.cache, true);
          decode_ops += op_count() - ops0;
          ++decode_steps;
        }
        int32_t token;
        {
          Span wait{wait_ms};
          token = y.item_int32();
        }
        if (first_token_ms < 0) first_token_ms = ms_since(t0);
        if (more) cached.push_back(token);  // its K/V are written by the forward pass
        if (std::find(stops.begin(), stops.end(), token) != stops.end()) return finish("stop");
        // Emitted before the forward pass starts (on the CPU async_eval runs much of it before
        // returning), so JS computes the mask of token n+1 while the pass runs.
        emit({token, sampler.take_logprobs()});
        st.generated_tokens = n + 1;
        if (!more) return finish("length");
        {
          Span wait{wait_ms};
          async_eval({logits});
        }
        if (n % 256 == 255) clear_memory_cache();
        if (const char* end = sample_masked(logits, n + 1)) return finish(end);
        y = std::move(logits);
      }
    }
    for (int n = 0;; ++n) {
      // y is token n: queued, maybe not yet computed.
      if (cancel) return finish("cancelled");
      // Token n+1 is generated only if prompt + generated tokens stay within the context (as
      // llama.cpp counts it): feeding token n takes one position, token n+1 one more.
      const bool more = n + 1 < params.max_tokens && ctx.cache.offset() + 2 <= ctx.context_size;
      Array next;
      if (more) {
        Span build{st.graph_build_ms};
        const int64_t ops0 = op_count();
        next = sampler(ctx.model.forward(y, ctx.cache, true));  // y is [1, 1]: feeds back as is
        decode_ops += op_count() - ops0;
        ++decode_steps;
      }
      if (more) {
        // Counted as evaluation: on MLX's CPU backend async_eval blocks once 10 tasks are queued,
        // so it runs much of the step; on Metal it returns at once.
        Span wait{wait_ms};
        async_eval(sampler.outputs(next));
      }
      int32_t token;
      {
        Span wait{wait_ms};
        token = y.item_int32();
      }
      if (first_token_ms < 0) first_token_ms = ms_since(t0);
      if (more) cached.push_back(token);  // its K/V are now (being) written by `next`'s graph
      if (std::find(stops.begin(), stops.end(), token) != stops.end()) return finish("stop");
      emit({token, sampler.take_logprobs()});
      st.generated_tokens = n + 1;
      if (!more) return finish("length");
      if (n % 256 == 255) clear_memory_cache();  // as mlx-lm's generate_step
      y = std::move(next);
    }
  } catch (...) {
    // The cache may hold positions we never recorded; start clean next time.
    ctx.cache.reset();
    cached.clear();
    throw;
  }
}

std::vector<float> all_logits(GenerationContext ctx, const std::vector<int32_t>& tokens) {
  check_tokens(tokens, ctx.model.info.vocab_size, ctx.context_size);
  ctx.cache.reset();
  ctx.cached_tokens.clear();
  std::vector<float> out;
  try {
    for (size_t pos = 0; pos < tokens.size(); pos += kPrefillChunk) {
      const size_t end = std::min(tokens.size(), pos + kPrefillChunk);
      std::vector<float> chunk = ctx.model.forward(token_array(tokens, pos, end), ctx.cache, false).to_float32();
      out.insert(out.end(), chunk.begin(), chunk.end());
    }
  } catch (...) {
    ctx.cache.reset();
    throw;
  }
  ctx.cache.reset();
  return out;
}

}  // namespace mlxnode
