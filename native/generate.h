// The decode loop (mlx-lm's generate_step, batched as its BatchGenerator) and full-sequence
// logits. Engine thread only.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "generation_stats.h"
#include "kv_cache.h"
#include "models/registry.h"
#include "sampler.h"
#include "sampling_params.h"

namespace mlxnode {

class TokenMaskMailbox;  // token_mask.h

// One generation request as the scheduler runs it. The callbacks run on the engine thread.
struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;
  std::shared_ptr<std::atomic<bool>> cancel;  // checked before every step of this request
  // Constrained decoding (JSON schema): token n is sampled among the ids mask n allows; null: none.
  std::shared_ptr<TokenMaskMailbox> masks;
  // Each token as soon as it is read, with its log-probabilities when params.logprobs >= 0.
  std::function<void(const EmittedToken&)> emit;
  // Called once, last: the stats, or the error that ended this request (the others go on).
  std::function<void(const GenerationStats&, std::exception_ptr)> done;
};

// Continuous batching: one loop for every request of a model. Each step() admits a waiting
// request, runs at most one 512-token prefill chunk of it on its own (B = 1) cache, and then one
// batched decode step for every active sequence ("row"): the rows' tokens n, [B, 1], are fed
// together (each row at its own position: kv_cache.h RowLayout), each row samples token n+1 with
// its own sampler (parameters, seeded key, penalty window, mask), and step n+1 is queued with
// async_eval before tokens n are read, so graph building overlaps evaluation (a batch of one is
// the old single-stream loop). A newcomer joins the batch once its prompt is in (its first token
// is read in the step it joins); finished, stopped and cancelled rows leave at the end of the step
// that read their last token, and their caches go to the PromptCache. With params.logprobs >= 0 a
// row's log-probabilities are evaluated with its token (Sampler::outputs) and emitted with it.
//
// Rows of one batch share the adapter the forward pass is built with: a request naming another
// adapter waits until the batch is empty. A model that could not batch (Model::can_batch: a layer
// cache that cannot hold rows; none of the families here) would run with max_rows 1.
//
// Per request (as generate_step did): the longest prefix shared with a recent sequence is reused
// when its cache can go back to it (reusable_prefix; at least one prompt token is evaluated, for
// its logits); it stops on a stop token (not emitted),
// max_tokens or a full context ("length": prompt + generated tokens reach context_size), or cancel
// ("cancelled"). INVALID_OPTION (empty/oversized prompt, out-of-vocab ids, bad sampling params)
// fails that request alone. Constrained rows wait for JS's mask of token n+1 after token n is
// emitted, while the forward pass of step n+1 runs; JS ending the constraint finishes with "stop".
class BatchScheduler {
 public:
  // `find_adapter`: adapter name -> id ("" the default); throws INVALID_OPTION for an unknown name.
  // The prompt cache is cleared when a batch starts with another adapter than the last one.
  BatchScheduler(const Model& model, PromptCache& prompt_cache, int context_size, int max_rows,
                 std::function<int(const std::string&)> find_adapter);
  ~BatchScheduler();

  // Queues a request (FIFO). Returns true when the scheduler was idle: the caller then drives
  // step() until it returns false.
  bool submit(GenerationRequest request);
  // One scheduler step; returns whether work remains.
  bool step();
  int max_rows() const { return max_rows_; }
  int adapter() const { return adapter_; }  // the adapter the cached prefixes were computed with

 private:
  struct Row;
  void admit();
  void prefill_chunk();
  void decode();
  void take_token(Row& row, int32_t token);
  void leave(std::vector<Array>& next);
  void finish(Row& row, const char* reason);
  void fail_all(std::exception_ptr error);

  const Model& model_;
  PromptCache& prompt_cache_;
  const int context_size_;
  const int max_rows_;
  std::function<int(const std::string&)> find_adapter_;

  std::deque<GenerationRequest> waiting_;
  std::unique_ptr<Row> prefill_;            // the newcomer being prefilled
  std::vector<std::unique_ptr<Row>> rows_;  // decoding, in batch-row order
  KVCache batch_;                           // the rows' K/V, row b = rows_[b]
  Array y_;                                 // int32 [B, 1]: each row's token n, maybe still being computed
  int adapter_ = 0;                         // the adapter of the running batch
  int64_t steps_ = 0;
};

// float32 logits [tokens.size() * vocab] for every position, from an empty cache.
std::vector<float> all_logits(const Model& model, const std::vector<int32_t>& tokens, int context_size);

// Test hook for batched decoding: every prompt but its last token is prefilled on its own, the
// caches are joined as left-padded batch rows, and the last tokens are fed as one [B, 1] step.
// Returns that step's float32 logits [B * vocab]; row b should equal the last row of
// all_logits(prompts[b]). Prompts need at least 2 tokens.
std::vector<float> batched_last_logits(const Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                       int context_size);

}  // namespace mlxnode
