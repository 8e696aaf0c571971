/**
 * MLX-specific measurements of `npm run bench`: MLX memory around each sample and the engine's
 * own numbers (`MlxBackend.lastGenerationStats`), with the shares derived from them.
 *
 * How native/generate.cpp times one request (engine thread, steady clock):
 * - `graphBuildMs`: time inside `model.forward()` and the sampler, which only *build* MLX graphs
 *   (and count their ops), for every prefill chunk and every decode step.
 * - evaluation (not exported): time blocked in `eval`, `async_eval` or `item()`, i.e. waiting for
 *   MLX to compute. On the CPU backend `async_eval` blocks once ~10 tasks are queued, so part of a
 *   step's compute is counted here too, as evaluation.
 * - `hostMs` = total − graphBuildMs − evaluation − maskWaitMs: everything else on the engine thread
 *   (handing tokens to JS, stop-token checks, cache bookkeeping, the loop itself).
 * - `prefillMs`: request start to the first token read; `decodeMs` = total − prefillMs.
 *
 * Derived here, on the decode request of a sample (its prompt reuses the cached first token, so
 * all but one or two engine steps are decode steps):
 * - outside share = (graphBuildMs + hostMs) / (prefillMs + decodeMs): the share of the engine's
 *   wall time spent outside MLX evaluation (goal ≤ 5%). Decode is pipelined (step n+1 is built
 *   while step n evaluates on MLX's stream thread), so this is an upper bound on what the
 *   host side adds to a token: building overlaps compute whenever compute is the longer.
 * - engine ms/token = decodeMs / (generatedTokens − 1); caller ms/token is the same interval as
 *   the `generateStream` caller sees it (first chunk to last chunk), and JS overhead =
 *   caller / engine − 1 (thread-safe-function hop, channel, detokenizer, stop matcher).
 * - ops/token: MLX operations created per decoded token (`opsPerToken`, counted by the engine).
 */
import type { InferenceBackend } from "../lib/backend.js";
import { MlxBackend, mlxAvailability, type MlxGenerationStats } from "../lib/backends/mlx.js";

/** Engine numbers derived from one decode request. */
export interface EngineDerived {
  opsPerToken: number;
  outsideShare: number;
  graphBuildMsPerToken: number;
  hostMsPerToken: number;
  engineMsPerToken: number;
  callerMsPerToken: number;
  jsOverhead: number;
  /** Engine-side prefill speed: evaluated tokens / prefillMs of the prefill request. */
  enginePrefillTps: number;
}

/** What a sample records about MLX. */
export interface MlxSampleEngine {
  prefillStats?: MlxGenerationStats;
  decodeStats?: MlxGenerationStats;
  /** MLX's peak allocation during the sample (the peak counter is reset at its start). */
  peakBytes: number;
  activeBytes: number;
  derived?: EngineDerived;
}

/** Why MLX cannot run here, or undefined when it can. */
export function mlxUnavailableReason(): string | undefined {
  const status = mlxAvailability();
  return status.available ? undefined : status.reason;
}

/** Derives the shares above from the stats of a decode request. */
export function deriveEngine(decode: MlxGenerationStats, callerMsPerToken: number, prefill?: MlxGenerationStats): EngineDerived {
  const total = decode.prefillMs + decode.decodeMs;
  const steps = Math.max(1, decode.generatedTokens - 1);
  const engineMsPerToken = decode.decodeMs / steps;
  return {
    opsPerToken: decode.opsPerToken,
    outsideShare: (decode.graphBuildMs + decode.hostMs) / total,
    graphBuildMsPerToken: decode.graphBuildMs / decode.generatedTokens,
    hostMsPerToken: decode.hostMs / decode.generatedTokens,
    engineMsPerToken,
    callerMsPerToken,
    jsOverhead: callerMsPerToken / engineMsPerToken - 1,
    enginePrefillTps: prefill ? (prefill.evaluatedPromptTokens / prefill.prefillMs) * 1000 : Number.NaN,
  };
}

/** Hooks run around a sample on an MLX backend. */
export function mlxSampleHooks(backend: InferenceBackend): {
  before(): Promise<void>;
  afterPrefill(): void;
  after(callerMsPerToken: number): Promise<MlxSampleEngine>;
} {
  const mlx = backend as MlxBackend;
  let prefillStats: MlxGenerationStats | undefined;
  return {
    before: () => MlxBackend.setMemoryLimits({ resetPeak: true }),
    afterPrefill: () => {
      prefillStats = mlx.lastGenerationStats && { ...mlx.lastGenerationStats };
    },
    async after(callerMsPerToken) {
      const decodeStats = mlx.lastGenerationStats && { ...mlx.lastGenerationStats };
      const memory = await MlxBackend.memory();
      return {
        ...(prefillStats ? { prefillStats } : {}),
        ...(decodeStats ? { decodeStats } : {}),
        peakBytes: memory.peakBytes,
        activeBytes: memory.activeBytes,
        ...(decodeStats ? { derived: deriveEngine(decodeStats, callerMsPerToken, prefillStats) } : {}),
      };
    },
  };
}

/** Medians of the derived engine numbers over the samples of one model. */
export type EngineSummary = { [K in keyof EngineDerived]: number } & { samples: number };

export function summarizeEngine(samples: readonly (MlxSampleEngine | undefined)[], median: (v: number[]) => number): EngineSummary | undefined {
  const derived = samples.map((s) => s?.derived).filter((d): d is EngineDerived => d !== undefined);
  if (derived.length === 0) return undefined;
  const keys = Object.keys(derived[0]) as (keyof EngineDerived)[];
  const out = { samples: derived.length } as EngineSummary;
  for (const key of keys) out[key] = median(derived.map((d) => d[key]));
  return out;
}
