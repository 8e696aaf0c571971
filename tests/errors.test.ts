/**
 * One class per error code (lib/errors.ts ERROR_CLASSES), the native codes mapped through one
 * table (errorFromNative), every native error carrying a code, and the server's answer per code.
 * The backends' own errors (missing model, model without weights, second load, unload mid-request)
 * are checked on both backends by the contract suite (tests/contract/backend.contract.ts).
 */
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  AdapterError, AlreadyLoadedError, BackendUnavailableError, BusyError, ChatTemplateError, DownloadError, ERROR_CLASSES, errorFromNative,
  GgufError, HubAccessError, InvalidOptionError, MlxError, MlxNodeError, ModelConfigError, ModelFormatError, ModelNotFoundError,
  NotLoadedError, TokenizerError, UnloadedError, UnsupportedArchitectureError, type MlxNodeErrorCode,
} from "../lib/errors.js";
import { nativeStatus } from "../lib/native.js";
import { errorPayload } from "../lib/server/server.js";
import { mlxAvailable, mlxSkipReason } from "./support/mlx.js";

const MODEL = fileURLToPath(new URL("../../shared/models/stories260K/hf-f32", import.meta.url));

/** One error of every code, made as the library makes it. */
const samples: Record<MlxNodeErrorCode, MlxNodeError> = {
  INVALID_OPTION: new InvalidOptionError("topP", "a number in (0, 1]", 2),
  MODEL_NOT_FOUND: new ModelNotFoundError("/nowhere"),
  BAD_WEIGHTS: new ModelFormatError("bad weights"),
  BAD_ADAPTER: new AdapterError("bad adapter"),
  BAD_CONFIG: new ModelConfigError("config.json: hidden_size must be an integer"),
  UNSUPPORTED_ARCHITECTURE: new UnsupportedArchitectureError("llamx"),
  BACKEND_UNAVAILABLE: new BackendUnavailableError("mlx", "not built"),
  NOT_LOADED: new NotLoadedError("generate"),
  ALREADY_LOADED: new AlreadyLoadedError("/a"),
  BUSY: new BusyError(4),
  UNLOADED: new UnloadedError(),
  TOKENIZER_ERROR: new TokenizerError("bad tokenizer"),
  CHAT_TEMPLATE_ERROR: new ChatTemplateError("no template"),
  MLX_ERROR: new MlxError("mlx failed"),
  GGUF_ERROR: new GgufError("llama.cpp failed"),
  HUB_ACCESS_DENIED: new HubAccessError("a/b", 401, "denied"),
  DOWNLOAD_FAILED: new DownloadError("network"),
};
const codes = Object.keys(ERROR_CLASSES) as MlxNodeErrorCode[];

describe("error classes", () => {
  it("has one distinct class per code, and each error is an instance of its code's class only", () => {
    expect(new Set(Object.values(ERROR_CLASSES)).size).toBe(codes.length);
    for (const code of codes) {
      const error = samples[code];
      expect(error.code, code).toBe(code);
      expect(error.name, code).toBe(ERROR_CLASSES[code].name);
      expect(error, code).toBeInstanceOf(MlxNodeError);
      for (const other of codes) {
        // ModelConfigError is a kind of ModelFormatError (a bad config.json is a bad model); nothing else nests.
        const nested = code === "BAD_CONFIG" && other === "BAD_WEIGHTS";
        expect(error instanceof ERROR_CLASSES[other], `${code} instanceof ${ERROR_CLASSES[other].name}`).toBe(other === code || nested);
      }
    }
  });

  it("maps every native code to its class, keeping the option of INVALID_OPTION and the path of MODEL_NOT_FOUND", () => {
    const native = ["INVALID_OPTION", "MODEL_NOT_FOUND", "BAD_WEIGHTS", "BAD_CONFIG", "BAD_ADAPTER", "UNSUPPORTED_ARCHITECTURE", "UNLOADED", "MLX_ERROR"] as const;
    for (const code of native) {
      const error = errorFromNative(code, "native message", { path: "/models/x" });
      expect(error, code).toBeInstanceOf(ERROR_CLASSES[code]);
      expect(error.code, code).toBe(code);
    }
    expect(errorFromNative("MODEL_NOT_FOUND", "no weights in /models/x", { path: "/models/x" })).toMatchObject({ path: "/models/x", detail: "no weights in /models/x" });
    const option = errorFromNative("INVALID_OPTION", "Invalid option", { option: "minP", expected: "a number in [0, 1]", got: 2 });
    expect(option).toMatchObject({ option: "minP", message: 'Invalid option "minP": expected a number in [0, 1], got 2' });
    expect(errorFromNative("SOMETHING_NEW", "from a newer addon")).toBeInstanceOf(MlxError);
  });

  it("answers every code over HTTP from one table: 400 for the caller's mistakes, 503 while unavailable, else 500", () => {
    const expected: Partial<Record<MlxNodeErrorCode, [number, string, string | null]>> = {
      INVALID_OPTION: [400, "invalid_value", "top_p"],
      CHAT_TEMPLATE_ERROR: [400, "chat_template_error", "messages"],
      BUSY: [503, "server_busy", null],
      UNLOADED: [503, "model_unloaded", null],
      NOT_LOADED: [503, "model_unloaded", null],
    };
    for (const code of codes) {
      const { status, payload } = errorPayload(samples[code]);
      expect([status, payload.error.code, payload.error.param], code).toEqual(expected[code] ?? [500, code.toLowerCase(), null]);
      expect(payload.error.message).toBe(samples[code].message);
    }
  });
});

describe.skipIf(!mlxAvailable)("native errors carry a code", () => {
  if (!mlxAvailable) console.warn(`[mlx-node] native error checks skipped: ${mlxSkipReason}`);

  it("a call on an unloaded native model is UNLOADED (UnloadedError), a malformed argument INVALID_OPTION", async () => {
    const status = nativeStatus();
    if (!status.available) throw new Error(status.reason);
    const model = await status.addon.loadModel(MODEL, 0, "auto", undefined, 0);
    const thrown = (call: () => unknown) => {
      try {
        call();
      } catch (error) {
        return error as Error & { code?: string };
      }
      throw new Error("did not throw");
    };
    const bad = thrown(() => model.generate([1, 2] as unknown as Int32Array, {} as never, () => undefined));
    expect(bad).toBeInstanceOf(TypeError);
    expect(bad.code).toBe("INVALID_OPTION");
    await model.unload();
    const unloaded = thrown(() => model.generate(Int32Array.from([1]), {} as never, () => undefined));
    expect(unloaded.code).toBe("UNLOADED");
    expect(errorFromNative(unloaded.code!, unloaded.message)).toBeInstanceOf(UnloadedError);
    expect(thrown(() => model.logits(Int32Array.from([1])))).toMatchObject({ code: "UNLOADED" });
  });
});
