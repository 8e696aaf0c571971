/**
 * The GGUF fallback backend: runs `.gguf` models on the CPU through node-llama-cpp (llama.cpp).
 * The runtime (one `Llama` per process) is in runtime.ts, the sequences and their choice in
 * loaded.ts, the producer loop of a run in produce.ts.
 */
import { stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import type { LlamaContext, LlamaModel, Token } from "node-llama-cpp";
import type { AdapterInfo, BackendName, LoadOptions, TokenizeOptions } from "../../backend.js";
import type { ChatTemplateSource } from "../../chat.js";
import {
  AdapterError, GgufError, InvalidOptionError, MlxNodeError, ModelFormatError, ModelNotFoundError, NotLoadedError, UnsupportedArchitectureError,
} from "../../errors.js";
import { readGgufHeader } from "../../gguf/read.js";
import { validateGguf } from "../../gguf/validate.js";
import { TokenPieces } from "../../logprobs.js";
import { checkTokenIds, type ResolvedGenerateOptions, type ResolvedLoadOptions } from "../../options.js";
import { BaseBackend, type BackendOptions, type TokenRun } from "../base.js";
import { EngineRun } from "../run.js";
import { Lockstep } from "./lockstep.js";
import { decodeThreads, kvBytesPerSequence, measuredThreads, pickSlot, type Loaded, type Slot } from "./loaded.js";
import { ggufVocabulary } from "./json-constraint.js";
import { GgufLoadRefused, probeEnabled, probeGguf } from "./probe.js";
import { produce } from "./produce.js";
import { errorMessage, getSharedLlama, nativeErrorMark, nativeErrorsSince } from "./runtime.js";
import { decodeThreadCandidates, DecodeThreadTuner, defaultGgufThreads, setContextThreads, type GgufThreadCounts } from "./threads.js";

/** Largest context created when `contextSize` is not given (the model's trained context is used when smaller). */
const DEFAULT_MAX_CONTEXT = 4096;

/** Options of a {@link GgufBackend} instance. */
export type GgufBackendOptions = BackendOptions;

/** Load options of the GGUF backend. */
export type GgufLoadOptions = LoadOptions;

/** Default `maxBatch`. */
export const DEFAULT_GGUF_MAX_BATCH = 1;
/** Most sequences kept only as prompt cache (llama.cpp allocates every sequence's KV cells up front). */
const MAX_CACHE_SEQUENCES = 16;

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

  protected async tokenPieces(): Promise<TokenPieces> {
    const loaded = this.loaded as Loaded;
    loaded.pieces ??= new TokenPieces(ggufVocabulary(loaded.model), (id) => loaded.model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.[id]);
    return loaded.pieces;
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
    const errorMark = nativeErrorMark();
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
      const measured = options.threads === undefined ? measuredThreads.get(fileKey) : undefined;
      const threads = options.threads !== undefined
        ? { prefill: Math.min(options.threads, availableParallelism()), decode: Math.min(options.threads, availableParallelism()) }
        : (measured ?? defaultGgufThreads(info.size, llama.cpuMathCores));
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
        throw new GgufError(`Cannot create a ${contextSize}-token context for ${path}: ${errorMessage(error)}`, { cause: error });
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
        lockstep: new Lockstep(),
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
    if (!loaded) throw new NotLoadedError("generate");
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
    const threadsUsed: GgufThreadCounts = { prefill: 0, decode: 0 };
    const run = new EngineRun(
      (r) => previous.then(() => produce(r, threadsUsed, loaded, slot.sequence, prompt, options, source, copied)),
      (error) => error instanceof MlxNodeError ? error : new GgufError(`llama.cpp evaluation failed: ${errorMessage(error)}`, { cause: error }),
    );
    slot.lastRun = run.completion.then(() => {
      slot.busy = false;
      copied();
      this.lastRequestThreads = threadsUsed;
      // Without a prompt cache the state is cleared now, in the background, so that a request
      // arriving while others decode finds an empty sequence (see pickSlot).
      if (!loaded.reuse && !slot.sequence.disposed) return slot.sequence.clearHistory().catch(() => undefined);
    });
    return run;
  }
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
