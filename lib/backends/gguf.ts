/**
 * The GGUF fallback backend: runs `.gguf` models on the CPU through node-llama-cpp (llama.cpp).
 *
 * node-llama-cpp is an optional dependency and is imported lazily on the first load, so the
 * package works without it as long as this backend is not used.
 */
import { stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import type {
  Llama, LlamaContext, LlamaContextSequence, LlamaModel, SequenceEvaluateOptions, Token,
} from "node-llama-cpp";
import type { AdapterInfo, BackendName, LoadOptions, TokenizeOptions } from "../backend.js";
import type { ChatTemplateSource } from "../chat.js";
import {
  AdapterError, BackendUnavailableError, InvalidOptionError, MlxNodeError, ModelFormatError, ModelNotFoundError,
  UnsupportedArchitectureError,
} from "../errors.js";
import { GgufLoadRefused, probeEnabled, probeGguf } from "../gguf/probe.js";
import { readGgufHeader } from "../gguf/read.js";
import { validateGguf } from "../gguf/validate.js";
import { ggufJsonRun } from "../json-schema/gguf-constraint.js";
import { checkTokenIds, type ResolvedGenerateOptions, type ResolvedLoadOptions } from "../options.js";
import { BaseBackend, type BackendOptions, type TokenRun } from "./base.js";
import {
  decodeThreadCandidates, DecodeThreadTuner, defaultGgufThreads, prefillThreadsFor, setContextThreads, type GgufThreadCounts,
} from "./gguf-threads.js";

export {
  decodeThreadCandidates, DecodeThreadTuner, defaultGgufThreads, prefillThreadsFor, SMALL_MODEL_BYTES, TINY_MODEL_BYTES,
  TINY_MODEL_MIN_PARALLEL_BATCH, type GgufThreadCounts,
} from "./gguf-threads.js";

type NodeLlamaCpp = typeof import("node-llama-cpp");

/** Largest context created when `contextSize` is not given (the model's trained context is used when smaller). */
const DEFAULT_MAX_CONTEXT = 4096;

/**
 * Generated tokens the engine may run ahead of a slow consumer. Decoding the next token while
 * the previous one is detokenized overlaps the JS work with the native work; the bound keeps a
 * stalled consumer from wasting compute.
 */
const READ_AHEAD_TOKENS = 8;

// ---------------------------------------------------------------------------------------------
// One node-llama-cpp `Llama` per process.

let nodeLlamaCpp: Promise<NodeLlamaCpp> | undefined;
let sharedLlama: Promise<Llama> | undefined;
/** Error messages llama.cpp logged recently, numbered so a load can pick out its own. */
const nativeErrors: { seq: number; message: string }[] = [];
let nativeErrorSeq = 0;

function onNativeLog(level: string, message: string): void {
  // Warnings (e.g. "bad special token" in older GGUFs) are noise for users; errors explain failed loads.
  if (level !== "error" && level !== "fatal") return;
  const text = message.trim();
  if (!text) return;
  nativeErrors.push({ seq: ++nativeErrorSeq, message: text });
  if (nativeErrors.length > 32) nativeErrors.shift();
}

function nativeErrorsSince(seq: number): string[] {
  return nativeErrors.filter((e) => e.seq > seq).map((e) => e.message);
}

async function importNodeLlamaCpp(): Promise<NodeLlamaCpp> {
  nodeLlamaCpp ??= import("node-llama-cpp").catch((error: unknown) => {
    nodeLlamaCpp = undefined;
    if (isPackageMissing(error, "node-llama-cpp")) {
      throw new BackendUnavailableError("gguf", "node-llama-cpp is not installed: run npm install node-llama-cpp");
    }
    throw new BackendUnavailableError("gguf", `node-llama-cpp failed to load: ${errorMessage(error)}`);
  });
  return nodeLlamaCpp;
}

/**
 * True when `error` (or an error it wraps, as bundlers and test runners do) says that the package
 * itself cannot be found, not one of its dependencies.
 */
function isPackageMissing(error: unknown, name: string): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if ((code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") && e.message.includes(`'${name}'`)) return true;
  }
  return false;
}

/**
 * The process-wide llama.cpp instance. It uses the prebuilt CPU binary shipped in the
 * `@node-llama-cpp/<platform>` package: `build: "never"` and `skipDownload` guarantee nothing is
 * compiled or downloaded at run time, `gpu: false` skips probing CUDA/Vulkan binaries, and
 * `maxThreads: 0` lifts node-llama-cpp's thread cap so each context uses exactly the threads we
 * give it (its default cap is max(cores, 4), which oversubscribes small machines).
 */
function getSharedLlama(): Promise<Llama> {
  sharedLlama ??= (async () => {
    const lib = await importNodeLlamaCpp();
    try {
      return await lib.getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        progressLogs: false,
        maxThreads: 0,
        logLevel: lib.LlamaLogLevel.warn,
        logger: onNativeLog,
      });
    } catch (error) {
      throw new BackendUnavailableError(
        "gguf",
        `no usable prebuilt llama.cpp binary for ${process.platform}-${process.arch}: ${errorMessage(error)}`,
      );
    }
  })();
  sharedLlama.catch(() => (sharedLlama = undefined));
  return sharedLlama;
}

// ---------------------------------------------------------------------------------------------

/** Decode thread counts measured in this process, by model file: loading the same file again does not measure again. */
const measuredDecodeThreads = new Map<string, number>();

/** Options of a {@link GgufBackend} instance. */
export type GgufBackendOptions = BackendOptions;

/** Load options of the GGUF backend. */
export type GgufLoadOptions = LoadOptions;

/** Default `maxBatch`. */
export const DEFAULT_GGUF_MAX_BATCH = 1;
/** Shortest shared prefix copied from another sequence rather than evaluated (see pickSlot). */
const MIN_COPIED_PREFIX = 8;
/** Most sequences kept only as prompt cache (llama.cpp allocates every sequence's KV cells up front). */
const MAX_CACHE_SEQUENCES = 16;

/** One llama.cpp sequence: a running request's, or, idle, a prompt-cache entry. */
interface Slot {
  sequence: LlamaContextSequence;
  busy: boolean;
  /** Settles when the last run on this sequence has stopped touching it; never rejects. */
  lastRun: Promise<void>;
  /** When a run last took this sequence, for least-recently-used choice. */
  usedAt: number;
  /** Runs copying this sequence's state into theirs right now: it must not change meanwhile. */
  readers: number;
}

/**
 * node-llama-cpp's sequence-to-sequence KV copy (llama.cpp's `llama_memory_seq_cp`): present in
 * the pinned 3.22.1 but not in its public types. Without it a request sharing only part of an idle
 * sequence's tokens evaluates its prompt in full rather than cutting that sequence's state.
 */
type CopyableSequence = LlamaContextSequence & {
  _copyStateFromOtherSequence?(other: LlamaContextSequence, upToTokenIndex: number): Promise<boolean>;
};

interface Loaded {
  model: LlamaModel;
  context: LlamaContext;
  slots: Slot[];
  /** Whether idle sequences' KV state is reused by later requests (`promptCacheBytes` > 0). */
  reuse: boolean;
  /** KV bytes of one sequence (llama.cpp's estimate), for the prompt-cache budget and reports. */
  sequenceBytes: number;
  vocabSize: number;
  /** Prefill's count, and decode's before measurement. */
  threads: GgufThreadCounts;
  /** Whether counts can change between batches (see setContextThreads); when not, decode's count is used throughout. */
  canSwitchThreads: boolean;
  /** The model file's path, size and modification time: the key of {@link measuredDecodeThreads}. */
  fileKey: string;
  /** Size of the model file. */
  fileBytes: number;
  /** Measures the decode count on this machine; undefined when the threads were given or nothing is measured. */
  tuner: DecodeThreadTuner | undefined;
  bos: number | undefined;
  eos: number | undefined;
}

/**
 * Runs GGUF models with llama.cpp (through node-llama-cpp) on the CPU.
 *
 * One model and one context per instance, with `maxBatch` llama.cpp sequences for concurrent
 * requests (llama.cpp evaluates their tokens in one batch) plus sequences kept as prompt cache
 * (`promptCacheBytes`). An idle sequence keeps its KV state: a new prompt runs on the sequence
 * sharing its longest prefix and evaluates only the tokens after it (reported as
 * `usage.evaluatedPromptTokens`).
 *
 * @example
 * ```ts
 * const backend = new GgufBackend();
 * await backend.load("model.gguf");
 * const { text } = await backend.generate("Once upon a time", { maxTokens: 32 });
 * await backend.unload();
 * ```
 */
export class GgufBackend extends BaseBackend {
  /** Always `"gguf"`. */
  readonly name: BackendName = "gguf";
  private loaded: Loaded | undefined;
  private maxBatch = DEFAULT_GGUF_MAX_BATCH;
  private useCounter = 0;

  /** @param options queue limits shared by every backend. */
  constructor(options: GgufBackendOptions = {}) {
    super(options);
  }

  /** Context size in tokens of the loaded model; llama.cpp rounds requests up to a multiple of 256. 0 when none is loaded. */
  get contextSize(): number {
    return this.loaded?.context.contextSize ?? 0;
  }

  /** Concurrent requests (`maxBatch`). */
  protected override get concurrentRequests(): number {
    return this.maxBatch;
  }

  /**
   * llama.cpp sequences of the loaded model: `maxBatch` for running requests plus those kept as
   * prompt cache, and the KV bytes each one holds (allocated at load). Zeros when none is loaded.
   */
  get sequenceInfo(): { sequences: number; kvBytesPerSequence: number } {
    const loaded = this.loaded;
    return loaded ? { sequences: loaded.slots.length, kvBytesPerSequence: loaded.sequenceBytes } : { sequences: 0, kvBytesPerSequence: 0 };
  }

  /**
   * CPU threads llama.cpp uses to generate tokens (0 when none is loaded); prompts may use more,
   * see {@link threadCounts}. Without a `threads` load option this is measured during the first
   * generated tokens (see {@link decodeThreadsMeasured}).
   */
  get threadCount(): number {
    const loaded = this.loaded;
    return loaded ? decodeThreads(loaded) : 0;
  }

  /** CPU threads llama.cpp uses per phase: prompt batches (prefill) and generated tokens (decode). Zeros when no model is loaded. */
  get threadCounts(): GgufThreadCounts {
    const loaded = this.loaded;
    if (!loaded) return { prefill: 0, decode: 0 };
    return { prefill: loaded.canSwitchThreads ? loaded.threads.prefill : loaded.threads.decode, decode: decodeThreads(loaded) };
  }

  /**
   * False while the decode thread count is still being chosen by timing the first generated
   * tokens of this model (about 40 tokens, spread over as many requests as it takes); true once
   * chosen (also by an earlier load of the same file in this process), or when there was nothing
   * to choose (`threads` given, a tiny model, one core).
   */
  get decodeThreadsMeasured(): boolean {
    return !this.loaded?.tuner?.measuring;
  }

  /**
   * The threads llama.cpp reported (`llama_n_threads`) after the last request's prefill and decode
   * batches; 0 for a phase that did not run. For tests of the per-phase thread switch.
   * @internal
   */
  lastRequestThreads: GgufThreadCounts = { prefill: 0, decode: 0 };

  /** Number of tokens in the model's vocabulary (0 when none is loaded). */
  protected get vocabSize(): number {
    return this.loaded?.vocabSize ?? 0;
  }

  /**
   * Text to token ids with the model's own tokenizer. Special-token text (such as `<s>` or
   * `<|im_start|>`) is parsed as the special token, so chat templates tokenize correctly.
   * With `addSpecialTokens`, BOS/EOS are added as the GGUF metadata says (`add_bos_token`,
   * `add_eos_token`), but a BOS is not doubled when the text already starts with one.
   */
  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    if (typeof text !== "string") throw new InvalidOptionError("text", "a string", text);
    if (typeof options !== "object" || options === null) throw new InvalidOptionError("options", "an object", options);
    const add = options.addSpecialTokens ?? false;
    if (typeof add !== "boolean") throw new InvalidOptionError("addSpecialTokens", "a boolean", add);
    this.ensureLoaded("tokenize");
    const { model, bos, eos } = this.loaded!;
    const ids: number[] = Array.from(model.tokenize(text, true));
    if (add) {
      if (bos !== undefined && ids[0] !== bos) ids.unshift(bos);
      if (eos !== undefined && ids[ids.length - 1] !== eos) ids.push(eos);
    }
    return ids;
  }

  /** Token ids to text. Special tokens are rendered as their text (as `tokenize` parses them). */
  detokenize(tokens: readonly number[]): string {
    this.ensureLoaded("detokenize");
    const { model, vocabSize } = this.loaded!;
    // Called for every generated token by the streaming detokenizer: validate without copying.
    if (!Array.isArray(tokens) || !tokens.every((t) => Number.isInteger(t) && t >= 0 && t < vocabSize)) {
      checkTokenIds("tokens", tokens, vocabSize); // throws the descriptive InvalidOptionError
    }
    return model.detokenize(tokens as readonly Token[], true);
  }

  /** Loads a GGUF file; see {@link GgufLoadOptions}. */
  override load(modelPath: string, options?: GgufLoadOptions): Promise<void> {
    return super.load(modelPath, options);
  }

  /** Loads the GGUF file at `path` and creates its context and sequences. */
  protected async loadModel(path: string, options: ResolvedLoadOptions, raw: GgufLoadOptions): Promise<void> {
    const maxBatch = options.maxBatch ?? DEFAULT_GGUF_MAX_BATCH;
    const file = resolve(path);
    const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT" || error.code === "ENOTDIR") throw new ModelNotFoundError(path);
      throw new ModelNotFoundError(path, errorMessage(error));
    });
    if (info.isDirectory()) throw new ModelNotFoundError(path, "expected a .gguf file, found a directory");
    // llama.cpp trusts the file: check it statically, then (first load only) in a child process.
    await validateGguf(file, path);
    // llama.cpp applies a LoRA at context creation, unfused; it has no merge at load.
    if (options.fuse) throw new InvalidOptionError("fuse", "false with the gguf backend (llama.cpp applies adapters unfused)", true);
    const adapter = options.adapter !== undefined ? await ggufAdapterFile(options.adapter) : undefined;

    const llama = await getSharedLlama();
    const signal = options.signal;
    signal?.throwIfAborted();
    const errorMark = nativeErrorSeq;
    let model: LlamaModel;
    try {
      if (probeEnabled()) await probeGguf(file, info, path, { signal });
      model = await llama.loadModel({ modelPath: file, gpuLayers: 0, ...(signal ? { loadSignal: signal } : {}) });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (error instanceof ModelFormatError) throw error; // the probe saw llama.cpp crash or hang
      const messages = error instanceof GgufLoadRefused ? error.messages : [...nativeErrorsSince(errorMark), errorMessage(error)];
      const architecture = messages.join("\n").match(/unknown model architecture: '([^']*)'/)?.[1];
      if (architecture !== undefined) {
        throw new UnsupportedArchitectureError(
          `GGUF model ${path} uses the architecture "${architecture}", which the bundled llama.cpp does not support`,
        );
      }
      throw new ModelFormatError(`Cannot load GGUF model ${path}: the file is corrupt or incomplete (${messages.join("; ")})`, { cause: error });
    }

    try {
      const trainContext = model.trainContextSize > 0 ? model.trainContextSize : DEFAULT_MAX_CONTEXT;
      const contextSize = options.contextSize ?? Math.min(trainContext, DEFAULT_MAX_CONTEXT);
      const fileKey = `${file}\0${info.size}\0${info.mtimeMs}`;
      const measured = options.threads === undefined ? measuredDecodeThreads.get(fileKey) : undefined;
      const threads = options.threads !== undefined
        ? { prefill: Math.min(options.threads, availableParallelism()), decode: Math.min(options.threads, availableParallelism()) }
        : { ...defaultGgufThreads(info.size, llama.cpuMathCores), ...(measured !== undefined ? { decode: measured } : {}) };
      // Sequences kept as prompt cache: as many whole sequences as the budget holds, beyond those
      // that run requests (an idle running sequence is a cache entry too).
      const sequenceBytes = await kvBytesPerSequence(model, contextSize);
      const cacheSequences = Math.min(MAX_CACHE_SEQUENCES, Math.floor(options.promptCacheBytes / sequenceBytes));
      let context: LlamaContext;
      try {
        context = await model.createContext({
          contextSize,
          threads: threads.decode,
          sequences: maxBatch + cacheSequences,
          failedCreationRemedy: false,
          ...(signal ? { createSignal: signal } : {}),
          ...(adapter !== undefined ? { lora: { adapters: [{ filePath: adapter }] } } : {}),
        });
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (adapter !== undefined) throw new AdapterError(`Cannot apply the GGUF LoRA adapter ${adapter} to ${path}: ${errorMessage(error)}`);
        throw new MlxNodeError("GGUF_ERROR", `Cannot create a ${contextSize}-token context for ${path}: ${errorMessage(error)}`, { cause: error });
      }
      const slots: Slot[] = [];
      while (context.sequencesLeft > 0) slots.push({ sequence: context.getSequence(), busy: false, lastRun: Promise.resolve(), usedAt: 0, readers: 0 });
      const tokens = model.tokens;
      const canSwitchThreads = setContextThreads(context, context.currentThreads);
      const candidates = decodeThreadCandidates(info.size, llama.cpuMathCores);
      this.loaded = {
        model,
        context,
        slots,
        reuse: options.promptCacheBytes > 0,
        sequenceBytes,
        vocabSize: model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? 0,
        threads: { prefill: threads.prefill, decode: context.currentThreads },
        canSwitchThreads,
        fileKey,
        fileBytes: info.size,
        tuner: canSwitchThreads && options.threads === undefined && measured === undefined && candidates.length >= 2
          ? new DecodeThreadTuner(candidates)
          : undefined,
        bos: tokens.shouldPrependBosToken && tokens.bos !== null ? tokens.bos : undefined,
        eos: tokens.shouldAppendEosToken && tokens.eos !== null ? tokens.eos : undefined,
      };
      this.maxBatch = maxBatch;
    } catch (error) {
      await model.dispose();
      throw error;
    }
  }

  /** The chat template and BOS/EOS strings from the GGUF metadata (`tokenizer.chat_template`). */
  protected override chatTemplateSource(): ChatTemplateSource {
    const loaded = this.loaded;
    const origin = `${this.loadedPath ?? "the GGUF file"} (GGUF metadata tokenizer.chat_template)`;
    if (!loaded) return { template: undefined, origin };
    const template = loaded.model.fileInfo.metadata?.tokenizer?.chat_template;
    const tokens = loaded.model.tokens;
    return {
      template: typeof template === "string" && template.length > 0 ? template : undefined,
      ...(tokens.bosString !== null ? { bosToken: tokens.bosString } : {}),
      ...(tokens.eosString !== null ? { eosToken: tokens.eosString } : {}),
      origin,
    };
  }

  /** llama.cpp binds adapters to a context, and this backend keeps one: only the load-time adapter. */
  protected attachAdapter(name: string): Promise<AdapterInfo> {
    return Promise.reject(new AdapterError(
      `Cannot load adapter "${name}": the gguf backend applies one adapter, given at load (load(path, { adapter })); several adapters per model need the mlx backend`,
    ));
  }

  protected detachAdapter(): Promise<void> {
    return Promise.resolve();
  }

  /** Frees the sequence, context and model. */
  protected async unloadModel(): Promise<void> {
    const loaded = this.loaded;
    if (!loaded) return;
    await Promise.all(loaded.slots.map((slot) => slot.lastRun));
    this.loaded = undefined;
    try {
      await loaded.context.dispose();
    } finally {
      await loaded.model.dispose();
    }
  }

  /**
   * Streams tokens for `prompt` on an idle sequence: the one whose KV state shares the longest
   * prefix with the prompt, else the least recently used.
   */
  protected runTokens(prompt: number[], options: ResolvedGenerateOptions): TokenRun {
    const loaded = this.loaded;
    if (!loaded) throw new MlxNodeError("NOT_LOADED", "No model is loaded");
    const { slot, source } = pickSlot(loaded, prompt);
    slot.busy = true;
    slot.usedAt = ++this.useCounter;
    let reading = source;
    if (reading) reading.readers++;
    const copied = () => {
      if (reading) reading.readers--;
      reading = undefined;
    };
    const previous = slot.lastRun;
    const run = new GgufRun((r) => previous.then(() => produce(r, loaded, slot.sequence, prompt, options, source, copied)));
    slot.lastRun = run.done.then(() => {
      slot.busy = false;
      copied();
      this.lastRequestThreads = { ...run.threadsUsed };
      // Without a prompt cache the state is cleared now, in the background, so that a request
      // arriving while others decode finds an empty sequence (see pickSlot).
      if (!loaded.reuse && !slot.sequence.disposed) return slot.sequence.clearHistory().catch(() => undefined);
    });
    return run;
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * A generation in flight: a producer loop pulls tokens from llama.cpp into a small buffer, the
 * consumer (BaseBackend) takes everything buffered at once. Iteration ends only after the
 * producer has stopped, so the next request never races a still-running evaluation.
 */
class GgufRun implements TokenRun {
  evaluatedPromptTokens = 0;
  /** What llama.cpp reported after this run's prefill and decode batches (0: the phase did not run). */
  readonly threadsUsed: GgufThreadCounts = { prefill: 0, decode: 0 };
  finish: "stop" | "length" | undefined;
  cancelled = false;
  /** Settles when the producer has stopped; never rejects (errors are kept for the consumer). */
  readonly done: Promise<void>;
  /** The same as `done`, under the name BaseBackend waits for. */
  get completion(): Promise<void> {
    return this.done;
  }
  private buffer: number[] = [];
  private ended = false;
  private wakeScheduled = false;
  private failure: { error: unknown } | undefined;
  private wakeConsumer: (() => void) | undefined;
  private wakeProducer: (() => void) | undefined;

  constructor(producer: (run: GgufRun) => Promise<void>) {
    this.done = producer(this).then(
      () => this.end(),
      (error: unknown) => {
        this.failure = { error: error instanceof MlxNodeError ? error : new MlxNodeError("GGUF_ERROR", `llama.cpp evaluation failed: ${errorMessage(error)}`, { cause: error }) };
        this.end();
      },
    );
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.notify();
  }

  /**
   * Called by the producer with each generated token. With `deferWake`, the consumer is woken on
   * the next macrotask (after the engine has started its next native decode) instead of now.
   */
  push(token: number, deferWake: boolean): void {
    this.buffer.push(token);
    if (!deferWake) this.notify();
    else if (!this.wakeScheduled) {
      this.wakeScheduled = true;
      setImmediate(() => {
        this.wakeScheduled = false;
        this.notify();
      });
    }
  }

  /** True while the consumer is fewer than READ_AHEAD_TOKENS tokens behind. */
  hasRoom(): boolean {
    return this.buffer.length < READ_AHEAD_TOKENS;
  }

  /** Resolves when the consumer has room for more tokens (or the run was cancelled). */
  room(): Promise<void> {
    if (this.hasRoom() || this.cancelled) return Promise.resolve();
    return new Promise((r) => (this.wakeProducer = r));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<number[]> {
    try {
      while (!this.cancelled) {
        if (this.buffer.length > 0) {
          const batch = this.buffer;
          this.buffer = [];
          this.takeWake("producer");
          yield batch;
          continue;
        }
        if (this.failure) throw this.failure.error;
        if (this.ended) return;
        await new Promise<void>((r) => (this.wakeConsumer = r));
      }
    } finally {
      // The consumer left (done, stop string, maxTokens, abort): stop the engine and wait for it.
      this.cancel();
      await this.done;
    }
  }

  private end(): void {
    this.ended = true;
    this.notify();
  }

  private notify(): void {
    this.takeWake("consumer");
    if (this.cancelled) this.takeWake("producer");
  }

  private takeWake(which: "consumer" | "producer"): void {
    const wake = which === "consumer" ? this.wakeConsumer : this.wakeProducer;
    if (which === "consumer") this.wakeConsumer = undefined;
    else this.wakeProducer = undefined;
    wake?.();
  }
}

/** The engine side of a run: align the KV cache with the prompt, prefill, then sample. */
async function produce(
  run: GgufRun, loaded: Loaded, sequence: LlamaContextSequence, prompt: number[], options: ResolvedGenerateOptions,
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
    const tokens = sequence.evaluate(pending, evaluateOptions);
    let produced = 0;
    // Requests the next generated token on decode's threads, timing it while they are measured.
    const requestNext = (): Promise<IteratorResult<Token, void>> => {
      // Timed only alone: a batch step of several requests is not one token's cost.
      const tuner = loaded.tuner?.measuring && runningAlone(loaded) ? loaded.tuner : undefined;
      const threads = decodeThreads(loaded);
      setContextThreads(context, threads);
      const start = performance.now();
      const request = tokens.next();
      if (tuner) {
        request.then(() => {
          tuner.record(threads, performance.now() - start);
          if (tuner.chosen !== undefined) measuredDecodeThreads.set(loaded.fileKey, tuner.chosen);
        }, () => undefined);
      }
      return request;
    };
    let next: Promise<IteratorResult<Token, void>> | undefined = tokens.next();
    try {
      while (next) {
        const result = await next;
        next = undefined;
        if (produced === 0) {
          run.evaluatedPromptTokens = evaluatedSoFar();
          run.threadsUsed.prefill = context.currentThreads;

        } else if (produced === 1) {
          run.threadsUsed.decode = context.currentThreads;
        }
        if (result.done) {
          run.finish = "stop";
          break;
        }
        const token = result.value as number;
        if (!options.ignoreEos && model.isEogToken(token as Token)) {
          run.finish = "stop";
          break;
        }
        history.push(token);
        json?.driver.push(token); // before the next sample, whose token bias reads it
        produced++;
        if (json?.driver.finished) {
          run.push(token, false);
          run.finish = json.driver.forced ? "length" : "stop";
          break;
        }
        // Out of slack: the closing tokens are forced, so append them without sampling (banning
        // every other token through a bias list would cost more than the decode itself).
        const forced = json?.driver.forcedCompletion();
        if (forced) {
          run.push(token, false);
          for (const t of forced) {
            json?.driver.push(t);
            run.push(t, false);
          }
          run.finish = "length";
          break;
        }
        if (produced >= maxNew) {
          run.push(token, false);
          run.finish = "length";
          break;
        }
        // Pipelining: start decoding the following token before handing this one over. The
        // consumer is woken on the next macrotask, once llama.cpp's worker thread is busy, so
        // detokenization and stop strings run on the main thread while the native decode runs.
        const room = !run.cancelled && run.hasRoom();
        if (room) next = requestNext();
        run.push(token, room);
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

/**
 * The idle sequence to run `prompt` on, and maybe one to copy a shared prefix from. A run cuts
 * its sequence's state back to the prefix shared with the prompt, so other conversations' states
 * are kept where possible: a sequence the prompt extends (the longest) is used as it is; else a
 * never-used sequence, else the least recently used, starting from a copy of the idle sequence
 * sharing the longest prefix (when node-llama-cpp can copy; else that sequence itself).
 */
function pickSlot(loaded: Loaded, prompt: readonly number[]): { slot: Slot; source?: Slot } {
  let extended: Slot | undefined;
  let partial: Slot | undefined;
  let empty: Slot | undefined;
  let oldest: Slot | undefined;
  let extendedBy = 0;
  let partialBy = 0;
  for (const slot of loaded.slots) {
    if (slot.busy) continue;
    const held = slot.sequence.contextTokens;
    if (held.length === 0) {
      if (slot.readers === 0) empty ??= slot;
      continue;
    }
    if (slot.readers === 0 && (!oldest || slot.usedAt < oldest.usedAt)) oldest = slot;
    if (!loaded.reuse) continue;
    const shared = sharedPrefix(held, prompt);
    if (shared === held.length && slot.readers === 0) {
      if (shared > extendedBy) [extended, extendedBy] = [slot, shared];
    } else if (shared > partialBy) [partial, partialBy] = [slot, shared];
  }
  if (extended) return { slot: extended };
  // Erasing or copying a sequence's state takes node-llama-cpp's context lock, which its batch loop
  // holds for as long as any sequence has decodes queued: while others run, a request that needs
  // either would wait for the whole batch to end. An empty sequence joins the next batch at once.
  if (empty && loaded.slots.some((slot) => slot.busy)) return { slot: empty };
  const target = empty ?? oldest;
  // The queue lets at most maxBatch requests run, and there are at least that many sequences.
  if (!target) throw new MlxNodeError("GGUF_ERROR", "no idle llama.cpp sequence (more requests running than maxBatch)");
  // A copy is cut to the shared prefix after it is made, in a second turn of the lock, which a batch
  // started meanwhile (a request arriving in the same tick) holds until it ends: only a prefix
  // worth that (MIN_COPIED_PREFIX tokens) is copied.
  // A prompt the partial sequence holds whole (asked again, or regenerated) runs there: its tail goes.
  if (partial && partial.readers === 0 && partialBy >= prompt.length - 1) return { slot: partial };
  if (!partial || partial === target || partialBy < MIN_COPIED_PREFIX) return { slot: target };
  if (typeof (target.sequence as CopyableSequence)._copyStateFromOtherSequence !== "function") return { slot: partial.readers === 0 ? partial : target };
  return { slot: target, source: partial };
}

function sharedPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** KV bytes one more sequence of `contextSize` tokens costs, by llama.cpp's own estimate. */
async function kvBytesPerSequence(model: LlamaModel, contextSize: number): Promise<number> {
  const estimate = (sequences: number) => model.fileInsights.estimateContextResourceRequirementsV2({ contextSize, modelGpuLayers: 0, sequences });
  const [one, two] = await Promise.all([estimate(1), estimate(2)]);
  return Math.max(1, two.cpuRam - one.cpuRam);
}

/** True when one request runs (the caller's). */
function runningAlone(loaded: Loaded): boolean {
  return loaded.slots.filter((slot) => slot.busy).length <= 1;
}

/** The decode thread count of a loaded model: measured (or being measured), else the default. */
function decodeThreads(loaded: Loaded): number {
  // The tuner times single requests: while several run, its trial counts would slow them all.
  const tuner = loaded.tuner?.measuring && !runningAlone(loaded) ? undefined : loaded.tuner;
  return tuner?.next() ?? loaded.threads.decode;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The absolute path of a GGUF adapter file, checked to exist and to parse as GGUF with general.type "adapter". */
async function ggufAdapterFile(path: string): Promise<string> {
  const file = resolve(path);
  const info = await stat(file).catch(() => undefined);
  if (!info?.isFile()) throw new AdapterError(`GGUF adapter not found: ${path} (the gguf backend takes a llama.cpp LoRA .gguf file)`);
  // llama.cpp trusts the file: the header is parsed here first.
  const header = await readGgufHeader(file).catch((error: unknown) => {
    throw new AdapterError(`Cannot load GGUF adapter ${path}: not a valid GGUF file (${errorMessage(error)})`);
  });
  const type = header.metadata.get("general.type")?.value;
  if (type?.type !== "string" || type.value !== "adapter") {
    throw new AdapterError(`Cannot load GGUF adapter ${path}: general.type is not "adapter" (a model file, not a LoRA adapter?)`);
  }
  return file;
}
