/**
 * MlxBackend: Hugging Face / MLX model directories run by the native MLX engine (mlx-c).
 * Tokenization is done here in TypeScript; the engine sees only token ids, and every MLX call
 * runs on the addon's single engine thread, so the event loop never blocks.
 */
import { stat } from "node:fs/promises";
import type { LoadOptions } from "../backend.js";
import { Channel } from "../channel.js";
import type { ChatTemplateSource } from "../chat.js";
import { BackendUnavailableError, ModelNotFoundError, errorFromNative } from "../errors.js";
import {
  nativeStatus, type NativeGenerationStats, type NativeMemory, type NativeMlx, type NativeModel, type NativeModelInfo,
} from "../native.js";
import type { ResolvedGenerateOptions, ResolvedLoadOptions } from "../options.js";
import { checkTokenIds } from "../options.js";
import { Tokenizer } from "../tokenizer.js";
import { BaseBackend, type BackendOptions, type TokenRun } from "./base.js";

/** Where MLX runs and how much memory it holds. */
export interface MlxRuntimeInfo {
  /** `gpu` (Metal) or `cpu`. */
  device: "gpu" | "cpu";
  mlxVersion: string;
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
  private modelInfo: NativeModelInfo | undefined;
  private stats: NativeGenerationStats | undefined;

  constructor(options?: BackendOptions) {
    super(options);
  }

  get contextSize(): number {
    return this.isLoaded && this.modelInfo ? this.modelInfo.contextSize : 0;
  }

  /** MLX evaluates on one engine thread (BLAS and Metal schedule their own work below it). */
  get threadCount(): number {
    return this.isLoaded ? 1 : 0;
  }

  /** Facts about the loaded model (family, dtype, quantization, sizes). */
  get info(): NativeModelInfo | undefined {
    return this.isLoaded ? this.modelInfo : undefined;
  }

  /** The tokenizer of the loaded model. @throws NotLoadedError */
  get tokenizer(): Tokenizer {
    this.ensureLoaded("tokenizer");
    return this.tokenizerInstance as Tokenizer;
  }

  /** Engine numbers of the last finished request: graph-build time, ops per token, prefill/decode ms. */
  get lastGenerationStats(): NativeGenerationStats | undefined {
    return this.stats;
  }

  tokenize(text: string, options?: { addSpecialTokens?: boolean }): number[] {
    this.ensureLoaded("tokenize");
    return this.tokenizer.encode(text, { addSpecialTokens: options?.addSpecialTokens ?? false });
  }

  detokenize(tokens: readonly number[]): string {
    this.ensureLoaded("detokenize");
    return this.tokenizer.decode(checkTokenIds("tokens", tokens, this.vocabSize));
  }

  /**
   * Logits of every position of `tokens`, evaluated from an empty cache (`tokens.length` rows of
   * `vocabSize` floats). For tests and research; generation does not need it.
   */
  async logits(tokens: readonly number[]): Promise<Float32Array[]> {
    this.ensureLoaded("logits");
    const ids = checkTokenIds("tokens", tokens, this.vocabSize);
    const flat = await this.native(() => (this.model as NativeModel).logits(Int32Array.from(ids)));
    const vocab = this.vocabSize;
    return ids.map((_, i) => flat.subarray(i * vocab, (i + 1) * vocab));
  }

  /** Device and MLX version. @throws BackendUnavailableError */
  static async runtimeInfo(): Promise<MlxRuntimeInfo> {
    return requireMlx().runtimeInfo();
  }

  /** MLX memory in bytes: active, peak, cache, limit. @throws BackendUnavailableError */
  static async memory(): Promise<NativeMemory> {
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

  protected async loadModel(path: string, options: ResolvedLoadOptions): Promise<void> {
    const addon = requireMlx();
    const info = await stat(path).catch(() => undefined);
    if (!info) throw new ModelNotFoundError(path);
    if (!info.isDirectory()) {
      throw new ModelNotFoundError(path, "the MLX backend takes a model directory with config.json; use the gguf backend for .gguf files");
    }
    const tokenizer = await Tokenizer.fromDirectory(path);
    options.signal?.throwIfAborted();
    const model = await this.native(() => addon.loadModel(path, options.contextSize ?? 0));
    this.model = model;
    this.modelInfo = model.info();
    this.tokenizerInstance = tokenizer;
  }

  protected async unloadModel(): Promise<void> {
    const model = this.model;
    this.model = undefined;
    this.modelInfo = undefined;
    this.tokenizerInstance = undefined;
    await model?.unload();
  }

  protected runTokens(prompt: number[], options: ResolvedGenerateOptions): TokenRun {
    const model = this.model as NativeModel;
    const channel = new Channel<number[]>();
    const state = { evaluated: 0, finish: undefined as "stop" | "length" | undefined };
    let settle!: () => void;
    const completion = new Promise<void>((resolve) => (settle = resolve));
    const handle = model.generate(
      Int32Array.from(prompt),
      {
        maxTokens: options.maxTokens,
        temperature: options.temperature,
        topP: options.topP,
        topK: options.topK,
        minP: options.minP,
        repetitionPenalty: options.repetitionPenalty,
        repetitionContextSize: options.repetitionContextSize,
        seed: options.seed,
        stopTokenIds: Int32Array.from(options.ignoreEos ? [] : this.tokenizer.eosTokenIds),
      },
      (tokens, done) => {
        if (tokens) {
          channel.push(Array.from(tokens));
          return;
        }
        settle();
        if (done?.error) {
          channel.fail(errorFromNative(done.error.code ?? "MLX_ERROR", done.error.message));
          return;
        }
        const stats = done?.stats;
        if (stats) {
          this.stats = stats;
          state.evaluated = stats.evaluatedPromptTokens;
          if (stats.finish !== "cancelled") state.finish = stats.finish;
        }
        channel.end();
      },
    );
    return {
      get evaluatedPromptTokens() {
        return state.evaluated;
      },
      get finish() {
        return state.finish;
      },
      cancel: () => handle.cancel(),
      completion,
      [Symbol.asyncIterator]: () => channel[Symbol.asyncIterator](),
    };
  }

  protected override chatTemplateSource(): ChatTemplateSource {
    const t = this.tokenizer;
    return { template: t.chatTemplate, bosToken: t.bosToken, eosToken: t.eosToken, origin: `${t.directory} (chat_template.jinja, tokenizer_config.json)` };
  }

  /** Runs a native call and maps its `{code, message}` error to a typed error. */
  private async native<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      const e = error as Error & { code?: string };
      throw errorFromNative(e.code ?? "MLX_ERROR", e.message);
    }
  }
}

function requireMlx(): NativeMlx {
  const status = nativeStatus();
  if (!status.available) throw new BackendUnavailableError("mlx", status.reason);
  return status.addon;
}

export type { LoadOptions };
