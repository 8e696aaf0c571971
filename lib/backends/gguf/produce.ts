/**
 * The producer loop of a GGUF run: align the sequence's KV cache with the prompt, prefill in
 * chunks, then sample token by token, pipelined with the consumer (see EngineRun).
 */
import type { LlamaContextSequence, SequenceEvaluateOptions, Token } from "node-llama-cpp";
import { forcedLogprob, type EngineAlternative, type EngineLogprob } from "../../logprobs.js";
import type { ResolvedGenerateOptions } from "../../options.js";
import type { EngineRun } from "../run.js";
import { ggufJsonRun } from "./json-constraint.js";
import {
  decodeThreads, measuredThreads, runningAlone, sharedPrefix, type CopyableSequence, type Loaded, type Slot,
} from "./loaded.js";
import { prefillThreadsFor, setContextThreads, type GgufThreadCounts } from "./threads.js";

/** The engine side of a run: align the KV cache with the prompt, prefill, then sample. */
export async function produce(
  run: EngineRun, threadsUsed: GgufThreadCounts, loaded: Loaded, sequence: LlamaContextSequence, prompt: number[], options: ResolvedGenerateOptions,
  source: Slot | undefined, copied: () => void,
): Promise<void> {
  const { model, context } = loaded;
  if (run.cancelled || sequence.disposed) return;
  const meter = sequence.tokenMeter;
  const meterStart = meter.usedInputTokens + meter.usedOutputTokens;
  const evaluatedSoFar = () => meter.usedInputTokens + meter.usedOutputTokens - meterStart;
  try {
    if (source) {
      // Start from the idle sequence sharing the longest prefix (copied: that sequence keeps its state).
      const shared = sharedPrefix(source.sequence.contextTokens, prompt);
      if (shared > sharedPrefix(sequence.contextTokens, prompt)) {
        await (sequence as CopyableSequence)._copyStateFromOtherSequence?.(source.sequence, shared);
      }
      copied();
    }
    // KV-cache reuse: keep the longest common prefix of the cached tokens and the prompt (but
    // always evaluate at least the last prompt token: its logits pick the first new token), and
    // erase everything after it.
    const cached = loaded.reuse ? sequence.contextTokens : [];
    let keep = 0;
    const limit = Math.min(cached.length, prompt.length - 1);
    while (keep < limit && cached[keep] === prompt[keep]) keep++;
    if (sequence.nextTokenIndex > keep) {
      await sequence.eraseContextTokenRanges([{ start: keep, end: sequence.nextTokenIndex }]);
    }
    // Normally nextTokenIndex === keep now; llama.cpp may have dropped more (e.g. sliding-window caches).
    let pending = prompt.slice(sequence.nextTokenIndex) as Token[];

    // Prefill in batch-sized chunks so that cancel() is honoured between them. With per-phase
    // threads, every batch up to the first generated token runs on prefill's threads (but a
    // tiny model's short batch, such as a chat follow-up, stays on decode's: see prefillThreadsFor).
    const chunk = Math.max(1, context.batchSize);
    // Threads are the context's, shared by every sequence: while other requests decode in the same
    // batches, the prefill count (often too many for a decode) is not used.
    const prefillThreads = (batch: number) => {
      if (loaded.canSwitchThreads && runningAlone(loaded)) setContextThreads(context, prefillThreadsFor(batch, loaded.fileBytes, loaded.threads));
    };
    while (pending.length > chunk) {
      prefillThreads(chunk);
      await sequence.evaluateWithoutGeneratingNewTokens(pending.slice(0, chunk));
      pending = pending.slice(chunk);
      if (run.cancelled) return;
    }
    prefillThreads(pending.length);

    const history = prompt.slice();
    const penaltyWindow = options.repetitionContextSize;
    const evaluateOptions: SequenceEvaluateOptions = {
      temperature: options.temperature,
      topK: options.topK,
      topP: options.topP,
      minP: options.minP,
      seed: options.seed,
      yieldEogToken: true,
      ...(options.repetitionPenalty !== 1
        ? {
            repeatPenalty: {
              punishTokens: () => history.slice(-penaltyWindow) as Token[],
              maxPunishTokens: penaltyWindow,
              penalty: options.repetitionPenalty,
              frequencyPenalty: 0,
              presencePenalty: 0,
            },
          }
        : {}),
    };
    // prompt + generated tokens must fit in the context (no context shift).
    const maxNew = Math.min(options.maxTokens, sequence.contextSize - prompt.length);
    if (maxNew <= 0) {
      run.finish = "length";
      return;
    }
    // jsonSchema: the token constraint bans what its mask leaves out (see gguf-constraint.ts).
    const json = options.jsonSchema ? await ggufJsonRun(model, options.jsonSchema, maxNew) : undefined;
    if (json) Object.assign(evaluateOptions, json.evaluateOptions);
    if (run.cancelled) return;
    // With logprobs, node-llama-cpp reports each token's probability (and the distribution) after its
    // sampler chain: bias (the JSON mask), repeat penalty, then greedy, or top-k/top-p/min-p and temperature.
    const n = options.logprobs;
    const tokens: AsyncGenerator<Step, void, void> = n === undefined
      ? sequence.evaluate(pending, evaluateOptions)
      : sequence.evaluateWithMetadata(pending, { confidence: true, probabilities: n > 0 }, evaluateOptions);
    const logprobsOf = (step: Step) => (typeof step === "number" || n === undefined ? undefined : [ggufLogprob(step, n)]);
    let produced = 0;
    // Requests the next generated token on decode's threads, timing it while they are measured.
    const requestNext = (): Promise<IteratorResult<Step, void>> => {
      // Timed only alone: a batch step of several requests is not one token's cost.
      const tuner = loaded.tuner?.measuring && runningAlone(loaded) ? loaded.tuner : undefined;
      const threads = decodeThreads(loaded);
      let start = 0;
      const request = loaded.lockstep.request(() => {
        setContextThreads(context, threads);
        start = performance.now();
        return tokens.next();
      }, runningAlone(loaded));
      if (tuner) {
        request.then(() => {
          tuner.record(threads, performance.now() - start);
          if (tuner.chosen === undefined) return;
          // More threads stalled at decode: the cores are busy, and prompt batches would stall on them too.
          if (tuner.moreThreadsStalled) loaded.threads.prefill = Math.min(loaded.threads.prefill, tuner.chosen);
          measuredThreads.set(loaded.fileKey, { prefill: loaded.threads.prefill, decode: tuner.chosen });
        }, () => undefined);
      }
      return request;
    };
    let next: Promise<IteratorResult<Step, void>> | undefined = loaded.lockstep.request(() => tokens.next(), runningAlone(loaded));
    try {
      while (next) {
        const result = await next;
        next = undefined;
        if (produced === 0) {
          run.evaluatedPromptTokens = evaluatedSoFar();
          threadsUsed.prefill = context.currentThreads;

        } else if (produced === 1) {
          threadsUsed.decode = context.currentThreads;
        }
        if (result.done) {
          run.finish = "stop";
          break;
        }
        const token = typeof result.value === "number" ? result.value : result.value.token;
        const logprobs = logprobsOf(result.value);
        if (!options.ignoreEos && model.isEogToken(token as Token)) {
          run.finish = "stop";
          break;
        }
        history.push(token);
        json?.driver.push(token); // before the next sample, whose token bias reads it
        produced++;
        if (json?.driver.finished) {
          run.push([token], false, logprobs);
          run.finish = json.driver.forced ? "length" : "stop";
          break;
        }
        // Out of slack: the closing tokens are forced, so append them without sampling (banning
        // every other token through a bias list would cost more than the decode itself).
        const forced = json?.driver.forcedCompletion();
        if (forced) {
          run.push([token], false, logprobs);
          for (const t of forced) {
            json?.driver.push(t);
            run.push([t], false, logprobs && [forcedLogprob(t)]);
          }
          run.finish = "length";
          break;
        }
        if (produced >= maxNew) {
          run.push([token], false, logprobs);
          run.finish = "length";
          break;
        }
        // Pipelining: start decoding the following token before handing this one over. The
        // consumer is woken on the next macrotask, once llama.cpp's worker thread is busy, so
        // detokenization and stop strings run on the main thread while the native decode runs.
        // (Beside other runs the request waits for their tokens, to share their decode: see Lockstep.)
        const room = !run.cancelled && run.hasRoom();
        if (room) next = requestNext();
        run.push([token], room, logprobs);
        if (run.cancelled) break;
        if (!room) {
          await run.room();
          if (run.cancelled) break;
          next = requestNext();
        }
      }
    } finally {
      if (next) await next.catch(() => undefined);
      await tokens.return();
    }
  } finally {
    if (run.evaluatedPromptTokens === 0) run.evaluatedPromptTokens = evaluatedSoFar();
    if (loaded.canSwitchThreads) setContextThreads(context, decodeThreads(loaded)); // a run that ended in prefill
  }
}

/** What the evaluation yields: a token, or with logprobs a token and node-llama-cpp's metadata of it. */
type Step = Token | { token: Token; confidence?: number; probabilities?: Map<Token, number> };

/**
 * node-llama-cpp's report of a sampled token as an engine report: its probability, and the `n` most
 * likely tokens of the distribution (the map is sorted, most likely first; banned tokens have 0).
 */
function ggufLogprob(step: Exclude<Step, Token>, n: number): EngineLogprob {
  const top: EngineAlternative[] = [];
  for (const [id, p] of step.probabilities ?? []) {
    if (top.length >= n || !(p > 0)) break;
    top.push({ id, logprob: Math.log(p) });
  }
  return { logprob: Math.log(step.confidence ?? 0), top };
}
