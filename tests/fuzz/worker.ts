/**
 * Fuzz worker: a child process that loads the models it is sent, one at a time, and reports how
 * each load ended, how long it took, how much its resident memory peaked above the level before
 * it, and the longest event-loop stall. If a model takes this process down, the parent sees the
 * exit and counts a crash; if it never answers, the parent kills it and counts a hang.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { loadModel } from "../../lib/index.js";
import { MlxNodeError } from "../../lib/errors.js";

export interface Job {
  id: number;
  path: string;
  backend: "gguf" | "mlx";
}

export interface JobResult {
  id: number;
  outcome: "loaded" | "rejected";
  /** Error class and code for a rejection, e.g. `ModelFormatError BAD_WEIGHTS`. */
  error?: string;
  message?: string;
  /** For a model that loaded: how its first request failed, if it did. */
  requestError?: string;
  ms: number;
  /** Peak resident memory during the job minus resident memory before it, in bytes (undefined where /proc is absent). */
  peakGrowth?: number;
  maxStallMs: number;
}

/** Resident and peak-resident bytes from /proc (Linux); undefined elsewhere. */
function memory(): { rss: number; hwm: number } | undefined {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1]) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return undefined;
  }
}

function resetPeak(): boolean {
  try {
    writeFileSync("/proc/self/clear_refs", "5"); // resets VmHWM to the current RSS (Linux ≥ 4.0)
    return true;
  } catch {
    return false;
  }
}

async function run(job: Job): Promise<JobResult> {
  // Collect the previous job's garbage first, so the peak below is this load's own.
  (globalThis as { gc?: () => void }).gc?.();
  const canMeasure = resetPeak();
  const before = memory();
  let maxStallMs = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    maxStallMs = Math.max(maxStallMs, now - last - 10);
    last = now;
  }, 10);
  const start = performance.now();
  let result: Omit<JobResult, "id" | "ms" | "maxStallMs">;
  try {
    const model = await loadModel(job.path, { backend: job.backend, contextSize: 256 });
    let requestError: string | undefined;
    try {
      // A model that loads must also survive a first request (it may fail, but not crash).
      await model.generate("Once upon a time", { maxTokens: 2, temperature: 0 }).catch((e: Error) => {
        requestError = `${e.name}: ${e.message.slice(0, 200)}`;
      });
    } finally {
      await model.unload();
    }
    result = { outcome: "loaded", ...(requestError !== undefined ? { requestError } : {}) };
  } catch (error) {
    const e = error as Error;
    result = { outcome: "rejected", error: `${e.name}${error instanceof MlxNodeError ? ` ${error.code}` : ""}`, message: e.message.slice(0, 300) };
  }
  const ms = performance.now() - start;
  clearInterval(ticker);
  const after = memory();
  const peakGrowth = canMeasure && before && after ? Math.max(0, after.hwm - before.rss) : undefined;
  return { id: job.id, ...result, ms, maxStallMs, ...(peakGrowth !== undefined ? { peakGrowth } : {}) };
}

process.on("message", (job: Job) => {
  void run(job).then((result) => process.send?.(result));
});
process.send?.({ ready: true });
