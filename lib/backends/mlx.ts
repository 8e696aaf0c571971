/**
 * MlxBackend: Hugging Face / MLX model directories run by the native MLX engine (mlx-c).
 * Tokenization is done here in TypeScript; the engine sees only token ids, and every MLX call
 * runs on the addon's single engine thread, so the event loop never blocks.
 */
import { stat } from "node:fs/promises";
import type { AdapterInfo, LoadOptions } from "../backend.js";
import type { ChatTemplateSource } from "../chat.js";
import {
  BackendUnavailableError, InvalidOptionError, MlxNodeError, ModelNotFoundError, UnloadedError, errorFromNative, type NativeErrorFields,
} from "../errors.js";
import { JsonGenerationDriver } from "../json-schema/driver.js";
import type { CompiledJsonSchema } from "../json-schema/schema.js";
import { tokenConstraint } from "../json-schema/token-constraint.js";
import { vocabularyFromTokenizer, type TokenVocabulary } from "../json-schema/vocab.js";
import { nativeStatus, type NativeMlx, type NativeModel } from "../native.js";
import type { ResolvedGenerateOptions, ResolvedLoadOptions } from "../options.js";
import { checkTokenIds } from "../options.js";
import { forcedLogprob, fromNativeLogprobs, TokenPieces } from "../logprobs.js";
import { samplingValues } from "../sampling.js";
import { Tokenizer } from "../tokenizer.js";
import { BaseBackend, type BackendOptions, type TokenRun } from "./base.js";
import { EngineRun } from "./run.js";

/** Load options of the MLX backend. */
export interface MlxLoadOptions extends LoadOptions {
  /**
   * The dtype the model computes in; floating weights (and quantization scales) are cast to it once
   * at load. `auto` picks float32 on the CPU, where MLX emulates float16/bfloat16 arithmetic (many
   * times slower, also for the scales of quantized weights), and the checkpoint's dtype on a GPU.
   * Defaults to `auto`.
   */
  computeDtype?: "auto" | "float32" | "float16" | "bfloat16";
}

/** Default `maxBatch` of the MLX engine (see bench/batching.ts and the README's batching section). */
export const DEFAULT_MLX_MAX_BATCH = 8;
/** Facts about a loaded MLX model, as its loader read them. */
export interface MlxModelInfo {
  /** `config.json`'s `model_type`, e.g. `llama`. */
  modelType: string;
  /** The dtype the model computes in: `float32`, `float16` or `bfloat16`. */
  dtype: string;
  /** 4 or 8 for MLX-quantized weights, 0 when not quantized. */
  quantizationBits: number;
  vocabSize: number;
  /** Tokens the KV cache holds (prompt + generated). */
  contextSize: number;
  numLayers: number;
  hiddenSize: number;
  /** Bytes of the weights held in memory. */
  weightBytes: number;
  /** Bytes one position adds to the KV cache: every layer's keys and values in the compute dtype. */
  kvBytesPerToken: number;
  /** Requests decoded together: the `maxBatch` asked for (every family batches; 1 for a model whose caches could not). */
  maxBatch: number;
}

/** The engine's numbers for one finished request (see {@link MlxBackend.lastGenerationStats}). */
export interface MlxGenerationStats {
  /** Prompt tokens run through the model (after a cached prefix was reused). */
  evaluatedPromptTokens: number;
  generatedTokens: number;
  /** How the engine's loop ended: as {@link FinishReason} (`abort`: the request was cancelled). */
  finish: "stop" | "length" | "abort";
  prefillMs: number;
  decodeMs: number;
  /** Time spent building MLX graphs on the engine thread (outside MLX evaluation). */
  graphBuildMs: number;
  /** Other engine-thread time outside MLX evaluation. */
  hostMs: number;
  /** MLX operations created per decoded token. */
  opsPerToken: number;
  /** Constrained decoding (`jsonSchema`): time the engine waited for token masks. */
  maskWaitMs: number;
}

/** MLX memory in bytes (see {@link MlxBackend.memory}). */
export interface MlxMemory {
  activeBytes: number;
  /** The most held since the last `resetPeak` (at least what is active now). */
  peakBytes: number;
  cacheBytes: number;
  memoryLimitBytes: number;
}

/**
 * The BLAS that MLX's CPU matrix products (every float32 matmul on the CPU) call. On Linux the
 * `mlx[cpu]` pip wheel links a reference (netlib) BLAS; `MLX_NODE_BLAS=openblas` (or the path of a
 * CBLAS library) in the environment before the first use of MLX (the addon reads it once, when it
 * loads) puts OpenBLAS in its place (see the README, "How MLX is found").
 */
export interface MlxBlasInfo {
  /** The shared library that provides MLX's `cblas_sgemm`. */
  library: string;
  /** `MLX_NODE_BLAS`: loaded by that switch at startup; `linked`: the one libmlx was linked with (or one loaded before it, e.g. by LD_PRELOAD). */
  source: "MLX_NODE_BLAS" | "linked";
  /** Present when that library is OpenBLAS: its build string (`openblas_get_config`) and thread count. */
  openblas?: { config: string; threads: number };
}

/** Where MLX runs and how much memory it holds. */
export interface MlxRuntimeInfo {
  /** `gpu` (Metal) or `cpu`. */
  device: "gpu" | "cpu";
  mlxVersion: string;
  blas: MlxBlasInfo;
}

/** Says whether the MLX engine can run here, and if not, why. */
export function mlxAvailability(): { available: true } | { available: false; reason: string } {
  const status = nativeStatus();
  return status.available ? { available: true } : { available: false, reason: status.reason };
}

/**
 * Runs MLX-format model directories (`config.json`, safetensors weights, `tokenizer.json`).
 *
 * @example
 * ```ts
 * import { MlxBackend } from "mlx-node";
 * const mlx = new MlxBackend();
 * await mlx.load("./models/Qwen2.5-0.5B-Instruct-4bit");
 * for await (const chunk of mlx.generateStream("Once upon a time", { maxTokens: 64 })) process.stdout.write(chunk.text);
 * await mlx.unload();
 * ```
 */
export class MlxBackend extends BaseBackend {
  readonly name = "mlx" as const;
  private model: NativeModel | undefined;
  private tokenizerInstance: Tokenizer | undefined;
  private modelInfo: MlxModelInfo | undefined;
  private stats: MlxGenerationStats | undefined;
  /** Token bytes for jsonSchema, read from tokenizer.json on first use. */
  private vocabulary: Promise<TokenVocabulary> | undefined;
  private pieces: Promise<TokenPieces> | undefined;
  /** Milliseconds the last jsonSchema request spent computing token masks on the JS thread. */
  private lastMaskMs = 0;

  constructor(options?: BackendOptions) {
    super(options);
  }

  get contextSize(): number {
    return this.isLoaded && this.modelInfo ? this.modelInfo.contextSize : 0;
  }

  /** Requests decoded together: the `maxBatch` asked for (1 for a model whose caches could not batch). */
  protected override get concurrentRequests(): number {
    return this.modelInfo?.maxBatch ?? 1;
  }

  /** MLX evaluates on one engine thread (BLAS and Metal schedule their own work below it). */
  get threadCount(): number {
    return this.isLoaded ? 1 : 0;
  }

  /** Facts about the loaded model (family, dtype, quantization, sizes). */
  get info(): MlxModelInfo | undefined {
    return this.isLoaded ? this.modelInfo : undefined;
  }

  /** The tokenizer of the loaded model. @throws NotLoadedError */
  get tokenizer(): Tokenizer {
    this.ensureLoaded("tokenizer");
    return this.tokenizerInstance as Tokenizer;
  }

  /** Engine numbers of the last finished request: graph-build time, ops per token, prefill/decode ms. */
  get lastGenerationStats(): MlxGenerationStats | undefined {
    return this.stats;
  }

  /** JS-thread milliseconds the last `jsonSchema` request spent computing token masks (0 without one). */
  get lastMaskComputeMs(): number {
    return this.lastMaskMs;
  }

  tokenize(text: string, options?: { addSpecialTokens?: boolean }): number[] {
    this.ensureLoaded("tokenize");
    return this.tokenizer.encode(text, { addSpecialTokens: options?.addSpecialTokens ?? false });
  }

  /** Token ids to text, special tokens rendered as their text (the contract's rule, see InferenceBackend.detokenize). */
  detokenize(tokens: readonly number[]): string {
    this.ensureLoaded("detokenize");
    return this.tokenizer.decode(checkTokenIds("tokens", tokens, this.vocabSize), { skipSpecialTokens: false });
  }

  /**
   * Logits of every position of `tokens`, evaluated from an empty cache (`tokens.length` rows of
   * `vocabSize` floats). For tests and research; generation does not need it.
   */
  async logits(tokens: readonly number[], options: { adapter?: string } = {}): Promise<Float32Array[]> {
    this.ensureLoaded("logits");
    const ids = checkTokenIds("tokens", tokens, this.vocabSize);
    const flat = await this.native(() => this.loadedModel().logits(Int32Array.from(ids), options.adapter));
    const vocab = this.vocabSize;
    return ids.map((_, i) => flat.subarray(i * vocab, (i + 1) * vocab));
  }

  /**
   * The last token's logits of each prompt, fed as one batched decode step: every prompt but its
   * last token is prefilled alone, the caches are joined as left-padded rows. For tests of batched
   * decoding (row b should equal the last row of `logits(prompts[b])`); prompts need 2+ tokens.
   */
  async batchLastLogits(prompts: readonly (readonly number[])[]): Promise<Float32Array[]> {
    this.ensureLoaded("batchLastLogits");
    const ids = prompts.map((p) => Int32Array.from(checkTokenIds("prompts", p, this.vocabSize)));
    const flat = await this.native(() => this.loadedModel().batchLogits(ids));
    const vocab = this.vocabSize;
    return ids.map((_, i) => flat.subarray(i * vocab, (i + 1) * vocab));
  }

  /** Device, MLX version and the BLAS MLX calls on the CPU. @throws BackendUnavailableError */
  static async runtimeInfo(): Promise<MlxRuntimeInfo> {
    return requireMlx().runtimeInfo();
  }

  /** MLX memory in bytes: active, peak, cache, limit. @throws BackendUnavailableError */
  static async memory(): Promise<MlxMemory> {
    return requireMlx().memory();
  }

  /**
   * Sets MLX's memory limit and/or buffer-cache limit (bytes), or resets the peak counter.
   * @throws BackendUnavailableError
   */
  static async setMemoryLimits(limits: { memoryLimitBytes?: number; cacheLimitBytes?: number; resetPeak?: boolean }): Promise<void> {
    return requireMlx().setLimits(limits);
  }

  protected get vocabSize(): number {
    return this.modelInfo?.vocabSize ?? 0;
  }

  /** Loads a model directory; see {@link MlxLoadOptions}. */
  override load(modelPath: string, options?: MlxLoadOptions): Promise<void> {
    return super.load(modelPath, options);
  }

  protected override extraLoadOptionKeys(): readonly string[] {
    return ["computeDtype"];
  }

  protected async loadModel(path: string, options: ResolvedLoadOptions, raw: MlxLoadOptions): Promise<void> {
    const addon = requireMlx();
    const computeDtype = raw.computeDtype ?? "auto";
    if (!["auto", "float32", "float16", "bfloat16"].includes(computeDtype)) {
      throw new InvalidOptionError("computeDtype", '"auto", "float32", "float16" or "bfloat16"', computeDtype);
    }
    const info = await stat(path).catch(() => undefined);
    if (!info) throw new ModelNotFoundError(path);
    if (!info.isDirectory()) {
      throw new ModelNotFoundError(path, "the MLX backend takes a model directory with config.json; use the gguf backend for .gguf files");
    }
    const tokenizer = await Tokenizer.fromDirectory(path);
    options.signal?.throwIfAborted();
    const adapter = options.adapter !== undefined ? { path: options.adapter, fuse: options.fuse } : undefined;
    const model = await this.native(() => addon.loadModel(path, options.contextSize ?? 0, computeDtype, adapter, options.promptCacheBytes,
      options.maxBatch ?? DEFAULT_MLX_MAX_BATCH), { path });
    this.model = model;
    this.modelInfo = model.info();
    this.tokenizerInstance = tokenizer;
  }

  protected attachAdapter(name: string, path: string): Promise<AdapterInfo> {
    return this.native(() => this.loadedModel().loadAdapter(name, path));
  }

  protected detachAdapter(name: string): Promise<void> {
    return this.native(() => this.loadedModel().unloadAdapter(name));
  }

  protected async unloadModel(): Promise<void> {
    const model = this.model;
    this.model = undefined;
    this.modelInfo = undefined;
    this.tokenizerInstance = undefined;
    this.vocabulary = undefined;
    this.pieces = undefined;
    await model?.unload();
  }

  protected runTokens(prompt: number[], options: ResolvedGenerateOptions): TokenRun {
    const model = this.loadedModel();
    return new EngineRun(async (run) => {
      // The first request with a schema builds its constraint; later ones find it cached.
      const json = options.jsonSchema
        ? await this.jsonDriver(options.jsonSchema, Math.min(options.maxTokens, this.contextSize - prompt.length))
        : undefined;
      if (!run.cancelled) await this.produce(run, model, prompt, options, json);
    }, (error) => typedError(error));
  }

  private async jsonDriver(schema: CompiledJsonSchema, budget: number): Promise<JsonGenerationDriver> {
    return new JsonGenerationDriver(tokenConstraint(schema, await this.tokenVocabulary()), budget);
  }

  /** Token bytes, read from tokenizer.json on first use (a failed read is retried next time). */
  private tokenVocabulary(): Promise<TokenVocabulary> {
    this.vocabulary ??= vocabularyFromTokenizer(this.tokenizer, this.vocabSize);
    const vocabulary = this.vocabulary;
    vocabulary.catch(() => {
      if (this.vocabulary === vocabulary) this.vocabulary = undefined;
    });
    return vocabulary;
  }

  protected async tokenPieces(): Promise<TokenPieces> {
    const tokenizer = this.tokenizer;
    this.pieces ??= this.tokenVocabulary().then((v) => new TokenPieces(v, (id) => tokenizer.idToToken(id)));
    const pieces = this.pieces;
    pieces.catch(() => {
      if (this.pieces === pieces) this.pieces = undefined;
    });
    return pieces;
  }

  /**
   * The engine side of a run: resolves when the engine has finished it. With a JSON driver, mask 0
   * is sent at once and each later mask as soon as the token before it arrives, while the engine
   * runs that step's forward pass.
   */
  private produce(
    run: EngineRun, model: NativeModel, prompt: number[], options: ResolvedGenerateOptions, json: JsonGenerationDriver | undefined,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      let failure: { error: unknown } | undefined;
      const handle = model.generate(
        Int32Array.from(prompt),
        {
          ...samplingValues(options),
          stopTokenIds: Int32Array.from(options.ignoreEos ? [] : this.tokenizer.eosTokenIds),
          constrained: json !== undefined,
          ...(options.adapter !== undefined ? { adapter: options.adapter } : {}),
          ...(options.logprobs !== undefined ? { logprobs: options.logprobs } : {}),
        },
        (tokens, done, values) => {
          if (tokens) {
            if (failure) return;
            let forced: number[] | undefined;
            if (json) {
              try {
                for (const t of tokens) json.push(t);
                // Out of slack: the rest of the document is forced. It is appended without decoding
                // (as on GGUF) and the engine, waiting for the next mask, is told to end.
                const engineStep = json.step;
                forced = json.forcedCompletion();
                if (forced) {
                  for (const t of forced) json.push(t);
                  handle.provideMask(engineStep, null);
                } else if (json.step < json.budget) handle.provideMask(json.step, json.mask());
              } catch (error) {
                failure = { error };
                handle.cancel();
                return;
              }
            }
            const ids = forced?.length ? [...tokens, ...forced] : Array.from(tokens);
            if (options.logprobs === undefined) return run.push(ids);
            try {
              const reported = fromNativeLogprobs(values ?? new Float32Array(), tokens.length, options.logprobs);
              run.push(ids, false, forced ? [...reported, ...forced.map(forcedLogprob)] : reported);
            } catch (error) {
              failure = { error };
              handle.cancel();
            }
            return;
          }
          if (json) this.lastMaskMs = json.maskMs;
          if (failure) return reject(failure.error);
          if (done?.error) return reject(done.error);
          const stats = done?.stats;
          if (stats) {
            this.stats = { ...stats, finish: stats.finish === "cancelled" ? "abort" : stats.finish };
            run.evaluatedPromptTokens = stats.evaluatedPromptTokens;
            if (stats.finish !== "cancelled") run.finish = json?.forced ? "length" : stats.finish;
          }
          resolve();
        },
      );
      run.onCancel(() => handle.cancel());
      if (json) handle.provideMask(0, json.mask());
    });
  }

  protected override chatTemplateSource(): ChatTemplateSource {
    const t = this.tokenizer;
    return { template: t.chatTemplate, bosToken: t.bosToken, eosToken: t.eosToken, origin: `${t.directory} (chat_template.jinja, tokenizer_config.json)` };
  }

  /** The native model; UnloadedError once unload() has let it go (a call that raced the unload). */
  private loadedModel(): NativeModel {
    if (!this.model) throw new UnloadedError();
    return this.model;
  }

  /** Runs a native call and maps its `{code, message}` error to a typed error; `fields` add what the caller knows (the path). */
  private async native<T>(call: () => Promise<T>, fields: NativeErrorFields = {}): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw typedError(error, fields);
    }
  }
}

/** A native failure (an Error with `code`, and the option's fields for INVALID_OPTION) as its typed error; typed errors pass through. */
function typedError(error: unknown, fields: NativeErrorFields = {}): MlxNodeError {
  if (error instanceof MlxNodeError) return error;
  const e = (error instanceof Error ? error : new Error(String(error))) as Error & NativeErrorFields;
  return errorFromNative(e.code ?? "MLX_ERROR", e.message, { ...e, ...fields });
}

function requireMlx(): NativeMlx {
  const status = nativeStatus();
  if (!status.available) throw new BackendUnavailableError("mlx", status.reason);
  return status.addon;
}

export type { LoadOptions };
