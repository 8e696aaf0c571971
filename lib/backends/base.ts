/**
 * What every backend shares: option validation, the request queue, streaming detokenization,
 * stop strings, abort, usage and timings. A backend supplies only load/unload, the tokenizer
 * and `runTokens`, which streams raw token ids from its engine.
 */
import type {
  AdapterInfo, BackendName, GenerateChunk, GenerateOptions, GenerateResult, GenerationStream, InferenceBackend,
  LoadOptions, Prompt, TokenizeOptions, FinishReason,
} from "../backend.js";
import { checkMessages, renderChat, splitChatOptions, type ChatMessage, type ChatOptions, type ChatChunk, type ChatResult, type ChatStream, type ChatTemplateSource } from "../chat.js";
import type { CompiledJsonSchema } from "../json-schema/schema.js";
import { detectToolCallFormat, parseToolCalls, TOOL_CALL_FORMATS, toolCallConstraint, ToolCallStreamer, type ToolCallFormat, type ToolSetup } from "../tools.js";
import { DETOKENIZER_CONTEXT, StreamingDetokenizer } from "../detokenizer.js";
import { AlreadyLoadedError, GgufError, InvalidOptionError, MlxError, NotLoadedError, UnloadedError } from "../errors.js";
import {
  checkModelPath, checkTokenIds, nonEmptyString, resolveGenerateOptions, resolveLoadOptions,
  type ResolvedGenerateOptions, type ResolvedLoadOptions,
} from "../options.js";
import { lazyGenerationStream } from "../generation-stream.js";
import type { GeneratedTokenLogprob, TokenBatch, TokenPieces } from "../logprobs.js";
import { RequestQueue } from "../request-queue.js";
import { StopMatcher } from "../stop-matcher.js";

/** A running generation in an engine: batches of token ids (and their logprobs when asked for), in order. */
export interface TokenRun extends AsyncIterable<TokenBatch> {
  /** Prompt tokens the engine evaluated (fewer than the prompt when a cached prefix was reused). Valid after the first batch. */
  readonly evaluatedPromptTokens: number;
  /** Why the run ended by itself: an end-of-generation token (`stop`) or `maxTokens`/context (`length`). */
  readonly finish: "stop" | "length" | undefined;
  /** Asks the engine to stop; iteration then ends soon. Safe to call more than once. */
  cancel(): void;
  /**
   * Settles (never rejects) when the engine has finished this run, after which
   * `evaluatedPromptTokens` and `finish` are final. The driver waits for it before handing the
   * model to the next request, and unload() before freeing the model.
   */
  readonly completion: Promise<void>;
}

/** Options of the backend object itself (not of one load). */
export interface BackendOptions {
  /** Requests allowed to wait while the model is busy; more are rejected with `BusyError`. Defaults to 64. */
  maxQueuedRequests?: number;
}

export abstract class BaseBackend implements InferenceBackend {
  abstract readonly name: BackendName;
  protected loadedPath: string | undefined;
  private loadingPath: string | undefined;
  /** Replaced on every unload, so a reader that stopped reading keeps no turn in the next load. */
  private queue: RequestQueue;
  private readonly maxQueued: number;
  private readonly running = new Set<TokenRun>();
  private unloading: Promise<void> | undefined;
  /** The load in progress (never rejects), for unload() to wait on. */
  private loading: Promise<void> | undefined;
  /** Bumped on every unload so requests from an older load know they were cut off. */
  private generation = 0;
  /** Adapters loaded with loadAdapter, by name. */
  private readonly adapters = new Set<string>();

  constructor(options: BackendOptions = {}) {
    const max = options.maxQueuedRequests ?? 64;
    if (!Number.isInteger(max) || max < 0) throw new InvalidOptionError("maxQueuedRequests", "a non-negative integer", max);
    this.maxQueued = max;
    this.queue = new RequestQueue(max);
  }

  get isLoaded(): boolean {
    return this.loadedPath !== undefined && this.unloading === undefined;
  }

  abstract get contextSize(): number;
  abstract get threadCount(): number;
  abstract tokenize(text: string, options?: TokenizeOptions): number[];
  abstract detokenize(tokens: readonly number[]): string;

  /** Loads the model at `path` (already validated); `raw` holds the backend's own extra options. */
  protected abstract loadModel(path: string, options: ResolvedLoadOptions, raw: LoadOptions): Promise<void>;
  /** Frees the model; no run is active when this is called. */
  protected abstract unloadModel(): Promise<void>;
  /** Starts generating from `prompt`; at most `concurrentRequests` runs are active at once. */
  protected abstract runTokens(prompt: number[], options: ResolvedGenerateOptions): TokenRun;
  /** Keeps an adapter under `name` beside the loaded model (name and path already checked). */
  protected abstract attachAdapter(name: string, path: string): Promise<AdapterInfo>;
  /** Frees the adapter `name`. */
  protected abstract detachAdapter(name: string): Promise<void>;
  /** The text and bytes of the model's tokens, for `logprobs`; read once per load, on first use. */
  protected abstract tokenPieces(): Promise<TokenPieces>;
  /** Size of the vocabulary, for checking token-id prompts. */
  protected abstract get vocabSize(): number;
  /** Requests the loaded model runs at once; the rest wait in the queue. */
  protected get concurrentRequests(): number {
    return 1;
  }

  /** Option names a backend accepts beyond the shared ones. */
  protected extraGenerateOptionKeys(): readonly string[] {
    return [];
  }

  /** Load option names a backend accepts beyond the shared ones. */
  protected extraLoadOptionKeys(): readonly string[] {
    return [];
  }

  async load(modelPath: string, options?: LoadOptions): Promise<void> {
    const path = checkModelPath(modelPath);
    const resolved = resolveLoadOptions(options, this.extraLoadOptionKeys());
    // An unload in progress finishes first, so load() right after unload() (not awaited) works.
    if (this.unloading) await this.unloading.catch(() => undefined);
    if (this.loadedPath !== undefined || this.loadingPath !== undefined) {
      const current = this.loadedPath ?? this.loadingPath;
      throw new AlreadyLoadedError(current as string);
    }
    resolved.signal?.throwIfAborted();
    // Claimed before the first await, so a second load() started meanwhile is refused.
    this.loadingPath = path;
    const loading = (async () => {
      try {
        await this.loadModel(path, resolved, options ?? {});
        this.queue.setSlots(this.concurrentRequests);
        this.loadedPath = path;
      } finally {
        this.loadingPath = undefined;
        this.loading = undefined;
      }
    })();
    this.loading = loading.catch(() => undefined);
    return loading;
  }

  get adapterNames(): readonly string[] {
    return [...this.adapters];
  }

  /**
   * Keeps an adapter beside the base model under `name` (no `:`, which the server uses to join a
   * model and an adapter name), for requests that pass `{ adapter: name }`.
   * @throws AdapterError (the model is unchanged), InvalidOptionError, NotLoadedError
   */
  async loadAdapter(name: string, path: string): Promise<AdapterInfo> {
    if (nonEmptyString("name", name) === undefined || name.includes(":")) {
      throw new InvalidOptionError("name", "a non-empty adapter name without ':'", name);
    }
    const dir = nonEmptyString("path", path);
    if (dir === undefined) throw new InvalidOptionError("path", "an adapter path", path);
    if (!this.isLoaded) throw new NotLoadedError("loadAdapter");
    if (this.adapters.has(name)) throw new InvalidOptionError("name", "a name no loaded adapter has", name);
    const info = await this.attachAdapter(name, dir);
    this.adapters.add(name);
    return info;
  }

  /** Frees the adapter `name`. @throws InvalidOptionError when no adapter has that name */
  async unloadAdapter(name: string): Promise<void> {
    if (!this.adapters.has(name)) throw new InvalidOptionError("name", `the name of a loaded adapter (${this.adapterList()})`, name);
    this.adapters.delete(name);
    await this.detachAdapter(name);
  }

  private adapterList(): string {
    return this.adapters.size > 0 ? [...this.adapters].join(", ") : "none is loaded";
  }

  /**
   * Frees the model. A load in progress cannot be stopped midway: unload() waits for it to finish
   * and then frees what it loaded.
   */
  unload(): Promise<void> {
    if (this.loadedPath === undefined && this.loading === undefined) return Promise.resolve();
    this.unloading ??= this.unloadNow().finally(() => (this.unloading = undefined));
    return this.unloading;
  }

  private async unloadNow(): Promise<void> {
    await this.loading;
    if (this.loadedPath === undefined) return; // the load failed: nothing to free
    this.generation++;
    const queue = this.queue;
    this.queue = new RequestQueue(this.maxQueued);
    queue.rejectWaiting(new UnloadedError());
    const runs = [...this.running];
    for (const run of runs) run.cancel();
    // The engine must be done with the model before it is freed. Its readers need not be: one that
    // stopped reading (a paused or dropped iterator) would otherwise hold unload() forever; it gets
    // UnloadedError when it reads again.
    await Promise.all(runs.map((run) => run.completion));
    try {
      await this.unloadModel();
    } finally {
      this.adapters.clear();
      this.loadedPath = undefined;
    }
  }

  async generate(prompt: Prompt, options?: GenerateOptions): Promise<GenerateResult> {
    const stream = this.generateStream(prompt, options);
    for await (const _ of stream) {
      // Chunks are accumulated into the result by the stream itself.
    }
    return stream.result;
  }

  generateStream(prompt: Prompt, options?: GenerateOptions): GenerationStream {
    const resolved = resolveGenerateOptions(options, this.extraGenerateOptionKeys());
    if (!this.isLoaded) throw new NotLoadedError("generateStream");
    return this.startStream(this.promptIds(prompt), resolved);
  }

  /** Checks the prompt against the context (and the room a JSON constraint needs), then streams. */
  private startStream(ids: number[], resolved: ResolvedGenerateOptions): GenerationStream {
    if (resolved.adapter !== undefined && !this.adapters.has(resolved.adapter)) {
      throw new InvalidOptionError("adapter", `the name of a loaded adapter (${this.adapterList()})`, resolved.adapter);
    }
    if (ids.length === 0) throw new InvalidOptionError("prompt", "at least one token", "an empty prompt");
    if (ids.length >= this.contextSize) {
      throw new InvalidOptionError("prompt", `fewer tokens than the context size (${this.contextSize})`, `${ids.length} tokens`);
    }
    const json = resolved.jsonSchema;
    if (json && !json.trigger && this.contextSize - ids.length < json.minTokens) {
      // The constraint counts on this room to finish the document; without it the text could end cut off.
      const most = this.contextSize - json.minTokens;
      throw new InvalidOptionError("prompt", `at most ${most} tokens, leaving room in the context for the jsonSchema's shortest document (${json.minTokens} tokens)`, `${ids.length} tokens`);
    }
    return this.stream(ids, resolved);
  }

  /**
   * Answers a conversation, rendered with the model's chat template. The KV cache of the previous
   * request is reused for the longest common prefix, so a follow-up turn evaluates only its new tokens.
   * With `tools`, the answer may be tool calls (`message.toolCalls`, finish reason "toolCalls"); see lib/tools.ts.
   * @throws ChatTemplateError, InvalidOptionError, NotLoadedError
   */
  async chat(messages: ChatMessage[], options?: ChatOptions): Promise<ChatResult> {
    const stream = this.chatStream(messages, options);
    for await (const _ of stream) {
      // Accumulated by the stream.
    }
    return stream.result;
  }

  /** Streams the answer to a conversation; see {@link chat}. Its `result` is the {@link ChatResult}. */
  chatStream(messages: ChatMessage[], options?: ChatOptions): ChatStream {
    const list = checkMessages(messages);
    const { chat, tools, generate } = splitChatOptions(options);
    const resolved = resolveGenerateOptions(generate, this.extraGenerateOptionKeys());
    if (!this.isLoaded) throw new NotLoadedError("chatStream");
    const source = this.chatTemplateSource();
    const offered = tools && tools.tools.length > 0 ? tools : undefined;
    const text = renderChat(list, source, { ...chat, tools: offered?.tools });
    const format = offered && offered.choice !== "none" ? this.toolFormat(offered, chat.chatTemplate ?? source.template) : undefined;
    if (offered && format) resolved.jsonSchema = callConstraint(offered, format, resolved);
    // The template writes BOS itself where the model wants one (as apply_chat_template does).
    const stream = this.startStream(this.tokenize(text, { addSpecialTokens: false }), resolved);
    const result = stream.result.then((r) => chatResult(r, offered, format));
    result.catch(() => undefined);
    const splitter = format ? new ToolCallStreamer(format) : undefined;
    async function* chunks(): AsyncGenerator<ChatChunk> {
      for await (const chunk of stream) yield splitter ? { ...chunk, deltas: splitter.push(chunk.text) } : chunk;
    }
    const iterable = chunks();
    return { result, toolCallFormat: format, [Symbol.asyncIterator]: () => iterable };
  }

  private toolFormat(tools: ToolSetup, template: string | undefined): ToolCallFormat {
    const format = tools.format ?? detectToolCallFormat(template ?? "");
    if (!format) throw new InvalidOptionError("toolCallFormat", `one of ${TOOL_CALL_FORMATS.join(", ")} (the chat template shows no tool-call syntax to detect)`, undefined);
    return format;
  }

  /** The loaded model's chat template and special tokens. Backends without one report none. */
  protected chatTemplateSource(): ChatTemplateSource {
    return { template: undefined, origin: "the model" };
  }

  /** Text or token ids to the token ids the engine evaluates. */
  protected promptIds(prompt: Prompt): number[] {
    if (typeof prompt === "string") return this.tokenize(prompt, { addSpecialTokens: true });
    return checkTokenIds("prompt", prompt, this.vocabSize);
  }

  /** Checks that a model is loaded before a synchronous call. */
  protected ensureLoaded(what: string): void {
    if (!this.isLoaded) throw new NotLoadedError(what);
  }

  private stream(ids: number[], options: ResolvedGenerateOptions): GenerationStream {
    const progress = new Progress(ids.length, options.logprobs !== undefined);
    // The stream belongs to this load, even when first read after an unload and a new load.
    const generation = this.generation;
    return lazyGenerationStream(
      (signal) => this.drive(ids, { ...options, signal }, progress, generation),
      () => progress.result("abort"),
      options.signal,
    );
  }

  private async *drive(
    ids: number[], options: ResolvedGenerateOptions, progress: Progress, myGeneration: number,
  ): AsyncGenerator<GenerateChunk, GenerateResult> {
    const { signal } = options;
    progress.start = performance.now();
    if (myGeneration !== this.generation) throw new UnloadedError();
    let release: (() => void) | undefined;
    // Token texts for logprobs are read before the request takes the model.
    const pieces = options.logprobs !== undefined ? await this.tokenPieces() : undefined;
    try {
      release = await this.queue.acquire(signal);
    } catch (error) {
      if (signal?.aborted && error === signal.reason) return progress.result("abort");
      throw error;
    }
    const run = (() => {
      try {
        if (myGeneration !== this.generation || !this.isLoaded) throw new UnloadedError();
        return this.runTokens(ids, options);
      } catch (error) {
        release();
        throw error;
      }
    })();
    progress.run = run;
    this.running.add(run);
    const onAbort = () => run.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    // A signal aborted before this point never fires "abort" again: cancel right away.
    if (signal?.aborted) run.cancel();
    const detok = new StreamingDetokenizer((t) => this.detokenize(t), ids.slice(-DETOKENIZER_CONTEXT));
    const stops = new StopMatcher(options.stop);
    const { tokens } = progress;
    try {
      try {
        for await (const batch of run) {
          if (progress.firstTokenAt === 0) progress.firstTokenAt = performance.now();
          const room = options.maxTokens - tokens.length;
          const taken = batch.ids.length > room ? batch.ids.slice(0, room) : batch.ids;
          tokens.push(...taken);
          let logprobs: GeneratedTokenLogprob[] | undefined;
          if (pieces) {
            const reports = batch.logprobs ?? [];
            logprobs = taken.map((id, i) => pieces.describe(id, reports[i] ?? missingLogprob(this.name, id)));
            progress.logprobs.push(...logprobs);
          }
          const match = stops.push(detok.push(taken));
          if (match.emit || taken.length > 0) {
            progress.text += match.emit;
            yield logprobs ? { text: match.emit, tokens: taken, logprobs } : { text: match.emit, tokens: taken };
          }
          if (match.stop !== undefined) {
            progress.finish = "stop";
            progress.stopSequence = match.stop;
            break;
          }
          if (tokens.length >= options.maxTokens) {
            progress.finish = "length";
            break;
          }
        }
      } catch (error) {
        // Whatever broke while the model was being unloaded, the caller's answer is that it was unloaded.
        if (myGeneration !== this.generation) throw new UnloadedError();
        throw error;
      }
      if (myGeneration !== this.generation) throw new UnloadedError();
      progress.finish ??= signal?.aborted ? "abort" : run.finish ?? "length";
      if (progress.stopSequence === undefined) {
        const tail = stops.push(detok.flush()).emit + stops.flush();
        if (tail) {
          progress.text += tail;
          yield pieces ? { text: tail, tokens: [], logprobs: [] } : { text: tail, tokens: [] };
        }
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      run.cancel();
      await run.completion;
      this.running.delete(run);
      release();
    }
    return progress.result(progress.finish);
  }
}

/** What a generation has produced so far; the result of a stream that ends, or is left, now. */
class Progress {
  /** When the request started (its first read), for timings. */
  start = performance.now();
  readonly tokens: number[] = [];
  text = "";
  firstTokenAt = 0;
  finish: FinishReason | undefined;
  stopSequence: string | undefined;
  run: TokenRun | undefined;
  /** One entry per token (with the `logprobs` option). */
  readonly logprobs: GeneratedTokenLogprob[] = [];

  constructor(private readonly promptTokens: number, private readonly withLogprobs: boolean) {}

  /** The result as of now; `finish` unless the generation already decided how it ended. */
  result(finish: FinishReason): GenerateResult {
    const { tokens, start, promptTokens } = this;
    const end = performance.now();
    const ttft = (this.firstTokenAt || end) - start;
    const evaluated = this.run?.evaluatedPromptTokens ?? 0;
    const decodeMs = end - (this.firstTokenAt || end);
    return {
      text: this.text,
      tokens: [...tokens],
      ...(this.withLogprobs ? { logprobs: [...this.logprobs] } : {}),
      finishReason: this.finish ?? finish,
      ...(this.stopSequence !== undefined ? { stopSequence: this.stopSequence } : {}),
      usage: {
        promptTokens,
        evaluatedPromptTokens: evaluated,
        completionTokens: tokens.length,
        totalTokens: promptTokens + tokens.length,
      },
      timings: {
        timeToFirstTokenMs: ttft,
        promptTokensPerSecond: ttft > 0 ? (evaluated / ttft) * 1000 : 0,
        generatedTokensPerSecond: tokens.length > 1 && decodeMs > 0 ? ((tokens.length - 1) / decodeMs) * 1000 : 0,
        totalMs: end - start,
      },
    };
  }
}

/**
 * The constraint of tool calls (lib/tools.ts), checked against the other options: forced calls
 * rule out jsonSchema and stop strings and need room for their shortest form; "auto" keeps a
 * jsonSchema the caller gave (the answer is then that document, not a call).
 */
function callConstraint(tools: ToolSetup, format: ToolCallFormat, resolved: ResolvedGenerateOptions): CompiledJsonSchema | undefined {
  if (tools.choice === "auto") return resolved.jsonSchema ?? (resolved.stop.length > 0 ? undefined : toolCallConstraint(tools, format));
  if (resolved.jsonSchema) throw new InvalidOptionError("jsonSchema", "unset when toolChoice forces a tool call", "a schema");
  if (resolved.stop.length > 0) throw new InvalidOptionError("stop", "no stop strings when toolChoice forces a tool call", resolved.stop);
  const constraint = toolCallConstraint(tools, format) as CompiledJsonSchema;
  if (resolved.maxTokens < constraint.minTokens) {
    throw new InvalidOptionError("maxTokens", `at least ${constraint.minTokens} when toolChoice forces a call (its shortest form)`, resolved.maxTokens);
  }
  return constraint;
}

/** A chat answer: tool calls when the text holds them (and tools were offered), else content. */
function chatResult(result: GenerateResult, tools: ToolSetup | undefined, format: ToolCallFormat | undefined): ChatResult {
  const parsed = tools && format && result.finishReason !== "abort" ? parseToolCalls(result.text, format, tools.tools) : undefined;
  if (!parsed) return { ...result, message: { role: "assistant", content: result.text } };
  return { ...result, finishReason: "toolCalls", message: { role: "assistant", content: parsed.content || null, toolCalls: parsed.calls } };
}

/** An engine that reported no logprobs for a token it was asked about: a bug, never a made-up number. */
function missingLogprob(backend: BackendName, id: number): never {
  const message = `the ${backend} engine reported no logprobs for generated token ${id}`;
  throw backend === "mlx" ? new MlxError(message) : new GgufError(message);
}
