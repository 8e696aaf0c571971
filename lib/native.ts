/**
 * The typed binding of the native addon and its one loader. The addon is found by node-gyp-build:
 * a local build in `build/Release` first, else a prebuilt binary in `prebuilds/<platform>-<arch>/`. Loading never
 * throws: a missing or broken binary, or a build without mlx-c, is recorded as the reason the MLX
 * backend is unavailable, and the GGUF backend still works.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { MlxGenerationStats, MlxMemory, MlxModelInfo, MlxRuntimeInfo } from "./backends/mlx.js";
import type { SamplingParameterName, SamplingValues } from "./sampling.js";

/** Per-request numbers from the native generation loop: the public {@link MlxGenerationStats}, with the engine's own word for a cancel. */
export type NativeGenerationStats = Omit<MlxGenerationStats, "finish"> & { finish: "stop" | "length" | "cancelled" };

/** Sampling parameters as the native engine takes them: lib/sampling.ts's, plus the engine's own. */
export interface NativeSamplingParams extends SamplingValues {
  stopTokenIds: Int32Array;
  /** Sample every token among the ids of a mask sent with {@link NativeGenerateHandle.provideMask}. Defaults to false. */
  constrained?: boolean;
  /** The name of a loaded adapter. Defaults to the adapter given at load, else none. */
  adapter?: string;
  /**
   * `n` in [0, 20]: report each token's log-probability and the `n` most likely alternatives of the
   * distribution it was drawn from (see `onEvent`). Defaults to none.
   */
  logprobs?: number;
}

/** Control of one running native generation. */
export interface NativeGenerateHandle {
  /** Asks the engine to stop (also wakes it when it waits for a mask). */
  cancel(): void;
  /**
   * Constrained decoding (`params.constrained`): the mask of generated token `step` (0-based),
   * one bit per token of the model's vocabulary (bit `i % 32` of word `i >> 5` allows token
   * `i`; `ceil(vocabSize / 32)` words, copied). The engine samples token `step` only once its
   * mask is here, and waits for it after starting that step's forward pass, so a mask computed
   * from token `step - 1` as soon as it arrives overlaps the pass. Masks must come in step
   * order, starting with step 0. `null` ends generation before token `step` (finish "stop").
   * Throws an INVALID_OPTION error for a malformed mask.
   */
  provideMask(step: number, mask: Uint32Array | null): void;
}

/** The end of a native generation: an error (with `code`) or the stats. */
export interface NativeDone {
  error?: Error & { code?: string };
  stats?: NativeGenerationStats;
}

export interface NativeModel {
  info(): MlxModelInfo;
  /**
   * Starts generating; `onEvent` gets token batches, then `(null, done)` once. With
   * `params.logprobs = n`, each batch also carries `logprobs`: per token, `1 + 2n` floats
   * `[logprob, n top logprobs (descending), their ids]`.
   */
  generate(
    promptIds: Int32Array,
    params: NativeSamplingParams,
    onEvent: (tokens: Int32Array | null, done?: NativeDone, logprobs?: Float32Array) => void,
  ): NativeGenerateHandle;
  /** Logits of every position, from an empty cache: `ids.length * vocabSize` floats. */
  logits(ids: Int32Array, adapter?: string): Promise<Float32Array>;
  /** Test hook: each prompt's last-token logits from one batched step over left-padded rows ([prompts.length * vocab]). */
  batchLogits(prompts: Int32Array[]): Promise<Float32Array>;
  /** Keeps an mlx_lm.lora adapter directory under `name` (errors carry code BAD_ADAPTER / INVALID_OPTION). */
  loadAdapter(name: string, dir: string): Promise<{ type: "lora" | "dora"; rank: number; scale: number; modules: number }>;
  unloadAdapter(name: string): Promise<void>;
  unload(): Promise<void>;
}

/** The addon's exports when it was built with mlx-c. */
export interface NativeMlx {
  mlx: true;
  /** `computeDtype`: "auto" | "float32" | "float16" | "bfloat16" (see MlxLoadOptions). */
  /**
   * `adapter`: an mlx_lm.lora adapter directory applied at load, merged into the weights with `fuse`;
   * `promptCacheBytes`: KV bytes kept for recent sequences (0: none).
   */
  loadModel(dir: string, contextSize: number, computeDtype?: string, adapter?: { path: string; fuse: boolean }, promptCacheBytes?: number, maxBatch?: number): Promise<NativeModel>;
  runtimeInfo(): Promise<MlxRuntimeInfo>;
  memory(): Promise<MlxMemory>;
  setLimits(limits: { memoryLimitBytes?: number; cacheLimitBytes?: number; resetPeak?: boolean }): Promise<void>;
  /** Stops the engine thread at once (process exit). */
  shutdown(): void;
  /** The ranges the native reader of `generate`'s params checks (they must be lib/sampling.ts's; see tests/sampling.test.ts). */
  samplingRanges(): Record<SamplingParameterName, { integer: boolean; min: number; minExclusive: boolean; max: number }>;
}

/** Without MLX: `mlxBuilt` when the engine is compiled in but cannot start (MLX_NODE_BLAS not loadable). */
type NativeAddon = NativeMlx | { mlx: false; mlxUnavailableReason: string; mlxBuilt?: boolean };

/** Outcome of loading the addon: the MLX engine, or why it is unavailable. */
export type NativeStatus = { available: true; addon: NativeMlx } | { available: false; reason: string };

let status: NativeStatus | undefined;

/** Said wherever the addon lacks MLX (npm hides install scripts' output, so the install cannot say it). */
const HOW_TO_GET_MLX =
  "for MLX models install mlx-c (macOS: `brew install mlx-c`; Linux: see the README) and run " +
  "`CMAKE_PREFIX_PATH=<mlx-c prefix> npx mlx-node build-native`";

/** The package root: `lib/` in sources and `dist/lib/` when compiled both sit below it. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    try {
      const pkg = createRequire(join(dir, "noop.js"))(join(dir, "package.json")) as { name?: string };
      if (pkg.name === "mlx-node") return dir;
    } catch {
      // Not here; look one level up.
    }
    dir = dirname(dir);
  }
  throw new Error("mlx-node: cannot find the package root");
}

/** Loads the addon once and reports whether the MLX engine is in it. */
export function nativeStatus(): NativeStatus {
  status ??= loadNative();
  return status;
}

function loadNative(): NativeStatus {
  const require = createRequire(import.meta.url);
  let addon: NativeAddon;
  try {
    // node-gyp-build takes MLX_NODE_PREBUILD=<package root> instead, when set.
    const root = packageRoot();
    const load = require("node-gyp-build") as (dir: string) => unknown;
    addon = load(root) as NativeAddon;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (/No native build was found/.test(message)) {
      return {
        available: false,
        reason:
          `no native binary for ${process.platform}-${process.arch} (no prebuild, and npm did not run the install ` +
          "script that builds one): build it with `npx mlx-node build-native` (needs CMake and a C++17 compiler; mlx-c for MLX)",
      };
    }
    return { available: false, reason: `the native addon failed to load: ${message}` };
  }
  if (!addon.mlx) return { available: false, reason: addon.mlxBuilt ? addon.mlxUnavailableReason : `${addon.mlxUnavailableReason}; ${HOW_TO_GET_MLX}` };
  // process.exit() mid-generation would otherwise run MLX's static destructors under a live engine thread.
  const mlx = addon;
  process.once("exit", () => mlx.shutdown());
  return { available: true, addon };
}
