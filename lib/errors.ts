/**
 * Typed errors thrown by mlx-node. Every error carries a stable `code` so callers can branch
 * without parsing messages; native failures arrive as a code plus message and are mapped here.
 */

/** Stable machine-readable error codes. */
export type MlxNodeErrorCode =
  | "INVALID_OPTION"
  | "MODEL_NOT_FOUND"
  | "BAD_WEIGHTS"
  | "BAD_ADAPTER"
  | "BAD_CONFIG"
  | "UNSUPPORTED_ARCHITECTURE"
  | "BACKEND_UNAVAILABLE"
  | "NOT_LOADED"
  | "ALREADY_LOADED"
  | "BUSY"
  | "UNLOADED"
  | "TOKENIZER_ERROR"
  | "CHAT_TEMPLATE_ERROR"
  | "MLX_ERROR"
  | "GGUF_ERROR"
  | "HUB_ACCESS_DENIED"
  | "DOWNLOAD_FAILED";

/** Base class of every error this package throws. */
export class MlxNodeError extends Error {
  readonly code: MlxNodeErrorCode;
  constructor(code: MlxNodeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * An error whose class fixes its code (the class's static `code`): a message, and optionally the
 * error that caused it.
 */
export abstract class CodedError extends MlxNodeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super((new.target as unknown as { code: MlxNodeErrorCode }).code, message, options);
  }
}

/** An option or argument has the wrong type or is out of range. Thrown before any work starts. */
export class InvalidOptionError extends MlxNodeError {
  /** Name of the offending option, e.g. `temperature`. */
  readonly option: string;
  /** @param options.message replaces the "expected ..., got ..." message when the problem needs more words. */
  constructor(option: string, expected: string, got: unknown, options?: { message?: string; cause?: unknown }) {
    super("INVALID_OPTION", options?.message ?? `Invalid option "${option}": expected ${expected}, got ${describe(got)}`, options);
    this.option = option;
  }
}

/** The model path does not exist or lacks a required file. */
export class ModelNotFoundError extends MlxNodeError {
  readonly path: string;
  /** What is missing or what to do, when known. */
  readonly detail?: string;
  constructor(path: string, detail?: string) {
    super("MODEL_NOT_FOUND", detail ? `Model not found: ${path} (${detail})` : `Model not found: ${path}`);
    this.path = path;
    if (detail !== undefined) this.detail = detail;
  }
}

/** A model file exists but cannot be read: corrupt header, missing tensor, wrong shape. */
export class ModelFormatError extends MlxNodeError {
  constructor(message: string, options?: { cause?: unknown; code?: "BAD_WEIGHTS" | "BAD_CONFIG" }) {
    super(options?.code ?? "BAD_WEIGHTS", message, options);
  }
}

/**
 * A model directory's `config.json` has a key that is missing, of the wrong type or out of range
 * (code `BAD_CONFIG`); the message names the file and the key. A kind of {@link ModelFormatError}.
 */
export class ModelConfigError extends ModelFormatError {
  constructor(message: string) {
    super(message, { code: "BAD_CONFIG" });
  }
}

/**
 * An adapter cannot be applied: its directory or files are missing, its type is unknown, or its
 * tensors do not fit the base model (the message names the module). The base model is unchanged
 * and stays usable.
 */
export class AdapterError extends CodedError {
  static readonly code: MlxNodeErrorCode = "BAD_ADAPTER";
}

/** The model's architecture (`model_type`) is not one this backend implements. */
export class UnsupportedArchitectureError extends CodedError {
  static readonly code: MlxNodeErrorCode = "UNSUPPORTED_ARCHITECTURE";
}

/** The requested backend cannot run on this machine; `reason` says why. */
export class BackendUnavailableError extends MlxNodeError {
  readonly backend: string;
  readonly reason: string;
  constructor(backend: string, reason: string) {
    super("BACKEND_UNAVAILABLE", `The ${backend} backend is unavailable: ${reason}`);
    this.backend = backend;
    this.reason = reason;
  }
}

/** A call that needs a loaded model was made before `load()` or after `unload()`. */
export class NotLoadedError extends MlxNodeError {
  constructor(what: string) {
    super("NOT_LOADED", `No model is loaded: call load() before ${what}()`);
  }
}

/** `load()` was called while a model is loaded or loading: `unload()` first. */
export class AlreadyLoadedError extends MlxNodeError {
  constructor(current: string) {
    super("ALREADY_LOADED", `A model is already loaded or loading (${current}): call unload() first`);
  }
}

/** The request queue is full. */
export class BusyError extends MlxNodeError {
  constructor(limit: number) {
    super("BUSY", `The model is busy: ${limit} requests are already queued (raise maxQueuedRequests to allow more)`);
  }
}

/** A request was running or queued when `unload()` was called. */
export class UnloadedError extends MlxNodeError {
  constructor() {
    super("UNLOADED", "The model was unloaded while this request was running or queued");
  }
}

/** An error raised inside MLX (mlx-c) or the native engine. */
export class MlxError extends CodedError {
  static readonly code: MlxNodeErrorCode = "MLX_ERROR";
}

/** An error raised inside llama.cpp (node-llama-cpp): a context that cannot be created, a failed evaluation. */
export class GgufError extends CodedError {
  static readonly code: MlxNodeErrorCode = "GGUF_ERROR";
}

/** A tokenizer cannot be read or used: a missing or malformed `tokenizer.json`, an unsupported kind, a failed encode or decode. */
export class TokenizerError extends CodedError {
  static readonly code: MlxNodeErrorCode = "TOKENIZER_ERROR";
}

/** The chat template could not be used: missing, or it failed to render. */
export class ChatTemplateError extends CodedError {
  static readonly code: MlxNodeErrorCode = "CHAT_TEMPLATE_ERROR";
}

/** The Hugging Face Hub refused access to a repository (private or gated): `HF_TOKEN` is missing or lacks access. */
export class HubAccessError extends MlxNodeError {
  readonly repo: string;
  readonly status: number;
  constructor(repo: string, status: number, message: string) {
    super("HUB_ACCESS_DENIED", message);
    this.repo = repo;
    this.status = status;
  }
}

/** A model download failed: the network, the server, or a file that does not match the hub's checksum. */
export class DownloadError extends CodedError {
  static readonly code: MlxNodeErrorCode = "DOWNLOAD_FAILED";
}

/** The class of every code: `error instanceof ERROR_CLASSES[error.code]` holds for every error this package throws. */
export const ERROR_CLASSES = {
  INVALID_OPTION: InvalidOptionError,
  MODEL_NOT_FOUND: ModelNotFoundError,
  BAD_WEIGHTS: ModelFormatError,
  BAD_ADAPTER: AdapterError,
  BAD_CONFIG: ModelConfigError,
  UNSUPPORTED_ARCHITECTURE: UnsupportedArchitectureError,
  BACKEND_UNAVAILABLE: BackendUnavailableError,
  NOT_LOADED: NotLoadedError,
  ALREADY_LOADED: AlreadyLoadedError,
  BUSY: BusyError,
  UNLOADED: UnloadedError,
  TOKENIZER_ERROR: TokenizerError,
  CHAT_TEMPLATE_ERROR: ChatTemplateError,
  MLX_ERROR: MlxError,
  GGUF_ERROR: GgufError,
  HUB_ACCESS_DENIED: HubAccessError,
  DOWNLOAD_FAILED: DownloadError,
} as const satisfies { [C in MlxNodeErrorCode]: abstract new (...args: never[]) => MlxNodeError };

/** What a native error carries: a stable code (native/errors.h) and, for `INVALID_OPTION`, the option's name, expectation and value. */
export interface NativeErrorFields {
  code?: string;
  option?: string;
  expected?: string;
  got?: unknown;
  /** The model path the failed call was about (for `MODEL_NOT_FOUND`), supplied by the caller. */
  path?: string;
}

/** The codes the native addon raises, and how each becomes its class (ERROR_CLASSES). */
const FROM_NATIVE = {
  INVALID_OPTION: (message, e) => new InvalidOptionError(e.option ?? "options", e.expected ?? "a valid value", e.got, e.expected === undefined ? { message } : undefined),
  MODEL_NOT_FOUND: (message, e) => new ModelNotFoundError(e.path ?? "the model directory", message),
  BAD_WEIGHTS: (message) => new ModelFormatError(message),
  BAD_CONFIG: (message) => new ModelConfigError(message),
  BAD_ADAPTER: (message) => new AdapterError(message),
  UNSUPPORTED_ARCHITECTURE: (message) => new UnsupportedArchitectureError(message),
  UNLOADED: () => new UnloadedError(),
  MLX_ERROR: (message) => new MlxError(message),
} satisfies { [C in MlxNodeErrorCode]?: (message: string, fields: NativeErrorFields) => InstanceType<(typeof ERROR_CLASSES)[C]> };

/**
 * Turns a `{ code, message }` from the native addon into the matching typed error (an unknown
 * code, which a newer addon could send, is an MlxError).
 */
export function errorFromNative(code: string, message: string, fields: NativeErrorFields = {}): MlxNodeError {
  const make = (FROM_NATIVE as Record<string, (message: string, fields: NativeErrorFields) => MlxNodeError>)[code] ?? FROM_NATIVE.MLX_ERROR;
  return make(message, fields);
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean" || value == null) return String(value);
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}
