#include "generate.h"

#include <algorithm>
#include <string>

#include "adapter.h"
#include "device.h"
#include "errors.h"
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

// Row b of a batched [B, ...] array (the array itself for a batch of one).
Array row_of(const Array& a, int b, int rows) { return rows == 1 ? a : mx::slice_axis(a, 0, b, b + 1); }

}  // namespace

// A request from admission to its end. Engine thread only.
struct BatchScheduler::Row {
  GenerationRequest req;
  Sampler sampler;
  PromptCache::Entry entry;   // prefill: the cache being filled; decoding: the tokens (K/V in batch_)
  size_t prefilled = 0;       // prompt tokens whose K/V entry.cache holds
  int generated = 0;          // tokens emitted
  bool done = false;
  GenerationStats st;
  Clock::time_point t0 = Clock::now();
  double wait_ms = 0;         // blocked on MLX evaluation
  double first_token_ms = -1;
  int64_t decode_ops = 0, decode_steps = 0, prompt_step_ops = 0;
  std::vector<uint32_t> mask;

  Row(GenerationRequest r, Sampler s) : req(std::move(r)), sampler(std::move(s)) {}
  bool cancelled() const { return req.cancel && req.cancel->load(); }
};

BatchScheduler::BatchScheduler(const Model& model, PromptCache& prompt_cache, int context_size, int max_rows,
                               std::function<int(const std::string&)> find_adapter)
    : model_(model),
      prompt_cache_(prompt_cache),
      context_size_(context_size),
      max_rows_(model.can_batch() ? std::max(1, max_rows) : 1),
      find_adapter_(std::move(find_adapter)) {}

BatchScheduler::~BatchScheduler() = default;

bool BatchScheduler::submit(GenerationRequest request) {
  const bool idle = waiting_.empty() && !prefill_ && rows_.empty();
  waiting_.push_back(std::move(request));
  return idle;
}

bool BatchScheduler::step() {
  try {
    admit();
    if (prefill_ || !rows_.empty()) {
      AdapterScope scope(adapter_);
      if (prefill_) prefill_chunk();
      if (!rows_.empty()) decode();
    }
  } catch (...) {
    fail_all(std::current_exception());
  }
  return !(waiting_.empty() && !prefill_ && rows_.empty());
}

void BatchScheduler::finish(Row& row, const char* reason) {
  GenerationStats& st = row.st;
  st.finish = reason;
  const double total = ms_since(row.t0);
  st.prefill_ms = row.first_token_ms < 0 ? total : row.first_token_ms;
  st.decode_ms = total - st.prefill_ms;
  st.host_ms = std::max(0.0, total - st.graph_build_ms - row.wait_ms - st.mask_wait_ms);
  st.ops_per_token = row.decode_steps ? row.decode_ops / row.decode_steps : row.prompt_step_ops;
  st.generated_tokens = row.generated;
  row.done = true;
  row.req.done(st, nullptr);
}

// Any exception in a shared step: every running request fails with it, and their caches (which
// may hold positions never recorded) are dropped.
void BatchScheduler::fail_all(std::exception_ptr error) {
  std::vector<std::unique_ptr<Row>> rows = std::move(rows_);
  rows_.clear();
  if (prefill_) rows.push_back(std::move(prefill_));
  batch_.reset();
  y_ = Array();
  for (auto& row : rows)
    if (!row->done) row->req.done(row->st, error);
}

// Starts the next waiting request's prefill when a row is free, the batch's adapter fits and no
// other newcomer is being prefilled. Requests that fail validation or were cancelled while
// waiting end here.
void BatchScheduler::admit() {
  while (!prefill_ && !waiting_.empty() && static_cast<int>(rows_.size()) < max_rows_) {
    GenerationRequest& next = waiting_.front();
    if (next.cancel && next.cancel->load()) {
      GenerationStats st;
      st.finish = "cancelled";
      GenerationRequest req = std::move(next);
      waiting_.pop_front();
      req.done(st, nullptr);
      continue;
    }
    std::unique_ptr<Row> row;
    try {
      check_tokens(next.prompt, model_.info.vocab_size, context_size_);
      if (next.params.max_tokens < 0) invalid("max_tokens must be >= 0, got " + std::to_string(next.params.max_tokens));
      Sampler sampler(next.params, next.prompt, model_.info.vocab_size);  // validates sampling params
      const int adapter = find_adapter_(next.params.adapter);
      if (adapter != adapter_) {
        // The running batch's forward passes use one adapter: another one waits for it to drain.
        if (!rows_.empty()) return;
        // Cached prefixes were computed with the old adapter's weights.
        prompt_cache_.clear();
        adapter_ = adapter;
      }
      row = std::make_unique<Row>(std::move(next), std::move(sampler));
    } catch (...) {
      GenerationRequest req = std::move(next);
      waiting_.pop_front();
      req.done(GenerationStats{}, std::current_exception());
      continue;
    }
    waiting_.pop_front();
    if (row->req.params.max_tokens == 0) {
      finish(*row, "length");
      continue;
    }
    // Prefix reuse: keep what a recent sequence's cache holds, but always evaluate >= 1 prompt token.
    const std::vector<int32_t>& prompt = row->req.prompt;
    // A cache that cannot go back to the shared prefix (a rotated window, a recurrent state) starts empty.
    row->entry = prompt_cache_.take(prompt);
    KVCache& cache = row->entry.cache;
    std::vector<int32_t>& cached = row->entry.tokens;
    const size_t pos = reusable_prefix(cache, cached, prompt);
    if (pos == 0) {
      cache.reset();
    } else if (cache.offset() > static_cast<int>(pos)) {
      cache.trim(cache.offset() - static_cast<int>(pos));
    }
    cached.resize(pos);
    row->prefilled = pos;
    row->st.evaluated_prompt_tokens = static_cast<int>(prompt.size() - pos);
    prefill_ = std::move(row);
  }
}

// One chunk of the newcomer's prompt on its own cache. The last chunk and the first sample form
// one graph; the row then joins the batch, and its first token is read by the next decode step.
void BatchScheduler::prefill_chunk() {
  Row& row = *prefill_;
  const std::vector<int32_t>& prompt = row.req.prompt;
  auto park = [&](const char* reason) {
    prompt_cache_.put(std::move(row.entry));
    finish(row, reason);
    prefill_.reset();
  };
  if (row.cancelled()) return park("cancelled");
  try {
    if (prompt.size() - row.prefilled > kPrefillChunk) {
      // Every chunk but the last only fills the cache (its logits are never evaluated).
      std::vector<Array> state;
      {
        Span build{row.st.graph_build_ms};
        model_.forward(token_array(prompt, row.prefilled, row.prefilled + kPrefillChunk), row.entry.cache, true);
        state = row.entry.cache.state();
      }
      {
        Span wait{row.wait_ms};
        eval(state);
      }
      row.entry.tokens.insert(row.entry.tokens.end(), prompt.begin() + row.prefilled,
                              prompt.begin() + row.prefilled + kPrefillChunk);
      row.prefilled += kPrefillChunk;
      clear_memory_cache();  // as mlx-lm: release the chunk's activations
      return;
    }
    Array y;
    {
      Span build{row.st.graph_build_ms};
      const int64_t ops0 = op_count();
      y = model_.forward(token_array(prompt, row.prefilled, prompt.size()), row.entry.cache, true);
      if (!row.req.masks) y = row.sampler(y);
      row.prompt_step_ops = op_count() - ops0;
    }
    {
      Span wait{row.wait_ms};
      async_eval(row.sampler.outputs(y));  // constrained: the logits alone (not sampled yet)
    }
    row.entry.tokens.insert(row.entry.tokens.end(), prompt.begin() + row.prefilled, prompt.end());
    row.prefilled = prompt.size();
    if (row.req.masks) {
      // Token 0 is sampled among the ids of mask 0, which JS sends when the request starts.
      TokenMaskMailbox::Wait got;
      {
        Span waiting{row.st.mask_wait_ms};
        got = row.req.masks->wait(0, *row.req.cancel, row.mask);
      }
      if (got != TokenMaskMailbox::Wait::kMask) return park(got == TokenMaskMailbox::Wait::kEnd ? "stop" : "cancelled");
      Span build{row.st.graph_build_ms};
      y = row.sampler(apply_token_mask(y, row.mask, model_.info.vocab_size));
      async_eval(row.sampler.outputs(y));
    }
    // Join the batch: its K/V become the last row, its token the last entry of y_.
    batch_.append_row(row.entry.cache);
    row.entry.cache.reset();  // the batch holds the only reference, so its writes stay in place
    y_ = rows_.empty() ? y : mx::concatenate({mx::astype(y_, MLX_INT32), mx::astype(y, MLX_INT32)}, 0);
    rows_.push_back(std::move(prefill_));
  } catch (const EngineError& e) {
    if (e.code() != kInvalidOption) throw;  // e.g. masks out of order: this request's fault only
    row.entry.cache.reset();
    row.entry.tokens.clear();
    row.done = true;
    row.req.done(row.st, std::current_exception());
    prefill_.reset();
  }
}

// One decode step for every row: feed tokens n, sample tokens n+1, read and emit tokens n.
void BatchScheduler::decode() {
  const int B = static_cast<int>(rows_.size());
  double build_ms = 0, wait_ms = 0;
  const int64_t ops0 = op_count();
  Array logits;
  std::vector<Array> next(B);
  bool constrained = false;
  {
    Span build{build_ms};
    logits = model_.forward(y_, batch_, true);  // y_ is [B, 1]: each row's token n
    for (int b = 0; b < B; ++b) {
      if (rows_[b]->req.masks) constrained = true;
      else next[b] = rows_[b]->sampler(row_of(logits, b, B));
    }
  }
  {
    // Counted as evaluation: on MLX's CPU backend async_eval blocks once 10 tasks are queued,
    // so it runs much of the step; on Metal it returns at once.
    Span wait{wait_ms};
    std::vector<Array> queued;
    for (int b = 0; b < B; ++b)
      if (!next[b].empty())
        for (Array& a : rows_[b]->sampler.outputs(next[b])) queued.push_back(std::move(a));
    if (constrained) queued.push_back(logits);
    async_eval(queued);
  }
  std::vector<int32_t> tokens;
  {
    Span wait{wait_ms};
    tokens = B == 1 ? std::vector<int32_t>{y_.item_int32()} : y_.to_int32();
  }
  const int64_t step_ops = op_count() - ops0;
  const auto& vocab = model_.info.vocab_size;

  for (int b = 0; b < B; ++b) {
    Row& row = *rows_[b];
    row.st.graph_build_ms += build_ms;
    row.wait_ms += wait_ms;
    row.decode_ops += step_ops;
    ++row.decode_steps;
    take_token(row, tokens[b]);
  }

  // Constrained rows: token n+1 among the ids JS allows, JS having computed the mask from token n
  // (just emitted) while the forward pass ran.
  std::vector<Array> sampled_late;  // constrained rows' tokens n+1 and their log-probabilities
  if (constrained) {
    for (int b = 0; b < B; ++b) {
      Row& row = *rows_[b];
      if (row.done || !row.req.masks) continue;
      TokenMaskMailbox::Wait got;
      {
        Span waiting{row.st.mask_wait_ms};
        got = row.req.masks->wait(row.generated, *row.req.cancel, row.mask);
      }
      if (got != TokenMaskMailbox::Wait::kMask) {
        finish(row, got == TokenMaskMailbox::Wait::kEnd ? "stop" : "cancelled");
        continue;
      }
      next[b] = row.sampler(apply_token_mask(row_of(logits, b, B), row.mask, vocab));
      for (Array& a : row.sampler.outputs(next[b])) sampled_late.push_back(std::move(a));
    }
  }

  leave(next);
  if (constrained && !rows_.empty()) {
    sampled_late.push_back(y_);
    Span wait{wait_ms};
    async_eval(sampled_late);
  }
  if (++steps_ % 256 == 0) clear_memory_cache();  // as mlx-lm's generate_step
}

// Token n of a row, just read: emitted, or the reason the row ends.
void BatchScheduler::take_token(Row& row, int32_t token) {
  if (row.first_token_ms < 0) row.first_token_ms = ms_since(row.t0);
  // Token n was fed by this step: the row's K/V now include it.
  const size_t before = row.entry.tokens.size();
  row.entry.tokens.push_back(token);
  if (row.cancelled()) return finish(row, "cancelled");
  const auto& stops = row.req.params.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) return finish(row, "stop");
  row.req.emit({token, row.sampler.take_logprobs()});
  ++row.generated;
  // Token n+1 is generated only if prompt + generated tokens stay within the context (as
  // llama.cpp counts it): feeding token n took one position, token n+1 takes one more.
  if (row.generated >= row.req.params.max_tokens || static_cast<int>(before) + 2 > context_size_) finish(row, "length");
}

// Finished rows leave the batch: their caches (as single sequences) go to the PromptCache; the
// others' tokens n+1 (`next`, by old row index) become y_.
void BatchScheduler::leave(std::vector<Array>& next) {
  const int B = static_cast<int>(rows_.size());
  std::vector<int> keep;
  for (int b = 0; b < B; ++b) {
    if (!rows_[b]->done) {
      keep.push_back(b);
      continue;
    }
    rows_[b]->entry.cache = B == 1 ? std::move(batch_) : batch_.row(b);
    if (B == 1) batch_ = KVCache();
    prompt_cache_.put(std::move(rows_[b]->entry));
  }
  if (static_cast<int>(keep.size()) < B) {
    std::vector<std::unique_ptr<Row>> kept;
    for (int b : keep) kept.push_back(std::move(rows_[b]));
    rows_ = std::move(kept);
    if (!keep.empty()) batch_.keep_rows(keep);
  }
  if (keep.empty()) {
    batch_.reset();
    y_ = Array();
  } else if (keep.size() == 1) {
    y_ = std::move(next[keep[0]]);
  } else {
    std::vector<Array> column;
    for (int b : keep) column.push_back(mx::astype(mx::reshape(next[b], {1, 1}), MLX_INT32));
    y_ = mx::concatenate(column, 0);
  }
}

std::vector<float> all_logits(const Model& model, const std::vector<int32_t>& tokens, int context_size) {
  check_tokens(tokens, model.info.vocab_size, context_size);
  KVCache cache = model.make_cache();
  std::vector<float> out;
  for (size_t pos = 0; pos < tokens.size(); pos += kPrefillChunk) {
    const size_t end = std::min(tokens.size(), pos + kPrefillChunk);
    std::vector<float> chunk = model.forward(token_array(tokens, pos, end), cache, false).to_float32();
    out.insert(out.end(), chunk.begin(), chunk.end());
  }
  return out;
}

std::vector<float> batched_last_logits(const Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                       int context_size) {
  if (prompts.empty()) invalid("no prompts");
  if (!model.can_batch()) invalid("this model runs one sequence at a time (Model::can_batch)");
  KVCache batch;
  std::vector<int32_t> last;
  for (const auto& p : prompts) {
    check_tokens(p, model.info.vocab_size, context_size);
    if (p.size() < 2) invalid("batched logits need prompts of at least 2 tokens");
    KVCache one = model.make_cache();
    for (size_t pos = 0; pos + 1 < p.size(); pos += kPrefillChunk)
      model.forward(token_array(p, pos, std::min(p.size() - 1, pos + kPrefillChunk)), one, true);
    batch.append_row(one);
    last.push_back(p.back());
  }
  const int B = static_cast<int>(prompts.size());
  return model.forward(Array::from_int32(last, {B, 1}), batch, true).to_float32();
}

}  // namespace mlxnode
