/**
 * Validation of user-supplied options. Every public call validates first, so bad input fails
 * with an InvalidOptionError naming the option before any work or native call happens.
 */
import { totalmem } from "node:os";
import type { GenerateOptions, LoadOptions } from "./backend.js";
import { InvalidOptionError } from "./errors.js";
import { compileJsonSchema, type CompiledJsonSchema } from "./json-schema/schema.js";
import { MAX_TOP_LOGPROBS } from "./logprobs.js";
import { resolveSampling, SAMPLING_PARAMETER_NAMES, type SamplingValues } from "./sampling.js";

/** Generation options with defaults applied; what the backends consume. */
export interface ResolvedGenerateOptions extends SamplingValues {
  stop: string[];
  ignoreEos: boolean;
  signal: AbortSignal | undefined;
  /** The `jsonSchema` option, checked and compiled. */
  jsonSchema: CompiledJsonSchema | undefined;
  adapter: string | undefined;
  /** `logprobs`: undefined when off, else the number of alternatives (`topLogprobs`). */
  logprobs: number | undefined;
}

const GENERATE_KEYS = new Set([...SAMPLING_PARAMETER_NAMES, "stop", "ignoreEos", "signal", "jsonSchema", "adapter", "logprobs", "topLogprobs"]);

/** Applies defaults and checks every generation option; throws InvalidOptionError on the first bad one. */
export function resolveGenerateOptions(options: GenerateOptions = {}, extraKeys: readonly string[] = []): ResolvedGenerateOptions {
  if (typeof options !== "object" || options === null) throw new InvalidOptionError("options", "an object", options);
  rejectUnknownKeys(options, GENERATE_KEYS, extraKeys);
  const o = options;
  const sampling = resolveSampling(o);
  return {
    ...sampling,
    stop: stopStrings(o.stop),
    ignoreEos: booleanOr("ignoreEos", o.ignoreEos, false),
    signal: abortSignal(o.signal),
    jsonSchema: jsonSchemaOption(o, sampling.maxTokens),
    adapter: nonEmptyString("adapter", o.adapter),
    logprobs: logprobsOption(o),
  };
}

/** `logprobs` and `topLogprobs` as the number of alternatives, or undefined when off. */
function logprobsOption(o: GenerateOptions): number | undefined {
  const on = booleanOr("logprobs", o.logprobs, false);
  const top = integerIn("topLogprobs", o.topLogprobs, 0, 0, MAX_TOP_LOGPROBS);
  if (!on && o.topLogprobs !== undefined) throw new InvalidOptionError("topLogprobs", "unset unless logprobs is true", o.topLogprobs);
  return on ? top : undefined;
}

/**
 * Compiles `jsonSchema` and checks what it rules out: `maxTokens` below the shortest valid
 * document, stop strings (JSON mode ends when the document is complete, and a stop string could
 * cut it short) and `ignoreEos`.
 */
function jsonSchemaOption(o: GenerateOptions, maxTokens: number): CompiledJsonSchema | undefined {
  if (o.jsonSchema === undefined) return undefined;
  const compiled = compileJsonSchema(o.jsonSchema);
  if (maxTokens < compiled.minTokens) {
    throw new InvalidOptionError("maxTokens", `at least ${compiled.minTokens} with this jsonSchema (the length of its shortest valid document)`, maxTokens);
  }
  if (o.stop !== undefined && (typeof o.stop === "string" || (Array.isArray(o.stop) && o.stop.length > 0))) {
    throw new InvalidOptionError("stop", "no stop strings with jsonSchema (generation ends when the JSON document is complete)", o.stop);
  }
  if (o.ignoreEos === true) throw new InvalidOptionError("ignoreEos", "false or unset with jsonSchema", true);
  return compiled;
}

/** Load options with defaults left open for the backend to decide. */
export interface ResolvedLoadOptions {
  contextSize: number | undefined;
  threads: number | undefined;
  /** Bytes of KV state kept for recent sequences (prompt cache); 0 keeps none. */
  promptCacheBytes: number;
  /** Requests decoded together; undefined: the backend's default. */
  maxBatch: number | undefined;
  signal: AbortSignal | undefined;
  adapter: string | undefined;
  fuse: boolean;
}

/**
 * Default `promptCacheBytes`: a sixteenth of the machine's memory, at most 1 GiB. Enough for
 * dozens of conversations of a small model (a 135M llama holds about 18 KiB of float32 KV per
 * token), while a big model's few entries stay a small share of memory.
 */
export function defaultPromptCacheBytes(): number {
  return Math.min(2 ** 30, Math.floor(totalmem() / 16));
}

/** Checks load options; throws InvalidOptionError naming the first bad one. */
export function resolveLoadOptions(options: LoadOptions = {}, extraKeys: readonly string[] = []): ResolvedLoadOptions {
  if (typeof options !== "object" || options === null) throw new InvalidOptionError("options", "an object", options);
  rejectUnknownKeys(options, new Set(["contextSize", "threads", "promptCacheBytes", "maxBatch", "signal", "adapter", "fuse"]), extraKeys);
  const adapter = nonEmptyString("adapter", options.adapter);
  const fuse = booleanOr("fuse", options.fuse, false);
  if (fuse && adapter === undefined) throw new InvalidOptionError("fuse", "false unless an adapter is given", true);
  return {
    adapter,
    fuse,
    contextSize: options.contextSize === undefined ? undefined : integerIn("contextSize", options.contextSize, 0, 16, 1 << 20),
    threads: options.threads === undefined ? undefined : integerIn("threads", options.threads, 0, 1, 1024),
    promptCacheBytes: integerIn("promptCacheBytes", options.promptCacheBytes, defaultPromptCacheBytes(), 0, Number.MAX_SAFE_INTEGER),
    maxBatch: options.maxBatch === undefined ? undefined : integerIn("maxBatch", options.maxBatch, 1, 1, 64),
    signal: abortSignal(options.signal),
  };
}

/** Checks that a model path argument is a non-empty string. */
export function checkModelPath(path: unknown): string {
  if (typeof path !== "string" || path.length === 0) throw new InvalidOptionError("modelPath", "a non-empty string", path);
  return path;
}

/** Checks a token id array. */
export function checkTokenIds(name: string, ids: unknown, vocabSize?: number): number[] {
  if (!Array.isArray(ids) && !ArrayBuffer.isView(ids)) throw new InvalidOptionError(name, "an array of token ids", ids);
  const out = Array.from(ids as ArrayLike<number>);
  for (const id of out) {
    if (!Number.isInteger(id) || id < 0 || (vocabSize !== undefined && id >= vocabSize)) {
      throw new InvalidOptionError(name, vocabSize === undefined ? "non-negative integer token ids" : `token ids in [0, ${vocabSize})`, id);
    }
  }
  return out;
}

function rejectUnknownKeys(options: object, known: Set<string>, extra: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.has(key) && !extra.includes(key)) {
      throw new InvalidOptionError(key, `one of the known options (${[...known, ...extra].join(", ")})`, "an unknown option");
    }
  }
}

function integerIn(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidOptionError(name, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

/** Checks an optional non-empty string option. */
export function nonEmptyString(name: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length === 0) throw new InvalidOptionError(name, "a non-empty string", value);
  return value;
}

function booleanOr(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") throw new InvalidOptionError(name, "a boolean", value);
  return value;
}

function stopStrings(value: unknown): string[] {
  if (value === undefined) return [];
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string" || s.length === 0)) {
    throw new InvalidOptionError("stop", "a non-empty string or an array of non-empty strings", value);
  }
  return [...list];
}

function abortSignal(value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw new InvalidOptionError("signal", "an AbortSignal", value);
  return value;
}
