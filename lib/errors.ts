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

/** An option or argument has the wrong type or is out of range. Thrown before any work starts. */
export class InvalidOptionError extends MlxNodeError {
  /** Name of the offending option, e.g. `temperature`. */
  readonly option: string;
  constructor(option: string, expected: string, got: unknown) {
    super("INVALID_OPTION", `Invalid option "${option}": expected ${expected}, got ${describe(got)}`);
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
export class AdapterError extends MlxNodeError {
  constructor(message: string) {
    super("BAD_ADAPTER", message);
  }
}

/** The model's architecture (`model_type`) is not one this backend implements. */
export class UnsupportedArchitectureError extends MlxNodeError {
  constructor(message: string) {
    super("UNSUPPORTED_ARCHITECTURE", message);
  }
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
export class MlxError extends MlxNodeError {
  constructor(message: string) {
    super("MLX_ERROR", message);
  }
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
export class DownloadError extends MlxNodeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("DOWNLOAD_FAILED", message, options);
  }
}

/** What the native addon rejects with: a message, a stable code, and for `INVALID_OPTION` the option's name, expectation and value. */
export interface NativeErrorFields {
  code?: string;
  message: string;
  option?: string;
  expected?: string;
  got?: unknown;
}

/** Turns a `{ code, message }` from the native addon into the matching typed error. */
export function errorFromNative(code: string, message: string, fields: Partial<NativeErrorFields> = {}): MlxNodeError {
  if (code === "INVALID_OPTION" && fields.option !== undefined && fields.expected !== undefined) {
    return new InvalidOptionError(fields.option, fields.expected, fields.got);
  }
  switch (code) {
    case "MODEL_NOT_FOUND":
      return new MlxNodeError("MODEL_NOT_FOUND", message);
    case "BAD_WEIGHTS":
      return new ModelFormatError(message);
    case "BAD_CONFIG":
      return new ModelConfigError(message);
    case "UNSUPPORTED_ARCHITECTURE":
      return new UnsupportedArchitectureError(message);
    case "BAD_ADAPTER":
      return new AdapterError(message);
    case "INVALID_OPTION":
      return new MlxNodeError("INVALID_OPTION", message);
    case "UNLOADED":
      return new UnloadedError();
    default:
      return new MlxError(message);
  }
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean" || value == null) return String(value);
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}
