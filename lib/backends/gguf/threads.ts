/**
 * How many CPU threads llama.cpp gets for a GGUF model, per phase: a fixed rule for prompt
 * batches, and for generated tokens a short measurement on the user's machine. When that
 * measurement sees more threads stall (another process holds the cores), prompt batches drop to
 * decode's count too.
 *
 * ggml's worker threads spin at a barrier after every graph node. A prompt batch is large
 * matrix-matrix work that splits well at any model size. A decode step is one token: for a tiny
 * model the synchronisation costs more than the work it shares (one thread is an order of
 * magnitude faster); for a large one decode is bound by memory bandwidth, which one core cannot
 * saturate. In between, the better count depends on the machine and its current load, so a model
 * that is neither tiny nor clearly large starts on the rule's guess and measures both. No count
 * ever exceeds the cores this process may use (oversubscribing them stalls every thread).
 * The measurements behind these rules: bench/results/gguf-threads.md.
 */
import { availableParallelism } from "node:os";

/** Models smaller than this always decode on one thread (no measurement: the gap is too wide to need one). */
export const TINY_MODEL_BYTES = 16 * 1024 * 1024;

/**
 * Models smaller than this start decoding on one thread, larger ones on every physical core; both
 * are then measured unless the model is tiny. Near the crossover measured on the dev machine.
 */
export const SMALL_MODEL_BYTES = 128 * 1024 * 1024;

/**
 * A tiny model's prompt batch shorter than this runs on decode's single thread: waking a second
 * ggml thread costs a tiny model more than the batch itself, up to a few hundred tokens (the
 * first request's long prompt still runs on every core). Models of real size gain from every core
 * already at a few tokens.
 */
export const TINY_MODEL_MIN_PARALLEL_BATCH = 256;

/**
 * The threads for a prompt batch of `batchTokens` tokens: prefill's count, except for a tiny
 * model's short batch (see {@link TINY_MODEL_MIN_PARALLEL_BATCH}), which keeps decode's.
 */
export function prefillThreadsFor(batchTokens: number, modelBytes: number, counts: GgufThreadCounts): number {
  if (modelBytes < TINY_MODEL_BYTES && batchTokens < TINY_MODEL_MIN_PARALLEL_BATCH) return counts.decode;
  return counts.prefill;
}

/** Threads llama.cpp uses for prompt batches and for generated tokens. */
export interface GgufThreadCounts {
  /** Threads for prompt evaluation (prefill) batches. */
  prefill: number;
  /** Threads for the one-token batches of generation (decode). */
  decode: number;
}

/**
 * The default evaluation threads for a GGUF model, before any measurement: prefill on one thread
 * per physical core; decode on one thread under {@link SMALL_MODEL_BYTES}, else on every physical
 * core. Never more than `os.availableParallelism()`.
 *
 * @param modelBytes size of the model file in bytes.
 * @param physicalCores cores useful for math (llama.cpp's count, without SMT siblings or efficiency cores).
 * @param availableCores cores this process may run on; defaults to `os.availableParallelism()`.
 */
export function defaultGgufThreads(modelBytes: number, physicalCores: number, availableCores = availableParallelism()): GgufThreadCounts {
  const cores = usableCores(physicalCores, availableCores);
  return { prefill: cores, decode: modelBytes < SMALL_MODEL_BYTES ? 1 : cores };
}

/**
 * The decode thread counts worth measuring for a model: none for a tiny model or a one-core
 * machine (the default is used), else 1 and every physical core, the default first.
 */
export function decodeThreadCandidates(modelBytes: number, physicalCores: number, availableCores = availableParallelism()): number[] {
  const cores = usableCores(physicalCores, availableCores);
  if (modelBytes < TINY_MODEL_BYTES || cores === 1) return [];
  const first = defaultGgufThreads(modelBytes, physicalCores, availableCores).decode;
  return first === 1 ? [1, cores] : [cores, 1];
}

function usableCores(physicalCores: number, availableCores: number): number {
  return Math.max(1, Math.min(Math.floor(physicalCores) || 1, Math.floor(availableCores) || 1));
}

/**
 * Sets the threads llama.cpp uses for the context's next batches. node-llama-cpp (3.x) has one
 * count per context and no setter: with `maxThreads: 0`, before every batch it applies the count
 * of a thread-splitter consumer, which it creates from the context's ideal count while batches are
 * queued and drops soon after. Both internals are set here. Returns false, changing nothing, when
 * they are absent (another node-llama-cpp version): the context then keeps one count.
 */
// `object`, not node-llama-cpp's LlamaContext: the published declarations must not import the
// optional dependency (an app without it, or with skipLibCheck off, would fail to type-check).
export function setContextThreads(context: object, threads: number): boolean {
  const internals = context as unknown as { _idealThreads?: unknown; _threadSplitterConsumer?: { _wantedThreads?: unknown } };
  if (typeof internals._idealThreads !== "number") return false;
  const consumer = internals._threadSplitterConsumer;
  if (consumer && typeof consumer._wantedThreads !== "number") return false;
  internals._idealThreads = threads;
  if (consumer) consumer._wantedThreads = threads;
  return true;
}

/** Settings of a {@link DecodeThreadTuner}. */
export interface DecodeThreadTunerOptions {
  /** Tokens decoded in a row with one count before switching to the next. Defaults to 4. */
  blockTokens?: number;
  /** Tokens timed per count before choosing. Defaults to 15. */
  tokensPerCandidate?: number;
  /**
   * A count with more threads must be this much faster (relative mean) to be chosen. Defaults to
   * 0.15: the stalls of more threads come in bursts that a short measurement can miss, while where
   * more threads really win they win by far more.
   */
  margin?: number;
}

/**
 * Chooses the decode thread count of one loaded model by timing real tokens. Counts take turns
 * in blocks of a few tokens (so a drift in machine load hits every count) until each has
 * `tokensPerCandidate` timings; the count with the lowest mean time per token wins, more
 * threads only when clearly faster. The mean, not the median, because throughput pays for every
 * token, and more threads can be faster on most tokens yet stall on every few. A count more than
 * twice as slow as the best after its first block is dropped early, so a bad guess costs a
 * handful of tokens. The first token of each block is not timed: it pays for the switch.
 */
export class DecodeThreadTuner {
  private readonly candidates: number[];
  private readonly samples = new Map<number, number[]>();
  private readonly dropped = new Set<number>();
  private readonly blockTokens: number;
  private readonly tokensPerCandidate: number;
  private readonly margin: number;
  private current = 0;
  private inBlock = 0;
  private decided: number | undefined;

  /** @param candidates at least two counts to compare, the preferred (the default) first. */
  constructor(candidates: readonly number[], options: DecodeThreadTunerOptions = {}) {
    this.candidates = [...new Set(candidates)];
    if (this.candidates.length < 2) throw new RangeError(`DecodeThreadTuner needs two or more thread counts, got [${candidates.join(", ")}]`);
    this.blockTokens = Math.max(2, options.blockTokens ?? 4);
    this.tokensPerCandidate = Math.max(1, options.tokensPerCandidate ?? 15);
    this.margin = options.margin ?? 0.15;
    for (const c of this.candidates) this.samples.set(c, []);
  }

  /** The chosen count once measured; undefined while measuring. */
  get chosen(): number | undefined {
    return this.decided;
  }

  /**
   * True once chosen when a count with more threads than the chosen one was dropped as more than
   * twice as slow: ggml's workers spin at a barrier while a partner waits for a core, so the cores
   * are not free for them (a busy machine), and prompt batches would stall the same way.
   */
  get moreThreadsStalled(): boolean {
    const chosen = this.decided;
    return chosen !== undefined && [...this.dropped].some((c) => c > chosen);
  }

  /** True while counts are being compared. */
  get measuring(): boolean {
    return this.decided === undefined;
  }

  /** The count to decode the next token with (while measuring). */
  next(): number {
    return this.decided ?? this.candidates[this.current];
  }

  /**
   * Records how long the token decoded with `threads` took in llama.cpp (request to result).
   * Call once per token, in order, with the count {@link next} returned.
   */
  record(threads: number, ms: number): void {
    if (this.decided !== undefined || threads !== this.candidates[this.current]) return;
    if (this.inBlock > 0 && Number.isFinite(ms)) this.samples.get(threads)!.push(ms);
    if (++this.inBlock < this.blockTokens) return;
    this.inBlock = 0;
    this.prune();
    if (this.finishIfDone()) return;
    // The next count that still needs timings, in turn.
    for (let step = 1; step <= this.candidates.length; step++) {
      const i = (this.current + step) % this.candidates.length;
      const c = this.candidates[i];
      if (!this.dropped.has(c) && this.samples.get(c)!.length < this.tokensPerCandidate) {
        this.current = i;
        return;
      }
    }
  }

  private meanOf(c: number): number {
    const s = this.samples.get(c)!;
    return s.length === 0 ? Number.NaN : s.reduce((a, b) => a + b, 0) / s.length;
  }

  private prune(): void {
    const measured = this.candidates.filter((c) => !this.dropped.has(c) && this.samples.get(c)!.length > 0);
    if (measured.length < 2) return;
    const best = Math.min(...measured.map((c) => this.meanOf(c)));
    for (const c of measured) if (this.meanOf(c) > 2 * best) this.dropped.add(c);
  }

  private finishIfDone(): boolean {
    const live = this.candidates.filter((c) => !this.dropped.has(c));
    if (live.some((c) => this.samples.get(c)!.length < this.tokensPerCandidate)) return false;
    // Fewest threads first; a larger count must beat the best so far by the margin.
    const byThreads = [...live].sort((a, b) => a - b);
    let best = byThreads[0];
    for (const c of byThreads.slice(1)) if (this.meanOf(c) < this.meanOf(best) * (1 - this.margin)) best = c;
    this.decided = best;
    return true;
  }
}
