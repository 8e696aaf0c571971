/**
 * The hostile-model fuzz run in CI (issue #12): 300 seeded single-field mutations of
 * stories260K.gguf and 300 of the stories260K MLX 4-bit directory, each loaded (and asked for two
 * tokens when it loads) by a worker child process with a time limit. None may crash the worker or
 * hang it, and no load may make memory grow past twice the model's size, at least 2 MiB (rejected files), or past
 * twice (the model's size + what the genuine model needs, at least 16 MiB) for files that load. Longer runs:
 * `npm run fuzz -- --count N` (see tests/fuzz/main.ts). A model that loads must also answer its first
 * request (before the config bounds, `num_attention_heads` 1073741832 loaded, then every request failed).
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { formatReport, runFuzz, type FuzzOptions } from "./fuzz/run.js";
import { mlxAvailable } from "./support/mlx.js";

const stories = fileURLToPath(new URL("../../shared/models/stories260K/", import.meta.url));
const COUNT = 300;
const SEED = 12;

async function fuzz(options: Omit<FuzzOptions, "count" | "seed">): Promise<void> {
  const report = await runFuzz({ ...options, count: COUNT, seed: SEED, parallel: 2 });
  console.log(formatReport(report));
  expect(report.loaded + report.rejected + report.crashes.length + report.hangs.length).toBe(COUNT);
  expect(report.crashes.map((c) => `#${c.mutation.index} ${c.mutation.description}: ${c.exit}`)).toEqual([]);
  expect(report.hangs.map((c) => `#${c.mutation.index} ${c.mutation.description}`)).toEqual([]);
  // A file that loads must serve a request: a check that lets a broken model load is a bug too.
  expect(report.loadedButFailed.map((c) => `#${c.mutation.index} ${c.mutation.description}: ${c.result?.requestError}`)).toEqual([]);
  if (process.platform === "linux") {
    expect(report.maxRejectedAllocation, report.maxRejectedCase?.mutation.description).toBeLessThanOrEqual(2);
    expect(report.maxLoadedAllocation, report.maxLoadedCase?.mutation.description).toBeLessThanOrEqual(2);
  }
}

describe("hostile-model fuzz", () => {
  it(`${COUNT} GGUF mutations: no crash, no hang, bounded memory`, () => fuzz({ format: "gguf", source: join(stories, "stories260K.gguf") }), 600_000);
  it.skipIf(!mlxAvailable)(`${COUNT} MLX mutations: no crash, no hang, bounded memory`, () => fuzz({ format: "mlx", source: join(stories, "mlx-4bit") }), 600_000);
});
