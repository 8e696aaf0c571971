/**
 * The InferenceBackend contract: the one interface that every engine (MLX, GGUF) implements.
 * Options and results are plain objects so they serialise and document well.
 */
import type { JsonSchema } from "./json-schema/validate.js";
import type { ChatMessage, ChatOptions, ChatResult, ChatStream } from "./chat.js";
import type { GeneratedTokenLogprob } from "./logprobs.js";
import type { SamplingOptions } from "./sampling.js";

export type { JsonSchema, GeneratedTokenLogprob };

/** Options for {@link InferenceBackend.load}. */
export interface LoadOptions {
  /**
   * Maximum number of tokens (prompt + generated) the model keeps in its KV cache.
   * Defaults to the model's trained context length, capped at 4096.
   */
  contextSize?: number;
  /**
   * CPU threads used for evaluation. Defaults to a value that is fast on this machine:
   * 1 for tiny models, otherwise the number of physical cores (never more than the cores available).
   */
  threads?: number;
  /**
   * A fine-tuned adapter applied at load. MLX: an `mlx_lm.lora` adapter directory
   * (`adapter_config.json` and `adapters.safetensors`, LoRA or DoRA), used by every request that
   * names no other adapter. GGUF: a llama.cpp LoRA adapter file (`.gguf`). A bad adapter is an
   * `AdapterError` naming the module. Defaults to none.
   */
  adapter?: string;
  /**
   * MLX: merge `adapter` into the weights at load, so decoding costs what the base model costs.
   * Exact for dense weights; quantized weights are dequantized, updated and quantized again (as
   * `mlx_lm.fuse` does), which adds their rounding error to the update. Defaults to false.
   */
  fuse?: boolean;
  /**
   * Bytes of KV state kept for recent sequences, so that a request starts from the one sharing its
   * longest prefix (interleaved conversations each evaluate only their new tokens; see
   * `usage.evaluatedPromptTokens`). Least recently used sequences are dropped first; `0` keeps none.
   * Defaults to a sixteenth of the machine's memory, at most 1 GiB.
   */
  promptCacheBytes?: number;
  /**
   * Requests generated at the same time, decoded together (continuous batching): each step
   * evaluates one token of every running request in one batch, so they share the cost of reading
   * the weights; more requests wait in the queue. Every request returns the tokens it returns
   * alone. An integer in [1, 64]. Defaults to 8 on MLX (every family batches, sliding windows, recurrent
   * states and KV-shared layers included) and to 1 on GGUF (each llama.cpp
   * sequence's KV cells are allocated at load, `sequenceInfo`; on a 2-core CPU 8 concurrent gave
   * 1.3–1.5× one stream, see the README). `serve --parallel N` sets it.
   */
  maxBatch?: number;
  /** Aborts a load in progress. */
  signal?: AbortSignal;
}

/** What {@link InferenceBackend.loadAdapter} read. */
export interface AdapterInfo {
  /** `lora` or `dora` (mlx-lm's `fine_tune_type`). */
  type: "lora" | "dora";
  rank: number;
  scale: number;
  /** Linear modules of the base model the adapter changes. */
  modules: number;
}

/**
 * Sampling and stopping options shared by `generate`, `generateStream` and chat. The sampling
 * parameters (`maxTokens`, `temperature`, `topP`, `topK`, `minP`, `repetitionPenalty`,
 * `repetitionContextSize`, `seed`) and their ranges and defaults are defined in lib/sampling.ts.
 */
export interface GenerateOptions extends SamplingOptions {
  /** Strings that end generation; the stop string itself is not included in the output. Defaults to none. */
  stop?: string | readonly string[];
  /** Keep generating past end-of-generation tokens until `maxTokens` (for benchmarks). Defaults to false. */
  ignoreEos?: boolean;
  /** Aborting ends generation promptly; the result so far is returned with `finishReason: "abort"`. */
  signal?: AbortSignal;
  /**
   * Guaranteed JSON: every token is chosen so that the text stays a prefix of a document valid
   * against this schema, and the text always parses and validates when generation ends, also
   * when `maxTokens` runs out (closing brackets are forced in time). Generation stops as soon as
   * the document is complete: `finishReason` is `"stop"` when the model completed it, `"length"`
   * when the token budget forced it closed. (An abort still ends generation at once, with the
   * text so far.)
   *
   * Supported subset: `type` (object, array, string, number, integer, boolean), `enum` (primitive
   * values), `properties`, `required`, `items`, nested to any depth; `additionalProperties` must be
   * a boolean and only declared properties are generated, in declared order. Other keywords are
   * rejected with an InvalidOptionError naming them. Output is compact JSON (one optional space
   * at the start and after `:` and `,`); numbers have at most 15 integer and 15 fraction digits
   * and a 2-digit exponent; a schema without `type` or `enum` (any value) is rejected.
   *
   * `maxTokens` must be at least the byte length of the shortest valid document (`{"a":0}` needs 7;
   * see `minimumMaxTokens`), and so must the room the context leaves after the prompt; less is an
   * InvalidOptionError before any work. Stop strings and `ignoreEos: true` are rejected with it.
   * Defaults to none (free text).
   */
  jsonSchema?: JsonSchema;
  /**
   * The adapter this request runs with: a name given to {@link InferenceBackend.loadAdapter}.
   * Requests with different adapters (or none) can be queued together; each sees only its own.
   * An unknown name is an InvalidOptionError. Defaults to the adapter given at load, else none.
   */
  adapter?: string;
  /**
   * Report each generated token's log-probability: `logprobs` of the chunks and of the result, one
   * entry per entry of their `tokens`. They are of the distribution the token was drawn from: the
   * log-softmax of the model's logits after `repetitionPenalty` and the `jsonSchema`/tool-call mask,
   * and, when `temperature` > 0, after the `topK`/`topP`/`minP` filters and divided by the
   * temperature (at temperature 0 no temperature is applied). With the default options that is the
   * model's own log-softmax, as OpenAI reports. A token the constraint forced has logprob 0.
   * Defaults to false.
   */
  logprobs?: boolean;
  /**
   * With `logprobs: true`, also report the `topLogprobs` most likely tokens at each position
   * (`topLogprobs` of each entry), an integer in [0, 20]. On GGUF any value above 0 makes
   * node-llama-cpp build the whole vocabulary's probabilities per token, which slows decoding of
   * large vocabularies (measured: about half the speed on a 49k vocabulary). Defaults to 0.
   */
  topLogprobs?: number;
}

/**
 * Why generation ended. `stop`: end-of-generation token or stop string; `length`: `maxTokens` or
 * the context is full; `abort`: the signal fired; `toolCalls` (chat with tools only): the answer is tool calls.
 */
export type FinishReason = "stop" | "length" | "abort" | "toolCalls";

/** A piece of streamed output. */
export interface GenerateChunk {
  /** New text since the previous chunk (never splits a UTF-8 character). */
  text: string;
  /** Token ids generated since the previous chunk. */
  tokens: number[];
  /** With the `logprobs` option: one entry per entry of `tokens`. */
  logprobs?: GeneratedTokenLogprob[];
}

/** Token counts of one request. */
export interface Usage {
  /** Tokens in the prompt. */
  promptTokens: number;
  /** Prompt tokens actually evaluated (fewer when a cached prefix was reused). */
  evaluatedPromptTokens: number;
  /** Tokens generated. */
  completionTokens: number;
  totalTokens: number;
}

/** Speed of one request, measured around the engine. */
export interface Timings {
  /** Milliseconds from the call to the first generated token. */
  timeToFirstTokenMs: number;
  /** Evaluated prompt tokens per second during prefill. */
  promptTokensPerSecond: number;
  /** Generated tokens per second after the first token. */
  generatedTokensPerSecond: number;
  /** Milliseconds for the whole request. */
  totalMs: number;
}

/** The outcome of a whole generation. */
export interface GenerateResult {
  text: string;
  tokens: number[];
  /** With the `logprobs` option: one entry per entry of `tokens`. */
  logprobs?: GeneratedTokenLogprob[];
  finishReason: FinishReason;
  /** The stop string that ended generation, when `finishReason` is `stop` because of one. */
  stopSequence?: string;
  usage: Usage;
  timings: Timings;
}

/**
 * A streamed generation: iterate it for chunks; `result` settles with the full outcome when it ends.
 * Nothing runs until it is iterated or `result` is awaited.
 */
export interface GenerationStream extends AsyncIterable<GenerateChunk> {
  /**
   * The final result; settles after the last chunk, or rejects with the error that ended the stream.
   * Leaving the iteration early (`break`, `return()`, a throw) cancels the generation and resolves
   * the partial result with `finishReason: "abort"`; awaiting it without iterating runs the
   * generation to its end (the chunks are kept for a later iteration).
   */
  readonly result: Promise<GenerateResult>;
}

/** A prompt: text, or token ids that are evaluated as they are. */
export type Prompt = string | readonly number[];

/** Options for {@link InferenceBackend.tokenize}. */
export interface TokenizeOptions {
  /** Add the model's special tokens (such as BOS) as its tokenizer config says. Defaults to false. */
  addSpecialTokens?: boolean;
}

/** Names of the available backends. */
export type BackendName = "mlx" | "gguf";

/** The contract every backend implements. */
export interface InferenceBackend {
  /** Which engine this is. */
  readonly name: BackendName;
  /** Loads a model; throws if one is already loaded. */
  load(modelPath: string, options?: LoadOptions): Promise<void>;
  /**
   * Keeps an adapter beside the base model, unfused, under `name`, for requests that pass
   * `{ adapter: name }`. @throws AdapterError (the model is unchanged), InvalidOptionError (name taken)
   */
  loadAdapter(name: string, path: string): Promise<AdapterInfo>;
  /** Frees the adapter `name`. @throws InvalidOptionError when none has that name */
  unloadAdapter(name: string): Promise<void>;
  /** The names of the adapters loaded with `loadAdapter`. */
  readonly adapterNames: readonly string[];
  /** Frees the model. Idempotent; running and queued requests end with an `UnloadedError`. */
  unload(): Promise<void>;
  /** True between a successful `load` and `unload`. */
  readonly isLoaded: boolean;
  /** The context size in tokens of the loaded model (0 when none is loaded). */
  readonly contextSize: number;
  /** CPU threads used for evaluation (0 when none is loaded). */
  readonly threadCount: number;
  /** Generates a whole completion of `prompt`. */
  generate(prompt: Prompt, options?: GenerateOptions): Promise<GenerateResult>;
  /** Streams a completion of `prompt` as it is generated. */
  generateStream(prompt: Prompt, options?: GenerateOptions): GenerationStream;
  /**
   * Answers a conversation rendered with the model's chat template (or `options.chatTemplate`).
   * With `tools`, the answer may be tool calls (`message.toolCalls`, finish reason `toolCalls`).
   * @throws ChatTemplateError, InvalidOptionError, NotLoadedError
   */
  chat(messages: ChatMessage[], options?: ChatOptions): Promise<ChatResult>;
  /** Streams the answer to a conversation; see {@link chat}. Its `result` is the {@link ChatResult}. */
  chatStream(messages: ChatMessage[], options?: ChatOptions): ChatStream;
  /**
   * Text to token ids, with the model's own tokenizer. Text that spells a special token (such as
   * `<|im_start|>`) is that special token, so a rendered chat template tokenizes as the model expects.
   */
  tokenize(text: string, options?: TokenizeOptions): number[];
  /**
   * Token ids to text. Special tokens (BOS, EOS, chat-turn markers) are rendered as their text,
   * as node-llama-cpp's `detokenize(tokens, true)` and transformers' `decode(ids)` (without
   * `skip_special_tokens`) do, so `detokenize(tokenize(text))` gives `text` back also when it spells
   * special tokens. A generation's streamed text never includes the end-of-generation token that ends it.
   */
  detokenize(tokens: readonly number[]): string;
}
